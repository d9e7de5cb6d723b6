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
//! When nothing needs repair and the fleet is out of balance (a chip joined), the reconciler
//! rebalances ([`balance`]): the pure planner ([`crate::rebalance`]) picks the moves, and each
//! is the same add-before-remove pair of steps ([`moves`]).
//!
//! The rate is bounded (users per second, [`RepairConfig::rate`], shared by repair, drain and
//! rebalance) so that moves never starve signing. Revoked users are not moved (their keys sign
//! nothing).

use crate::core::Core;
use crate::error::Result;
use crate::rebalance::Tolerance;
use crate::state::{KeyOwner, UserState};
use balance::PlannedMove;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use yunkey_crypto::sig::Algorithm;
use yunkey_proto::v1::ChipState;

mod balance;
mod moves;
mod sweep;

/// How the reconciler paces itself.
#[derive(Debug, Clone)]
pub struct RepairConfig {
    /// Time between passes.
    pub interval: Duration,
    /// Most users moved per second (repair, drain and rebalance together).
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
    /// How far from the fleet mean a chip's utilization may be before keys are moved; `None`
    /// turns rebalancing off.
    pub rebalance: Option<Tolerance>,
    /// Least time between two rebalance plans of the same fleet (a plan that zones keep from
    /// reaching balance is not recomputed at every pass); a chip joining, leaving, going down or
    /// coming up, or changing capacity makes a new plan due at once.
    pub replan_every: Duration,
}

impl Default for RepairConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            rate: 200,
            full_scan_every: Duration::from_secs(60),
            page: 1_000,
            sweep_every: Duration::from_secs(60),
            rebalance: Some(Tolerance::default()),
            replan_every: Duration::from_secs(60),
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
    /// Rebalance moves planned and not yet carried out.
    planned: VecDeque<PlannedMove>,
    /// When the last plan was made, and of which fleet.
    last_plan: Option<(Instant, Vec<balance::FleetShape>)>,
}

impl Scan {
    fn new(rate: u32) -> Self {
        Self {
            cursor: String::new(),
            scanning: false,
            last_full: None,
            tokens: f64::from(rate),
            last_refill: Instant::now(),
            last_sweep: None,
            unlisted: HashSet::new(),
            planned: VecDeque::new(),
            last_plan: None,
        }
    }
}

/// Runs the reconciler forever (spawn it); it acts only while this node leads.
pub async fn run(core: Arc<Core>) {
    let config = core.config.repair.clone();
    let mut scan = Scan::new(config.rate);
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !core.raft.is_leader() {
            scan = Scan::new(config.rate);
            set_pending(&core, 0);
            set_planned(&core, 0);
            continue;
        }
        if let Err(e) = pass(&core, &config, &mut scan).await {
            tracing::warn!(error = %e, "repair pass failed; retrying at the next one");
        }
        if !scan.scanning {
            if let Err(e) = rebalance_pass(&core, &config, &mut scan).await {
                tracing::warn!(error = %e, "rebalance pass failed; retrying at the next one");
            }
        }
        if scan
            .last_sweep
            .is_none_or(|t| t.elapsed() >= config.sweep_every)
        {
            scan.last_sweep = Some(Instant::now());
            match sweep::sweep(&core, &scan.unlisted).await {
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

fn refill(scan: &mut Scan, rate: u32) {
    let now = Instant::now();
    scan.tokens = (scan.tokens
        + now.duration_since(scan.last_refill).as_secs_f64() * f64::from(rate))
    .min(f64::from(rate.max(1)));
    scan.last_refill = now;
}

async fn pass(core: &Core, config: &RepairConfig, scan: &mut Scan) -> Result<()> {
    refill(scan, config.rate);
    let bad = bad_chips(core)?;
    if !scan.scanning {
        let due = scan
            .last_full
            .is_none_or(|t| t.elapsed() >= config.full_scan_every);
        if bad.is_empty() && !due {
            return Ok(());
        }
        // Repair comes first: planned rebalance moves wait for a new plan.
        if !bad.is_empty() {
            scan.planned.clear();
            set_planned(core, 0);
        }
        scan.scanning = true;
        scan.cursor.clear();
        if let Some(ca) = core.view.ca()? {
            moves::repair_key(core, KeyOwner::Ca, &ca.holders, &ca.wrapped_key, &bad).await?;
        }
        if let Some(ca) = core.view.ca_of(Algorithm::Sm2)? {
            moves::repair_key(core, KeyOwner::Sm2Ca, &ca.holders, &ca.wrapped_key, &bad).await?;
        }
        if let Some(cs) = core.view.code_signing()? {
            moves::repair_key(
                core,
                KeyOwner::CodeSigning,
                &cs.holders,
                &cs.wrapped_key,
                &bad,
            )
            .await?;
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
            && (user.holders.len() != r || user.holders.iter().any(|h| bad.contains(&h.chip_id)));
        if needs {
            if out_of_budget || scan.tokens < 1.0 {
                // Out of budget: the scan resumes from this user at the next pass.
                out_of_budget = true;
                pending += 1;
                continue;
            }
            scan.tokens -= 1.0;
            let owner = KeyOwner::User(user.user_id.clone());
            if let Err(e) =
                moves::repair_key(core, owner, &user.holders, &user.wrapped_key, &bad).await
            {
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

/// Plans when the fleet is out of balance and no plan is queued, then carries out queued moves
/// within the rate budget left by repair.
async fn rebalance_pass(core: &Core, config: &RepairConfig, scan: &mut Scan) -> Result<()> {
    let Some(tolerance) = config.rebalance else {
        return Ok(());
    };
    if scan.planned.is_empty() {
        let shape = balance::shape(core)?;
        let due = scan
            .last_plan
            .as_ref()
            .is_none_or(|(at, before)| at.elapsed() >= config.replan_every || *before != shape);
        if !due || !bad_chips(core)?.is_empty() || !balance::needed(core, tolerance)? {
            return Ok(());
        }
        let started = Instant::now();
        scan.planned = balance::plan(core, tolerance, config.page)?;
        scan.last_plan = Some((Instant::now(), shape));
        tracing::info!(
            moves = scan.planned.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "rebalance planned"
        );
    }
    while scan.tokens >= 1.0 {
        let Some(next) = scan.planned.pop_front() else {
            break;
        };
        scan.tokens -= 1.0;
        if let Err(e) = balance::carry_out(core, &next).await {
            tracing::warn!(user = %next.user_id, from = %next.from, to = %next.to, error = %e,
                "a rebalance move failed; the next plan retries it if it is still needed");
        }
    }
    set_planned(core, scan.planned.len() as u64);
    Ok(())
}

fn set_pending(core: &Core, pending: u64) {
    core.repair_pending.store(pending, Ordering::Relaxed);
    metrics::gauge!("yunkey_repair_pending_users").set(pending as f64);
}

fn set_planned(core: &Core, planned: u64) {
    core.rebalance_pending.store(planned, Ordering::Relaxed);
    metrics::gauge!("yunkey_rebalance_pending_moves").set(planned as f64);
}
