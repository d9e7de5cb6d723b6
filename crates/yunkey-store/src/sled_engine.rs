//! The sled engine.
//!
//! Durability: sled 0.34's own `flush` writes its log with `sync_file_range`, which neither
//! flushes the disk's write cache nor the file's size, and writes its blob files (values over
//! about 128 KiB) without syncing them at all; an acknowledged write could be lost on power
//! loss. [`SledDb`]'s flush therefore follows sled's with `fdatasync` of sled's log file and of
//! every blob file not synced yet (and `fsync` of the blob directory when one was added), so
//! when [`crate::Db::flush`] returns, everything written before it is on stable storage.

use crate::group_sync::GroupSync;
use crate::{sync_dir, Batch, DbEngine, Entry, Result, StoreError, TreeEngine};
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long [`SledDb::open`] waits for sled's file lock before it reports
/// [`StoreError::Locked`]. When a database is dropped, sled's flusher thread may still hold
/// the lock for up to one flush interval (plus a flush on a loaded machine); a reopen in the
/// same process (a restarted node in a test, a snapshot install) must wait that out instead of
/// failing. Another live process holding the database keeps it for longer than this, and gets
/// the typed error.
const LOCK_WAIT: Duration = Duration::from_secs(10);

pub(crate) struct SledDb {
    db: sled::Db,
    durable: DurablePoint,
    group: GroupSync,
}

/// What [`SledDb`]'s flush syncs after sled's own flush (see the module doc).
struct DurablePoint {
    /// sled's log file (`<path>/db`).
    log: File,
    /// sled's blob directory (`<path>/blobs`).
    blobs: PathBuf,
    /// Names of blob files already synced (pruned of files sled has removed since).
    synced_blobs: Mutex<HashSet<OsString>>,
}

impl DurablePoint {
    /// Opens sled's log file of a database just opened in `path`, and makes what sled wrote
    /// while opening durable: its files (the log, and `conf`, which sled writes unsynced when
    /// it creates a database), the blob files and the directory entries of both directories.
    fn open(path: &Path) -> std::io::Result<Self> {
        let log = File::open(path.join("db"))?;
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                File::open(entry.path())?.sync_data()?;
            }
        }
        sync_dir(path)?;
        let blobs = path.join("blobs");
        let mut synced = HashSet::new();
        if blobs.is_dir() {
            for name in blob_names(&blobs)? {
                File::open(blobs.join(&name))?.sync_data()?;
                synced.insert(name);
            }
            sync_dir(&blobs)?;
        }
        Ok(Self {
            log,
            blobs,
            synced_blobs: Mutex::new(synced),
        })
    }

    /// `fdatasync` of the log, then of each new blob file and, if there was one, `fsync` of
    /// the blob directory.
    fn sync(&self) -> std::io::Result<()> {
        self.log.sync_data()?;
        if !self.blobs.is_dir() {
            return Ok(());
        }
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        let present = blob_names(&self.blobs)?;
        let mut added = false;
        for name in &present {
            if !synced.contains(name) {
                File::open(self.blobs.join(name))?.sync_data()?;
                synced.insert(name.clone());
                added = true;
            }
        }
        synced.retain(|name| present.contains(name));
        if added {
            sync_dir(&self.blobs)?;
        }
        Ok(())
    }
}

fn blob_names(dir: &Path) -> std::io::Result<HashSet<OsString>> {
    std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect()
}

impl SledDb {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        Self::open_waiting(path, LOCK_WAIT)
    }

    /// Opens `path`, waiting up to `wait` for a lock that another handle still holds.
    pub(crate) fn open_waiting(path: &Path, wait: Duration) -> Result<Self> {
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(10);
        loop {
            match Self::try_open(path) {
                Err(e) if is_lock_held(&e) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(StoreError::Locked {
                            path: path.display().to_string(),
                        });
                    }
                    std::thread::sleep(pause.min(deadline - now));
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Err(e) => return Err(e.into()),
                Ok(db) => {
                    let durable = DurablePoint::open(path).map_err(|e| {
                        StoreError::Engine(format!(
                            "opening {} for fdatasync: {e}",
                            path.join("db").display()
                        ))
                    })?;
                    return Ok(Self {
                        db,
                        durable,
                        group: GroupSync::default(),
                    });
                }
            }
        }
    }

    fn try_open(path: &Path) -> sled::Result<sled::Db> {
        sled::Config::new()
            .path(path)
            .cache_capacity(256 * 1024 * 1024)
            .flush_every_ms(Some(500))
            .open()
    }
}

/// Whether sled refused to open because another handle holds the database's file lock.
/// sled 0.34 reports it only as an `Io` error of kind `Other` with this message.
fn is_lock_held(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}
impl DbEngine for SledDb {
    fn open_tree(&self, name: &str) -> Result<Arc<dyn TreeEngine>> {
        Ok(Arc::new(SledTree(self.db.open_tree(name)?)))
    }

    fn flush(&self) -> Result<()> {
        // Concurrent flushes (a chip storing keys for many enrolments at once) share syncs.
        self.group.flush(|| {
            self.db.flush()?;
            self.durable
                .sync()
                .map_err(|e| StoreError::Engine(format!("fdatasync after sled's flush: {e}")))
        })
    }

    fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }
}

struct SledTree(sled::Tree);

fn entry(r: sled::Result<(sled::IVec, sled::IVec)>) -> Result<Entry> {
    let (k, v) = r?;
    Ok((k.to_vec(), v.to_vec()))
}

impl TreeEngine for SledTree {
    fn read(&self, key: &[u8], f: &mut dyn FnMut(&[u8])) -> Result<bool> {
        Ok(self.0.get(key)?.map(|v| f(&v)).is_some())
    }

    fn apply(&self, batch: Batch) -> Result<()> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.into_ops() {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        self.0.apply_batch(b)?;
        Ok(())
    }

    fn range(
        &self,
        from: &[u8],
        to: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = Result<Entry>> + Send> {
        match to {
            Some(to) => Box::new(self.0.range(from.to_vec()..to.to_vec()).map(entry)),
            None => Box::new(self.0.range(from.to_vec()..).map(entry)),
        }
    }

    fn last(&self) -> Result<Option<Entry>> {
        Ok(self.0.last()?.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    fn first(&self) -> Result<Option<Entry>> {
        Ok(self.0.first()?.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn clear(&self) -> Result<()> {
        self.0.clear()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_database_is_a_typed_locked_error_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let _held = SledDb::open(dir.path()).unwrap();
        let started = Instant::now();
        let err = SledDb::open_waiting(dir.path(), Duration::from_millis(300))
            .err()
            .expect("a second open of a held database must fail");
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(err.to_string().contains("in use by another process"));
    }

    #[test]
    fn a_reopen_waits_for_a_lock_released_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let held = SledDb::open(dir.path()).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        let reopened = SledDb::open_waiting(dir.path(), Duration::from_secs(10));
        release.join().unwrap();
        assert!(reopened.is_ok(), "the reopen must wait for the release");
    }
}
