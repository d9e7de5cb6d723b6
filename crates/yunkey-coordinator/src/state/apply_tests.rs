//! Tests of the state machine's apply step.

use super::*;
use crate::state::{
    Activation, DeviceRecord, FiredRule, RiskCheck, UserEvent, UserRecord, Verdict,
};
use yunkey_store::Db;

/// An active user with no devices and a pending code (also for `apply_batch`'s tests).
pub(in crate::state) fn user(id: &str, code: &str) -> UserRecord {
    UserRecord {
        user_id: id.into(),
        algorithm: 1,
        public_key: vec![1],
        wrapped_key: vec![2],
        certificate: vec![3],
        state: UserState::Active,
        holders: vec![],
        devices: vec![],
        activation: Some(Activation {
            code_sha256: yunkey_crypto::sha256(code.as_bytes()),
            expires_at: 1000,
            enroll_request_id: format!("enroll-{id}"),
        }),
        created_at: 1,
        revoked_reason: None,
        binding_seq: 0,
    }
}

fn rebinding(seq: u64) -> Rebinding {
    Rebinding {
        wrapped_key: format!("wrapped-{seq}").into_bytes(),
        binding_seq: seq,
    }
}

/// A device record with no key (also for other modules' tests).
pub(in crate::state) fn device(id: &str) -> DeviceRecord {
    DeviceRecord {
        device_id: id.into(),
        name: String::new(),
        public_key: vec![],
        certificate: vec![],
        registered_at: 1,
        revoked_at: None,
    }
}

/// Applies `op` as one log entry would (also for other modules' tests).
pub(in crate::state) fn apply_as_entry(
    app: &App,
    tree: &Tree,
    now: i64,
    request_id: &str,
    op: Op,
) -> CommandResult {
    let mut batch = Batch::new();
    let cmd = Command {
        request_id: request_id.into(),
        actor: "test".into(),
        now,
        op,
    };
    let result = app.apply_command(tree, &mut batch, &cmd).unwrap();
    tree.apply(batch).unwrap();
    result
}

struct Sm {
    tree: Tree,
}

impl Sm {
    fn new() -> Self {
        Self {
            tree: Db::memory().tree("sm").unwrap(),
        }
    }
    fn run(&self, request_id: &str, now: i64, op: Op) -> CommandResult {
        apply_as_entry(&App::default(), &self.tree, now, request_id, op)
    }
    fn view(&self) -> StateView {
        StateView::new(self.tree.clone())
    }
}

fn consume(user: &str, dev: &str, hash: u8) -> Op {
    Op::ConsumeAuthorization {
        user_id: user.into(),
        device_id: dev.into(),
        tx_hash: [hash; 32],
        expires_at: 500,
    }
}

#[test]
fn enrol_register_consume_and_replay() {
    let sm = Sm::new();
    let enrolled = sm.run(
        "enroll-alice",
        10,
        Op::EnrollUser {
            user: user("alice", "CODE"),
            activation_code: "CODE".into(),
        },
    );
    // An entry that still carries the code (written before format 3) is applied without it:
    // nothing stores a code.
    assert!(
        matches!(enrolled, CommandResult::Enrolled { ref activation_code, .. } if activation_code.is_empty())
    );
    // Retry: the same result, one user.
    assert_eq!(
        sm.run(
            "enroll-alice",
            11,
            Op::EnrollUser {
                user: user("alice", "OTHER"),
                activation_code: "OTHER".into()
            }
        ),
        enrolled
    );
    assert_eq!(sm.view().user_count().unwrap(), 1);
    // The same request id for another user is refused, not answered with alice's result.
    assert!(matches!(
        sm.run(
            "enroll-alice",
            12,
            Op::EnrollUser {
                user: user("bob", "X"),
                activation_code: "X".into()
            }
        ),
        CommandResult::Rejected(Rejection::RequestIdReused { .. })
    ));
    assert!(matches!(
        sm.run("e2", 12, Op::EnrollUser { user: user("alice", "X"), activation_code: "X".into() }),
        CommandResult::Rejected(Rejection::UserExists(ref u)) if u == "alice"
    ));

    // Wrong code, then the right one; the code is then forgotten everywhere.
    let register = |code: &str, dev: &str| Op::RegisterDevice {
        user_id: "alice".into(),
        code_sha256: yunkey_crypto::sha256(code.as_bytes()),
        device: device(dev),
        rebinding: rebinding(1),
    };
    assert_eq!(
        sm.run("r1", 20, register("NOPE", "d1")),
        CommandResult::Rejected(Rejection::ActivationInvalid)
    );
    assert!(matches!(
        sm.run("r2", 20, register("CODE", "d1")),
        CommandResult::DeviceRegistered { .. }
    ));
    assert_eq!(
        sm.run("r3", 20, register("CODE", "d2")),
        CommandResult::Rejected(Rejection::ActivationInvalid)
    );
    let prior = sm.view().request("enroll-alice").unwrap().unwrap();
    assert!(
        matches!(prior.result, CommandResult::Enrolled { ref activation_code, .. } if activation_code.is_empty())
    );
    assert!(sm
        .view()
        .user("alice")
        .unwrap()
        .unwrap()
        .activation
        .is_none());

    // Consume once; a replay under another id is refused; a retry is answered.
    assert_eq!(
        sm.run("s1", 30, consume("alice", "d1", 7)),
        CommandResult::Consumed
    );
    assert_eq!(
        sm.run("s2", 31, consume("alice", "d1", 7)),
        CommandResult::Rejected(Rejection::AuthorizationUsed { consumed_at: 30 })
    );
    assert_eq!(
        sm.run("s1", 32, consume("alice", "d1", 7)),
        CommandResult::Consumed
    );
    assert!(matches!(
        sm.run("s1", 32, consume("alice", "d1", 8)),
        CommandResult::Rejected(Rejection::RequestIdReused { .. })
    ));
    assert_eq!(
        sm.run("s3", 33, consume("alice", "dX", 9)),
        CommandResult::Rejected(Rejection::UnknownDevice)
    );
    assert_eq!(sm.view().signature_count().unwrap(), 1);

    // Revoked users consume nothing.
    assert_eq!(
        sm.run(
            "v1",
            40,
            Op::RevokeUser {
                user_id: "alice".into(),
                reason: "lost".into(),
                rebinding: None,
            }
        ),
        CommandResult::Revoked
    );
    assert!(matches!(
        sm.run("s4", 41, consume("alice", "d1", 10)),
        CommandResult::Rejected(Rejection::UserRevoked(_))
    ));
    // Every applied command left an audit record.
    assert!(sm.view().audit_tail(100).unwrap().len() >= 10);
}

#[test]
fn node_ids_are_recorded_once_and_never_reused() {
    let sm = Sm::new();
    let record = |id: u64, address: &str| {
        Op::RecordNodeId(crate::state::NodeIdRecord {
            node_id: id,
            address: address.into(),
            added_at: 1,
        })
    };
    assert_eq!(
        sm.run("", 1, record(1, "https://a:1")),
        CommandResult::NodeIdRecorded
    );
    assert_eq!(
        sm.run("", 2, record(2, "https://b:1")),
        CommandResult::NodeIdRecorded
    );
    // Another node under a used id, even at another address, is refused.
    assert_eq!(
        sm.run("", 3, record(2, "https://c:1")),
        CommandResult::Rejected(Rejection::NodeIdUsed {
            node_id: 2,
            first_address: "https://b:1".into()
        })
    );
    let ids: Vec<u64> = sm
        .view()
        .node_ids()
        .unwrap()
        .iter()
        .map(|r| r.node_id)
        .collect();
    assert_eq!(ids, vec![1, 2]);
    assert_eq!(
        sm.view().node_id(2).unwrap().unwrap().address,
        "https://b:1",
        "the first record is kept"
    );
    assert!(sm.view().node_id(3).unwrap().is_none());
}

#[test]
fn activation_expires_and_device_keys_serve_one_user() {
    let sm = Sm::new();
    for u in ["a", "b"] {
        sm.run(
            "",
            1,
            Op::EnrollUser {
                user: user(u, "C"),
                activation_code: "C".into(),
            },
        );
    }
    let register = |u: &str, dev: &str| Op::RegisterDevice {
        user_id: u.into(),
        code_sha256: yunkey_crypto::sha256(b"C"),
        device: device(dev),
        rebinding: rebinding(1),
    };
    assert_eq!(
        sm.run("", 5000, register("a", "d1")),
        CommandResult::Rejected(Rejection::ActivationInvalid),
        "expired"
    );
    assert!(matches!(
        sm.run("", 5, register("a", "d1")),
        CommandResult::DeviceRegistered { .. }
    ));
    assert_eq!(
        sm.run("", 5, register("b", "d1")),
        CommandResult::Rejected(Rejection::DeviceTaken("d1".into()))
    );
    assert!(
        sm.view().user("b").unwrap().unwrap().activation.is_some(),
        "the refused registration used nothing"
    );
}

#[test]
fn probe_writes_nothing() {
    let sm = Sm::new();
    assert_eq!(sm.run("", 1, Op::Probe), CommandResult::Probed);
    // Even under a request id: no request record, no audit record, no state.
    assert_eq!(sm.run("probe-1", 1, Op::Probe), CommandResult::Probed);
    assert!(sm.tree.is_empty());
}

#[test]
fn device_revocation_and_bindings_commit_only_forward() {
    let sm = Sm::new();
    sm.run(
        "",
        1,
        Op::EnrollUser {
            user: user("alice", "C"),
            activation_code: "C".into(),
        },
    );
    assert!(matches!(
        sm.run(
            "",
            2,
            Op::RegisterDevice {
                user_id: "alice".into(),
                code_sha256: yunkey_crypto::sha256(b"C"),
                device: device("d1"),
                rebinding: rebinding(1),
            }
        ),
        CommandResult::DeviceRegistered { .. }
    ));
    let alice = sm.view().user("alice").unwrap().unwrap();
    assert_eq!(alice.binding_seq, 1);
    assert_eq!(alice.wrapped_key, b"wrapped-1");
    assert!(matches!(
        sm.run("s1", 3, consume("alice", "d1", 1)),
        CommandResult::Consumed
    ));

    let revoke = |dev: &str, r: Option<Rebinding>| Op::RevokeDevice {
        user_id: "alice".into(),
        device_id: dev.into(),
        reason: "stolen".into(),
        rebinding: r,
    };
    assert_eq!(
        sm.run("", 4, revoke("d9", Some(rebinding(2)))),
        CommandResult::Rejected(Rejection::UnknownDevice)
    );
    assert_eq!(
        sm.run("", 4, revoke("d1", Some(rebinding(2)))),
        CommandResult::DeviceRevoked
    );
    let alice = sm.view().user("alice").unwrap().unwrap();
    assert_eq!(alice.devices[0].revoked_at, Some(4));
    assert_eq!(
        (alice.binding_seq, &alice.wrapped_key[..]),
        (2, &b"wrapped-2"[..])
    );
    // A revoked device consumes nothing.
    assert_eq!(
        sm.run("s2", 5, consume("alice", "d1", 2)),
        CommandResult::Rejected(Rejection::UnknownDevice)
    );
    // Revoking again keeps the first time; an older binding never replaces a newer one.
    sm.run("", 9, revoke("d1", Some(rebinding(1))));
    let alice = sm.view().user("alice").unwrap().unwrap();
    assert_eq!(alice.devices[0].revoked_at, Some(4));
    assert_eq!(alice.binding_seq, 2);
    // Revoking the user without a chip's binding still revokes (coordinators refuse at once).
    assert_eq!(
        sm.run(
            "",
            10,
            Op::RevokeUser {
                user_id: "alice".into(),
                reason: "closed".into(),
                rebinding: None,
            }
        ),
        CommandResult::Revoked
    );
    assert_eq!(sm.view().user("alice").unwrap().unwrap().binding_seq, 2);
}

#[test]
fn wrong_codes_burn_and_a_new_code_reopens() {
    let sm = Sm::new();
    sm.run(
        "enroll-carol",
        10,
        Op::EnrollUser {
            user: user("carol", "CODE"),
            activation_code: String::new(),
        },
    );
    let attempt = |code: &str| Op::ActivationAttempt {
        user_id: "carol".into(),
        code_sha256: yunkey_crypto::sha256(code.as_bytes()),
        limit: 3,
    };
    assert_eq!(
        sm.run("", 11, attempt("CODE")),
        CommandResult::ActivationAccepted
    );
    assert_eq!(
        sm.run("", 12, attempt("NOPE")),
        CommandResult::ActivationFailureCounted {
            failures: 1,
            burnt: false
        }
    );
    assert_eq!(sm.view().activation_failures("carol").unwrap(), 1);
    sm.run("", 13, attempt("NOPE"));
    assert_eq!(
        sm.run("", 14, attempt("NOPE")),
        CommandResult::ActivationFailureCounted {
            failures: 3,
            burnt: true
        }
    );
    assert!(sm
        .view()
        .user("carol")
        .unwrap()
        .unwrap()
        .activation
        .is_none());
    // Burnt: even the right code is refused, without counting.
    assert_eq!(
        sm.run("", 15, attempt("CODE")),
        CommandResult::Rejected(Rejection::ActivationInvalid)
    );
    // A new code reopens it, with a fresh count.
    assert_eq!(
        sm.run(
            "react-1",
            16,
            Op::Reactivate {
                user_id: "carol".into(),
                code_sha256: yunkey_crypto::sha256(b"NEW"),
                expires_at: 1_000,
                rebinding: rebinding(2),
            }
        ),
        CommandResult::Reactivated
    );
    assert_eq!(sm.view().activation_failures("carol").unwrap(), 0);
    assert_eq!(
        sm.run("", 17, attempt("NEW")),
        CommandResult::ActivationAccepted
    );
    // An expired code is refused without counting.
    assert_eq!(
        sm.run("", 1_001, attempt("NOPE")),
        CommandResult::Rejected(Rejection::ActivationInvalid)
    );

    // A registered device renews; once removed it does not, and the reason is kept.
    let register = Op::RegisterDevice {
        user_id: "carol".into(),
        code_sha256: yunkey_crypto::sha256(b"NEW"),
        device: device("d1"),
        rebinding: rebinding(3),
    };
    assert!(matches!(
        sm.run("reg", 18, register),
        CommandResult::DeviceRegistered { .. }
    ));
    let renew = |cert: u8| Op::RenewDevice {
        user_id: "carol".into(),
        device_id: "d1".into(),
        certificate: vec![cert],
    };
    assert_eq!(
        sm.run("renew-1", 19, renew(7)),
        CommandResult::DeviceRenewed
    );
    assert_eq!(
        sm.view().user("carol").unwrap().unwrap().devices[0].certificate,
        vec![7]
    );
    sm.run(
        "rm",
        20,
        Op::RevokeDevice {
            user_id: "carol".into(),
            device_id: "d1".into(),
            reason: "removed: lost".into(),
            rebinding: None,
        },
    );
    assert_eq!(
        sm.view().device_revocation("d1").unwrap().as_deref(),
        Some("removed: lost")
    );
    assert_eq!(
        sm.run("renew-2", 21, renew(8)),
        CommandResult::Rejected(Rejection::DeviceRevoked("d1".into()))
    );
}

#[test]
fn risk_decisions_are_kept_with_the_signature_and_the_refusal_in_the_users_trail() {
    let sm = Sm::new();
    for (id, code) in [("alice", "A"), ("alice2", "B")] {
        let mut u = user(id, code);
        u.devices.push(device(&format!("dev-{id}")));
        sm.run(
            "",
            10,
            Op::EnrollUser {
                user: u,
                activation_code: String::new(),
            },
        );
    }
    let allowed = RiskCheck {
        assessment_ids: vec!["risk-1".into(), "risk-2".into()],
        authentication_id: "auth-1".into(),
        authentication_matched: true,
        verdict: Some(Verdict::Allow),
        reasons: vec![],
        failed_open: false,
        failure: String::new(),
    };
    let denied = RiskCheck {
        assessment_ids: vec!["risk-3".into()],
        verdict: Some(Verdict::Deny),
        reasons: vec![FiredRule {
            rule: "payee.blocked".into(),
            detail: "payee Mallory is blocked".into(),
            verdict: Verdict::Deny,
        }],
        ..Default::default()
    };
    // A refusal changes no state: the authorization stays unused.
    assert_eq!(
        sm.run(
            "",
            20,
            Op::RecordUserEvent {
                user_id: "alice".into(),
                event: UserEvent::SignRefused {
                    device_id: "dev-alice".into(),
                    tx_hash: [7; 32],
                    risk: denied.clone(),
                    refusal: "denied".into(),
                },
            },
        ),
        CommandResult::Recorded
    );
    assert!(sm.view().ledger(&[7; 32]).unwrap().is_none());
    assert_eq!(
        sm.run(
            "sign-1",
            21,
            Op::ConsumeChecked {
                user_id: "alice".into(),
                device_id: "dev-alice".into(),
                tx_hash: [8; 32],
                expires_at: 500,
                risk: Some(allowed.clone()),
            },
        ),
        CommandResult::Consumed
    );
    assert!(sm.view().ledger(&[8; 32]).unwrap().is_some());
    // The same transaction again is a replay, whatever the risk record says.
    assert!(matches!(
        sm.run(
            "sign-2",
            22,
            Op::ConsumeChecked {
                user_id: "alice".into(),
                device_id: "dev-alice".into(),
                tx_hash: [8; 32],
                expires_at: 500,
                risk: None,
            },
        ),
        CommandResult::Rejected(Rejection::AuthorizationUsed { .. })
    ));
    sm.run(
        "",
        23,
        Op::RecordUserEvent {
            user_id: "alice2".into(),
            event: UserEvent::FaceEnrolled,
        },
    );

    let trail = sm.view().user_audit("alice", 100).unwrap();
    let actions: Vec<&str> = trail.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        ["enroll", "sign_refused", "sign", "sign"],
        "{trail:?}"
    );
    assert_eq!(trail[1].risk.as_ref(), Some(&denied));
    assert_eq!(trail[1].tx_hash, Some([7; 32]));
    assert_eq!(trail[2].risk.as_ref(), Some(&allowed));
    assert_eq!(trail[2].outcome, "ok");
    assert!(trail[3].outcome.contains("AuthorizationUsed"), "{trail:?}");
    assert!(trail.windows(2).all(|w| w[0].seq < w[1].seq));
    // Another user whose id starts with "alice" has only their own lines.
    let other = sm.view().user_audit("alice2", 100).unwrap();
    let actions: Vec<&str> = other.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["enroll", "face_enroll"]);
    // The newest lines when limited, oldest first.
    let last = sm.view().user_audit("alice", 2).unwrap();
    assert_eq!(last, trail[2..].to_vec());
    // The cluster-wide trail names the decision ids too.
    let all = sm.view().audit_tail(100).unwrap();
    assert!(
        all.iter()
            .any(|a| a.action.contains("risk-3") && a.action.contains("payee.blocked")),
        "{all:?}"
    );
}

#[test]
fn a_counter_that_is_not_8_bytes_is_a_typed_corruption() {
    let tree = Db::memory().tree("sm").unwrap();
    let mut batch = Batch::new();
    let mut w = Writer {
        tree: &tree,
        batch: &mut batch,
    };
    assert_eq!(w.bump(keys::COUNT_SIGNATURES).unwrap(), 1);
    tree.insert(keys::COUNT_SIGNATURES, b"seven").unwrap();
    let mut w = Writer {
        tree: &tree,
        batch: &mut batch,
    };
    match w.bump(keys::COUNT_SIGNATURES) {
        Err(StoreError::Corrupt { key, reason }) => {
            assert_eq!(key, "m/count/signatures");
            assert!(reason.contains("not 8 bytes"), "{reason}");
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
}
