//! One assessment, from a checked request to a durable decision: under the user's lock, read
//! the user's counters, apply the rules in force, honour a step-up authentication, and, when
//! the transaction is allowed and was not counted before, count it and flush before answering.

use crate::clock::Clock;
use crate::engine::{self, Facts, Fired, History, Verdict};
use crate::error::RiskError;
use crate::ids;
use crate::locks::UserLocks;
use crate::records::{CountedRecord, DailyTotal, LastLocation, UserRecord};
use crate::reload::RulesHandle;
use crate::request::Assessment;
use crate::rules::{Action, Rules, MAX_VELOCITY};
use crate::store::RiskStore;
use std::sync::Arc;

/// How far the risk service's clock may be ahead of the coordinators' before a transaction
/// counts as expired, in seconds.
pub const CLOCK_SKEW_SECS: i64 = 60;
/// How long a counted transaction's record is kept after the transaction expires (a
/// re-assessment after that is refused as expired anyway).
const COUNTED_KEPT_SECS: i64 = 3600;
/// Name of the reason added when a step-up authentication was given but is not honoured.
pub const AUTHENTICATION_RULE: &str = "authentication";

/// Counter of decisions, by verdict.
const DECISIONS_METRIC: &str = "yunkey_risk_decisions_total";

/// An AssessRisk answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// `risk-<32 hex>`.
    pub id: String,
    /// The verdict.
    pub verdict: Verdict,
    /// 0 to 100.
    pub score: f64,
    /// Every rule that fired (and, when a step-up authentication was given but not
    /// honoured, why).
    pub fired: Vec<Fired>,
    /// Unix seconds after which the decision is void.
    pub expires_at: i64,
    /// The transaction's hash.
    pub tx_hash: [u8; 32],
    /// The rules' version.
    pub rules_version: String,
    /// Whether this assessment counted the transaction (false when it was not allowed, or
    /// was counted before).
    pub counted: bool,
}

/// Decides AssessRisk requests.
#[derive(Debug)]
pub struct Assessor {
    store: RiskStore,
    rules: RulesHandle,
    clock: Arc<dyn Clock>,
    locks: UserLocks,
}

impl Assessor {
    /// An assessor over `store`, with the rules `rules` holds.
    pub fn new(store: RiskStore, rules: RulesHandle, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            rules,
            clock,
            locks: UserLocks::default(),
        }
    }

    /// Decides one checked request.
    pub async fn assess(&self, a: Assessment) -> Result<Decision, RiskError> {
        // Serializes this user's assessments: read, decide and write back without another
        // assessment of the same user in between, so counts are exact.
        let _guard = self.locks.lock(&a.user_id).await;
        let rules = self.rules.get();
        let store = self.store.clone();
        let clock = self.clock.clone();
        let decision = tokio::task::spawn_blocking(move || decide(&store, &rules, clock.now(), &a))
            .await
            .map_err(|e| RiskError::Internal(format!("assessment task failed: {e}")))??;
        metrics::counter!(DECISIONS_METRIC, "verdict" => verdict_name(decision.verdict))
            .increment(1);
        Ok(decision)
    }
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::StepUp => "step_up",
        Verdict::Deny => "deny",
    }
}

/// The decision, with the user's lock held. Blocking.
fn decide(
    store: &RiskStore,
    rules: &Rules,
    now: i64,
    a: &Assessment,
) -> Result<Decision, RiskError> {
    let expires_at = a.transaction.expires_at;
    if expires_at + CLOCK_SKEW_SECS < now {
        return Err(RiskError::Expired { expires_at, now });
    }
    let user = store.user(&a.user_id)?;
    let own = store.counted(&a.user_id, &a.tx_hash)?;
    let history = history(
        &user,
        own.as_ref(),
        rules,
        now,
        &a.transaction.currency,
        a.tx_hash,
    );
    let facts = Facts {
        now,
        amount: a.amount,
        currency: &a.transaction.currency,
        payee: &a.transaction.payee,
        location: a.location,
        device_registered_at: a.device_registered_at,
    };
    let mut evaluation = engine::evaluate(rules, &facts, &history);
    let mut verdict = evaluation.verdict();
    if verdict == Verdict::StepUp {
        if let Some(id) = &a.authentication_id {
            match authentication_refusal(store, id, a, now)? {
                None => verdict = evaluation.verdict_after_step_up(),
                Some(why) => evaluation.fired.push(Fired {
                    rule: AUTHENTICATION_RULE.into(),
                    detail: why,
                    action: Action::StepUp,
                    weight: 0,
                }),
            }
        }
    }
    let mut counted = false;
    if verdict == Verdict::Allow && own.is_none() {
        let (counters, record) = count(user, rules, now, a);
        let prune_at = expires_at.max(now) + COUNTED_KEPT_SECS;
        store.count(&a.user_id, &a.tx_hash, &counters, &record, prune_at)?;
        // Durability point: the transaction is counted on disk before the ALLOW is sent, so
        // a crash after the answer cannot forget it.
        store.flush()?;
        counted = true;
    }
    let decision = Decision {
        id: ids::new_id(ids::RISK_PREFIX),
        verdict,
        score: evaluation.score(),
        fired: evaluation.fired,
        expires_at: now + rules.decision_validity_secs,
        tx_hash: a.tx_hash,
        rules_version: rules.version.clone(),
        counted,
    };
    log(&decision, a);
    Ok(decision)
}

fn log(d: &Decision, a: &Assessment) {
    let fired: Vec<&str> = d.fired.iter().map(|f| f.rule.as_str()).collect();
    tracing::info!(
        target: "yunkey::audit",
        decision = %d.id,
        user = %a.user_id,
        device = %a.device_id,
        channel = ?a.channel,
        source = ?a.source_address,
        coordinator_time = a.coordinator_time,
        tx_hash = %hex::encode(a.tx_hash),
        verdict = verdict_name(d.verdict),
        score = d.score,
        fired = ?fired,
        counted = d.counted,
        rules_version = %d.rules_version,
        "risk assessed"
    );
}

/// Why the authentication `id` does not satisfy a step-up for this request, or `None` when
/// it does: a matched result for the same user and transaction, not expired.
fn authentication_refusal(
    store: &RiskStore,
    id: &str,
    a: &Assessment,
    now: i64,
) -> Result<Option<String>, RiskError> {
    let Some(rec) = store.auth(id)? else {
        return Ok(Some(format!(
            "authentication {id:?} is not a result of this risk service (or has been pruned)"
        )));
    };
    let why = if rec.user_id != a.user_id {
        "was made for another user"
    } else if rec.tx_hash != a.tx_hash {
        "was made for another transaction"
    } else if !rec.matched {
        "did not match the user's face"
    } else if rec.expires_at <= now {
        "has expired; authenticate again"
    } else {
        return Ok(None);
    };
    Ok(Some(format!("authentication {id} {why}")))
}

/// The counters as the rules see them for this transaction: without its own contribution
/// when it was counted before (a retry, or the assessment after a step-up), so that a
/// re-assessment sees what the first one saw.
fn history(
    user: &UserRecord,
    own: Option<&CountedRecord>,
    rules: &Rules,
    now: i64,
    currency: &str,
    tx_hash: [u8; 32],
) -> History {
    let mut counted_at = user.counted_at.clone();
    if let Some(own) = own {
        if let Some(i) = counted_at.iter().position(|&t| t == own.at) {
            counted_at.remove(i);
        }
    }
    let today = rules.local_day(now);
    let mut day_total = user
        .daily
        .iter()
        .find(|d| d.currency == currency && d.day == today)
        .map(|d| crate::amount::Amount::from_units(d.units))
        .unwrap_or_default();
    if let Some(own) = own.filter(|o| o.currency == currency && o.day == today) {
        day_total = day_total.saturating_sub(crate::amount::Amount::from_units(own.units));
    }
    let last_location = match (&user.last_location, own) {
        (Some(last), Some(own)) if last.tx_hash == tx_hash => own.previous_location,
        (Some(last), _) => Some((last.point, last.at)),
        (None, _) => None,
    };
    History {
        counted_at,
        day_total,
        last_location,
    }
}

/// The user's counters with this transaction counted, and its record.
fn count(
    mut user: UserRecord,
    rules: &Rules,
    now: i64,
    a: &Assessment,
) -> (UserRecord, CountedRecord) {
    let keep_from = now - rules.longest_window_secs();
    user.counted_at.retain(|&t| t > keep_from);
    user.counted_at.push(now);
    let excess = user
        .counted_at
        .len()
        .saturating_sub(MAX_VELOCITY as usize + 1);
    user.counted_at.drain(..excess);

    let today = rules.local_day(now);
    let currency = &a.transaction.currency;
    // Yesterday's totals are of no use any more.
    user.daily.retain(|d| d.day >= today);
    match user.daily.iter_mut().find(|d| &d.currency == currency) {
        Some(d) if d.day == today => d.units = d.units.saturating_add(a.amount.units()),
        Some(d) => {
            d.day = today;
            d.units = a.amount.units();
        }
        None => user.daily.push(DailyTotal {
            currency: currency.clone(),
            day: today,
            units: a.amount.units(),
        }),
    }

    let previous_location = user.last_location.map(|l| (l.point, l.at));
    if let Some(point) = a.location {
        user.last_location = Some(LastLocation {
            point,
            at: now,
            tx_hash: a.tx_hash,
        });
    }
    let record = CountedRecord {
        at: now,
        currency: currency.clone(),
        units: a.amount.units(),
        day: today,
        previous_location,
    };
    (user, record)
}
