//! Applying commands. Deterministic: the same state and command give the same writes on
//! every node. Reads see the state before this entry; all writes go into one batch that the
//! Raft store applies atomically together with the applied index.

use super::codec::encode;
use super::command::{Command, CommandResult, Op, PriorRequest, Rejection};
use super::keys;
use super::model::{AuditRecord, Rebinding, UserState};
use super::model_risk::UserAuditRecord;
use super::view::StateView;
use yunkey_crypto::sig::Algorithm;
use yunkey_store::{Batch, StoreError, Tree};

/// The coordinator's state machine.
#[derive(Debug, Default, Clone)]
pub struct App {
    /// Where the audit trail's lines go when a prune takes them out of the state (`None`:
    /// they are dropped; only for tests and tools that keep no audit log).
    audit_log: Option<std::sync::Arc<crate::audit_log::AuditLog>>,
}

impl App {
    /// The state machine of a coordinator that keeps its audit log in `audit_log`.
    pub fn with_audit_log(audit_log: std::sync::Arc<crate::audit_log::AuditLog>) -> Self {
        Self {
            audit_log: Some(audit_log),
        }
    }

    /// Applies one command; see the module doc.
    pub fn apply_command(
        &self,
        tree: &Tree,
        batch: &mut Batch,
        cmd: &Command,
    ) -> Result<CommandResult, StoreError> {
        match &cmd.op {
            // A probe only exercises Raft: no state, no request record, no audit record (a
            // health check run every few seconds would otherwise grow the audit trail).
            Op::Probe => return Ok(CommandResult::Probed),
            // Housekeeping: no request record and no audit record either (see `apply_prune`).
            Op::Prune {
                horizon,
                audit_before,
            } => {
                let view = StateView::new(tree.clone());
                let limits = super::apply_prune::Limits {
                    horizon: *horizon,
                    audit_before: *audit_before,
                };
                let mut w = Writer { tree, batch };
                return super::apply_prune::apply(&view, &mut w, limits, self.audit_log.as_deref());
            }
            Op::Batch(commands) => return super::apply_batch::apply(self, tree, batch, commands),
            _ => {}
        }
        let view = StateView::new(tree.clone());
        let kind = cmd.op.kind();
        if !cmd.request_id.is_empty() {
            if let Some(prior) = view.request(&cmd.request_id)? {
                if prior.kind != kind || prior.fingerprint != cmd.op.fingerprint() {
                    return Ok(CommandResult::Rejected(Rejection::RequestIdReused {
                        first_kind: prior.kind,
                    }));
                }
                return Ok(prior.result);
            }
        }
        let mut w = Writer { tree, batch };
        let result = apply_op(&view, &mut w, cmd)?;
        let outcome = match &result {
            CommandResult::Rejected(r) => format!("rejected: {r:?}"),
            _ => "ok".to_owned(),
        };
        // Only successes are remembered: a rejection changed nothing, so a retry may
        // legitimately be evaluated again.
        if !cmd.request_id.is_empty() && !matches!(result, CommandResult::Rejected(_)) {
            w.put(
                &keys::request(&cmd.request_id),
                &PriorRequest {
                    kind: kind.to_owned(),
                    fingerprint: cmd.op.fingerprint(),
                    result: result.clone(),
                },
            );
        }
        let seq = w.bump(keys::AUDIT_SEQ)? - 1;
        if let Some(user_id) = cmd.op.user_id() {
            // Once the cluster prunes, the record names its user line (`apply_prune`).
            if view.pruned_until()?.is_some() {
                w.put(&keys::audit_user(seq), &user_id.to_owned());
            }
            w.put(
                &keys::user_audit(user_id, seq),
                &UserAuditRecord {
                    seq,
                    at: cmd.now,
                    actor: cmd.actor.clone(),
                    action: kind.to_owned(),
                    outcome: outcome.clone(),
                    tx_hash: cmd.op.tx_hash(),
                    risk: cmd.op.risk().cloned(),
                },
            );
        }
        w.put(
            &keys::audit(seq),
            &AuditRecord {
                at: cmd.now,
                actor: cmd.actor.clone(),
                action: format!("{:?}", cmd.op),
                outcome,
            },
        );
        Ok(result)
    }
}

pub(super) struct Writer<'a> {
    pub(super) tree: &'a Tree,
    batch: &'a mut Batch,
}

impl Writer<'_> {
    pub(super) fn put<T: serde::Serialize>(&mut self, key: &[u8], value: &T) {
        self.batch.insert(key, encode(value));
    }

    /// Writes a key with an empty value (an index entry).
    pub(super) fn mark(&mut self, key: &[u8]) {
        self.batch.insert(key, Vec::new());
    }

    pub(super) fn delete(&mut self, key: &[u8]) {
        self.batch.remove(key);
    }

    /// Increments a counter and returns its new value.
    pub(super) fn bump(&mut self, key: &[u8]) -> Result<u64, StoreError> {
        let current = match self.tree.get_with(key, |v| <[u8; 8]>::try_from(v).ok())? {
            Some(Some(bytes)) => u64::from_be_bytes(bytes),
            Some(None) => {
                return Err(StoreError::Corrupt {
                    key: String::from_utf8_lossy(key).into_owned(),
                    reason: "counter is not 8 bytes".into(),
                })
            }
            None => 0,
        };
        self.batch.insert(key, (current + 1).to_be_bytes().to_vec());
        Ok(current + 1)
    }
}

/// Takes a chip's newer binding of the user's key (an older one changes nothing: chips merge
/// bindings, so the newest committed wrapped key carries every change).
pub(super) fn take_rebinding(user: &mut crate::state::UserRecord, rebinding: Option<&Rebinding>) {
    if let Some(r) = rebinding.filter(|r| r.binding_seq > user.binding_seq) {
        user.wrapped_key = r.wrapped_key.clone();
        user.binding_seq = r.binding_seq;
    }
}

pub(super) fn reject(r: Rejection) -> Result<CommandResult, StoreError> {
    Ok(CommandResult::Rejected(r))
}

/// Writes a new user (checked not to exist) and counts its key's placement.
fn enroll_user(
    view: &StateView,
    w: &mut Writer<'_>,
    user: &super::model::UserRecord,
) -> Result<CommandResult, StoreError> {
    for holder in &user.holders {
        if let Some(mut chip) = view.chip(&holder.chip_id)? {
            chip.placed += 1;
            w.put(&keys::chip(&chip.chip_id), &chip);
        }
    }
    w.put(&keys::user(&user.user_id), user);
    w.bump(keys::COUNT_USERS)?;
    // The code itself is never stored (entries before format 3 carried it: dropped).
    Ok(CommandResult::Enrolled {
        user_id: user.user_id.clone(),
        activation_code: String::new(),
    })
}

fn apply_op(
    view: &StateView,
    w: &mut Writer<'_>,
    cmd: &Command,
) -> Result<CommandResult, StoreError> {
    match &cmd.op {
        Op::AdmitChip {
            chip,
            domain_id,
            operator_key,
        } => {
            match view.domain()? {
                Some(cluster) if &cluster != domain_id => {
                    return reject(Rejection::WrongDomain { cluster });
                }
                Some(_) => {}
                None => {
                    w.put(keys::DOMAIN, domain_id);
                    w.put(keys::OPERATOR_KEY, operator_key);
                }
            }
            let mut record = chip.clone();
            if let Some(existing) = view.chip(&chip.chip_id)? {
                record.placed = existing.placed;
                record.admitted_at = existing.admitted_at;
            }
            w.put(&keys::chip(&chip.chip_id), &record);
            Ok(CommandResult::ChipAdmitted)
        }
        Op::InitCa(ca) => {
            if view.ca()?.is_some() {
                return reject(Rejection::CaExists);
            }
            w.put(keys::CA, ca);
            Ok(CommandResult::CaInitialized)
        }
        Op::InitSm2Ca(ca) => {
            if view.ca_of(Algorithm::Sm2)?.is_some() {
                return reject(Rejection::CaExists);
            }
            w.put(keys::SM2_CA, ca);
            Ok(CommandResult::CaInitialized)
        }
        Op::EnrollUserWithId { user, distid, .. } => {
            if view.user(&user.user_id)?.is_some() {
                return reject(Rejection::UserExists(user.user_id.clone()));
            }
            w.put(&keys::user_distid(&user.user_id), distid);
            enroll_user(view, w, user)
        }
        Op::EnrollUser { user, .. } => {
            if view.user(&user.user_id)?.is_some() {
                return reject(Rejection::UserExists(user.user_id.clone()));
            }
            enroll_user(view, w, user)
        }
        Op::RevokeUser {
            user_id,
            reason,
            rebinding,
        } => {
            let Some(mut user) = view.user(user_id)? else {
                return reject(Rejection::UnknownUser(user_id.clone()));
            };
            user.state = UserState::Revoked;
            user.revoked_reason = Some(reason.clone());
            user.activation = None;
            take_rebinding(&mut user, rebinding.as_ref());
            w.put(&keys::user(user_id), &user);
            Ok(CommandResult::Revoked)
        }
        Op::ConsumeAuthorization { .. }
        | Op::ConsumeChecked { .. }
        | Op::RecordUserEvent { .. } => super::apply_sign::apply(view, w, cmd),
        Op::RegisterDevice { .. }
        | Op::RevokeDevice { .. }
        | Op::Reactivate { .. }
        | Op::ActivationAttempt { .. }
        | Op::RenewDevice { .. } => super::apply_devices::apply(view, w, cmd),
        Op::AddHolder { .. }
        | Op::RemoveHolder { .. }
        | Op::SetDraining { .. }
        | Op::RemoveChip { .. } => super::apply_fleet::apply(view, w, cmd),
        Op::InitCodeSigning(_)
        | Op::RecordRelease(_)
        | Op::RevokeRelease { .. }
        | Op::SetReleasePolicy(_) => super::apply_release::apply(view, w, cmd),
        Op::RecordNodeId(record) => {
            if let Some(first) = view.node_id(record.node_id)? {
                return reject(Rejection::NodeIdUsed {
                    node_id: record.node_id,
                    first_address: first.address,
                });
            }
            w.put(&keys::node_id(record.node_id), record);
            Ok(CommandResult::NodeIdRecorded)
        }
        // Answered in `apply_command` before any write.
        Op::Probe => Ok(CommandResult::Probed),
        Op::Prune { .. } => Err(StoreError::Corrupt {
            key: "command".into(),
            reason: "a prune reached apply_op".into(),
        }),
        Op::Batch(_) => reject(Rejection::NestedBatch),
    }
}

#[cfg(test)]
#[path = "apply_tests.rs"]
pub(super) mod tests;
