//! The messages a device signs: the authorization of one transaction, and the proof of
//! possession it gives when it registers. Both are short line-based texts like the canonical
//! transaction, signed with ECDSA P-256 over their SHA-256.

use crate::Digest;

/// First line of an authorization message.
pub const AUTHZ_HEADER: &str = "yunkey-authz/1";
/// First line of a registration proof message.
pub const REGISTER_HEADER: &str = "yunkey-register/1";
/// First line of an operator's chip admission.
pub const ADMISSION_HEADER: &str = "yunkey-chip-admission/1";

/// The bytes a device signs to approve the transaction whose hash is `tx_hash` for `user_id`.
///
/// ```text
/// yunkey-authz/1\nuser_id:<user_id>\ndevice_id:<device_id>\ntx_hash:<hex>\n
/// ```
pub fn authorization_message(user_id: &str, device_id: &str, tx_hash: &Digest) -> Vec<u8> {
    format!(
        "{AUTHZ_HEADER}\nuser_id:{user_id}\ndevice_id:{device_id}\ntx_hash:{}\n",
        hex::encode(tx_hash)
    )
    .into_bytes()
}

/// The bytes a new device signs with its key to prove possession when it registers.
///
/// ```text
/// yunkey-register/1\nuser_id:<user_id>\nactivation_code_sha256:<hex>\ndevice_key_sha256:<hex>\n
/// ```
/// where the hashes are SHA-256 of the activation code's UTF-8 bytes and of the device's
/// SubjectPublicKeyInfo DER.
pub fn registration_message(
    user_id: &str,
    activation_code: &str,
    device_spki_der: &[u8],
) -> Vec<u8> {
    format!(
        "{REGISTER_HEADER}\nuser_id:{user_id}\nactivation_code_sha256:{}\ndevice_key_sha256:{}\n",
        hex::encode(crate::sha256(activation_code.as_bytes())),
        hex::encode(crate::sha256(device_spki_der))
    )
    .into_bytes()
}

/// The bytes an operator signs with the domain's operator key to admit a chip: only a chip
/// admitted this way receives the security domain from another chip.
///
/// ```text
/// yunkey-chip-admission/1\nchip_id:<chip_id>\ntransport_key_sha256:<hex>\n
/// ```
/// where the hash is SHA-256 of the chip's transport key (SubjectPublicKeyInfo DER).
pub fn chip_admission_message(chip_id: &str, transport_spki_der: &[u8]) -> Vec<u8> {
    format!(
        "{ADMISSION_HEADER}\nchip_id:{chip_id}\ntransport_key_sha256:{}\n",
        hex::encode(crate::sha256(transport_spki_der))
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_bind_every_input() {
        let h = [1u8; 32];
        let m = authorization_message("alice", "dev-1", &h);
        assert!(String::from_utf8(m.clone())
            .unwrap()
            .ends_with(&format!("{}\n", hex::encode(h))));
        assert_ne!(m, authorization_message("bob", "dev-1", &h));
        assert_ne!(m, authorization_message("alice", "dev-2", &h));
        assert_ne!(m, authorization_message("alice", "dev-1", &[2u8; 32]));
        let r = registration_message("alice", "CODE", b"key");
        assert_ne!(r, registration_message("alice", "CODF", b"key"));
        assert_ne!(r, registration_message("alice", "CODE", b"kez"));
        let a = chip_admission_message("chip-1", b"key");
        assert_ne!(a, chip_admission_message("chip-2", b"key"));
        assert_ne!(a, chip_admission_message("chip-1", b"kez"));
    }
}
