//! Conversions from stored records to API messages.

use crate::state::{DeviceRecord, HolderRecord, UserRecord, UserState};
use yunkey_proto::v1::{Device, Holder, User, UserStatus};

/// The API view of a user (never any key material but the public key).
pub fn user(record: &UserRecord) -> User {
    User {
        user_id: record.user_id.clone(),
        algorithm: record.algorithm,
        public_key: record.public_key.clone(),
        certificate: record.certificate.clone(),
        status: match record.state {
            UserState::Active => UserStatus::Active,
            UserState::Revoked => UserStatus::Revoked,
        } as i32,
        devices: record.devices.iter().map(device).collect(),
        holders: record.holders.iter().map(holder).collect(),
        created_at: record.created_at,
        activation_pending: record.activation.is_some(),
    }
}

/// The API view of a device.
pub fn device(record: &DeviceRecord) -> Device {
    Device {
        device_id: record.device_id.clone(),
        name: record.name.clone(),
        public_key: record.public_key.clone(),
        certificate: record.certificate.clone(),
        registered_at: record.registered_at,
        revoked_at: record.revoked_at.unwrap_or_default(),
    }
}

/// A holder as the API shows it.
pub fn holder(record: &HolderRecord) -> Holder {
    Holder {
        chip_id: record.chip_id.clone(),
        key_handle: record.key_handle.clone(),
    }
}
