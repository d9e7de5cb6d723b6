//! One RPC to the leader, with the deadline and the error split that the forwarding writer
//! and the follower read path share.

use std::future::Future;
use std::time::Duration;

use openraft::{BasicNode, Raft};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Code;
use yunkey_proto::v1::raft_service_client::RaftServiceClient;
use yunkey_proto::v1::RaftPayload;

use crate::error::WriteError;
use crate::network::GrpcNetworkFactory;
use crate::writer::Attempt;
use crate::TypeConfig;

/// First pause of the writer's and reader's retry loops (doubling up to [`MAX_BACKOFF`]).
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(20);
/// Longest pause between retries: short, because a new leader is found in one round trip and
/// every pause adds to the failover time clients see.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// Calls `rpc` on `leader` (node `leader_id`) with `data`, bounded by `end`. An unreachable
/// leader is `Retry` (another may be elected); running out of time is `Unavailable`
/// (`on_timeout` says what that means for the caller); any other status is `Remote`. Returns
/// the reply's payload.
///
/// A leader cut off without a reset (packets dropped) never answers: the call would wait until
/// `end` even though the rest of the cluster has elected another leader. So the call is also
/// abandoned (`Retry`) as soon as this node learns of a leader other than `leader_id`; the
/// request may still have reached the old leader, which is why writes carry request ids that
/// the state machine deduplicates.
pub(crate) async fn call_leader<C, F, Fut>(
    raft: &Raft<C>,
    (leader_id, leader): (Option<u64>, &BasicNode),
    net: &GrpcNetworkFactory<C>,
    end: Instant,
    data: Vec<u8>,
    on_timeout: &str,
    rpc: F,
) -> Result<Attempt<Vec<u8>>, WriteError>
where
    C: TypeConfig,
    F: FnOnce(RaftServiceClient<Channel>, tonic::Request<RaftPayload>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<RaftPayload>, tonic::Status>>,
{
    let addr = &leader.addr;
    let channel = match net.channel(leader) {
        Ok(ch) => ch,
        Err(e) => {
            return Ok(Attempt::Retry(format!(
                "cannot connect to leader {addr}: {e}"
            )))
        }
    };
    let remaining = end.saturating_duration_since(Instant::now());
    let mut request = tonic::Request::new(RaftPayload { data });
    request.set_timeout(remaining);
    let call = tokio::time::timeout(remaining, rpc(RaftServiceClient::new(channel), request));
    let replaced = async {
        let moved = raft
            .wait(Some(remaining))
            .metrics(
                |m| m.current_leader.is_some() && m.current_leader != leader_id,
                "another leader is known",
            )
            .await;
        match moved {
            Ok(m) => m.current_leader,
            // Timed out or shutting down: let the call itself decide.
            Err(_) => std::future::pending().await,
        }
    };
    let answer = tokio::select! {
        answer = call => answer,
        new = replaced => {
            return Ok(Attempt::Retry(format!(
                "leader {addr} was replaced by node {} while the request was pending",
                new.unwrap_or_default()
            )))
        }
    };
    match answer {
        Err(_) => Err(WriteError::Unavailable(format!(
            "leader {addr} did not answer before the deadline ({on_timeout})"
        ))),
        Ok(Err(status)) => match status.code() {
            Code::Unavailable | Code::Cancelled | Code::Aborted => Ok(Attempt::Retry(format!(
                "leader {addr} unreachable: {status}"
            ))),
            Code::DeadlineExceeded => Err(WriteError::Unavailable(format!(
                "leader {addr} timed out ({on_timeout}): {status}"
            ))),
            _ => Err(WriteError::Remote(format!("leader {addr}: {status}"))),
        },
        Ok(Ok(reply)) => Ok(Attempt::Done(reply.into_inner().data)),
    }
}
