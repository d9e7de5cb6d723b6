//! Every rule kind through the RiskService: it fires when it should, not when it should not,
//! and the decision carries the verdict, the score, the reasons, the id, the expiry and the
//! tx_hash.

mod common;

use common::*;
use yunkey_proto::v1::RiskVerdict;

const RULES: &str = r#"
format = 1
[general]
decision_validity_seconds = 45
[[amount_limit]]
name = "amount.EUR.per_transaction.step_up"
action = "step_up"
weight = 30
currency = "EUR"
period = "transaction"
above = 1000
[[amount_limit]]
name = "amount.EUR.per_transaction.deny"
action = "deny"
weight = 60
currency = "EUR"
period = "transaction"
above = 10000
[[amount_limit]]
name = "amount.USD.per_transaction"
action = "deny"
weight = 60
currency = "USD"
period = "transaction"
above = 50
[[new_device]]
name = "device.new"
action = "step_up"
weight = 20
younger_than_seconds = 3600
[[unusual_hours]]
name = "hours.night"
action = "step_up"
weight = 10
from = "23:00"
to = "05:00"
[[impossible_travel]]
name = "travel.impossible"
action = "deny"
weight = 70
above_km_per_hour = 900
min_distance_km = 50
[[payee_block]]
name = "payee.blocked"
action = "deny"
weight = 100
payees = ["Mule-1"]
"#;

#[tokio::test]
async fn a_clean_transaction_is_allowed_with_a_fresh_decision() {
    let env = Env::new(RULES);
    let tx = env.tx("999.99");
    let d = env.assess(assess_req("alice", &tx)).await.unwrap();
    assert_eq!(verdict(&d), RiskVerdict::Allow);
    assert_eq!(d.score, 0.0);
    assert!(d.reasons.is_empty());
    assert_eq!(d.tx_hash, hash(&tx));
    assert_eq!(d.expires_at, NOON + 45);
    assert!(d.decision_id.starts_with("risk-") && d.decision_id.len() == 37);
    let again = env.assess(assess_req("alice", &tx)).await.unwrap();
    assert_ne!(again.decision_id, d.decision_id);
}

#[tokio::test]
async fn amount_limits_apply_per_currency() {
    let env = Env::new(RULES);
    let d = env
        .assess(assess_req("alice", &env.tx("1000.01")))
        .await
        .unwrap();
    assert_eq!(verdict(&d), RiskVerdict::StepUp);
    assert_eq!(fired(&d), ["amount.EUR.per_transaction.step_up"]);
    assert_eq!(d.score, 30.0);
    assert_eq!(d.reasons[0].verdict, RiskVerdict::StepUp as i32);
    assert_eq!(
        d.reasons[0].detail,
        "amount 1000.01 EUR is above the per-transaction limit 1000 EUR"
    );

    let d = env
        .assess(assess_req("alice", &env.tx("10000.5")))
        .await
        .unwrap();
    assert_eq!(verdict(&d), RiskVerdict::Deny);
    assert_eq!(
        fired(&d),
        [
            "amount.EUR.per_transaction.step_up",
            "amount.EUR.per_transaction.deny"
        ]
    );
    assert_eq!(d.score, 90.0);

    // 60 USD is over the USD limit; 60 GBP has no limit at all.
    let usd = tx("60", "USD", "shop", NOON);
    assert_eq!(env.verdict("alice", &usd).await, RiskVerdict::Deny);
    let gbp = tx("60000", "GBP", "shop", NOON);
    assert_eq!(env.verdict("alice", &gbp).await, RiskVerdict::Allow);
}

#[tokio::test]
async fn a_new_device_asks_for_a_step_up() {
    let env = Env::new(RULES);
    let tx = env.tx("10");
    let mut req = assess_req("alice", &tx);
    req.context.as_mut().unwrap().device_registered_at = NOON - 600;
    let d = env.assess(req.clone()).await.unwrap();
    assert_eq!(fired(&d), ["device.new"]);
    assert_eq!(verdict(&d), RiskVerdict::StepUp);
    req.context.as_mut().unwrap().device_registered_at = NOON - 3600;
    assert!(env.assess(req).await.unwrap().reasons.is_empty());
}

#[tokio::test]
async fn unusual_hours_ask_for_a_step_up() {
    let env = Env::new(RULES);
    env.clock.set(NOON + 11 * 3600 + 30 * 60); // 23:30 UTC
    let d = env
        .assess(assess_req("alice", &env.tx("10")))
        .await
        .unwrap();
    assert_eq!(fired(&d), ["hours.night"]);
    assert_eq!(
        d.reasons[0].detail,
        "local time 23:30 (UTC+00:00) is within 23:00-05:00"
    );
    env.clock.set(NOON + 17 * 3600); // 05:00 the next day
    let d = env
        .assess(assess_req("alice", &env.tx("10")))
        .await
        .unwrap();
    assert!(d.reasons.is_empty());
}

#[tokio::test]
async fn impossible_travel_is_denied() {
    let env = Env::new(RULES);
    // Paris, counted.
    let d = env
        .assess(at(assess_req("alice", &env.tx("10")), 48.8566, 2.3522))
        .await
        .unwrap();
    assert_eq!(verdict(&d), RiskVerdict::Allow);
    // New York ten minutes later: about 5800 km.
    env.clock.advance(600);
    let ny = env.tx("10");
    let d = env
        .assess(at(assess_req("alice", &ny), 40.7128, -74.0060))
        .await
        .unwrap();
    assert_eq!(fired(&d), ["travel.impossible"]);
    assert_eq!(verdict(&d), RiskVerdict::Deny);
    assert!(
        d.reasons[0].detail.contains("km/h, above 900 km/h"),
        "{}",
        d.reasons[0].detail
    );
    // Another user is not affected by alice's travels.
    let d = env
        .assess(at(assess_req("bob", &ny), 40.7128, -74.0060))
        .await
        .unwrap();
    assert!(d.reasons.is_empty());
    // Twenty hours later (08:10), New York is plausible.
    env.clock.advance(20 * 3600);
    let d = env
        .assess(at(assess_req("alice", &env.tx("10")), 40.7128, -74.0060))
        .await
        .unwrap();
    assert!(d.reasons.is_empty(), "{:?}", d.reasons);
    // A transaction without a location is not compared.
    env.clock.advance(1);
    assert!(env
        .assess(assess_req("alice", &env.tx("10")))
        .await
        .unwrap()
        .reasons
        .is_empty());
}

#[tokio::test]
async fn blocked_payees_are_denied_ignoring_case() {
    let env = Env::new(RULES);
    let d = env
        .assess(assess_req("alice", &tx("5", "EUR", "MULE-1", NOON)))
        .await
        .unwrap();
    assert_eq!(fired(&d), ["payee.blocked"]);
    assert_eq!(verdict(&d), RiskVerdict::Deny);
    assert_eq!(d.score, 100.0);
    let d = env
        .assess(assess_req("alice", &tx("5", "EUR", "Mule-10", NOON)))
        .await
        .unwrap();
    assert!(d.reasons.is_empty());
}

#[tokio::test]
async fn verdict_is_the_strongest_and_score_is_capped() {
    let env = Env::new(RULES);
    env.clock.set(NOON + 11 * 3600 + 30 * 60); // night
    let tx = tx("20000", "EUR", "mule-1", env.now());
    let mut req = assess_req("alice", &tx);
    req.context.as_mut().unwrap().device_registered_at = env.now() - 1;
    let d = env.assess(req).await.unwrap();
    assert_eq!(
        fired(&d),
        [
            "amount.EUR.per_transaction.step_up",
            "amount.EUR.per_transaction.deny",
            "device.new",
            "hours.night",
            "payee.blocked"
        ]
    );
    assert_eq!(verdict(&d), RiskVerdict::Deny);
    assert_eq!(d.score, 100.0);
    // Step-up rules alone: STEP_UP, weights summed.
    let tx = tx_at("1500", env.now());
    let mut req = assess_req("alice", &tx);
    req.context.as_mut().unwrap().device_registered_at = env.now() - 1;
    let d = env.assess(req).await.unwrap();
    assert_eq!(verdict(&d), RiskVerdict::StepUp);
    assert_eq!(d.score, 60.0);
}

fn tx_at(amount: &str, now: i64) -> yunkey_proto::v1::Transaction {
    tx(amount, "EUR", "shop", now)
}
