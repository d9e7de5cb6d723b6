//! How yunkey certificates name what they bind. A user certificate carries the URI subject
//! alternative name `urn:yunkey:user:<user_id>`; a device certificate carries that and
//! `urn:yunkey:device:<device_id>`, and its common name is the device id. Chips read device
//! issue certificates with these names; a device id is derived from the device key.

/// Prefix of the URI SAN naming a user.
pub const USER_URI_PREFIX: &str = "urn:yunkey:user:";
/// Prefix of the URI SAN naming a device.
pub const DEVICE_URI_PREFIX: &str = "urn:yunkey:device:";

/// The URI SAN for a user.
pub fn user_uri(user_id: &str) -> String {
    format!("{USER_URI_PREFIX}{user_id}")
}

/// The URI SAN for a device.
pub fn device_uri(device_id: &str) -> String {
    format!("{DEVICE_URI_PREFIX}{device_id}")
}

/// The device id of a device key: `dev-` and 20 hex digits of the SHA-256 of its
/// SubjectPublicKeyInfo DER. Coordinators and chips derive it the same way, so a caller cannot
/// name a device key with another device's id.
pub fn device_id(device_spki_der: &[u8]) -> String {
    format!("dev-{}", hex::encode(&crate::sha256(device_spki_der)[..10]))
}
