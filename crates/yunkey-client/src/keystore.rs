//! Where a device keeps its key.
//!
//! [`Keystore`] is the seam: a phone implements it with its TEE (the key never leaves it, and
//! using it needs the user verified by fingerprint, face or PIN). [`FileKeystore`] is the
//! stand-in for the CLI: one JSON file per user, the P-256 scalar sealed with AES-256-GCM
//! under a key derived from the user's PIN with Argon2id. Opening the key *is* the user
//! verification: a wrong PIN does not open it.

use crate::ClientError;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use yunkey_crypto::ecdsa::{PrivateKey, PublicKey};
use yunkey_crypto::seal::SealKey;
use zeroize::Zeroizing;

/// What a device knows after registering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device id the cluster gave it.
    pub device_id: String,
    /// Its certificate (DER).
    pub certificate: Vec<u8>,
}

/// A device's key store. Implementations must keep the private key inside and require the
/// user's verification (`pin`) for every use.
pub trait Keystore: Send + Sync {
    /// Creates a new device key for `user_id` protected by `pin`; returns its SPKI DER.
    /// Replaces a key that was never registered; refuses if a registered one exists.
    fn create_key(&self, user_id: &str, pin: &str) -> Result<Vec<u8>, ClientError>;
    /// Signs `message` (SHA-256, ECDSA) with the device key, after verifying the user.
    fn sign(&self, user_id: &str, pin: &str, message: &[u8]) -> Result<Vec<u8>, ClientError>;
    /// The device key's SPKI DER, if there is a key for `user_id`.
    fn public_key(&self, user_id: &str) -> Result<Option<Vec<u8>>, ClientError>;
    /// Records the registration outcome.
    fn set_device(&self, user_id: &str, device: &DeviceInfo) -> Result<(), ClientError>;
    /// The registration outcome, if registered.
    fn device(&self, user_id: &str) -> Result<Option<DeviceInfo>, ClientError>;
}

const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct KeyFile {
    format: u32,
    user_id: String,
    public_key: String,
    salt: String,
    sealed_key: String,
    device_id: Option<String>,
    certificate: Option<String>,
}

/// Keys in files under a directory (mode 0700 directory, 0600 files).
#[derive(Debug, Clone)]
pub struct FileKeystore {
    dir: PathBuf,
}

fn ks_err(e: impl std::fmt::Display) -> ClientError {
    ClientError::Keystore(e.to_string())
}

impl FileKeystore {
    /// A keystore in `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<Self, ClientError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ks_err(format!("cannot create {}: {e}", dir.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    fn path(&self, user_id: &str) -> Result<PathBuf, ClientError> {
        yunkey_crypto::validate::identifier("user_id", user_id)?;
        Ok(self.dir.join(format!("{user_id}.json")))
    }

    fn load(&self, user_id: &str) -> Result<Option<KeyFile>, ClientError> {
        let path = self.path(user_id)?;
        match std::fs::read(&path) {
            Ok(bytes) => {
                let file: KeyFile = serde_json::from_slice(&bytes)
                    .map_err(|e| ks_err(format!("{} is corrupt: {e}", path.display())))?;
                if file.format != FORMAT {
                    return Err(ks_err(format!(
                        "{} has unknown format {}",
                        path.display(),
                        file.format
                    )));
                }
                Ok(Some(file))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ks_err(format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// Writes atomically: temp file (0600), fsync, rename, fsync the directory.
    fn store(&self, file: &KeyFile) -> Result<(), ClientError> {
        use std::io::Write;
        let path = self.path(&file.user_id)?;
        let tmp = path.with_extension("json.tmp");
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(ks_err)?;
        f.write_all(&serde_json::to_vec_pretty(file).map_err(ks_err)?)
            .map_err(ks_err)?;
        f.sync_all().map_err(ks_err)?;
        std::fs::rename(&tmp, &path).map_err(ks_err)?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(ks_err)?;
        Ok(())
    }

    fn pin_key(pin: &str, salt: &[u8]) -> Result<SealKey, ClientError> {
        if pin.is_empty() {
            return Err(ClientError::Invalid("the PIN must not be empty".into()));
        }
        let mut out = Zeroizing::new([0u8; 32]);
        argon2::Argon2::default()
            .hash_password_into(pin.as_bytes(), salt, &mut out[..])
            .map_err(ks_err)?;
        SealKey::from_bytes(&out[..]).map_err(ks_err)
    }

    fn context(user_id: &str) -> Vec<u8> {
        format!("yunkey-device-key/1\n{user_id}").into_bytes()
    }
}

fn b64d(s: &str) -> Result<Vec<u8>, ClientError> {
    B64.decode(s).map_err(ks_err)
}

impl Keystore for FileKeystore {
    fn create_key(&self, user_id: &str, pin: &str) -> Result<Vec<u8>, ClientError> {
        if let Some(existing) = self.load(user_id)? {
            if existing.device_id.is_some() {
                return Err(ClientError::Invalid(format!(
                    "a registered device key for {user_id} already exists in {}",
                    self.dir.display()
                )));
            }
        }
        let key = PrivateKey::generate();
        let salt: [u8; 16] = yunkey_crypto::random_bytes();
        let sealed =
            Self::pin_key(pin, &salt)?.seal(&Self::context(user_id), &key.to_secret_bytes());
        let spki = key.public_key().to_spki_der();
        self.store(&KeyFile {
            format: FORMAT,
            user_id: user_id.to_owned(),
            public_key: B64.encode(&spki),
            salt: B64.encode(salt),
            sealed_key: B64.encode(sealed),
            device_id: None,
            certificate: None,
        })?;
        Ok(spki)
    }

    fn sign(&self, user_id: &str, pin: &str, message: &[u8]) -> Result<Vec<u8>, ClientError> {
        let file = self.load(user_id)?.ok_or_else(|| {
            ClientError::Invalid(format!(
                "no device key for {user_id}; run `yunkey terminal register` first"
            ))
        })?;
        let secret = Self::pin_key(pin, &b64d(&file.salt)?)?
            .open(&Self::context(user_id), &b64d(&file.sealed_key)?)
            .map_err(|_| ClientError::WrongPin)?;
        let key = PrivateKey::from_secret_bytes(&secret).map_err(ks_err)?;
        let expected = PublicKey::from_spki_der(&b64d(&file.public_key)?).map_err(ks_err)?;
        if key.public_key() != expected {
            return Err(ks_err("the stored key does not match its public key"));
        }
        Ok(key.sign_message(message))
    }

    fn public_key(&self, user_id: &str) -> Result<Option<Vec<u8>>, ClientError> {
        self.load(user_id)?.map(|f| b64d(&f.public_key)).transpose()
    }

    fn set_device(&self, user_id: &str, device: &DeviceInfo) -> Result<(), ClientError> {
        let mut file = self
            .load(user_id)?
            .ok_or_else(|| ClientError::Invalid(format!("no device key for {user_id}")))?;
        file.device_id = Some(device.device_id.clone());
        file.certificate = Some(B64.encode(&device.certificate));
        self.store(&file)
    }

    fn device(&self, user_id: &str) -> Result<Option<DeviceInfo>, ClientError> {
        let Some(file) = self.load(user_id)? else {
            return Ok(None);
        };
        match (file.device_id, file.certificate) {
            (Some(device_id), Some(cert)) => Ok(Some(DeviceInfo {
                device_id,
                certificate: b64d(&cert)?,
            })),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_protects_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let ks = FileKeystore::open(dir.path()).unwrap();
        let spki = ks.create_key("alice", "1234").unwrap();
        let sig = ks.sign("alice", "1234", b"msg").unwrap();
        PublicKey::from_spki_der(&spki)
            .unwrap()
            .verify_message(b"msg", &sig)
            .unwrap();
        assert!(matches!(
            ks.sign("alice", "9999", b"msg"),
            Err(ClientError::WrongPin)
        ));
        assert!(ks.sign("bob", "1234", b"msg").is_err());
        let raw = std::fs::read_to_string(dir.path().join("alice.json")).unwrap();
        assert!(!raw.contains("1234"));
        ks.set_device(
            "alice",
            &DeviceInfo {
                device_id: "dev-1".into(),
                certificate: vec![1, 2],
            },
        )
        .unwrap();
        assert_eq!(ks.device("alice").unwrap().unwrap().device_id, "dev-1");
        assert!(
            ks.create_key("alice", "1234").is_err(),
            "a registered key is not replaced"
        );
    }
}
