//! Applying the release commands: the code-signing key recorded once, releases recorded and
//! revoked, the release policy set. Every one is audited by the caller (`App::apply_command`).
//!
//! Invariants: the code-signing key is recorded at most once; a release record, once written,
//! changes only by being revoked, and a revocation is never undone (signing the same release
//! again does not reinstate it).

use super::apply::{reject, Writer};
use super::command::{Command, CommandResult, Op, Rejection};
use super::keys;
use super::view::StateView;
use yunkey_store::StoreError;

/// Applies an `InitCodeSigning`, `RecordRelease`, `RevokeRelease` or `SetReleasePolicy`;
/// any other command is refused (the caller dispatches only these here).
pub(super) fn apply(
    view: &StateView,
    w: &mut Writer<'_>,
    cmd: &Command,
) -> Result<CommandResult, StoreError> {
    match &cmd.op {
        Op::InitCodeSigning(record) => {
            if view.code_signing()?.is_some() {
                return reject(Rejection::CodeSigningExists);
            }
            w.put(keys::CODE_SIGNING, record);
            Ok(CommandResult::CodeSigningInitialized)
        }
        Op::RecordRelease(release) => {
            if let Some(existing) = view.release(&release.release_id)? {
                // The same release signed again: the first record stays (and so does its
                // revocation, if any).
                return Ok(CommandResult::ReleaseRecorded {
                    release_id: existing.release_id,
                });
            }
            w.put(&keys::release(&release.release_id), release);
            Ok(CommandResult::ReleaseRecorded {
                release_id: release.release_id.clone(),
            })
        }
        Op::RevokeRelease { release_id, reason } => {
            let Some(mut release) = view.release(release_id)? else {
                return reject(Rejection::UnknownRelease(release_id.clone()));
            };
            if release.revoked_at.is_none() {
                release.revoked_at = Some(cmd.now);
                release.revoked_reason = reason.clone();
                w.put(&keys::release(release_id), &release);
            }
            Ok(CommandResult::ReleaseRevoked)
        }
        Op::SetReleasePolicy(policy) => {
            w.put(keys::RELEASE_POLICY, policy);
            Ok(CommandResult::ReleasePolicySet)
        }
        other => Err(StoreError::Corrupt {
            key: "command".into(),
            reason: format!("{other:?} is not a release command"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{
        App, CodeSigningRecord, HolderRecord, KeyOwner, ReleasePolicy, ReleaseRecord, StateView,
    };
    use super::*;
    use yunkey_store::{Batch, Db, Tree};

    fn run(tree: &Tree, now: i64, op: Op) -> CommandResult {
        let mut batch = Batch::new();
        let cmd = Command {
            request_id: String::new(),
            actor: "operator:test".into(),
            now,
            op,
        };
        let r = App::default()
            .apply_command(tree, &mut batch, &cmd)
            .unwrap();
        tree.apply(batch).unwrap();
        r
    }

    fn release(id: &str) -> ReleaseRecord {
        ReleaseRecord {
            release_id: id.into(),
            version: (1, 2, 3),
            file_sha256: [5; 32],
            signature: vec![1],
            signed_at: 10,
            signed_by: "operator:test".into(),
            revoked_at: None,
            revoked_reason: String::new(),
        }
    }

    #[test]
    fn releases_are_recorded_revoked_for_good_and_audited() {
        let tree = Db::memory().tree("sm").unwrap();
        let view = StateView::new(tree.clone());
        assert_eq!(view.release_policy().unwrap(), ReleasePolicy::default());
        assert_eq!(
            run(&tree, 10, Op::RecordRelease(release("rel-1"))),
            CommandResult::ReleaseRecorded {
                release_id: "rel-1".into()
            }
        );
        assert_eq!(
            run(
                &tree,
                20,
                Op::RevokeRelease {
                    release_id: "rel-1".into(),
                    reason: "broken".into()
                }
            ),
            CommandResult::ReleaseRevoked
        );
        // Signing it again keeps the revocation; revoking again keeps the first time.
        run(&tree, 30, Op::RecordRelease(release("rel-1")));
        run(
            &tree,
            40,
            Op::RevokeRelease {
                release_id: "rel-1".into(),
                reason: "again".into(),
            },
        );
        let r = view.release("rel-1").unwrap().unwrap();
        assert_eq!(
            (r.revoked_at, r.revoked_reason.as_str()),
            (Some(20), "broken")
        );
        assert_eq!(
            run(
                &tree,
                50,
                Op::RevokeRelease {
                    release_id: "rel-2".into(),
                    reason: String::new()
                }
            ),
            CommandResult::Rejected(Rejection::UnknownRelease("rel-2".into()))
        );
        let policy = ReleasePolicy {
            min_version: Some((1, 3, 0)),
            require_release: true,
        };
        run(&tree, 60, Op::SetReleasePolicy(policy.clone()));
        assert_eq!(view.release_policy().unwrap(), policy);
        let audit = view.audit_tail(100).unwrap();
        let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
        assert_eq!(audit.len(), 6, "{actions:?}");
        assert!(
            actions[0].starts_with("RecordRelease(rel-1, 1.2.3"),
            "{actions:?}"
        );
        assert!(actions.contains(&"SetReleasePolicy(min 1.3.0, require true)"));
        assert!(audit[4].outcome.contains("UnknownRelease"), "{audit:?}");
    }

    #[test]
    fn the_code_signing_key_is_recorded_once_and_its_holders_change_like_the_cas() {
        let tree = Db::memory().tree("sm").unwrap();
        let view = StateView::new(tree.clone());
        let record = CodeSigningRecord {
            certificate: vec![1],
            wrapped_key: vec![2],
            holders: vec![HolderRecord {
                chip_id: "chip-1".into(),
                key_handle: "h1".into(),
            }],
        };
        assert_eq!(
            run(&tree, 1, Op::InitCodeSigning(record.clone())),
            CommandResult::CodeSigningInitialized
        );
        assert_eq!(
            run(&tree, 2, Op::InitCodeSigning(record.clone())),
            CommandResult::Rejected(Rejection::CodeSigningExists)
        );
        // Holder changes need the chip in the registry; without it they are refused and the
        // record stays as it was.
        let r = run(
            &tree,
            3,
            Op::AddHolder {
                owner: KeyOwner::CodeSigning,
                holder: HolderRecord {
                    chip_id: "chip-2".into(),
                    key_handle: "h2".into(),
                },
            },
        );
        assert_eq!(
            r,
            CommandResult::Rejected(Rejection::UnknownChip("chip-2".into()))
        );
        // The last holder is never removed.
        assert_eq!(
            run(
                &tree,
                4,
                Op::RemoveHolder {
                    owner: KeyOwner::CodeSigning,
                    chip_id: "chip-1".into(),
                    keep: 0
                }
            ),
            CommandResult::Rejected(Rejection::TooFewHolders { have: 1 })
        );
        assert_eq!(view.code_signing().unwrap(), Some(record));
    }
}
