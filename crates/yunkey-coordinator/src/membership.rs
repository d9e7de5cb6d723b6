//! Coordinator membership, changed by one controller: the leader, one change at a time.
//!
//! Node ids are never reused. Every id ever added is recorded in the replicated state
//! ([`Op::RecordNodeId`]) before the node joins, and an `AddNode` for a recorded id is refused
//! unless that node is still a member at the same address (a retry of an interrupted add).
//!
//! Membership RPCs need role `operator` (`yunkey_net::access`), and only the leader serves
//! them. A follower does not forward them with its own node identity: that would make a node
//! certificate enough to change membership. It answers UNAVAILABLE naming the leader
//! ([`CoordError::NotLeader`], with the address in the `x-yunkey-leader` metadata), and the
//! operator's client sends the same request there.
//!
//! `AddNode` first asks the new node's `Status` at the given address (it must answer, over
//! TLS with a node certificate, as that node id), then adds it as a learner, and promotes it
//! to voter only once the leader's replication metrics show the learner has acknowledged
//! the log up to the entry that added it ([`yunkey_raft::wait_caught_up`]). openraft's own
//! `add_learner(.., blocking = true)` is not used: it reports a learner caught up when the
//! leader's whole log is shorter than `replication_lag_threshold` (5,000 entries), even if
//! the learner never answered, and a voter that never answers stalls every write.

use crate::core::Core;
use crate::error::{CoordError, Result};
use crate::state::{NodeIdRecord, Op};
use openraft::{BasicNode, ChangeMembers};
use std::collections::BTreeSet;
use std::time::Duration;
use yunkey_proto::v1::cluster_service_client::ClusterServiceClient;
use yunkey_proto::v1::{AddNodeRequest, MembershipResponse, RemoveNodeRequest, StatusRequest};

/// How long `AddNode` waits for the learner to catch up before giving up (the learner stays;
/// retrying the same `AddNode` resumes).
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `AddNode` waits for the new node's `Status` answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A learner is promoted when it lags the leader's last log index by at most this many
/// entries (and has acknowledged the entry that added it).
pub const PROMOTE_MAX_LAG: u64 = 100;

fn raft_err(what: &str) -> impl FnOnce(String) -> CoordError + '_ {
    move |e| CoordError::Unavailable(format!("{what}: {e}; retry the same request"))
}

fn response(core: &Core, log_index: u64) -> MembershipResponse {
    let m = core.raft.raft().metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    MembershipResponse {
        leader_id: m.current_leader.unwrap_or_default(),
        learners: membership
            .nodes()
            .map(|(id, _)| *id)
            .filter(|id| !voters.contains(id))
            .collect(),
        voters,
        log_index,
    }
}

/// Ok on the leader; otherwise the refusal that names the leader (or says none is known).
fn ensure_leader(core: &Core) -> Result<()> {
    match core.raft.leader() {
        Some((id, _)) if id == core.node_id => Ok(()),
        Some((leader_id, leader_address)) => Err(CoordError::NotLeader {
            node_id: core.node_id,
            leader_id,
            leader_address,
        }),
        None => Err(CoordError::Unavailable(
            "no leader is known right now (an election is in progress); retry shortly".into(),
        )),
    }
}

/// The `Status` of the coordinator at `address`, asked with this node's identity within
/// `wait`; why not, in words, otherwise.
pub(crate) async fn peer_status(
    core: &Core,
    address: &str,
    wait: std::time::Duration,
) -> std::result::Result<yunkey_proto::v1::StatusResponse, String> {
    let channel = core.raft.peer_channel(address).map_err(|e| e.to_string())?;
    let mut req = tonic::Request::new(StatusRequest {});
    req.set_timeout(wait);
    tokio::time::timeout(wait, ClusterServiceClient::new(channel).status(req))
        .await
        .map_err(|_| format!("no answer within {} s", wait.as_secs()))?
        .map(tonic::Response::into_inner)
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

/// Asks the coordinator at `address` (with this node's identity) which node it is: it must
/// answer, as `node_id`. Catches a wrong or unreachable address before it joins the cluster.
async fn probe_new_node(core: &Core, node_id: u64, address: &str) -> Result<()> {
    let status = peer_status(core, address, PROBE_TIMEOUT)
        .await
        .map_err(|why| {
            CoordError::Unavailable(format!(
                "cannot reach node {node_id} at {address} ({why}); start it first \
                 (`yunkey coordinator --node-id {node_id} ...`) and check that the address is \
                 reachable from the leader, then retry the same AddNode. Nothing was changed"
            ))
        })?;
    if status.node_id != node_id {
        return Err(CoordError::FailedPrecondition(format!(
            "the coordinator at {address} is node {}, not node {node_id}; give AddNode the id \
             it was started with (--node-id). Nothing was changed",
            status.node_id
        )));
    }
    Ok(())
}

/// On the leader: records every current member's id that is not recorded yet (the node that
/// initialized the cluster, for one). Idempotent.
pub async fn record_members(core: &Core, actor: &str) -> Result<()> {
    let nodes = core.raft.members();
    for (node_id, address) in nodes {
        if core.view.node_id(node_id)?.is_none() {
            match record(core, actor, node_id, &address).await {
                Ok(()) | Err(CoordError::NodeIdUsed { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

async fn record(core: &Core, actor: &str, node_id: u64, address: &str) -> Result<()> {
    core.propose(
        "",
        actor,
        Op::RecordNodeId(NodeIdRecord {
            node_id,
            address: address.to_owned(),
            added_at: crate::clock::now(),
        }),
    )
    .await
    .map(|_| ())
}

/// `AddNode`: see `cluster.proto`.
pub async fn add_node(core: &Core, actor: &str, req: AddNodeRequest) -> Result<MembershipResponse> {
    if req.node_id == 0 {
        return Err(yunkey_crypto::validate::InvalidField::new("node_id", "must not be 0").into());
    }
    yunkey_crypto::validate::text("address", &req.address, 256, false)?;
    if !req.address.starts_with("https://") {
        return Err(yunkey_crypto::validate::InvalidField::new(
            "address",
            "must be https://HOST:PORT",
        )
        .into());
    }
    ensure_leader(core)?;
    let _one_change_at_a_time = core.membership_lock.lock().await;
    record_members(core, actor).await?;
    let (voter, member_addr) = {
        let m = core.raft.raft().metrics().borrow().clone();
        let membership = m.membership_config.membership();
        (
            membership.voter_ids().any(|id| id == req.node_id),
            membership.get_node(&req.node_id).map(|n| n.addr.clone()),
        )
    };
    let recorded = match member_addr {
        // A retry of an add that was interrupted, or that already completed.
        Some(addr) if addr == req.address => {
            if voter {
                return Ok(response(core, 0));
            }
            true
        }
        Some(addr) => {
            return Err(CoordError::NodeIdUsed {
                node_id: req.node_id,
                first_address: addr,
            })
        }
        None => {
            if let Some(first) = core.view.node_id(req.node_id)? {
                return Err(CoordError::NodeIdUsed {
                    node_id: req.node_id,
                    first_address: first.address,
                });
            }
            false
        }
    };
    // Before anything is recorded: a wrong or unreachable address changes nothing.
    probe_new_node(core, req.node_id, &req.address).await?;
    if !recorded {
        record(core, actor, req.node_id, &req.address).await?;
    }
    tracing::info!(target: "yunkey::audit", actor, node = req.node_id, address = %req.address, "adding a learner");
    let added = core
        .raft
        .raft()
        .add_learner(req.node_id, BasicNode::new(&req.address), false)
        .await
        .map_err(|e| raft_err("adding the learner")(e.to_string()))?;
    // Promote only a learner that has acknowledged the log up to the entry that added it.
    yunkey_raft::wait_caught_up(
        core.raft.raft(),
        req.node_id,
        added.log_id.index,
        PROMOTE_MAX_LAG,
        CATCH_UP_TIMEOUT,
    )
    .await
    .map_err(|e| {
        CoordError::Unavailable(format!(
            "node {} was added as a learner but is not promoted to voter: {e}; check that it \
             runs and is reachable at {}, then retry the same AddNode (or remove it with \
             RemoveNode)",
            req.node_id, req.address
        ))
    })?;
    let promoted = core
        .raft
        .raft()
        .change_membership(
            ChangeMembers::AddVoterIds(BTreeSet::from([req.node_id])),
            false,
        )
        .await
        .map_err(|e| raft_err("promoting the learner to voter")(e.to_string()))?;
    tracing::info!(target: "yunkey::audit", actor, node = req.node_id, "node added as a voter");
    Ok(response(core, promoted.log_id.index))
}

/// `RemoveNode`: see `cluster.proto`.
pub async fn remove_node(
    core: &Core,
    actor: &str,
    req: RemoveNodeRequest,
) -> Result<MembershipResponse> {
    ensure_leader(core)?;
    let _one_change_at_a_time = core.membership_lock.lock().await;
    let (voters, member) = {
        let m = core.raft.raft().metrics().borrow().clone();
        let membership = m.membership_config.membership();
        (
            membership.voter_ids().collect::<Vec<_>>(),
            membership.get_node(&req.node_id).is_some(),
        )
    };
    if !member {
        return Err(CoordError::NodeNotFound(req.node_id));
    }
    let ids = BTreeSet::from([req.node_id]);
    let change = if voters.contains(&req.node_id) {
        if voters.len() == 1 {
            return Err(CoordError::FailedPrecondition(format!(
                "node {} is the last voter; a cluster cannot remove its last voter",
                req.node_id
            )));
        }
        ChangeMembers::RemoveVoters(ids)
    } else {
        ChangeMembers::RemoveNodes(ids)
    };
    let changed = core
        .raft
        .raft()
        .change_membership(change, false)
        .await
        .map_err(|e| raft_err("removing the node")(e.to_string()))?;
    tracing::info!(target: "yunkey::audit", actor, node = req.node_id, "node removed");
    Ok(response(core, changed.log_id.index))
}
