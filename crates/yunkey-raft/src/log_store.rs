//! [`LogStore`]: the Raft log, vote and log pointers in a [`Wal`].

// openraft's `StorageError` is large, but it is the error type of the storage traits, so our
// helpers and constructors return it as is.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::path::Path;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogId, LogState, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use yunkey_store::{Db, Wal};

use crate::codec::{any, blocking, decode, encode, io_err};
use crate::TypeConfig;

/// Named values kept beside the entries (bincode, as they were in the `raft_meta` tree).
pub(crate) const KEY_VOTE: &[u8] = b"vote";
pub(crate) const KEY_COMMITTED: &[u8] = b"committed";
pub(crate) const KEY_LAST_PURGED: &[u8] = b"last_purged";

type SResult<T> = Result<T, StorageError<u64>>;

/// Raft log storage (openraft's [`RaftLogStorage`] and [`RaftLogReader`]) in a [`Wal`]: entries
/// are bincode [`openraft::Entry`] values under their index; the vote, the committed log id and
/// the last purged log id are the log's named values.
///
/// Cloning gives another handle on the same log (that is what the log reader is).
pub struct LogStore<C: TypeConfig> {
    wal: Wal,
    flusher: std::sync::Arc<Flusher<C>>,
    _c: PhantomData<fn() -> C>,
}

/// The group-commit thread and its queue. Dropping the last handle stops the thread and
/// waits for it, so the log is released when the store is.
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

/// Group commit: one thread syncs the log for every append queued since its last sync, then
/// reports all of them durable at once. Appends therefore never wait for each other's sync,
/// and one `fdatasync` (the expensive part) covers many entries under load.
fn spawn_flusher<C: TypeConfig>(wal: Wal) -> std::sync::Arc<Flusher<C>> {
    let (tx, rx) = std::sync::mpsc::channel::<LogFlushed<C>>();
    let thread = std::thread::Builder::new()
        .name("raft-log-flush".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut waiting = vec![first];
                waiting.extend(rx.try_iter());
                // Durability: every entry whose callback is in `waiting` was written before
                // its callback was queued, so this sync covers it; only then is it reported.
                let result = wal.sync().map_err(|e| e.to_string());
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
            wal: self.wal.clone(),
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
    /// Opens the log in the directory `dir` (created if missing).
    ///
    /// `legacy` is the node's database: a log written there by an older yunkey (trees
    /// `raft_log` and `raft_meta`) is moved into `dir` first, once (see `log_migrate.rs`).
    pub fn open(dir: &Path, legacy: &Db) -> SResult<Self> {
        crate::log_migrate::migrate(legacy, dir).map_err(|e| StorageIOError::read_logs(any(e)))?;
        let wal = Wal::open(dir).map_err(|e| StorageIOError::read_logs(any(e)))?;
        Ok(Self {
            flusher: spawn_flusher::<C>(wal.clone()),
            wal,
            _c: PhantomData,
        })
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &[u8]) -> SResult<Option<T>> {
        let raw = self
            .wal
            .meta(key)
            .map_err(|e| StorageIOError::read(any(e)))?;
        match raw {
            None => Ok(None),
            Some(v) => decode(&v).map(Some).map_err(|e| {
                StorageIOError::read(any(format!(
                    "corrupt Raft log value under {}: {e}",
                    String::from_utf8_lossy(key)
                )))
                .into()
            }),
        }
    }

    fn write_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), openraft::AnyError> {
        let bytes = encode(value).map_err(any)?;
        self.wal.set_meta(key, &bytes).map_err(any)
    }

    fn decode_entry(index: u64, value: &[u8]) -> SResult<C::Entry> {
        decode::<C::Entry>(value).map_err(|e| {
            StorageIOError::read_log_at_index(index, any(format!("corrupt log entry: {e}"))).into()
        })
    }

    /// Syncs the log off the async runtime.
    async fn sync(&self) -> std::io::Result<()> {
        let wal = self.wal.clone();
        blocking(move || wal.sync().map_err(io_err)).await
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
        let found = self
            .wal
            .range(start, end)
            .map_err(|e| StorageIOError::read_logs(any(e)))?;
        found
            .iter()
            .map(|(index, bytes)| Self::decode_entry(*index, bytes))
            .collect()
    }
}

impl<C: TypeConfig> RaftLogStorage<C> for LogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> SResult<LogState<C>> {
        let last_purged_log_id = self.read_meta::<LogId<u64>>(KEY_LAST_PURGED)?;
        let bounds = self
            .wal
            .bounds()
            .map_err(|e| StorageIOError::read_logs(any(e)))?;
        let last = match bounds {
            Some((_, last)) => self
                .wal
                .range(last, Some(last + 1))
                .map_err(|e| StorageIOError::read_logs(any(e)))?
                .pop(),
            None => None,
        };
        let last_log_id = match last {
            Some((index, bytes)) => Some(Self::decode_entry(index, &bytes)?.log_id),
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
        // Durability: the vote is synced before save_vote returns (a node must never vote twice
        // in one term, even across a crash).
        self.sync()
            .await
            .map_err(|e| StorageIOError::write_vote(any(e)))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> SResult<Option<Vote<u64>>> {
        self.read_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> SResult<()> {
        // Not flushed on its own: a lost committed pointer is only an optimization lost (Raft
        // re-learns it); the next append or vote sync persists it anyway.
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
        // All entries of one call go into one write and one sync.
        let mut encoded = Vec::new();
        for entry in entries {
            let bytes = encode(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, any(e)))?;
            encoded.push((entry.log_id.index, bytes));
        }
        self.wal
            .append(encoded)
            .map_err(|e| StorageIOError::write_logs(any(e)))?;
        // Durability: the LogFlushed callback is called by the flusher thread only after a
        // sync that started after these entries were written (see `spawn_flusher`).
        self.flusher
            .tx
            .as_ref()
            .expect("the sender lives as long as the store")
            .send(callback)
            .map_err(|_| StorageIOError::write_logs(any("the log flusher thread has stopped")))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> SResult<()> {
        self.wal
            .truncate_from(log_id.index)
            .map_err(|e| StorageIOError::write_logs(any(e)))?;
        // Durability: truncation is synced, so conflicting entries cannot reappear after a crash.
        self.sync()
            .await
            .map_err(|e| StorageIOError::write_logs(any(e)))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> SResult<()> {
        // The pointer and the purge are records of the same log, replayed in this order, so the
        // log state never shows a hole.
        self.write_meta(KEY_LAST_PURGED, &log_id)
            .map_err(StorageIOError::write_logs)?;
        self.wal
            .purge_to(log_id.index)
            .map_err(|e| StorageIOError::write_logs(any(e)))?;
        // Durability: purge is synced (and only then are whole old segments deleted).
        self.sync()
            .await
            .map_err(|e| StorageIOError::write_logs(any(e)))?;
        Ok(())
    }
}
