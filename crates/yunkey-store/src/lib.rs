//! yunkey's storage seam: named, ordered key-value trees with atomic batches and an explicit
//! durability point.
//!
//! The coordinator's Raft log and state machine and the soft chip's sealed keys are written
//! through [`Db`] and [`Tree`] only, never through an engine's own API, so an engine can be
//! replaced without touching them. Two engines ship: [`Db::open_sled`] (on disk) and
//! [`Db::memory`] (tests, and the coordinator's Raft state machine, which the Raft log and
//! snapshot files make durable). Both pass the same [`conformance`] suite.
//!
//! Durability: nothing written is durable until [`Db::flush`] returns; when it returns,
//! everything written before it is on stable storage (`fdatasync`, not only written to the
//! page cache). Callers flush before they acknowledge (see the comments at each flush in the
//! Raft store and the chip). Concurrent flushes share syncs (group commit, `group_sync.rs`).
//!
//! Logs are not key-value data: [`Wal`] is an append-only segmented log of numbered entries
//! (the Raft log), with one `fdatasync` per group commit and the same durability contract.
//!
//! [`Staged`] layers writes over a tree and applies them as one batch: the coordinator applies
//! a log entry that carries many commands that way, and the Raft state machine holds its
//! writes while a snapshot is written.
//!
//! Reads: [`Tree::get`] copies a value out; [`Tree::get_with`] hands it to a decoder where
//! the engine keeps it, which is cheaper for large values.
//!
//! It also holds the one helper for state files outside a database, [`write_file_atomic`].
//!
//! This crate depends on storage engines only; it knows nothing of Raft, chips or users.

mod error;
mod file;
mod group_sync;
mod memory;
mod sled_engine;
mod staged;
mod wal;

pub mod conformance;

pub use error::StoreError;
pub use file::{sync_dir, write_file_atomic};
pub use staged::{Staged, COMMIT_STEP_WRITES};
pub use wal::{Wal, WalOptions, DEFAULT_SEGMENT_BYTES, WAL_FORMAT_VERSION, ZERO_FILL_BYTES};

use std::path::Path;
use std::sync::Arc;

/// Result of a storage operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A key-value pair read from a tree.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A set of writes to one tree, applied all together or not at all.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }

    /// Whether the batch holds no writes.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// How many writes the batch holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Appends `other`'s writes after this batch's own, in their order.
    pub fn extend(&mut self, other: Batch) {
        self.ops.extend(other.ops);
    }

    pub(crate) fn into_ops(self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.ops
    }
}

/// What an engine offers for a database. Private to engines; callers use [`Db`].
pub(crate) trait DbEngine: Send + Sync {
    fn open_tree(&self, name: &str) -> Result<Arc<dyn TreeEngine>>;
    fn flush(&self) -> Result<()>;
    fn size_on_disk(&self) -> Result<u64>;
}

/// What an engine offers for one tree. Private to engines; callers use [`Tree`].
pub(crate) trait TreeEngine: Send + Sync {
    /// Calls `f` with the value of `key` where the engine keeps it, if there is one, and
    /// says whether there was. The engine may hold a lock while `f` runs. The one read an
    /// engine implements: [`Tree::get`] and [`Tree::get_with`] are made from it.
    fn read(&self, key: &[u8], f: &mut dyn FnMut(&[u8])) -> Result<bool>;
    fn apply(&self, batch: Batch) -> Result<()>;
    fn range(
        &self,
        from: &[u8],
        to: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = Result<Entry>> + Send>;
    fn last(&self) -> Result<Option<Entry>>;
    fn first(&self) -> Result<Option<Entry>>;
    fn len(&self) -> usize;
    fn clear(&self) -> Result<()>;
}

/// A database: a set of named trees with one durability point.
#[derive(Clone)]
pub struct Db(Arc<dyn DbEngine>);

impl Db {
    /// Opens (or creates) a sled database in `path`.
    pub fn open_sled(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self(Arc::new(sled_engine::SledDb::open(path.as_ref())?)))
    }

    /// A fresh in-memory database: nothing survives the process. For tests, and for state
    /// that is rebuilt from elsewhere at startup (the Raft state machine).
    pub fn memory() -> Self {
        Self(Arc::new(memory::MemDb::default()))
    }

    /// Opens (or creates) a tree.
    pub fn tree(&self, name: &str) -> Result<Tree> {
        Ok(Tree(self.0.open_tree(name)?))
    }

    /// Makes every write so far durable. Blocking: call it from a blocking thread.
    pub fn flush(&self) -> Result<()> {
        self.0.flush()
    }

    /// Bytes the database takes on disk (0 for memory).
    pub fn size_on_disk(&self) -> Result<u64> {
        self.0.size_on_disk()
    }
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Db")
    }
}

/// An ordered map of byte keys to byte values.
#[derive(Clone)]
pub struct Tree(Arc<dyn TreeEngine>);

impl Tree {
    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get_with(key, <[u8]>::to_vec)
    }

    /// `f` of the value of `key`, read where the tree keeps it rather than copied out first:
    /// for a caller that decodes the value (a copy of a large value costs more than the
    /// decoding; docs/performance.md, item 28). The tree may hold a lock while `f` runs, so
    /// `f` must not use this tree.
    pub fn get_with<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        let mut f = Some(f);
        let mut out = None;
        self.0.read(key, &mut |value| {
            if let Some(f) = f.take() {
                out = Some(f(value));
            }
        })?;
        Ok(out)
    }

    /// Sets one key (a batch of one).
    pub fn insert(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut b = Batch::new();
        b.insert(key, value);
        self.0.apply(b)
    }

    /// Removes one key (a batch of one).
    pub fn remove(&self, key: &[u8]) -> Result<()> {
        let mut b = Batch::new();
        b.remove(key);
        self.0.apply(b)
    }

    /// Applies every write of `batch` atomically.
    pub fn apply(&self, batch: Batch) -> Result<()> {
        self.0.apply(batch)
    }

    /// Entries with `from <= key < to` (or to the end), in key order; none if `to <= from`.
    pub fn range(
        &self,
        from: &[u8],
        to: Option<&[u8]>,
    ) -> impl Iterator<Item = Result<Entry>> + Send {
        // Engines see only ranges that are not empty (BTreeMap panics on one that ends
        // before it starts).
        let empty = matches!(to, Some(t) if t <= from);
        (!empty)
            .then(|| self.0.range(from, to))
            .into_iter()
            .flatten()
    }

    /// Entries whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> impl Iterator<Item = Result<Entry>> + Send {
        let end = prefix_end(prefix);
        self.0.range(prefix, end.as_deref())
    }

    /// The entry with the greatest key.
    pub fn last(&self) -> Result<Option<Entry>> {
        self.0.last()
    }

    /// The entry with the smallest key.
    pub fn first(&self) -> Result<Option<Entry>> {
        self.0.first()
    }

    /// Number of entries (may walk the tree).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.first().map(|f| f.is_none()).unwrap_or(true)
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<()> {
        self.0.clear()
    }
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tree")
    }
}

/// The smallest key greater than every key starting with `prefix`, if any.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
