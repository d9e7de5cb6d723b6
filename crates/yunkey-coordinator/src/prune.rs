//! Forgetting what no longer matters, so that a coordinator's memory follows its users and
//! not every signature ever made: the leader proposes an [`Op::Prune`] every
//! [`PruneConfig::every`], with a horizon [`PruneConfig::grace_secs`] behind its clock, and
//! the state machine deletes the ledger entries of authorizations expiring at or before it
//! with their stored request results (`state::apply_prune` says how that stays safe), and
//! moves the audit trail's lines older than [`PruneConfig::audit_keep_secs`] to every
//! coordinator's audit log ([`crate::audit_log`]). While a prune reports
//! more to forget, the next follows at once, up to [`MAX_ROUNDS`] per tick.
//!
//! Rolling upgrades: a node older than command format [`COMMAND_FORMAT_PRUNE`] cannot read a
//! prune, so the leader prunes only once every member has reported that format
//! (`crate::batch::watch_members`).

use crate::core::Core;
use crate::error::Result;
use crate::state::{CommandResult, Op, COMMAND_FORMAT_PRUNE};
use std::sync::Arc;
use std::time::Duration;

/// Default of [`PruneConfig::every`] (`--prune-every`).
pub const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// Default of [`PruneConfig::grace_secs`] (`--prune-grace`).
pub const GRACE_SECS: i64 = 300;

/// Default of [`PruneConfig::audit_keep_secs`] (`--audit-keep`): one hour.
pub const AUDIT_KEEP_SECS: i64 = 3600;

/// When the leader prunes.
#[derive(Debug, Clone)]
pub struct PruneConfig {
    /// How often the leader prunes.
    pub every: Duration,
    /// How long after an authorization's expiry, by the leader's clock, the cluster keeps
    /// its ledger entry. A coordinator refuses an expired authorization by its own clock
    /// before proposing anything, and the state machine refuses one expiring at or before
    /// the horizon; so this is the clock skew between coordinators that never turns a valid
    /// authorization into a refusal.
    pub grace_secs: i64,
    /// How long the audit trail's lines stay in the replicated state (where `GetUserAudit`
    /// reads them) before they move to every coordinator's audit log (`crate::audit_log`).
    pub audit_keep_secs: i64,
}

impl Default for PruneConfig {
    fn default() -> Self {
        Self {
            every: PRUNE_EVERY,
            grace_secs: GRACE_SECS,
            audit_keep_secs: AUDIT_KEEP_SECS,
        }
    }
}

/// Most prunes one tick proposes back to back (each forgets up to
/// [`crate::state::PRUNE_BATCH`] entries).
pub const MAX_ROUNDS: usize = 64;

/// Prunes every [`PruneConfig::every`] while this node leads and every member applies
/// prunes. Runs for the life of the coordinator.
pub async fn run(core: Arc<Core>) {
    let mut tick = tokio::time::interval(core.config.prune.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !core.raft.is_leader() || core.batcher.cluster_format() < COMMAND_FORMAT_PRUNE {
            continue;
        }
        for _ in 0..MAX_ROUNDS {
            match prune_once(&core).await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "prune failed; retrying at the next tick");
                    break;
                }
            }
        }
    }
}

/// Proposes one prune with the horizon [`PruneConfig::grace_secs`] behind this node's
/// clock; returns whether more is left to forget.
pub async fn prune_once(core: &Core) -> Result<bool> {
    let now = crate::clock::now();
    let op = Op::Prune {
        horizon: now - core.config.prune.grace_secs,
        audit_before: now - core.config.prune.audit_keep_secs,
    };
    match core.propose("", "coordinator", op).await? {
        CommandResult::Pruned {
            ledger,
            requests,
            audit,
            more,
            ..
        } => {
            metrics::counter!("yunkey_pruned_total", "what" => "ledger").increment(ledger);
            metrics::counter!("yunkey_pruned_total", "what" => "requests").increment(requests);
            metrics::counter!("yunkey_pruned_total", "what" => "audit").increment(audit);
            if ledger + audit > 0 {
                tracing::debug!(ledger, requests, audit, more, "pruned");
            }
            Ok(more)
        }
        other => Err(crate::error::CoordError::Internal(format!(
            "a prune answered {other:?}"
        ))),
    }
}
