//! [`write()`]: submit a command to the cluster, forwarding it to the leader when needed.

use std::time::Duration;

use openraft::error::{ClientWriteError, Fatal, RaftError};
use openraft::{BasicNode, Raft};
use tokio::time::Instant;

use crate::codec::{decode, encode};
use crate::error::WriteError;
use crate::leader_call::{call_leader, FIRST_BACKOFF, MAX_BACKOFF};
use crate::network::GrpcNetworkFactory;
use crate::server::ClientWriteReply;
use crate::TypeConfig;

/// What one forwarding attempt tells the retry loop.
pub(crate) enum Attempt<R> {
    Done(R),
    Retry(String),
}

/// A committed and applied write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written<R> {
    /// The application's response.
    pub response: R,
    /// The log index of the entry: it is applied on the leader, and applied on this node once
    /// its applied index reaches it.
    pub log_index: u64,
}

/// Writes `cmd` through Raft and returns the application's response (and the entry's log
/// index) once it is applied on the leader. When it was forwarded, this node may not have
/// applied it yet: wait for `log_index` before reading the local state.
///
/// When this node's metrics name another node as the leader, sends the command to the
/// leader's `ClientWrite` RPC over `net`'s cached channels; otherwise tries
/// `raft.client_write` locally, and forwards if the local core names a leader. With no
/// known leader, or on transient errors (leader unreachable, leadership moving, remote node
/// shutting down), retries with a small backoff until `deadline` has passed.
///
/// A write that fails with [`WriteError::Unavailable`] may still commit later (it may have reached
/// a leader before the deadline): the application must deduplicate commands, for example by a
/// request id carried in the command.
pub async fn write<C: TypeConfig>(
    raft: &Raft<C>,
    net: &GrpcNetworkFactory<C>,
    cmd: C::D,
    deadline: Duration,
) -> Result<Written<C::R>, WriteError> {
    let end = Instant::now() + deadline;
    let mut backoff = FIRST_BACKOFF;
    let mut last = String::from("no attempt made");
    loop {
        let remaining = end.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(WriteError::Unavailable(last));
        }
        // A follower that knows the leader forwards at once, without first asking its own
        // Raft core to refuse the write (a round trip through the core and a copy of the
        // command). If the leader it knows has moved on, that leader says so and we retry.
        let attempt = match known_other_leader(raft, net.id()) {
            Some((leader_id, node)) => {
                forward(raft, Some(leader_id), net, &node, &cmd, end).await?
            }
            None => write_here(raft, net, &cmd, remaining, end).await?,
        };
        match attempt {
            Attempt::Done((response, log_index)) => {
                return Ok(Written {
                    response,
                    log_index,
                })
            }
            Attempt::Retry(why) => last = why,
        }
        let remaining = end.saturating_duration_since(Instant::now());
        tokio::time::sleep(backoff.min(remaining)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Offers `cmd` to this node's Raft core, and forwards it to the leader the core names.
async fn write_here<C: TypeConfig>(
    raft: &Raft<C>,
    net: &GrpcNetworkFactory<C>,
    cmd: &C::D,
    remaining: Duration,
    end: Instant,
) -> Result<Attempt<(C::R, u64)>, WriteError> {
    let local = match tokio::time::timeout(remaining, raft.client_write(cmd.clone())).await {
        Err(_) => {
            return Err(WriteError::Unavailable(
                "local write not applied before the deadline (it may still commit)".into(),
            ))
        }
        Ok(r) => r,
    };
    match local {
        Ok(resp) => Ok(Attempt::Done((resp.data, resp.log_id.index))),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => match f.leader_node {
            Some(node) if f.leader_id != Some(net.id()) => {
                forward(raft, f.leader_id, net, &node, cmd, end).await
            }
            _ => Ok(Attempt::Retry("no known leader".into())),
        },
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
            Err(WriteError::Remote(e.to_string()))
        }
        Err(RaftError::Fatal(Fatal::StorageError(e))) => Err(WriteError::Storage(e.to_string())),
        Err(RaftError::Fatal(e)) => Err(WriteError::Fatal(e.to_string())),
    }
}

/// The leader this node's metrics name, with its address, when it is another node.
fn known_other_leader<C: TypeConfig>(raft: &Raft<C>, me: u64) -> Option<(u64, BasicNode)> {
    let m = raft.metrics();
    let m = m.borrow();
    let leader = m.current_leader.filter(|id| *id != me)?;
    let node = m.membership_config.membership().get_node(&leader)?.clone();
    Some((leader, node))
}

/// Sends `cmd` to `leader`'s `ClientWrite` RPC, waiting at most until `end`.
async fn forward<C: TypeConfig>(
    raft: &Raft<C>,
    leader_id: Option<u64>,
    net: &GrpcNetworkFactory<C>,
    leader: &BasicNode,
    cmd: &C::D,
    end: Instant,
) -> Result<Attempt<(C::R, u64)>, WriteError> {
    let data = encode(cmd).map_err(|e| WriteError::Codec(e.to_string()))?;
    let reply = match call_leader(
        raft,
        (leader_id, leader),
        net,
        end,
        data,
        "the write may still commit",
        |mut client, request| async move { client.client_write(request).await },
    )
    .await?
    {
        Attempt::Done(data) => data,
        Attempt::Retry(why) => return Ok(Attempt::Retry(why)),
    };
    let result: ClientWriteReply<C> = decode(&reply)
        .map_err(|e| WriteError::Remote(format!("undecodable ClientWrite reply: {e}")))?;
    match result {
        Ok(r) => Ok(Attempt::Done(r)),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Ok(Attempt::Retry(
            format!("{} is no longer the leader", leader.addr),
        )),
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
            Err(WriteError::Remote(e.to_string()))
        }
        // The leader is shutting down or failed: another leader will be elected.
        Err(RaftError::Fatal(e)) => Ok(Attempt::Retry(format!(
            "leader {} failed: {e}",
            leader.addr
        ))),
    }
}
