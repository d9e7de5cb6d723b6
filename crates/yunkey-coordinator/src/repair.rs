//! The reconciler: brings every key back to R holders, on the leader only.
//!
//! A holder is *bad* when its chip has been down for longer than
//! [`crate::chips::ChipsConfig::down_after`], or when an operator drains the chip. For each key
//! with bad holders, or with fewer than R holders (a replica copy that failed at enrolment),
//! the reconciler moves it, **add before remove**:
//! 1. a healthy chip that does not hold the key imports it from the wrapped copy in Raft state
//!    (the newest binding is always there; this is also how a key whose holders all died is
//!    restored, with no operator step);
//! 2. Raft commits the new holder (`AddHolder`);
//! 3. only then is a bad holder dropped (`RemoveHolder`, which the state machine refuses if it
//!    would leave fewer than R holders), and a drained chip's copy deleted.
//!
//! Every step is derived from committed state and idempotent, so a leader change half-way only
//! repeats work: the new leader sees what committed and continues. Copies that no committed
//! placement lists (a chip that came back after it was replaced, a copy imported by a leader
//! that died before committing it) are deleted by [`sweep`].
//!
//! The rate is bounded (users per second, [`RepairConfig::rate`]) so that repair never starves
//! signing. Revoked users are not repaired (their keys sign nothing).

use crate::core::Core;
use crate::error::{CoordError, Result};
use crate::placement::{self, Candidate};
use crate::state::{HolderRecord, KeyOwner, Op, UserState};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use yunkey_proto::v1::{ChipState, KeyHandleRequest, KeyPurpose, UnwrapKeyRequest};

/// How the reconciler paces itself.
#[derive(Debug, Clone)]
pub struct RepairConfig {
    /// Time between passes.
    pub interval: Duration,
    /// Most users moved per second.
    pub rate: u32,
    /// A full scan for under-replicated users runs at least this often, even with every chip
    /// healthy (a replica copy may have failed at enrolment).
    pub full_scan_every: Duration,
    /// Users read per page of a scan.
    pub page: usize,
    /// Time between sweeps of the chips' copies that no placement lists (a chip that came back
    /// after it was replaced, a copy imported by a leader that died before committing it). A
    /// copy is deleted only if two sweeps at least this far apart both found it unlisted.
    pub sweep_every: Duration,
}

impl Default for RepairConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            rate: 200,
            full_scan_every: Duration::from_secs(60),
            page: 1_000,
            sweep_every: Duration::from_secs(60),
        }
    }
}

/// The reconciler's state on this node.
#[derive(Debug)]
struct Scan {
    cursor: String,
    scanning: bool,
    last_full: Option<Instant>,
    tokens: f64,
    last_refill: Instant,
    last_sweep: Option<Instant>,
    /// `(chip, handle)` copies the last sweep found unlisted.
    unlisted: HashSet<(String, String)>,
}

/// Runs the reconciler forever (spawn it); it acts only while this node leads.
pub async fn run(core: Arc<Core>) {
    let config = core.config.repair.clone();
    let mut scan = Scan {
        cursor: String::new(),
        scanning: false,
        last_full: None,
        tokens: f64::from(config.rate),
        last_refill: Instant::now(),
        last_sweep: None,
        unlisted: HashSet::new(),
    };
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !core.raft.is_leader() {
            scan.scanning = false;
            scan.cursor.clear();
            scan.unlisted.clear();
            scan.last_sweep = None;
            set_pending(&core, 0);
            continue;
        }
        if let Err(e) = pass(&core, &config, &mut scan).await {
            tracing::warn!(error = %e, "repair pass failed; retrying at the next one");
        }
        if scan
            .last_sweep
            .is_none_or(|t| t.elapsed() >= config.sweep_every)
        {
            scan.last_sweep = Some(Instant::now());
            match sweep(&core, &scan.unlisted).await {
                Ok(unlisted) => scan.unlisted = unlisted,
                Err(e) => tracing::warn!(error = %e, "sweep of unlisted copies failed"),
            }
        }
    }
}

/// Chips whose holders are to be replaced: down past the threshold, or draining, and still
/// listed as a holder of some key.
fn bad_chips(core: &Core) -> Result<HashSet<String>> {
    let mut bad = HashSet::new();
    for chip in core.view.chips()? {
        if chip.placed > 0
            && (core.chips.state(&chip.chip_id) == ChipState::Down
                || core.view.draining_since(&chip.chip_id)?.is_some())
        {
            bad.insert(chip.chip_id);
        }
    }
    Ok(bad)
}

async fn pass(core: &Core, config: &RepairConfig, scan: &mut Scan) -> Result<()> {
    let now = Instant::now();
    scan.tokens = (scan.tokens
        + now.duration_since(scan.last_refill).as_secs_f64() * f64::from(config.rate))
    .min(f64::from(config.rate.max(1)));
    scan.last_refill = now;
    let bad = bad_chips(core)?;
    if !scan.scanning {
        let due = scan
            .last_full
            .is_none_or(|t| t.elapsed() >= config.full_scan_every);
        if bad.is_empty() && !due {
            return Ok(());
        }
        scan.scanning = true;
        scan.cursor.clear();
        if let Some(ca) = core.view.ca()? {
            repair_key(core, KeyOwner::Ca, &ca.holders, &ca.wrapped_key, &bad).await?;
        }
    }
    let page = core.view.users_after(&scan.cursor, config.page)?;
    if page.is_empty() {
        scan.scanning = false;
        scan.last_full = Some(Instant::now());
        set_pending(core, 0);
        return Ok(());
    }
    let r = core.config.replicas;
    let mut pending = 0u64;
    let mut out_of_budget = false;
    for user in page {
        let needs = user.state == UserState::Active
            && (user.holders.len() < r || user.holders.iter().any(|h| bad.contains(&h.chip_id)));
        if needs {
            if out_of_budget || scan.tokens < 1.0 {
                // Out of budget: the scan resumes from this user at the next pass.
                out_of_budget = true;
                pending += 1;
                continue;
            }
            scan.tokens -= 1.0;
            let owner = KeyOwner::User(user.user_id.clone());
            if let Err(e) = repair_key(core, owner, &user.holders, &user.wrapped_key, &bad).await {
                tracing::warn!(user = %user.user_id, error = %e, "could not repair this user's key now");
                pending += 1;
            }
        }
        if !out_of_budget {
            scan.cursor = user.user_id;
        }
    }
    set_pending(core, pending);
    Ok(())
}

fn set_pending(core: &Core, pending: u64) {
    core.repair_pending
        .store(pending, std::sync::atomic::Ordering::Relaxed);
    metrics::gauge!("yunkey_repair_pending_users").set(pending as f64);
}

/// Brings one key to R good holders, then drops its bad ones (add before remove).
async fn repair_key(
    core: &Core,
    owner: KeyOwner,
    holders: &[HolderRecord],
    wrapped_key: &[u8],
    bad: &HashSet<String>,
) -> Result<()> {
    let r = match owner {
        KeyOwner::Ca => core.config.replicas.max(2),
        KeyOwner::User(_) => core.config.replicas,
    };
    let good = holders.iter().filter(|h| !bad.contains(&h.chip_id)).count();
    let missing = r.saturating_sub(good);
    let mut holders: Vec<HolderRecord> = holders.to_vec();
    if missing > 0 {
        let registry = core.view.chips()?;
        let candidates: Vec<Candidate<'_>> = registry
            .iter()
            .filter(|c| !holders.iter().any(|h| h.chip_id == c.chip_id))
            .map(|chip| Candidate {
                chip,
                routable: core.placeable(&chip.chip_id),
            })
            .collect();
        for target in placement::place(&candidates, missing) {
            let (purpose, user_id) = match &owner {
                KeyOwner::User(id) => (KeyPurpose::User, id.clone()),
                KeyOwner::Ca => (KeyPurpose::Ca, String::new()),
            };
            let chip = core.chips.at(&target.chip_id, &target.endpoint)?;
            let imported = chip
                .unwrap_key(UnwrapKeyRequest {
                    wrapped_key: wrapped_key.to_vec(),
                    purpose: purpose as i32,
                    user_id,
                })
                .await
                .map_err(CoordError::Chip)?;
            let holder = HolderRecord {
                chip_id: target.chip_id.clone(),
                key_handle: imported.key_handle,
            };
            let added = core
                .propose(
                    "",
                    "repair",
                    Op::AddHolder {
                        owner: owner.clone(),
                        holder: holder.clone(),
                    },
                )
                .await;
            if let Err(e) = added {
                // Only the state machine's refusal proves that the holder was not committed: any
                // other error can follow a commit (a leader that stepped down forwards the entry
                // to its successor; "committed but not applied here"), and deleting the copy then
                // would leave a committed holder without the key. Such a copy is left to the
                // sweep, which deletes it only if no committed placement lists it.
                let refused = matches!(
                    e,
                    CoordError::FailedPrecondition(_)
                        | CoordError::UserNotFound(_)
                        | CoordError::ChipNotFound(_)
                );
                if refused {
                    let _ = chip
                        .delete_key(KeyHandleRequest {
                            key_handle: holder.key_handle,
                        })
                        .await;
                }
                return Err(e);
            }
            metrics::counter!("yunkey_repair_moves_total", "kind" => "add").increment(1);
            tracing::info!(target: "yunkey::audit", key = %owner, chip = %holder.chip_id, "holder added");
            holders.push(holder);
        }
    }
    let good_now = holders.iter().filter(|h| !bad.contains(&h.chip_id)).count();
    if good_now < r {
        return Ok(());
    }
    for old in holders.iter().filter(|h| bad.contains(&h.chip_id)) {
        core.propose(
            "",
            "repair",
            Op::RemoveHolder {
                owner: owner.clone(),
                chip_id: old.chip_id.clone(),
                keep: r as u32,
            },
        )
        .await?;
        metrics::counter!("yunkey_repair_moves_total", "kind" => "remove").increment(1);
        tracing::info!(target: "yunkey::audit", key = %owner, chip = %old.chip_id, "holder dropped");
        // A drained chip is still up: delete its copy now. A dead one keeps it until it
        // comes back (left open: a sweep of unreferenced copies).
        if core.chips.routable(&old.chip_id) {
            if let Ok(chip) = core.chips.chip(&old.chip_id) {
                let _ = chip
                    .delete_key(KeyHandleRequest {
                        key_handle: old.key_handle.clone(),
                    })
                    .await;
            }
        }
    }
    Ok(())
}

/// Whether the committed placement lists `handle` on `chip_id`.
fn listed(core: &Core, chip_id: &str, entry: &yunkey_proto::v1::KeyEntry) -> Result<bool> {
    let holders = if entry.purpose == KeyPurpose::Ca as i32 {
        core.view.ca()?.map(|c| c.holders).unwrap_or_default()
    } else {
        core.view
            .user(&entry.user_id)?
            .map(|u| u.holders)
            .unwrap_or_default()
    };
    Ok(holders
        .iter()
        .any(|h| h.chip_id == chip_id && h.key_handle == entry.key_handle))
}

/// One sweep over the reachable chips: deletes every copy that this sweep and the previous one
/// (at least [`RepairConfig::sweep_every`] earlier) both found unlisted by the committed
/// placement; returns what this sweep found unlisted. The two sightings keep a copy that is
/// being imported right now (its `AddHolder` not yet committed) from being deleted.
async fn sweep(
    core: &Core,
    before: &HashSet<(String, String)>,
) -> Result<HashSet<(String, String)>> {
    let mut unlisted = HashSet::new();
    for chip in core.view.chips()? {
        if !core.chips.routable(&chip.chip_id) {
            continue;
        }
        let client = core.chips.at(&chip.chip_id, &chip.endpoint)?;
        let mut after = String::new();
        loop {
            let page = client
                .list_keys(yunkey_proto::v1::ListKeysRequest {
                    after: after.clone(),
                    limit: 1000,
                })
                .await
                .map_err(CoordError::Chip)?;
            let Some(last) = page.keys.last() else { break };
            after = last.key_handle.clone();
            for entry in &page.keys {
                if listed(core, &chip.chip_id, entry)? {
                    continue;
                }
                let copy = (chip.chip_id.clone(), entry.key_handle.clone());
                if before.contains(&copy) {
                    let deleted = client
                        .delete_key(KeyHandleRequest {
                            key_handle: entry.key_handle.clone(),
                        })
                        .await;
                    if deleted.is_ok() {
                        metrics::counter!("yunkey_repair_moves_total", "kind" => "sweep")
                            .increment(1);
                        tracing::info!(target: "yunkey::audit", chip = %chip.chip_id, "an unlisted copy deleted");
                    }
                } else {
                    unlisted.insert(copy);
                }
            }
        }
    }
    Ok(unlisted)
}
