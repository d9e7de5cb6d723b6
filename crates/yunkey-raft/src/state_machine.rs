//! [`StateMachineStore`]: the application's state machine and its snapshots on yunkey-store.

// openraft's `StorageError` is large, but it is the error type of the storage traits, so our
// helpers and constructors return it as is.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::marker::PhantomData;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use yunkey_store::{Batch, Db, Tree};

use crate::apply::Apply;
use crate::codec::{any, blocking, decode, encode, io_err};
use crate::snapshot::SnapshotData;
use crate::TypeConfig;

/// Tree holding the application's state and the reserved keys below.
const SM_TREE: &str = "sm";
/// Tree holding the current snapshot, the snapshot counter and the install marker.
const SNAP_TREE: &str = "raft_snapshot";
/// Reserved `sm` key: bincode `LogId` of the last applied entry.
const KEY_APPLIED: &[u8] = b"\x00applied";
/// Reserved `sm` key: bincode `StoredMembership` last applied.
const KEY_MEMBERSHIP: &[u8] = b"\x00membership";
/// `raft_snapshot` key: bincode [`StoredSnapshot`].
const KEY_CURRENT: &[u8] = b"current";
/// `raft_snapshot` key: present while `sm` is being replaced by the current snapshot.
const KEY_INSTALLING: &[u8] = b"installing";
/// `raft_snapshot` key: big-endian `u64` count of snapshots built by this node.
const KEY_COUNTER: &[u8] = b"counter";

type SResult<T> = Result<T, StorageError<u64>>;
type Membership = StoredMembership<u64, BasicNode>;

/// The snapshot kept in `raft_snapshot`, so it survives a restart.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

struct Inner<A> {
    db: Db,
    sm: Tree,
    snap: Tree,
    app: A,
    /// Held while applying and while reading a consistent view of `sm` for a snapshot.
    sm_lock: Mutex<()>,
    /// Held while replacing the stored snapshot.
    snap_lock: Mutex<()>,
}

/// Raft state-machine storage (openraft's [`RaftStateMachine`] and [`RaftSnapshotBuilder`]):
/// runs the application's [`Apply`] and keeps its state in the `sm` tree.
///
/// The last applied log id and membership live in `sm` under reserved keys (first byte 0x00),
/// written in the same atomic batch as each entry's writes, so state and applied index never
/// diverge. Cloning gives another handle on the same store (that is what the snapshot builder is).
pub struct StateMachineStore<C: TypeConfig, A: Apply<C>> {
    inner: Arc<Inner<A>>,
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

fn read_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::read_state_machine(any(e)).into()
}

fn write_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_state_machine(any(e)).into()
}

fn snap_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_snapshot(None, any(e)).into()
}

impl<C: TypeConfig, A: Apply<C>> StateMachineStore<C, A> {
    /// Opens the state machine in `db` (trees `sm` and `raft_snapshot`) with the application's
    /// `app`.
    ///
    /// If a snapshot install was interrupted by a crash, finishes it from the stored snapshot
    /// before returning (blocking: it flushes; call it at startup, before building the Raft).
    pub fn open(db: Db, app: A) -> SResult<Self> {
        let sm = db.tree(SM_TREE).map_err(read_err)?;
        let snap = db.tree(SNAP_TREE).map_err(read_err)?;
        let store = Self {
            inner: Arc::new(Inner {
                db,
                sm,
                snap,
                app,
                sm_lock: Mutex::new(()),
                snap_lock: Mutex::new(()),
            }),
            _c: PhantomData,
        };
        if store
            .inner
            .snap
            .get(KEY_INSTALLING)
            .map_err(read_err)?
            .is_some()
        {
            tracing::warn!("finishing a snapshot install interrupted by a crash");
            let stored = store
                .read_stored_snapshot()?
                .ok_or_else(|| read_err("install marker present but no stored snapshot"))?;
            let data = SnapshotData::from_bytes(&stored.data).map_err(read_err)?;
            store.load_sm(data)?;
            store.inner.snap.remove(KEY_INSTALLING).map_err(write_err)?;
            store.inner.db.flush().map_err(write_err)?;
        }
        Ok(store)
    }

    /// The application's state (the `sm` tree), for reads. Keys starting with 0x00 are the
    /// store's own.
    pub fn state(&self) -> Tree {
        self.inner.sm.clone()
    }

    /// The id of the last applied log entry.
    pub fn last_applied(&self) -> SResult<Option<LogId<u64>>> {
        self.read_sm_key(KEY_APPLIED)
    }

    fn read_sm_key<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> SResult<Option<T>> {
        match self.inner.sm.get(key).map_err(read_err)? {
            None => Ok(None),
            Some(v) => decode(&v)
                .map(Some)
                .map_err(|e| read_err(format!("corrupt reserved sm key {key:?}: {e}"))),
        }
    }

    fn read_stored_snapshot(&self) -> SResult<Option<StoredSnapshot>> {
        match self.inner.snap.get(KEY_CURRENT).map_err(read_err)? {
            None => Ok(None),
            Some(v) => decode(&v).map(Some).map_err(|e| {
                StorageIOError::read_snapshot(None, any(format!("corrupt stored snapshot: {e}")))
                    .into()
            }),
        }
    }

    /// Replaces `sm` with the entries of `data`. Not atomic (clear, then one batch): callers
    /// hold the install marker while this runs.
    fn load_sm(&self, data: SnapshotData) -> SResult<()> {
        self.inner.sm.clear().map_err(write_err)?;
        let mut batch = Batch::new();
        for (k, v) in data.entries {
            batch.insert(k, v);
        }
        self.inner.sm.apply(batch).map_err(write_err)
    }

    async fn flush(&self) -> std::io::Result<()> {
        let db = self.inner.db.clone();
        blocking(move || db.flush().map_err(io_err)).await
    }

    /// Stores `stored` as the current snapshot unless the current one is newer, then flushes.
    async fn store_snapshot(&self, stored: &StoredSnapshot, extra: Batch) -> SResult<()> {
        let _g = self.inner.snap_lock.lock().await;
        let mut batch = extra;
        let newer = match self.read_stored_snapshot()? {
            Some(cur) => cur.meta.last_log_id <= stored.meta.last_log_id,
            None => true,
        };
        if newer {
            batch.insert(KEY_CURRENT, encode(stored).map_err(snap_err)?);
        }
        self.inner.snap.apply(batch).map_err(snap_err)?;
        // Durability: the snapshot is flushed before it is reported, since openraft may purge the
        // logs it covers. The flush also persists `sm` up to the snapshot's applied index.
        self.flush().await.map_err(snap_err)
    }
}

impl<C: TypeConfig, A: Apply<C>> RaftSnapshotBuilder<C> for StateMachineStore<C, A> {
    async fn build_snapshot(&mut self) -> SResult<Snapshot<C>> {
        // A consistent view: apply is blocked while we copy `sm`.
        let (entries, counter) = {
            let _g = self.inner.sm_lock.lock().await;
            let mut entries = Vec::new();
            for kv in self.inner.sm.range(&[], None) {
                entries.push(kv.map_err(read_err)?);
            }
            let counter = match self.inner.snap.get(KEY_COUNTER).map_err(read_err)? {
                None => 0,
                Some(v) => <[u8; 8]>::try_from(&v[..])
                    .map(u64::from_be_bytes)
                    .map_err(|_| read_err("corrupt snapshot counter"))?,
            } + 1;
            (entries, counter)
        };
        let find = |key: &[u8]| {
            entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let last_log_id: Option<LogId<u64>> = match find(KEY_APPLIED) {
            None => None,
            Some(v) => Some(decode(&v).map_err(read_err)?),
        };
        let last_membership: Membership = match find(KEY_MEMBERSHIP) {
            None => Membership::default(),
            Some(v) => decode(&v).map_err(read_err)?,
        };
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
        let data = SnapshotData { entries }.to_bytes().map_err(snap_err)?;
        let stored = StoredSnapshot { meta, data };
        let mut extra = Batch::new();
        extra.insert(KEY_COUNTER, counter.to_be_bytes());
        self.store_snapshot(&stored, extra).await?;
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
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
        let sm = &self.inner.sm;
        let mut out = Vec::new();
        // Not flushed here: the log is durable, so entries lost from `sm` in a crash are applied
        // again on restart; the atomic batch keeps state and applied index consistent. Snapshots
        // flush before logs are purged.
        for entry in entries {
            let log_id = entry.log_id;
            let mut batch = Batch::new();
            let resp = match entry.payload {
                EntryPayload::Blank => C::R::default(),
                EntryPayload::Normal(cmd) => self
                    .inner
                    .app
                    .apply(sm, &mut batch, &cmd)
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
            sm.apply(batch)
                .map_err(|e| StorageIOError::apply(log_id, any(e)))?;
            out.push(resp);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> SResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> SResult<()> {
        let bytes = snapshot.into_inner();
        // Validate before touching anything.
        let data = SnapshotData::from_bytes(&bytes).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                any(e),
            ))
        })?;
        let _sm = self.inner.sm_lock.lock().await;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        };
        {
            let _g = self.inner.snap_lock.lock().await;
            // Crash safety: the snapshot and the "installing" marker are written in one batch and
            // flushed before `sm` is touched. Clearing and reloading `sm` is not atomic; if we
            // crash midway, `open` sees the marker and redoes the load from the stored snapshot.
            let mut batch = Batch::new();
            batch.insert(KEY_CURRENT, encode(&stored).map_err(snap_err)?);
            batch.insert(KEY_INSTALLING, b"1".to_vec());
            self.inner.snap.apply(batch).map_err(snap_err)?;
            self.flush().await.map_err(snap_err)?;
        }
        self.load_sm(data)?;
        self.inner.snap.remove(KEY_INSTALLING).map_err(write_err)?;
        self.flush().await.map_err(write_err)?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> SResult<Option<Snapshot<C>>> {
        Ok(self.read_stored_snapshot()?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
