//! Release manifests of the terminal software, and the self-check a terminal runs at start.
//!
//! A manifest (`<executable>.release.json` by default) is JSON:
//!
//! ```json
//! {
//!   "format": "yunkey-release/1",
//!   "release_id": "rel-…",
//!   "version": "1.2.3",
//!   "sha256": "<64 hex digits: SHA-256 of the executable>",
//!   "signature": "<base64 DER ECDSA by the code-signing key>",
//!   "certificate_chain": ["<base64 DER code-signing certificate>", "<base64 DER user CA>"]
//! }
//! ```
//!
//! [`Manifest::verify`] checks, in order: the format; that the release id is the one its
//! version and hash make ([`yunkey_crypto::release::release_id`]); that the file's SHA-256
//! is the one named; that the code-signing certificate is a code-signing certificate (extended
//! key usage codeSigning, not expired) issued by the user CA in the chain, which is
//! self-signed; and that the signature over the manifest message verifies with its key.
//! [`Manifest::check_issuer_of`] pins the chain's CA to the one that issued a registered
//! terminal's device certificate.
//!
//! What this can and cannot promise is in `docs/security.md` ("Signed terminal software"): a
//! patched binary can skip its own check; the cluster's release policy is the enforcement.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use der::{Decode, Encode};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thiserror::Error;
use x509_cert::Certificate;
use yunkey_crypto::ecdsa::PublicKey;
use yunkey_crypto::release::{self, Version, RELEASE_HEADER};
use yunkey_proto::v1::Release;

/// ecdsa-with-SHA256.
const ECDSA_SHA256: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
/// id-ce-extKeyUsage.
const EXT_KEY_USAGE: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.5.29.37");
/// id-kp-codeSigning.
const CODE_SIGNING: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");

/// Why a manifest or the file it names was refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The manifest could not be read or parsed.
    #[error("release manifest {path}: {reason}")]
    Unreadable {
        /// Its path.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The manifest is malformed or inconsistent in itself.
    #[error("release manifest is malformed: {0}")]
    Malformed(String),
    /// The file is not the one the manifest names.
    #[error("{file}: SHA-256 is {actual}, the release manifest names {expected}: this file is not the signed release (modified or replaced)")]
    HashMismatch {
        /// The file checked.
        file: String,
        /// Its SHA-256.
        actual: String,
        /// The manifest's.
        expected: String,
    },
    /// The certificate chain is not a code-signing certificate issued by the CA.
    #[error("release manifest's certificate chain is refused: {0}")]
    Certificate(String),
    /// The signature does not verify.
    #[error("release manifest's signature does not verify with its code-signing certificate")]
    BadSignature,
    /// The chain's CA is not the trust anchor the terminal pins.
    #[error("release manifest is signed under another CA than the one this terminal trusts ({0})")]
    UntrustedCa(String),
}

/// A release manifest, as written by `yunkey release sign`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// `yunkey-release/1`.
    pub format: String,
    /// The release id.
    pub release_id: String,
    /// `MAJOR.MINOR.PATCH`.
    pub version: String,
    /// Hex SHA-256 of the released file.
    pub sha256: String,
    /// Base64 DER ECDSA signature over the manifest message.
    pub signature: String,
    /// Base64 DER certificates: the code-signing certificate, then the user CA.
    pub certificate_chain: Vec<String>,
}

/// What a verified manifest says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The release id to send with device requests.
    pub release_id: String,
    /// The version.
    pub version: Version,
}

/// Where a terminal looks for its manifest by default: `<executable>.release.json`.
pub fn default_manifest_path(executable: &Path) -> PathBuf {
    let mut name = executable.as_os_str().to_owned();
    name.push(".release.json");
    PathBuf::from(name)
}

fn certificate(der_bytes: &[u8], what: &str) -> Result<Certificate, ManifestError> {
    Certificate::from_der(der_bytes)
        .map_err(|e| ManifestError::Certificate(format!("{what} does not parse: {e}")))
}

fn spki(cert: &Certificate) -> Result<PublicKey, ManifestError> {
    let der = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| ManifestError::Certificate(e.to_string()))?;
    PublicKey::from_spki_der(&der)
        .map_err(|_| ManifestError::Certificate("a key is not ECDSA P-256".into()))
}

/// Whether `cert` was signed by `issuer_key` (ECDSA P-256 with SHA-256).
fn issued_by(cert: &Certificate, issuer_key: &PublicKey) -> bool {
    if cert.signature_algorithm.oid != ECDSA_SHA256 {
        return false;
    }
    let Ok(tbs) = cert.tbs_certificate.to_der() else {
        return false;
    };
    let Some(sig) = cert.signature.as_bytes() else {
        return false;
    };
    issuer_key.verify_message(&tbs, sig).is_ok()
}

fn within_validity(cert: &Certificate, now: std::time::Duration) -> bool {
    let v = &cert.tbs_certificate.validity;
    v.not_before.to_unix_duration() <= now && now <= v.not_after.to_unix_duration()
}

fn is_code_signing(cert: &Certificate) -> bool {
    cert.tbs_certificate
        .extensions
        .iter()
        .flatten()
        .filter(|e| e.extn_id == EXT_KEY_USAGE)
        .filter_map(|e| {
            x509_cert::ext::pkix::ExtendedKeyUsage::from_der(e.extn_value.as_bytes()).ok()
        })
        .any(|eku| eku.0.contains(&CODE_SIGNING))
}

/// Whether the certificate `cert_der` (a device certificate, say) was issued by the CA
/// certificate `ca_der`.
pub fn certificate_issued_by(cert_der: &[u8], ca_der: &[u8]) -> bool {
    let (Ok(cert), Ok(ca)) = (
        Certificate::from_der(cert_der),
        Certificate::from_der(ca_der),
    ) else {
        return false;
    };
    spki(&ca).map(|k| issued_by(&cert, &k)).unwrap_or(false)
}

impl Manifest {
    /// The manifest of a release signed by the cluster.
    pub fn from_release(r: &Release) -> Self {
        Self {
            format: RELEASE_HEADER.to_owned(),
            release_id: r.release_id.clone(),
            version: r.version.clone(),
            sha256: hex::encode(&r.file_sha256),
            signature: B64.encode(&r.signature),
            certificate_chain: r.certificate_chain.iter().map(|c| B64.encode(c)).collect(),
        }
    }

    /// Pretty JSON with a final newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a manifest serializes");
        s.push('\n');
        s
    }

    /// Reads a manifest file.
    pub fn read(path: &Path) -> Result<Self, ManifestError> {
        let unreadable = |reason: String| ManifestError::Unreadable {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))
    }

    /// Checks that the chain's CA issued `device_certificate` (DER): the pin of a registered
    /// terminal, whose device certificate came from its cluster's user CA.
    pub fn check_issuer_of(&self, device_certificate: &[u8]) -> Result<(), ManifestError> {
        if certificate_issued_by(device_certificate, &self.ca_certificate()?) {
            Ok(())
        } else {
            Err(ManifestError::UntrustedCa(
                "that CA did not issue this terminal's device certificate".into(),
            ))
        }
    }

    /// The CA certificate (DER) at the end of the chain.
    pub fn ca_certificate(&self) -> Result<Vec<u8>, ManifestError> {
        let last = self
            .certificate_chain
            .last()
            .ok_or_else(|| ManifestError::Malformed("certificate_chain is empty".into()))?;
        B64.decode(last)
            .map_err(|_| ManifestError::Malformed("certificate_chain is not base64".into()))
    }

    /// Checks the manifest in itself and against `file_sha256` (see the module doc).
    pub fn verify(&self, file: &str, file_sha256: &[u8; 32]) -> Result<Verified, ManifestError> {
        if self.format != RELEASE_HEADER {
            return Err(ManifestError::Malformed(format!(
                "format is {:?}, expected {RELEASE_HEADER:?}",
                self.format
            )));
        }
        let version = Version::parse("version", &self.version)
            .map_err(|e| ManifestError::Malformed(e.to_string()))?;
        let expected: [u8; 32] = hex::decode(&self.sha256)
            .ok()
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| ManifestError::Malformed("sha256 is not 64 hex digits".into()))?;
        let message = release::manifest_message(&version, &expected);
        if release::release_id(&message) != self.release_id {
            return Err(ManifestError::Malformed(format!(
                "release_id {} is not the id of version {version} with this sha256",
                self.release_id
            )));
        }
        if !yunkey_crypto::ct_eq(file_sha256, &expected) {
            return Err(ManifestError::HashMismatch {
                file: file.to_owned(),
                actual: hex::encode(file_sha256),
                expected: self.sha256.clone(),
            });
        }
        let chain: Vec<Vec<u8>> = self
            .certificate_chain
            .iter()
            .map(|c| B64.decode(c))
            .collect::<Result<_, _>>()
            .map_err(|_| ManifestError::Malformed("certificate_chain is not base64".into()))?;
        let [leaf_der, ca_der] = chain.as_slice() else {
            return Err(ManifestError::Malformed(format!(
                "certificate_chain has {} certificates; expected the code-signing certificate and the user CA",
                chain.len()
            )));
        };
        let leaf = certificate(leaf_der, "the code-signing certificate")?;
        let ca = certificate(ca_der, "the CA certificate")?;
        let ca_key = spki(&ca)?;
        if !issued_by(&ca, &ca_key) {
            return Err(ManifestError::Certificate(
                "the CA certificate is not self-signed".into(),
            ));
        }
        if !issued_by(&leaf, &ca_key) {
            return Err(ManifestError::Certificate(
                "the code-signing certificate was not issued by the chain's CA".into(),
            ));
        }
        if !is_code_signing(&leaf) {
            return Err(ManifestError::Certificate(
                "the certificate is not for code signing (no extended key usage codeSigning)"
                    .into(),
            ));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        if !within_validity(&leaf, now) || !within_validity(&ca, now) {
            return Err(ManifestError::Certificate(
                "a certificate is expired or not yet valid".into(),
            ));
        }
        let signature = B64
            .decode(&self.signature)
            .map_err(|_| ManifestError::Malformed("signature is not base64".into()))?;
        spki(&leaf)?
            .verify_message(&message, &signature)
            .map_err(|_| ManifestError::BadSignature)?;
        Ok(Verified {
            release_id: self.release_id.clone(),
            version,
        })
    }
}

/// SHA-256 of a file, read in 1 MiB blocks.
pub fn file_sha256(path: &Path) -> std::io::Result<[u8; 32]> {
    use sha2::Digest as _;
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}
