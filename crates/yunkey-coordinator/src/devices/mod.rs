//! Devices: registration, revocation and removal; re-activation and the count of wrong codes
//! ([`activation`]); the device channel's certificate check and renewal ([`channel`]).
//!
//! Registration: a device proves possession of its key and presents a one-time activation
//! code. The coordinator checks the code in Raft first (`ActivationAttempt`: wrong codes are
//! counted there and burn the code at the limit), but the decision is a chip's: a holder of
//! the user's key binds the device only if the code matches the hash sealed into the key's
//! binding at enrolment or re-activation (`ChipService.BindDevice`). The CA key, in a chip,
//! then certifies the device from the new wrapped key whose binding lists it; one Raft entry
//! commits device, certificate and binding; the other holders get the binding pushed.

pub mod activation;
pub mod channel;

pub use channel::{check_peer, renew};

use crate::core::Core;
use crate::error::{CoordError, Result};
use crate::state::{CommandResult, DeviceRecord, Op, UserState};
use yunkey_crypto::sig::VerifyingKey;
use yunkey_crypto::validate::{self, InvalidField};
use yunkey_crypto::{authz, sha256};
use yunkey_proto::v1::{
    BindDeviceRequest, RegisterDeviceRequest, RegisterDeviceResponse, RevokeBindingRequest,
    RevokeDeviceRequest, User,
};

pub use yunkey_crypto::names::device_id;

/// Registers a device of a user with a pending activation code.
pub async fn register(core: &Core, req: RegisterDeviceRequest) -> Result<RegisterDeviceResponse> {
    validate::identifier("user_id", &req.user_id)?;
    validate::text("activation_code", &req.activation_code, 64, false)?;
    validate::text("device_name", &req.device_name, 64, true)?;
    let device_key = VerifyingKey::from_spki_der(&req.device_public_key).map_err(|_| {
        InvalidField::new(
            "device_public_key",
            "is not a P-256 or SM2 SubjectPublicKeyInfo (DER)",
        )
    })?;
    if req.proof.is_empty() || req.proof.len() > 72 {
        return Err(InvalidField::new(
            "proof",
            "must be a DER ECDSA P-256 or SM2 signature (8 to 72 bytes)",
        )
        .into());
    }
    let message =
        authz::registration_message(&req.user_id, &req.activation_code, &req.device_public_key);
    device_key
        .verify_message(&message, &req.proof)
        .map_err(|_| {
            CoordError::BadAuthorization(
                "the proof of possession does not verify with device_public_key".into(),
            )
        })?;
    let device_id = device_id(&req.device_public_key);
    let request_id = crate::enroll::request_id(&req.request_id, || {
        format!("register-{}-{device_id}", req.user_id)
    })?;
    if core
        .prior(
            &request_id,
            "register_device",
            &[req.user_id.as_bytes(), device_id.as_bytes()],
        )?
        .is_some()
    {
        return response(core, &req.user_id, &device_id);
    }

    let user = core
        .view
        .user(&req.user_id)?
        .ok_or_else(|| CoordError::UserNotFound(req.user_id.clone()))?;
    if user.state != UserState::Active {
        return Err(CoordError::UserRevoked(req.user_id));
    }
    // A retry after success: the device is already there.
    if user.devices.iter().any(|d| d.device_id == device_id) {
        return response(core, &req.user_id, &device_id);
    }
    let code_sha256 = sha256(req.activation_code.as_bytes());
    activation::attempt(core, &user, &code_sha256).await?;
    activation::room_for_a_device(core, &user)?;

    let ca = core.ca_of_user(&user)?;
    // The decision: a holder binds the device against the code hash it sealed.
    let (bound_on, bound) = core
        .chips
        .first_answer(&user.holders, "the user's key", |chip, holder| {
            let request = BindDeviceRequest {
                key_handle: holder.key_handle,
                user_id: req.user_id.clone(),
                activation_code: req.activation_code.clone(),
                device_public_key: req.device_public_key.clone(),
                proof: req.proof.clone(),
            };
            async move { chip.bind_device(request).await }
        })
        .await?;
    let rebinding = crate::bindings::rebinding(&bound);
    let certificate = core
        .issuer
        .device_certificate(
            &ca,
            &rebinding.wrapped_key,
            &device_id,
            core.config.device_cert_validity_secs,
        )
        .await?;
    let device = DeviceRecord {
        device_id: device_id.clone(),
        name: req.device_name.clone(),
        public_key: req.device_public_key.clone(),
        certificate,
        registered_at: crate::clock::now(),
        revoked_at: None,
    };
    let actor = format!("device:{device_id}");
    match core
        .propose(
            &request_id,
            &actor,
            Op::RegisterDevice {
                user_id: req.user_id.clone(),
                code_sha256,
                device,
                rebinding: rebinding.clone(),
            },
        )
        .await?
    {
        CommandResult::DeviceRegistered { user_id, device_id } => {
            crate::bindings::push(core, &user_id, &user.holders, &bound_on.chip_id, &rebinding)
                .await;
            response(core, &user_id, &device_id)
        }
        other => Err(CoordError::Internal(format!("unexpected result {other:?}"))),
    }
}

pub(crate) fn response(
    core: &Core,
    user_id: &str,
    device_id: &str,
) -> Result<RegisterDeviceResponse> {
    let user = core
        .view
        .user(user_id)?
        .ok_or_else(|| CoordError::UserNotFound(user_id.to_owned()))?;
    let device = user
        .devices
        .iter()
        .find(|d| d.device_id == device_id)
        .ok_or_else(|| {
            CoordError::Internal(format!("device {device_id} committed but not applied here"))
        })?;
    let ca = core.ca_of_user(&user)?;
    Ok(RegisterDeviceResponse {
        device: Some(crate::convert::device(&core.view, device)?),
        user_certificate_chain: vec![user.certificate.clone(), ca.certificate.clone()],
    })
}

/// The refusal for a revoked or removed device, with the reason recorded.
pub fn revoked(core: &Core, user_id: &str, device_id: &str) -> CoordError {
    let reason = match core.view.device_revocation(device_id) {
        Ok(Some(reason)) => reason,
        _ => "revoked".to_owned(),
    };
    CoordError::DeviceRevoked {
        user_id: user_id.to_owned(),
        device_id: device_id.to_owned(),
        reason,
    }
}

/// How a revocation is recorded: `removed` or `revoked`, and the reason if one was given.
fn revocation_reason(remove: bool, reason: &str) -> String {
    let what = if remove { "removed" } else { "revoked" };
    if reason.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {reason}")
    }
}

/// Revokes one device of a user: a holder of the key revokes it in the binding (so that no
/// chip signs for it again, whoever asks), the revocation commits through Raft, and the other
/// holders get it pushed. If no holder answers, the revocation still commits and coordinators
/// refuse the device at once, but the chips do not know it until a holder is asked again
/// (revoking again does that); this is logged.
pub async fn revoke(core: &Core, actor: &str, req: RevokeDeviceRequest) -> Result<User> {
    validate::identifier("user_id", &req.user_id)?;
    validate::identifier("device_id", &req.device_id)?;
    validate::text("reason", &req.reason, 256, true)?;
    let request_id = crate::enroll::request_id(&req.request_id, || {
        format!("revoke-device-{}-{}", req.user_id, req.device_id)
    })?;
    let user = core
        .view
        .user(&req.user_id)?
        .ok_or_else(|| CoordError::UserNotFound(req.user_id.clone()))?;
    if !user.devices.iter().any(|d| d.device_id == req.device_id) {
        return Err(CoordError::UnknownDevice {
            user_id: req.user_id.clone(),
            device_id: req.device_id.clone(),
        });
    }
    let revoked = revoke_in_chips(core, &user, Some(&req.device_id)).await;
    core.propose(
        &request_id,
        actor,
        Op::RevokeDevice {
            user_id: req.user_id.clone(),
            device_id: req.device_id.clone(),
            reason: revocation_reason(req.remove, &req.reason),
            rebinding: revoked.as_ref().map(|(_, r)| r.clone()),
        },
    )
    .await?;
    if let Some((chip, r)) = revoked {
        crate::bindings::push(core, &req.user_id, &user.holders, &chip, &r).await;
    }
    let user = core
        .view
        .user(&req.user_id)?
        .ok_or_else(|| CoordError::UserNotFound(req.user_id.clone()))?;
    crate::convert::user(&core.view, &user)
}

/// Asks a holder to revoke the user (`device_id` `None`) or a device in the key's binding.
/// Returns the chip that did it and the new binding, or `None` if no holder answered (logged).
pub async fn revoke_in_chips(
    core: &Core,
    user: &crate::state::UserRecord,
    device_id: Option<&str>,
) -> Option<(String, crate::state::Rebinding)> {
    let revoked = core
        .chips
        .first_answer(&user.holders, "the user's key", |chip, holder| {
            let request = RevokeBindingRequest {
                key_handle: holder.key_handle,
                user_id: user.user_id.clone(),
                device_id: device_id.unwrap_or_default().to_owned(),
            };
            async move { chip.revoke_binding(request).await }
        })
        .await;
    match revoked {
        Ok((holder, resp)) => Some((holder.chip_id, crate::bindings::rebinding(&resp))),
        Err(e) => {
            tracing::warn!(
                user = %user.user_id,
                error = %e,
                "no holder took the revocation now; it commits anyway; revoke again to carry it to the chips"
            );
            None
        }
    }
}
