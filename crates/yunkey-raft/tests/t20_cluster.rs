//! A 3-node in-process cluster over real tonic on ephemeral ports: forwarding, failover, and a
//! learner catching up through a snapshot; a node restarted on its stores rebuilding its state.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{set, Kv, Prev, Tc};
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Endpoint, Server};
use yunkey_raft::{
    ensure_linearizable, write, Connector, GrpcNetworkFactory, LogStore, RaftGrpcServer,
    StateMachineStore,
};
use yunkey_store::Db;

const WAIT: Duration = Duration::from_secs(10);

struct Node {
    id: u64,
    addr: String,
    raft: Raft<Tc>,
    sm: StateMachineStore<Tc, Kv>,
    net: GrpcNetworkFactory<Tc>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    _dir: TempDir,
}

impl Node {
    fn node(&self) -> BasicNode {
        BasicNode::new(&self.addr)
    }

    async fn stop(self) {
        self.stop_keeping_stores().await;
    }

    /// Stops the node and hands back its directory, to start it again on the same stores.
    async fn stop_keeping_stores(mut self) -> TempDir {
        self.raft.shutdown().await.expect("raft shutdown");
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(WAIT, self.server).await;
        self._dir
    }

    /// Every `(key, value)` of the state machine, reserved keys included.
    fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.sm
            .state()
            .range(&[], None)
            .map(|kv| kv.unwrap())
            .collect()
    }
}

fn connector() -> Connector {
    Arc::new(|node: &BasicNode| {
        Endpoint::from_shared(format!("http://{}", node.addr))
            .map(|e| e.connect_timeout(Duration::from_millis(300)).connect_lazy())
            .map_err(|e| e.to_string())
    })
}

async fn start(id: u64) -> Node {
    start_in(id, tempfile::tempdir().unwrap()).await
}

/// Starts node `id` on the stores in `dir` (new or left by a node stopped before).
async fn start_in(id: u64, dir: TempDir) -> Node {
    let db = Db::open_sled(dir.path().join("db")).unwrap();
    let log = LogStore::<Tc>::open(&dir.path().join("raft-log"), &db).unwrap();
    let sm = StateMachineStore::open(db, dir.path().join("snapshots"), Kv).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = Config {
        cluster_name: "test".into(),
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(50),
        max_in_snapshot_log_to_keep: 0,
        ..Default::default()
    }
    .validate()
    .unwrap();
    let net = GrpcNetworkFactory::new(id, connector());
    let raft = Raft::new(id, Arc::new(config), net.clone(), log, sm.clone())
        .await
        .unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let svc = RaftGrpcServer::new(raft.clone()).into_service();
    let server = tokio::spawn(async move {
        Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Node {
        id,
        addr,
        raft,
        sm,
        net,
        stop: Some(tx),
        server,
        _dir: dir,
    }
}

async fn leader_of(nodes: &[&Node], not: Option<u64>) -> u64 {
    let m = nodes[0]
        .raft
        .wait(Some(WAIT))
        .metrics(
            |m| m.current_leader.is_some() && m.current_leader != not,
            "a leader is elected",
        )
        .await
        .unwrap();
    m.current_leader.unwrap()
}

async fn wait_value(node: &Node, key: &str, value: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if node.sm.state().get(key.as_bytes()).unwrap().as_deref() == Some(value.as_bytes()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {} did not apply {key}={value}",
            node.id
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_forwarding_failover_and_snapshot_catch_up() {
    let test = async {
        let mut nodes = vec![start(1).await, start(2).await, start(3).await];
        let members: BTreeMap<u64, BasicNode> = nodes.iter().map(|n| (n.id, n.node())).collect();
        nodes[0].raft.initialize(members).await.unwrap();

        let refs: Vec<&Node> = nodes.iter().collect();
        let leader = leader_of(&refs, None).await;

        // Write through a follower: it forwards to the leader.
        let follower = nodes.iter().find(|n| n.id != leader).unwrap();
        let r = write(&follower.raft, &follower.net, set("a", "1"), WAIT)
            .await
            .unwrap();
        assert_eq!(r.response, Prev(None));
        let r = write(&follower.raft, &follower.net, set("a", "2"), WAIT)
            .await
            .unwrap();
        assert_eq!(r.response, Prev(Some("1".into())));
        // A linearizable read on the other follower: the leader's read index, applied there.
        let other = nodes
            .iter()
            .find(|n| n.id != leader && n.id != follower.id)
            .unwrap();
        let read_index = ensure_linearizable(&other.raft, &other.net, WAIT)
            .await
            .unwrap();
        assert!(read_index >= r.log_index, "{read_index} < {}", r.log_index);
        assert!(
            other.dump().iter().any(|(k, v)| k == b"a" && v == b"2"),
            "the follower applied the read index before the read"
        );
        for n in &nodes {
            wait_value(n, "a", "2").await;
        }

        // Shut the leader down; a new leader is elected and writes continue.
        let pos = nodes.iter().position(|n| n.id == leader).unwrap();
        nodes.remove(pos).stop().await;
        let refs: Vec<&Node> = nodes.iter().collect();
        let new_leader = leader_of(&refs, Some(leader)).await;
        assert_ne!(new_leader, leader);
        let any = &nodes[0];
        write(&any.raft, &any.net, set("b", "after-failover"), WAIT)
            .await
            .unwrap();
        for n in &nodes {
            wait_value(n, "b", "after-failover").await;
        }

        // Enough writes for a snapshot (LogsSinceLast(50)) and a purge of the logs it covers.
        for i in 0..60 {
            write(
                &any.raft,
                &any.net,
                set(&format!("k{i:03}"), &i.to_string()),
                WAIT,
            )
            .await
            .unwrap();
        }
        let leader_node = nodes.iter().find(|n| n.id == new_leader).unwrap();
        leader_node
            .raft
            .wait(Some(WAIT))
            .metrics(
                |m| m.snapshot.is_some() && m.purged.is_some(),
                "leader snapshot + purge",
            )
            .await
            .unwrap();

        // A fresh learner can only catch up through the snapshot.
        let learner = start(4).await;
        leader_node
            .raft
            .add_learner(4, learner.node(), true)
            .await
            .unwrap();
        // Wait until the leader has applied its whole log (the learner's membership entry
        // included), then until the learner has applied as much.
        let applied = leader_node
            .raft
            .wait(Some(WAIT))
            .metrics(
                |m| m.last_applied.map(|l| l.index) == m.last_log_index,
                "leader applied all its log",
            )
            .await
            .unwrap()
            .last_applied;
        learner
            .raft
            .wait(Some(WAIT))
            .metrics(|m| m.last_applied >= applied, "learner caught up")
            .await
            .unwrap();
        assert!(
            learner.raft.metrics().borrow().snapshot.is_some(),
            "learner installed a snapshot"
        );
        wait_value(&learner, "k059", "59").await;
        wait_value(&learner, "b", "after-failover").await;
        assert_eq!(
            learner.dump(),
            leader_node.dump(),
            "same state on learner and leader"
        );

        learner.stop().await;
        for n in nodes {
            n.stop().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .expect("cluster test timed out");
}

#[tokio::test]
async fn write_without_leader_is_unavailable_after_deadline() {
    let node = start(1).await;
    let started = std::time::Instant::now();
    let err = write(
        &node.raft,
        &node.net,
        set("x", "1"),
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, yunkey_raft::WriteError::Unavailable(_)),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    node.stop().await;
}

/// An unreachable learner must never look caught up. openraft 0.9.25's blocking
/// `add_learner` returns at once for it on a short log (its lag, the whole log, is under
/// `replication_lag_threshold`); `wait_caught_up` waits for an acknowledgement and times out.
/// A reachable learner passes, is promoted, and writes commit with both voters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_learner_is_never_caught_up() {
    let test = async {
        let leader = start(1).await;
        leader
            .raft
            .initialize(BTreeMap::from([(1, leader.node())]))
            .await
            .unwrap();
        leader_of(&[&leader], None).await;
        write(&leader.raft, &leader.net, set("a", "1"), WAIT)
            .await
            .unwrap();

        // Nothing listens on port 1.
        let started = std::time::Instant::now();
        let added = leader
            .raft
            .add_learner(9, BasicNode::new("127.0.0.1:1"), true)
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "openraft's blocking add_learner waited for the unreachable learner; \
             wait_caught_up may no longer be needed (took {:?})",
            started.elapsed()
        );
        let err = yunkey_raft::wait_caught_up(
            &leader.raft,
            9,
            added.log_id.index,
            100,
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                yunkey_raft::CatchUpError::Timeout { matched: None, .. }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("acknowledged none"), "{err}");
        let m = leader.raft.metrics().borrow().clone();
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        assert_eq!(voters, vec![1], "the unreachable learner is not a voter");
        // Writes still commit with the one voter.
        write(&leader.raft, &leader.net, set("a", "2"), WAIT)
            .await
            .unwrap();

        // A reachable learner acknowledges, is promoted, and counts in the quorum.
        let second = start(2).await;
        let added = leader
            .raft
            .add_learner(2, second.node(), false)
            .await
            .unwrap();
        let matched = yunkey_raft::wait_caught_up(&leader.raft, 2, added.log_id.index, 100, WAIT)
            .await
            .unwrap();
        assert!(matched >= added.log_id.index);
        leader
            .raft
            .change_membership(
                openraft::ChangeMembers::AddVoterIds(std::collections::BTreeSet::from([2])),
                false,
            )
            .await
            .unwrap();
        write(&leader.raft, &leader.net, set("a", "3"), WAIT)
            .await
            .unwrap();
        wait_value(&second, "a", "3").await;
        second.stop().await;
        leader.stop().await;
    };
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .expect("learner test timed out");
}

/// A node answers Raft RPCs only for its own id: one that took over the address of a removed
/// or rebuilt member (a pod back on a new volume under a new id) never votes or accepts entries
/// in that member's name. The check runs before the payload is even decoded.
#[tokio::test]
async fn a_node_refuses_raft_requests_meant_for_another_id() {
    use yunkey_proto::v1::raft_service_client::RaftServiceClient;
    use yunkey_proto::v1::RaftPayload;

    let node = start(2).await;
    let channel = Endpoint::from_shared(format!("http://{}", node.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = RaftServiceClient::new(channel);
    let request = |target: Option<&str>| {
        let mut r = tonic::Request::new(RaftPayload {
            data: b"not bincode".to_vec(),
        });
        if let Some(t) = target {
            r.metadata_mut()
                .insert(yunkey_raft::TARGET_HEADER, t.parse().unwrap());
        }
        r
    };
    let refused = client.vote(request(Some("7"))).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(refused.message().contains("not node 7"), "{refused:?}");
    let refused = client.append_entries(request(Some("7"))).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    // Its own id, or no header (an older peer): the request goes on to be decoded.
    let own = client.vote(request(Some("2"))).await.unwrap_err();
    assert_eq!(own.code(), tonic::Code::InvalidArgument, "{own:?}");
    let legacy = client.vote(request(None)).await.unwrap_err();
    assert_eq!(legacy.code(), tonic::Code::InvalidArgument, "{legacy:?}");
    node.stop().await;
}

/// The state is kept in memory: a node restarted on its stores rebuilds it from its snapshot
/// and its log, with the entries after the snapshot applied again, ending where it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_rebuilds_its_state_from_snapshot_and_log() {
    let node = start(1).await;
    let members = BTreeMap::from([(1, node.node())]);
    node.raft.initialize(members).await.unwrap();
    leader_of(&[&node], None).await;
    // 80 writes: a snapshot at 50 or so (LogsSinceLast(50)), the rest only in the log.
    for i in 0..80 {
        write(
            &node.raft,
            &node.net,
            set(&format!("k{i:03}"), &i.to_string()),
            WAIT,
        )
        .await
        .unwrap();
    }
    let r = write(&node.raft, &node.net, set("k000", "rewritten"), WAIT)
        .await
        .unwrap();
    assert_eq!(r.response, Prev(Some("0".into())));
    let snapshot = node
        .raft
        .wait(Some(WAIT))
        .metrics(|m| m.snapshot.is_some(), "a snapshot is built")
        .await
        .unwrap()
        .snapshot
        .unwrap();
    assert!(snapshot.index < r.log_index, "entries after the snapshot");
    let before = node.dump();
    let applied = node.sm.last_applied().unwrap();

    let node = start_in(1, node.stop_keeping_stores().await).await;
    let m = node
        .raft
        .wait(Some(WAIT))
        .metrics(
            |m| m.last_applied == applied,
            "the log after the snapshot applied again",
        )
        .await
        .unwrap();
    assert_eq!(m.last_applied, applied);
    assert_eq!(node.dump(), before);
    // And it goes on from there.
    leader_of(&[&node], None).await;
    let r = write(&node.raft, &node.net, set("k079", "after"), WAIT)
        .await
        .unwrap();
    assert_eq!(r.response, Prev(Some("79".into())));
    node.stop().await;
}
