//! The trust anchor: the user CA certificate, set write-once in every chip. A chip issues
//! user and device certificates under it only with the CA key whose certificate it is
//! ([`crate::activation`]'s certificate issuing checks that the keys match).

use crate::ChipError;
use der::{Decode, Encode};
use x509_cert::Certificate;
use yunkey_crypto::ecdsa::PublicKey;
use yunkey_crypto::validate::InvalidField;

/// Longest certificate accepted, in bytes.
pub const MAX_CERTIFICATE_BYTES: usize = 16 * 1024;

/// A parsed trust anchor: the user CA certificate with an ECDSA P-256 key.
#[derive(Debug, Clone)]
pub struct TrustAnchor {
    der: Vec<u8>,
    subject_der: Vec<u8>,
    public_key: PublicKey,
}

impl TrustAnchor {
    /// Parses a DER certificate and its P-256 key.
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
        let public_key = PublicKey::from_spki_der(&spki)
            .map_err(|_| bad("must carry an ECDSA P-256 public key"))?;
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

    /// The CA's public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// DER of the CA certificate's subject name.
    pub fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }
}
