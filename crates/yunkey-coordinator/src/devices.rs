//! Device registration: a device proves possession of its key and presents the one-time
//! activation code; it receives a certificate from the user CA that binds it to the user.

use crate::core::Core;
use crate::error::{CoordError, Result};
use crate::state::{CommandResult, DeviceRecord, Op, UserState};
use yunkey_crypto::ecdsa::PublicKey;
use yunkey_crypto::validate::{self, InvalidField};
use yunkey_crypto::{authz, ct_eq, sha256};
use yunkey_proto::v1::{RegisterDeviceRequest, RegisterDeviceResponse};

/// The device id of a device key: `dev-` and 20 hex digits of its SPKI's SHA-256.
pub fn device_id(spki: &[u8]) -> String {
    format!("dev-{}", hex::encode(&sha256(spki)[..10]))
}

/// Registers a user's first device.
pub async fn register(core: &Core, req: RegisterDeviceRequest) -> Result<RegisterDeviceResponse> {
    validate::identifier("user_id", &req.user_id)?;
    validate::text("activation_code", &req.activation_code, 64, false)?;
    validate::text("device_name", &req.device_name, 64, true)?;
    let device_key = PublicKey::from_spki_der(&req.device_public_key).map_err(|_| {
        InvalidField::new(
            "device_public_key",
            "is not a P-256 SubjectPublicKeyInfo (DER)",
        )
    })?;
    if req.proof.is_empty() || req.proof.len() > 72 {
        return Err(
            InvalidField::new("proof", "must be a DER ECDSA signature (8 to 72 bytes)").into(),
        );
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
    match &user.activation {
        Some(a) if ct_eq(&a.code_sha256, &code_sha256) && a.expires_at > crate::clock::now() => {}
        _ => return Err(CoordError::ActivationInvalid),
    }

    let (ca, ca_spki) = core.ca()?;
    let certificate = core
        .issuer
        .device_certificate(
            &ca,
            ca_spki,
            &req.user_id,
            &device_id,
            &req.device_public_key,
        )
        .await?;
    let device = DeviceRecord {
        device_id: device_id.clone(),
        name: req.device_name.clone(),
        public_key: req.device_public_key.clone(),
        certificate,
        registered_at: crate::clock::now(),
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
            },
        )
        .await?
    {
        CommandResult::DeviceRegistered { user_id, device_id } => {
            response(core, &user_id, &device_id)
        }
        other => Err(CoordError::Internal(format!("unexpected result {other:?}"))),
    }
}

fn response(core: &Core, user_id: &str, device_id: &str) -> Result<RegisterDeviceResponse> {
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
    let (ca, _) = core.ca()?;
    Ok(RegisterDeviceResponse {
        device: Some(crate::convert::device(device)),
        user_certificate_chain: vec![user.certificate.clone(), ca.certificate.clone()],
    })
}
