//! What is counted, and exactly once: daily totals across midnight (UTC and local), velocity,
//! idempotence by tx_hash, counters surviving a restart, and many concurrent assessments of
//! one user counting exactly.

mod common;

use common::*;
use std::sync::Arc;
use yunkey_proto::v1::RiskVerdict;
use yunkey_risk::store::RiskStore;

const DAY: i64 = 86_400;

fn daily(offset_minutes: i32) -> String {
    format!(
        r#"
format = 1
[general]
timezone_offset_minutes = {offset_minutes}
[[amount_limit]]
name = "amount.EUR.daily"
action = "deny"
weight = 50
currency = "EUR"
period = "day"
above = 1000
[[amount_limit]]
name = "amount.USD.daily"
action = "deny"
weight = 50
currency = "USD"
period = "day"
above = 100
"#
    )
}

const VELOCITY: &str = r#"
format = 1
[[velocity]]
name = "velocity.per_minute"
action = "deny"
weight = 40
max = 10
window_seconds = 60
"#;

#[tokio::test]
async fn daily_totals_reset_at_utc_midnight_and_are_per_currency() {
    let env = Env::new(&daily(0));
    let midnight = NOON + 12 * 3600;
    env.clock.set(midnight - 60);
    assert_eq!(
        env.verdict("alice", &env.tx("600")).await,
        RiskVerdict::Allow
    );
    // 600 + 500 > 1000 on the same day.
    env.clock.set(midnight - 1);
    let d = env
        .assess(assess_req("alice", &env.tx("500")))
        .await
        .unwrap();
    assert_eq!(fired(&d), ["amount.EUR.daily"]);
    assert!(
        d.reasons[0].detail.contains("1100 EUR (600 EUR before"),
        "{}",
        d.reasons[0].detail
    );
    // USD is counted apart.
    let usd = tx("100", "USD", "shop", env.now());
    assert_eq!(env.verdict("alice", &usd).await, RiskVerdict::Allow);
    // A denied transaction was not counted: 400 still fits.
    assert_eq!(
        env.verdict("alice", &env.tx("400")).await,
        RiskVerdict::Allow
    );
    assert_eq!(
        env.verdict("alice", &env.tx("0.01")).await,
        RiskVerdict::Deny
    );
    // Past midnight: a new day.
    env.clock.set(midnight);
    assert_eq!(
        env.verdict("alice", &env.tx("1000")).await,
        RiskVerdict::Allow
    );
    assert_eq!(
        env.verdict("alice", &env.tx("0.01")).await,
        RiskVerdict::Deny
    );
    let usd = tx("100", "USD", "shop", env.now());
    assert_eq!(env.verdict("alice", &usd).await, RiskVerdict::Allow);
    // Another user has their own totals.
    assert_eq!(
        env.verdict("bob", &env.tx("1000")).await,
        RiskVerdict::Allow
    );
}

#[tokio::test]
async fn daily_totals_follow_the_timezone_offset() {
    // UTC+02:00: the local day ends at 22:00 UTC.
    let env = Env::new(&daily(120));
    let local_midnight = NOON + 10 * 3600;
    env.clock.set(local_midnight - 10);
    assert_eq!(
        env.verdict("alice", &env.tx("900")).await,
        RiskVerdict::Allow
    );
    assert_eq!(
        env.verdict("alice", &env.tx("200")).await,
        RiskVerdict::Deny
    );
    env.clock.set(local_midnight);
    assert_eq!(
        env.verdict("alice", &env.tx("200")).await,
        RiskVerdict::Allow
    );
    // 23:30 UTC is still the same local day as 22:00 UTC.
    env.clock.set(local_midnight + 90 * 60);
    assert_eq!(
        env.verdict("alice", &env.tx("800")).await,
        RiskVerdict::Allow
    );
    assert_eq!(
        env.verdict("alice", &env.tx("0.01")).await,
        RiskVerdict::Deny
    );
    env.clock.set(local_midnight + DAY);
    assert_eq!(
        env.verdict("alice", &env.tx("1000")).await,
        RiskVerdict::Allow
    );
}

#[tokio::test]
async fn a_transaction_is_counted_once_by_tx_hash() {
    let env = Env::new(&daily(0));
    let tx = env.tx("700");
    assert_eq!(env.verdict("alice", &tx).await, RiskVerdict::Allow);
    // Retried twice: still allowed (its own amount is not held against it), not counted again.
    assert_eq!(env.verdict("alice", &tx).await, RiskVerdict::Allow);
    assert_eq!(env.verdict("alice", &tx).await, RiskVerdict::Allow);
    // 700 + 300 = 1000 fits only if the 700 was counted once.
    assert_eq!(
        env.verdict("alice", &env.tx("300")).await,
        RiskVerdict::Allow
    );
    assert_eq!(
        env.verdict("alice", &env.tx("0.01")).await,
        RiskVerdict::Deny
    );
    // And the retried one still sees the day as it was without it.
    assert_eq!(env.verdict("alice", &tx).await, RiskVerdict::Allow);
}

#[tokio::test]
async fn velocity_counts_allowed_transactions_once() {
    let env = Env::new(VELOCITY);
    let first = env.tx("1");
    for _ in 0..10 {
        assert_eq!(env.verdict("alice", &env.tx("1")).await, RiskVerdict::Allow);
    }
    let d = env.assess(assess_req("alice", &first)).await.unwrap();
    // `first` was not counted yet: it would be the 11th.
    assert_eq!(fired(&d), ["velocity.per_minute"]);
    assert_eq!(
        d.reasons[0].detail,
        "10 transactions in the last 60 s already; at most 10 are allowed"
    );
    // A minute later the window is empty again.
    env.clock.advance(60);
    assert_eq!(env.verdict("alice", &first).await, RiskVerdict::Allow);
    // Re-assessing a counted transaction does not push it over.
    for _ in 0..9 {
        assert_eq!(env.verdict("alice", &env.tx("1")).await, RiskVerdict::Allow);
    }
    assert_eq!(env.verdict("alice", &first).await, RiskVerdict::Allow);
    assert_eq!(env.verdict("alice", &env.tx("1")).await, RiskVerdict::Deny);
}

#[tokio::test]
async fn counters_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let counted = {
        let env = Env::on(RiskStore::open(dir.path()).unwrap(), VELOCITY, NOON);
        let mut txs = Vec::new();
        for _ in 0..10 {
            let tx = env.tx("1");
            assert_eq!(env.verdict("alice", &tx).await, RiskVerdict::Allow);
            txs.push(tx);
        }
        txs
        // Dropped without a further flush: every ALLOW was flushed before it was answered.
    };
    let env = Env::on(RiskStore::open(dir.path()).unwrap(), VELOCITY, NOON + 30);
    assert_eq!(env.verdict("alice", &env.tx("1")).await, RiskVerdict::Deny);
    // Still counted once: a retry of one of them is allowed, not counted again.
    assert_eq!(env.verdict("alice", &counted[3]).await, RiskVerdict::Allow);
    assert_eq!(env.verdict("bob", &env.tx("1")).await, RiskVerdict::Allow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_assessments_of_one_user_count_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let env = Arc::new(Env::on(
        RiskStore::open(dir.path()).unwrap(),
        VELOCITY,
        NOON,
    ));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let env = env.clone();
            tokio::spawn(async move {
                let tx = env.tx("1");
                let d = env.assess(assess_req("alice", &tx)).await.unwrap();
                verdict(&d)
            })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        let v = t.await.unwrap();
        if v == RiskVerdict::Allow {
            allowed += 1;
        } else {
            assert_eq!(v, RiskVerdict::Deny);
        }
    }
    assert_eq!(allowed, 10);
    // And the same transaction assessed by many at once is counted once.
    let env = Arc::new(Env::new(VELOCITY));
    let tx = env.tx("1");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (env, tx) = (env.clone(), tx.clone());
            tokio::spawn(async move { env.verdict("carol", &tx).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), RiskVerdict::Allow);
    }
    for _ in 0..9 {
        assert_eq!(env.verdict("carol", &env.tx("1")).await, RiskVerdict::Allow);
    }
    assert_eq!(env.verdict("carol", &env.tx("1")).await, RiskVerdict::Deny);
}

#[tokio::test]
async fn an_expired_transaction_is_refused() {
    let env = Env::new(VELOCITY);
    let tx = env.tx("1");
    env.clock.advance(300 + 61);
    assert_status(
        env.assess(assess_req("alice", &tx)).await,
        tonic::Code::FailedPrecondition,
        "expired",
    );
}
