//! Applying [`Op::Prune`] (command format 3): forgetting consumed authorizations once no one
//! would accept them any more, with their requests' stored results, and moving the audit
//! trail's older lines out of the state into every coordinator's audit log
//! ([`crate::audit_log`]).
//!
//! A ledger entry exists to refuse a second use of an authorization; once the authorization
//! has expired it is refused for that anyway. A prune raises the state's horizon
//! (`m/pruned_until`, never lowered) and deletes up to [`PRUNE_BATCH`] entries expiring at or
//! before it, oldest first, found through the expiry index `x/`. From the first prune on, the
//! state machine itself refuses a consume of an authorization expiring at or before the
//! horizon (`apply_sign`), whatever the proposing coordinator's clock said, so deleting an
//! entry can never let its authorization be used twice.
//!
//! The audit trail's records (`a/`) recorded before the prune's `audit_before` leave the
//! state in sequence order, up to [`PRUNE_BATCH`] per prune, each with its user's line
//! (`w/`, found through `z/`); the coordinator's [`AuditLog`] appends them before the entry's
//! writes apply.
//!
//! Indexes are written only once a horizon exists, so that every node, whatever build it ran
//! before, writes the same state for the same log. What came before the first prune has no
//! index entry: each prune walks up to [`PRUNE_BATCH`] more of it from a cursor ([`Sweep`],
//! one for the ledger and one for the users' lines), indexing it (or deleting an expired
//! ledger entry), until the walk has passed it all once. Audit records leave the state only
//! once the users' lines are all indexed.
//!
//! A prune writes no audit record (like a probe: the coordinators propose one every few
//! seconds); the signatures it forgets keep theirs.

use super::apply::Writer;
use super::command::{CommandResult, PriorRequest};
use super::keys;
use super::model::{AuditRecord, LedgerEntry};
use super::model_risk::UserAuditRecord;
use super::view::StateView;
use crate::audit_log::{AuditLog, Exported, UserLine};
use serde::{Deserialize, Serialize};
use yunkey_store::StoreError;

/// Most ledger entries one prune deletes through the index, most audit records it moves, and
/// most entries each sweep walks (so that one entry's apply stays a few milliseconds).
pub const PRUNE_BATCH: usize = 2048;

/// How far a walk over what came before the first prune got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sweep {
    /// Walked up to and including this key.
    After(Vec<u8>),
    /// All walked: every entry is indexed.
    Done,
}

/// What a prune forgets, from [`Op::Prune`](super::Op::Prune).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) horizon: i64,
    pub(super) audit_before: i64,
}

pub(super) fn apply(
    view: &StateView,
    w: &mut Writer<'_>,
    limits: Limits,
    audit_log: Option<&AuditLog>,
) -> Result<CommandResult, StoreError> {
    let previous = view.pruned_until()?;
    let horizon = previous.map_or(limits.horizon, |p| p.max(limits.horizon));
    if previous != Some(horizon) {
        w.put(keys::PRUNED_UNTIL, &horizon);
    }
    let mut counts = Counts::default();

    // The ledger, through the index, oldest expiry first.
    let expired = w.tree.range(
        &keys::expiry(i64::MIN, &[0; 32]),
        Some(&keys::expiry_after(horizon)),
    );
    let mut indexed = 0;
    for item in expired.take(PRUNE_BATCH) {
        let (key, _) = item?;
        indexed += 1;
        let Some(tx_hash) = keys::expiry_tx_hash(&key) else {
            return Err(corrupt(&key, "expiry index key is not 8 + 32 bytes"));
        };
        match view.ledger(&tx_hash)? {
            Some(entry) => forget(view, w, &tx_hash, &entry, &mut counts)?,
            // Nothing to forget but the index entry itself.
            None => w.delete(&key),
        }
    }
    // Ledger entries from before the first prune.
    let ledger_swept = sweep(
        view,
        w,
        keys::PRUNE_SWEEP,
        keys::LEDGER_PREFIX,
        |w, key, value| {
            let tx_hash: [u8; 32] = key[keys::LEDGER_PREFIX.len()..]
                .try_into()
                .map_err(|_| corrupt(key, "ledger key is not a 32-byte tx hash"))?;
            let entry: LedgerEntry = super::codec::decode(key, value)?;
            let index = keys::expiry(entry.expires_at, &tx_hash);
            if w.tree.get(&index)?.is_some() {
                return Ok(()); // consumed since the first prune: the index step's job
            }
            if entry.expires_at <= horizon {
                forget(view, w, &tx_hash, &entry, &mut counts)
            } else {
                w.mark(&index);
                Ok(())
            }
        },
    )?;
    // Users' audit lines from before the first prune: each gets its `z/` entry.
    let lines_swept = sweep(
        view,
        w,
        keys::AUDIT_SWEEP,
        keys::USER_AUDIT_PREFIX,
        |w, key, value| {
            let line: UserAuditRecord = super::codec::decode(key, value)?;
            let user_id = key
                .get(keys::USER_AUDIT_PREFIX.len()..key.len().saturating_sub(9))
                .and_then(|u| std::str::from_utf8(u).ok())
                .ok_or_else(|| corrupt(key, "user audit key is not w/<user>/<seq>"))?;
            let index = keys::audit_user(line.seq);
            if w.tree.get(&index)?.is_none() {
                w.put(&index, &user_id.to_owned());
            }
            Ok(())
        },
    )?;
    // The audit trail, oldest first, once every user line is indexed (by the state before
    // this entry: the index lookups below read it).
    let mut moved = 0;
    let trail_waits = view.get::<Sweep>(keys::AUDIT_SWEEP)? != Some(Sweep::Done);
    if !trail_waits {
        let mut lines = Vec::new();
        let records = w
            .tree
            .range(keys::AUDIT_PREFIX, Some(&next_prefix(keys::AUDIT_PREFIX)));
        for item in records.take(PRUNE_BATCH) {
            let (key, value) = item?;
            let record: AuditRecord = super::codec::decode(&key, &value)?;
            if record.at >= limits.audit_before {
                break;
            }
            moved += 1;
            let seq = key
                .get(keys::AUDIT_PREFIX.len()..)
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| corrupt(&key, "audit key is not a/<seq>"))?;
            let user = match view.get::<String>(&keys::audit_user(seq))? {
                Some(user_id) => {
                    let line_key = keys::user_audit(&user_id, seq);
                    let line = view.get::<UserAuditRecord>(&line_key)?;
                    w.delete(&line_key);
                    w.delete(&keys::audit_user(seq));
                    line.map(|l| UserLine::new(user_id, l))
                }
                None => None,
            };
            w.delete(&key);
            lines.push(Exported {
                seq,
                record: Some(record),
                user,
            });
        }
        if let Some(log) = audit_log {
            log.append(&lines)
                .map_err(|e| StoreError::Engine(format!("the audit log: {e}")))?;
        }
        counts.audit = lines.len() as u64;
    }
    Ok(CommandResult::Pruned {
        horizon,
        ledger: counts.ledger,
        requests: counts.requests,
        audit: counts.audit,
        // Another prune right away would find more.
        more: indexed == PRUNE_BATCH
            || moved == PRUNE_BATCH
            || !ledger_swept
            || !lines_swept
            || trail_waits,
    })
}

#[derive(Default)]
struct Counts {
    ledger: u64,
    requests: u64,
    audit: u64,
}

/// Deletes a ledger entry, its index entry and its request's stored result.
fn forget(
    view: &StateView,
    w: &mut Writer<'_>,
    tx_hash: &[u8; 32],
    entry: &LedgerEntry,
    counts: &mut Counts,
) -> Result<(), StoreError> {
    w.delete(&keys::ledger(tx_hash));
    w.delete(&keys::expiry(entry.expires_at, tx_hash));
    counts.ledger += 1;
    if !entry.request_id.is_empty() {
        let key = keys::request(&entry.request_id);
        // The request's result is the consume's (a request id names one request).
        let prior: Option<PriorRequest> = view.get(&key)?;
        if prior.is_some_and(|p| p.kind == "sign") {
            w.delete(&key);
            counts.requests += 1;
        }
    }
    Ok(())
}

/// Walks up to [`PRUNE_BATCH`] entries under `prefix` after the cursor at `cursor_key`,
/// calling `each` on them, and moves the cursor; returns whether the walk is through (now or
/// before).
fn sweep(
    view: &StateView,
    w: &mut Writer<'_>,
    cursor_key: &[u8],
    prefix: &[u8],
    mut each: impl FnMut(&mut Writer<'_>, &[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<bool, StoreError> {
    let from = match view.get::<Sweep>(cursor_key)? {
        Some(Sweep::Done) => return Ok(true),
        Some(Sweep::After(key)) => [&key[..], &[0]].concat(),
        None => prefix.to_vec(),
    };
    let mut walked = 0;
    let mut last = None;
    for item in w.tree.range(&from, Some(&next_prefix(prefix))) {
        if walked == PRUNE_BATCH {
            break;
        }
        let (key, value) = item?;
        walked += 1;
        each(w, &key, &value)?;
        last = Some(key);
    }
    let state = match last {
        Some(key) if walked == PRUNE_BATCH => Sweep::After(key),
        _ => Sweep::Done,
    };
    let done = state == Sweep::Done;
    w.put(cursor_key, &state);
    Ok(done)
}

fn corrupt(key: &[u8], reason: &str) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.into(),
    }
}

/// The smallest key after every key starting with `prefix` (whose last byte is not 0xff).
fn next_prefix(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{App, Op, Rejection};
    use yunkey_store::{Db, Tree};

    fn run(tree: &Tree, request_id: &str, op: Op) -> CommandResult {
        run_at(&App::default(), tree, 10, request_id, op)
    }

    fn run_at(app: &App, tree: &Tree, now: i64, request_id: &str, op: Op) -> CommandResult {
        crate::state::apply::tests::apply_as_entry(app, tree, now, request_id, op)
    }

    /// A state with user alice and her device `phone`.
    fn state() -> (Tree, StateView) {
        let tree = Db::memory().tree("sm").unwrap();
        let mut alice = crate::state::apply::tests::user("alice", "CODE");
        alice
            .devices
            .push(crate::state::apply::tests::device("phone"));
        let enrol = Op::EnrollUser {
            user: alice,
            activation_code: String::new(),
        };
        assert!(matches!(
            run(&tree, "enroll-alice", enrol),
            CommandResult::Enrolled { .. }
        ));
        let view = StateView::new(tree.clone());
        (tree, view)
    }

    fn hash(n: u32) -> [u8; 32] {
        let mut h = [0; 32];
        h[..4].copy_from_slice(&n.to_be_bytes());
        h
    }

    fn consume(tree: &Tree, n: u32, expires_at: i64) -> CommandResult {
        let op = Op::ConsumeAuthorization {
            user_id: "alice".into(),
            device_id: "phone".into(),
            tx_hash: hash(n),
            expires_at,
        };
        run(tree, &format!("sign-{n}"), op)
    }

    /// A prune of the ledger only.
    fn prune(tree: &Tree, horizon: i64) -> CommandResult {
        let op = Op::Prune {
            horizon,
            audit_before: i64::MIN,
        };
        run(tree, "", op)
    }

    fn pruned(horizon: i64, ledger: u64, more: bool) -> CommandResult {
        CommandResult::Pruned {
            horizon,
            ledger,
            requests: ledger,
            audit: 0,
            more,
        }
    }

    #[test]
    fn a_prune_forgets_expired_authorizations_and_the_state_refuses_them_after() {
        let (tree, view) = state();
        for (n, expires_at) in [(1, 100), (2, 200), (3, 300)] {
            assert_eq!(consume(&tree, n, expires_at), CommandResult::Consumed);
        }
        assert_eq!(view.pruned_until().unwrap(), None);
        // Before the first prune nothing is indexed (an older build writes no index either).
        assert!(tree.scan_prefix(keys::EXPIRY_PREFIX).next().is_none());

        // The first prune finds the entries from before it by the sweep.
        // (More: the audit trail waits for the users' lines, indexed in this entry.)
        assert_eq!(prune(&tree, 150), pruned(150, 1, true));
        assert_eq!(view.pruned_until().unwrap(), Some(150));
        assert!(view.ledger(&hash(1)).unwrap().is_none());
        assert!(view.request("sign-1").unwrap().is_none());
        assert!(view.ledger(&hash(2)).unwrap().is_some());
        assert!(view.request("sign-2").unwrap().is_some());
        assert_eq!(
            view.get::<Sweep>(keys::PRUNE_SWEEP).unwrap(),
            Some(Sweep::Done)
        );

        // A replay of the forgotten authorization, or any expiring by the horizon, is refused
        // as expired by the state machine; the counter of signatures does not move.
        let signatures = view.signature_count().unwrap();
        for (n, expires_at) in [(1, 100), (4, 150)] {
            assert_eq!(
                consume(&tree, n, expires_at),
                CommandResult::Rejected(Rejection::AuthorizationExpired {
                    expires_at,
                    horizon: 150
                })
            );
        }
        assert_eq!(view.signature_count().unwrap(), signatures);
        // A used one that is still kept is refused as used, as before.
        assert!(matches!(
            run(
                &tree,
                "sign-2-again",
                Op::ConsumeAuthorization {
                    user_id: "alice".into(),
                    device_id: "phone".into(),
                    tx_hash: hash(2),
                    expires_at: 200,
                }
            ),
            CommandResult::Rejected(Rejection::AuthorizationUsed { .. })
        ));
        // A new one is consumed and indexed; a retry of its request gets its result.
        assert_eq!(consume(&tree, 5, 400), CommandResult::Consumed);
        assert_eq!(consume(&tree, 5, 400), CommandResult::Consumed);
        assert_eq!(view.signature_count().unwrap(), signatures + 1);

        // The horizon is never lowered.
        assert_eq!(prune(&tree, 100), pruned(150, 0, false));
        // The index finds what the sweep indexed and what was consumed since.
        assert_eq!(prune(&tree, 350), pruned(350, 2, false));
        assert_eq!(view.ledger_len().unwrap(), 1);
        assert!(view.ledger(&hash(5)).unwrap().is_some());
        assert_eq!(prune(&tree, 400), pruned(400, 1, false));
        assert_eq!(view.ledger_len().unwrap(), 0);
        assert!(tree.scan_prefix(keys::EXPIRY_PREFIX).next().is_none());
        // The enrolment's stored result is not a signature's: kept.
        assert!(view.request("enroll-alice").unwrap().is_some());
    }

    #[test]
    fn a_prune_does_a_bounded_batch_and_says_when_there_is_more() {
        let (tree, view) = state();
        let legacy = PRUNE_BATCH as u32 + 10;
        // Entries from before the first prune: every other one expired by the horizon.
        for n in 0..legacy {
            let expires_at = if n % 2 == 0 { 100 } else { 1_000 };
            assert_eq!(consume(&tree, n, expires_at), CommandResult::Consumed);
        }
        // Prunes until one says there is no more: the sweeps take two batches.
        let (mut forgotten, mut rounds) = (0, 0);
        loop {
            let CommandResult::Pruned { ledger, more, .. } = prune(&tree, 500) else {
                panic!("a prune answers Pruned");
            };
            forgotten += ledger;
            rounds += 1;
            if !more {
                break;
            }
            assert!(rounds < 5, "still more after {rounds} prunes");
        }
        assert!(rounds >= 2, "one prune walked all {legacy} entries");
        assert_eq!(forgotten, u64::from(legacy / 2));
        assert_eq!(view.ledger_len().unwrap(), u64::from(legacy / 2));

        // Entries consumed since, plus the swept ones: more than a batch expire at once.
        let batch = PRUNE_BATCH as u32;
        for n in legacy..legacy + batch {
            assert_eq!(consume(&tree, n, 900), CommandResult::Consumed);
        }
        let kept = u64::from(legacy / 2 + batch);
        assert_eq!(prune(&tree, 2_000), pruned(2_000, PRUNE_BATCH as u64, true));
        assert_eq!(
            prune(&tree, 2_000),
            pruned(2_000, kept - PRUNE_BATCH as u64, false)
        );
        assert_eq!(view.ledger_len().unwrap(), 0);
        assert_eq!(view.signature_count().unwrap(), u64::from(legacy + batch));
    }

    fn audit_prune(app: &App, tree: &Tree, audit_before: i64) -> CommandResult {
        let op = Op::Prune {
            horizon: 0,
            audit_before,
        };
        run_at(app, tree, 1_000, "", op)
    }

    fn audited(audit: u64, more: bool) -> CommandResult {
        CommandResult::Pruned {
            horizon: 0,
            ledger: 0,
            requests: 0,
            audit,
            more,
        }
    }

    #[test]
    fn old_audit_lines_move_to_the_audit_log_with_their_users_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = std::sync::Arc::new(AuditLog::open(dir.path()).unwrap());
        let app = App::with_audit_log(log.clone());
        // The same commands on a node without an audit log: the same state.
        let (tree, view) = state();
        let (bare, _) = state();
        let both = |now: i64, request_id: &str, op: Op| {
            let result = run_at(&app, &tree, now, request_id, op.clone());
            assert_eq!(run_at(&App::default(), &bare, now, request_id, op), result);
            result
        };
        let sign = |n: u32| Op::ConsumeAuthorization {
            user_id: "alice".into(),
            device_id: "phone".into(),
            tx_hash: hash(n),
            expires_at: 5_000,
        };
        // seq 0 is the enrolment (at 10); seq 1 a signature before the first prune.
        assert_eq!(both(20, "sign-1", sign(1)), CommandResult::Consumed);
        let first = Op::Prune {
            horizon: 0,
            audit_before: 100,
        };
        // The first prune indexes the users' lines; the trail moves from the next one.
        assert_eq!(both(1_000, "", first.clone()), audited(0, true));
        assert_eq!(both(30, "sign-2", sign(2)), CommandResult::Consumed);
        assert_eq!(both(200, "sign-3", sign(3)), CommandResult::Consumed);
        assert_eq!(view.user_audit("alice", 100).unwrap().len(), 4);

        // Lines before 100 leave the state (seqs 0, 1, 2); the one at 200 stays.
        assert_eq!(both(1_000, "", first.clone()), audited(3, false));
        let kept = view.user_audit("alice", 100).unwrap();
        assert_eq!(kept.iter().map(|l| l.seq).collect::<Vec<_>>(), [3]);
        assert_eq!(view.audit_tail(100).unwrap().len(), 1);
        assert!(tree
            .scan_prefix(b"z/")
            .all(|e| e.unwrap().0 == keys::audit_user(3)));
        assert_eq!(both(1_000, "", first), audited(0, false));
        let contents = |t: &Tree| t.range(b"", None).map(|e| e.unwrap()).collect::<Vec<_>>();
        assert_eq!(contents(&tree), contents(&bare));

        // Every coordinator's log holds them, chained, with the users' lines.
        let report = crate::audit_log::verify(dir.path()).unwrap();
        assert_eq!(
            (report.lines, report.first_seq, report.last_seq),
            (3, Some(0), Some(2))
        );
        let text = std::fs::read_to_string(
            std::fs::read_dir(dir.path())
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path(),
        )
        .unwrap();
        assert_eq!(text.matches(r#""action":"sign""#).count(), 2, "{text}");
        assert_eq!(text.matches(r#""action":"enroll""#).count(), 1, "{text}");
        // Applied again (a restarted node replays its log): nothing written twice.
        assert_eq!(audit_prune(&app, &tree, 300), audited(1, false));
        let report = crate::audit_log::verify(dir.path()).unwrap();
        assert_eq!((report.lines, report.last_seq), (4, Some(3)));
    }
}
