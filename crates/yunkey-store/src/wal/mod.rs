//! [`Wal`]: an append-only, segmented log of numbered entries, with a few named values beside
//! them, one `fdatasync` per group commit.
//!
//! Built for a consensus log: entries are written by index (appended at the end), cut
//! from an index onwards ([`Wal::truncate_from`]), dropped up to an index ([`Wal::purge_to`]),
//! and read by index range. Everything is a record appended to the newest segment file
//! (format: `record.rs`); the index of live entries lives in memory and is rebuilt at open by
//! reading the segments in order. A segment is 64 MiB by default; each new one starts by
//! restating the named values and the purge point, so whole old segments are deleted once
//! every entry they hold is purged.
//!
//! Durability, as for [`crate::Db`]: nothing written is durable until [`Wal::sync`] returns,
//! and then everything written before it is (`fdatasync` of each segment written since the
//! last sync). A failed sync poisons the log: the state of the file is unknown, so every later
//! call fails until the process restarts and reads back what is really on disk.
//!
//! Zeros ahead of the records: when a write would go past the end of the newest segment's
//! file, the log writes [`ZERO_FILL_BYTES`] of zeros beyond it in the same write. The writes
//! after it land inside the file, so their `fdatasync` flushes their data only: the file's
//! size, and with it the file system's journal, changes once per stretch instead of once per
//! sync (on ext4, on this project's machines, `fdatasync` after an append took a median
//! 0.25–0.28 ms and a 90th percentile 0.39–0.63 ms; after an overwrite inside the file,
//! 0.19–0.21 ms and 0.26–0.44 ms: docs/performance.md, item 26). The zeros read back as
//! the segment's clean end.
//!
//! One process at a time: the directory is locked (`LOCK`, an advisory lock released when the
//! last handle is dropped).

mod record;
mod segment;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use record::Record;
use segment::Segment;

use crate::{Result, StoreError};

pub use record::FORMAT_VERSION as WAL_FORMAT_VERSION;

/// Default size at which a new segment is started.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Zeros written ahead of the records each time a write reaches the end of the newest
/// segment's file (never past the segment's size).
pub const ZERO_FILL_BYTES: u64 = 1 << 20;

/// Options of [`Wal::open_with`].
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// A new segment is started once the newest reaches this size.
    pub segment_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// Where a live entry's bytes are.
#[derive(Debug, Clone, Copy)]
struct Loc {
    seq: u64,
    offset: u64,
    len: usize,
}

struct State {
    /// Oldest first; the last one is written to.
    segments: Vec<Segment>,
    entries: BTreeMap<u64, Loc>,
    meta: BTreeMap<Vec<u8>, Vec<u8>>,
    purged: Option<u64>,
    /// Segments written since the last sync.
    dirty: Vec<Arc<File>>,
    /// Set when a write or sync failed: the log refuses everything after.
    failed: Option<String>,
    /// Set by a purge or truncation: the next sync looks for segments to delete.
    reclaim: bool,
}

struct Inner {
    dir: PathBuf,
    options: WalOptions,
    state: Mutex<State>,
    /// Serializes syncs, so that a sync never returns while an earlier one that took its
    /// files is still running.
    sync_lock: Mutex<()>,
    _lock: File,
}

/// A write-ahead log in one directory. Cloning gives another handle on the same log.
#[derive(Clone)]
pub struct Wal(Arc<Inner>);

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").field("dir", &self.0.dir).finish()
    }
}

impl Wal {
    /// Opens (or creates) the log in `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, WalOptions::default())
    }

    /// Opens (or creates) the log in `dir`: reads every segment back, cutting a record torn by
    /// a crash at the end of the newest, and refuses corruption anywhere else.
    pub fn open_with(dir: impl AsRef<Path>, options: WalOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                segment::sync_dir(parent)?;
            }
        }
        let lock_path = dir.join("LOCK");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::io(&lock_path, e))?;
        lock.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => StoreError::Locked {
                path: dir.display().to_string(),
            },
            std::fs::TryLockError::Error(e) => StoreError::io(&lock_path, e),
        })?;
        let mut state = State {
            segments: Vec::new(),
            entries: BTreeMap::new(),
            meta: BTreeMap::new(),
            purged: None,
            dirty: Vec::new(),
            failed: None,
            reclaim: false,
        };
        let seqs = segment::list(&dir)?;
        for (i, &seq) in seqs.iter().enumerate() {
            let newest = i + 1 == seqs.len();
            let seg = segment::replay(&dir, seq, newest, |r, at| state.replay(seq, r, at))?;
            state.segments.push(seg);
        }
        if state.segments.is_empty() {
            state.segments.push(segment::create(&dir, 1, &[])?);
        }
        Ok(Self(Arc::new(Inner {
            dir,
            options,
            state: Mutex::new(state),
            sync_lock: Mutex::new(()),
            _lock: lock,
        })))
    }

    fn state(&self) -> Result<MutexGuard<'_, State>> {
        let state = self
            .0
            .state
            .lock()
            .map_err(|_| StoreError::Engine("the log's lock was poisoned by a panic".into()))?;
        match &state.failed {
            Some(why) => Err(StoreError::Engine(format!(
                "the Raft log at {} failed earlier ({why}); restart the process to read back \
                 what is on disk",
                self.0.dir.display()
            ))),
            None => Ok(state),
        }
    }

    /// Writes entries `(index, bytes)`, each replacing any live entry at its index. A consensus
    /// log appends at the end and truncates before it overwrites, but the log does not insist:
    /// openraft's storage suite writes out of order, and below the purge point.
    pub fn append(&self, entries: impl IntoIterator<Item = (u64, Vec<u8>)>) -> Result<()> {
        let mut buf = Vec::new();
        let mut locs = Vec::new();
        for (index, data) in entries {
            let at = buf.len() as u64;
            record::encode(&Record::Entry { index, data: &data }, &mut buf)?;
            locs.push((index, at + record::ENTRY_DATA_AT, data.len()));
        }
        if locs.is_empty() {
            return Ok(());
        }
        let mut st = self.state()?;
        let (seq, base) = self.write(&mut st, &buf)?;
        for (index, offset, len) in locs {
            st.entries.insert(
                index,
                Loc {
                    seq,
                    offset: base + offset,
                    len,
                },
            );
        }
        Ok(())
    }

    /// Removes the entries at and above `from`.
    pub fn truncate_from(&self, from: u64) -> Result<()> {
        let mut st = self.state()?;
        self.write_record(&mut st, &Record::Truncate { from })?;
        st.entries.split_off(&from);
        st.reclaim = true;
        Ok(())
    }

    /// Removes the entries at and below `upto`. Old segments left with no live entry are
    /// deleted at the next [`Wal::sync`], once this purge is durable.
    pub fn purge_to(&self, upto: u64) -> Result<()> {
        let mut st = self.state()?;
        self.write_record(&mut st, &Record::Purge { upto })?;
        st.purge(upto);
        st.reclaim = true;
        Ok(())
    }

    /// Sets the named value `key`.
    pub fn set_meta(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut st = self.state()?;
        self.write_record(&mut st, &Record::Meta { key, value })?;
        st.meta.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    /// The named value `key`.
    pub fn meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.state()?.meta.get(key).cloned())
    }

    /// The purge point: the highest index ever purged.
    pub fn purged(&self) -> Result<Option<u64>> {
        Ok(self.state()?.purged)
    }

    /// The first and last live indexes, if any entry is live.
    pub fn bounds(&self) -> Result<Option<(u64, u64)>> {
        let st = self.state()?;
        Ok(st
            .entries
            .first_key_value()
            .zip(st.entries.last_key_value())
            .map(|((&a, _), (&b, _))| (a, b)))
    }

    /// Live entries with `from <= index < to` (or to the end), in index order.
    pub fn range(&self, from: u64, to: Option<u64>) -> Result<Vec<(u64, Vec<u8>)>> {
        if matches!(to, Some(t) if t <= from) {
            return Ok(Vec::new());
        }
        let (locs, files) = {
            let st = self.state()?;
            let locs: Vec<(u64, Loc)> = match to {
                Some(t) => st.entries.range(from..t).map(|(&i, &l)| (i, l)).collect(),
                None => st.entries.range(from..).map(|(&i, &l)| (i, l)).collect(),
            };
            let files: BTreeMap<u64, Arc<File>> = st
                .segments
                .iter()
                .map(|s| (s.seq, s.file.clone()))
                .collect();
            (locs, files)
        };
        // Read outside the lock: segments are append-only, and a segment deleted meanwhile
        // stays readable through its open file.
        let mut out = Vec::with_capacity(locs.len());
        let mut i = 0;
        while i < locs.len() {
            // One read for each run of entries in the same segment.
            let seq = locs[i].1.seq;
            let mut j = i;
            while j + 1 < locs.len() && locs[j + 1].1.seq == seq {
                j += 1;
            }
            let file = files
                .get(&seq)
                .ok_or_else(|| StoreError::Engine(format!("log segment {seq:016x} is missing")))?;
            let run = &locs[i..=j];
            let start = run
                .iter()
                .map(|(_, l)| l.offset)
                .min()
                .expect("a run is not empty");
            let end = run
                .iter()
                .map(|(_, l)| l.offset + l.len as u64)
                .max()
                .expect("a run is not empty");
            let span = segment::read_at(file, start, (end - start) as usize)
                .map_err(|e| StoreError::io(&segment::path(&self.0.dir, seq), e))?;
            for (index, loc) in run {
                let at = (loc.offset - start) as usize;
                out.push((*index, span[at..at + loc.len].to_vec()));
            }
            i = j + 1;
        }
        Ok(out)
    }

    /// The durability point: returns once everything written before the call is on stable
    /// storage, then deletes the segments that durable purges made obsolete.
    pub fn sync(&self) -> Result<()> {
        let _one_at_a_time = self
            .0
            .sync_lock
            .lock()
            .map_err(|_| StoreError::Engine("the log's sync lock was poisoned".into()))?;
        let (files, oldest_live) = {
            let mut st = self.state()?;
            // Which segments still hold a live entry, as of the records this sync makes
            // durable (worked out only after a purge or truncation: it reads the whole index).
            let oldest_live = std::mem::take(&mut st.reclaim)
                .then(|| st.entries.values().map(|l| l.seq).min().unwrap_or(u64::MAX));
            (std::mem::take(&mut st.dirty), oldest_live)
        };
        for file in files {
            if let Err(e) = file.sync_data() {
                let why = format!("fdatasync: {e}");
                if let Ok(mut st) = self.0.state.lock() {
                    st.failed = Some(why.clone());
                }
                return Err(StoreError::Engine(format!(
                    "{}: {why}",
                    self.0.dir.display()
                )));
            }
        }
        if let Some(oldest_live) = oldest_live {
            self.delete_segments_before(oldest_live)?;
        }
        Ok(())
    }

    /// Deletes the segments older than `oldest_live`, the oldest one holding a live entry as
    /// of durable records. The newest segment is never deleted; the others' named values and
    /// purge point are restated at the start of every newer segment, and the truncations and
    /// purges in them only concern entries of segments as old or older.
    fn delete_segments_before(&self, oldest_live: u64) -> Result<()> {
        let obsolete: Vec<u64> = {
            let mut st = self.state()?;
            let n = st
                .segments
                .iter()
                .take(st.segments.len() - 1)
                .take_while(|s| s.seq < oldest_live)
                .count();
            st.segments.drain(..n).map(|s| s.seq).collect()
        };
        if obsolete.is_empty() {
            return Ok(());
        }
        for seq in obsolete {
            let p = segment::path(&self.0.dir, seq);
            std::fs::remove_file(&p).map_err(|e| StoreError::io(&p, e))?;
        }
        segment::sync_dir(&self.0.dir)
    }

    fn write_record(&self, st: &mut State, r: &Record<'_>) -> Result<()> {
        let mut buf = Vec::new();
        record::encode(r, &mut buf)?;
        self.write(st, &buf).map(|_| ())
    }

    /// Writes whole records at the end of the newest segment (starting a new one first when
    /// it is full). Returns the segment's number and the offset the bytes went to.
    fn write(&self, st: &mut State, buf: &[u8]) -> Result<(u64, u64)> {
        let full = st.segments.last().is_some_and(|s| {
            s.len > record::HEADER_LEN && s.len + buf.len() as u64 > self.0.options.segment_bytes
        });
        if full {
            self.rotate(st)?;
        }
        let segment_bytes = self.0.options.segment_bytes;
        let seg = st.segments.last_mut().expect("a segment is always open");
        let end = seg.len + buf.len() as u64;
        let zero_filled;
        let bytes = if seg.zero_fill && end > seg.size {
            // The next stretch of zeros goes out with the records, in one write.
            let size = (end + ZERO_FILL_BYTES).min(segment_bytes.max(end));
            let mut with_zeros = Vec::with_capacity((size - seg.len) as usize);
            with_zeros.extend_from_slice(buf);
            with_zeros.resize((size - seg.len) as usize, 0);
            zero_filled = with_zeros;
            &zero_filled[..]
        } else {
            buf
        };
        if let Err(e) = seg.file.write_all_at(bytes, seg.len) {
            let why = format!("write: {e}");
            st.failed = Some(why.clone());
            return Err(StoreError::Engine(format!(
                "{}: {why}",
                segment::path(&self.0.dir, seg.seq).display()
            )));
        }
        let at = (seg.seq, seg.len);
        seg.size = seg.size.max(seg.len + bytes.len() as u64);
        seg.len = end;
        let file = seg.file.clone();
        if !st.dirty.iter().any(|f| Arc::ptr_eq(f, &file)) {
            st.dirty.push(file);
        }
        Ok(at)
    }

    /// Starts a new segment: the current one is synced first (so that only the newest segment
    /// can ever end in a torn record), and the new one opens with the named values and the
    /// purge point.
    fn rotate(&self, st: &mut State) -> Result<()> {
        let current = st.segments.last().expect("a segment is always open");
        current
            .file
            .sync_data()
            .map_err(|e| StoreError::io(&segment::path(&self.0.dir, current.seq), e))?;
        let seq = current.seq + 1;
        let mut restated: Vec<Record<'_>> = st
            .meta
            .iter()
            .map(|(key, value)| Record::Meta { key, value })
            .collect();
        if let Some(upto) = st.purged {
            restated.push(Record::Purge { upto });
        }
        let seg = segment::create(&self.0.dir, seq, &restated)?;
        st.segments.push(seg);
        Ok(())
    }
}

impl State {
    fn purge(&mut self, upto: u64) {
        self.entries = self.entries.split_off(&upto.saturating_add(1));
        self.purged = self.purged.max(Some(upto));
    }

    /// Applies a record read back at open (at `at` in segment `seq`).
    fn replay(&mut self, seq: u64, r: &Record<'_>, at: u64) {
        match *r {
            Record::Entry { index, data } => {
                self.entries.insert(
                    index,
                    Loc {
                        seq,
                        offset: at + record::ENTRY_DATA_AT,
                        len: data.len(),
                    },
                );
            }
            Record::Truncate { from } => {
                self.entries.split_off(&from);
            }
            Record::Purge { upto } => self.purge(upto),
            Record::Meta { key, value } => {
                self.meta.insert(key.to_vec(), value.to_vec());
            }
        }
    }
}

#[cfg(test)]
mod tests;
