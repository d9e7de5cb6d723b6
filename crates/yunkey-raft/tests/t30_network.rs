//! Error mapping of the gRPC network client and the server's handling of malformed payloads.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Kv, Tc};
use openraft::error::RPCError;
use openraft::network::RPCOption;
use openraft::raft::VoteRequest;
use openraft::{BasicNode, Config, Raft, RaftNetwork, RaftNetworkFactory, Vote};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Endpoint, Server};
use yunkey_proto::v1::raft_service_client::RaftServiceClient;
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

#[tokio::test]
async fn stopped_raft_is_remote_error_and_garbage_is_invalid_argument() {
    let db = Db::memory();
    let snaps = tempfile::tempdir().unwrap();
    let config = Arc::new(Config::default().validate().unwrap());
    let net = GrpcNetworkFactory::<Tc>::new(2, connector());
    let raft = Raft::new(
        2,
        config,
        net,
        LogStore::<Tc>::open(&snaps.path().join("raft-log"), &db).unwrap(),
        StateMachineStore::open(db, snaps.path().join("snapshots"), Kv).unwrap(),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let svc = RaftGrpcServer::new(raft.clone()).into_service();
    let server = tokio::spawn(
        Server::builder()
            .add_service(svc)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

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

    raft.shutdown().await.unwrap();
    let err = vote_to(&addr, Duration::from_secs(2)).await.unwrap_err();
    assert!(matches!(err, RPCError::RemoteError(_)), "{err:?}");
    server.abort();
}
