//! Authenticated sealing with a context string bound in as associated data: AES-256-GCM or
//! SM4-GCM ([`Cipher`]). Used for a soft chip's records at rest (under its master key) and,
//! always with AES-256, inside the domain envelope ([`crate::envelope`]).
//!
//! Layout: `version (1) || nonce (12) || ciphertext+tag (16)`. The version names the cipher, so
//! [`SealKey::open`] opens whatever a blob says it is, and blobs sealed before SM4 existed
//! (version 1) still open:
//! - 1: AES-256-GCM under the 32-byte key.
//! - 2: SM4-GCM (RFC 8998) under the 16-byte key HKDF-SM3(key, info `yunkey-seal-sm4/1`), so
//!   the same key bytes never serve two block ciphers.

use crate::cipher::Cipher;
use crate::CryptoError;
use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, AesGcm, Nonce};
use std::fmt;
use zeroize::Zeroizing;

/// SM4-GCM with a 96-bit nonce and a 128-bit tag (RFC 8998).
pub(crate) type Sm4Gcm = AesGcm<sm4::Sm4, U12>;

const AES256_GCM: u8 = 1;
const SM4_GCM: u8 = 2;
const SM4_INFO: &[u8] = b"yunkey-seal-sm4/1";

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

    /// Encrypts `plaintext` with AES-256-GCM, binding `context`.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.seal_with(Cipher::Aes256, context, plaintext)
    }

    /// Encrypts `plaintext` with `cipher`'s GCM, binding `context`.
    pub fn seal_with(&self, cipher: Cipher, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce: [u8; 12] = crate::random_bytes();
        let nonce = Nonce::<U12>::from(nonce);
        let payload = Payload {
            msg: plaintext,
            aad: context,
        };
        let (version, ct) = match cipher {
            Cipher::Aes256 => (
                AES256_GCM,
                Aes256Gcm::new_from_slice(&self.0[..])
                    .expect("32-byte key")
                    .encrypt(&nonce, payload),
            ),
            Cipher::Sm4 => (
                SM4_GCM,
                Sm4Gcm::new_from_slice(&self.sm4_key()[..])
                    .expect("16-byte key")
                    .encrypt(&nonce, payload),
            ),
        };
        let ct = ct.expect("GCM encryption of in-memory data cannot fail");
        let mut out = Vec::with_capacity(1 + 12 + ct.len());
        out.push(version);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypts what [`SealKey::seal`] or [`SealKey::seal_with`] produced with the same
    /// `context`, with the cipher the blob's version names.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < 1 + 12 + 16 {
            return Err(CryptoError::Unseal);
        }
        let nonce =
            &Nonce::<U12>::from(<[u8; 12]>::try_from(&sealed[1..13]).expect("checked length"));
        let payload = Payload {
            msg: &sealed[13..],
            aad: context,
        };
        let plain = match sealed[0] {
            AES256_GCM => Aes256Gcm::new_from_slice(&self.0[..])
                .expect("32-byte key")
                .decrypt(nonce, payload),
            SM4_GCM => Sm4Gcm::new_from_slice(&self.sm4_key()[..])
                .expect("16-byte key")
                .decrypt(nonce, payload),
            _ => return Err(CryptoError::Unseal),
        };
        plain.map(Zeroizing::new).map_err(|_| CryptoError::Unseal)
    }

    /// The cipher a sealed blob names, if it names a known one.
    pub fn cipher_of(sealed: &[u8]) -> Option<Cipher> {
        match *sealed.first()? {
            AES256_GCM => Some(Cipher::Aes256),
            SM4_GCM => Some(Cipher::Sm4),
            _ => None,
        }
    }

    fn sm4_key(&self) -> Zeroizing<Vec<u8>> {
        crate::keywrap::derive(Cipher::Sm4, &self.0[..], SM4_INFO, Cipher::Sm4.key_len())
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
        assert_eq!(SealKey::cipher_of(&sealed), Some(Cipher::Aes256));
    }

    #[test]
    fn sm4_gcm_seal_open_tamper_wrong_key() {
        let key = SealKey::generate();
        let sealed = key.seal_with(Cipher::Sm4, b"ctx", b"secret");
        assert_eq!(sealed[0], SM4_GCM);
        assert_eq!(sealed.len(), 1 + 12 + 6 + 16);
        assert_eq!(SealKey::cipher_of(&sealed), Some(Cipher::Sm4));
        assert_eq!(&key.open(b"ctx", &sealed).unwrap()[..], b"secret");
        assert_eq!(key.open(b"other", &sealed), Err(CryptoError::Unseal));
        assert_eq!(
            SealKey::generate().open(b"ctx", &sealed),
            Err(CryptoError::Unseal)
        );
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 1;
            assert_eq!(key.open(b"ctx", &tampered), Err(CryptoError::Unseal), "{i}");
        }
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        // The version byte is authenticated by the key choice: an SM4 blob relabelled as
        // AES-256 does not open, and an AES-256 blob keeps opening beside SM4 ones.
        let mut relabelled = sealed.clone();
        relabelled[0] = AES256_GCM;
        assert_eq!(key.open(b"ctx", &relabelled), Err(CryptoError::Unseal));
        let aes = key.seal(b"ctx", b"older");
        assert_eq!(&key.open(b"ctx", &aes).unwrap()[..], b"older");
        assert_eq!(key.open(b"ctx", &[9; 40]), Err(CryptoError::Unseal));
    }

    #[test]
    fn sm4_gcm_rfc8998_vector() {
        // RFC 8998, appendix A.1 (SM4-GCM).
        let key = hex::decode("0123456789ABCDEFFEDCBA9876543210").unwrap();
        let iv = hex::decode("00001234567800000000ABCD").unwrap();
        let aad = hex::decode("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2").unwrap();
        let plain = hex::decode(concat!(
            "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD",
            "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"
        ))
        .unwrap();
        let out = Sm4Gcm::new_from_slice(&key)
            .unwrap()
            .encrypt(
                &Nonce::<U12>::from(<[u8; 12]>::try_from(&iv[..]).unwrap()),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .unwrap();
        assert_eq!(
            hex::encode_upper(&out),
            concat!(
                "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735",
                "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D",
                "83DE3541E4C2B58177E065A9BF7B62EC"
            )
        );
    }
}
