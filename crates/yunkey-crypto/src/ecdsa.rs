//! ECDSA over P-256 with SHA-256. Keys travel as SubjectPublicKeyInfo DER, signatures as DER
//! `ECDSA-Sig-Value`, the forms OpenSSL and every X.509 stack read. Signatures are low-S.
//! Signing with the `p256` crate is deterministic (RFC 6979): the same digest and key give
//! the same bytes.
//!
//! Two backends sit behind these types: the `p256` crate (the reference: key handling,
//! signing, verification of a prehashed digest) and `ring` for the hot path of every
//! signature, where it is about four times faster: [`PublicKey::verify_message`] (the
//! coordinator and the chip each verify the device's authorization) and
//! [`PrivateKey::sign_message_with_secret`] (the chip's signature, randomized). Tests check
//! they agree.

use crate::{CryptoError, Digest};
use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use std::fmt;
use zeroize::Zeroizing;

/// A P-256 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    /// Uncompressed SEC1 point, the form ring verifies with.
    sec1: Vec<u8>,
}

impl PublicKey {
    fn new(key: VerifyingKey) -> Self {
        let sec1 = key.to_encoded_point(false).as_bytes().to_vec();
        Self { key, sec1 }
    }

    /// Parses an uncompressed or compressed SEC1 point (checked to be on the curve).
    pub fn from_sec1(point: &[u8]) -> Result<Self, CryptoError> {
        VerifyingKey::from_sec1_bytes(point)
            .map(Self::new)
            .map_err(|_| CryptoError::BadPublicKey)
    }

    /// Parses SubjectPublicKeyInfo DER.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, CryptoError> {
        VerifyingKey::from_public_key_der(der)
            .map(Self::new)
            .map_err(|_| CryptoError::BadPublicKey)
    }

    /// SubjectPublicKeyInfo DER.
    pub fn to_spki_der(&self) -> Vec<u8> {
        self.key
            .to_public_key_der()
            .expect("a valid P-256 key always encodes")
            .into_vec()
    }

    /// Uncompressed SEC1 point (65 bytes).
    pub fn to_sec1(&self) -> Vec<u8> {
        self.sec1.clone()
    }

    /// Verifies a DER signature over a SHA-256 digest, with p256.
    pub fn verify_digest(&self, digest: &Digest, signature_der: &[u8]) -> Result<(), CryptoError> {
        let sig =
            Signature::from_der(signature_der).map_err(|_| CryptoError::MalformedSignature)?;
        self.key
            .verify_prehash(digest, &sig)
            .map_err(|_| CryptoError::BadSignature)
    }

    /// Verifies a DER signature over `message` (hashed with SHA-256), with ring.
    pub fn verify_message(&self, message: &[u8], signature_der: &[u8]) -> Result<(), CryptoError> {
        use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};
        match UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.sec1)
            .verify(message, signature_der)
        {
            Ok(()) => Ok(()),
            // ring does not say why; tell a malformed signature from a wrong one.
            Err(_) if Signature::from_der(signature_der).is_err() => {
                Err(CryptoError::MalformedSignature)
            }
            Err(_) => Err(CryptoError::BadSignature),
        }
    }

    /// SHA-256 of the SubjectPublicKeyInfo DER, in hex: the fingerprint operators compare
    /// (for example a chip's transport key before they admit it).
    pub fn fingerprint(&self) -> String {
        hex::encode(crate::sha256(&self.to_spki_der()))
    }

    pub(crate) fn inner(&self) -> &VerifyingKey {
        &self.key
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PublicKey({})",
            hex::encode(&crate::sha256(&self.sec1)[..8])
        )
    }
}

/// The scalar 1: with its public point G, the key pair that overwrites a ring key pair after
/// use ([`PrivateKey::sign_message_with_secret`]).
const WIPE_SCALAR: [u8; 32] = {
    let mut one = [0u8; 32];
    one[31] = 1;
    one
};

/// Runs `f` with ring's key pair of `secret` and `public` (ring checks they match), then
/// overwrites the key pair in place with one of 1·G, whose scalar is no secret: ring's key
/// pair holds the scalar inline (no heap, no `Drop`; see [`wipe_ring_pair`]) and does not
/// wipe it. The overwrite costs one more fixed-base multiplication, and keeps this crate
/// free of `unsafe`.
fn with_ring_pair<T>(
    secret: &[u8],
    public: &PublicKey,
    rng: &ring::rand::SystemRandom,
    f: impl FnOnce(&ring::signature::EcdsaKeyPair) -> T,
) -> Result<T, CryptoError> {
    let mut key = open_ring_pair(secret, public, rng)?;
    let out = f(&key);
    wipe_ring_pair(&mut key, rng);
    Ok(out)
}

/// ring's key pair of `secret` and `public`; ring derives the public key from the scalar and
/// refuses a pair that does not match. The caller wipes it ([`wipe_ring_pair`]).
pub(crate) fn open_ring_pair(
    secret: &[u8],
    public: &PublicKey,
    rng: &ring::rand::SystemRandom,
) -> Result<ring::signature::EcdsaKeyPair, CryptoError> {
    ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        secret,
        &public.sec1,
        rng,
    )
    .map_err(|_| CryptoError::Malformed("not the private key of this P-256 public key"))
}

/// Overwrites `key` in place with the key pair of 1·G, whose scalar is no secret: ring's key
/// pair holds its scalar inline (no heap, no `Drop`; checked at compile time here) and does
/// not wipe it.
pub(crate) fn wipe_ring_pair(
    key: &mut ring::signature::EcdsaKeyPair,
    rng: &ring::rand::SystemRandom,
) {
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    const _: () = assert!(
        !std::mem::needs_drop::<EcdsaKeyPair>(),
        "ring's EcdsaKeyPair owns heap memory now: overwriting it no longer covers its key"
    );
    *key = EcdsaKeyPair::from_private_key_and_public_key(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &WIPE_SCALAR,
        wipe_point(),
        rng,
    )
    .expect("1 and G are a P-256 key pair");
    // Keep the overwrite: the store would otherwise be dead and could be optimized away.
    std::hint::black_box(&*key);
}

/// Signs `message` with ring's `key`: a DER signature, low-S like every signature of ours.
pub(crate) fn ring_sign_low_s(
    key: &ring::signature::EcdsaKeyPair,
    rng: &ring::rand::SystemRandom,
    message: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let der = key
        .sign(rng, message)
        .map_err(|_| CryptoError::Malformed("signing failed"))?;
    let sig =
        Signature::from_der(der.as_ref()).map_err(|_| CryptoError::Malformed("signing failed"))?;
    Ok(sig
        .normalize_s()
        .unwrap_or(sig)
        .to_der()
        .as_bytes()
        .to_vec())
}

impl PublicKey {
    /// The uncompressed SEC1 point (the cache of opened pairs, [`crate::ring_pairs`], is keyed
    /// by it).
    pub(crate) fn sec1(&self) -> &[u8] {
        &self.sec1
    }
}

/// G, uncompressed (the public key of [`WIPE_SCALAR`]), computed once.
fn wipe_point() -> &'static [u8] {
    static POINT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    POINT.get_or_init(|| {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        p256::AffinePoint::GENERATOR
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    })
}

/// A P-256 private key. Zeroized on drop; its `Debug` never shows the scalar.
#[derive(Clone)]
pub struct PrivateKey(SigningKey);

impl PrivateKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        Self(SigningKey::random(&mut rand_core::OsRng))
    }

    /// Restores a key from its 32-byte scalar.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != 32 {
            return Err(CryptoError::Malformed("a P-256 private key is 32 bytes"));
        }
        SigningKey::from_slice(bytes)
            .map(Self)
            .map_err(|_| CryptoError::Malformed("not a valid P-256 private key"))
    }

    /// The 32-byte scalar, in a buffer that is wiped when dropped.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.to_bytes().to_vec())
    }

    /// The key as a PKCS#8 PrivateKeyInfo DER document (what [`crate::keywrap`] wraps and a
    /// PKCS#11 token unwraps), in a buffer that is wiped when dropped.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        let doc = self
            .0
            .to_pkcs8_der()
            .expect("encoding a valid P-256 key as PKCS#8 cannot fail");
        Zeroizing::new(doc.as_bytes().to_vec())
    }

    /// The key as a PKCS#8 PEM document (`-----BEGIN PRIVATE KEY-----`), wiped when dropped.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        let pem = self
            .0
            .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
            .expect("encoding a valid P-256 key as PKCS#8 PEM cannot fail");
        Zeroizing::new(pem.as_str().to_owned())
    }

    /// Reads a PKCS#8 PEM document holding a P-256 key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, CryptoError> {
        SigningKey::from_pkcs8_pem(pem)
            .map(Self)
            .map_err(|_| CryptoError::Malformed("not a PKCS#8 PEM P-256 private key"))
    }

    /// Reads a PKCS#8 PrivateKeyInfo DER document holding a P-256 key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        SigningKey::from_pkcs8_der(der)
            .map(Self)
            .map_err(|_| CryptoError::Malformed("not a PKCS#8 P-256 private key"))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey::new(*self.0.verifying_key())
    }

    /// Signs a SHA-256 digest; returns a DER signature (low-S, deterministic).
    pub fn sign_digest(&self, digest: &Digest) -> Vec<u8> {
        let sig: Signature = self
            .0
            .sign_prehash(digest)
            .expect("signing a 32-byte digest cannot fail");
        let der: DerSignature = sig.normalize_s().unwrap_or(sig).to_der();
        der.as_bytes().to_vec()
    }

    /// Signs `message` (hashed with SHA-256); returns a DER signature.
    pub fn sign_message(&self, message: &[u8]) -> Vec<u8> {
        self.sign_digest(&crate::sha256(message))
    }

    /// Signs a SHA-256 digest with the key whose 32-byte scalar is `secret`, without making a
    /// key: [`PrivateKey::from_secret_bytes`] derives the public point `[d]G`, which costs
    /// about as much as the signature itself and which a chip opening a stored key for one
    /// signature does not need. The same deterministic (RFC 6979), low-S DER signature as
    /// [`PrivateKey::sign_digest`]. The scalar is wiped before this returns.
    pub fn sign_digest_with_secret(secret: &[u8], digest: &Digest) -> Result<Vec<u8>, CryptoError> {
        use ecdsa::hazmat::SignPrimitive;
        use zeroize::Zeroize;
        let bytes = Zeroizing::new(
            <[u8; 32]>::try_from(secret)
                .map_err(|_| CryptoError::Malformed("a P-256 private key is 32 bytes"))?,
        );
        let mut d =
            Option::<p256::NonZeroScalar>::from(p256::NonZeroScalar::from_repr((*bytes).into()))
                .ok_or(CryptoError::Malformed("not a valid P-256 private key"))?;
        let signed = d.try_sign_prehashed_rfc6979::<sha2::Sha256>(&(*digest).into(), &[]);
        d.zeroize();
        let (sig, _) = signed.map_err(|_| CryptoError::Malformed("signing failed"))?;
        let der: DerSignature = sig.normalize_s().unwrap_or(sig).to_der();
        Ok(der.as_bytes().to_vec())
    }

    /// Signs `message` (hashed with SHA-256) with the key whose 32-byte scalar is `secret`
    /// and whose public key is `public`, with ring: the chip's hot path, about four times
    /// faster than [`PrivateKey::sign_digest_with_secret`] (docs/performance.md). ring checks
    /// that `secret` and `public` belong together (it derives the public point, a fast
    /// fixed-base multiplication) and refuses otherwise.
    ///
    /// Not deterministic: ring's nonce mixes fresh randomness into one derived from the key
    /// and the message, so signing twice gives two different valid signatures (both low-S
    /// here). What answers a retry with the same bytes is the stored request result and the
    /// chip's replay guard (docs/security.md, "Replay defence").
    ///
    /// ring's key pair is wiped after signing ([`with_ring_pair`]).
    pub fn sign_message_with_secret(
        secret: &[u8],
        public: &PublicKey,
        message: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let rng = ring::rand::SystemRandom::new();
        with_ring_pair(secret, public, &rng, |key| {
            ring_sign_low_s(key, &rng, message)
        })?
    }

    /// The key as PKCS#8 DER from its scalar and its public key: the same bytes as
    /// [`PrivateKey::to_pkcs8_der`], without deriving the public key again (a p256 scalar
    /// multiplication, the costliest step of wrapping a key for export).
    pub fn pkcs8_der_from_parts(
        secret: &[u8],
        public: &PublicKey,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        use p256::pkcs8::der::Encode;
        if secret.len() != 32 {
            return Err(CryptoError::Malformed("a P-256 private key is 32 bytes"));
        }
        let encoding = |_| CryptoError::Malformed("encoding a P-256 key as PKCS#8 failed");
        let ec_private_key = Zeroizing::new(
            sec1::EcPrivateKey {
                private_key: secret,
                parameters: None,
                public_key: Some(&public.sec1),
            }
            .to_der()
            .map_err(encoding)?,
        );
        let info = p256::pkcs8::PrivateKeyInfo::new(
            p256::pkcs8::AlgorithmIdentifierRef {
                oid: p256::elliptic_curve::ALGORITHM_OID,
                parameters: Some((&<p256::NistP256 as p256::pkcs8::AssociatedOid>::OID).into()),
            },
            &ec_private_key,
        );
        Ok(Zeroizing::new(info.to_der().map_err(encoding)?))
    }

    /// Opens PKCS#8 DER of a P-256 key into its scalar and public key. When the document
    /// carries the public key (as [`PrivateKey::to_pkcs8_der`] writes it), ring checks that it
    /// is the scalar's (one fast fixed-base multiplication, instead of p256's two); without
    /// one, p256 derives it.
    pub fn pkcs8_der_to_parts(der: &[u8]) -> Result<(Zeroizing<Vec<u8>>, PublicKey), CryptoError> {
        use p256::pkcs8::AssociatedOid;
        let bad = || CryptoError::Malformed("not a PKCS#8 P-256 private key");
        let info = p256::pkcs8::PrivateKeyInfo::try_from(der).map_err(|_| bad())?;
        info.algorithm
            .assert_oids(p256::elliptic_curve::ALGORITHM_OID, p256::NistP256::OID)
            .map_err(|_| bad())?;
        let ec = sec1::EcPrivateKey::try_from(info.private_key).map_err(|_| bad())?;
        if ec
            .parameters
            .is_some_and(|p| p.named_curve() != Some(p256::NistP256::OID))
        {
            return Err(bad());
        }
        let secret = Zeroizing::new(ec.private_key.to_vec());
        let Some(point) = ec.public_key else {
            let public = Self::from_secret_bytes(&secret)?.public_key();
            return Ok((secret, public));
        };
        let public = PublicKey::from_sec1(point).map_err(|_| bad())?;
        let rng = ring::rand::SystemRandom::new();
        with_ring_pair(&secret, &public, &rng, |_| ())?;
        Ok((secret, public))
    }

    pub(crate) fn inner(&self) -> &SigningKey {
        &self.0
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs8_from_parts_is_p256s_encoding_and_opens_back() {
        for _ in 0..8 {
            let key = PrivateKey::generate();
            let secret = key.to_secret_bytes();
            let public = key.public_key();
            let der = PrivateKey::pkcs8_der_from_parts(&secret, &public).unwrap();
            assert_eq!(*der, *key.to_pkcs8_der());
            let (opened, opened_public) = PrivateKey::pkcs8_der_to_parts(&der).unwrap();
            assert_eq!(*opened, *secret);
            assert_eq!(opened_public, public);
        }
    }

    #[test]
    fn pkcs8_to_parts_refuses_a_public_key_that_is_not_the_scalars() {
        let (a, b) = (PrivateKey::generate(), PrivateKey::generate());
        let mismatched =
            PrivateKey::pkcs8_der_from_parts(&a.to_secret_bytes(), &b.public_key()).unwrap();
        assert!(PrivateKey::pkcs8_der_to_parts(&mismatched).is_err());
        assert!(PrivateKey::pkcs8_der_to_parts(b"not der").is_err());
        // A key of another curve (SM2) is no P-256 key.
        let sm2 = crate::sm2::PrivateKey::generate().to_pkcs8_der();
        assert!(PrivateKey::pkcs8_der_to_parts(&sm2).is_err());
        assert!(PrivateKey::pkcs8_der_from_parts(&[1u8; 31], &a.public_key()).is_err());
    }

    #[test]
    fn pkcs8_to_parts_derives_a_missing_public_key() {
        use p256::pkcs8::der::Encode;
        let key = PrivateKey::generate();
        let secret = key.to_secret_bytes();
        let ec = sec1::EcPrivateKey {
            private_key: &secret,
            parameters: None,
            public_key: None,
        }
        .to_der()
        .unwrap();
        let der = p256::pkcs8::PrivateKeyInfo::new(
            p256::pkcs8::AlgorithmIdentifierRef {
                oid: p256::elliptic_curve::ALGORITHM_OID,
                parameters: Some((&<p256::NistP256 as p256::pkcs8::AssociatedOid>::OID).into()),
            },
            &ec,
        )
        .to_der()
        .unwrap();
        let (opened, public) = PrivateKey::pkcs8_der_to_parts(&der).unwrap();
        assert_eq!(*opened, *secret);
        assert_eq!(public, key.public_key());
    }

    #[test]
    fn sign_verify_roundtrip() {
        let key = PrivateKey::generate();
        let public = PublicKey::from_spki_der(&key.public_key().to_spki_der()).unwrap();
        let sig = key.sign_message(b"pay 5 EUR");
        public.verify_message(b"pay 5 EUR", &sig).unwrap();
        assert_eq!(
            public.verify_message(b"pay 6 EUR", &sig),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            public.verify_message(b"x", b"junk"),
            Err(CryptoError::MalformedSignature)
        );
        assert_eq!(
            key.sign_message(b"pay 5 EUR"),
            sig,
            "RFC 6979 signatures are deterministic"
        );
    }

    #[test]
    fn signing_with_ring_gives_valid_low_s_signatures_and_refuses_a_wrong_pair() {
        let half_order = {
            // n / 2 of P-256, big-endian: a low-S signature's s is at most this.
            let mut n =
                hex::decode("7fffffff800000007fffffffffffffffde737d56d38bcf4279dce5617e3192a8")
                    .unwrap();
            n.reverse();
            n
        };
        let mut distinct = std::collections::HashSet::new();
        for i in 0..50u32 {
            let key = PrivateKey::generate();
            let public = key.public_key();
            let message = format!("pay {i} EUR");
            let sig = PrivateKey::sign_message_with_secret(
                &key.to_secret_bytes(),
                &public,
                message.as_bytes(),
            )
            .unwrap();
            // p256 and ring both accept it, over the message and over its digest.
            public.verify_message(message.as_bytes(), &sig).unwrap();
            public
                .verify_digest(&crate::sha256(message.as_bytes()), &sig)
                .unwrap();
            let parsed = Signature::from_der(&sig).unwrap();
            assert!(parsed.normalize_s().is_none(), "low S");
            let mut s_le = parsed.s().to_bytes().to_vec();
            s_le.reverse();
            assert!(s_le.iter().rev().cmp(half_order.iter().rev()).is_le());
            distinct.insert(sig);
        }
        assert_eq!(distinct.len(), 50);
        // Twice the same message: two valid, different signatures (not RFC 6979).
        let key = PrivateKey::generate();
        let twice: Vec<Vec<u8>> = (0..2)
            .map(|_| {
                PrivateKey::sign_message_with_secret(
                    &key.to_secret_bytes(),
                    &key.public_key(),
                    b"m",
                )
                .unwrap()
            })
            .collect();
        assert_ne!(twice[0], twice[1]);
        // A scalar with another key's public key is refused, as are malformed scalars.
        let other = PrivateKey::generate().public_key();
        assert!(
            PrivateKey::sign_message_with_secret(&key.to_secret_bytes(), &other, b"m").is_err()
        );
        assert!(PrivateKey::sign_message_with_secret(&[0u8; 32], &other, b"m").is_err());
        assert!(PrivateKey::sign_message_with_secret(&[1u8; 31], &other, b"m").is_err());
    }

    #[test]
    fn signing_with_the_bare_scalar_gives_the_same_signature() {
        for i in 0..20u32 {
            let key = PrivateKey::generate();
            let digest = crate::sha256(format!("message {i}").as_bytes());
            let bare = PrivateKey::sign_digest_with_secret(&key.to_secret_bytes(), &digest)
                .expect("a valid scalar signs");
            assert_eq!(bare, key.sign_digest(&digest));
            assert_eq!(key.public_key().verify_digest(&digest, &bare), Ok(()));
        }
        let digest = crate::sha256(b"x");
        assert!(PrivateKey::sign_digest_with_secret(&[1u8; 31], &digest).is_err());
        assert!(PrivateKey::sign_digest_with_secret(&[0u8; 32], &digest).is_err());
        assert!(PrivateKey::sign_digest_with_secret(&[0xffu8; 32], &digest).is_err());
    }

    #[test]
    fn ring_and_p256_agree() {
        for i in 0..50u32 {
            let key = PrivateKey::generate();
            let public = key.public_key();
            let msg = format!("message {i}");
            let digest = crate::sha256(msg.as_bytes());
            let sig = key.sign_message(msg.as_bytes());
            // Both accept a good signature (ring on the message, p256 on its digest)...
            assert_eq!(public.verify_message(msg.as_bytes(), &sig), Ok(()));
            assert_eq!(public.verify_digest(&digest, &sig), Ok(()));
            // ...both refuse it for another message or under another key...
            let other = PrivateKey::generate().public_key();
            assert_eq!(
                other.verify_message(msg.as_bytes(), &sig),
                Err(CryptoError::BadSignature)
            );
            assert_eq!(
                other.verify_digest(&digest, &sig),
                Err(CryptoError::BadSignature)
            );
            // ...and both refuse a flipped bit.
            let mut bad = sig.clone();
            let at = 8 + (i as usize % (bad.len() - 8));
            bad[at] ^= 0x01;
            assert_eq!(
                public.verify_message(msg.as_bytes(), &bad).is_ok(),
                public.verify_digest(&digest, &bad).is_ok()
            );
        }
    }

    #[test]
    fn secret_roundtrip_and_redaction() {
        let key = PrivateKey::generate();
        let again = PrivateKey::from_secret_bytes(&key.to_secret_bytes()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(format!("{key:?}"), "PrivateKey(<redacted>)");
        assert!(PrivateKey::from_secret_bytes(&[0u8; 32]).is_err());
        assert!(PublicKey::from_spki_der(b"nope").is_err());
    }
}
