//! The messages a device signs: the authorization of one transaction, and the proof of
//! possession it gives when it registers. Both are short line-based texts like the canonical
//! transaction, signed with ECDSA P-256 over their SHA-256.

use crate::ecdsa::PublicKey;
use crate::validate::InvalidField;
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

/// The form of a device's authorization: the protocol's `AuthorizationFormat`, so that other
/// proofs (a WebAuthn assertion) can later stand beside the plain ECDSA signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationFormat {
    /// DER ECDSA P-256 over SHA-256 of [`authorization_message`]. Wire values 0 (unset, the
    /// form before the field existed) and 1.
    EcdsaP256Sha256,
    /// A WebAuthn assertion over the same message. Wire value 2, reserved: not verified yet,
    /// so every authorization in this form is refused.
    WebAuthn,
}

impl AuthorizationFormat {
    /// The request field that carries it.
    pub const FIELD: &'static str = "authorization.format";

    /// Reads the wire value; an unknown one is refused, naming the field.
    pub fn from_wire(value: i32) -> Result<Self, InvalidField> {
        match value {
            0 | 1 => Ok(Self::EcdsaP256Sha256),
            2 => Ok(Self::WebAuthn),
            other => Err(InvalidField::new(
                Self::FIELD,
                format!(
                    "is {other}, not a known AuthorizationFormat; send \
                     AUTHORIZATION_FORMAT_ECDSA_P256_SHA256 (1)"
                ),
            )),
        }
    }

    /// The wire value.
    pub fn to_wire(self) -> i32 {
        match self {
            Self::EcdsaP256Sha256 => 1,
            Self::WebAuthn => 2,
        }
    }
}

/// Why a device's authorization does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizationRefused {
    /// The request is malformed or uses a form this version does not verify.
    Invalid(InvalidField),
    /// The proof does not verify: another transaction, user or device, or another key.
    BadSignature,
}

/// Checks that `proof`, in `format`, is `device_key`'s approval of the transaction hashed to
/// `tx_hash` for `user_id` by `device_id`. The one place that knows how each format is
/// verified: the coordinator and the chip both call it.
pub fn verify_authorization(
    format: AuthorizationFormat,
    device_key: &PublicKey,
    user_id: &str,
    device_id: &str,
    tx_hash: &Digest,
    proof: &[u8],
) -> Result<(), AuthorizationRefused> {
    match format {
        AuthorizationFormat::EcdsaP256Sha256 => device_key
            .verify_message(&authorization_message(user_id, device_id, tx_hash), proof)
            .map_err(|_| AuthorizationRefused::BadSignature),
        AuthorizationFormat::WebAuthn => Err(AuthorizationRefused::Invalid(InvalidField::new(
            AuthorizationFormat::FIELD,
            "is AUTHORIZATION_FORMAT_WEBAUTHN, which is reserved and not supported yet; send \
             AUTHORIZATION_FORMAT_ECDSA_P256_SHA256 (1)",
        ))),
    }
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

    #[test]
    fn authorization_formats() {
        let key = crate::ecdsa::PrivateKey::generate();
        let h = [3u8; 32];
        let sig = key.sign_message(&authorization_message("alice", "dev-1", &h));
        for wire in [0, 1] {
            let format = AuthorizationFormat::from_wire(wire).unwrap();
            assert_eq!(format, AuthorizationFormat::EcdsaP256Sha256);
            verify_authorization(format, &key.public_key(), "alice", "dev-1", &h, &sig).unwrap();
            assert_eq!(
                verify_authorization(format, &key.public_key(), "alice", "dev-2", &h, &sig),
                Err(AuthorizationRefused::BadSignature)
            );
        }
        // WebAuthn is a known number, refused until it is implemented, even with a proof
        // that would verify as ECDSA.
        let webauthn = AuthorizationFormat::from_wire(2).unwrap();
        assert_eq!(webauthn.to_wire(), 2);
        match verify_authorization(webauthn, &key.public_key(), "alice", "dev-1", &h, &sig) {
            Err(AuthorizationRefused::Invalid(e)) => {
                assert_eq!(e.field, "authorization.format");
                assert!(e.reason.contains("not supported yet"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        for wire in [3, -1, i32::MAX] {
            let e = AuthorizationFormat::from_wire(wire).unwrap_err();
            assert_eq!(e.field, "authorization.format");
            assert!(e.reason.contains(&wire.to_string()), "{e}");
        }
    }
}
