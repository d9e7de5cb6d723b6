//! [`StateMachineStore`]: the application's state machine on yunkey-store, with its snapshots
//! as files (building, installing and recovering them is in `snapshot_store.rs`).

// openraft's `StorageError` is large, but it is the error type of the storage traits, so our
// helpers and constructors return it as is.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use tokio::sync::Mutex;
use yunkey_store::{Batch, Db, Staged, Tree};

use crate::apply::Apply;
use crate::codec::{any, decode, encode};
use crate::snapshot_dir::SnapshotDir;
use crate::snapshot_file::SnapshotFile;
use crate::TypeConfig;

/// Tree holding the application's state and the reserved keys below.
pub(crate) const SM_TREE: &str = "sm";
/// Tree holding the current snapshot's record, the snapshot counter and the install marker.
pub(crate) const SNAP_TREE: &str = "raft_snapshot";
/// Reserved `sm` key: bincode `LogId` of the last applied entry.
pub(crate) const KEY_APPLIED: &[u8] = b"\x00applied";
/// Reserved `sm` key: bincode `StoredMembership` last applied.
pub(crate) const KEY_MEMBERSHIP: &[u8] = b"\x00membership";

pub(crate) type SResult<T> = Result<T, StorageError<u64>>;
pub(crate) type Membership = StoredMembership<u64, BasicNode>;

pub(crate) struct Inner<A> {
    /// The durable database: the `raft_snapshot` records.
    pub(crate) db: Db,
    /// The state, in memory: only `live` writes it, and loading a snapshot.
    pub(crate) sm: Tree,
    /// `sm` as applies and readers see it: straight through, or, while a snapshot is
    /// written from `sm`, with the writes since the build began held in memory on top.
    pub(crate) live: Staged,
    pub(crate) snap: Tree,
    pub(crate) dir: SnapshotDir,
    pub(crate) app: A,
    /// Held while applying, while installing a snapshot, and for the two moments a build
    /// starts and stops holding writes (not while it writes the file).
    pub(crate) sm_lock: Mutex<()>,
    /// Held through a whole snapshot build or install: one at a time.
    pub(crate) build_lock: Mutex<()>,
    /// Held while replacing the stored snapshot (its file and its record).
    pub(crate) snap_lock: Mutex<()>,
}

/// Raft state-machine storage (openraft's [`RaftStateMachine`] and [`RaftSnapshotBuilder`]):
/// runs the application's [`Apply`] and keeps its state in memory, in the `sm` tree of an
/// in-memory [`Db`].
///
/// The state is not written to disk as it is applied: the Raft log is the durable record of
/// every command, and snapshot files are the durable record of the state up to an index. When
/// the store opens, it loads the current snapshot file (if any) and reports the snapshot's
/// last log id as applied; openraft then applies the committed log entries after it again.
/// Logs are purged only up to a snapshot that is on disk and recorded, so nothing a restart
/// needs is ever gone. Applying into memory is what keeps every coordinator's CPU for the
/// commands themselves (docs/performance.md, run M1: a follower spent half its CPU applying
/// into sled).
///
/// The last applied log id and membership live in `sm` under reserved keys (first byte 0x00),
/// written in the same atomic batch as the writes of the entry (one batch per entry), so
/// readers never see state and applied index diverge. A
/// snapshot build does not stop applies: while it writes `sm` out, new writes are held on top
/// of it, then folded back in (`snapshot_store.rs`). Snapshots are files in a snapshot
/// directory (see [`StateMachineStore::open`]); the `raft_snapshot` tree of the durable
/// database records the current one's metadata and file name. Cloning gives another handle on
/// the same store (that is what the snapshot builder is).
pub struct StateMachineStore<C: TypeConfig, A: Apply<C>> {
    pub(crate) inner: Arc<Inner<A>>,
    _c: PhantomData<fn() -> C>,
}

impl<C: TypeConfig, A: Apply<C>> Clone for StateMachineStore<C, A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            _c: PhantomData,
        }
    }
}

impl<C: TypeConfig, A: Apply<C>> Debug for StateMachineStore<C, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateMachineStore")
    }
}

pub(crate) fn read_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::read_state_machine(any(e)).into()
}

pub(crate) fn write_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_state_machine(any(e)).into()
}

impl<C: TypeConfig, A: Apply<C>> StateMachineStore<C, A> {
    /// Opens the state machine with the application's `app`: its snapshot records in `db`
    /// (tree `raft_snapshot`), snapshot files in `snapshot_dir` (created if missing; the
    /// coordinator uses `<data dir>/snapshots`; nothing else may write in that directory), the
    /// state in memory, loaded from the current snapshot file.
    ///
    /// Blocking (it reads and loads a whole snapshot, and it flushes): call it at startup,
    /// before building the Raft, which then applies the log after the snapshot again. It
    /// removes unfinished snapshot files a crash left behind, and the on-disk state an older
    /// version kept in `db` (tree `sm`), which the snapshot and the log replace. A current
    /// snapshot file that fails its checksum stops the open with an error naming the file.
    pub fn open(db: Db, snapshot_dir: impl Into<PathBuf>, app: A) -> SResult<Self> {
        let sm = Db::memory().tree(SM_TREE).map_err(read_err)?;
        let snap = db.tree(SNAP_TREE).map_err(read_err)?;
        let dir = SnapshotDir::open(snapshot_dir).map_err(read_err)?;
        let store = Self {
            inner: Arc::new(Inner {
                db,
                live: Staged::passthrough(&sm),
                sm,
                snap,
                dir,
                app,
                sm_lock: Mutex::new(()),
                build_lock: Mutex::new(()),
                snap_lock: Mutex::new(()),
            }),
            _c: PhantomData,
        };
        store.recover()?;
        Ok(store)
    }

    /// The application's state (the `sm` tree), for reads. Keys starting with 0x00 are the
    /// store's own.
    pub fn state(&self) -> Tree {
        self.inner.live.tree().clone()
    }

    /// The id of the last applied log entry.
    pub fn last_applied(&self) -> SResult<Option<LogId<u64>>> {
        self.read_sm_key(KEY_APPLIED)
    }

    pub(crate) fn read_sm_key<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> SResult<Option<T>> {
        match self.inner.live.tree().get(key).map_err(read_err)? {
            None => Ok(None),
            Some(v) => decode(&v)
                .map(Some)
                .map_err(|e| read_err(format!("corrupt reserved sm key {key:?}: {e}"))),
        }
    }
}

impl<C: TypeConfig, A: Apply<C>> RaftSnapshotBuilder<C> for StateMachineStore<C, A> {
    async fn build_snapshot(&mut self) -> SResult<Snapshot<C>> {
        self.build_snapshot_file().await
    }
}

impl<C: TypeConfig, A: Apply<C>> RaftStateMachine<C> for StateMachineStore<C, A> {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> SResult<(Option<LogId<u64>>, Membership)> {
        let applied = self.read_sm_key(KEY_APPLIED)?;
        let membership = self.read_sm_key(KEY_MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> SResult<Vec<C::R>>
    where
        I: IntoIterator<Item = C::Entry> + Send,
        I::IntoIter: Send,
    {
        let _g = self.inner.sm_lock.lock().await;
        let mut out = Vec::new();
        // One atomic batch per entry, with the entry's id as the applied index, straight into
        // the state in memory: readers see whole entries, and an entry reads what the ones
        // before it wrote. Nothing here is durable or needs to be: the log is, and on restart
        // the entries after the snapshot are applied again. Snapshots are recorded durably
        // before logs are purged. (Until 2026-12-04 a group of entries was staged and applied
        // as one batch, which sled needed; in memory it only copied every write once more:
        // docs/performance.md, item 27.)
        let state = self.inner.live.tree();
        for entry in entries {
            let log_id = entry.log_id;
            let mut batch = Batch::new();
            let resp = match entry.payload {
                EntryPayload::Blank => C::R::default(),
                EntryPayload::Normal(cmd) => self
                    .inner
                    .app
                    .apply(state, &mut batch, &cmd)
                    .map_err(|e| StorageIOError::apply(log_id, any(e)))?,
                EntryPayload::Membership(m) => {
                    let stored = Membership::new(Some(log_id), m);
                    batch.insert(
                        KEY_MEMBERSHIP,
                        encode(&stored).map_err(|e| StorageIOError::apply(log_id, any(e)))?,
                    );
                    C::R::default()
                }
            };
            batch.insert(
                KEY_APPLIED,
                encode(&log_id).map_err(|e| StorageIOError::apply(log_id, any(e)))?,
            );
            state
                .apply(batch)
                .map_err(|e| StorageIOError::apply(log_id, any(e)))?;
            out.push(resp);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> SResult<Box<SnapshotFile>> {
        // openraft writes the received chunks into this file; it is deleted if the transfer
        // is abandoned, and adopted (renamed) by `install_snapshot`.
        let path = self.inner.dir.temp_path("receive");
        let file = SnapshotFile::create_temporary(path)
            .await
            .map_err(|e| StorageError::from(StorageIOError::write_snapshot(None, any(e))))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<SnapshotFile>,
    ) -> SResult<()> {
        self.install_snapshot_file(meta, *snapshot).await
    }

    async fn get_current_snapshot(&mut self) -> SResult<Option<Snapshot<C>>> {
        self.open_current_snapshot().await
    }
}
