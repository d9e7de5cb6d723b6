//! AES-256-GCM sealing with a context string bound in as associated data. Used for keys at
//! rest inside a chip (under its master key) and for keys wrapped under the domain key.
//!
//! Layout: `version (1) || nonce (12) || ciphertext+tag`.

use crate::CryptoError;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use std::fmt;
use zeroize::Zeroizing;

const VERSION: u8 = 1;

/// A 256-bit symmetric key, wiped on drop, never printed.
#[derive(Clone)]
pub struct SealKey(Zeroizing<[u8; 32]>);

impl SealKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        Self(Zeroizing::new(crate::random_bytes()))
    }

    /// A key from 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| CryptoError::Malformed("a seal key is 32 bytes"))?;
        Ok(Self(Zeroizing::new(arr)))
    }

    /// The raw key bytes (for sealing the key itself under another key).
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short public fingerprint of the key (not reversible), for naming a domain.
    pub fn fingerprint(&self) -> String {
        let mut input = b"yunkey-key-fingerprint/1".to_vec();
        input.extend_from_slice(&self.0[..]);
        hex::encode(&crate::sha256(&input)[..8])
    }

    /// Encrypts `plaintext`, binding `context`.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let cipher = Aes256Gcm::new_from_slice(&self.0[..]).expect("32-byte key");
        let nonce: [u8; 12] = crate::random_bytes();
        let ct = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .expect("AES-GCM encryption of in-memory data cannot fail");
        let mut out = Vec::with_capacity(1 + 12 + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypts what [`SealKey::seal`] produced with the same `context`.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < 1 + 12 + 16 || sealed[0] != VERSION {
            return Err(CryptoError::Unseal);
        }
        let cipher = Aes256Gcm::new_from_slice(&self.0[..]).expect("32-byte key");
        cipher
            .decrypt(
                &Nonce::from(<[u8; 12]>::try_from(&sealed[1..13]).expect("checked length")),
                Payload {
                    msg: &sealed[13..],
                    aad: context,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Unseal)
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open() {
        let key = SealKey::generate();
        let sealed = key.seal(b"ctx", b"secret");
        assert_eq!(&key.open(b"ctx", &sealed).unwrap()[..], b"secret");
        assert_eq!(key.open(b"other", &sealed), Err(CryptoError::Unseal));
        assert_eq!(
            SealKey::generate().open(b"ctx", &sealed),
            Err(CryptoError::Unseal)
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(key.open(b"ctx", &tampered), Err(CryptoError::Unseal));
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(format!("{key:?}"), "SealKey(<redacted>)");
    }
}
