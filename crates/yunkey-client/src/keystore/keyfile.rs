//! The key file on disk: its formats, how an older one migrates, and how it is written.
//!
//! Format 2 (current), one pretty-printed JSON object per user, `<user_id>.json`:
//! ```text
//! { "format": 2, "user_id": "alice",
//!   "public_key": "<base64 SPKI DER>",
//!   "sealed": { "algorithm": "argon2id-v19", "memory_kib": 262144, "passes": 3, "lanes": 1,
//!               "salt": "<base64>", "sealed_key": "<base64 AES-256-GCM>" }   or null,
//!   "failures": 0,
//!   "locked": { "at": <unix seconds>, "failures": 5 }                        or null,
//!   "device_id": "dev-..." or null, "certificate": "<base64 DER>" or null }
//! ```
//! `failures` counts failed verifications in a row. A lockout sets `locked` and removes
//! `sealed`: the record says the key existed and why it is gone.
//!
//! Format 1 had `public_key`, `salt`, `sealed_key` at the top, no counter, and was sealed
//! with the argon2 crate's default parameters ([`KdfParams::FORMAT_1`]). It is read as format
//! 2 with those parameters and written back as format 2 by the next write; the next
//! successful unlock re-seals it with the keystore's parameters.

use super::kdf::KdfParams;
use crate::ClientError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The format this code writes.
pub(super) const FORMAT: u32 = 2;

/// The only key-derivation algorithm a file names so far.
const ALGORITHM: &str = "argon2id-v19";

pub(super) fn ks_err(e: impl std::fmt::Display) -> ClientError {
    ClientError::Keystore(e.to_string())
}

#[derive(Serialize, Deserialize, Clone)]
pub(super) struct KeyFile {
    pub format: u32,
    pub user_id: String,
    pub public_key: String,
    pub sealed: Option<Sealed>,
    pub failures: u32,
    pub locked: Option<LockRecord>,
    pub device_id: Option<String>,
    pub certificate: Option<String>,
}

#[derive(Serialize, Deserialize, Clone)]
pub(super) struct Sealed {
    pub algorithm: String,
    #[serde(flatten)]
    pub kdf: KdfParams,
    pub salt: String,
    pub sealed_key: String,
}

impl Sealed {
    pub fn new(kdf: KdfParams, salt: String, sealed_key: String) -> Self {
        Self {
            algorithm: ALGORITHM.to_owned(),
            kdf,
            salt,
            sealed_key,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LockRecord {
    /// When the key was destroyed, Unix seconds.
    pub at: i64,
    /// The failed verifications that destroyed it.
    pub failures: u32,
}

#[derive(Deserialize)]
struct KeyFileV1 {
    user_id: String,
    public_key: String,
    salt: String,
    sealed_key: String,
    device_id: Option<String>,
    certificate: Option<String>,
}

impl KeyFileV1 {
    fn migrate(self) -> KeyFile {
        KeyFile {
            format: FORMAT,
            user_id: self.user_id,
            public_key: self.public_key,
            sealed: Some(Sealed::new(KdfParams::FORMAT_1, self.salt, self.sealed_key)),
            failures: 0,
            locked: None,
            device_id: self.device_id,
            certificate: self.certificate,
        }
    }
}

/// Reads a key file of any known format as the current one.
pub(super) fn decode(bytes: &[u8], path: &Path) -> Result<KeyFile, ClientError> {
    #[derive(Deserialize)]
    struct Version {
        format: u32,
    }
    let corrupt = |e: serde_json::Error| ks_err(format!("{} is corrupt: {e}", path.display()));
    let file = match serde_json::from_slice::<Version>(bytes)
        .map_err(corrupt)?
        .format
    {
        1 => serde_json::from_slice::<KeyFileV1>(bytes)
            .map_err(corrupt)?
            .migrate(),
        FORMAT => serde_json::from_slice::<KeyFile>(bytes).map_err(corrupt)?,
        other => {
            return Err(ks_err(format!(
                "{} has format {other}; this yunkey reads formats 1 to {FORMAT}",
                path.display()
            )))
        }
    };
    if let Some(sealed) = &file.sealed {
        if sealed.algorithm != ALGORITHM {
            return Err(ks_err(format!(
                "{} uses key derivation {:?}; this yunkey knows {ALGORITHM:?}",
                path.display(),
                sealed.algorithm
            )));
        }
    }
    Ok(file)
}

/// Writes atomically: temp file (0600), fsync, rename, fsync the directory. When it returns,
/// the new content is durable.
pub(super) fn store(dir: &Path, path: &Path, file: &KeyFile) -> Result<(), ClientError> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut f = private_file(&tmp, true)?;
    f.write_all(&serde_json::to_vec_pretty(file).map_err(ks_err)?)
        .map_err(ks_err)?;
    f.sync_all().map_err(ks_err)?;
    std::fs::rename(&tmp, path).map_err(ks_err)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ks_err)?;
    Ok(())
}

fn private_file(path: &Path, truncate: bool) -> Result<std::fs::File, ClientError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(truncate);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
        .map_err(|e| ks_err(format!("cannot open {}: {e}", path.display())))
}

/// Overwrites the sealed key's characters in the file itself with `A`s and fsyncs, before
/// the locked record replaces the file: the rename in [`store`] alone would leave the old
/// bytes in a freed inode. Only bytes inside the base64 string change, so a crash halfway
/// leaves a file that still parses (and still counts as locked by its `failures`). This is
/// best effort: journaling, copy-on-write file systems and flash may keep old copies.
pub(super) fn scrub_sealed_key(path: &Path) -> Result<(), ClientError> {
    use std::io::{Seek, SeekFrom, Write};
    let bytes = std::fs::read(path).map_err(ks_err)?;
    const FIELD: &[u8] = b"\"sealed_key\": \"";
    let Some(start) = bytes
        .windows(FIELD.len())
        .position(|w| w == FIELD)
        .map(|at| at + FIELD.len())
    else {
        return Ok(()); // no sealed key in this file
    };
    let Some(len) = bytes[start..].iter().position(|&b| b == b'"') else {
        return Ok(());
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(ks_err)?;
    f.seek(SeekFrom::Start(start as u64)).map_err(ks_err)?;
    f.write_all(&vec![b'A'; len]).map_err(ks_err)?;
    f.sync_all().map_err(ks_err)
}

/// An exclusive advisory lock on one user's entry (`<user_id>.lock`), held while the entry is
/// read, changed and written, so that two processes cannot both spend the same failure count.
pub(super) struct EntryLock {
    _file: std::fs::File,
}

impl EntryLock {
    pub fn acquire(path: &Path) -> Result<Self, ClientError> {
        let file = private_file(path, false)?;
        #[cfg(unix)]
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| ks_err(format!("cannot lock {}: {e}", path.display())))?;
        Ok(Self { _file: file })
    }
}
