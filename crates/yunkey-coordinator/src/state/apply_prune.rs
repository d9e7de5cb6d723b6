//! Applying [`Op::Prune`] (command format 3): forgetting consumed authorizations once no one
//! would accept them any more, with their requests' stored results.
//!
//! A ledger entry exists to refuse a second use of an authorization; once the authorization
//! has expired it is refused for that anyway. `Prune { horizon }` raises the state's horizon
//! (`m/pruned_until`, never lowered) and deletes up to [`PRUNE_BATCH`] entries expiring at or
//! before it, oldest first, found through the expiry index `x/`. From the first prune on, the
//! state machine itself refuses a consume of an authorization expiring at or before the
//! horizon (`apply_sign`), whatever the proposing coordinator's clock said, so deleting an
//! entry can never let its authorization be used twice.
//!
//! Consumes index their entry only once a horizon exists, so that every node, whatever build
//! it ran before, writes the same state for the same log. The entries consumed before the
//! first prune have no index entry: each prune also walks up to [`PRUNE_BATCH`] of them from
//! a cursor (`m/prune_sweep`), deleting the expired ones and indexing the others, until the
//! walk has passed the whole ledger once.
//!
//! A prune writes no audit record (like a probe: the coordinators propose one every few
//! seconds); the signatures it forgets keep theirs.

use super::apply::Writer;
use super::command::{CommandResult, PriorRequest};
use super::keys;
use super::model::LedgerEntry;
use super::view::StateView;
use serde::{Deserialize, Serialize};
use yunkey_store::StoreError;

/// Most ledger entries one prune deletes through the index, and most it walks in the sweep
/// of entries from before the first prune (so one entry's apply stays a few milliseconds).
pub const PRUNE_BATCH: usize = 2048;

/// How far the walk over the ledger entries from before the first prune got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sweep {
    /// Walked up to and including this tx hash.
    After([u8; 32]),
    /// The whole ledger was walked: every entry is indexed.
    Done,
}

pub(super) fn apply(
    view: &StateView,
    w: &mut Writer<'_>,
    horizon: i64,
) -> Result<CommandResult, StoreError> {
    let previous = view.pruned_until()?;
    let horizon = previous.map_or(horizon, |p| p.max(horizon));
    if previous != Some(horizon) {
        w.put(keys::PRUNED_UNTIL, &horizon);
    }
    let mut ledger = 0u64;
    let mut requests = 0u64;
    let mut forget = |w: &mut Writer<'_>, tx_hash: &[u8; 32], entry: &LedgerEntry| {
        w.delete(&keys::ledger(tx_hash));
        w.delete(&keys::expiry(entry.expires_at, tx_hash));
        ledger += 1;
        if !entry.request_id.is_empty() {
            let key = keys::request(&entry.request_id);
            // The request's result is the consume's (a request id names one request).
            let prior: Option<PriorRequest> = view.get(&key)?;
            if prior.is_some_and(|p| p.kind == "sign") {
                w.delete(&key);
                requests += 1;
            }
        }
        Ok::<_, StoreError>(())
    };

    // The index, oldest expiry first.
    let mut indexed = 0;
    let expired = w.tree.range(
        &keys::expiry(i64::MIN, &[0; 32]),
        Some(&keys::expiry_after(horizon)),
    );
    for item in expired.take(PRUNE_BATCH) {
        let (key, _) = item?;
        indexed += 1;
        let Some(tx_hash) = keys::expiry_tx_hash(&key) else {
            return Err(corrupt(&key, "expiry index key is not 8 + 32 bytes"));
        };
        match view.ledger(&tx_hash)? {
            Some(entry) => forget(w, &tx_hash, &entry)?,
            // Nothing to forget but the index entry itself.
            None => w.delete(&key),
        }
    }

    // The entries from before the first prune.
    let sweep = match view.get::<Sweep>(keys::PRUNE_SWEEP)? {
        Some(Sweep::Done) => None,
        Some(Sweep::After(hash)) => Some(next_key(&keys::ledger(&hash))),
        None => Some(keys::LEDGER_PREFIX.to_vec()),
    };
    let swept = match &sweep {
        None => true,
        Some(from) => {
            let mut walked = 0;
            let mut last = None;
            for item in w.tree.range(from, Some(&next_prefix(keys::LEDGER_PREFIX))) {
                if walked == PRUNE_BATCH {
                    break;
                }
                let (key, value) = item?;
                walked += 1;
                let tx_hash: [u8; 32] = key[keys::LEDGER_PREFIX.len()..]
                    .try_into()
                    .map_err(|_| corrupt(&key, "ledger key is not a 32-byte tx hash"))?;
                last = Some(tx_hash);
                let entry: LedgerEntry = super::codec::decode(&key, &value)?;
                let index = keys::expiry(entry.expires_at, &tx_hash);
                if w.tree.get(&index)?.is_some() {
                    continue; // consumed since the first prune: the index step's job
                }
                if entry.expires_at <= horizon {
                    forget(w, &tx_hash, &entry)?;
                } else {
                    w.mark(&index);
                }
            }
            let state = match last {
                Some(hash) if walked == PRUNE_BATCH => Sweep::After(hash),
                _ => Sweep::Done,
            };
            let done = state == Sweep::Done;
            w.put(keys::PRUNE_SWEEP, &state);
            done
        }
    };
    Ok(CommandResult::Pruned {
        horizon,
        ledger,
        requests,
        // Another prune right away would find more.
        more: indexed == PRUNE_BATCH || !swept,
    })
}

fn corrupt(key: &[u8], reason: &str) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.into(),
    }
}

/// The smallest key after `key`.
fn next_key(key: &[u8]) -> Vec<u8> {
    [key, &[0]].concat()
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
    use crate::state::{App, Command, DeviceRecord, Op, Rejection};
    use yunkey_store::{Batch, Db, Tree};

    fn run(tree: &Tree, request_id: &str, op: Op) -> CommandResult {
        let mut batch = Batch::new();
        let cmd = Command {
            request_id: request_id.into(),
            actor: "test".into(),
            now: 10,
            op,
        };
        let result = App.apply_command(tree, &mut batch, &cmd).unwrap();
        tree.apply(batch).unwrap();
        result
    }

    /// A state with user alice and her device `phone`.
    fn state() -> (Tree, StateView) {
        let tree = Db::memory().tree("sm").unwrap();
        let mut alice = crate::state::apply::tests::user("alice", "CODE");
        alice.devices.push(DeviceRecord {
            device_id: "phone".into(),
            name: String::new(),
            public_key: vec![],
            certificate: vec![],
            registered_at: 1,
            revoked_at: None,
        });
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

    fn prune(tree: &Tree, horizon: i64) -> CommandResult {
        run(tree, "", Op::Prune { horizon })
    }

    fn pruned(horizon: i64, ledger: u64, more: bool) -> CommandResult {
        CommandResult::Pruned {
            horizon,
            ledger,
            requests: ledger,
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
        assert_eq!(prune(&tree, 150), pruned(150, 1, false));
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
        let CommandResult::Pruned {
            ledger: first,
            more,
            ..
        } = prune(&tree, 500)
        else {
            panic!("a prune answers Pruned");
        };
        assert!(more, "the sweep walked one batch of {legacy} entries");
        let CommandResult::Pruned {
            ledger: second,
            more,
            ..
        } = prune(&tree, 500)
        else {
            panic!("a prune answers Pruned");
        };
        assert!(!more);
        assert_eq!(first + second, u64::from(legacy / 2));
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
}
