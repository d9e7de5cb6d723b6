//! [`LogStore`]: the Raft log, vote and log pointers on yunkey-store.

// openraft's `StorageError` is large, but it is the error type of the storage traits, so our
// helpers and constructors return it as is.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogId, LogState, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use yunkey_store::{Batch, Db, Tree};

use crate::codec::{any, blocking, decode, encode, index_key, io_err};
use crate::TypeConfig;

/// Tree holding the log: key = big-endian `u64` index, value = bincode [`openraft::Entry`].
const LOG_TREE: &str = "raft_log";
/// Tree holding the vote and the log pointers.
const META_TREE: &str = "raft_meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

type SResult<T> = Result<T, StorageError<u64>>;

/// Raft log storage (openraft's [`RaftLogStorage`] and [`RaftLogReader`]) on a [`Db`].
///
/// Cloning gives another handle on the same trees (that is what the log reader is).
pub struct LogStore<C: TypeConfig> {
    db: Db,
    log: Tree,
    meta: Tree,
    flusher: std::sync::Arc<Flusher<C>>,
    _c: PhantomData<fn() -> C>,
}

/// The group-commit thread and its queue. Dropping the last handle stops the thread and
/// waits for it, so the database is released when the store is.
struct Flusher<C: TypeConfig> {
    tx: Option<std::sync::mpsc::Sender<LogFlushed<C>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<C: TypeConfig> Drop for Flusher<C> {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Group commit: one thread flushes the database for every append queued since its last
/// flush, then reports all of them durable at once. Appends therefore never wait for each
/// other's flush, and one flush (the expensive part) covers many entries under load.
fn spawn_flusher<C: TypeConfig>(db: Db) -> std::sync::Arc<Flusher<C>> {
    let (tx, rx) = std::sync::mpsc::channel::<LogFlushed<C>>();
    let thread = std::thread::Builder::new()
        .name("raft-log-flush".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut waiting = vec![first];
                waiting.extend(rx.try_iter());
                // Durability: every entry whose callback is in `waiting` was written before
                // its callback was queued, so this flush covers it; only then is it reported.
                let result = db.flush().map_err(|e| e.to_string());
                for callback in waiting {
                    callback.log_io_completed(result.clone().map_err(io_err));
                }
            }
        })
        .expect("spawning the Raft log flusher thread");
    std::sync::Arc::new(Flusher {
        tx: Some(tx),
        thread: Some(thread),
    })
}

impl<C: TypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            log: self.log.clone(),
            meta: self.meta.clone(),
            flusher: self.flusher.clone(),
            _c: PhantomData,
        }
    }
}

impl<C: TypeConfig> Debug for LogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogStore")
    }
}

impl<C: TypeConfig> LogStore<C> {
    /// Opens the log store in `db` (trees `raft_log` and `raft_meta`).
    ///
    /// Removes entries left at or below the last purged log id by a purge interrupted by a crash.
    pub fn open(db: Db) -> SResult<Self> {
        let log = db
            .tree(LOG_TREE)
            .map_err(|e| StorageIOError::read_logs(any(e)))?;
        let meta = db
            .tree(META_TREE)
            .map_err(|e| StorageIOError::read_logs(any(e)))?;
        let store = Self {
            flusher: spawn_flusher::<C>(db.clone()),
            db,
            log,
            meta,
            _c: PhantomData,
        };
        if let Some(purged) = store.read_meta::<LogId<u64>>(KEY_LAST_PURGED)? {
            store
                .remove_range(0, Some(purged.index + 1))
                .map_err(StorageIOError::write_logs)?;
        }
        Ok(store)
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &[u8]) -> SResult<Option<T>> {
        let raw = self
            .meta
            .get(key)
            .map_err(|e| StorageIOError::read(any(e)))?;
        match raw {
            None => Ok(None),
            Some(v) => decode(&v).map(Some).map_err(|e| {
                StorageIOError::read(any(format!(
                    "corrupt raft_meta value under {}: {e}",
                    String::from_utf8_lossy(key)
                )))
                .into()
            }),
        }
    }

    fn write_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), openraft::AnyError> {
        let bytes = encode(value).map_err(any)?;
        self.meta.insert(key, &bytes).map_err(any)
    }

    /// Removes log entries with `from <= index < to` (or to the end) in one batch.
    fn remove_range(&self, from: u64, to: Option<u64>) -> Result<(), openraft::AnyError> {
        let to_key = to.map(index_key);
        let mut batch = Batch::new();
        for kv in self
            .log
            .range(&index_key(from), to_key.as_ref().map(|k| &k[..]))
        {
            let (k, _) = kv.map_err(any)?;
            batch.remove(k);
        }
        if !batch.is_empty() {
            self.log.apply(batch).map_err(any)?;
        }
        Ok(())
    }

    fn decode_entry(key: &[u8], value: &[u8]) -> SResult<C::Entry> {
        decode::<C::Entry>(value).map_err(|e| {
            let index = <[u8; 8]>::try_from(key)
                .map(u64::from_be_bytes)
                .unwrap_or(u64::MAX);
            StorageIOError::read_log_at_index(index, any(format!("corrupt log entry: {e}"))).into()
        })
    }

    /// Flushes the database off the async runtime.
    async fn flush(&self) -> std::io::Result<()> {
        let db = self.db.clone();
        blocking(move || db.flush().map_err(io_err)).await
    }
}

impl<C: TypeConfig> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> SResult<Vec<C::Entry>> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.checked_add(1),
            Bound::Excluded(&e) => Some(e),
            Bound::Unbounded => None,
        };
        if matches!(end, Some(e) if e <= start) {
            return Ok(Vec::new());
        }
        let end_key = end.map(index_key);
        let mut out = Vec::new();
        for kv in self
            .log
            .range(&index_key(start), end_key.as_ref().map(|k| &k[..]))
        {
            let (k, v) = kv.map_err(|e| StorageIOError::read_logs(any(e)))?;
            out.push(Self::decode_entry(&k, &v)?);
        }
        Ok(out)
    }
}

impl<C: TypeConfig> RaftLogStorage<C> for LogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> SResult<LogState<C>> {
        let last_purged_log_id = self.read_meta::<LogId<u64>>(KEY_LAST_PURGED)?;
        let last = self
            .log
            .last()
            .map_err(|e| StorageIOError::read_logs(any(e)))?;
        let last_log_id = match last {
            Some((k, v)) => Some(Self::decode_entry(&k, &v)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> SResult<()> {
        self.write_meta(KEY_VOTE, vote)
            .map_err(StorageIOError::write_vote)?;
        // Durability: the vote is flushed before save_vote returns (a node must never vote twice
        // in one term, even across a crash).
        self.flush()
            .await
            .map_err(|e| StorageIOError::write_vote(any(e)))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> SResult<Option<Vote<u64>>> {
        self.read_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> SResult<()> {
        // Not flushed on its own: a lost committed pointer is only an optimization lost (Raft
        // re-learns it); the next append or vote flush persists it anyway.
        self.write_meta(KEY_COMMITTED, &committed)
            .map_err(StorageIOError::write)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> SResult<Option<LogId<u64>>> {
        Ok(self
            .read_meta::<Option<LogId<u64>>>(KEY_COMMITTED)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> SResult<()>
    where
        I: IntoIterator<Item = C::Entry> + Send,
        I::IntoIter: Send,
    {
        // All entries of one call go into one batch and one flush.
        let mut batch = Batch::new();
        for entry in entries {
            let bytes = encode(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, any(e)))?;
            batch.insert(index_key(entry.log_id.index), bytes);
        }
        if !batch.is_empty() {
            self.log
                .apply(batch)
                .map_err(|e| StorageIOError::write_logs(any(e)))?;
        }
        // Durability: the LogFlushed callback is called by the flusher thread only after a
        // flush that started after these entries were written (see `spawn_flusher`).
        self.flusher
            .tx
            .as_ref()
            .expect("the sender lives as long as the store")
            .send(callback)
            .map_err(|_| StorageIOError::write_logs(any("the log flusher thread has stopped")))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> SResult<()> {
        self.remove_range(log_id.index, None)
            .map_err(StorageIOError::write_logs)?;
        // Durability: truncation is flushed, so conflicting entries cannot reappear after a crash.
        self.flush()
            .await
            .map_err(|e| StorageIOError::write_logs(any(e)))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> SResult<()> {
        // The pointer is written first: if we crash before the entries are gone, `open` removes
        // the leftovers, and the log state never shows a hole.
        self.write_meta(KEY_LAST_PURGED, &log_id)
            .map_err(StorageIOError::write_logs)?;
        self.remove_range(0, Some(log_id.index + 1))
            .map_err(StorageIOError::write_logs)?;
        // Durability: purge is flushed.
        self.flush()
            .await
            .map_err(|e| StorageIOError::write_logs(any(e)))?;
        Ok(())
    }
}
