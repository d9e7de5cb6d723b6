//! `yunkey ctl status`: every coordinator's own figures, and a leader that answered.
//!
//! The given endpoints are asked first, all at once, then every member they name that was not
//! among them, all at once; each node once, with the probe timeouts of
//! [`connect::status_at`]. A dead node therefore costs at most one connect timeout, whatever
//! the number of nodes, and never hides the others. The leader shown is a node that answered
//! and says it leads; when the node the others name as leader does not answer (just after it
//! died, before an election), the output says so instead of naming it.

use crate::cli::Global;
use crate::connect;
use crate::output::print;
use anyhow::bail;
use serde_json::json;
use std::collections::BTreeMap;
use yunkey_net::pool::ChannelPool;
use yunkey_net::Role;
use yunkey_proto::v1::{NodeStatus, StatusResponse};

/// Each address asked, with its answer or why there was none.
type Answers = BTreeMap<String, Result<StatusResponse, String>>;

/// Asks every address in `addresses` at once.
async fn ask_all(pool: &ChannelPool, addresses: &[String]) -> Answers {
    let asks = addresses.iter().map(|a| async move {
        let answer = connect::status_at(pool, a).await;
        (a.clone(), answer)
    });
    futures::future::join_all(asks).await.into_iter().collect()
}

/// One member's row.
struct Row {
    member: NodeStatus,
    /// The member's own answer, or why it gave none.
    own: Result<StatusResponse, String>,
    /// The answering leader's matched index for it.
    matched: Option<u64>,
}

impl Row {
    fn own(&self) -> Option<&StatusResponse> {
        self.own.as_ref().ok()
    }

    /// The role the member reports for itself.
    fn role(&self) -> String {
        match self.own() {
            Some(s) => s
                .nodes
                .iter()
                .find(|n| n.node_id == s.node_id)
                .map(|n| n.role.clone())
                .unwrap_or_else(|| "none".into()),
            None => "-".into(),
        }
    }
}

/// `yunkey ctl status`.
pub async fn status(g: &Global) -> anyhow::Result<()> {
    let pool = connect::probe_pool(g, Role::Operator)?;
    let given = connect::endpoints(g)?;
    let mut answers = ask_all(&pool, &given).await;
    // The membership as the most recent answer (highest term, then longest log) has it.
    let Some(view) = answers
        .values()
        .filter_map(|a| a.as_ref().ok())
        .max_by_key(|s| (s.term, s.last_log_index))
        .cloned()
    else {
        let failed: Vec<String> = answers
            .iter()
            .map(|(address, a)| format!("{address}: {}", a.as_ref().err().map_or("", |e| e)))
            .collect();
        bail!(
            "no coordinator answered ClusterService.Status: {}",
            failed.join("; ")
        );
    };
    let rest: Vec<String> = view
        .nodes
        .iter()
        .map(|n| n.address.clone())
        .filter(|a| !answers.contains_key(a))
        .collect();
    answers.extend(ask_all(&pool, &rest).await);

    // A member's answer counts only if it came from that member.
    let own = |n: &NodeStatus| -> Result<StatusResponse, String> {
        match answers.get(&n.address) {
            Some(Ok(s)) if s.node_id == n.node_id => Ok(s.clone()),
            Some(Ok(s)) => Err(format!("answered as node {}", s.node_id)),
            Some(Err(why)) => Err(why.clone()),
            None => Err("not asked".into()),
        }
    };
    let leader: Option<StatusResponse> = view
        .nodes
        .iter()
        .filter_map(|n| own(n).ok())
        .filter(|s| s.leader_id == s.node_id)
        .max_by_key(|s| s.term);
    let rows: Vec<Row> = view
        .nodes
        .iter()
        .map(|n| Row {
            member: n.clone(),
            own: own(n),
            matched: leader
                .as_ref()
                .and_then(|l| l.nodes.iter().find(|m| m.node_id == n.node_id))
                .map(|m| m.matched_index),
        })
        .collect();
    let problem = match &leader {
        Some(_) => None,
        None => Some(leaderless(&view, &rows)),
    };
    // Given endpoints that are not members' addresses and did not answer.
    let strays: Vec<(String, String)> = answers
        .iter()
        .filter(|(address, _)| !view.nodes.iter().any(|n| &n.address == *address))
        .filter_map(|(address, a)| a.as_ref().err().map(|e| (address.clone(), e.clone())))
        .collect();
    // Counts as the leader has them, else as the most recent answer.
    let figures = leader.as_ref().unwrap_or(&view);
    let leader_last = leader.as_ref().map(|l| l.last_log_index).unwrap_or(0);
    let lag = |r: &Row| r.matched.map(|m| leader_last.saturating_sub(m));
    print(
        g.json,
        json!({
            "node_id": figures.node_id,
            "leader_id": leader.as_ref().map(|l| l.node_id),
            "leader_problem": problem,
            "term": figures.term,
            "users": figures.users, "devices": figures.devices, "chips": figures.chips,
            "repair_pending_users": leader.as_ref().map(|l| l.repair_pending_users),
            "rebalance_pending_moves": leader.as_ref().map(|l| l.rebalance_pending_moves),
            "draining_chips": figures.draining_chips.iter().map(|c| json!({
                "chip_id": c.chip_id, "keys_left": c.used,
            })).collect::<Vec<_>>(),
            "nodes": rows.iter().map(|r| {
                let own = r.own();
                json!({
                    "node_id": r.member.node_id, "address": r.member.address,
                    "role": own.map(|_| r.role()), "voter": r.member.voter,
                    "reachable": own.is_some(),
                    "error": r.own.as_ref().err(),
                    "term": own.map(|s| s.term),
                    "last_log_index": own.map(|s| s.last_log_index),
                    "applied_index": own.map(|s| s.applied_index),
                    "matched_index": r.matched,
                    "lag": lag(r),
                })
            }).collect::<Vec<_>>(),
            "unreachable_endpoints": strays.iter().map(|(endpoint, error)| json!({
                "endpoint": endpoint, "error": error,
            })).collect::<Vec<_>>(),
        }),
        || {
            let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
            let mut out = match &leader {
                Some(l) => format!(
                    "leader: node {} (term {}); users {}, devices {}, chips {}; repair pending {}, \
                     rebalance pending {}\n",
                    l.node_id,
                    l.term,
                    l.users,
                    l.devices,
                    l.chips,
                    l.repair_pending_users,
                    l.rebalance_pending_moves
                ),
                None => format!(
                    "leader: {}\nas node {} sees it: term {}; users {}, devices {}, chips {}\n",
                    problem.as_deref().unwrap_or_default(),
                    view.node_id,
                    view.term,
                    view.users,
                    view.devices,
                    view.chips
                ),
            };
            for c in &figures.draining_chips {
                out.push_str(&format!("draining: {} ({} keys left)\n", c.chip_id, c.used));
            }
            out.push_str(&format!(
                "{:>4}  {:<9} {:>5} {:>9} {:>9} {:>9} {:>6}  address\n",
                "node", "role", "term", "last log", "applied", "matched", "lag"
            ));
            for r in &rows {
                let own = r.own();
                out.push_str(&format!(
                    "{:>4}  {:<9} {:>5} {:>9} {:>9} {:>9} {:>6}  {}",
                    r.member.node_id,
                    r.role(),
                    opt(own.map(|s| s.term)),
                    opt(own.map(|s| s.last_log_index)),
                    opt(own.map(|s| s.applied_index)),
                    opt(r.matched),
                    opt(lag(r)),
                    r.member.address,
                ));
                if let Err(why) = &r.own {
                    out.push_str(&format!("  (no answer: {why})"));
                }
                out.push('\n');
            }
            for (endpoint, why) in &strays {
                out.push_str(&format!("not a member, no answer: {endpoint} ({why})\n"));
            }
            out.trim_end().to_owned()
        },
    );
    Ok(())
}

/// Why no answering node leads: the node the most recent answer names did not answer, or no
/// longer leads, or no leader is known.
fn leaderless(view: &StatusResponse, rows: &[Row]) -> String {
    let named = rows.iter().find(|r| r.member.node_id == view.leader_id);
    match named {
        None => "none known (election in progress?)".to_owned(),
        Some(r) => match &r.own {
            Err(why) => format!(
                "none reachable (node {} at {} did not answer: {why}; election in progress?)",
                r.member.node_id, r.member.address
            ),
            Ok(s) => format!(
                "none reachable (node {} at {} answered as a {} of term {}; election in \
                 progress?)",
                r.member.node_id,
                r.member.address,
                r.role(),
                s.term
            ),
        },
    }
}
