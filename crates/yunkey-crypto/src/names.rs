//! How yunkey certificates name what they bind. A user certificate carries the URI subject
//! alternative name `urn:yunkey:user:<user_id>`; a device certificate carries that and
//! `urn:yunkey:device:<device_id>`, and its common name is the device id. Chips read device
//! certificates with these names before they sign.

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
