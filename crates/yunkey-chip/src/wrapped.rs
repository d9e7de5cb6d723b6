//! The wrapped-key format: a private key under the security domain's keys, readable and
//! checkable by every chip of the domain and by nothing else.
//!
//! ```text
//! 2 (1) || 1 (1, P-256) || purpose (1) || user_id (lp) || public_key_spki (lp)
//!   || binding (lp) || kwp (lp) || tag (32)
//! 3 (1) || algorithm (1) || purpose (1) || user_id (lp) || public_key_spki (lp)
//!   || distid (lp) || binding (lp) || kwp (lp) || tag (32)
//! ```
//! - Format 2 is a P-256 key; format 3 names any algorithm ([`Algorithm::to_byte`]) and
//!   carries the SM2 distinguishing ID the key signs under. P-256 keys are still written in
//!   format 2, so every chip of the version before SM2 reads them.
//! - `kwp` is AES-256 key wrap with padding (RFC 5649) of the key's PKCS#8 DER under the
//!   domain's key-encryption key ([`DomainKeys::kek`]), made and opened by the chip's
//!   [`crate::KeyCustody`] (a PKCS#11 token does it with `C_WrapKey`). SoftHSM2 2.6 zero-pads
//!   the PKCS#8 to a multiple of 8 bytes before wrapping; readers accept up to 7 zero bytes
//!   after the DER.
//! - `tag` is HMAC-SHA256 under the domain's MAC key over `"yunkey-wrapped-key/<format>"` and
//!   every byte before it. So the metadata (owner, purpose, public key, the [`Binding`]) is
//!   authenticated by the domain: a chip can read and trust it without unwrapping the key,
//!   and nobody outside the domain can alter it.
//! - In a domain whose cipher is SM4 ([`Cipher`]) the layout is the same, `kwp` is SM4 key
//!   wrap with padding and `tag` is HMAC-SM3, and the domain's keys are derived with HKDF-SM3
//!   instead of HKDF-SHA256 ([`DomainKeys::derive_with`]). The format does not name the
//!   cipher: the domain fixes it, and a key of a domain of the other cipher fails the tag.
//! - `lp` is a 2-byte big-endian length and the bytes.
//!
//! Format 1 (AES-GCM of the raw scalar, no binding) is no longer read: its keys carry no
//! device binding, so a chip could not decide who may use them. See `docs/operations.md`.

use crate::binding::Binding;
use crate::custody::Kek;
use crate::{ChipError, KeyPurpose};
use yunkey_crypto::cipher::Cipher;
use yunkey_crypto::keywrap;
use yunkey_crypto::seal::SealKey;
use yunkey_crypto::sig::{Algorithm, VerifyingKey};
use yunkey_crypto::validate::InvalidField;
use yunkey_crypto::CryptoError;
use zeroize::Zeroizing;

/// Format of a wrapped P-256 key.
pub const VERSION: u8 = 2;
/// Format of a wrapped key that names its algorithm (every SM2 key).
pub const VERSION_ALGORITHM: u8 = 3;
const TAG_LABEL: &[u8] = b"yunkey-wrapped-key/2";
const TAG_LABEL_ALGORITHM: &[u8] = b"yunkey-wrapped-key/3";
const TAG_LEN: usize = 32;

/// Appends `bytes` with a 2-byte big-endian length prefix.
pub(crate) fn put_lp(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).expect("fields are shorter than 64 KiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Splits a 2-byte length-prefixed field off the front of `input`.
pub(crate) fn take_lp(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = usize::from(u16::from_be_bytes(input.get(..2)?.try_into().ok()?));
    let field = input.get(2..2 + len)?;
    Some((field, &input[2 + len..]))
}

/// The keys a chip derives from the domain secret. Wiped on drop.
#[derive(Clone)]
pub struct DomainKeys {
    kek: Kek,
    mac: Zeroizing<Vec<u8>>,
}

impl DomainKeys {
    /// Derives the key-encryption and MAC keys of an AES-256 domain from its secret
    /// (HKDF-SHA256).
    pub fn derive(secret: &SealKey) -> Self {
        Self::derive_with(secret, Cipher::Aes256)
    }

    /// Derives the keys of a domain of `cipher` from its secret, with the suite's HKDF
    /// (HKDF-SHA256 for AES-256, HKDF-SM3 for SM4): a key-encryption key of the cipher's key
    /// length and a 32-byte MAC key.
    pub fn derive_with(secret: &SealKey, cipher: Cipher) -> Self {
        let derive = |info: &[u8], len| keywrap::derive(cipher, secret.expose(), info, len);
        Self {
            kek: Kek::new(cipher, derive(b"yunkey-domain-kek/2", cipher.key_len())),
            mac: derive(b"yunkey-domain-mac/2", 32),
        }
    }

    /// The key-encryption key the custody wraps keys under.
    pub fn kek(&self) -> &Kek {
        &self.kek
    }

    /// The domain's cipher.
    pub fn cipher(&self) -> Cipher {
        self.kek.cipher()
    }

    /// The domain's tag (HMAC-SHA256, or HMAC-SM3 in an SM4 domain) over `parts`.
    pub fn tag(&self, parts: &[&[u8]]) -> [u8; 32] {
        keywrap::hmac(self.cipher(), &self.mac, parts)
    }

    /// Checks a [`DomainKeys::tag`] in constant time.
    pub fn verify_tag(&self, parts: &[&[u8]], tag: &[u8]) -> Result<(), CryptoError> {
        keywrap::verify_hmac(self.cipher(), &self.mac, parts, tag)
    }
}

impl std::fmt::Debug for DomainKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DomainKeys(<redacted>)")
    }
}

/// A wrapped key whose tag verified: its metadata is what a chip of the domain wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// What the key may be used for.
    pub purpose: KeyPurpose,
    /// The owning user (empty for cluster keys).
    pub user_id: String,
    /// SubjectPublicKeyInfo DER of the key.
    pub public_key_spki: Vec<u8>,
    /// The SM2 distinguishing ID the key signs under (empty for P-256).
    pub distid: String,
    /// The binding when it was wrapped.
    pub binding: Binding,
    /// The custody's RFC 5649 wrap of the PKCS#8 key.
    pub kwp: Vec<u8>,
}

fn bad(reason: &str) -> ChipError {
    ChipError::Invalid(InvalidField::new("wrapped_key", reason))
}

impl WrappedKey {
    /// Encodes and tags the key under the domain's MAC key.
    pub fn seal(&self, keys: &DomainKeys) -> Vec<u8> {
        let p256 = self.algorithm == Algorithm::EcdsaP256;
        let (version, label) = if p256 {
            (VERSION, TAG_LABEL)
        } else {
            (VERSION_ALGORITHM, TAG_LABEL_ALGORITHM)
        };
        let mut out = vec![version, self.algorithm.to_byte(), self.purpose.to_byte()];
        put_lp(&mut out, self.user_id.as_bytes());
        put_lp(&mut out, &self.public_key_spki);
        if !p256 {
            put_lp(&mut out, self.distid.as_bytes());
        }
        put_lp(&mut out, &self.binding.encode());
        put_lp(&mut out, &self.kwp);
        let tag = keys.tag(&[label, &out]);
        out.extend_from_slice(&tag);
        out
    }

    /// The public key, with the distinguishing ID the key signs under.
    pub fn public_key(&self) -> Result<VerifyingKey, ChipError> {
        VerifyingKey::from_spki_der_as(self.algorithm, &self.public_key_spki, &self.distid)
            .map_err(|_| bad("carries a bad public key"))
    }

    /// Checks the tag under the domain's MAC key and reads the metadata. Fails with
    /// [`ChipError::Unseal`] for a key of another domain or one that was altered.
    pub fn open(keys: &DomainKeys, bytes: &[u8]) -> Result<Self, ChipError> {
        let label =
            match bytes.first() {
                Some(&VERSION) => TAG_LABEL,
                Some(&VERSION_ALGORITHM) => TAG_LABEL_ALGORITHM,
                Some(1) => return Err(bad(
                    "is in format 1 (before device binding), which this version no longer reads",
                )),
                Some(_) => return Err(bad("has an unknown format version")),
                None => return Err(bad("must not be empty")),
            };
        if bytes.len() < 3 + TAG_LEN {
            return Err(bad("is truncated"));
        }
        let (body, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        keys.verify_tag(&[label, body], tag)
            .map_err(|_| ChipError::Unseal {
                what: "wrapped key",
            })?;
        let algorithm =
            Algorithm::from_byte(body[1]).ok_or_else(|| bad("names an unknown algorithm"))?;
        if (body[0] == VERSION) != (algorithm == Algorithm::EcdsaP256) {
            return Err(bad("names an algorithm its format does not carry"));
        }
        let purpose =
            KeyPurpose::from_byte(body[2]).ok_or_else(|| bad("names an unknown purpose"))?;
        let (user, rest) = take_lp(&body[3..]).ok_or_else(|| bad("is truncated"))?;
        let (spki, rest) = take_lp(rest).ok_or_else(|| bad("is truncated"))?;
        let (distid, rest) = match algorithm {
            Algorithm::EcdsaP256 => (&[][..], rest),
            _ => take_lp(rest).ok_or_else(|| bad("is truncated"))?,
        };
        let (binding, rest) = take_lp(rest).ok_or_else(|| bad("is truncated"))?;
        let (kwp, rest) = take_lp(rest).ok_or_else(|| bad("is truncated"))?;
        if !rest.is_empty() {
            return Err(bad("has trailing bytes"));
        }
        let user_id = std::str::from_utf8(user)
            .map_err(|_| bad("has a non-UTF-8 user id"))?
            .to_owned();
        let distid = std::str::from_utf8(distid)
            .map_err(|_| bad("has a non-UTF-8 distinguishing ID"))?
            .to_owned();
        let key = Self {
            algorithm,
            purpose,
            user_id,
            public_key_spki: spki.to_vec(),
            distid,
            binding: Binding::decode(binding)?,
            kwp: kwp.to_vec(),
        };
        key.public_key()?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(algorithm: Algorithm) -> WrappedKey {
        WrappedKey {
            algorithm,
            purpose: KeyPurpose::User,
            user_id: "alice".into(),
            public_key_spki: yunkey_crypto::sig::SigningKey::generate(algorithm)
                .public_key()
                .to_spki_der(),
            distid: match algorithm {
                Algorithm::EcdsaP256 => String::new(),
                Algorithm::Sm2 => "alice@bank.example".into(),
            },
            binding: Binding {
                seq: 1,
                ..Binding::default()
            },
            kwp: vec![7; 40],
        }
    }

    #[test]
    fn round_trip_and_binding() {
        for algorithm in [Algorithm::EcdsaP256, Algorithm::Sm2] {
            round_trip(algorithm);
        }
    }

    fn round_trip(algorithm: Algorithm) {
        let keys = DomainKeys::derive(&SealKey::generate());
        let w = sample(algorithm);
        let bytes = w.seal(&keys);
        let format = match algorithm {
            Algorithm::EcdsaP256 => VERSION,
            Algorithm::Sm2 => VERSION_ALGORITHM,
        };
        assert_eq!(bytes[0], format);
        assert_eq!(WrappedKey::open(&keys, &bytes).unwrap(), w);
        // Another domain cannot read it as its own.
        let other = DomainKeys::derive(&SealKey::generate());
        assert!(matches!(
            WrappedKey::open(&other, &bytes),
            Err(ChipError::Unseal { .. })
        ));
        // Every byte is covered by the tag: flip each one and the open fails.
        for i in 0..bytes.len() {
            let mut forged = bytes.clone();
            forged[i] ^= 0x01;
            assert!(WrappedKey::open(&keys, &forged).is_err(), "byte {i}");
        }
        assert!(matches!(
            WrappedKey::open(&keys, &[1, 0, 0]),
            Err(ChipError::Invalid(_))
        ));
    }

    #[test]
    fn sm4_domain_derives_with_hkdf_sm3_and_tags_with_hmac_sm3() {
        let secret = SealKey::generate();
        let sm4 = DomainKeys::derive_with(&secret, Cipher::Sm4);
        let aes = DomainKeys::derive(&secret);
        assert_eq!((sm4.cipher(), aes.cipher()), (Cipher::Sm4, Cipher::Aes256));
        let hkdf = |cipher, info: &[u8], len| keywrap::derive(cipher, secret.expose(), info, len);
        assert_eq!(
            sm4.kek().expose(),
            &hkdf(Cipher::Sm4, b"yunkey-domain-kek/2", 16)[..]
        );
        // An AES-256 domain's keys are what they always were, so its wrapped keys still open.
        assert_eq!(
            aes.kek().expose(),
            &keywrap::derive_key(secret.expose(), b"yunkey-domain-kek/2")[..]
        );
        let w = sample(Algorithm::EcdsaP256);
        let bytes = w.seal(&sm4);
        let (body, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        let mac = hkdf(Cipher::Sm4, b"yunkey-domain-mac/2", 32);
        assert_eq!(tag, keywrap::hmac(Cipher::Sm4, &mac, &[TAG_LABEL, body]));
        assert_eq!(WrappedKey::open(&sm4, &bytes).unwrap(), w);
        // The same secret under the other cipher is another domain, both ways.
        assert!(matches!(
            WrappedKey::open(&aes, &bytes),
            Err(ChipError::Unseal { .. })
        ));
        assert!(matches!(
            WrappedKey::open(&sm4, &w.seal(&aes)),
            Err(ChipError::Unseal { .. })
        ));
        let debug = format!("{sm4:?} {:?}", sm4.kek());
        assert!(!debug.contains(&hex::encode(&mac[..])), "{debug}");
        assert!(!debug.contains(&hex::encode(sm4.kek().expose())), "{debug}");
    }
}
