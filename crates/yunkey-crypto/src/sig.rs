//! Signature keys of either algorithm a user or a device may hold: ECDSA P-256 with SHA-256
//! ([`crate::ecdsa`]) or SM2 with SM3 ([`crate::sm2`]). One type for each side, so that the
//! code that stores, wraps, certifies and checks keys is written once and asks the key which
//! algorithm it is.
//!
//! "The digest" of a message is what a signature signs: SHA-256 of the message for P-256,
//! `SM3(Z_A || message)` for SM2 (with the key's distinguishing ID).

use crate::{ecdsa, sm2, CryptoError, Digest};
use std::fmt;
use zeroize::Zeroizing;

/// A signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA over NIST P-256 with SHA-256.
    EcdsaP256,
    /// SM2 with SM3 (GB/T 32918), with a distinguishing ID.
    Sm2,
}

impl Algorithm {
    /// One byte, for stored and wrapped formats (P-256 is 1, as it always was).
    pub fn to_byte(self) -> u8 {
        match self {
            Algorithm::EcdsaP256 => 1,
            Algorithm::Sm2 => 2,
        }
    }

    /// The inverse of [`Algorithm::to_byte`].
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Algorithm::EcdsaP256),
            2 => Some(Algorithm::Sm2),
            _ => None,
        }
    }

    /// The protocol's `Algorithm` value.
    pub fn to_proto(self) -> yunkey_proto::v1::Algorithm {
        match self {
            Algorithm::EcdsaP256 => yunkey_proto::v1::Algorithm::EcdsaP256,
            Algorithm::Sm2 => yunkey_proto::v1::Algorithm::Sm2,
        }
    }

    /// Reads the protocol's `Algorithm` (unset means P-256); an unknown value is refused.
    pub fn from_proto(value: i32) -> Option<Self> {
        match yunkey_proto::v1::Algorithm::try_from(value).ok()? {
            yunkey_proto::v1::Algorithm::Unspecified | yunkey_proto::v1::Algorithm::EcdsaP256 => {
                Some(Algorithm::EcdsaP256)
            }
            yunkey_proto::v1::Algorithm::Sm2 => Some(Algorithm::Sm2),
        }
    }

    /// The name operators type and read: `p256` or `sm2`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::EcdsaP256 => "p256",
            Algorithm::Sm2 => "sm2",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::EcdsaP256 => "ECDSA P-256",
            Algorithm::Sm2 => "SM2",
        })
    }
}

/// A public key of either algorithm.
#[derive(Clone, PartialEq, Eq)]
pub enum VerifyingKey {
    /// ECDSA P-256.
    P256(ecdsa::PublicKey),
    /// SM2, with its distinguishing ID.
    Sm2(sm2::PublicKey),
}

impl VerifyingKey {
    /// Parses SubjectPublicKeyInfo DER of either curve (an SM2 key gets the default ID).
    pub fn from_spki_der(der: &[u8]) -> Result<Self, CryptoError> {
        if let Ok(k) = ecdsa::PublicKey::from_spki_der(der) {
            return Ok(Self::P256(k));
        }
        sm2::PublicKey::from_spki_der(der)
            .map(Self::Sm2)
            .map_err(|_| CryptoError::BadPublicKey)
    }

    /// Parses SubjectPublicKeyInfo DER of one algorithm, and for SM2 sets the ID.
    pub fn from_spki_der_as(
        algorithm: Algorithm,
        der: &[u8],
        distid: &str,
    ) -> Result<Self, CryptoError> {
        match algorithm {
            Algorithm::EcdsaP256 => ecdsa::PublicKey::from_spki_der(der).map(Self::P256),
            Algorithm::Sm2 => sm2::PublicKey::from_spki_der(der)?
                .with_distid(distid)
                .map(Self::Sm2),
        }
    }

    /// Its algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::P256(_) => Algorithm::EcdsaP256,
            Self::Sm2(_) => Algorithm::Sm2,
        }
    }

    /// SubjectPublicKeyInfo DER.
    pub fn to_spki_der(&self) -> Vec<u8> {
        match self {
            Self::P256(k) => k.to_spki_der(),
            Self::Sm2(k) => k.to_spki_der(),
        }
    }

    /// Uncompressed SEC1 point (65 bytes).
    pub fn to_sec1(&self) -> Vec<u8> {
        match self {
            Self::P256(k) => k.to_sec1(),
            Self::Sm2(k) => k.to_sec1(),
        }
    }

    /// The digest a signature over `message` signs.
    pub fn digest(&self, message: &[u8]) -> Digest {
        match self {
            Self::P256(_) => crate::sha256(message),
            Self::Sm2(k) => k.digest(message),
        }
    }

    /// Verifies a DER signature over `message`.
    pub fn verify_message(&self, message: &[u8], signature_der: &[u8]) -> Result<(), CryptoError> {
        match self {
            Self::P256(k) => k.verify_message(message, signature_der),
            Self::Sm2(k) => k.verify_message(message, signature_der),
        }
    }

    /// Verifies a DER signature over a digest ([`VerifyingKey::digest`]).
    pub fn verify_digest(&self, digest: &Digest, signature_der: &[u8]) -> Result<(), CryptoError> {
        match self {
            Self::P256(k) => k.verify_digest(digest, signature_der),
            Self::Sm2(k) => k.verify_digest(digest, signature_der),
        }
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::P256(k) => k.fmt(f),
            Self::Sm2(k) => k.fmt(f),
        }
    }
}

impl From<ecdsa::PublicKey> for VerifyingKey {
    fn from(k: ecdsa::PublicKey) -> Self {
        Self::P256(k)
    }
}

/// A private key of either algorithm. Wiped on drop, never printed.
#[derive(Clone)]
pub enum SigningKey {
    /// ECDSA P-256.
    P256(ecdsa::PrivateKey),
    /// SM2, with its distinguishing ID (boxed: it keeps its signer, several times the size of a
    /// P-256 key).
    Sm2(Box<sm2::PrivateKey>),
}

impl SigningKey {
    /// A fresh key of `algorithm` from the operating system's CSPRNG (SM2: default ID).
    pub fn generate(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::EcdsaP256 => Self::P256(ecdsa::PrivateKey::generate()),
            Algorithm::Sm2 => Self::Sm2(Box::new(sm2::PrivateKey::generate())),
        }
    }

    /// Restores a key of `algorithm` from its 32-byte scalar.
    pub fn from_secret_bytes(algorithm: Algorithm, bytes: &[u8]) -> Result<Self, CryptoError> {
        match algorithm {
            Algorithm::EcdsaP256 => ecdsa::PrivateKey::from_secret_bytes(bytes).map(Self::P256),
            Algorithm::Sm2 => {
                sm2::PrivateKey::from_secret_bytes(bytes).map(|k| Self::Sm2(Box::new(k)))
            }
        }
    }

    /// Reads PKCS#8 DER of either curve.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        if let Ok(k) = ecdsa::PrivateKey::from_pkcs8_der(der) {
            return Ok(Self::P256(k));
        }
        sm2::PrivateKey::from_pkcs8_der(der)
            .map(|k| Self::Sm2(Box::new(k)))
            .map_err(|_| CryptoError::Malformed("not a PKCS#8 P-256 or SM2 private key"))
    }

    /// Reads PKCS#8 PEM of either curve.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, CryptoError> {
        if let Ok(k) = ecdsa::PrivateKey::from_pkcs8_pem(pem) {
            return Ok(Self::P256(k));
        }
        sm2::PrivateKey::from_pkcs8_pem(pem)
            .map(|k| Self::Sm2(Box::new(k)))
            .map_err(|_| CryptoError::Malformed("not a PKCS#8 PEM P-256 or SM2 private key"))
    }

    /// Its algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::P256(_) => Algorithm::EcdsaP256,
            Self::Sm2(_) => Algorithm::Sm2,
        }
    }

    /// The 32-byte scalar, wiped when dropped.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        match self {
            Self::P256(k) => k.to_secret_bytes(),
            Self::Sm2(k) => k.to_secret_bytes(),
        }
    }

    /// PKCS#8 DER, wiped when dropped.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        match self {
            Self::P256(k) => k.to_pkcs8_der(),
            Self::Sm2(k) => k.to_pkcs8_der(),
        }
    }

    /// PKCS#8 PEM, wiped when dropped.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        match self {
            Self::P256(k) => k.to_pkcs8_pem(),
            Self::Sm2(k) => k.to_pkcs8_pem(),
        }
    }

    /// The public key.
    pub fn public_key(&self) -> VerifyingKey {
        match self {
            Self::P256(k) => VerifyingKey::P256(k.public_key()),
            Self::Sm2(k) => VerifyingKey::Sm2(k.public_key()),
        }
    }

    /// Signs a digest ([`VerifyingKey::digest`]); returns a DER signature.
    pub fn sign_digest(&self, digest: &Digest) -> Vec<u8> {
        match self {
            Self::P256(k) => k.sign_digest(digest),
            Self::Sm2(k) => k.sign_digest(digest),
        }
    }

    /// Signs a digest with the key of `algorithm` whose scalar is `secret`, the way
    /// `from_secret_bytes(..)?.sign_digest(..)` does, but for P-256 without deriving the
    /// public key first ([`ecdsa::PrivateKey::sign_digest_with_secret`]); the same signature.
    pub fn sign_digest_with_secret(
        algorithm: Algorithm,
        secret: &[u8],
        digest: &Digest,
    ) -> Result<Vec<u8>, CryptoError> {
        match algorithm {
            Algorithm::EcdsaP256 => ecdsa::PrivateKey::sign_digest_with_secret(secret, digest),
            Algorithm::Sm2 => Ok(Self::from_secret_bytes(algorithm, secret)?.sign_digest(digest)),
        }
    }

    /// Signs `message`; returns a DER signature.
    pub fn sign_message(&self, message: &[u8]) -> Vec<u8> {
        match self {
            Self::P256(k) => k.sign_message(message),
            Self::Sm2(k) => k.sign_message(message),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::P256(k) => k.fmt(f),
            Self::Sm2(k) => k.fmt(f),
        }
    }
}

impl From<ecdsa::PrivateKey> for SigningKey {
    fn from(k: ecdsa::PrivateKey) -> Self {
        Self::P256(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_algorithm_round_trips_and_they_do_not_cross() {
        let p = SigningKey::generate(Algorithm::EcdsaP256);
        let s = SigningKey::generate(Algorithm::Sm2);
        for key in [&p, &s] {
            let public = VerifyingKey::from_spki_der(&key.public_key().to_spki_der()).unwrap();
            assert_eq!(public.algorithm(), key.algorithm());
            let sig = key.sign_message(b"m");
            public.verify_message(b"m", &sig).unwrap();
            public.verify_digest(&public.digest(b"m"), &sig).unwrap();
            let again = SigningKey::from_pkcs8_der(&key.to_pkcs8_der()).unwrap();
            assert_eq!(again.public_key(), key.public_key());
            assert_eq!(
                Algorithm::from_byte(key.algorithm().to_byte()),
                Some(key.algorithm())
            );
        }
        // A signature of one algorithm never verifies under the other's key of the same
        // scalar: the curves differ, and so do the digests.
        let same = SigningKey::from_secret_bytes(Algorithm::Sm2, &p.to_secret_bytes()).unwrap();
        let sig = p.sign_message(b"m");
        assert!(same.public_key().verify_message(b"m", &sig).is_err());
        assert!(VerifyingKey::from_spki_der_as(
            Algorithm::EcdsaP256,
            &s.public_key().to_spki_der(),
            ""
        )
        .is_err());
        assert_eq!(Algorithm::from_proto(0), Some(Algorithm::EcdsaP256));
        assert_eq!(Algorithm::from_proto(2), Some(Algorithm::Sm2));
        assert_eq!(Algorithm::from_proto(9), None);
    }
}
