//! SM2 signatures with SM3 (GB/T 32918.2, GM/T 0003), on RustCrypto's `sm2` and `sm3`.
//!
//! What is signed: `e = SM3(Z_A || M)`, where `Z_A` (GB/T 32918.2 §5.5) hashes the signer's
//! distinguishing ID with the curve and the public key:
//! `Z_A = SM3(ENTL_A || ID_A || a || b || x_G || y_G || x_A || y_A)`. The ID is part of the
//! key: a [`PublicKey`] and a [`PrivateKey`] carry theirs ([`DEFAULT_DISTID`] unless set).
//!
//! Keys travel as SubjectPublicKeyInfo / PKCS#8 DER with `id-ecPublicKey` and the SM2 curve
//! (OID 1.2.156.10197.1.301), signatures as DER `SEQUENCE { r INTEGER, s INTEGER }`: the forms
//! OpenSSL 3 reads (`openssl dgst -sm3 -verify pub.pem -sigopt distid:<ID>`).
//!
//! The one thing computed here rather than in the `sm2` crate is `Z_A`, because the crate
//! keeps it private and a chip signs the digest `e` it computed itself (the custody signs a
//! checked digest). The standard's test vector checks it (`tests/gm_vectors.rs`), and a test
//! below checks that the crate's own message signing agrees.

use crate::{CryptoError, Digest};
use sm2::dsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use sm2::elliptic_curve::sec1::ToEncodedPoint;
use sm2::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use sm3::Digest as _;
use std::fmt;
use zeroize::Zeroizing;

/// The default distinguishing ID of GB/T 35276 (and of OpenSSL and GmSSL), `1234567812345678`.
pub const DEFAULT_DISTID: &str = "1234567812345678";
/// Longest distinguishing ID accepted, in bytes (ENTL is 16 bits of bit length; this is far
/// below and keeps stored formats small).
pub const MAX_DISTID: usize = 64;

/// Checks a distinguishing ID: 1..=64 printable ASCII bytes (so that it can be given to
/// `openssl -sigopt distid:<ID>` as is).
pub fn check_distid(distid: &str) -> Result<(), CryptoError> {
    if distid.is_empty() || distid.len() > MAX_DISTID {
        return Err(CryptoError::Malformed(
            "an SM2 distinguishing ID is 1 to 64 bytes",
        ));
    }
    if !distid.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(CryptoError::Malformed(
            "an SM2 distinguishing ID is printable ASCII without spaces",
        ));
    }
    Ok(())
}

/// SM3 of `data` (GB/T 32905).
pub fn sm3(data: &[u8]) -> Digest {
    sm3::Sm3::digest(data).into()
}

/// `Z_A` of a public key (uncompressed SEC1 point) and distinguishing ID (GB/T 32918.2 §5.5).
pub fn z_a(distid: &str, sec1_uncompressed: &[u8]) -> Digest {
    use primeorder::PrimeCurveParams;
    use sm2::elliptic_curve::PrimeField;
    let entl = u16::try_from(distid.len() * 8).expect("a checked distid is short");
    let mut h = sm3::Sm3::new();
    h.update(entl.to_be_bytes());
    h.update(distid.as_bytes());
    h.update(sm2::Sm2::EQUATION_A.to_repr());
    h.update(sm2::Sm2::EQUATION_B.to_repr());
    h.update(sm2::Sm2::GENERATOR.0.to_repr());
    h.update(sm2::Sm2::GENERATOR.1.to_repr());
    // The point without its 0x04 prefix: x || y.
    h.update(&sec1_uncompressed[1..]);
    h.finalize().into()
}

fn der_signature(sig: &sm2::dsa::Signature) -> Vec<u8> {
    let generic = ecdsa::Signature::<sm2::Sm2>::from_slice(&sig.to_bytes())
        .expect("an SM2 signature's scalars are in range");
    generic.to_der().as_bytes().to_vec()
}

fn parse_der_signature(der: &[u8]) -> Result<sm2::dsa::Signature, CryptoError> {
    let generic =
        ecdsa::Signature::<sm2::Sm2>::from_der(der).map_err(|_| CryptoError::MalformedSignature)?;
    sm2::dsa::Signature::from_slice(&generic.to_bytes())
        .map_err(|_| CryptoError::MalformedSignature)
}

/// An SM2 public key with the distinguishing ID it verifies under.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    point: sm2::PublicKey,
    distid: String,
    z_a: Digest,
}

impl PublicKey {
    fn new(point: sm2::PublicKey, distid: &str) -> Result<Self, CryptoError> {
        check_distid(distid)?;
        let sec1 = point.to_encoded_point(false);
        Ok(Self {
            z_a: z_a(distid, sec1.as_bytes()),
            distid: distid.to_owned(),
            point,
        })
    }

    /// Parses SubjectPublicKeyInfo DER (SM2 curve); the ID is [`DEFAULT_DISTID`].
    pub fn from_spki_der(der: &[u8]) -> Result<Self, CryptoError> {
        let point =
            sm2::PublicKey::from_public_key_der(der).map_err(|_| CryptoError::BadPublicKey)?;
        Self::new(point, DEFAULT_DISTID)
    }

    /// The same key under another distinguishing ID.
    pub fn with_distid(&self, distid: &str) -> Result<Self, CryptoError> {
        Self::new(self.point, distid)
    }

    /// The distinguishing ID.
    pub fn distid(&self) -> &str {
        &self.distid
    }

    /// SubjectPublicKeyInfo DER.
    pub fn to_spki_der(&self) -> Vec<u8> {
        self.point
            .to_public_key_der()
            .expect("a valid SM2 key always encodes")
            .into_vec()
    }

    /// Uncompressed SEC1 point (65 bytes).
    pub fn to_sec1(&self) -> Vec<u8> {
        self.point.to_encoded_point(false).as_bytes().to_vec()
    }

    /// What a signature over `message` signs: `e = SM3(Z_A || message)`.
    pub fn digest(&self, message: &[u8]) -> Digest {
        sm3::Sm3::new()
            .chain_update(self.z_a)
            .chain_update(message)
            .finalize()
            .into()
    }

    /// Verifies a DER signature over `e` ([`PublicKey::digest`]).
    pub fn verify_digest(&self, e: &Digest, signature_der: &[u8]) -> Result<(), CryptoError> {
        let sig = parse_der_signature(signature_der)?;
        let key = sm2::dsa::VerifyingKey::new(&self.distid, self.point)
            .map_err(|_| CryptoError::BadPublicKey)?;
        key.verify_prehash(e, &sig)
            .map_err(|_| CryptoError::BadSignature)
    }

    /// Verifies a DER signature over `message` under this key's distinguishing ID.
    pub fn verify_message(&self, message: &[u8], signature_der: &[u8]) -> Result<(), CryptoError> {
        self.verify_digest(&self.digest(message), signature_der)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Sm2PublicKey({}, distid {:?})",
            hex::encode(&crate::sha256(&self.to_sec1())[..8]),
            self.distid
        )
    }
}

/// An SM2 private key with its distinguishing ID; its `Debug` never shows the scalar.
///
/// The `sm2` crate's `SecretKey` wipes its scalar on drop; its `dsa::SigningKey`, kept here so
/// that the public point and `Z_A` are computed once per key rather than per signature, does
/// not (sm2 0.13): one copy of the scalar stays in freed memory (docs/security.md).
#[derive(Clone)]
pub struct PrivateKey {
    secret: sm2::SecretKey,
    signer: sm2::dsa::SigningKey,
    public: PublicKey,
}

impl PrivateKey {
    fn from_secret(secret: sm2::SecretKey, distid: &str) -> Result<Self, CryptoError> {
        check_distid(distid)?;
        let signer = sm2::dsa::SigningKey::new(distid, &secret)
            .map_err(|_| CryptoError::Malformed("not a valid SM2 private key"))?;
        let point = sm2::PublicKey::from_affine(*signer.verifying_key().as_affine())
            .map_err(|_| CryptoError::Malformed("not a valid SM2 private key"))?;
        let public = PublicKey::new(point, distid)?;
        Ok(Self {
            secret,
            signer,
            public,
        })
    }

    /// A fresh key from the operating system's CSPRNG, with the default ID.
    pub fn generate() -> Self {
        Self::from_secret(
            sm2::SecretKey::random(&mut rand_core::OsRng),
            DEFAULT_DISTID,
        )
        .expect("the default distid is valid")
    }

    /// Restores a key from its 32-byte scalar, with the default ID.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let secret = sm2::SecretKey::from_slice(bytes)
            .map_err(|_| CryptoError::Malformed("not a valid SM2 private key"))?;
        Self::from_secret(secret, DEFAULT_DISTID)
    }

    /// The same key signing under another distinguishing ID.
    pub fn with_distid(&self, distid: &str) -> Result<Self, CryptoError> {
        Self::from_secret(self.secret.clone(), distid)
    }

    /// The 32-byte scalar, in a buffer that is wiped when dropped.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.secret.to_bytes().to_vec())
    }

    /// PKCS#8 PrivateKeyInfo DER (id-ecPublicKey, SM2 curve), wiped when dropped.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        let doc = self
            .secret
            .to_pkcs8_der()
            .expect("encoding a valid SM2 key as PKCS#8 cannot fail");
        Zeroizing::new(doc.as_bytes().to_vec())
    }

    /// PKCS#8 PEM, wiped when dropped.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        let pem = self
            .secret
            .to_pkcs8_pem(sm2::pkcs8::LineEnding::LF)
            .expect("encoding a valid SM2 key as PKCS#8 PEM cannot fail");
        Zeroizing::new(pem.as_str().to_owned())
    }

    /// Reads PKCS#8 DER holding an SM2 key (default ID).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        let secret = sm2::SecretKey::from_pkcs8_der(der)
            .map_err(|_| CryptoError::Malformed("not a PKCS#8 SM2 private key"))?;
        Self::from_secret(secret, DEFAULT_DISTID)
    }

    /// Reads PKCS#8 PEM holding an SM2 key (default ID).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, CryptoError> {
        let secret = sm2::SecretKey::from_pkcs8_pem(pem)
            .map_err(|_| CryptoError::Malformed("not a PKCS#8 PEM SM2 private key"))?;
        Self::from_secret(secret, DEFAULT_DISTID)
    }

    /// The public key, with the same ID.
    pub fn public_key(&self) -> PublicKey {
        self.public.clone()
    }

    /// Signs `e` (see [`PublicKey::digest`]); returns a DER signature. The nonce is derived
    /// as in RFC 6979 with SM3, so the same `e` gives the same signature.
    pub fn sign_digest(&self, e: &Digest) -> Vec<u8> {
        let sig: sm2::dsa::Signature = self
            .signer
            .sign_prehash(e)
            .expect("signing a 32-byte digest cannot fail");
        der_signature(&sig)
    }

    /// Signs `message` under this key's ID; returns a DER signature.
    pub fn sign_message(&self, message: &[u8]) -> Vec<u8> {
        self.sign_digest(&self.public.digest(message))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sm2PrivateKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm2::dsa::signature::{Signer, Verifier};

    #[test]
    fn sign_verify_and_ids() {
        let key = PrivateKey::generate();
        let public = PublicKey::from_spki_der(&key.public_key().to_spki_der()).unwrap();
        let sig = key.sign_message(b"pay 5 CNY");
        public.verify_message(b"pay 5 CNY", &sig).unwrap();
        assert_eq!(
            public.verify_message(b"pay 6 CNY", &sig),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            public.verify_message(b"x", b"junk"),
            Err(CryptoError::MalformedSignature)
        );
        // Another distinguishing ID is another Z_A: the signature does not verify.
        let other_id = public.with_distid("alice@bank.example").unwrap();
        assert_eq!(
            other_id.verify_message(b"pay 5 CNY", &sig),
            Err(CryptoError::BadSignature)
        );
        let by_id = key.with_distid("alice@bank.example").unwrap();
        other_id
            .verify_message(b"pay 5 CNY", &by_id.sign_message(b"pay 5 CNY"))
            .unwrap();
        assert!(check_distid("").is_err());
        assert!(check_distid("has space").is_err());
        assert!(check_distid(&"x".repeat(65)).is_err());
        assert_eq!(format!("{key:?}"), "Sm2PrivateKey(<redacted>)");
    }

    #[test]
    fn our_z_a_agrees_with_the_crate() {
        for distid in [DEFAULT_DISTID, "ALICE123@YAHOO.COM", "x"] {
            let key = PrivateKey::generate().with_distid(distid).unwrap();
            let crate_key = sm2::dsa::SigningKey::new(distid, &key.secret).unwrap();
            let crate_vk = sm2::dsa::VerifyingKey::new(distid, key.secret.public_key()).unwrap();
            // The crate signs the message (computing Z_A itself); we verify via our e.
            let sig: sm2::dsa::Signature = crate_key.sign(b"message digest");
            key.public_key()
                .verify_message(b"message digest", &der_signature(&sig))
                .unwrap();
            // We sign our e; the crate verifies the message.
            let ours = parse_der_signature(&key.sign_message(b"message digest")).unwrap();
            crate_vk.verify(b"message digest", &ours).unwrap();
        }
    }

    #[test]
    fn pkcs8_round_trip_and_not_p256() {
        let key = PrivateKey::generate();
        let again = PrivateKey::from_pkcs8_der(&key.to_pkcs8_der()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let pem = PrivateKey::from_pkcs8_pem(&key.to_pkcs8_pem()).unwrap();
        assert_eq!(pem.public_key(), key.public_key());
        // A P-256 key is not an SM2 key, and the reverse.
        let p256 = crate::ecdsa::PrivateKey::generate();
        assert!(PrivateKey::from_pkcs8_der(&p256.to_pkcs8_der()).is_err());
        assert!(PublicKey::from_spki_der(&p256.public_key().to_spki_der()).is_err());
        assert!(crate::ecdsa::PublicKey::from_spki_der(&key.public_key().to_spki_der()).is_err());
    }
}
