//! Coordinator membership, changed by one controller: the leader, one change at a time.
//!
//! Node ids are never reused. Every id ever added is recorded in the replicated state
//! ([`Op::RecordNodeId`]) before the node joins, and an `AddNode` for a recorded id is refused
//! unless that node is still a member at the same address (a retry of an interrupted add).
//! Called on a follower, a change is forwarded to the leader's `ClusterService` once (a
//! request marked as forwarded is never forwarded again).

use crate::core::Core;
use crate::error::{CoordError, Result};
use crate::state::{NodeIdRecord, Op};
use openraft::{BasicNode, ChangeMembers};
use std::collections::BTreeSet;
use std::time::Duration;
use yunkey_proto::v1::cluster_service_client::ClusterServiceClient;
use yunkey_proto::v1::{AddNodeRequest, MembershipResponse, RemoveNodeRequest};

/// Metadata key marking a membership request forwarded by a follower.
pub const FORWARDED_HEADER: &str = "x-yunkey-forwarded";

/// How long `AddNode` waits for the learner to catch up before giving up (the learner stays;
/// retrying the same `AddNode` resumes).
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

fn raft_err(what: &str) -> impl FnOnce(String) -> CoordError + '_ {
    move |e| CoordError::Unavailable(format!("{what}: {e}; retry the same request"))
}

fn is_leader(core: &Core) -> bool {
    core.raft.raft().metrics().borrow().current_leader == Some(core.node_id)
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

/// The leader's channel, for forwarding; refuses when this request was forwarded already.
fn leader_client(
    core: &Core,
    forwarded: bool,
) -> Result<ClusterServiceClient<tonic::transport::Channel>> {
    if forwarded {
        return Err(CoordError::Unavailable(format!(
            "node {} is not the leader (the request was forwarded here); retry",
            core.node_id
        )));
    }
    let (id, addr) = core.raft.leader().ok_or_else(|| {
        CoordError::Unavailable("no leader is known right now; retry shortly".into())
    })?;
    if id == core.node_id {
        return Err(CoordError::Unavailable(
            "leadership is changing; retry shortly".into(),
        ));
    }
    Ok(ClusterServiceClient::new(core.raft.peer_channel(&addr)?))
}

fn forwarded_request<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        FORWARDED_HEADER,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    req.set_timeout(CATCH_UP_TIMEOUT + Duration::from_secs(10));
    req
}

/// On the leader: records every current member's id that is not recorded yet (the node that
/// initialized the cluster, for one). Idempotent.
pub async fn record_members(core: &Core, actor: &str) -> Result<()> {
    let nodes: Vec<(u64, String)> = {
        let m = core.raft.raft().metrics().borrow().clone();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    };
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
pub async fn add_node(
    core: &Core,
    actor: &str,
    req: AddNodeRequest,
    forwarded: bool,
) -> Result<MembershipResponse> {
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
    if !is_leader(core) {
        let mut client = leader_client(core, forwarded)?;
        return client
            .add_node(forwarded_request(req))
            .await
            .map(|r| r.into_inner())
            .map_err(CoordError::Forwarded);
    }
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
    match member_addr {
        // A retry of an add that was interrupted, or that already completed.
        Some(addr) if addr == req.address => {
            if voter {
                return Ok(response(core, 0));
            }
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
            record(core, actor, req.node_id, &req.address).await?;
        }
    }
    tracing::info!(target: "yunkey::audit", actor, node = req.node_id, address = %req.address, "adding a learner");
    tokio::time::timeout(
        CATCH_UP_TIMEOUT,
        core.raft
            .raft()
            .add_learner(req.node_id, BasicNode::new(&req.address), true),
    )
    .await
    .map_err(|_| {
        CoordError::Unavailable(format!(
            "node {} was added as a learner but did not catch up within {} s; check that it runs \
             and is reachable at {}, then retry the same AddNode",
            req.node_id,
            CATCH_UP_TIMEOUT.as_secs(),
            req.address
        ))
    })?
    .map_err(|e| raft_err("adding the learner")(e.to_string()))?;
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
    forwarded: bool,
) -> Result<MembershipResponse> {
    if !is_leader(core) {
        let mut client = leader_client(core, forwarded)?;
        return client
            .remove_node(forwarded_request(req))
            .await
            .map(|r| r.into_inner())
            .map_err(CoordError::Forwarded);
    }
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
