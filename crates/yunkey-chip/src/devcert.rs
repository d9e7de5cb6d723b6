//! Device certificates: checked against the trust anchor (the user CA certificate) before a
//! chip accepts a device's authorization. The certificate's signature is verified once and
//! the result cached by the hash of its DER; validity and names are checked on every use.

use crate::ChipError;
use der::{Decode, Encode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;
use yunkey_crypto::ecdsa::PublicKey;
use yunkey_crypto::validate::InvalidField;
use yunkey_crypto::{names, Digest};

/// Longest device certificate accepted, in bytes.
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
}

/// A device certificate whose signature verified under the trust anchor.
#[derive(Debug, Clone)]
pub struct VerifiedDevice {
    /// The device's public key.
    pub public_key: PublicKey,
    uris: Vec<String>,
    not_before: i64,
    not_after: i64,
}

impl VerifiedDevice {
    /// Checks that the certificate is valid at `now` (Unix seconds) and names both ids.
    pub fn check(&self, now: i64, user_id: &str, device_id: &str) -> Result<(), ChipError> {
        if now < self.not_before || now > self.not_after {
            return Err(ChipError::DeviceCertificateNotValidNow);
        }
        let has = |uri: String| self.uris.contains(&uri);
        if !has(names::user_uri(user_id)) || !has(names::device_uri(device_id)) {
            return Err(ChipError::DeviceCertificateNames {
                user_id: user_id.to_owned(),
                device_id: device_id.to_owned(),
            });
        }
        Ok(())
    }
}

fn invalid(reason: &str) -> ChipError {
    ChipError::Invalid(InvalidField::new("device_certificate", reason))
}

/// Parses a device certificate and verifies its signature under `anchor`.
pub fn verify(anchor: &TrustAnchor, der: &[u8]) -> Result<VerifiedDevice, ChipError> {
    if der.is_empty() || der.len() > MAX_CERTIFICATE_BYTES {
        return Err(invalid(
            "must be a DER X.509 certificate of 1..=16384 bytes",
        ));
    }
    let cert = Certificate::from_der(der).map_err(|_| invalid("is not a DER X.509 certificate"))?;
    if cert.signature_algorithm.oid != der::oid::db::rfc5912::ECDSA_WITH_SHA_256 {
        return Err(ChipError::UntrustedDeviceCertificate {
            reason: "its signature algorithm is not ecdsa-with-SHA256",
        });
    }
    let issuer = cert
        .tbs_certificate
        .issuer
        .to_der()
        .map_err(|_| invalid("has an unencodable issuer"))?;
    if issuer != anchor.subject_der {
        return Err(ChipError::UntrustedDeviceCertificate {
            reason: "its issuer is not the trust anchor",
        });
    }
    let tbs = cert
        .tbs_certificate
        .to_der()
        .map_err(|_| invalid("has an unencodable body"))?;
    let signature = cert
        .signature
        .as_bytes()
        .ok_or_else(|| invalid("has a malformed signature"))?;
    anchor
        .public_key
        .verify_message(&tbs, signature)
        .map_err(|_| ChipError::UntrustedDeviceCertificate {
            reason: "its signature does not verify under the trust anchor",
        })?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|_| invalid("has an unencodable public key"))?;
    let public_key =
        PublicKey::from_spki_der(&spki).map_err(|_| invalid("must carry an ECDSA P-256 key"))?;
    let validity = &cert.tbs_certificate.validity;
    let secs = |t: x509_cert::time::Time| {
        i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
    };
    let mut uris = Vec::new();
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        if ext.extn_id != der::oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME {
            continue;
        }
        let san = SubjectAltName::from_der(ext.extn_value.as_bytes())
            .map_err(|_| invalid("has a malformed subject alternative name"))?;
        for name in san.0 {
            if let GeneralName::UniformResourceIdentifier(uri) = name {
                uris.push(uri.as_str().to_owned());
            }
        }
    }
    Ok(VerifiedDevice {
        public_key,
        uris,
        not_before: secs(validity.not_before),
        not_after: secs(validity.not_after),
    })
}

/// Verified device certificates by SHA-256 of their DER, bounded. Valid for one trust
/// anchor only (anchors are write-once, so a chip never needs to invalidate it).
#[derive(Debug)]
pub struct DeviceCertCache {
    map: Mutex<HashMap<Digest, Arc<VerifiedDevice>>>,
    capacity: usize,
}

impl DeviceCertCache {
    /// A cache of at most `capacity` certificates.
    pub fn new(capacity: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The verified certificate, from the cache or by verifying it now.
    pub fn get_or_verify(
        &self,
        anchor: &TrustAnchor,
        der: &[u8],
    ) -> Result<Arc<VerifiedDevice>, ChipError> {
        let key = yunkey_crypto::sha256(der);
        if let Some(v) = self.lock().get(&key) {
            return Ok(v.clone());
        }
        let verified = Arc::new(verify(anchor, der)?);
        let mut map = self.lock();
        if map.len() >= self.capacity {
            // Simple bound: start over. Re-verifying a certificate is cheap next to a
            // round trip, and the cache refills with the certificates in use.
            map.clear();
        }
        map.insert(key, verified.clone());
        Ok(verified)
    }

    /// How many certificates are cached.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<VerifiedDevice>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::UserCa;

    #[test]
    fn verified_once_then_cached() {
        let ca = UserCa::new("user CA");
        let anchor = TrustAnchor::parse(&ca.cert_der).unwrap();
        let phone = ca.issue_device("alice", "alice-phone");
        let cache = DeviceCertCache::new(2);
        let a = cache.get_or_verify(&anchor, &phone.cert_der).unwrap();
        let b = cache.get_or_verify(&anchor, &phone.cert_der).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "second use comes from the cache");
        assert_eq!(cache.len(), 1);
        let now = crate::testing::now_unix();
        a.check(now, "alice", "alice-phone").unwrap();
        assert!(matches!(
            a.check(now, "bob", "alice-phone"),
            Err(ChipError::DeviceCertificateNames { .. })
        ));
        // A certificate from another CA never enters the cache.
        let rogue = UserCa::new("user CA").issue_device("alice", "alice-phone");
        assert!(matches!(
            cache.get_or_verify(&anchor, &rogue.cert_der),
            Err(ChipError::UntrustedDeviceCertificate { .. })
        ));
        assert_eq!(cache.len(), 1);
        assert!(matches!(
            cache.get_or_verify(&anchor, b"junk"),
            Err(ChipError::Invalid(_))
        ));
        // Not a P-256 CA: refused as an anchor.
        assert!(TrustAnchor::parse(b"junk").is_err());
    }
}
