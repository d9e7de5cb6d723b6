//! The wrapped-key format: a private key sealed under the security domain's key, readable
//! by every chip of the domain (nothing chip-specific is bound in).
//!
//! ```text
//! version (1) || purpose (1) || user_id length (2, big-endian) || user_id || sealed scalar
//! ```
//! The scalar is sealed with AES-256-GCM ([`yunkey_crypto::seal`]) under the domain key with
//! associated data `"yunkey-wrapped-key" || version || purpose || user_id length || user_id`,
//! so the metadata cannot be changed without the unwrap failing.

use crate::{ChipError, KeyPurpose};
use yunkey_crypto::ecdsa::PrivateKey;
use yunkey_crypto::seal::SealKey;
use yunkey_crypto::validate::InvalidField;

/// Current format version.
pub const VERSION: u8 = 1;

/// Appends `bytes` with a 2-byte big-endian length prefix.
pub(crate) fn put_lp(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).expect("identifiers are at most 128 bytes");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Splits a 2-byte length-prefixed field off the front of `input`.
pub(crate) fn take_lp(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = usize::from(u16::from_be_bytes(input.get(..2)?.try_into().ok()?));
    let field = input.get(2..2 + len)?;
    Some((field, &input[2 + len..]))
}

fn aad(purpose: KeyPurpose, user_id: &str) -> Vec<u8> {
    let mut aad = b"yunkey-wrapped-key".to_vec();
    aad.push(VERSION);
    aad.push(purpose.to_byte());
    put_lp(&mut aad, user_id.as_bytes());
    aad
}

/// Wraps `key` under the domain key.
pub fn wrap(domain: &SealKey, purpose: KeyPurpose, user_id: &str, key: &PrivateKey) -> Vec<u8> {
    let secret = key.to_secret_bytes();
    let mut out = vec![VERSION, purpose.to_byte()];
    put_lp(&mut out, user_id.as_bytes());
    out.extend_from_slice(&domain.seal(&aad(purpose, user_id), &secret));
    out
}

/// Reads the metadata of a wrapped key without opening it.
pub fn metadata(wrapped: &[u8]) -> Result<(KeyPurpose, String, &[u8]), ChipError> {
    let bad = |reason: &str| ChipError::Invalid(InvalidField::new("wrapped_key", reason));
    match wrapped.first() {
        Some(&VERSION) => {}
        Some(_) => return Err(bad("has an unknown format version")),
        None => return Err(bad("must not be empty")),
    }
    let purpose = wrapped
        .get(1)
        .and_then(|b| KeyPurpose::from_byte(*b))
        .ok_or_else(|| bad("names an unknown purpose"))?;
    let (user, sealed) = take_lp(&wrapped[2..]).ok_or_else(|| bad("is truncated"))?;
    let user = std::str::from_utf8(user).map_err(|_| bad("has a non-UTF-8 user id"))?;
    Ok((purpose, user.to_owned(), sealed))
}

/// Opens a wrapped key; checks that it was wrapped for `purpose` and `user_id`.
pub fn unwrap(
    domain: &SealKey,
    wrapped: &[u8],
    purpose: KeyPurpose,
    user_id: &str,
) -> Result<PrivateKey, ChipError> {
    let (w_purpose, w_user, sealed) = metadata(wrapped)?;
    if w_purpose != purpose || w_user != user_id {
        return Err(ChipError::WrappedKeyMismatch);
    }
    let secret = domain
        .open(&aad(purpose, user_id), sealed)
        .map_err(|_| ChipError::Unseal {
            what: "wrapped key",
        })?;
    PrivateKey::from_secret_bytes(&secret).map_err(|_| ChipError::Unseal {
        what: "wrapped key",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let d = SealKey::generate();
        let k = PrivateKey::generate();
        let w = wrap(&d, KeyPurpose::User, "alice", &k);
        let back = unwrap(&d, &w, KeyPurpose::User, "alice").unwrap();
        assert_eq!(back.public_key(), k.public_key());
        assert_eq!(
            unwrap(&d, &w, KeyPurpose::User, "bob").unwrap_err(),
            ChipError::WrappedKeyMismatch
        );
        assert_eq!(
            unwrap(&d, &w, KeyPurpose::Ca, "alice").unwrap_err(),
            ChipError::WrappedKeyMismatch
        );
        assert!(matches!(
            unwrap(&SealKey::generate(), &w, KeyPurpose::User, "alice"),
            Err(ChipError::Unseal { .. })
        ));
        // Rewriting the metadata in place breaks the seal.
        let mut forged = w.clone();
        forged[1] = KeyPurpose::Ca.to_byte();
        assert!(matches!(
            unwrap(&d, &forged, KeyPurpose::Ca, "alice"),
            Err(ChipError::Unseal { .. })
        ));
    }
}
