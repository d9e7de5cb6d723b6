//! The trust anchors: the user CA certificates, one per algorithm (ECDSA P-256 and SM2), each
//! set write-once in every chip. A chip issues user and device certificates under an anchor
//! only with the CA key whose certificate it is ([`crate::activation`]'s certificate issuing
//! checks that the keys match).

use crate::ChipError;
use der::{Decode, Encode};
use x509_cert::Certificate;
use yunkey_crypto::sig::{Algorithm, VerifyingKey};
use yunkey_crypto::validate::InvalidField;

/// Longest certificate accepted, in bytes.
pub const MAX_CERTIFICATE_BYTES: usize = 16 * 1024;

/// A parsed trust anchor: a user CA certificate with an ECDSA P-256 or SM2 key.
#[derive(Debug, Clone)]
pub struct TrustAnchor {
    der: Vec<u8>,
    subject_der: Vec<u8>,
    public_key: VerifyingKey,
}

impl TrustAnchor {
    /// Parses a DER certificate and its P-256 or SM2 key.
    pub fn parse(der: &[u8]) -> Result<Self, ChipError> {
        let bad = |reason: &str| ChipError::Invalid(InvalidField::new("certificate", reason));
        if der.is_empty() || der.len() > MAX_CERTIFICATE_BYTES {
            return Err(bad("must be a DER X.509 certificate of 1..=16384 bytes"));
        }
        let cert = Certificate::from_der(der).map_err(|_| bad("is not a DER X.509 certificate"))?;
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|_| bad("has an unencodable public key"))?;
        let public_key = VerifyingKey::from_spki_der(&spki)
            .map_err(|_| bad("must carry an ECDSA P-256 or SM2 public key"))?;
        let subject_der = cert
            .tbs_certificate
            .subject
            .to_der()
            .map_err(|_| bad("has an unencodable subject"))?;
        Ok(Self {
            der: der.to_vec(),
            subject_der,
            public_key,
        })
    }

    /// The certificate's DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The CA's public key (SM2: with the default distinguishing ID).
    pub fn public_key(&self) -> &VerifyingKey {
        &self.public_key
    }

    /// The CA key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.public_key.algorithm()
    }

    /// DER of the CA certificate's subject name.
    pub fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }
}
