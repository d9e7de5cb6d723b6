//! The operator's admission of chips, as files.
//!
//! A chip process writes `identity.json` into its data directory (its id and transport public
//! key: nothing secret). The operator signs it with the domain's operator key, offline, with
//! `yunkey pki admit-chip`, and puts the result, `admission.json`, into the chip's data
//! directory, where the chip reports it to coordinators (read on every `GetInfo`, so no
//! restart is needed). Only a chip whose admission verifies under the domain's operator key
//! receives the security domain from another chip; a coordinator's identity cannot make one.

use anyhow::Context;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use yunkey_chip::{AdmissionSource, OperatorAdmission};
use yunkey_crypto::authz::chip_admission_message;
use yunkey_crypto::ecdsa::{PrivateKey, PublicKey};

/// A chip's public identity, written by the chip into its data directory.
pub const IDENTITY_FILE: &str = "identity.json";
/// The operator's admission, put into the chip's data directory by the operator.
pub const ADMISSION_FILE: &str = "admission.json";
/// Format version of both files.
const FORMAT: u32 = 1;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// `identity.json`: what an operator needs to admit a chip.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChipIdentity {
    /// Format version (1).
    pub format: u32,
    /// The chip's id.
    pub chip_id: String,
    /// Its transport key, SubjectPublicKeyInfo DER in base64.
    pub transport_key: String,
    /// SHA-256 of the transport key's DER, hex (what the chip logs at start-up).
    pub transport_key_sha256: String,
}

/// `admission.json`: the operator's signature over a chip's id and transport key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AdmissionFile {
    /// Format version (1).
    pub format: u32,
    /// The admitted chip.
    pub chip_id: String,
    /// SHA-256 of its transport key, hex.
    pub transport_key_sha256: String,
    /// The operator key, SubjectPublicKeyInfo DER in base64.
    pub operator_key: String,
    /// DER ECDSA signature, base64, over `yunkey-chip-admission/1` of id and transport key.
    pub signature: String,
}

/// Writes the chip's `identity.json` (public, mode 0644).
pub fn write_identity(dir: &Path, chip_id: &str, transport_spki: &[u8]) -> anyhow::Result<()> {
    let key = PublicKey::from_spki_der(transport_spki)?;
    let identity = ChipIdentity {
        format: FORMAT,
        chip_id: chip_id.to_owned(),
        transport_key: b64().encode(transport_spki),
        transport_key_sha256: key.fingerprint(),
    };
    let path = dir.join(IDENTITY_FILE);
    yunkey_store::write_file_atomic(&path, &serde_json::to_vec_pretty(&identity)?, 0o644)
        .with_context(|| format!("writing {}", path.display()))
}

/// Reads an `identity.json`.
pub fn read_identity(path: &Path) -> anyhow::Result<(ChipIdentity, Vec<u8>)> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let identity: ChipIdentity = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a chip identity file", path.display()))?;
    anyhow::ensure!(
        identity.format == FORMAT,
        "{} has format {}, this yunkey reads {FORMAT}",
        path.display(),
        identity.format
    );
    let spki = b64()
        .decode(&identity.transport_key)
        .with_context(|| format!("{}: transport_key is not base64", path.display()))?;
    let key = PublicKey::from_spki_der(&spki)
        .with_context(|| format!("{}: transport_key is not a P-256 key", path.display()))?;
    anyhow::ensure!(
        key.fingerprint() == identity.transport_key_sha256,
        "{}: transport_key_sha256 does not match transport_key",
        path.display()
    );
    Ok((identity, spki))
}

/// The operator's admission of a chip.
pub fn sign(
    operator: &PrivateKey,
    chip_id: &str,
    transport_spki: &[u8],
) -> anyhow::Result<AdmissionFile> {
    yunkey_crypto::validate::identifier("chip_id", chip_id)?;
    let transport = PublicKey::from_spki_der(transport_spki)?;
    let signature = operator.sign_message(&chip_admission_message(chip_id, transport_spki));
    Ok(AdmissionFile {
        format: FORMAT,
        chip_id: chip_id.to_owned(),
        transport_key_sha256: transport.fingerprint(),
        operator_key: b64().encode(operator.public_key().to_spki_der()),
        signature: b64().encode(signature),
    })
}

/// Writes an admission file.
pub fn write_admission(path: &Path, admission: &AdmissionFile) -> anyhow::Result<()> {
    yunkey_store::write_file_atomic(path, &serde_json::to_vec_pretty(admission)?, 0o644)
        .with_context(|| format!("writing {}", path.display()))
}

/// Reads the admission file at `path`, if there is a readable one.
fn read_admission(path: &Path) -> Option<OperatorAdmission> {
    let text = std::fs::read(path).ok()?;
    let parsed = serde_json::from_slice::<AdmissionFile>(&text)
        .ok()
        .filter(|a| a.format == FORMAT)
        .and_then(|a| {
            Some(OperatorAdmission {
                operator_key: b64().decode(&a.operator_key).ok()?,
                signature: b64().decode(&a.signature).ok()?,
            })
        });
    if parsed.is_none() {
        tracing::warn!(file = %path.display(), "the chip's admission file is not a yunkey admission; ignoring it");
    }
    parsed
}

/// The chip server's view of its admission file (`DATA/admission.json`, or `yunkey chip
/// --admission`), read on every `GetInfo`.
pub fn source(path: &Path) -> AdmissionSource {
    let path = path.to_owned();
    Arc::new(move || read_admission(&path))
}

/// Reads the operator key (PKCS#8 PEM).
pub fn load_operator_key(path: &Path) -> anyhow::Result<PrivateKey> {
    let pem = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    PrivateKey::from_pkcs8_pem(&pem)
        .with_context(|| format!("{} is not a PKCS#8 PEM P-256 key", path.display()))
}

/// Creates a new operator key at `path` (mode 0600); refuses to overwrite one.
pub fn create_operator_key(path: &Path) -> anyhow::Result<PrivateKey> {
    anyhow::ensure!(
        !path.exists(),
        "{} exists; an operator key is never overwritten (it admits every chip of its domain)",
        path.display()
    );
    let key = PrivateKey::generate();
    yunkey_store::write_file_atomic(path, key.to_pkcs8_pem().as_bytes(), 0o600)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(key)
}

/// The operator key at `path`, created on first use (for `yunkey dev`).
pub fn ensure_operator_key(path: &Path) -> anyhow::Result<PrivateKey> {
    if path.exists() {
        load_operator_key(path)
    } else {
        create_operator_key(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_admission_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let transport = PrivateKey::generate().public_key().to_spki_der();
        write_identity(dir.path(), "chip-7", &transport).unwrap();
        let (identity, spki) = read_identity(&dir.path().join(IDENTITY_FILE)).unwrap();
        assert_eq!((identity.chip_id.as_str(), &spki), ("chip-7", &transport));

        let op_path = dir.path().join("domain-operator-key.pem");
        let operator = create_operator_key(&op_path).unwrap();
        assert!(create_operator_key(&op_path).is_err(), "never overwritten");
        assert_eq!(
            load_operator_key(&op_path).unwrap().public_key(),
            operator.public_key()
        );
        let admission = sign(&operator, "chip-7", &transport).unwrap();
        write_admission(&dir.path().join(ADMISSION_FILE), &admission).unwrap();
        let got = source(&dir.path().join(ADMISSION_FILE))().expect("the admission is read");
        PublicKey::from_spki_der(&got.operator_key)
            .unwrap()
            .verify_message(
                &chip_admission_message("chip-7", &transport),
                &got.signature,
            )
            .expect("the admission verifies");

        std::fs::write(dir.path().join(ADMISSION_FILE), b"{}").unwrap();
        assert!(
            source(&dir.path().join(ADMISSION_FILE))().is_none(),
            "a bad file is ignored"
        );
    }
}
