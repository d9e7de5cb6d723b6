//! `yunkey ctl`: the operator's commands for a coordinator cluster: add and remove nodes
//! (the leader carries them out, one at a time) and every node's status. They present the
//! operator identity (`DATA/operator.pem`, or `--cert`/`--key`); a follower's refusal names
//! the leader, and the connection sends the same request there.

use crate::cli::{ChipCommand, CtlCommand, Global};
use crate::connect;
use crate::output::print;
use serde_json::json;
use yunkey_proto::v1::{
    AddNodeRequest, AdmitChipRequest, Chip, ChipState, DrainChipRequest, GetPlacementRequest,
    ListChipsRequest, MembershipResponse, RemoveChipRequest, RemoveNodeRequest, StatusResponse,
    WriteProbeRequest,
};

/// `yunkey ctl ...`.
pub async fn run(g: &Global, cmd: &CtlCommand) -> anyhow::Result<()> {
    match cmd {
        CtlCommand::AddNode { node_id, address } => {
            // Without --node-id, the id the node itself reports (a node started with
            // `--node-id auto` picked its own); the leader checks it again before adding.
            let node_id = match node_id {
                Some(id) => *id,
                None => node_status(g, address).await?.node_id,
            };
            let conn = connect::operator(g)?;
            let req = AddNodeRequest {
                node_id,
                address: address.clone(),
            };
            let r = conn
                .call(|ch| {
                    let req = req.clone();
                    async move { yunkey_client::cluster_client(ch).add_node(req).await }
                })
                .await?;
            print_membership(g, &format!("node {node_id} added as a voter"), &r);
            Ok(())
        }
        CtlCommand::RemoveNode { node_id } => {
            let conn = connect::operator(g)?;
            let req = RemoveNodeRequest { node_id: *node_id };
            let r = conn
                .call(|ch| async move { yunkey_client::cluster_client(ch).remove_node(req).await })
                .await?;
            print_membership(g, &format!("node {node_id} removed"), &r);
            Ok(())
        }
        CtlCommand::Status => crate::ctl_status::status(g).await,
        CtlCommand::Probe => probe(g).await,
        CtlCommand::Chip(cmd) => chip(g, cmd).await,
        CtlCommand::Placement { user_id } => placement(g, user_id).await,
    }
}

fn chip_json(c: &Chip) -> serde_json::Value {
    json!({
        "chip_id": c.chip_id, "endpoint": c.endpoint, "zone": c.zone,
        "state": chip_state(c.state), "keys": c.used, "capacity": c.capacity,
        "last_heartbeat_ms": c.last_heartbeat_ms,
    })
}

fn chip_state(state: i32) -> &'static str {
    match ChipState::try_from(state) {
        Ok(ChipState::Up) => "up",
        Ok(ChipState::Suspect) => "suspect",
        Ok(ChipState::Down) => "down",
        Ok(ChipState::Draining) => "draining",
        _ => "unknown",
    }
}

/// `yunkey ctl placement USER_ID`.
async fn placement(g: &Global, user_id: &str) -> anyhow::Result<()> {
    let conn = connect::operator(g)?;
    let req = GetPlacementRequest {
        user_id: user_id.to_owned(),
    };
    let p = conn
        .call(|ch| {
            let req = req.clone();
            async move { yunkey_client::cluster_client(ch).get_placement(req).await }
        })
        .await?;
    print(
        g.json,
        json!({
            "user_id": p.user_id, "replicas": p.replicas, "zones": p.zones,
            "fleet_zones": p.fleet_zones, "revoked": p.revoked, "notes": p.notes,
            "holders": p.holders.iter().map(|h| json!({
                "chip_id": h.chip_id, "zone": h.zone, "state": chip_state(h.state),
                "key_handle": h.key_handle, "note": h.note,
            })).collect::<Vec<_>>(),
        }),
        || {
            let mut out = format!(
                "user {}: {} of {} holders in {} zone(s)\n{:<16} {:<10} {:<9} note",
                p.user_id,
                p.holders.len(),
                p.replicas,
                p.zones,
                "chip",
                "zone",
                "state"
            );
            for h in &p.holders {
                out.push_str(&format!(
                    "\n{:<16} {:<10} {:<9} {}",
                    h.chip_id,
                    h.zone,
                    chip_state(h.state),
                    h.note
                ));
            }
            for n in &p.notes {
                out.push_str(&format!("\n- {n}"));
            }
            out
        },
    );
    Ok(())
}

/// `yunkey ctl chip ...`.
async fn chip(g: &Global, cmd: &ChipCommand) -> anyhow::Result<()> {
    let conn = connect::operator(g)?;
    match cmd {
        ChipCommand::Add { address } => {
            let req = AdmitChipRequest {
                endpoint: address.clone(),
            };
            let chip = conn
                .call(|ch| {
                    let req = req.clone();
                    async move { yunkey_client::cluster_client(ch).admit_chip(req).await }
                })
                .await?;
            print(g.json, chip_json(&chip), || {
                format!(
                    "chip {} at {} (zone {}, capacity {}) is registered",
                    chip.chip_id, chip.endpoint, chip.zone, chip.capacity
                )
            });
        }
        ChipCommand::List => {
            let list = conn
                .call(|ch| async move {
                    yunkey_client::cluster_client(ch)
                        .list_chips(ListChipsRequest {})
                        .await
                })
                .await?;
            print(
                g.json,
                json!({ "chips": list.chips.iter().map(chip_json).collect::<Vec<_>>() }),
                || {
                    let mut out = format!(
                        "{:<16} {:<9} {:<10} {:>10} {:>12}",
                        "chip", "state", "zone", "keys", "capacity"
                    );
                    for c in &list.chips {
                        out.push_str(&format!(
                            "\n{:<16} {:<9} {:<10} {:>10} {:>12}",
                            c.chip_id,
                            chip_state(c.state),
                            c.zone,
                            c.used,
                            c.capacity
                        ));
                    }
                    out
                },
            );
        }
        ChipCommand::Drain { chip_id, cancel } => {
            let req = DrainChipRequest {
                chip_id: chip_id.clone(),
                cancel: *cancel,
            };
            let c = conn
                .call(|ch| {
                    let req = req.clone();
                    async move { yunkey_client::cluster_client(ch).drain_chip(req).await }
                })
                .await?;
            print(g.json, chip_json(&c), || {
                if *cancel {
                    format!("chip {chip_id} is no longer draining")
                } else {
                    format!(
                        "chip {chip_id} is draining: {} keys to move (yunkey ctl chip list shows progress)",
                        c.used
                    )
                }
            });
        }
        ChipCommand::Remove { chip_id } => {
            let req = RemoveChipRequest {
                chip_id: chip_id.clone(),
            };
            conn.call(|ch| {
                let req = req.clone();
                async move { yunkey_client::cluster_client(ch).remove_chip(req).await }
            })
            .await?;
            print(g.json, json!({ "removed": chip_id }), || {
                format!("chip {chip_id} removed from the registry")
            });
        }
    }
    Ok(())
}

/// `yunkey ctl probe`: one no-op write through Raft, timed (retries included).
async fn probe(g: &Global) -> anyhow::Result<()> {
    let conn = connect::operator(g)?;
    let started = std::time::Instant::now();
    let r = conn
        .call(|ch| async move {
            yunkey_client::cluster_client(ch)
                .write_probe(WriteProbeRequest {})
                .await
        })
        .await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    print(
        g.json,
        json!({
            "node_id": r.node_id, "leader_id": r.leader_id, "log_index": r.log_index,
            "milliseconds": ms,
        }),
        || {
            format!(
                "write committed at log index {} in {ms:.1} ms (served by node {}, leader {})",
                r.log_index, r.node_id, r.leader_id
            )
        },
    );
    Ok(())
}

fn print_membership(g: &Global, done: &str, r: &MembershipResponse) {
    print(
        g.json,
        json!({
            "leader_id": r.leader_id, "voters": r.voters, "learners": r.learners,
            "log_index": r.log_index,
        }),
        || {
            format!(
                "{done} (leader {}); voters {:?}, learners {:?}",
                r.leader_id, r.voters, r.learners
            )
        },
    );
}

/// The node at `address`'s own `Status`, asked once (a probe: 1 s to connect, 2 s to answer).
async fn node_status(g: &Global, address: &str) -> anyhow::Result<StatusResponse> {
    let pool = connect::probe_pool(g, yunkey_net::Role::Operator)?;
    connect::status_at(&pool, address).await.map_err(|why| {
        anyhow::anyhow!(
            "cannot ask the coordinator at {address} for its node id ({why}); start it, check \
             the address, or give --node-id. Nothing was changed"
        )
    })
}
