//! Applying the sign path's commands: consuming a device authorization (the replay guard's
//! ledger), with what the risk checks decided, and recording refusals and face-template
//! events for the audit trail.

use super::apply::{reject, Writer};
use super::command::{Command, CommandResult, Op, Rejection};
use super::keys;
use super::model::{LedgerEntry, UserState};
use super::view::StateView;
use yunkey_store::StoreError;

pub(super) fn apply(
    view: &StateView,
    w: &mut Writer<'_>,
    cmd: &Command,
) -> Result<CommandResult, StoreError> {
    match &cmd.op {
        Op::ConsumeAuthorization {
            user_id,
            device_id,
            tx_hash,
            expires_at,
        }
        | Op::ConsumeChecked {
            user_id,
            device_id,
            tx_hash,
            expires_at,
            ..
        } => consume(view, w, cmd, user_id, device_id, tx_hash, *expires_at),
        // The audit records written for every command are the whole effect.
        Op::RecordUserEvent { .. } => Ok(CommandResult::Recorded),
        other => Err(StoreError::Corrupt {
            key: "command".into(),
            reason: format!("{other:?} is not a sign-path command"),
        }),
    }
}

fn consume(
    view: &StateView,
    w: &mut Writer<'_>,
    cmd: &Command,
    user_id: &str,
    device_id: &str,
    tx_hash: &[u8; 32],
    expires_at: i64,
) -> Result<CommandResult, StoreError> {
    // Read in place: of the user record only its state and devices count here.
    let refused = view.with_user(user_id, |user| {
        if user.state != UserState::Active {
            Some(Rejection::UserRevoked(user_id.to_owned()))
        } else if !user
            .devices
            .iter()
            .any(|d| d.device_id == device_id && d.revoked_at.is_none())
        {
            Some(Rejection::UnknownDevice)
        } else {
            None
        }
    })?;
    match refused {
        None => return reject(Rejection::UnknownUser(user_id.to_owned())),
        Some(Some(refusal)) => return reject(refusal),
        Some(None) => {}
    }
    // Once the cluster prunes, an entry expiring at or before the horizon may be gone: such
    // an authorization is refused here whatever the proposer's clock said (`apply_prune`).
    let horizon = view.pruned_until()?;
    if let Some(horizon) = horizon.filter(|h| expires_at <= *h) {
        return reject(Rejection::AuthorizationExpired {
            expires_at,
            horizon,
        });
    }
    if let Some(entry) = view.ledger(tx_hash)? {
        return reject(Rejection::AuthorizationUsed {
            consumed_at: entry.consumed_at,
        });
    }
    w.put(
        &keys::ledger(tx_hash),
        &LedgerEntry {
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            request_id: cmd.request_id.clone(),
            expires_at,
            consumed_at: cmd.now,
        },
    );
    if horizon.is_some() {
        w.mark(&keys::expiry(expires_at, tx_hash));
    }
    w.bump(keys::COUNT_SIGNATURES)?;
    Ok(CommandResult::Consumed)
}
