//! The device channel: every `TerminalService` call but registration and the clock comes with
//! the device's certificate as the TLS client certificate (TLS 1.3; the handshake checked its
//! chain to the user CA, and let an expired one through to be refused here with a status that
//! says so). Here it is checked against the state: it must be
//! the current certificate of a registered device of the user the request names, and the
//! device must not be revoked or removed. Renewal issues the device a new certificate.

use crate::core::Core;
use crate::error::{CoordError, Result};
use crate::state::{CommandResult, DeviceRecord, Op, UserState};
use yunkey_crypto::ct_eq;
use yunkey_crypto::validate;
use yunkey_proto::v1::{RegisterDeviceResponse, RenewDeviceRequest};

/// Checks the client certificate `leaf` (DER; `None`: none presented) of a call that names
/// `user_id` and `device_id`. Returns the device.
pub fn check_peer(
    core: &Core,
    leaf: Option<&[u8]>,
    user_id: &str,
    device_id: &str,
) -> Result<DeviceRecord> {
    let leaf = leaf.ok_or_else(|| {
        CoordError::DeviceCertificate(
            "the device channel needs the device certificate as the TLS client certificate".into(),
        )
    })?;
    let (cert_user, cert_device) =
        yunkey_net::role::device_of_certificate(leaf).ok_or_else(|| {
            CoordError::DeviceCertificate(
                "the client certificate is not a device certificate".into(),
            )
        })?;
    if let Some(not_after) = yunkey_net::role::certificate_not_after(leaf) {
        if not_after <= crate::clock::now() {
            return Err(CoordError::DeviceCertificate(format!(
                "the certificate of device {cert_device} expired at Unix time {not_after}; a \
                 device renews before expiry (yunkey terminal renew); now it needs a new \
                 activation code (yunkey user reactivate {cert_user}) and a new registration"
            )));
        }
    }
    if cert_user != user_id || cert_device != device_id {
        return Err(CoordError::DeviceCertificate(format!(
            "the client certificate is device {cert_device} of user {cert_user}; the request \
             names device {device_id} of user {user_id}: a device acts only for its own user"
        )));
    }
    let user = core
        .view
        .user(user_id)?
        .ok_or_else(|| CoordError::UserNotFound(user_id.to_owned()))?;
    if user.state != UserState::Active {
        return Err(CoordError::UserRevoked(user_id.to_owned()));
    }
    let device = user
        .devices
        .into_iter()
        .find(|d| d.device_id == device_id)
        .ok_or_else(|| CoordError::UnknownDevice {
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
        })?;
    if device.revoked_at.is_some() {
        return Err(super::revoked(core, user_id, device_id));
    }
    if !ct_eq(&device.certificate, leaf) {
        return Err(CoordError::DeviceCertificate(format!(
            "this certificate of device {device_id} was replaced by a renewal; use the current \
             one (the keystore holds it after `yunkey terminal renew`)"
        )));
    }
    Ok(device)
}

/// `TerminalService.RenewDevice`: a new certificate for the calling device (same key, a new
/// validity), committed through Raft; the old one is refused from then on.
pub async fn renew(
    core: &Core,
    leaf: Option<&[u8]>,
    req: RenewDeviceRequest,
) -> Result<RegisterDeviceResponse> {
    validate::identifier("user_id", &req.user_id)?;
    validate::identifier("device_id", &req.device_id)?;
    let request_id = crate::enroll::request_id(&req.request_id, || {
        format!(
            "renew-{}-{}",
            req.device_id,
            hex::encode(yunkey_crypto::random_bytes::<8>())
        )
    })?;
    check_peer(core, leaf, &req.user_id, &req.device_id)?;
    let user = core
        .view
        .user(&req.user_id)?
        .ok_or_else(|| CoordError::UserNotFound(req.user_id.clone()))?;
    let ca = core.ca_of_user(&user)?;
    let certificate = core
        .issuer
        .device_certificate(
            &ca,
            &user.wrapped_key,
            &req.device_id,
            core.config.device_cert_validity_secs,
        )
        .await?;
    let actor = format!("device:{}", req.device_id);
    match core
        .propose(
            &request_id,
            &actor,
            Op::RenewDevice {
                user_id: req.user_id.clone(),
                device_id: req.device_id.clone(),
                certificate,
            },
        )
        .await?
    {
        CommandResult::DeviceRenewed => super::response(core, &req.user_id, &req.device_id),
        other => Err(CoordError::Internal(format!("unexpected result {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn device_uri_prefixes_agree_with_the_transport() {
        assert_eq!(
            yunkey_net::role::USER_URI_PREFIX,
            yunkey_crypto::names::USER_URI_PREFIX
        );
        assert_eq!(
            yunkey_net::role::DEVICE_URI_PREFIX,
            yunkey_crypto::names::DEVICE_URI_PREFIX
        );
    }
}
