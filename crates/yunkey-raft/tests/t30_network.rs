//! Error mapping of the gRPC network client, the server's handling of malformed payloads, and
//! `AppendEntries` on one stream per follower, with unary calls to a peer that lacks it.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Kv, Tc};
use openraft::error::RPCError;
use openraft::network::RPCOption;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{BasicNode, Config, Raft, RaftNetwork, RaftNetworkFactory, Vote};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};
use yunkey_proto::v1::raft_service_client::RaftServiceClient;
use yunkey_proto::v1::raft_service_server::{RaftService, RaftServiceServer};
use yunkey_proto::v1::RaftPayload;
use yunkey_raft::{Connector, GrpcNetworkFactory, LogStore, RaftGrpcServer, StateMachineStore};
use yunkey_store::Db;

fn connector() -> Connector {
    Arc::new(|node: &BasicNode| {
        Endpoint::from_shared(format!("http://{}", node.addr))
            .map(|e| e.connect_timeout(Duration::from_millis(300)).connect_lazy())
            .map_err(|e| e.to_string())
    })
}

fn vote_req() -> VoteRequest<u64> {
    VoteRequest::new(Vote::new(1, 1), None)
}

async fn vote_to(
    addr: &str,
    ttl: Duration,
) -> Result<(), RPCError<u64, BasicNode, openraft::error::RaftError<u64>>> {
    let mut factory = GrpcNetworkFactory::<Tc>::new(1, connector());
    let mut client = factory.new_client(2, &BasicNode::new(addr)).await;
    client
        .vote(vote_req(), RPCOption::new(ttl))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn closed_port_is_unreachable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let err = vote_to(&addr, Duration::from_secs(2)).await.unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
}

#[tokio::test]
async fn silent_peer_is_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Accept connections and never answer.
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let started = std::time::Instant::now();
    let err = vote_to(&addr, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, RPCError::Timeout(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "hard_ttl honored"
    );
    hold.abort();
}

/// An uninitialized Raft node 2 (its store in `dir`).
async fn raft_node(dir: &std::path::Path) -> Raft<Tc> {
    let db = Db::memory();
    let config = Arc::new(Config::default().validate().unwrap());
    let net = GrpcNetworkFactory::<Tc>::new(2, connector());
    Raft::new(
        2,
        config,
        net,
        LogStore::<Tc>::open(&dir.join("raft-log"), &db).unwrap(),
        StateMachineStore::open(db, dir.join("snapshots"), Kv).unwrap(),
    )
    .await
    .unwrap()
}

/// Serves `service` on a loopback port; returns its address and the server's task.
fn serve<S: RaftService>(service: RaftServiceServer<S>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let server = tokio::spawn(async move {
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (addr, server)
}

#[tokio::test]
async fn stopped_raft_is_remote_error_and_garbage_is_invalid_argument() {
    let snaps = tempfile::tempdir().unwrap();
    let raft = raft_node(snaps.path()).await;
    let (addr, server) = serve(RaftGrpcServer::new(raft.clone()).into_service());

    let channel = (connector())(&BasicNode::new(&addr)).unwrap();
    let mut client = RaftServiceClient::new(channel);
    for call in 0..4 {
        let req = RaftPayload {
            data: vec![0xff; 3],
        };
        let status = match call {
            0 => client.append_entries(req).await,
            1 => client.vote(req).await,
            2 => client.install_snapshot(req).await,
            _ => client.client_write(req).await,
        }
        .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
        assert!(status.message().contains("malformed"), "{status}");
    }
    // The same garbage on the stream: answered with INVALID_ARGUMENT, which ends the stream.
    let garbage = tokio_stream::iter([RaftPayload {
        data: vec![0xff; 3],
    }]);
    let mut replies = client
        .append_entries_stream(garbage)
        .await
        .unwrap()
        .into_inner();
    let status = replies.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    assert!(
        status.message().contains("malformed AppendEntries"),
        "{status}"
    );

    raft.shutdown().await.unwrap();
    let err = vote_to(&addr, Duration::from_secs(2)).await.unwrap_err();
    assert!(matches!(err, RPCError::RemoteError(_)), "{err:?}");
    server.abort();
}

/// A peer that counts the `AppendEntries` it gets each way and, when `refuse` is set, refuses
/// `AppendEntriesStream` with that code, as a build from before the stream does.
struct Counting {
    inner: RaftGrpcServer<Tc>,
    refuse: Option<tonic::Code>,
    unary: Arc<AtomicUsize>,
    streams: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl RaftService for Counting {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.unary.fetch_add(1, Ordering::SeqCst);
        self.inner.append_entries(request).await
    }

    type AppendEntriesStreamStream = <RaftGrpcServer<Tc> as RaftService>::AppendEntriesStreamStream;

    async fn append_entries_stream(
        &self,
        request: Request<Streaming<RaftPayload>>,
    ) -> Result<Response<Self::AppendEntriesStreamStream>, Status> {
        self.streams.fetch_add(1, Ordering::SeqCst);
        if let Some(code) = self.refuse {
            return Err(Status::new(code, "not served here"));
        }
        self.inner.append_entries_stream(request).await
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.inner.vote(request).await
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.inner.install_snapshot(request).await
    }

    async fn client_write(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.inner.client_write(request).await
    }

    async fn read_index(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.inner.read_index(request).await
    }
}

/// Sends three `AppendEntries` (heartbeats of term 1 from node 1) through one network client to
/// a peer that refuses the stream with `refuse`, if any; returns how many went unary and how many
/// streams were opened.
async fn three_appends(refuse: Option<tonic::Code>) -> (usize, usize) {
    let snaps = tempfile::tempdir().unwrap();
    let raft = raft_node(snaps.path()).await;
    let (unary, streams) = (Arc::default(), Arc::default());
    let peer = Counting {
        inner: RaftGrpcServer::new(raft.clone()),
        refuse,
        unary: Arc::clone(&unary),
        streams: Arc::clone(&streams),
    };
    let (addr, server) = serve(RaftServiceServer::new(peer));
    let mut factory = GrpcNetworkFactory::<Tc>::new(1, connector());
    let mut client = factory.new_client(2, &BasicNode::new(&addr)).await;
    for _ in 0..3 {
        let rpc = AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        };
        let reply = client
            .append_entries(rpc, RPCOption::new(Duration::from_secs(5)))
            .await;
        assert!(reply.is_ok(), "{reply:?}");
    }
    raft.shutdown().await.unwrap();
    server.abort();
    (unary.load(Ordering::SeqCst), streams.load(Ordering::SeqCst))
}

#[tokio::test]
async fn append_entries_share_one_stream() {
    assert_eq!(three_appends(None).await, (0, 1));
}

#[tokio::test]
async fn a_peer_without_the_stream_gets_unary_calls() {
    // tonic's answer for a method the peer lacks, then yunkey's access layer's for a path not in
    // its table: each is asked for the stream once, then sent unary calls.
    for code in [tonic::Code::Unimplemented, tonic::Code::PermissionDenied] {
        assert_eq!(three_appends(Some(code)).await, (3, 1), "{code:?}");
    }
}

#[tokio::test]
async fn a_broken_stream_is_reopened() {
    // The peer sits behind a loopback proxy whose connections the test cuts: the stream breaks,
    // the next call fails (it does not hang), and a later one opens a new stream.
    let snaps = tempfile::tempdir().unwrap();
    let raft = raft_node(snaps.path()).await;
    let streams = Arc::new(AtomicUsize::new(0));
    let peer = Counting {
        inner: RaftGrpcServer::new(raft.clone()),
        refuse: None,
        unary: Arc::default(),
        streams: Arc::clone(&streams),
    };
    let (upstream, server) = serve(RaftServiceServer::new(peer));
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = proxy.local_addr().unwrap().to_string();
    let links = Arc::new(std::sync::Mutex::new(tokio::task::JoinSet::new()));
    let accept = {
        let links = Arc::clone(&links);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = proxy.accept().await {
                let upstream = upstream.clone();
                links.lock().unwrap().spawn(async move {
                    let mut outbound = tokio::net::TcpStream::connect(upstream).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        })
    };
    let mut factory = GrpcNetworkFactory::<Tc>::new(1, connector());
    let mut client = factory.new_client(2, &BasicNode::new(&addr)).await;
    let rpc = || AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    };
    let ttl = || RPCOption::new(Duration::from_secs(5));
    client.append_entries(rpc(), ttl()).await.unwrap();
    assert_eq!(streams.load(Ordering::SeqCst), 1);
    links.lock().unwrap().abort_all();
    let started = std::time::Instant::now();
    let failed = client.append_entries(rpc(), ttl()).await;
    assert!(
        failed.is_err(),
        "a call on the cut stream succeeded: {failed:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the cut was noticed before the TTL"
    );
    let mut answered = false;
    for _ in 0..50 {
        if client.append_entries(rpc(), ttl()).await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "the client never got through again");
    assert!(
        streams.load(Ordering::SeqCst) >= 2,
        "a new stream was opened"
    );
    raft.shutdown().await.unwrap();
    accept.abort();
    server.abort();
}
