//! The signature activation module: every check that decides whether a chip may use a key,
//! the same for every [`KeyCustody`] backend.
//!
//! What it decides, and where:
//! - [`authorize`]: a user key signs only a canonical transaction that a device *bound to that
//!   key inside the chips* approved, before expiry, not a replay, with the user and device not
//!   revoked. The digest is computed here and only a [`crate::custody::CheckedDigest`] reaches
//!   the backend.
//! - [`binding_ops`]: a device is bound only with the one-time activation code whose hash the
//!   generating chip sealed into the key's binding, and a proof of possession of the device key;
//!   revocations raise the binding's seq, which never goes back.
//! - [`certs`]: a CA key signs only certificates this module builds from checked input: a user
//!   certificate for a key of the domain, a device certificate for a bound device. There is no
//!   way to have a CA key sign an arbitrary digest.
//! - [`manifest`]: a code-signing key signs only release manifests, whose message the chip
//!   builds itself; no other key signs one.
//! - [`domain`]: the domain secret goes only to a chip the domain's operator key admitted.
//!
//! State lives in a [`yunkey_store::Db`] given by the caller ([`store`]), every record sealed
//! under the custody's own key. Every domain, key and signature event is logged to the
//! `yunkey::audit` target with its outcome; key handles appear only at DEBUG level.

mod authorize;
mod binding_ops;
mod certs;
mod domain;
mod keys;
mod manifest;
mod store;
#[cfg(feature = "test-key-scalars")]
pub mod test_scalars;
mod x509;

use crate::anchor::TrustAnchor;
use crate::custody::KeyCustody;
use crate::replay::ReplayGuard;
use crate::wrapped::DomainKeys;
use crate::{
    BindDevice, ChipAdmission, ChipBackend, ChipError, ChipInfo, ExportedDomain, GenerateKey,
    GeneratedKey, IssueCertificate, KeyPurpose, Rebound, Revoke, SetActivation, SignAuthorized,
    SignManifest, Signed,
};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use store::Store;
use yunkey_crypto::cipher::Cipher;
use yunkey_crypto::ecdsa::{PrivateKey, PublicKey};
use yunkey_crypto::seal::SealKey;
use yunkey_crypto::validate;
use yunkey_store::Db;

const REPLAY_GUARD: usize = 100_000;

/// A chip's identity and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChipConfig {
    /// The chip's id (an identifier); stored on first open and checked on every later one.
    pub chip_id: String,
    /// How many keys the chip may hold.
    pub capacity: u64,
    /// Failure zone, reported for placement.
    pub zone: String,
}

/// The security domain as this chip holds it.
#[derive(Default)]
struct DomainState {
    secret: Option<SealKey>,
    keys: Option<DomainKeys>,
    operator: Option<(PublicKey, Vec<u8>)>,
    /// The P-256 user CA's certificate (it travels in the domain envelope).
    anchor: Option<Arc<TrustAnchor>>,
    /// The SM2 user CA's certificate.
    sm2_anchor: Option<Arc<TrustAnchor>>,
}

impl DomainState {
    /// The trust anchor of `algorithm`'s user CA, if set.
    fn anchor(&self, algorithm: yunkey_crypto::sig::Algorithm) -> Option<Arc<TrustAnchor>> {
        match algorithm {
            yunkey_crypto::sig::Algorithm::EcdsaP256 => self.anchor.clone(),
            yunkey_crypto::sig::Algorithm::Sm2 => self.sm2_anchor.clone(),
        }
    }
}

/// A chip: the activation module over a key custody and a database.
pub struct ActivationModule {
    config: ChipConfig,
    custody: Arc<dyn KeyCustody>,
    store: Store,
    transport: PrivateKey,
    state: RwLock<DomainState>,
    /// Number of keys held; the lock also serialises every change to key records, so the
    /// capacity check is exact and a binding change is a clean read-modify-write.
    writes: Mutex<u64>,
    replay: ReplayGuard,
}

impl fmt::Debug for ActivationModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActivationModule")
            .field("chip_id", &self.config.chip_id)
            .field("custody", &self.custody.describe())
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl ActivationModule {
    /// Opens the chip whose state is in `db` (creating its identity on first use), with its
    /// keys kept by `custody`.
    pub fn open(
        db: Db,
        custody: Arc<dyn KeyCustody>,
        config: ChipConfig,
    ) -> Result<Self, ChipError> {
        validate::identifier("chip_id", &config.chip_id)?;
        let store = Store::open(db, &config.chip_id)?;
        let transport = store.load_or_create_transport(&*custody)?;
        let state = store.load_domain(&*custody)?;
        let used = store.key_count();
        tracing::info!(
            chip = %config.chip_id,
            custody = %custody.describe(),
            transport_key = %transport.public_key().fingerprint(),
            "chip opened; compare the transport key fingerprint with the one the operator admits"
        );
        Ok(Self {
            config,
            custody,
            store,
            transport,
            state: RwLock::new(state),
            writes: Mutex::new(used),
            replay: ReplayGuard::new(REPLAY_GUARD),
        })
    }

    /// The chip's id.
    pub fn chip_id(&self) -> &str {
        &self.config.chip_id
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, DomainState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, DomainState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_writes(&self) -> std::sync::MutexGuard<'_, u64> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn domain_keys(&self) -> Result<DomainKeys, ChipError> {
        self.read_state().keys.clone().ok_or(ChipError::NotInDomain)
    }

    /// Logs one audited event with its outcome (never a key handle; that goes to DEBUG).
    fn audit<T>(&self, event: &str, subject: &str, handle: &str, result: &Result<T, ChipError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        tracing::info!(target: "yunkey::audit", chip = %self.config.chip_id, event, subject, outcome);
        tracing::debug!(target: "yunkey::audit", chip = %self.config.chip_id, event, handle, outcome);
    }
}

impl ChipBackend for ActivationModule {
    fn info(&self) -> Result<ChipInfo, ChipError> {
        let state = self.read_state();
        Ok(ChipInfo {
            chip_id: self.config.chip_id.clone(),
            capacity: self.config.capacity,
            used: *self.lock_writes(),
            zone: self.config.zone.clone(),
            transport_public_key: self.transport.public_key().to_spki_der(),
            domain_id: state.secret.as_ref().map(SealKey::fingerprint),
            trust_anchor: state.anchor.as_ref().map(|a| a.der().to_vec()),
            sm2_trust_anchor: state.sm2_anchor.as_ref().map(|a| a.der().to_vec()),
            operator_key: state.operator.as_ref().map(|(_, der)| der.clone()),
            domain_cipher: state.keys.as_ref().map(DomainKeys::cipher),
            custody: self.custody.describe(),
        })
    }

    fn init_domain(
        &self,
        operator_key: &[u8],
        admission: &[u8],
        cipher: Cipher,
    ) -> Result<String, ChipError> {
        let r = self.init_domain_checked(operator_key, admission, cipher);
        self.audit("domain_init", "", "", &r);
        r
    }

    fn export_domain(&self, recipient: &ChipAdmission) -> Result<ExportedDomain, ChipError> {
        let r = self.export_domain_checked(recipient);
        self.audit("domain_export", &recipient.chip_id, "", &r);
        r
    }

    fn import_domain(&self, envelope: &[u8]) -> Result<String, ChipError> {
        let r = self.import_domain_checked(envelope);
        self.audit("domain_import", "", "", &r);
        r
    }

    fn set_trust_anchor(&self, cert_der: &[u8]) -> Result<(), ChipError> {
        let r = self.set_trust_anchor_checked(cert_der);
        self.audit("trust_anchor_set", "", "", &r);
        r
    }

    fn generate_key(&self, request: &GenerateKey) -> Result<GeneratedKey, ChipError> {
        let r = self.generate_checked(request);
        let handle = r.as_ref().map(|g| g.handle.as_str()).unwrap_or("");
        self.audit("key_generate", &request.user_id, handle, &r);
        r
    }

    fn bind_device(&self, request: &BindDevice) -> Result<Rebound, ChipError> {
        let r = self.bind_device_checked(request);
        self.audit("device_bind", &request.user_id, &request.key_handle, &r);
        r
    }

    fn update_binding(&self, handle: &str, wrapped: &[u8]) -> Result<Rebound, ChipError> {
        let r = self.update_binding_checked(handle, wrapped);
        self.audit("binding_update", "", handle, &r);
        r
    }

    fn revoke(&self, request: &Revoke) -> Result<Rebound, ChipError> {
        let r = self.revoke_checked(request);
        let subject = match &request.device_id {
            Some(d) => format!("{}/{d}", request.user_id),
            None => request.user_id.clone(),
        };
        self.audit("revoke", &subject, &request.key_handle, &r);
        r
    }

    fn set_activation(&self, request: &SetActivation) -> Result<Rebound, ChipError> {
        let r = self.set_activation_checked(request);
        self.audit("activation_set", &request.user_id, &request.key_handle, &r);
        r
    }

    fn signs_in_memory(&self) -> bool {
        self.custody.signs_in_memory()
    }

    fn sign_authorized(&self, request: &SignAuthorized) -> Result<Signed, ChipError> {
        let tx_hash = yunkey_crypto::sha256(&request.canonical_transaction);
        let r = self.sign_authorized_checked(request, &tx_hash);
        let outcome = match &r {
            Ok(_) => "signed",
            Err(e) => e.kind(),
        };
        tracing::info!(
            target: "yunkey::audit",
            chip = %self.config.chip_id,
            event = "sign_authorized",
            user = %request.user_id,
            device = %request.device_id,
            tx_hash = %hex::encode(tx_hash),
            outcome,
        );
        r
    }

    fn issue_certificate(&self, request: &IssueCertificate) -> Result<Vec<u8>, ChipError> {
        let r = self.issue_certificate_checked(request);
        self.audit(
            "certificate_issue",
            certs::subject_label(&request.subject),
            &request.ca_key_handle,
            &r,
        );
        r
    }

    fn wrap_key(&self, handle: &str) -> Result<Vec<u8>, ChipError> {
        let r = self.wrap_checked(handle);
        self.audit("key_wrap", "", handle, &r);
        r
    }

    fn unwrap_key(
        &self,
        wrapped: &[u8],
        purpose: KeyPurpose,
        user_id: &str,
    ) -> Result<GeneratedKey, ChipError> {
        let r = self.unwrap_checked(wrapped, purpose, user_id);
        let handle = r.as_ref().map(|g| g.handle.as_str()).unwrap_or("");
        self.audit("key_unwrap", user_id, handle, &r);
        r
    }

    fn delete_key(&self, handle: &str) -> Result<bool, ChipError> {
        let r = self.delete_checked(handle);
        self.audit("key_delete", "", handle, &r);
        r
    }

    fn list_keys(&self, after: &str, limit: usize) -> Result<Vec<crate::KeyListing>, ChipError> {
        self.list_checked(after, limit)
    }

    fn sign_manifest(&self, request: &SignManifest) -> Result<Signed, ChipError> {
        let r = self.sign_manifest_checked(request);
        let outcome = match &r {
            Ok(_) => "signed",
            Err(e) => e.kind(),
        };
        tracing::info!(
            target: "yunkey::audit",
            chip = %self.config.chip_id,
            event = "sign_manifest",
            version = %request.version,
            file_sha256 = %hex::encode(request.file_sha256),
            outcome,
        );
        tracing::debug!(target: "yunkey::audit", chip = %self.config.chip_id, event = "sign_manifest", handle = %request.key_handle, outcome);
        r
    }
}

#[cfg(test)]
mod tests {
    //! The soft chip on disk: what the files hold, and what survives a restart.
    use super::*;
    use crate::testing::{self, ChipCa, Device, Operator};
    use crate::SoftChip;
    use std::path::{Path, PathBuf};
    use zeroize::Zeroizing;

    pub(super) fn config(id: &str) -> ChipConfig {
        ChipConfig {
            chip_id: id.into(),
            capacity: 8,
            zone: "zone-a".into(),
        }
    }

    fn all_files(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                all_files(&path, out);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }

    /// The soft custody's key reference is the scalar itself.
    fn secret(chip: &ActivationModule, handle: &str) -> Zeroizing<Vec<u8>> {
        let record = chip.store.load(&*chip.custody, handle).unwrap();
        Zeroizing::new(record.key_ref.as_bytes().to_vec())
    }

    #[test]
    fn no_private_scalar_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let chip = SoftChip::open(dir.path(), config("chip-1")).unwrap();
        Operator::new().init_domain(&chip);
        let mut secrets: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        for i in 0..4 {
            let (k, _) = testing::enrol(&chip, &format!("user-{i}"));
            secrets.push(secret(&chip, &k.handle));
        }
        let ca = ChipCa::create(&chip, "CA");
        secrets.push(secret(&chip, &ca.key.handle));
        secrets.push(chip.transport.to_secret_bytes());
        let state = chip.read_state();
        secrets.push(Zeroizing::new(
            state.secret.as_ref().unwrap().expose().to_vec(),
        ));
        secrets.push(Zeroizing::new(
            state.keys.as_ref().unwrap().kek().expose().to_vec(),
        ));
        drop(state);
        chip.store.flush().unwrap();
        let mut files = Vec::new();
        all_files(dir.path(), &mut files);
        assert!(files.len() > 1, "the store wrote files");
        for (path, data) in &files {
            for s in &secrets {
                assert_eq!(s.len(), 32);
                assert!(
                    !data.windows(32).any(|w| w == &s[..]),
                    "a secret appears in {}",
                    path.display()
                );
                let hex = hex::encode(&s[..]);
                assert!(
                    !data.windows(64).any(|w| w == hex.as_bytes()),
                    "a hex secret appears in {}",
                    path.display()
                );
            }
        }
        let debug = format!("{chip:?} {:?}", chip.custody.describe());
        assert!(secrets
            .iter()
            .all(|s| !debug.contains(&hex::encode(&s[..]))));
    }

    #[test]
    fn restart_keeps_keys_bindings_domain_and_anchor() {
        let dir = tempfile::tempdir().unwrap();
        let phone = Device::new("alice");
        let operator = Operator::new();
        let (domain, key, transport, anchor) = {
            let chip = SoftChip::open(dir.path(), config("chip-1")).unwrap();
            let domain = operator.init_domain(&chip);
            let ca = ChipCa::create(&chip, "CA");
            let (key, code) = testing::enrol(&chip, "alice");
            chip.bind_device(&phone.bind_request(&key.handle, &code))
                .unwrap();
            (
                domain,
                key,
                chip.info().unwrap().transport_public_key,
                ca.cert_der,
            )
        };
        let chip = SoftChip::open(dir.path(), config("chip-1")).unwrap();
        let info = chip.info().unwrap();
        assert_eq!(info.domain_id.as_deref(), Some(domain.as_str()));
        assert_eq!(info.trust_anchor.as_deref(), Some(anchor.as_slice()));
        assert_eq!(info.operator_key, Some(operator.public_spki()));
        assert_eq!(info.transport_public_key, transport);
        assert_eq!(info.used, 2);
        let (tx, hash) = testing::canonical_tx("7", 60);
        let s = chip
            .sign_authorized(&phone.request(&key.handle, &tx))
            .unwrap();
        PublicKey::from_spki_der(&key.public_key_spki)
            .unwrap()
            .verify_digest(&hash, &s.signature_der)
            .unwrap();
        drop(chip);
        let err = SoftChip::open(dir.path(), config("chip-2")).unwrap_err();
        assert!(matches!(err, ChipError::ChipIdMismatch { .. }), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn master_key_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        SoftChip::open(dir.path(), config("chip-1")).unwrap();
        let meta = std::fs::metadata(dir.path().join("master.key")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
    }

    #[test]
    fn records_cannot_be_swapped() {
        let dir = tempfile::tempdir().unwrap();
        let chip = SoftChip::open(dir.path(), config("chip-1")).unwrap();
        Operator::new().init_domain(&chip);
        let (a, _) = testing::enrol(&chip, "alice");
        let (b, _) = testing::enrol(&chip, "bob");
        // Copy a's record under b's handle: it no longer opens, and nothing signs or wraps.
        let tree = chip.store.keys_tree();
        let rec = tree.get(a.handle.as_bytes()).unwrap().unwrap();
        tree.insert(b.handle.as_bytes(), &rec).unwrap();
        let err = chip.wrap_key(&b.handle).unwrap_err();
        assert!(matches!(err, ChipError::Storage { .. }), "{err}");
        // Flipping any byte of a record breaks it too.
        let mut rec = tree.get(a.handle.as_bytes()).unwrap().unwrap();
        let n = rec.len();
        rec[n - 1] ^= 1;
        tree.insert(a.handle.as_bytes(), &rec).unwrap();
        assert!(chip.wrap_key(&a.handle).is_err());
    }

    #[test]
    fn a_format_1_directory_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Db::open_sled(dir.path().join("store")).unwrap();
            db.tree("meta")
                .unwrap()
                .insert(b"chip_id", b"chip-1")
                .unwrap();
            db.flush().unwrap();
        }
        let err = SoftChip::open(dir.path(), config("chip-1")).unwrap_err();
        assert!(err.to_string().contains("format 1"), "{err}");
    }

    /// A writer that keeps what the subscriber prints.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn info_logs_audit_every_event_without_key_handles() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        let dir = tempfile::tempdir().unwrap();
        let handles = tracing::subscriber::with_default(subscriber, || {
            let chip = SoftChip::open(dir.path(), config("chip-1")).unwrap();
            let operator = Operator::new();
            operator.init_domain(&chip);
            let (key, code) = testing::enrol(&chip, "alice");
            let phone = Device::new("alice");
            chip.bind_device(&phone.bind_request(&key.handle, &code))
                .unwrap();
            let (tx, _) = testing::canonical_tx("1", 60);
            chip.sign_authorized(&phone.request(&key.handle, &tx))
                .unwrap();
            let wrapped = chip.wrap_key(&key.handle).unwrap();
            let copy = chip
                .unwrap_key(&wrapped, KeyPurpose::User, "alice")
                .unwrap();
            let _ = chip.export_domain(&Operator::new().admit(&chip));
            chip.delete_key(&copy.handle).unwrap();
            vec![key.handle, copy.handle]
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        for event in [
            "domain_init",
            "key_generate",
            "device_bind",
            "sign_authorized",
            "key_wrap",
            "key_unwrap",
            "domain_export",
            "key_delete",
        ] {
            assert!(text.contains(event), "{event} is audited:\n{text}");
        }
        assert!(
            text.contains("admission_refused"),
            "the refused export is audited"
        );
        for h in handles {
            assert!(
                !text.contains(&h),
                "a key handle is in an INFO log:\n{text}"
            );
        }
    }
}
