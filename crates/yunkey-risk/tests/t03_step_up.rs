//! A step-up is satisfied only by a real, matched, unexpired authentication result of the
//! same user for the same transaction; deny rules deny regardless.

mod common;

use common::*;
use tonic::Code;
use yunkey_proto::v1::RiskVerdict;

const RULES: &str = r#"
format = 1
[general]
decision_validity_seconds = 60
[face]
threshold = 0.6
[[amount_limit]]
name = "amount.EUR.per_transaction.step_up"
action = "step_up"
weight = 30
currency = "EUR"
period = "transaction"
above = 1000
[[amount_limit]]
name = "amount.EUR.daily"
action = "deny"
weight = 50
currency = "EUR"
period = "day"
above = 3000
[[payee_block]]
name = "payee.blocked"
action = "deny"
weight = 100
payees = ["mule"]
"#;

async fn enrolled() -> Env {
    let env = Env::new(RULES);
    env.enroll("alice", "face:1.0").await.unwrap();
    env.enroll("bob", "face:5.0").await.unwrap();
    env
}

#[tokio::test]
async fn a_matched_authentication_turns_step_up_into_allow_once() {
    let env = enrolled().await;
    let tx = env.tx("2000");
    let d = env.assess(assess_req("alice", &tx)).await.unwrap();
    assert_eq!(verdict(&d), RiskVerdict::StepUp);

    let auth = env.authenticate("alice", &tx, "face:1.5").await.unwrap();
    assert!(auth.matched);
    assert_eq!(auth.score, 0.5);
    assert_eq!(auth.threshold, 0.6);
    assert_eq!(auth.tx_hash, hash(&tx));
    assert!(auth.decision_id.starts_with("auth-") && auth.decision_id.len() == 37);

    let d = env
        .assess(with_auth(assess_req("alice", &tx), &auth.decision_id))
        .await
        .unwrap();
    assert_eq!(verdict(&d), RiskVerdict::Allow);
    // The rule still shows: it fired, and was satisfied.
    assert_eq!(fired(&d), ["amount.EUR.per_transaction.step_up"]);
    assert_eq!(d.reasons[0].verdict, RiskVerdict::StepUp as i32);
    // A retry with the same authentication: allowed, not counted twice (2000 + 1000 <= 3000).
    let d = env
        .assess(with_auth(assess_req("alice", &tx), &auth.decision_id))
        .await
        .unwrap();
    assert_eq!(verdict(&d), RiskVerdict::Allow);
    assert_eq!(
        env.verdict("alice", &env.tx("1000")).await,
        RiskVerdict::Allow
    );
    assert_eq!(env.verdict("alice", &env.tx("1")).await, RiskVerdict::Deny);
}

#[tokio::test]
async fn an_authentication_is_honoured_only_for_its_user_and_transaction_and_in_time() {
    let env = enrolled().await;
    let tx = env.tx("2000");
    let other_tx = env.tx("2000");
    let alice = env.authenticate("alice", &tx, "face:1.0").await.unwrap();
    assert!(alice.matched);

    let not_honoured = |d: &yunkey_proto::v1::RiskDecision, why: &str| {
        assert_eq!(verdict(d), RiskVerdict::StepUp, "{d:?}");
        let last = d.reasons.last().unwrap();
        assert_eq!(last.rule, "authentication");
        assert!(last.detail.contains(why), "{:?} lacks {why:?}", last.detail);
    };

    // Another transaction.
    let d = env
        .assess(with_auth(
            assess_req("alice", &other_tx),
            &alice.decision_id,
        ))
        .await
        .unwrap();
    not_honoured(&d, "another transaction");
    // Another user (bob presents alice's result for the same transaction).
    let d = env
        .assess(with_auth(assess_req("bob", &tx), &alice.decision_id))
        .await
        .unwrap();
    not_honoured(&d, "another user");
    // An id this service never issued.
    let d = env
        .assess(with_auth(
            assess_req("alice", &tx),
            "auth-00000000000000000000000000000000",
        ))
        .await
        .unwrap();
    not_honoured(&d, "not a result of this risk service");
    // An unmatched result.
    let wrong = env.authenticate("alice", &tx, "face:2.0").await.unwrap();
    assert!(!wrong.matched);
    assert_eq!(wrong.score, 1.0);
    let d = env
        .assess(with_auth(assess_req("alice", &tx), &wrong.decision_id))
        .await
        .unwrap();
    not_honoured(&d, "did not match");
    // A decision id of an assessment is not an authentication.
    let d = env
        .assess(with_auth(assess_req("alice", &tx), &d.decision_id))
        .await
        .unwrap();
    not_honoured(&d, "not a result");
    // Expired: the validity is 60 s.
    env.clock.advance(60);
    let d = env
        .assess(with_auth(assess_req("alice", &tx), &alice.decision_id))
        .await
        .unwrap();
    not_honoured(&d, "expired");
    // Pruned after expiry: then it is unknown.
    env.store.prune(env.now() + 1).unwrap();
    let d = env
        .assess(with_auth(assess_req("alice", &tx), &alice.decision_id))
        .await
        .unwrap();
    not_honoured(&d, "not a result");
    // Nothing was counted by any of these.
    assert_eq!(
        env.verdict("alice", &env.tx("1000")).await,
        RiskVerdict::Allow
    );
    assert_eq!(
        env.verdict("alice", &env.tx("1000")).await,
        RiskVerdict::Allow
    );
    assert_eq!(
        env.verdict("alice", &env.tx("1000")).await,
        RiskVerdict::Allow
    );
}

#[tokio::test]
async fn deny_rules_deny_even_after_a_matched_authentication() {
    let env = enrolled().await;
    let tx = tx("2000", "EUR", "MULE", env.now());
    let d = env.assess(assess_req("alice", &tx)).await.unwrap();
    assert_eq!(verdict(&d), RiskVerdict::Deny);
    let auth = env.authenticate("alice", &tx, "face:1.0").await.unwrap();
    assert!(auth.matched);
    let d = env
        .assess(with_auth(assess_req("alice", &tx), &auth.decision_id))
        .await
        .unwrap();
    assert_eq!(verdict(&d), RiskVerdict::Deny);
    assert_eq!(
        fired(&d),
        ["amount.EUR.per_transaction.step_up", "payee.blocked"]
    );
}

#[tokio::test]
async fn an_authentication_on_a_clean_transaction_changes_nothing() {
    let env = enrolled().await;
    let tx = env.tx("10");
    let d = env
        .assess(with_auth(assess_req("alice", &tx), "auth-nonsense"))
        .await
        .unwrap();
    assert_eq!(verdict(&d), RiskVerdict::Allow);
    assert!(d.reasons.is_empty());
    let mut req = with_auth(assess_req("alice", &tx), "auth-x");
    req.authentication.as_mut().unwrap().method = "fingerprint".into();
    assert_status(
        env.assess(req).await,
        Code::InvalidArgument,
        "authentication.method",
    );
}
