//! The messages a device signs: the authorization of one transaction, and the proof of
//! possession it gives when it registers. Both are short line-based texts like the canonical
//! transaction, signed by the device key: ECDSA P-256 over their SHA-256, or SM2 over
//! `SM3(Z_A || message)` with the default distinguishing ID.

use crate::sig::{Algorithm, VerifyingKey};
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
    /// DER SM2 signature with SM3 over [`authorization_message`], under the default
    /// distinguishing ID ([`crate::sm2::DEFAULT_DISTID`]). Wire value 3.
    Sm2Sm3,
}

impl AuthorizationFormat {
    /// The request field that carries it.
    pub const FIELD: &'static str = "authorization.format";

    /// Reads the wire value; an unknown one is refused, naming the field.
    pub fn from_wire(value: i32) -> Result<Self, InvalidField> {
        match value {
            0 | 1 => Ok(Self::EcdsaP256Sha256),
            2 => Ok(Self::WebAuthn),
            3 => Ok(Self::Sm2Sm3),
            other => Err(InvalidField::new(
                Self::FIELD,
                format!(
                    "is {other}, not a known AuthorizationFormat; send \
                     AUTHORIZATION_FORMAT_ECDSA_P256_SHA256 (1) or AUTHORIZATION_FORMAT_SM2_SM3 (3)"
                ),
            )),
        }
    }

    /// The wire value.
    pub fn to_wire(self) -> i32 {
        match self {
            Self::EcdsaP256Sha256 => 1,
            Self::WebAuthn => 2,
            Self::Sm2Sm3 => 3,
        }
    }

    /// The protocol's name of the form.
    pub fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256Sha256 => "AUTHORIZATION_FORMAT_ECDSA_P256_SHA256 (1)",
            Self::WebAuthn => "AUTHORIZATION_FORMAT_WEBAUTHN (2)",
            Self::Sm2Sm3 => "AUTHORIZATION_FORMAT_SM2_SM3 (3)",
        }
    }

    /// The form a device key of `algorithm` signs in.
    pub fn for_key(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::EcdsaP256 => Self::EcdsaP256Sha256,
            Algorithm::Sm2 => Self::Sm2Sm3,
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
    device_key: &VerifyingKey,
    user_id: &str,
    device_id: &str,
    tx_hash: &Digest,
    proof: &[u8],
) -> Result<(), AuthorizationRefused> {
    match format {
        AuthorizationFormat::EcdsaP256Sha256 | AuthorizationFormat::Sm2Sm3 => {
            let expected = AuthorizationFormat::for_key(device_key.algorithm());
            if format != expected {
                return Err(AuthorizationRefused::Invalid(InvalidField::new(
                    AuthorizationFormat::FIELD,
                    format!(
                        "is {} but the device key is {}; send {}",
                        format.name(),
                        device_key.algorithm(),
                        expected.name()
                    ),
                )));
            }
            device_key
                .verify_message(&authorization_message(user_id, device_id, tx_hash), proof)
                .map_err(|_| AuthorizationRefused::BadSignature)
        }
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
        let key = crate::sig::SigningKey::generate(Algorithm::EcdsaP256);
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
        // An SM2 device signs in format 3; the format must name the key's algorithm, both ways.
        let sm2 = crate::sig::SigningKey::generate(Algorithm::Sm2);
        let sm2_sig = sm2.sign_message(&authorization_message("alice", "dev-1", &h));
        let f3 = AuthorizationFormat::from_wire(3).unwrap();
        verify_authorization(f3, &sm2.public_key(), "alice", "dev-1", &h, &sm2_sig).unwrap();
        for (format, k, s) in [
            (AuthorizationFormat::EcdsaP256Sha256, &sm2, &sm2_sig),
            (f3, &key, &sig),
        ] {
            match verify_authorization(format, &k.public_key(), "alice", "dev-1", &h, s) {
                Err(AuthorizationRefused::Invalid(e)) => {
                    assert!(e.reason.contains("device key is"), "{e}")
                }
                other => panic!("{other:?}"),
            }
        }
        // An SM2 signature is not a P-256 one under a P-256 key of the same scalar.
        let twin =
            crate::sig::SigningKey::from_secret_bytes(Algorithm::EcdsaP256, &sm2.to_secret_bytes())
                .unwrap();
        assert_eq!(
            verify_authorization(
                AuthorizationFormat::EcdsaP256Sha256,
                &twin.public_key(),
                "alice",
                "dev-1",
                &h,
                &sm2_sig
            ),
            Err(AuthorizationRefused::BadSignature)
        );
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
        for wire in [4, -1, i32::MAX] {
            let e = AuthorizationFormat::from_wire(wire).unwrap_err();
            assert_eq!(e.field, "authorization.format");
            assert!(e.reason.contains(&wire.to_string()), "{e}");
        }
    }
}
