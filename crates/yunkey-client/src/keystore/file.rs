//! [`FileKeystore`]: device keys sealed in files under a PIN, with a failed-PIN lockout.

use super::kdf::{KdfParams, MIN_SECRET_LEN};
use super::keyfile::{self, ks_err, EntryLock, KeyFile, LockRecord, Sealed, FORMAT};
use super::{DeviceInfo, DeviceKey, Keystore, SoftDeviceKey, UserVerifier};
use crate::ClientError;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use yunkey_crypto::sig::{Algorithm, SigningKey, VerifyingKey};

/// How a [`FileKeystore`] guards its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileKeystoreOptions {
    /// Failed verifications in a row after which the sealed key is destroyed (at least 1).
    pub max_failures: u32,
    /// What new keys are sealed with, and what a file sealed more cheaply is re-sealed with
    /// at its next successful unlock.
    pub kdf: KdfParams,
}

impl FileKeystoreOptions {
    /// The default lockout threshold.
    pub const DEFAULT_MAX_FAILURES: u32 = 5;
}

impl Default for FileKeystoreOptions {
    fn default() -> Self {
        Self {
            max_failures: Self::DEFAULT_MAX_FAILURES,
            kdf: KdfParams::RECOMMENDED,
        }
    }
}

/// Keys in files under a directory (mode 0700 directory, 0600 files); see
/// [`super`] for what it promises and docs/security.md for what it cannot.
#[derive(Debug, Clone)]
pub struct FileKeystore {
    dir: PathBuf,
    options: FileKeystoreOptions,
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn b64d(s: &str) -> Result<Vec<u8>, ClientError> {
    B64.decode(s).map_err(ks_err)
}

impl FileKeystore {
    /// A keystore in `dir` (created if missing) with the default options.
    pub fn open(dir: &Path) -> Result<Self, ClientError> {
        Self::open_with(dir, FileKeystoreOptions::default())
    }

    /// A keystore in `dir` (created if missing) with `options`.
    pub fn open_with(dir: &Path, options: FileKeystoreOptions) -> Result<Self, ClientError> {
        if options.max_failures == 0 {
            return Err(ClientError::Invalid(
                "the lockout threshold (max failures) must be at least 1".into(),
            ));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| ks_err(format!("cannot create {}: {e}", dir.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        Ok(Self {
            dir: dir.to_owned(),
            options,
        })
    }

    fn path(&self, user_id: &str) -> Result<PathBuf, ClientError> {
        yunkey_crypto::validate::identifier("user_id", user_id)?;
        Ok(self.dir.join(format!("{user_id}.json")))
    }

    fn entry_lock(&self, user_id: &str) -> Result<EntryLock, ClientError> {
        yunkey_crypto::validate::identifier("user_id", user_id)?;
        EntryLock::acquire(&self.dir.join(format!("{user_id}.lock")))
    }

    fn load(&self, user_id: &str) -> Result<Option<KeyFile>, ClientError> {
        let path = self.path(user_id)?;
        match std::fs::read(&path) {
            Ok(bytes) => keyfile::decode(&bytes, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ks_err(format!("cannot read {}: {e}", path.display()))),
        }
    }

    fn store(&self, file: &KeyFile) -> Result<(), ClientError> {
        keyfile::store(&self.dir, &self.path(&file.user_id)?, file)
    }

    fn context(user_id: &str) -> Vec<u8> {
        format!("yunkey-device-key/1\n{user_id}").into_bytes()
    }

    fn seal(&self, user_id: &str, key: &SigningKey, secret: &str) -> Result<Sealed, ClientError> {
        let salt: [u8; 16] = yunkey_crypto::random_bytes();
        let sealed = self
            .options
            .kdf
            .derive(secret.as_bytes(), &salt)?
            .seal(&Self::context(user_id), &key.to_secret_bytes());
        Ok(Sealed::new(
            self.options.kdf,
            B64.encode(salt),
            B64.encode(sealed),
        ))
    }

    fn locked_error(file: &KeyFile) -> ClientError {
        ClientError::Locked {
            user_id: file.user_id.clone(),
            failures: file.locked.map_or(file.failures, |l| l.failures),
        }
    }

    /// Locked: destroyed already, or the counter reached the threshold (a process killed
    /// between counting the last guess and destroying the key).
    fn is_locked(&self, file: &KeyFile) -> bool {
        file.locked.is_some() || file.sealed.is_none() || file.failures >= self.options.max_failures
    }

    /// Destroys the sealed key and records the lockout. Durable when it returns.
    fn destroy(&self, file: &mut KeyFile) -> Result<(), ClientError> {
        keyfile::scrub_sealed_key(&self.path(&file.user_id)?)?;
        file.sealed = None;
        file.locked = Some(LockRecord {
            at: now_unix(),
            failures: file.failures,
        });
        self.store(file)?;
        tracing::warn!(
            user_id = %file.user_id,
            failures = file.failures,
            "device key destroyed after repeated failed user verification"
        );
        Ok(())
    }
}

impl Keystore for FileKeystore {
    fn create_key_of(
        &self,
        user_id: &str,
        algorithm: Algorithm,
        verifier: &dyn UserVerifier,
    ) -> Result<Arc<dyn DeviceKey>, ClientError> {
        let _entry = self.entry_lock(user_id)?;
        if let Some(existing) = self.load(user_id)? {
            if existing.device_id.is_some() && !self.is_locked(&existing) {
                return Err(ClientError::Invalid(format!(
                    "a registered device key for {user_id} already exists in {}",
                    self.dir.display()
                )));
            }
        }
        let secret = verifier.verify(&format!(
            "choose a PIN for {user_id}'s new device key (at least {MIN_SECRET_LEN} characters)"
        ))?;
        let len = secret.chars().count();
        if len < MIN_SECRET_LEN {
            return Err(ClientError::Invalid(format!(
                "the PIN is {len} characters; a new device key needs at least {MIN_SECRET_LEN} \
                 (docs/security.md, \"Device keystore\", says why)"
            )));
        }
        let key = SigningKey::generate(algorithm);
        let sealed = self.seal(user_id, &key, &secret)?;
        self.store(&KeyFile {
            format: FORMAT,
            user_id: user_id.to_owned(),
            public_key: B64.encode(key.public_key().to_spki_der()),
            sealed: Some(sealed),
            failures: 0,
            locked: None,
            device_id: None,
            certificate: None,
        })?;
        Ok(Arc::new(SoftDeviceKey::new(key)))
    }

    fn unlock(
        &self,
        user_id: &str,
        verifier: &dyn UserVerifier,
    ) -> Result<Arc<dyn DeviceKey>, ClientError> {
        let _entry = self.entry_lock(user_id)?;
        let mut file = self.load(user_id)?.ok_or_else(|| {
            ClientError::Invalid(format!(
                "no device key for {user_id}; run `yunkey terminal register` first"
            ))
        })?;
        if self.is_locked(&file) {
            if file.locked.is_none() {
                self.destroy(&mut file)?;
            }
            return Err(Self::locked_error(&file));
        }
        let Some(sealed) = file.sealed.clone() else {
            return Err(Self::locked_error(&file));
        };
        let secret = verifier.verify(&format!("PIN for {user_id}'s device key"))?;
        if secret.is_empty() {
            return Err(ClientError::Invalid("the PIN must not be empty".into()));
        }
        // Durability: the guess is counted on disk before the derivation runs, so a process
        // killed mid-guess (to dodge the count) has still spent the attempt.
        file.failures += 1;
        self.store(&file)?;
        let opened = sealed
            .kdf
            .derive(secret.as_bytes(), &b64d(&sealed.salt)?)?
            .open(&Self::context(user_id), &b64d(&sealed.sealed_key)?);
        let Ok(scalar) = opened else {
            if file.failures >= self.options.max_failures {
                self.destroy(&mut file)?;
                return Err(Self::locked_error(&file));
            }
            return Err(ClientError::WrongPin {
                attempts_left: self.options.max_failures - file.failures,
            });
        };
        // The stored public key names the algorithm (the file format predates SM2 keys and
        // needs no change for them).
        let expected = VerifyingKey::from_spki_der(&b64d(&file.public_key)?).map_err(ks_err)?;
        let key = SigningKey::from_secret_bytes(expected.algorithm(), &scalar).map_err(ks_err)?;
        if key.public_key() != expected {
            return Err(ks_err("the stored key does not match its public key"));
        }
        file.failures = 0;
        // Migration: a file sealed more cheaply than this keystore's parameters (format 1,
        // or older defaults) is re-sealed with them now that the secret is known.
        if sealed.kdf.work() < self.options.kdf.work() {
            file.sealed = Some(self.seal(user_id, &key, &secret)?);
        }
        self.store(&file)?;
        Ok(Arc::new(SoftDeviceKey::new(key)))
    }

    fn public_key(&self, user_id: &str) -> Result<Option<Vec<u8>>, ClientError> {
        match self.load(user_id)? {
            Some(file) if !self.is_locked(&file) => b64d(&file.public_key).map(Some),
            _ => Ok(None),
        }
    }

    fn set_device(&self, user_id: &str, device: &DeviceInfo) -> Result<(), ClientError> {
        let _entry = self.entry_lock(user_id)?;
        let mut file = self
            .load(user_id)?
            .ok_or_else(|| ClientError::Invalid(format!("no device key for {user_id}")))?;
        if self.is_locked(&file) {
            return Err(Self::locked_error(&file));
        }
        file.device_id = Some(device.device_id.clone());
        file.certificate = Some(B64.encode(&device.certificate));
        self.store(&file)
    }

    fn device(&self, user_id: &str) -> Result<Option<DeviceInfo>, ClientError> {
        let Some(file) = self.load(user_id)? else {
            return Ok(None);
        };
        if self.is_locked(&file) {
            return Err(Self::locked_error(&file));
        }
        match (file.device_id, file.certificate) {
            (Some(device_id), Some(cert)) => Ok(Some(DeviceInfo {
                device_id,
                certificate: b64d(&cert)?,
            })),
            _ => Ok(None),
        }
    }
}
