//! Certificate assembly with `x509-cert`'s types: the chip decides what a certificate says
//! ([`CertSpec`], filled in by [`super::certs`]), this module encodes it and has the CA key in
//! the custody sign it. One path for both CA algorithms:
//!
//! - ECDSA P-256 CA: `ecdsa-with-SHA256` (1.2.840.10045.4.3.2), the signature over SHA-256 of
//!   the to-be-signed DER;
//! - SM2 CA: `SM2-with-SM3` (1.2.156.10197.1.501), the signature over `SM3(Z_A || TBS)` with
//!   the default distinguishing ID, as GM/T 0015 and OpenSSL 3 verify it.
//!
//! Every certificate is X.509 v3 with a 16-byte positive serial, a subject key identifier
//! (the first 20 bytes of the SHA-256 of the subject's public key, RFC 7093 method 1), and, when
//! it is not self-signed, an authority key identifier naming the issuer's.

use crate::custody::{sign_checked, KeyCustody, KeyRef};
use crate::ChipError;
use der::asn1::{BitString, Ia5String, OctetString, Utf8StringRef};
use der::oid::ObjectIdentifier;
use der::{Decode, Encode};
use std::time::{Duration, SystemTime};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::pkix::name::GeneralName;
pub(super) use x509_cert::ext::pkix::KeyUsages;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAltName,
    SubjectKeyIdentifier,
};
use x509_cert::ext::{AsExtension, Extension};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use yunkey_crypto::sig::{Algorithm, VerifyingKey};

const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const SM2_WITH_SM3: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.156.10197.1.501");
const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const ORGANIZATION: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
/// id-kp-clientAuth.
pub(super) const EKU_CLIENT_AUTH: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
/// id-kp-codeSigning.
pub(super) const EKU_CODE_SIGNING: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");

/// What a certificate says, decided by the caller from checked input.
pub(super) struct CertSpec {
    /// Organization (O), if any, then common name (CN).
    pub organization: Option<String>,
    pub common_name: String,
    /// URI subject alternative names.
    pub uris: Vec<String>,
    /// A CA with path length 0 (keyCertSign, cRLSign), or a leaf with `key_usage`.
    pub ca: bool,
    pub key_usage: flagset::FlagSet<KeyUsages>,
    pub extended_key_usage: Vec<ObjectIdentifier>,
    /// Seconds of validity from now (the certificate starts 5 minutes ago, for clock skew).
    pub validity_secs: i64,
}

/// The CA key that signs, and the certificate it signs under (`None`: self-signed).
pub(super) struct Issuer<'a> {
    pub custody: &'a dyn KeyCustody,
    pub key: &'a KeyRef,
    /// The CA's public key (SM2: with the default distinguishing ID).
    pub public_key: VerifyingKey,
    /// The issuer's subject name (DER), from its certificate; `None` for the self-signed CA.
    pub name_der: Option<&'a [u8]>,
}

fn cert_err(what: &str, e: impl std::fmt::Display) -> ChipError {
    ChipError::storage("issuing a certificate", format!("{what}: {e}"))
}

fn attribute(oid: ObjectIdentifier, value: &str) -> Result<RelativeDistinguishedName, ChipError> {
    let value = der::Any::encode_from(
        &Utf8StringRef::new(value).map_err(|e| cert_err("encoding a name", e))?,
    )
    .map_err(|e| cert_err("encoding a name", e))?;
    let atv = AttributeTypeAndValue { oid, value };
    RelativeDistinguishedName::try_from(vec![atv]).map_err(|e| cert_err("encoding a name", e))
}

fn name(spec: &CertSpec) -> Result<Name, ChipError> {
    let mut rdns = Vec::new();
    if let Some(o) = &spec.organization {
        rdns.push(attribute(ORGANIZATION, o)?);
    }
    rdns.push(attribute(COMMON_NAME, &spec.common_name)?);
    Ok(RdnSequence(rdns))
}

/// RFC 7093 method 1 with SHA-256: the leftmost 160 bits of the hash of the public key bits.
fn key_identifier(spki_der: &[u8]) -> Result<OctetString, ChipError> {
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der)
        .map_err(|e| cert_err("reading a public key", e))?;
    let hash = yunkey_crypto::sha256(spki.subject_public_key.raw_bytes());
    OctetString::new(&hash[..20]).map_err(|e| cert_err("encoding a key identifier", e))
}

fn time(at: SystemTime) -> Result<Time, ChipError> {
    Time::try_from(at).map_err(|e| cert_err("encoding a time", e))
}

fn serial() -> Result<SerialNumber, ChipError> {
    let mut s: [u8; 16] = yunkey_crypto::random_bytes();
    s[0] &= 0x7f; // positive
    s[0] |= 0x01; // no leading zero byte
    SerialNumber::new(&s).map_err(|e| cert_err("encoding a serial", e))
}

fn push<E: AsExtension>(
    out: &mut Vec<Extension>,
    subject: &Name,
    extension: &E,
) -> Result<(), ChipError> {
    let ext = extension
        .to_extension(subject, out)
        .map_err(|e| cert_err("encoding an extension", e))?;
    out.push(ext);
    Ok(())
}

/// Encodes `spec` for the key `subject_spki` (DER) and signs it with `issuer`; returns the
/// certificate's DER.
pub(super) fn issue(
    spec: &CertSpec,
    subject_spki: &[u8],
    issuer: &Issuer<'_>,
) -> Result<Vec<u8>, ChipError> {
    let subject = name(spec)?;
    let issuer_name = match issuer.name_der {
        Some(der) => Name::from_der(der).map_err(|e| cert_err("reading the issuer name", e))?,
        None => subject.clone(),
    };
    let now = SystemTime::now();
    let validity = Validity {
        not_before: time(now - Duration::from_secs(300))?,
        not_after: time(now + Duration::from_secs(spec.validity_secs.max(0) as u64))?,
    };
    let algorithm = AlgorithmIdentifierOwned {
        oid: match issuer.public_key.algorithm() {
            Algorithm::EcdsaP256 => ECDSA_WITH_SHA256,
            Algorithm::Sm2 => SM2_WITH_SM3,
        },
        parameters: None,
    };

    let mut extensions = Vec::new();
    if spec.ca {
        push(
            &mut extensions,
            &subject,
            &BasicConstraints {
                ca: true,
                path_len_constraint: Some(0),
            },
        )?;
        push(
            &mut extensions,
            &subject,
            &KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
        )?;
    } else {
        push(&mut extensions, &subject, &KeyUsage(spec.key_usage))?;
    }
    if !spec.extended_key_usage.is_empty() {
        push(
            &mut extensions,
            &subject,
            &ExtendedKeyUsage(spec.extended_key_usage.clone()),
        )?;
    }
    if !spec.uris.is_empty() {
        let names = spec
            .uris
            .iter()
            .map(|u| {
                Ia5String::new(u)
                    .map(GeneralName::UniformResourceIdentifier)
                    .map_err(|e| cert_err("encoding a URI name", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        push(&mut extensions, &subject, &SubjectAltName(names))?;
    }
    push(
        &mut extensions,
        &subject,
        &SubjectKeyIdentifier(key_identifier(subject_spki)?),
    )?;
    if issuer.name_der.is_some() {
        push(
            &mut extensions,
            &subject,
            &AuthorityKeyIdentifier {
                key_identifier: Some(key_identifier(&issuer.public_key.to_spki_der())?),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            },
        )?;
    }

    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: serial()?,
        signature: algorithm.clone(),
        issuer: issuer_name,
        validity,
        subject,
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(subject_spki)
            .map_err(|e| cert_err("reading the subject key", e))?,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let tbs_der = tbs
        .to_der()
        .map_err(|e| cert_err("encoding the certificate", e))?;
    // The to-be-signed bytes were built here from checked input.
    let signature = sign_checked(issuer.custody, issuer.key, &issuer.public_key, &tbs_der)?;
    Certificate {
        tbs_certificate: tbs,
        signature_algorithm: algorithm,
        signature: BitString::from_bytes(&signature)
            .map_err(|e| cert_err("encoding the signature", e))?,
    }
    .to_der()
    .map_err(|e| cert_err("encoding the certificate", e))
}
