//! The coordinator's Raft: type configuration, opening the node on the store, and the handle
//! the operations use to write and to read safely.

use crate::error::{CoordError, Result};
use crate::state::{App, Command, CommandResult, StateView};
use openraft::{BasicNode, Raft, ServerState};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use yunkey_proto::v1::{NodeStatus, StatusResponse};
use yunkey_store::{Batch, Db, StoreError, Tree};

openraft::declare_raft_types!(
    /// The coordinator's Raft types: commands in, results out, u64 node ids.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        SnapshotData = yunkey_raft::SnapshotFile,
);

impl yunkey_raft::Apply<TypeConfig> for App {
    fn apply(
        &self,
        state: &Tree,
        batch: &mut Batch,
        command: &Command,
    ) -> Result<CommandResult, StoreError> {
        self.apply_command(state, batch, command)
    }
}

/// Snapshot chunk size: openraft sends a snapshot file as `InstallSnapshot` RPCs of at most
/// this many bytes. The Raft gRPC service accepts messages up to [`RAFT_MAX_MESSAGE_BYTES`]
/// (64 MiB, not `yunkey_net::MAX_MESSAGE_BYTES`, which is for the public API); 1 MiB plus the
/// request's small bincode envelope fits with a wide margin, and keeps a chunk quick to write.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;

/// Largest message of the internal Raft gRPC service (append-entries batches, snapshot chunks).
pub const RAFT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Timing of the coordinators' Raft, chosen so that a dead leader is replaced in well under 2 s.
///
/// openraft 0.9 followers wait out a leader lease (= `election_timeout_max`) on top of their
/// random election timeout before they campaign, and refuse votes while their own lease runs:
/// a leader's death is noticed `max + rand(min, max)` after its last heartbeat, here 0.8 to
/// 1.0 s, or 1.1 to 1.5 s when the first candidate loses (a split vote, or a candidate whose
/// log is behind) and the next one needs one more timeout. A follower thus campaigns only after
/// missing at least 8 heartbeats. The heartbeat stays at 100 ms because openraft also uses it as
/// the deadline of every `AppendEntries` RPC, which must cover a follower's log flush under load.
pub fn raft_config() -> openraft::Config {
    openraft::Config {
        cluster_name: "yunkey".into(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 500,
        // A snapshot build writes the whole state to a file (about 25 s at a million users,
        // docs/performance.md; applies go on meanwhile), so builds are rare: every 100,000
        // entries (about 120 MB of log), and lagging followers mostly catch up from the log.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(100_000),
        max_in_snapshot_log_to_keep: 1000,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        // The deadline of each `InstallSnapshot` RPC. The last chunk's reply waits for the
        // follower to verify the whole file and load it into its state: about 150 µs per user
        // on this 2-core machine, so minutes at a million users (docs/performance.md). With
        // openraft's 200 ms default the leader would give up and resend a large snapshot
        // forever.
        install_snapshot_timeout: 600_000,
        ..Default::default()
    }
}

/// What the operations need from Raft.
#[derive(Clone)]
pub struct RaftHandle {
    raft: Raft<TypeConfig>,
    net: yunkey_raft::GrpcNetworkFactory<TypeConfig>,
    write_timeout: Duration,
}

impl std::fmt::Debug for RaftHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftHandle").finish_non_exhaustive()
    }
}

/// A Raft node opened on a store.
pub struct OpenedRaft {
    /// The handle for operations.
    pub handle: RaftHandle,
    /// The applied state.
    pub view: StateView,
    /// The internal Raft gRPC service (serve it behind a node-role check).
    pub server: yunkey_raft::RaftGrpcServer<TypeConfig>,
}

/// Opens this node's Raft: the log in `log_dir`, the state machine `app` (its durable records
/// in `db`), snapshot files in `snapshot_dir`. `connect` gives a channel to a peer (TLS, node
/// identity).
#[allow(clippy::too_many_arguments)]
pub async fn open(
    node_id: u64,
    log_dir: PathBuf,
    db: Db,
    app: App,
    snapshot_dir: PathBuf,
    connect: yunkey_raft::Connector,
    config: openraft::Config,
    write_timeout: Duration,
) -> Result<OpenedRaft> {
    let storage =
        |e: openraft::StorageError<u64>| CoordError::Internal(format!("raft storage: {e}"));
    let log = yunkey_raft::LogStore::<TypeConfig>::open(&log_dir, &db).map_err(storage)?;
    let sm = yunkey_raft::StateMachineStore::<TypeConfig, App>::open(db, snapshot_dir, app)
        .map_err(storage)?;
    let view = StateView::new(sm.state());
    let net = yunkey_raft::GrpcNetworkFactory::<TypeConfig>::new(node_id, connect);
    let config = Arc::new(
        config
            .validate()
            .map_err(|e| CoordError::Internal(e.to_string()))?,
    );
    let raft = Raft::new(node_id, config, net.clone(), log, sm)
        .await
        .map_err(|e| CoordError::Internal(format!("raft start: {e}")))?;
    let server = yunkey_raft::RaftGrpcServer::new(raft.clone());
    Ok(OpenedRaft {
        handle: RaftHandle {
            raft,
            net,
            write_timeout,
        },
        view,
        server,
    })
}

impl RaftHandle {
    /// The openraft node.
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// Makes this node a one-member cluster, if it is not initialized yet.
    pub async fn initialize_single(&self, node_id: u64, advertise: &str) -> Result<()> {
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| CoordError::Internal(e.to_string()))?
        {
            return Ok(());
        }
        let members = BTreeMap::from([(node_id, BasicNode::new(advertise))]);
        self.raft
            .initialize(members)
            .await
            .map_err(|e| CoordError::Internal(format!("raft initialize: {e}")))
    }

    /// Waits until some node leads, up to `timeout`.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<u64> {
        let m = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is elected")
            .await
            .map_err(|e| CoordError::Unavailable(format!("no Raft leader: {e}")))?;
        Ok(m.current_leader.unwrap_or_default())
    }

    /// Commits a command (forwarding to the leader when needed) and returns its result once
    /// it is applied on this node too, so that reading the local state right after sees it.
    pub async fn write(&self, cmd: Command) -> Result<CommandResult> {
        Ok(self.write_indexed(cmd).await?.0)
    }

    /// [`RaftHandle::write`], also returning the log index the command committed at.
    pub async fn write_indexed(&self, cmd: Command) -> Result<(CommandResult, u64)> {
        let kind = cmd.op.kind();
        let started = std::time::Instant::now();
        let result = yunkey_raft::write(&self.raft, &self.net, cmd, self.write_timeout).await;
        let written = result.map_err(|e| {
            CoordError::Raft(format!(
                "could not commit: {e}; retry with the same request_id"
            ))
        })?;
        // Forwarded writes are applied on the leader first: wait for this node to catch up.
        self.raft
            .wait(Some(self.write_timeout))
            .applied_index_at_least(Some(written.log_index), "write applied here")
            .await
            .map_err(|e| {
                CoordError::Unavailable(format!(
                    "the write committed (log index {}) but this node has not applied it yet ({e}); \
                     retry with the same request_id",
                    written.log_index
                ))
            })?;
        metrics::histogram!("yunkey_raft_write_seconds", "op" => kind)
            .record(started.elapsed().as_secs_f64());
        Ok((written.response, written.log_index))
    }

    /// Returns once this node's state reflects every write acknowledged before the call, on
    /// the leader or on a follower (which asks the leader for its read index).
    pub async fn ensure_linearizable(&self) -> Result<()> {
        yunkey_raft::ensure_linearizable(&self.raft, &self.net, self.write_timeout)
            .await
            .map(|_| ())
            .map_err(|e| {
                CoordError::Unavailable(format!(
                    "linearizable read not possible here ({e}); retry, or ask with consistency STALE"
                ))
            })
    }

    /// Whether this node is the leader now (by its own metrics).
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.current_leader == Some(m.id)
    }

    /// Every member (voters and learners) with its address, as this node's metrics show the
    /// membership.
    pub fn members(&self) -> Vec<(u64, String)> {
        let m = self.raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect()
    }

    /// The current leader's id and address, if one is known.
    pub fn leader(&self) -> Option<(u64, String)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())?;
        Some((id, addr))
    }

    /// A channel to a peer coordinator (node TLS identity), from the Raft network's cache.
    pub fn peer_channel(&self, addr: &str) -> Result<tonic::transport::Channel> {
        self.net
            .channel(&BasicNode::new(addr))
            .map_err(|e| CoordError::Unavailable(format!("cannot connect to {addr}: {e}")))
    }

    /// Raft figures for `ClusterService.Status` (counts filled by the caller).
    pub fn status(&self) -> StatusResponse {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader.unwrap_or_default();
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        let nodes = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node)| {
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned().flatten())
                    .map(|l| l.index)
                    .unwrap_or(if *id == m.id {
                        m.last_log_index.unwrap_or(0)
                    } else {
                        0
                    });
                NodeStatus {
                    node_id: *id,
                    address: node.addr.clone(),
                    role: if *id == leader {
                        "leader"
                    } else if !voters.contains(id) {
                        "learner"
                    } else if *id == m.id {
                        match m.state {
                            ServerState::Candidate => "candidate",
                            _ => "follower",
                        }
                    } else {
                        "follower"
                    }
                    .to_owned(),
                    voter: voters.contains(id),
                    matched_index: matched,
                }
            })
            .collect();
        StatusResponse {
            node_id: m.id,
            leader_id: leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            nodes,
            ..Default::default()
        }
    }
}

/// Publishes this node's Raft figures as Prometheus gauges whenever they change:
/// `yunkey_raft_term`, `yunkey_raft_last_log_index`, `yunkey_raft_applied_index`,
/// `yunkey_raft_leader_id`, `yunkey_raft_is_leader`, and on the leader
/// `yunkey_raft_replication_lag{peer}` (entries behind the leader's last log).
pub async fn export_metrics(handle: RaftHandle) {
    let mut rx = handle.raft.metrics();
    loop {
        {
            let m = rx.borrow_and_update().clone();
            let last = m.last_log_index.unwrap_or(0);
            metrics::gauge!("yunkey_raft_term").set(m.current_term as f64);
            metrics::gauge!("yunkey_raft_last_log_index").set(last as f64);
            metrics::gauge!("yunkey_raft_applied_index")
                .set(m.last_applied.map(|l| l.index).unwrap_or(0) as f64);
            metrics::gauge!("yunkey_raft_leader_id").set(m.current_leader.unwrap_or(0) as f64);
            metrics::gauge!("yunkey_raft_is_leader").set(if m.current_leader == Some(m.id) {
                1.0
            } else {
                0.0
            });
            if let Some(replication) = &m.replication {
                for (peer, matched) in replication {
                    let matched = matched.map(|l| l.index).unwrap_or(0);
                    metrics::gauge!("yunkey_raft_replication_lag", "peer" => peer.to_string())
                        .set(last.saturating_sub(matched) as f64);
                }
            }
        }
        if rx.changed().await.is_err() {
            return; // Raft shut down.
        }
    }
}
