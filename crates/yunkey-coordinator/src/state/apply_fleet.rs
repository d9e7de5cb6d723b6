//! Applying the chip-fleet commands: holders added and dropped by the reconciler (repair,
//! restore, drain), and chips drained and removed by operators.
//!
//! Invariant kept here, whatever order proposals arrive in: a key never loses its last holder
//! (`RemoveHolder` keeps at least `max(keep, 1)`), a key has at most one holder per chip, and
//! a chip's `placed` count is the number of keys that list it, so `RemoveChip` can refuse a chip
//! that still holds any.

use super::apply::{reject, Writer};
use super::command::{Command, CommandResult, Op, Rejection};
use super::keys;
use super::model::{HolderRecord, KeyOwner};
use super::view::StateView;
use yunkey_crypto::sig::Algorithm;
use yunkey_store::StoreError;

/// Applies an `AddHolder`, `RemoveHolder`, `SetDraining` or `RemoveChip`; any other command
/// is refused (the caller dispatches only these here).
pub(super) fn apply(
    view: &StateView,
    w: &mut Writer<'_>,
    cmd: &Command,
) -> Result<CommandResult, StoreError> {
    match &cmd.op {
        Op::AddHolder { owner, holder } => {
            let Some(mut holders) = holders_of(view, owner)? else {
                return reject(unknown(owner));
            };
            if let Some(existing) = holders.iter().find(|h| h.chip_id == holder.chip_id) {
                return if existing.key_handle == holder.key_handle {
                    Ok(CommandResult::HoldersChanged)
                } else {
                    reject(Rejection::HolderExists {
                        chip_id: holder.chip_id.clone(),
                    })
                };
            }
            let Some(mut chip) = view.chip(&holder.chip_id)? else {
                return reject(Rejection::UnknownChip(holder.chip_id.clone()));
            };
            holders.push(holder.clone());
            chip.placed += 1;
            w.put(&keys::chip(&chip.chip_id), &chip);
            put_holders(view, w, owner, holders)?;
            Ok(CommandResult::HoldersChanged)
        }
        Op::RemoveHolder {
            owner,
            chip_id,
            keep,
        } => {
            let Some(mut holders) = holders_of(view, owner)? else {
                return reject(unknown(owner));
            };
            if !holders.iter().any(|h| &h.chip_id == chip_id) {
                return Ok(CommandResult::HoldersChanged);
            }
            let remaining = holders.len() as u32 - 1;
            if remaining < (*keep).max(1) {
                return reject(Rejection::TooFewHolders {
                    have: holders.len() as u32,
                });
            }
            holders.retain(|h| &h.chip_id != chip_id);
            if let Some(mut chip) = view.chip(chip_id)? {
                chip.placed = chip.placed.saturating_sub(1);
                w.put(&keys::chip(chip_id), &chip);
            }
            put_holders(view, w, owner, holders)?;
            Ok(CommandResult::HoldersChanged)
        }
        Op::SetDraining { chip_id, draining } => {
            if view.chip(chip_id)?.is_none() {
                return reject(Rejection::UnknownChip(chip_id.clone()));
            }
            match (draining, view.draining_since(chip_id)?) {
                (true, None) => w.put(&keys::draining(chip_id), &cmd.now),
                (false, Some(_)) => w.delete(&keys::draining(chip_id)),
                _ => {}
            }
            Ok(CommandResult::DrainingSet)
        }
        Op::RemoveChip { chip_id } => {
            let Some(chip) = view.chip(chip_id)? else {
                return reject(Rejection::UnknownChip(chip_id.clone()));
            };
            if chip.placed > 0 {
                return reject(Rejection::ChipNotEmpty { keys: chip.placed });
            }
            w.delete(&keys::chip(chip_id));
            w.delete(&keys::draining(chip_id));
            Ok(CommandResult::ChipRemoved)
        }
        other => Err(StoreError::Corrupt {
            key: "command".into(),
            reason: format!("{other:?} is not a chip-fleet command"),
        }),
    }
}

fn unknown(owner: &KeyOwner) -> Rejection {
    match owner {
        KeyOwner::User(id) => Rejection::UnknownUser(id.clone()),
        KeyOwner::Ca => Rejection::UnknownUser("the user CA".into()),
        KeyOwner::CodeSigning => Rejection::UnknownUser("the code-signing key".into()),
        KeyOwner::Sm2Ca => Rejection::UnknownUser("the SM2 user CA".into()),
    }
}

fn holders_of(view: &StateView, owner: &KeyOwner) -> Result<Option<Vec<HolderRecord>>, StoreError> {
    Ok(match owner {
        KeyOwner::User(id) => view.user(id)?.map(|u| u.holders),
        KeyOwner::Ca => view.ca()?.map(|c| c.holders),
        KeyOwner::CodeSigning => view.code_signing()?.map(|c| c.holders),
        KeyOwner::Sm2Ca => view.ca_of(Algorithm::Sm2)?.map(|c| c.holders),
    })
}

fn put_holders(
    view: &StateView,
    w: &mut Writer<'_>,
    owner: &KeyOwner,
    holders: Vec<HolderRecord>,
) -> Result<(), StoreError> {
    match owner {
        KeyOwner::User(id) => {
            if let Some(mut user) = view.user(id)? {
                user.holders = holders;
                w.put(&keys::user(id), &user);
            }
        }
        KeyOwner::Ca => {
            if let Some(mut ca) = view.ca()? {
                ca.holders = holders;
                w.put(keys::CA, &ca);
            }
        }
        KeyOwner::CodeSigning => {
            if let Some(mut record) = view.code_signing()? {
                record.holders = holders;
                w.put(keys::CODE_SIGNING, &record);
            }
        }
        KeyOwner::Sm2Ca => {
            if let Some(mut ca) = view.ca_of(Algorithm::Sm2)? {
                ca.holders = holders;
                w.put(keys::SM2_CA, &ca);
            }
        }
    }
    Ok(())
}
