//! Face templates at rest: AES-256-GCM under the template key, bound to the user id.
//!
//! Sealed form: `[version 1][nonce: 12 bytes][ciphertext and tag]`, with the user id as the
//! associated data, so that a template copied to another user does not open. The plaintext
//! (the model name and the embedding) is zeroized after use.
//!
//! The template key is 32 random bytes in a file of its own, written as 64 hex digits (mode
//! 0600) by `yunkey risk init-key FILE`, or by `yunkey risk serve` on its first start when
//! `--template-key` names no file yet. Losing it makes every template unreadable (users enrol
//! again); back it up apart from the data directory.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::{Deserialize, Serialize};
use std::path::Path;
use zeroize::{Zeroize, Zeroizing};

/// Version byte of the sealed form.
pub const SEALED_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// Why a template key or a sealed template cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The key file cannot be read or written.
    #[error("template key {path}: {error}")]
    KeyFile {
        /// The file.
        path: String,
        /// The IO error.
        error: std::io::Error,
    },
    /// The key file does not hold a key.
    #[error("template key {path} is not 64 hex digits (32 bytes); make one with `yunkey risk init-key FILE`")]
    KeyFormat {
        /// The file.
        path: String,
    },
    /// `init-key` was pointed at an existing file.
    #[error("{path} already exists; a template key is never overwritten (the templates sealed under it would be lost)")]
    KeyExists {
        /// The file.
        path: String,
    },
    /// The sealed template is of another version or too short.
    #[error("sealed template is malformed: {0}")]
    Malformed(String),
    /// Decryption failed: another key, another user, or tampering.
    #[error("sealed template does not open with this template key for this user (wrong --template-key, or the record was altered)")]
    Open,
}

/// A face template in the clear: which model made it and its embedding.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    /// The model (embeddings of different models are not comparable).
    pub model: String,
    /// The embedding.
    pub values: Vec<f32>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the embedding.
        f.debug_struct("Template")
            .field("model", &self.model)
            .field("len", &self.values.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Template {
    fn drop(&mut self) {
        self.values.zeroize();
    }
}

/// The 32-byte template key.
pub struct TemplateKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for TemplateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TemplateKey(..)")
    }
}

impl TemplateKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self(Zeroizing::new(yunkey_crypto::random_bytes::<32>()))
    }

    /// A key from its bytes (tests).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Reads the key file.
    pub fn read(path: &Path) -> Result<Self, TemplateError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|error| {
            TemplateError::KeyFile {
                path: path.display().to_string(),
                error,
            }
        })?);
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), key.as_mut()).map_err(|_| TemplateError::KeyFormat {
            path: path.display().to_string(),
        })?;
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "the template key is readable by group or others; chmod 600 it");
            }
        }
        Ok(Self(key))
    }

    /// Writes a new key to `path` (mode 0600, durably). Refuses to overwrite a file.
    pub fn create(path: &Path) -> Result<Self, TemplateError> {
        if path.exists() {
            return Err(TemplateError::KeyExists {
                path: path.display().to_string(),
            });
        }
        let key = Self::generate();
        let mut text = Zeroizing::new(hex::encode(key.0.as_ref()));
        text.push('\n');
        yunkey_store::write_file_atomic(path, text.as_bytes(), 0o600).map_err(|error| {
            TemplateError::KeyFile {
                path: path.display().to_string(),
                error,
            }
        })?;
        Ok(key)
    }

    /// Reads the key at `path`, or creates it if there is no file; whether it was created.
    pub fn read_or_create(path: &Path) -> Result<(Self, bool), TemplateError> {
        if path.exists() {
            Ok((Self::read(path)?, false))
        } else {
            Ok((Self::create(path)?, true))
        }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.0.as_ref().into())
    }

    /// Seals `template` for `user_id`.
    pub fn seal(&self, user_id: &str, template: &Template) -> Vec<u8> {
        let plain = Zeroizing::new(bincode::serialize(template).unwrap_or_default());
        let nonce = yunkey_crypto::random_bytes::<NONCE_LEN>();
        let payload = Payload {
            msg: &plain,
            aad: user_id.as_bytes(),
        };
        // AES-GCM encryption fails only for messages beyond 64 GiB.
        let ct = self
            .cipher()
            .encrypt(&Nonce::from(nonce), payload)
            .unwrap_or_default();
        [&[SEALED_VERSION][..], &nonce, &ct].concat()
    }

    /// Opens a template sealed for `user_id`.
    pub fn open(&self, user_id: &str, sealed: &[u8]) -> Result<Template, TemplateError> {
        let (version, rest) = sealed
            .split_first()
            .ok_or_else(|| TemplateError::Malformed("empty".into()))?;
        if *version != SEALED_VERSION {
            return Err(TemplateError::Malformed(format!(
                "version {version}; this yunkey reads version {SEALED_VERSION}"
            )));
        }
        if rest.len() < NONCE_LEN + 16 {
            return Err(TemplateError::Malformed("too short".into()));
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| TemplateError::Malformed("too short".into()))?;
        let plain = Zeroizing::new(
            self.cipher()
                .decrypt(
                    &Nonce::from(nonce),
                    Payload {
                        msg: ct,
                        aad: user_id.as_bytes(),
                    },
                )
                .map_err(|_| TemplateError::Open)?,
        );
        bincode::deserialize(&plain)
            .map_err(|e| TemplateError::Malformed(format!("the plaintext does not decode: {e}")))
    }
}

/// Euclidean distance between two embeddings of the same length.
pub fn distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = f64::from(*x) - f64::from(*y);
            d * d
        })
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Template {
        Template {
            model: "test-model".into(),
            values: vec![0.25, -1.5, 3.0],
        }
    }

    #[test]
    fn seals_and_opens() {
        let key = TemplateKey::generate();
        let sealed = key.seal("alice", &template());
        assert_eq!(sealed[0], SEALED_VERSION);
        assert_eq!(key.open("alice", &sealed).unwrap(), template());
        // Sealing twice gives different bytes (fresh nonce).
        assert_ne!(key.seal("alice", &template()), sealed);
    }

    #[test]
    fn wrong_key_user_or_bytes_fail() {
        let key = TemplateKey::generate();
        let sealed = key.seal("alice", &template());
        assert!(matches!(
            TemplateKey::generate().open("alice", &sealed),
            Err(TemplateError::Open)
        ));
        assert!(matches!(key.open("bob", &sealed), Err(TemplateError::Open)));
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(key.open("alice", &bad), Err(TemplateError::Open)));
        let mut bad = sealed.clone();
        bad[0] = 2;
        assert!(matches!(
            key.open("alice", &bad),
            Err(TemplateError::Malformed(_))
        ));
        assert!(matches!(
            key.open("alice", &sealed[..20]),
            Err(TemplateError::Malformed(_))
        ));
        assert!(matches!(
            key.open("alice", &[]),
            Err(TemplateError::Malformed(_))
        ));
    }

    #[test]
    fn key_file_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("template.key");
        let (key, created) = TemplateKey::read_or_create(&path).unwrap();
        assert!(created);
        let sealed = key.seal("alice", &template());
        let (again, created) = TemplateKey::read_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again.open("alice", &sealed).unwrap(), template());
        assert!(matches!(
            TemplateKey::create(&path),
            Err(TemplateError::KeyExists { .. })
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "not hex").unwrap();
        assert!(matches!(
            TemplateKey::read(&path),
            Err(TemplateError::KeyFormat { .. })
        ));
    }

    #[test]
    fn distance_is_euclidean() {
        assert_eq!(distance(&[0.0, 0.0], &[3.0, 4.0]), 5.0);
        assert_eq!(distance(&[1.0], &[1.0]), 0.0);
    }
}
