//! Applying the device lifecycle: registering a device with the pending activation code,
//! counting wrong codes and burning the code at the limit, re-activation (a new code),
//! renewal of a device certificate, and revocation or removal of a device.
//!
//! Invariants kept here: a code registers at most one device, and is void after `limit`
//! wrong attempts, at its expiry, or when a newer code replaces it; a revoked device stays
//! listed (so its key is never bound again) and is never renewed.

use super::apply::{reject, take_rebinding, Writer};
use super::command::{Command, CommandResult, Op, Rejection};
use super::keys;
use super::model::{Activation, UserState};
use super::view::StateView;
use yunkey_store::StoreError;

/// Blanks the code in the stored result of the request that issued it. Since format 3 no
/// result holds one; an enrolment stored by format 2 still does, until its code is used or
/// superseded, here.
fn forget_code(view: &StateView, w: &mut Writer<'_>, request_id: &str) -> Result<(), StoreError> {
    if let Some(mut prior) = view.request(request_id)? {
        if let CommandResult::Enrolled {
            activation_code, ..
        } = &mut prior.result
        {
            if !activation_code.is_empty() {
                activation_code.clear();
                w.put(&keys::request(request_id), &prior);
            }
        }
    }
    Ok(())
}

/// Applies a device lifecycle command; any other command is refused (the caller dispatches
/// only these here).
pub(super) fn apply(
    view: &StateView,
    w: &mut Writer<'_>,
    cmd: &Command,
) -> Result<CommandResult, StoreError> {
    match &cmd.op {
        Op::RegisterDevice {
            user_id,
            code_sha256,
            device,
            rebinding,
        } => {
            let Some(mut user) = view.user(user_id)? else {
                return reject(Rejection::UnknownUser(user_id.clone()));
            };
            if user.state != UserState::Active {
                return reject(Rejection::UserRevoked(user_id.clone()));
            }
            if w.tree.get(&keys::device(&device.device_id))?.is_some() {
                return reject(Rejection::DeviceTaken(device.device_id.clone()));
            }
            let Some(activation) = user.activation.take() else {
                return reject(Rejection::ActivationInvalid);
            };
            if !yunkey_crypto::ct_eq(&activation.code_sha256, code_sha256)
                || activation.expires_at <= cmd.now
            {
                return reject(Rejection::ActivationInvalid);
            }
            if rebinding.binding_seq < user.binding_seq {
                return reject(Rejection::StaleBinding {
                    committed: user.binding_seq,
                });
            }
            forget_code(view, w, &activation.enroll_request_id)?;
            user.wrapped_key = rebinding.wrapped_key.clone();
            user.binding_seq = rebinding.binding_seq;
            user.devices.push(device.clone());
            w.put(&keys::user(user_id), &user);
            w.put(&keys::device(&device.device_id), user_id);
            w.delete(&keys::activation_failures(user_id));
            w.bump(keys::COUNT_DEVICES)?;
            Ok(CommandResult::DeviceRegistered {
                user_id: user_id.clone(),
                device_id: device.device_id.clone(),
            })
        }
        Op::RevokeDevice {
            user_id,
            device_id,
            reason,
            rebinding,
        } => {
            let Some(mut user) = view.user(user_id)? else {
                return reject(Rejection::UnknownUser(user_id.clone()));
            };
            let Some(device) = user.devices.iter_mut().find(|d| &d.device_id == device_id) else {
                return reject(Rejection::UnknownDevice);
            };
            if device.revoked_at.is_none() {
                device.revoked_at = Some(cmd.now);
                w.put(&keys::device_revocation(device_id), reason);
            }
            take_rebinding(&mut user, rebinding.as_ref());
            w.put(&keys::user(user_id), &user);
            Ok(CommandResult::DeviceRevoked)
        }
        Op::Reactivate {
            user_id,
            code_sha256,
            expires_at,
            rebinding,
        } => {
            let Some(mut user) = view.user(user_id)? else {
                return reject(Rejection::UnknownUser(user_id.clone()));
            };
            if user.state != UserState::Active {
                return reject(Rejection::UserRevoked(user_id.clone()));
            }
            if rebinding.binding_seq < user.binding_seq {
                return reject(Rejection::StaleBinding {
                    committed: user.binding_seq,
                });
            }
            if let Some(previous) = &user.activation {
                forget_code(view, w, &previous.enroll_request_id)?;
            }
            user.wrapped_key = rebinding.wrapped_key.clone();
            user.binding_seq = rebinding.binding_seq;
            user.activation = Some(Activation {
                code_sha256: *code_sha256,
                expires_at: *expires_at,
                enroll_request_id: cmd.request_id.clone(),
            });
            w.put(&keys::user(user_id), &user);
            w.delete(&keys::activation_failures(user_id));
            Ok(CommandResult::Reactivated)
        }
        Op::ActivationAttempt {
            user_id,
            code_sha256,
            limit,
        } => {
            let Some(mut user) = view.user(user_id)? else {
                return reject(Rejection::UnknownUser(user_id.clone()));
            };
            if user.state != UserState::Active {
                return reject(Rejection::UserRevoked(user_id.clone()));
            }
            let Some(activation) = &user.activation else {
                // Nothing pending to guess at (used, burnt, or never issued).
                return reject(Rejection::ActivationInvalid);
            };
            if activation.expires_at <= cmd.now {
                return reject(Rejection::ActivationInvalid);
            }
            if yunkey_crypto::ct_eq(&activation.code_sha256, code_sha256) {
                return Ok(CommandResult::ActivationAccepted);
            }
            let failures = view.activation_failures(user_id)?.saturating_add(1);
            let burnt = failures >= (*limit).max(1);
            if burnt {
                user.activation = None;
                w.put(&keys::user(user_id), &user);
                w.delete(&keys::activation_failures(user_id));
            } else {
                w.put(&keys::activation_failures(user_id), &failures);
            }
            Ok(CommandResult::ActivationFailureCounted { failures, burnt })
        }
        Op::RenewDevice {
            user_id,
            device_id,
            certificate,
        } => {
            let Some(mut user) = view.user(user_id)? else {
                return reject(Rejection::UnknownUser(user_id.clone()));
            };
            if user.state != UserState::Active {
                return reject(Rejection::UserRevoked(user_id.clone()));
            }
            let Some(device) = user.devices.iter_mut().find(|d| &d.device_id == device_id) else {
                return reject(Rejection::UnknownDevice);
            };
            if device.revoked_at.is_some() {
                return reject(Rejection::DeviceRevoked(device_id.clone()));
            }
            device.certificate = certificate.clone();
            w.put(&keys::user(user_id), &user);
            Ok(CommandResult::DeviceRenewed)
        }
        other => Err(StoreError::Corrupt {
            key: "command".into(),
            reason: format!("{other:?} is not a device command"),
        }),
    }
}
