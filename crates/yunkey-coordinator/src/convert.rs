//! Conversions from stored records to API messages.

use crate::error::Result;
use crate::state::{DeviceRecord, HolderRecord, StateView, UserRecord, UserState};
use yunkey_proto::v1::{Device, Holder, User, UserStatus};

/// The API view of a user (never any key material but the public key).
pub fn user(view: &StateView, record: &UserRecord) -> Result<User> {
    Ok(User {
        user_id: record.user_id.clone(),
        algorithm: record.algorithm,
        public_key: record.public_key.clone(),
        certificate: record.certificate.clone(),
        status: match record.state {
            UserState::Active => UserStatus::Active,
            UserState::Revoked => UserStatus::Revoked,
        } as i32,
        devices: record
            .devices
            .iter()
            .map(|d| device(view, d))
            .collect::<Result<_>>()?,
        holders: record.holders.iter().map(holder).collect(),
        created_at: record.created_at,
        activation_pending: record
            .activation
            .as_ref()
            .is_some_and(|a| a.expires_at > crate::clock::now()),
        distinguishing_id: view.user_distid(record)?,
    })
}

/// The API view of a device.
pub fn device(view: &StateView, record: &DeviceRecord) -> Result<Device> {
    let revoked_reason = match record.revoked_at {
        Some(_) => view
            .device_revocation(&record.device_id)?
            .unwrap_or_else(|| "revoked".to_owned()),
        None => String::new(),
    };
    Ok(Device {
        device_id: record.device_id.clone(),
        name: record.name.clone(),
        public_key: record.public_key.clone(),
        certificate: record.certificate.clone(),
        registered_at: record.registered_at,
        revoked_at: record.revoked_at.unwrap_or_default(),
        revoked_reason,
        certificate_expires_at: yunkey_net::role::certificate_not_after(&record.certificate)
            .unwrap_or_default(),
    })
}

/// A holder as the API shows it.
pub fn holder(record: &HolderRecord) -> Holder {
    Holder {
        chip_id: record.chip_id.clone(),
        key_handle: record.key_handle.clone(),
    }
}
