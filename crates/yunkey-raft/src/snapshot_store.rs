//! How [`StateMachineStore`] builds, records, installs, hands out and recovers its snapshot
//! files.
//!
//! The `raft_snapshot` tree holds only the current snapshot's metadata and file name; the data
//! is the file (format in `snapshot.rs`). Files are fsynced, renamed into place and the
//! directory fsynced before they are recorded, and the record is flushed before openraft hears
//! of the snapshot. Older snapshot files are deleted once a newer one is recorded (a sender
//! still streaming an old one keeps reading it through its open handle).

#![allow(clippy::result_large_err)]

use std::io;
use std::path::{Path, PathBuf};

use openraft::{BasicNode, LogId, Snapshot, SnapshotMeta, StorageError, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use yunkey_store::{Batch, COMMIT_STEP_WRITES};

use crate::apply::Apply;
use crate::codec::{any, blocking, decode, encode, io_err};
use crate::snapshot::{self, FileSummary};
use crate::snapshot_file::SnapshotFile;
use crate::state_machine::{
    read_err, write_err, Membership, SResult, StateMachineStore, KEY_APPLIED, KEY_MEMBERSHIP,
    SM_TREE,
};
use crate::{legacy, TypeConfig};

/// `raft_snapshot` key: bincode [`SnapshotRecord`] of the current snapshot.
pub(crate) const KEY_CURRENT: &[u8] = b"current_file";
/// `raft_snapshot` key: an older version's marker of an install in progress (removed at open).
pub(crate) const KEY_INSTALLING: &[u8] = b"installing";
/// `raft_snapshot` key: big-endian `u64` count of snapshots built by this node.
const KEY_COUNTER: &[u8] = b"counter";

type Meta = SnapshotMeta<u64, BasicNode>;

/// The current snapshot, as recorded in `raft_snapshot`: its metadata and the name of its file
/// in the snapshot directory.
#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    pub(crate) meta: Meta,
    pub(crate) file: String,
}

fn snap_write_err(meta: Option<&Meta>, e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_snapshot(meta.map(|m| m.signature()), any(e)).into()
}

fn snap_read_err(meta: Option<&Meta>, e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::read_snapshot(meta.map(|m| m.signature()), any(e)).into()
}

impl<C: TypeConfig, A: Apply<C>> StateMachineStore<C, A> {
    pub(crate) fn read_record(&self) -> SResult<Option<SnapshotRecord>> {
        match self.inner.snap.get(KEY_CURRENT).map_err(read_err)? {
            None => Ok(None),
            Some(v) => decode(&v)
                .map(Some)
                .map_err(|e| snap_read_err(None, format!("corrupt snapshot record: {e}"))),
        }
    }

    fn read_counter(&self) -> SResult<u64> {
        match self.inner.snap.get(KEY_COUNTER).map_err(read_err)? {
            None => Ok(0),
            Some(v) => <[u8; 8]>::try_from(&v[..])
                .map(u64::from_be_bytes)
                .map_err(|_| read_err("corrupt snapshot counter")),
        }
    }

    async fn flush(&self) -> io::Result<()> {
        let db = self.inner.db.clone();
        blocking(move || db.flush().map_err(io_err)).await
    }

    /// At open (blocking): migrates a format-1 snapshot, drops the state an older version kept
    /// on disk, removes snapshot files that are not the current one, and loads the current
    /// snapshot into `sm` (checked first: a file that fails its checksum stops the open).
    pub(crate) fn recover(&self) -> SResult<()> {
        legacy::migrate(&self.inner.db, &self.inner.snap, &self.inner.dir)
            .map_err(|e| read_err(format!("cannot migrate the format 1 snapshot: {e}")))?;
        self.drop_stored_state()?;
        let record = self.read_record()?;
        self.inner
            .dir
            .remove_snapshots_except(record.as_ref().map(|r| r.file.as_str()));
        let Some(record) = record else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let path = self.inner.dir.path_of(&record.file);
        let fail = |e: io::Error| {
            read_err(format!(
                "cannot load the current snapshot (restore this node's snapshot directory from \
                 a backup, or replace the node under a new id): {e}"
            ))
        };
        let summary = snapshot::verify(&path).map_err(fail)?;
        let records = snapshot::load_into(&self.inner.sm, &path).map_err(fail)?;
        tracing::info!(
            snapshot_id = %record.meta.snapshot_id,
            records,
            bytes = summary.bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "state loaded from the current snapshot; the log after it is applied again"
        );
        Ok(())
    }

    /// Before the state machine moved to memory, the state was kept on disk (tree `sm` of
    /// `db`) and an install in progress was marked (`installing`). The current snapshot and the
    /// log stand for both now (logs are purged only up to a recorded snapshot), so an older
    /// version's are removed once, at the first open.
    fn drop_stored_state(&self) -> SResult<()> {
        let old = self.inner.db.tree(SM_TREE).map_err(read_err)?;
        let marker = self.inner.snap.get(KEY_INSTALLING).map_err(read_err)?;
        if old.is_empty() && marker.is_none() {
            return Ok(());
        }
        tracing::info!(
            "removing the on-disk state of an older version: the state machine is kept in \
             memory and rebuilt from the current snapshot and the log"
        );
        old.clear().map_err(write_err)?;
        self.inner.snap.remove(KEY_INSTALLING).map_err(write_err)?;
        self.inner.db.flush().map_err(write_err)
    }

    /// Writes `sm` to a new snapshot file, records it, and returns it.
    ///
    /// Applies go on meanwhile: `sm` is held still at the applied index the build starts from
    /// (new writes are held in memory on top of it, where applies and readers see them),
    /// written out without a lock, and the held writes are then folded back into `sm` in
    /// short atomic steps while applies continue; only the last step (at most
    /// [`COMMIT_STEP_WRITES`] writes) is taken with applies stopped.
    ///
    /// Not cancel-safe: dropped midway, it leaves writes held in memory. openraft runs each
    /// build in a task of its own, which ends only with the runtime; after a restart `sm` is
    /// as the build found it, with its applied index, and the log re-applies the rest.
    pub(crate) async fn build_snapshot_file(&self) -> SResult<Snapshot<C>> {
        let _one = self.inner.build_lock.lock().await;
        let tmp = self.inner.dir.temp_path("build");
        let (last_log_id, last_membership, counter) = {
            let _g = self.inner.sm_lock.lock().await;
            let last_log_id: Option<LogId<u64>> = self.read_sm_key(KEY_APPLIED)?;
            let last_membership: Membership = self.read_sm_key(KEY_MEMBERSHIP)?.unwrap_or_default();
            let counter = self.read_counter()? + 1;
            self.inner.live.hold();
            (last_log_id, last_membership, counter)
        };
        // Memory stays bounded: records stream from the tree through a buffered writer to the
        // file.
        let (sm, path) = (self.inner.sm.clone(), tmp.clone());
        let written = blocking(move || snapshot::write_tree(&sm, &path)).await;
        // Whether or not the file was written, the held writes go back into `sm`.
        self.fold_held_writes().await?;
        let summary = written.map_err(|e| snap_write_err(None, e))?;
        let snapshot_id = match &last_log_id {
            Some(l) => format!(
                "{}-{}-{}-{}",
                l.leader_id.term, l.leader_id.node_id, l.index, counter
            ),
            None => format!("0-0-0-{counter}"),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        tracing::info!(
            snapshot_id = %meta.snapshot_id,
            records = summary.records,
            bytes = summary.bytes,
            "snapshot built"
        );
        let stored = self.store_built(&meta, &tmp, counter).await;
        if stored.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(stored?),
        })
    }

    /// Folds the writes held during a build back into `sm` and stops holding: in steps while
    /// applies go on, then, once at most [`COMMIT_STEP_WRITES`] are left, the rest with
    /// applies stopped.
    async fn fold_held_writes(&self) -> SResult<()> {
        loop {
            let inner = self.inner.clone();
            let left = blocking(move || inner.live.commit_next().map_err(io_err))
                .await
                .map_err(write_err)?;
            if left <= COMMIT_STEP_WRITES {
                break;
            }
        }
        let _g = self.inner.sm_lock.lock().await;
        let inner = self.inner.clone();
        blocking(move || inner.live.commit().map_err(io_err))
            .await
            .map_err(write_err)
    }

    /// Makes the built file at `tmp` the current snapshot unless the current one is newer,
    /// then flushes; returns the file opened for reading.
    async fn store_built(&self, meta: &Meta, tmp: &Path, counter: u64) -> SResult<SnapshotFile> {
        let _g = self.inner.snap_lock.lock().await;
        let newer = match self.read_record()? {
            Some(cur) => cur.meta.last_log_id <= meta.last_log_id,
            None => true,
        };
        let mut batch = Batch::new();
        batch.insert(KEY_COUNTER, counter.to_be_bytes());
        let name = if newer {
            let name = self.inner.dir.new_snapshot_name(&meta.snapshot_id);
            self.rename_in(tmp.to_owned(), &name)
                .await
                .map_err(|e| snap_write_err(Some(meta), e))?;
            let record = SnapshotRecord {
                meta: meta.clone(),
                file: name.clone(),
            };
            batch.insert(
                KEY_CURRENT,
                encode(&record).map_err(|e| snap_write_err(Some(meta), e))?,
            );
            Some(name)
        } else {
            None
        };
        self.inner
            .snap
            .apply(batch)
            .map_err(|e| snap_write_err(Some(meta), e))?;
        // Durability: the file is on disk under its name (fsynced, renamed, directory fsynced);
        // its record is flushed before the snapshot is reported, since openraft may then purge
        // the logs it covers, and a restart starts from it.
        self.flush()
            .await
            .map_err(|e| snap_write_err(Some(meta), e))?;
        match name {
            Some(name) => {
                let file = SnapshotFile::open(self.inner.dir.path_of(&name))
                    .await
                    .map_err(|e| snap_read_err(Some(meta), e))?;
                self.inner.dir.remove_snapshots_except(Some(&name));
                Ok(file)
            }
            None => {
                // A snapshot at least as new is already current: hand this one out, unrecorded
                // (the open handle keeps reading after the name is removed).
                let file = SnapshotFile::open(tmp)
                    .await
                    .map_err(|e| snap_read_err(Some(meta), e))?;
                let _ = std::fs::remove_file(tmp);
                Ok(file)
            }
        }
    }

    /// Renames `from` to `name` in the snapshot directory, durably.
    async fn rename_in(&self, from: PathBuf, name: &str) -> io::Result<PathBuf> {
        let inner = self.inner.clone();
        let to = self.inner.dir.path_of(name);
        let target = to.clone();
        blocking(move || inner.dir.rename_durably(&from, &target)).await?;
        Ok(to)
    }

    /// Verifies `file`, records it durably as the current snapshot, then replaces `sm` with its
    /// records in bounded batches.
    pub(crate) async fn install_snapshot_file(
        &self,
        meta: &Meta,
        mut file: SnapshotFile,
    ) -> SResult<()> {
        let read_fail = |e: io::Error| snap_read_err(Some(meta), e);
        let write_fail = |e: io::Error| snap_write_err(Some(meta), e);
        let _one = self.inner.build_lock.lock().await;
        let _sm = self.inner.sm_lock.lock().await;
        // A received file is ours to adopt; any other file (another store's snapshot) is first
        // copied in. Either way the bytes are on disk before they are checked and trusted.
        let adopt = file.is_temporary() && self.inner.dir.contains(file.path());
        let (candidate, copied) = if adopt {
            let f = file.file_mut();
            f.flush().await.map_err(write_fail)?;
            f.sync_all().await.map_err(write_fail)?;
            (file.path().to_owned(), false)
        } else {
            let (from, to) = (file.path().to_owned(), self.inner.dir.temp_path("copy"));
            let target = to.clone();
            blocking(move || snapshot::copy_file(&from, &target))
                .await
                .map_err(write_fail)?;
            (to, true)
        };
        // Validate before touching anything: a truncated or corrupt file leaves `sm` and the
        // recorded snapshot as they were.
        let path = candidate.clone();
        let checked: io::Result<FileSummary> = blocking(move || snapshot::verify(&path)).await;
        let summary = match checked {
            Ok(s) => s,
            Err(e) => {
                if copied {
                    let _ = std::fs::remove_file(&candidate);
                }
                return Err(read_fail(e));
            }
        };
        let path = {
            let _g = self.inner.snap_lock.lock().await;
            let name = self.inner.dir.new_snapshot_name(&meta.snapshot_id);
            let path = self
                .rename_in(candidate.clone(), &name)
                .await
                .inspect_err(|_| {
                    if copied {
                        let _ = std::fs::remove_file(&candidate);
                    }
                })
                .map_err(write_fail)?;
            if adopt {
                file.keep(path.clone());
            }
            // Crash safety: the record is flushed before `sm` is touched. A crash at any point
            // after it leaves a store that `open` loads from this file.
            let record = SnapshotRecord {
                meta: meta.clone(),
                file: name,
            };
            self.inner
                .snap
                .insert(KEY_CURRENT, &encode(&record).map_err(write_err)?)
                .map_err(write_err)?;
            self.flush().await.map_err(write_fail)?;
            path
        };
        drop(file);
        let sm = self.inner.sm.clone();
        let load_path = path.clone();
        let loaded = blocking(move || snapshot::load_into(&sm, &load_path))
            .await
            .map_err(write_err)?;
        tracing::info!(
            snapshot_id = %meta.snapshot_id,
            records = loaded,
            bytes = summary.bytes,
            "snapshot installed"
        );
        let _g = self.inner.snap_lock.lock().await;
        let current = self.read_record()?.map(|r| r.file);
        self.inner.dir.remove_snapshots_except(current.as_deref());
        Ok(())
    }

    /// The current snapshot with its file opened for reading, if there is one.
    pub(crate) async fn open_current_snapshot(&self) -> SResult<Option<Snapshot<C>>> {
        // Under the lock, so that a newer snapshot cannot delete the file between the two steps.
        let _g = self.inner.snap_lock.lock().await;
        let Some(record) = self.read_record()? else {
            return Ok(None);
        };
        let file = SnapshotFile::open(self.inner.dir.path_of(&record.file))
            .await
            .map_err(|e| {
                snap_read_err(
                    Some(&record.meta),
                    format!("the current snapshot's file is unreadable: {e}"),
                )
            })?;
        Ok(Some(Snapshot {
            meta: record.meta,
            snapshot: Box::new(file),
        }))
    }
}
