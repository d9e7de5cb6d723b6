//! The soft chip: a software [`ChipBackend`] in a directory, for development and tests.
//!
//! Layout of the directory:
//! - `master.key`: 32 random bytes (mode 0600), the key every record is sealed under.
//! - `store/`: a yunkey-store (sled) database with two trees:
//!   - `meta`: the chip id (plain), and sealed under the master key: the transport private
//!     key, the domain key and the trust anchor (sealed for integrity).
//!   - `keys`: handle -> `purpose (1) || user_id (2-byte length prefixed) || sealed scalar`,
//!     the scalar sealed under the master key with associated data binding chip id, handle,
//!     purpose and user id, so records cannot be moved between handles, chips or owners.
//!
//! No private scalar is ever written in the clear; in memory scalars live only in
//! [`PrivateKey`] or `Zeroizing` buffers.

use crate::devcert::{DeviceCertCache, TrustAnchor};
use crate::replay::ReplayGuard;
use crate::wrapped::{self, put_lp, take_lp};
use crate::{
    ChipBackend, ChipError, ChipInfo, ExportedDomain, GeneratedKey, KeyPurpose, SignAuthorized,
    Signed,
};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use yunkey_crypto::ecdsa::{PrivateKey, PublicKey};
use yunkey_crypto::seal::SealKey;
use yunkey_crypto::validate::{self, InvalidField};
use yunkey_crypto::{authz, envelope, tx, Digest};
use yunkey_store::{Batch, Db, Tree};
use zeroize::Zeroizing;

/// Context of the domain envelope ([`envelope::seal_to`]).
pub const DOMAIN_ENVELOPE_CONTEXT: &[u8] = b"yunkey-domain/1";
const MASTER_KEY_FILE: &str = "master.key";
const STORE_DIR: &str = "store";
const META_CHIP_ID: &[u8] = b"chip_id";
const META_TRANSPORT: &[u8] = b"transport_key";
const META_DOMAIN: &[u8] = b"domain_key";
const META_ANCHOR: &[u8] = b"trust_anchor";
const DEVICE_CERT_CACHE: usize = 10_000;
const REPLAY_GUARD: usize = 100_000;

/// Configuration of a soft chip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftChipConfig {
    /// The chip's id (an identifier); stored on first open and checked on every later one.
    pub chip_id: String,
    /// How many keys the chip may hold.
    pub capacity: u64,
    /// Failure zone, reported for placement.
    pub zone: String,
}

#[derive(Default)]
struct DomainState {
    domain: Option<SealKey>,
    anchor: Option<Arc<TrustAnchor>>,
}

/// A software chip in a directory. See the module documentation for its layout.
pub struct SoftChip {
    config: SoftChipConfig,
    dir: PathBuf,
    db: Db,
    meta: Tree,
    keys: Tree,
    master: SealKey,
    transport: PrivateKey,
    state: RwLock<DomainState>,
    /// Number of keys held; the lock also serialises key creation and deletion so the
    /// capacity check is exact.
    used: Mutex<u64>,
    certs: DeviceCertCache,
    replay: ReplayGuard,
}

impl fmt::Debug for SoftChip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftChip")
            .field("chip_id", &self.config.chip_id)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Writes a private file atomically: temp file (mode 0600), fsync, rename, fsync the
/// directory. A crash leaves either no file or the complete one.
fn write_private_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn load_or_create_master(dir: &Path) -> Result<SealKey, ChipError> {
    let path = dir.join(MASTER_KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            SealKey::from_bytes(&bytes).map_err(|_| {
                ChipError::storage("reading the master key", "master.key is not 32 bytes")
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SealKey::generate();
            write_private_file(&path, key.expose())
                .map_err(|e| ChipError::storage("writing the master key", e))?;
            Ok(key)
        }
        Err(e) => Err(ChipError::storage("reading the master key", e)),
    }
}

fn context(label: &str, chip_id: &str) -> Vec<u8> {
    let mut c = label.as_bytes().to_vec();
    put_lp(&mut c, chip_id.as_bytes());
    c
}

fn new_handle() -> String {
    hex::encode(yunkey_crypto::random_bytes::<16>())
}

fn check_owner(purpose: KeyPurpose, user_id: &str) -> Result<(), ChipError> {
    match purpose {
        KeyPurpose::User => validate::identifier("user_id", user_id)?,
        KeyPurpose::Ca if !user_id.is_empty() => {
            return Err(InvalidField::new("user_id", "must be empty for a CA key").into())
        }
        KeyPurpose::Ca => {}
    }
    Ok(())
}

/// A key record as read from the store, scalar still sealed.
struct Record {
    handle: String,
    purpose: KeyPurpose,
    user_id: String,
    sealed: Vec<u8>,
}

impl SoftChip {
    /// Opens (creating on first use) the chip in `dir`.
    pub fn open(dir: impl AsRef<Path>, config: SoftChipConfig) -> Result<Self, ChipError> {
        let dir = dir.as_ref().to_owned();
        validate::identifier("chip_id", &config.chip_id)?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| ChipError::storage("creating the chip directory", e))?;
        let master = load_or_create_master(&dir)?;
        let db = Db::open_sled(dir.join(STORE_DIR))
            .map_err(|e| ChipError::storage("opening the key store", e))?;
        let meta = db.tree("meta")?;
        let keys = db.tree("keys")?;
        let chip_id = config.chip_id.clone();
        let transport_ctx = context("yunkey-soft-transport/1", &chip_id);
        let transport = match meta.get(META_CHIP_ID)? {
            Some(stored) => {
                if stored != chip_id.as_bytes() {
                    return Err(ChipError::ChipIdMismatch {
                        stored: String::from_utf8_lossy(&stored).into_owned(),
                        configured: chip_id,
                    });
                }
                let sealed = meta.get(META_TRANSPORT)?.ok_or_else(|| {
                    ChipError::storage("opening the chip", "transport key missing")
                })?;
                let secret = master.open(&transport_ctx, &sealed).map_err(|_| {
                    ChipError::storage(
                        "opening the chip",
                        "transport key does not open under master key",
                    )
                })?;
                PrivateKey::from_secret_bytes(&secret).map_err(|_| {
                    ChipError::storage("opening the chip", "transport key is corrupt")
                })?
            }
            None => {
                let transport = PrivateKey::generate();
                let mut batch = Batch::new();
                batch.insert(META_CHIP_ID, chip_id.as_bytes());
                batch.insert(
                    META_TRANSPORT,
                    master.seal(&transport_ctx, &transport.to_secret_bytes()),
                );
                meta.apply(batch)?;
                // Durability point: the chip's identity and transport key exist before
                // anyone can learn the transport public key.
                db.flush()?;
                transport
            }
        };
        let mut state = DomainState::default();
        if let Some(sealed) = meta.get(META_DOMAIN)? {
            let bytes = master
                .open(&context("yunkey-soft-domain/1", &chip_id), &sealed)
                .map_err(|_| {
                    ChipError::storage(
                        "opening the chip",
                        "domain key does not open under master key",
                    )
                })?;
            state.domain =
                Some(SealKey::from_bytes(&bytes).map_err(|_| {
                    ChipError::storage("opening the chip", "domain key is corrupt")
                })?);
        }
        if let Some(sealed) = meta.get(META_ANCHOR)? {
            let der = master
                .open(&context("yunkey-soft-anchor/1", &chip_id), &sealed)
                .map_err(|_| {
                    ChipError::storage(
                        "opening the chip",
                        "trust anchor does not open under master key",
                    )
                })?;
            state.anchor = Some(Arc::new(TrustAnchor::parse(&der).map_err(|_| {
                ChipError::storage("opening the chip", "trust anchor is corrupt")
            })?));
        }
        let used = keys.len() as u64;
        Ok(Self {
            config,
            dir,
            db,
            meta,
            keys,
            master,
            transport,
            state: RwLock::new(state),
            used: Mutex::new(used),
            certs: DeviceCertCache::new(DEVICE_CERT_CACHE),
            replay: ReplayGuard::new(REPLAY_GUARD),
        })
    }

    /// The chip's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, DomainState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, DomainState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_used(&self) -> std::sync::MutexGuard<'_, u64> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn domain_key(&self) -> Result<SealKey, ChipError> {
        self.read_state()
            .domain
            .clone()
            .ok_or(ChipError::NotInDomain)
    }

    fn record_aad(&self, handle: &str, purpose: KeyPurpose, user_id: &str) -> Vec<u8> {
        let mut aad = context("yunkey-soft-key/1", &self.config.chip_id);
        put_lp(&mut aad, handle.as_bytes());
        aad.push(purpose.to_byte());
        put_lp(&mut aad, user_id.as_bytes());
        aad
    }

    fn encode_record(
        &self,
        handle: &str,
        purpose: KeyPurpose,
        user_id: &str,
        key: &PrivateKey,
    ) -> Vec<u8> {
        let mut out = vec![purpose.to_byte()];
        put_lp(&mut out, user_id.as_bytes());
        let aad = self.record_aad(handle, purpose, user_id);
        out.extend_from_slice(&self.master.seal(&aad, &key.to_secret_bytes()));
        out
    }

    /// Reads a record; its metadata is authenticated only when [`Self::open_record`] runs.
    fn load(&self, handle: &str) -> Result<Record, ChipError> {
        validate::identifier("key_handle", handle)?;
        let bytes = self
            .keys
            .get(handle.as_bytes())?
            .ok_or_else(|| ChipError::UnknownKey {
                handle: handle.to_owned(),
            })?;
        let corrupt = || ChipError::storage("reading a key", format!("record {handle} is corrupt"));
        let purpose = bytes
            .first()
            .and_then(|b| KeyPurpose::from_byte(*b))
            .ok_or_else(corrupt)?;
        let (user, sealed) = take_lp(&bytes[1..]).ok_or_else(corrupt)?;
        let user_id = std::str::from_utf8(user).map_err(|_| corrupt())?.to_owned();
        Ok(Record {
            handle: handle.to_owned(),
            purpose,
            user_id,
            sealed: sealed.to_vec(),
        })
    }

    /// Opens the record's scalar; this authenticates handle, purpose and user id too.
    fn open_record(&self, rec: &Record) -> Result<PrivateKey, ChipError> {
        let aad = self.record_aad(&rec.handle, rec.purpose, &rec.user_id);
        let secret = self.master.open(&aad, &rec.sealed).map_err(|_| {
            ChipError::storage(
                "reading a key",
                format!("record {} fails authentication", rec.handle),
            )
        })?;
        PrivateKey::from_secret_bytes(&secret).map_err(|_| {
            ChipError::storage("reading a key", format!("record {} is corrupt", rec.handle))
        })
    }

    /// Stores a new key under a fresh handle, within capacity, durably.
    fn store_new(
        &self,
        purpose: KeyPurpose,
        user_id: &str,
        key: &PrivateKey,
        domain: &SealKey,
    ) -> Result<GeneratedKey, ChipError> {
        let mut used = self.lock_used();
        if *used >= self.config.capacity {
            return Err(ChipError::Full {
                capacity: self.config.capacity,
            });
        }
        let handle = new_handle();
        let record = self.encode_record(&handle, purpose, user_id, key);
        self.keys.insert(handle.as_bytes(), &record)?;
        // Durability point: the key is on disk before its handle is handed out.
        self.db.flush()?;
        *used += 1;
        Ok(GeneratedKey {
            public_key_spki: key.public_key().to_spki_der(),
            wrapped_key: wrapped::wrap(domain, purpose, user_id, key),
            handle,
        })
    }

    fn sign_authorized_checked(
        &self,
        req: &SignAuthorized,
        tx_hash: &Digest,
    ) -> Result<Signed, ChipError> {
        // 1. The key exists, is a user key, and belongs to the requested user.
        let rec = self.load(&req.key_handle)?;
        if rec.purpose != KeyPurpose::User {
            return Err(ChipError::NotAUserKey);
        }
        if !yunkey_crypto::ct_eq(rec.user_id.as_bytes(), req.user_id.as_bytes()) {
            return Err(ChipError::UserMismatch);
        }
        validate::identifier("device_id", &req.device_id)?;
        // 2. The transaction is canonical and 3. its authorization is current.
        let transaction = tx::decode(&req.canonical_transaction)?;
        let now = now_unix();
        tx::check_expiry(
            transaction.expires_at,
            now,
            tx::MAX_AUTHORIZATION_LIFETIME_SECS,
        )?;
        // 4. The device certificate chains to the trust anchor, is valid now and names
        //    this user and device.
        let anchor = self
            .read_state()
            .anchor
            .clone()
            .ok_or(ChipError::TrustAnchorNotSet)?;
        let device = self.certs.get_or_verify(&anchor, &req.device_certificate)?;
        device.check(now, &req.user_id, &req.device_id)?;
        // 5. The device approved exactly this transaction (hash computed here).
        let message = authz::authorization_message(&req.user_id, &req.device_id, tx_hash);
        device
            .public_key
            .verify_message(&message, &req.authorization_signature)
            .map_err(|_| ChipError::BadAuthorization)?;
        // 6. Replay guard: a repeat with the same key gets the same signature back.
        if let Some(signature_der) = self.replay.check(tx_hash, &req.key_handle, now)? {
            return Ok(Signed {
                signature_der,
                digest: *tx_hash,
            });
        }
        // 7. Sign exactly the hash computed above.
        let key = self.open_record(&rec)?;
        let signature_der = key.sign_digest(tx_hash);
        drop(key);
        self.replay.record(
            *tx_hash,
            &req.key_handle,
            &signature_der,
            transaction.expires_at,
            now,
        );
        Ok(Signed {
            signature_der,
            digest: *tx_hash,
        })
    }

    /// Test-only: the private scalar of a key (to prove it never reaches the disk).
    #[cfg(test)]
    pub(crate) fn secret_for_test(&self, handle: &str) -> Zeroizing<Vec<u8>> {
        let rec = self.load(handle).unwrap();
        self.open_record(&rec).unwrap().to_secret_bytes()
    }
}

impl ChipBackend for SoftChip {
    fn info(&self) -> Result<ChipInfo, ChipError> {
        let state = self.read_state();
        Ok(ChipInfo {
            chip_id: self.config.chip_id.clone(),
            capacity: self.config.capacity,
            used: *self.lock_used(),
            zone: self.config.zone.clone(),
            transport_public_key: self.transport.public_key().to_spki_der(),
            domain_id: state.domain.as_ref().map(SealKey::fingerprint),
            trust_anchor: state.anchor.as_ref().map(|a| a.der().to_vec()),
        })
    }

    fn init_domain(&self) -> Result<String, ChipError> {
        let mut state = self.write_state();
        if let Some(d) = &state.domain {
            return Err(ChipError::AlreadyInDomain {
                domain_id: d.fingerprint(),
            });
        }
        let key = SealKey::generate();
        let ctx = context("yunkey-soft-domain/1", &self.config.chip_id);
        self.meta
            .insert(META_DOMAIN, &self.master.seal(&ctx, key.expose()))?;
        // Durability point: the domain exists on disk before its id is returned.
        self.db.flush()?;
        let id = key.fingerprint();
        state.domain = Some(key);
        tracing::info!(target: "yunkey::audit", chip = %self.config.chip_id, domain = %id, "domain created");
        Ok(id)
    }

    fn export_domain(&self, recipient_transport_spki: &[u8]) -> Result<ExportedDomain, ChipError> {
        let recipient = PublicKey::from_spki_der(recipient_transport_spki).map_err(|_| {
            InvalidField::new(
                "recipient_transport_key",
                "must be a P-256 SubjectPublicKeyInfo (DER)",
            )
        })?;
        let state = self.read_state();
        let domain = state.domain.as_ref().ok_or(ChipError::NotInDomain)?;
        // Plaintext: domain key (32 bytes) || trust anchor DER (empty if unset).
        let mut plain = Zeroizing::new(domain.expose().to_vec());
        if let Some(a) = &state.anchor {
            plain.extend_from_slice(a.der());
        }
        let envelope = envelope::seal_to(&recipient, DOMAIN_ENVELOPE_CONTEXT, &plain);
        Ok(ExportedDomain {
            envelope,
            domain_id: domain.fingerprint(),
        })
    }

    fn import_domain(&self, envelope_bytes: &[u8]) -> Result<String, ChipError> {
        let plain = envelope::open_with(&self.transport, DOMAIN_ENVELOPE_CONTEXT, envelope_bytes)
            .map_err(|_| ChipError::Unseal {
            what: "domain envelope",
        })?;
        if plain.len() < 32 {
            return Err(ChipError::Unseal {
                what: "domain envelope",
            });
        }
        let key = SealKey::from_bytes(&plain[..32]).map_err(|_| ChipError::Unseal {
            what: "domain envelope",
        })?;
        let anchor = if plain.len() > 32 {
            Some(Arc::new(TrustAnchor::parse(&plain[32..])?))
        } else {
            None
        };
        let id = key.fingerprint();
        let mut state = self.write_state();
        if let Some(d) = &state.domain {
            if d.fingerprint() != id {
                return Err(ChipError::AlreadyInDomain {
                    domain_id: d.fingerprint(),
                });
            }
        }
        if let (Some(have), Some(new)) = (&state.anchor, &anchor) {
            if have.der() != new.der() {
                return Err(ChipError::TrustAnchorAlreadySet);
            }
        }
        let mut batch = Batch::new();
        let new_domain = state.domain.is_none();
        if new_domain {
            let ctx = context("yunkey-soft-domain/1", &self.config.chip_id);
            batch.insert(META_DOMAIN, self.master.seal(&ctx, key.expose()));
        }
        let new_anchor = state.anchor.is_none() && anchor.is_some();
        if let (true, Some(a)) = (new_anchor, &anchor) {
            let ctx = context("yunkey-soft-anchor/1", &self.config.chip_id);
            batch.insert(META_ANCHOR, self.master.seal(&ctx, a.der()));
        }
        if !batch.is_empty() {
            self.meta.apply(batch)?;
            // Durability point: the joined domain survives a restart before we say so.
            self.db.flush()?;
        }
        if new_domain {
            state.domain = Some(key);
        }
        if new_anchor {
            state.anchor = anchor;
        }
        tracing::info!(target: "yunkey::audit", chip = %self.config.chip_id, domain = %id, "domain imported");
        Ok(id)
    }

    fn set_trust_anchor(&self, cert_der: &[u8]) -> Result<(), ChipError> {
        let anchor = TrustAnchor::parse(cert_der)?;
        let mut state = self.write_state();
        if let Some(have) = &state.anchor {
            return if have.der() == cert_der {
                Ok(())
            } else {
                Err(ChipError::TrustAnchorAlreadySet)
            };
        }
        let ctx = context("yunkey-soft-anchor/1", &self.config.chip_id);
        self.meta
            .insert(META_ANCHOR, &self.master.seal(&ctx, cert_der))?;
        // Durability point: the anchor is write-once, so it must be on disk before success.
        self.db.flush()?;
        state.anchor = Some(Arc::new(anchor));
        Ok(())
    }

    fn generate_key(&self, purpose: KeyPurpose, user_id: &str) -> Result<GeneratedKey, ChipError> {
        check_owner(purpose, user_id)?;
        let domain = self.domain_key()?;
        let key = PrivateKey::generate();
        let generated = self.store_new(purpose, user_id, &key, &domain)?;
        tracing::info!(target: "yunkey::audit", chip = %self.config.chip_id, user = user_id, %purpose, handle = %generated.handle, "key generated");
        Ok(generated)
    }

    fn sign_authorized(&self, req: &SignAuthorized) -> Result<Signed, ChipError> {
        let tx_hash = yunkey_crypto::sha256(&req.canonical_transaction);
        let result = self.sign_authorized_checked(req, &tx_hash);
        let outcome = match &result {
            Ok(_) => "signed",
            Err(e) => e.kind(),
        };
        tracing::info!(
            target: "yunkey::audit",
            chip = %self.config.chip_id,
            user = %req.user_id,
            device = %req.device_id,
            handle = %req.key_handle,
            tx_hash = %hex::encode(tx_hash),
            outcome,
            "sign authorized"
        );
        result
    }

    fn sign_digest(&self, handle: &str, digest: &Digest) -> Result<Signed, ChipError> {
        let result = (|| {
            let rec = self.load(handle)?;
            if rec.purpose != KeyPurpose::Ca {
                return Err(ChipError::UserKeyNeedsAuthorization);
            }
            let key = self.open_record(&rec)?;
            Ok(Signed {
                signature_der: key.sign_digest(digest),
                digest: *digest,
            })
        })();
        let outcome = match &result {
            Ok(_) => "signed",
            Err(e) => e.kind(),
        };
        tracing::info!(
            target: "yunkey::audit",
            chip = %self.config.chip_id,
            handle,
            digest = %hex::encode(digest),
            outcome,
            "sign digest"
        );
        result
    }

    fn wrap_key(&self, handle: &str) -> Result<Vec<u8>, ChipError> {
        let rec = self.load(handle)?;
        let domain = self.domain_key()?;
        let key = self.open_record(&rec)?;
        Ok(wrapped::wrap(&domain, rec.purpose, &rec.user_id, &key))
    }

    fn unwrap_key(
        &self,
        wrapped_key: &[u8],
        purpose: KeyPurpose,
        user_id: &str,
    ) -> Result<GeneratedKey, ChipError> {
        check_owner(purpose, user_id)?;
        let domain = self.domain_key()?;
        let key = wrapped::unwrap(&domain, wrapped_key, purpose, user_id)?;
        let generated = self.store_new(purpose, user_id, &key, &domain)?;
        tracing::info!(target: "yunkey::audit", chip = %self.config.chip_id, user = user_id, %purpose, handle = %generated.handle, "key unwrapped");
        Ok(generated)
    }

    fn delete_key(&self, handle: &str) -> Result<bool, ChipError> {
        validate::identifier("key_handle", handle)?;
        let mut used = self.lock_used();
        if self.keys.get(handle.as_bytes())?.is_none() {
            return Ok(false);
        }
        self.keys.remove(handle.as_bytes())?;
        // Durability point: the key is gone from disk before we report it deleted.
        self.db.flush()?;
        *used = used.saturating_sub(1);
        tracing::info!(target: "yunkey::audit", chip = %self.config.chip_id, handle, "key deleted");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, UserCa};

    fn config(id: &str) -> SoftChipConfig {
        SoftChipConfig {
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

    #[test]
    fn no_private_scalar_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let chip = SoftChip::open(dir.path(), config("chip-1")).unwrap();
        chip.init_domain().unwrap();
        let mut secrets: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        for i in 0..4 {
            let k = chip
                .generate_key(KeyPurpose::User, &format!("user-{i}"))
                .unwrap();
            let secret = chip.secret_for_test(&k.handle);
            // The test-only path agrees with the wrapped key opened under the domain key.
            let domain = chip.domain_key().unwrap();
            let unwrapped = wrapped::unwrap(
                &domain,
                &k.wrapped_key,
                KeyPurpose::User,
                &format!("user-{i}"),
            )
            .unwrap();
            assert_eq!(unwrapped.to_secret_bytes(), secret);
            secrets.push(secret);
        }
        let ca = chip.generate_key(KeyPurpose::Ca, "").unwrap();
        secrets.push(chip.secret_for_test(&ca.handle));
        secrets.push(chip.transport.to_secret_bytes());
        secrets.push(Zeroizing::new(chip.domain_key().unwrap().expose().to_vec()));
        chip.db.flush().unwrap();
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
        // Debug never shows secrets either.
        let debug = format!("{chip:?}");
        assert!(secrets
            .iter()
            .all(|s| !debug.contains(&hex::encode(&s[..]))));
    }

    #[test]
    fn restart_keeps_keys_domain_and_anchor() {
        let dir = tempfile::tempdir().unwrap();
        let ca = UserCa::new("user CA");
        let phone = ca.issue_device("alice", "alice-phone");
        let (domain, key, transport) = {
            let chip = SoftChip::open(dir.path(), config("chip-1")).unwrap();
            let domain = chip.init_domain().unwrap();
            chip.set_trust_anchor(&ca.cert_der).unwrap();
            let key = chip.generate_key(KeyPurpose::User, "alice").unwrap();
            (domain, key, chip.info().unwrap().transport_public_key)
        };
        let chip = SoftChip::open(dir.path(), config("chip-1")).unwrap();
        let info = chip.info().unwrap();
        assert_eq!(info.domain_id.as_deref(), Some(domain.as_str()));
        assert_eq!(info.trust_anchor.as_deref(), Some(ca.cert_der.as_slice()));
        assert_eq!(info.transport_public_key, transport);
        assert_eq!(info.used, 1);
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
        let meta = std::fs::metadata(dir.path().join(MASTER_KEY_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
    }

    #[test]
    fn records_cannot_be_swapped() {
        let dir = tempfile::tempdir().unwrap();
        let chip = SoftChip::open(dir.path(), config("chip-1")).unwrap();
        chip.init_domain().unwrap();
        let a = chip.generate_key(KeyPurpose::Ca, "").unwrap();
        let b = chip.generate_key(KeyPurpose::Ca, "").unwrap();
        // Copy a's record under b's handle: it no longer opens.
        let rec = chip.keys.get(a.handle.as_bytes()).unwrap().unwrap();
        chip.keys.insert(b.handle.as_bytes(), &rec).unwrap();
        let err = chip.sign_digest(&b.handle, &[7u8; 32]).unwrap_err();
        assert!(matches!(err, ChipError::Storage { .. }), "{err}");
        // Flipping the purpose byte of a record breaks it too.
        let mut rec = chip.keys.get(a.handle.as_bytes()).unwrap().unwrap();
        rec[0] = KeyPurpose::User.to_byte();
        chip.keys.insert(a.handle.as_bytes(), &rec).unwrap();
        assert!(chip.wrap_key(&a.handle).is_err());
    }
}
