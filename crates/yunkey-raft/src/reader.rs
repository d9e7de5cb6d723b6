//! [`ensure_linearizable()`]: linearizable reads on any node, leader or follower.

use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::{BasicNode, Raft};
use tokio::time::Instant;

use crate::codec::decode;
use crate::error::WriteError;
use crate::leader_call::{call_leader, FIRST_BACKOFF, MAX_BACKOFF};
use crate::network::GrpcNetworkFactory;
use crate::server::ReadIndexReply;
use crate::writer::Attempt;
use crate::TypeConfig;

/// Returns once this node's applied state reflects every write acknowledged (by any node)
/// before the call, so that a read of the local state right after is linearizable.
///
/// On the leader this is openraft's `ensure_linearizable` (a quorum confirms the leadership,
/// then the read index is applied). On a follower it asks the leader's `ReadIndex` RPC for the
/// read index, then waits until its own applied index reaches it. With no known or reachable
/// leader it retries with a small backoff until `deadline` has passed, then returns
/// [`WriteError::Unavailable`] (the errors are [`WriteError`]'s, although nothing is written).
/// Returns the read index (0 for an empty log).
pub async fn ensure_linearizable<C: TypeConfig>(
    raft: &Raft<C>,
    net: &GrpcNetworkFactory<C>,
    deadline: Duration,
) -> Result<u64, WriteError> {
    let end = Instant::now() + deadline;
    let mut backoff = FIRST_BACKOFF;
    let mut last = String::from("no attempt made");
    loop {
        let remaining = end.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(WriteError::Unavailable(last));
        }
        let local = match tokio::time::timeout(remaining, raft.ensure_linearizable()).await {
            Err(_) => {
                return Err(WriteError::Unavailable(
                    "leadership not confirmed before the deadline".into(),
                ))
            }
            Ok(r) => r,
        };
        let attempt = match local {
            Ok(read_log_id) => return Ok(read_log_id.map(|l| l.index).unwrap_or(0)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                match f.leader_node {
                    Some(node) if f.leader_id != Some(net.id()) => {
                        read_index_from(raft, f.leader_id, net, &node, end).await?
                    }
                    _ => Attempt::Retry("no known leader".into()),
                }
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                Attempt::Retry(format!("leader cannot reach a quorum: {e}"))
            }
            Err(RaftError::Fatal(e)) => return Err(WriteError::Fatal(e.to_string())),
        };
        match attempt {
            Attempt::Done(index) => {
                let remaining = end.saturating_duration_since(Instant::now());
                raft.wait(Some(remaining))
                    .applied_index_at_least(Some(index), "read index applied here")
                    .await
                    .map_err(|e| {
                        WriteError::Unavailable(format!(
                            "this node did not apply up to the leader's read index {index} in time: {e}"
                        ))
                    })?;
                return Ok(index);
            }
            Attempt::Retry(why) => last = why,
        }
        let remaining = end.saturating_duration_since(Instant::now());
        tokio::time::sleep(backoff.min(remaining)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Asks `leader`'s `ReadIndex` RPC for the read index.
async fn read_index_from<C: TypeConfig>(
    raft: &Raft<C>,
    leader_id: Option<u64>,
    net: &GrpcNetworkFactory<C>,
    leader: &BasicNode,
    end: Instant,
) -> Result<Attempt<u64>, WriteError> {
    let reply = match call_leader(
        raft,
        (leader_id, leader),
        net,
        end,
        vec![],
        "no read index",
        |mut client, request| async move { client.read_index(request).await },
    )
    .await?
    {
        Attempt::Done(data) => data,
        Attempt::Retry(why) => return Ok(Attempt::Retry(why)),
    };
    let result: ReadIndexReply = decode(&reply)
        .map_err(|e| WriteError::Remote(format!("undecodable ReadIndex reply: {e}")))?;
    match result {
        Ok(log_id) => Ok(Attempt::Done(log_id.map(|l| l.index).unwrap_or(0))),
        Err(RaftError::APIError(e)) => Ok(Attempt::Retry(format!(
            "{} cannot serve a read index: {e}",
            leader.addr
        ))),
        Err(RaftError::Fatal(e)) => Ok(Attempt::Retry(format!(
            "leader {} failed: {e}",
            leader.addr
        ))),
    }
}
