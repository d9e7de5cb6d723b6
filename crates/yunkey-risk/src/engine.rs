//! The rules applied to one transaction: a pure function of the rules, the transaction's facts
//! and the user's history, with no IO and no clock of its own, so that every rule can be
//! tested by itself.
//!
//! The verdict is the strongest action of the rules that fired (DENY > STEP_UP > ALLOW); the
//! score is the sum of their weights, capped at 100. Every rule that fired is listed with a
//! detail for people.

use crate::amount::Amount;
use crate::geo::GeoPoint;
use crate::rules::{Action, Period, Rules};
use yunkey_proto::v1::RiskVerdict;

/// What is known about the transaction being assessed.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// The risk service's clock, Unix seconds.
    pub now: i64,
    /// The amount.
    pub amount: Amount,
    /// Its currency.
    pub currency: &'a str,
    /// Who is paid.
    pub payee: &'a str,
    /// Where the device says it is.
    pub location: Option<GeoPoint>,
    /// When the authorizing device was registered (Unix seconds), if known.
    pub device_registered_at: Option<i64>,
}

/// The user's counted transactions as the rules see them (this transaction's own
/// contribution excluded, so that a re-assessment sees what the first one saw).
#[derive(Debug, Clone, Default)]
pub struct History {
    /// When each counted transaction was counted, Unix seconds.
    pub counted_at: Vec<i64>,
    /// The local day's total of counted transactions in this transaction's currency.
    pub day_total: Amount,
    /// The last counted transaction that had a location, and when it was counted.
    pub last_location: Option<(GeoPoint, i64)>,
}

/// A decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Sign.
    Allow,
    /// Sign only after the user authenticates.
    StepUp,
    /// Do not sign.
    Deny,
}

impl Verdict {
    /// On the wire.
    pub fn to_proto(self) -> RiskVerdict {
        match self {
            Verdict::Allow => RiskVerdict::Allow,
            Verdict::StepUp => RiskVerdict::StepUp,
            Verdict::Deny => RiskVerdict::Deny,
        }
    }
}

impl From<Action> for Verdict {
    fn from(a: Action) -> Self {
        match a {
            Action::StepUp => Verdict::StepUp,
            Action::Deny => Verdict::Deny,
        }
    }
}

/// One rule that fired.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    /// The rule's name.
    pub rule: String,
    /// What it saw.
    pub detail: String,
    /// What it asks for.
    pub action: Action,
    /// Its weight.
    pub weight: u32,
}

/// The rules' answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Every rule that fired, in the order of the rules file's kinds.
    pub fired: Vec<Fired>,
}

impl Evaluation {
    /// The strongest action among the fired rules; ALLOW when none fired.
    pub fn verdict(&self) -> Verdict {
        self.fired
            .iter()
            .map(|f| Verdict::from(f.action))
            .max()
            .unwrap_or(Verdict::Allow)
    }

    /// The verdict when the user has authenticated for this transaction: step-up rules are
    /// satisfied, deny rules still deny.
    pub fn verdict_after_step_up(&self) -> Verdict {
        match self.verdict() {
            Verdict::StepUp => Verdict::Allow,
            v => v,
        }
    }

    /// Sum of the fired rules' weights, capped at 100.
    pub fn score(&self) -> f64 {
        f64::from(self.fired.iter().map(|f| f.weight).sum::<u32>().min(100))
    }
}

/// Applies every rule.
pub fn evaluate(rules: &Rules, facts: &Facts<'_>, history: &History) -> Evaluation {
    let mut fired = Vec::new();
    let mut fire = |meta: &crate::rules::RuleMeta, detail: String| {
        fired.push(Fired {
            rule: meta.name.clone(),
            detail,
            action: meta.action,
            weight: meta.weight,
        })
    };
    let cur = facts.currency;
    for r in rules.amount_limits.iter().filter(|r| r.currency == cur) {
        match r.period {
            Period::Transaction if facts.amount > r.above => fire(
                &r.meta,
                format!(
                    "amount {} {cur} is above the per-transaction limit {} {cur}",
                    facts.amount, r.above
                ),
            ),
            Period::Day => {
                let total = history.day_total.saturating_add(facts.amount);
                if total > r.above {
                    fire(
                        &r.meta,
                        format!(
                            "the day's total would be {total} {cur} ({} {cur} before this \
                             transaction), above the daily limit {} {cur}",
                            history.day_total, r.above
                        ),
                    )
                }
            }
            Period::Transaction => {}
        }
    }
    for r in &rules.velocity {
        let since = facts.now - i64::from(r.window_secs);
        let count = history.counted_at.iter().filter(|&&t| t > since).count();
        if count >= r.max as usize {
            fire(
                &r.meta,
                format!(
                    "{count} transactions in the last {} s already; at most {} are allowed",
                    r.window_secs, r.max
                ),
            );
        }
    }
    if let Some(registered) = facts.device_registered_at {
        let age = (facts.now - registered).max(0);
        for r in &rules.new_device {
            if age < i64::from(r.younger_than_secs) {
                fire(
                    &r.meta,
                    format!(
                        "the device was registered {age} s ago, less than {} s",
                        r.younger_than_secs
                    ),
                );
            }
        }
    }
    let minute = rules.local_minute(facts.now);
    for r in &rules.unusual_hours {
        let inside = if r.from_minute < r.to_minute {
            (r.from_minute..r.to_minute).contains(&minute)
        } else {
            minute >= r.from_minute || minute < r.to_minute
        };
        if inside {
            fire(
                &r.meta,
                format!(
                    "local time {} ({}) is within {}-{}",
                    hhmm(minute),
                    utc_offset(rules.timezone_offset_minutes),
                    hhmm(r.from_minute),
                    hhmm(r.to_minute)
                ),
            );
        }
    }
    if let (Some(here), Some((there, at))) = (facts.location, history.last_location) {
        let km = here.distance_km(&there);
        let secs = (facts.now - at).max(1);
        let speed = km / (secs as f64 / 3600.0);
        for r in &rules.impossible_travel {
            if km > r.min_distance_km && speed > r.above_km_per_hour {
                fire(
                    &r.meta,
                    format!(
                        "{km:.0} km from the previous transaction {secs} s earlier: \
                         {speed:.0} km/h, above {} km/h",
                        r.above_km_per_hour
                    ),
                );
            }
        }
    }
    let payee = facts.payee.to_lowercase();
    for r in &rules.payee_block {
        if r.payees.contains(&payee) {
            fire(
                &r.meta,
                format!("payee {:?} is on the block list", facts.payee),
            );
        }
    }
    Evaluation { fired }
}

fn hhmm(minute: u32) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

fn utc_offset(minutes: i32) -> String {
    let sign = if minutes < 0 { '-' } else { '+' };
    let m = minutes.unsigned_abs();
    format!("UTC{sign}{:02}:{:02}", m / 60, m % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    /// 2024-01-02 12:00 UTC.
    const NOON: i64 = 19_724 * DAY + 12 * 3600;

    fn rules(extra: &str) -> Rules {
        Rules::parse(&format!("format = 1\n{extra}")).unwrap()
    }

    fn facts(amount: &str) -> Facts<'static> {
        Facts {
            now: NOON,
            amount: Amount::parse(amount).unwrap(),
            currency: "EUR",
            payee: "shop",
            location: None,
            device_registered_at: None,
        }
    }

    fn names(e: &Evaluation) -> Vec<&str> {
        e.fired.iter().map(|f| f.rule.as_str()).collect()
    }

    const AMOUNTS: &str = r#"
[[amount_limit]]
name = "eur.tx.step_up"
action = "step_up"
weight = 30
currency = "EUR"
period = "transaction"
above = 1000
[[amount_limit]]
name = "eur.tx.deny"
action = "deny"
weight = 60
currency = "EUR"
period = "transaction"
above = 10000
[[amount_limit]]
name = "eur.day"
action = "deny"
weight = 50
currency = "EUR"
period = "day"
above = 20000
[[amount_limit]]
name = "usd.tx"
action = "step_up"
weight = 20
currency = "USD"
period = "transaction"
above = "50.5"
"#;

    #[test]
    fn per_transaction_limits_per_currency() {
        let r = rules(AMOUNTS);
        let h = History::default();
        let e = evaluate(&r, &facts("1000"), &h);
        assert!(e.fired.is_empty());
        assert_eq!(e.verdict(), Verdict::Allow);
        assert_eq!(e.score(), 0.0);
        let e = evaluate(&r, &facts("1000.00000001"), &h);
        assert_eq!(names(&e), ["eur.tx.step_up"]);
        assert_eq!(e.verdict(), Verdict::StepUp);
        assert_eq!(e.score(), 30.0);
        assert_eq!(
            e.fired[0].detail,
            "amount 1000.00000001 EUR is above the per-transaction limit 1000 EUR"
        );
        let e = evaluate(&r, &facts("10001"), &h);
        assert_eq!(names(&e), ["eur.tx.step_up", "eur.tx.deny"]);
        assert_eq!(e.verdict(), Verdict::Deny);
        assert_eq!(e.score(), 90.0);
        // USD has its own limits; EUR's do not apply to it.
        let mut f = facts("50.5");
        f.currency = "USD";
        assert!(evaluate(&r, &f, &h).fired.is_empty());
        f.amount = Amount::parse("50.51").unwrap();
        assert_eq!(names(&evaluate(&r, &f, &h)), ["usd.tx"]);
        f.amount = Amount::parse("5000").unwrap();
        f.currency = "GBP";
        assert!(evaluate(&r, &f, &h).fired.is_empty());
    }

    #[test]
    fn daily_total_counts_history_and_this_transaction() {
        let r = rules(AMOUNTS);
        let mut h = History {
            day_total: Amount::whole(19_500),
            ..History::default()
        };
        assert!(evaluate(&r, &facts("500"), &h).fired.is_empty());
        let e = evaluate(&r, &facts("500.01"), &h);
        assert_eq!(names(&e), ["eur.day"]);
        assert!(
            e.fired[0].detail.contains("20000.01 EUR (19500 EUR before"),
            "{}",
            e.fired[0].detail
        );
        h.day_total = Amount::ZERO;
        assert!(evaluate(&r, &facts("900"), &h).fired.is_empty());
    }

    #[test]
    fn score_is_capped_and_verdict_is_the_strongest() {
        let r = rules(&format!(
            "{AMOUNTS}\n[[payee_block]]\nname = \"mules\"\naction = \"deny\"\nweight = 100\npayees = [\"Mule\"]"
        ));
        let mut f = facts("10001");
        f.payee = "MULE";
        let e = evaluate(&r, &f, &History::default());
        assert_eq!(names(&e), ["eur.tx.step_up", "eur.tx.deny", "mules"]);
        assert_eq!(e.score(), 100.0);
        assert_eq!(e.verdict(), Verdict::Deny);
        assert_eq!(e.verdict_after_step_up(), Verdict::Deny);
        let e = evaluate(&r, &facts("2000"), &History::default());
        assert_eq!(e.verdict(), Verdict::StepUp);
        assert_eq!(e.verdict_after_step_up(), Verdict::Allow);
    }

    #[test]
    fn velocity_counts_a_sliding_window() {
        let r = rules(
            "[[velocity]]\nname = \"minute\"\naction = \"deny\"\nweight = 40\nmax = 3\nwindow_seconds = 60\n\
             [[velocity]]\nname = \"hour\"\naction = \"step_up\"\nweight = 20\nmax = 5\nwindow_seconds = 3600",
        );
        let f = facts("1");
        let mut h = History {
            counted_at: vec![NOON - 59, NOON - 30],
            ..History::default()
        };
        assert!(evaluate(&r, &f, &h).fired.is_empty());
        h.counted_at.push(NOON);
        let e = evaluate(&r, &f, &h);
        assert_eq!(names(&e), ["minute"]);
        assert_eq!(
            e.fired[0].detail,
            "3 transactions in the last 60 s already; at most 3 are allowed"
        );
        // One of the three is 60 s old: out of the window.
        h.counted_at[0] = NOON - 60;
        assert!(evaluate(&r, &f, &h).fired.is_empty());
        h.counted_at.extend([NOON - 3000, NOON - 3599]);
        assert_eq!(names(&evaluate(&r, &f, &h)), ["hour"]);
    }

    #[test]
    fn new_device_fires_only_for_young_known_devices() {
        let r = rules("[[new_device]]\nname = \"new\"\naction = \"step_up\"\nweight = 20\nyounger_than_seconds = 86400");
        let mut f = facts("1");
        assert!(
            evaluate(&r, &f, &History::default()).fired.is_empty(),
            "unknown age"
        );
        f.device_registered_at = Some(NOON - 86_400);
        assert!(evaluate(&r, &f, &History::default()).fired.is_empty());
        f.device_registered_at = Some(NOON - 86_399);
        let e = evaluate(&r, &f, &History::default());
        assert_eq!(names(&e), ["new"]);
        assert_eq!(
            e.fired[0].detail,
            "the device was registered 86399 s ago, less than 86400 s"
        );
        f.device_registered_at = Some(NOON + 100);
        assert_eq!(names(&evaluate(&r, &f, &History::default())), ["new"]);
    }

    #[test]
    fn unusual_hours_use_local_time_and_wrap_midnight() {
        let r = rules("[general]\ntimezone_offset_minutes = 60\n[[unusual_hours]]\nname = \"night\"\naction = \"step_up\"\nweight = 10\nfrom = \"23:00\"\nto = \"06:00\"");
        let mut f = facts("1");
        let midnight = NOON - 12 * 3600;
        for (utc, fires) in [
            (midnight - 2 * 3600, true),      // 23:00 local
            (midnight - 2 * 3600 - 1, false), // 22:59:59 local
            (midnight + 3 * 3600, true),      // 04:00 local
            (midnight + 5 * 3600 - 1, true),  // 05:59:59 local
            (midnight + 5 * 3600, false),     // 06:00 local
            (NOON, false),
        ] {
            f.now = utc;
            let e = evaluate(&r, &f, &History::default());
            assert_eq!(!e.fired.is_empty(), fires, "at {utc}: {e:?}");
        }
        f.now = midnight + 3 * 3600;
        let e = evaluate(&r, &f, &History::default());
        assert_eq!(
            e.fired[0].detail,
            "local time 04:00 (UTC+01:00) is within 23:00-06:00"
        );
        let day = rules("[[unusual_hours]]\nname = \"lunch\"\naction = \"step_up\"\nweight = 10\nfrom = \"12:00\"\nto = \"13:00\"");
        f.now = NOON;
        assert_eq!(names(&evaluate(&day, &f, &History::default())), ["lunch"]);
        f.now = NOON + 3600;
        assert!(evaluate(&day, &f, &History::default()).fired.is_empty());
    }

    #[test]
    fn impossible_travel_compares_speed() {
        let r = rules("[[impossible_travel]]\nname = \"travel\"\naction = \"deny\"\nweight = 70\nabove_km_per_hour = 900\nmin_distance_km = 50");
        let paris = GeoPoint::new(48.8566, 2.3522).unwrap();
        let london = GeoPoint::new(51.5074, -0.1278).unwrap();
        let near = GeoPoint::new(48.86, 2.36).unwrap();
        let mut f = facts("1");
        f.location = Some(london);
        // No previous location: nothing to compare.
        assert!(evaluate(&r, &f, &History::default()).fired.is_empty());
        // 343 km in 10 minutes: about 2060 km/h.
        let mut h = History {
            last_location: Some((paris, NOON - 600)),
            ..History::default()
        };
        let e = evaluate(&r, &f, &h);
        assert_eq!(names(&e), ["travel"]);
        assert!(
            e.fired[0]
                .detail
                .starts_with("344 km from the previous transaction 600 s earlier: 2061 km/h"),
            "{}",
            e.fired[0].detail
        );
        // The same in an hour: plausible by plane.
        h.last_location = Some((paris, NOON - 3600));
        assert!(evaluate(&r, &f, &h).fired.is_empty());
        // Location noise within min_distance_km never fires, even at once.
        f.location = Some(near);
        h.last_location = Some((paris, NOON));
        assert!(evaluate(&r, &f, &h).fired.is_empty());
        // No location on this transaction: nothing to compare.
        f.location = None;
        h.last_location = Some((paris, NOON));
        assert!(evaluate(&r, &f, &h).fired.is_empty());
    }

    #[test]
    fn payee_block_is_exact_and_ignores_case() {
        let r = rules("[[payee_block]]\nname = \"blocked\"\naction = \"deny\"\nweight = 100\npayees = [\"Mule-Account-1\"]");
        let mut f = facts("1");
        for (payee, fires) in [
            ("mule-account-1", true),
            ("MULE-ACCOUNT-1", true),
            ("mule-account-10", false),
            ("mule-account", false),
            (" mule-account-1", false),
        ] {
            f.payee = payee;
            let e = evaluate(&r, &f, &History::default());
            assert_eq!(!e.fired.is_empty(), fires, "{payee}");
        }
    }
}
