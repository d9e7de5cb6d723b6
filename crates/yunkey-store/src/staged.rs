//! Writes staged over a tree ([`Staged`]): reads through the staged view see them, and they
//! reach the tree as atomic batches when committed.
//!
//! Two uses:
//! - the coordinator applies a log entry that carries many commands (`Op::Batch`) as one
//!   batch: each command reads what the commands before it wrote ([`Staged::into_batch`]);
//! - while a snapshot is written from the Raft state machine's tree, new writes are held in
//!   memory ([`Staged::hold`]) so that the tree stands still without stopping the writers;
//!   then they are folded back in short atomic steps ([`Staged::commit_next`]) while writes
//!   go on.
//!
//! (Until 2026-12-04 the Raft state machine also staged a group of entries and applied it as
//! one batch: on sled, where the state lived until 2026-12-03, every batch cost a disk write
//! (docs/performance.md, run L); in memory that only copied every write once more.)
//!
//! Held writes are kept twice: merged (the newest write of each key, for reads) and as the
//! batches they came in, in order (for committing). Committing a run of consecutive batches
//! as one atomic batch leaves the tree as it would be after the last of them, so a crash
//! between two steps leaves a state the writers had passed through, never a mix. Steps are
//! bounded ([`COMMIT_STEP_WRITES`]) because a base blocks its readers while it applies a
//! batch (sled for its whole database, the in-memory engine behind its write lock).

use crate::{Batch, Entry, Result, Tree, TreeEngine};
use std::cmp::Ordering;
use std::collections::{BTreeMap, VecDeque};
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// Staged writes: `Some(value)` sets a key, `None` removes it; the latest write per key.
type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// One batch as it was written: its writes in order.
type Ops = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// Most writes one [`Staged::commit_next`] step applies to the base, which blocks its readers
/// while it applies a batch (sled for about a millisecond per thousand writes on the
/// development machine; the in-memory engine for much less).
pub const COMMIT_STEP_WRITES: usize = 4096;

/// Writes staged over a base tree; see the module documentation.
///
/// [`Staged::tree`] is a [`Tree`] whose reads (`get`, `range`, `first`, `last`, `len`) see the
/// base with the staged writes on top. While the `Staged` holds writes, its writes (`insert`,
/// `remove`, `apply`, `clear`) are held in memory and the base does not change; otherwise
/// they go straight to the base. Other handles on the base see held writes only once they
/// are committed. Dropping a `Staged` discards what it still holds.
pub struct Staged {
    layer: Arc<Layer>,
    view: Tree,
}

impl Staged {
    /// A `Staged` over `base` that holds its writes from the start, for a caller that reads
    /// them back and then hands them on whole ([`Staged::into_batch`]) or commits them at once
    /// ([`Staged::commit`]). It keeps only the newest write of each key, moved rather than
    /// copied (an entry of the coordinator's state machine that carries many commands is
    /// applied that way: docs/performance.md, item 27), so [`Staged::commit_next`] has no
    /// steps to take and commits everything in one.
    pub fn overlay(base: &Tree) -> Self {
        let staged = Self::with_order(base, false);
        staged.hold();
        staged
    }

    /// A `Staged` over `base` that writes straight through until [`Staged::hold`].
    pub fn passthrough(base: &Tree) -> Self {
        Self::with_order(base, true)
    }

    fn with_order(base: &Tree, keep_order: bool) -> Self {
        let layer = Arc::new(Layer {
            base: base.clone(),
            held: RwLock::new(None),
            committing: Mutex::new(()),
            keep_order,
        });
        Self {
            view: Tree(layer.clone()),
            layer,
        }
    }

    /// The base with the staged writes on top; see the type's documentation.
    pub fn tree(&self) -> &Tree {
        &self.view
    }

    /// From now on, writes are held in memory and the base stands still, until
    /// [`Staged::commit`]. A write going straight through finishes first. Holding already:
    /// nothing changes.
    pub fn hold(&self) {
        let mut held = self.layer.held_mut();
        if held.is_none() {
            *held = Some(Arc::default());
        }
    }

    /// Whether writes are being held.
    pub fn is_holding(&self) -> bool {
        self.layer.held().is_some()
    }

    /// How many held writes are not committed yet (as written: a key written twice counts
    /// twice).
    pub fn held_writes(&self) -> usize {
        self.layer
            .held()
            .as_ref()
            .map_or(0, |h| lock(h).queued_writes)
    }

    /// Applies every held write to the base as one atomic batch (nothing if none) and stops
    /// holding: later writes go straight to the base. The caller keeps writers out while this
    /// runs (a write during it could be lost); readers may go on. The held batches are moved
    /// into the base's batch, not copied (this runs once per group of applied Raft entries):
    /// if the base refuses it, the error is returned and they are gone, which its user treats
    /// as fatal (openraft stops a node whose state machine fails to write).
    pub fn commit(&self) -> Result<()> {
        let _one = lock(&self.layer.committing);
        let Some(held) = self.layer.held().clone() else {
            return Ok(());
        };
        let rest: Ops = lock(&held).take_writes(self.layer.keep_order);
        self.layer.apply_to_base(vec![rest])?;
        *self.layer.held_mut() = None;
        Ok(())
    }

    /// Every held write as one batch, in the order they were written, without applying them:
    /// for a caller that stages writes to read them back, then hands them on whole (an
    /// `Op::Batch` of the coordinator's state machine). Not holding: an empty batch.
    pub fn into_batch(self) -> Batch {
        let Some(held) = self.layer.held_mut().take() else {
            return Batch::new();
        };
        let mut h = lock(&held);
        let mut batch = Batch::new();
        for (key, value) in h.take_writes(self.layer.keep_order) {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        batch
    }

    /// Applies the oldest held batches to the base as one atomic batch of at most
    /// [`COMMIT_STEP_WRITES`] writes (or one batch, if that one is larger) while writes go on;
    /// they stay readable as before. Returns how many held writes are left. Not holding:
    /// nothing, `Ok(0)`. To stop holding, call this until few are left, then
    /// [`Staged::commit`] with the writers stopped for that short moment.
    pub fn commit_next(&self) -> Result<usize> {
        let _one = lock(&self.layer.committing);
        let Some(held) = self.layer.held().clone() else {
            return Ok(0);
        };
        if !self.layer.keep_order {
            let all = lock(&held).take_writes(false);
            self.layer.apply_to_base(vec![all])?;
            return Ok(0);
        }
        let step = {
            let h = lock(&held);
            let mut step = Vec::new();
            let mut writes = 0;
            for ops in &h.queue {
                if !step.is_empty() && writes + ops.len() > COMMIT_STEP_WRITES {
                    break;
                }
                writes += ops.len();
                step.push(ops.clone());
            }
            step
        };
        let (batches, writes) = (step.len(), step.iter().map(Vec::len).sum::<usize>());
        self.layer.apply_to_base(step)?;
        // Only now are they dropped from the queue: a commit that failed leaves them held.
        let mut h = lock(&held);
        h.queue.drain(..batches);
        h.queued_writes -= writes;
        Ok(h.queued_writes)
    }
}

impl std::fmt::Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Staged({} held writes)", self.held_writes())
    }
}

/// Locks a mutex whose data is only ever changed key by key or replaced whole: a panic
/// elsewhere cannot leave it half-changed.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes held in memory.
#[derive(Default)]
struct Held {
    /// The newest held write of each key: what readers see.
    merged: Writes,
    /// The batches not committed yet, oldest first (none in an overlay: `merged` has them).
    queue: VecDeque<Ops>,
    /// Writes not committed yet (as written: a key written twice counts twice).
    queued_writes: usize,
}

impl Held {
    /// Every held write, to be applied as one batch: the queue in order, or in an overlay
    /// the newest write of each key (the same end state). Leaves nothing held.
    fn take_writes(&mut self, keep_order: bool) -> Ops {
        self.queued_writes = 0;
        if !keep_order {
            std::mem::take(&mut self.merged).into_iter().collect()
        } else {
            self.queue.drain(..).flatten().collect()
        }
    }
}

/// The engine behind [`Staged::tree`].
struct Layer {
    base: Tree,
    /// `Some` while holding.
    held: RwLock<Option<Arc<Mutex<Held>>>>,
    /// One commit at a time.
    committing: Mutex<()>,
    /// Whether held writes are also queued as batches, in order, for [`Staged::commit_next`]
    /// (not in an [`Staged::overlay`]).
    keep_order: bool,
}

impl Layer {
    fn held(&self) -> std::sync::RwLockReadGuard<'_, Option<Arc<Mutex<Held>>>> {
        self.held.read().unwrap_or_else(|e| e.into_inner())
    }

    fn held_mut(&self) -> std::sync::RwLockWriteGuard<'_, Option<Arc<Mutex<Held>>>> {
        self.held.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies consecutive batches to the base as one atomic batch (nothing if empty).
    fn apply_to_base(&self, batches: Vec<Ops>) -> Result<()> {
        let mut batch = Batch::new();
        for (key, value) in batches.into_iter().flatten() {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.base.apply(batch)
    }

    /// The held writes of keys in `[from, to)` (empty when not holding).
    fn held_range(&self, from: &[u8], to: Option<&[u8]>) -> Writes {
        let upper = match to {
            Some(t) => Bound::Excluded(t.to_vec()),
            None => Bound::Unbounded,
        };
        match self.held().as_ref() {
            None => Writes::new(),
            Some(h) => lock(h)
                .merged
                .range((Bound::Included(from.to_vec()), upper))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

impl TreeEngine for Layer {
    fn read(&self, key: &[u8], f: &mut dyn FnMut(&[u8])) -> Result<bool> {
        if let Some(h) = self.held().as_ref() {
            if let Some(staged) = lock(h).merged.get(key) {
                return Ok(staged.as_deref().map(f).is_some());
            }
        }
        self.base.0.read(key, f)
    }

    fn apply(&self, batch: Batch) -> Result<()> {
        let held = self.held();
        let Some(h) = held.as_ref() else {
            // Straight through, with `hold` waiting for it.
            return self.base.apply(batch);
        };
        let ops = batch.into_ops();
        let mut h = lock(h);
        h.queued_writes += ops.len();
        if !self.keep_order {
            h.merged.extend(ops);
            return Ok(());
        }
        for (key, value) in &ops {
            h.merged.insert(key.clone(), value.clone());
        }
        h.queue.push_back(ops);
        Ok(())
    }

    fn range(
        &self,
        from: &[u8],
        to: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = Result<Entry>> + Send> {
        let staged = self.held_range(from, to);
        Box::new(Merged {
            base: self.base.0.range(from, to).peekable(),
            staged: staged.into_iter().peekable(),
        })
    }

    fn last(&self) -> Result<Option<Entry>> {
        let staged = self.held_range(&[], None);
        let staged_last = staged
            .iter()
            .rev()
            .find_map(|(k, v)| v.clone().map(|v| (k.clone(), v)));
        let base_last = match self.base.last()? {
            // The base's last key removed here: the answer is further down; walk (rare).
            Some((k, _)) if matches!(staged.get(&k), Some(None)) => {
                return self.range(&[], None).last().transpose();
            }
            // Overwritten here: the staged value is among `staged_last`'s candidates.
            Some((k, _)) if staged.contains_key(&k) => None,
            other => other,
        };
        Ok(match (staged_last, base_last) {
            (Some(s), Some(b)) => Some(if s.0 >= b.0 { s } else { b }),
            (s, b) => s.or(b),
        })
    }

    fn first(&self) -> Result<Option<Entry>> {
        self.range(&[], None).next().transpose()
    }

    fn len(&self) -> usize {
        let mut len = self.base.len();
        for (key, value) in self.held_range(&[], None) {
            let in_base = matches!(self.base.get(&key), Ok(Some(_)));
            match (value.is_some(), in_base) {
                (true, false) => len += 1,
                (false, true) => len -= 1,
                _ => {}
            }
        }
        len
    }

    fn clear(&self) -> Result<()> {
        if self.held().is_none() {
            return self.base.clear();
        }
        let mut removals = Batch::new();
        for entry in self.base.range(&[], None) {
            removals.remove(entry?.0);
        }
        for key in self.held_range(&[], None).into_keys() {
            removals.remove(key);
        }
        self.apply(removals)
    }
}

/// The base's entries and the staged writes of one range, merged in key order: a staged write
/// replaces the base's entry of the same key, a staged removal hides it.
struct Merged {
    base: Peekable<Box<dyn Iterator<Item = Result<Entry>> + Send>>,
    staged: Peekable<std::collections::btree_map::IntoIter<Vec<u8>, Option<Vec<u8>>>>,
}

impl Iterator for Merged {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let order = match (self.base.peek(), self.staged.peek()) {
                (None, None) => return None,
                // An error from the base is passed on where it happened.
                (Some(Err(_)), _) | (Some(Ok(_)), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(Ok((base_key, _))), Some((staged_key, _))) => base_key.cmp(staged_key),
            };
            match order {
                Ordering::Less => return self.base.next(),
                // Replaced or hidden by the staged write.
                Ordering::Equal => drop(self.base.next()),
                Ordering::Greater => {}
            }
            let (key, value) = self.staged.next().expect("peeked");
            if let Some(value) = value {
                return Some(Ok((key, value)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Db;

    /// A `Staged` over `base` that holds its (ordered) writes from the start.
    fn held(base: &Tree) -> Staged {
        let staged = Staged::passthrough(base);
        staged.hold();
        staged
    }

    /// Same reads through a staged view as through a tree that took the writes directly,
    /// over a pseudo-random sequence of inserts, removes, batches and a clear, with the
    /// oldest layer folded into the base now and then and, from step 450, writes going
    /// straight through; then the commit leaves the base equal to that tree.
    #[test]
    fn staged_reads_match_applied_writes() {
        let db = Db::memory();
        let base = db.tree("base").unwrap();
        let model = db.tree("model").unwrap();
        for i in 0..40u8 {
            let key = [b'k', i % 20];
            base.insert(&key, &[i]).unwrap();
            model.insert(&key, &[i]).unwrap();
        }
        let staged = held(&base);
        let mut seed = 0x9e37_79b9_u32;
        let mut rand = move |n: u32| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed % n
        };
        for step in 0..600u32 {
            let key = [b'k', rand(30) as u8];
            match rand(10) {
                0..=3 => {
                    let v = step.to_be_bytes();
                    staged.tree().insert(&key, &v).unwrap();
                    model.insert(&key, &v).unwrap();
                }
                4..=6 => {
                    staged.tree().remove(&key).unwrap();
                    model.remove(&key).unwrap();
                }
                7 => {
                    let mut b = Batch::new();
                    b.insert(key.to_vec(), b"x".to_vec());
                    b.remove(key.to_vec());
                    b.insert([b'k', rand(30) as u8].to_vec(), b"y".to_vec());
                    staged.tree().apply(b.clone()).unwrap();
                    model.apply(b).unwrap();
                }
                8 if step == 300 => {
                    staged.tree().clear().unwrap();
                    model.clear().unwrap();
                }
                _ => {}
            }
            if step % 50 == 49 {
                staged.commit_next().unwrap();
            }
            if step == 450 {
                staged.commit().unwrap();
                assert!(!staged.is_holding());
            }
            let view = staged.tree();
            assert_eq!(view.get(&key).unwrap(), model.get(&key).unwrap());
            // Read in place: a held write, a held removal or the base's value, as `get`.
            let in_place = view.get_with(&key, <[u8]>::to_vec).unwrap();
            assert_eq!(in_place, model.get(&key).unwrap(), "step {step}");
            assert_eq!(view.first().unwrap(), model.first().unwrap(), "step {step}");
            assert_eq!(view.last().unwrap(), model.last().unwrap(), "step {step}");
            assert_eq!(view.len(), model.len(), "step {step}");
            let from = [b'k', rand(30) as u8];
            let to = [b'k', rand(30) as u8 + 1];
            let got: Vec<_> = view.range(&from, Some(&to)).map(|e| e.unwrap()).collect();
            let want: Vec<_> = model.range(&from, Some(&to)).map(|e| e.unwrap()).collect();
            assert_eq!(got, want, "step {step}");
        }
        let all = |t: &Tree| -> Vec<Entry> { t.range(&[], None).map(|e| e.unwrap()).collect() };
        staged.commit().unwrap();
        assert_eq!(all(&base), all(&model));
    }

    #[test]
    fn held_writes_leave_the_base_still_until_folded_in() {
        let db = Db::memory();
        let base = db.tree("t").unwrap();
        let live = Staged::passthrough(&base);
        live.tree().insert(b"a", b"1").unwrap();
        assert_eq!(
            base.get(b"a").unwrap().as_deref(),
            Some(&b"1"[..]),
            "straight through"
        );
        live.hold();
        live.tree().insert(b"a", b"2").unwrap();
        live.tree().insert(b"b", b"2").unwrap();
        assert_eq!(base.get(b"a").unwrap().as_deref(), Some(&b"1"[..]), "held");
        assert_eq!(live.tree().get(b"a").unwrap().as_deref(), Some(&b"2"[..]));
        // The held batches go in; a write after them stays held, readable, and on top.
        assert_eq!(live.held_writes(), 2);
        assert_eq!(live.commit_next().unwrap(), 0);
        live.tree().insert(b"a", b"3").unwrap();
        assert_eq!(base.get(b"a").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(base.get(b"b").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(live.tree().get(b"a").unwrap().as_deref(), Some(&b"3"[..]));
        assert_eq!(live.held_writes(), 1);
        live.commit().unwrap();
        assert!(!live.is_holding());
        assert_eq!(base.get(b"a").unwrap().as_deref(), Some(&b"3"[..]));
        live.tree().remove(b"b").unwrap();
        assert_eq!(base.get(b"b").unwrap(), None, "straight through again");
    }

    #[test]
    fn into_batch_hands_on_the_held_writes_in_order_without_applying_them() {
        let db = Db::memory();
        let base = db.tree("t").unwrap();
        base.insert(b"kept", b"0").unwrap();
        let staged = held(&base);
        staged.tree().insert(b"a", b"1").unwrap();
        let mut b = Batch::new();
        b.insert(b"a".to_vec(), b"2".to_vec());
        b.remove(b"kept".to_vec());
        staged.tree().apply(b).unwrap();
        assert_eq!(staged.tree().get(b"kept").unwrap(), None);
        let batch = staged.into_batch();
        assert_eq!(batch.len(), 3);
        assert_eq!(base.get(b"a").unwrap(), None, "not applied");
        assert_eq!(base.get(b"kept").unwrap().as_deref(), Some(&b"0"[..]));
        // Applied, the batch leaves the base as the staged view showed it.
        base.apply(batch).unwrap();
        assert_eq!(base.get(b"a").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(base.get(b"kept").unwrap(), None);
        assert!(Staged::passthrough(&base).into_batch().is_empty());
    }

    /// An overlay reads like any staged view and hands on the newest write of each key:
    /// applied, its batch leaves the base as the ordered batches would.
    #[test]
    fn an_overlay_hands_on_the_newest_write_of_each_key() {
        let db = Db::memory();
        let (base, model) = (db.tree("t").unwrap(), db.tree("model").unwrap());
        for tree in [&base, &model] {
            tree.insert(b"kept", b"0").unwrap();
            tree.insert(b"gone", b"0").unwrap();
        }
        let overlay = Staged::overlay(&base);
        let ordered = held(&model);
        for staged in [&overlay, &ordered] {
            staged.tree().insert(b"a", b"1").unwrap();
            let mut b = Batch::new();
            b.insert(b"a".to_vec(), b"2".to_vec());
            b.remove(b"gone".to_vec());
            b.insert(b"new".to_vec(), b"3".to_vec());
            staged.tree().apply(b).unwrap();
            assert_eq!(staged.tree().get(b"a").unwrap().as_deref(), Some(&b"2"[..]));
            assert_eq!(staged.tree().get(b"gone").unwrap(), None);
            assert_eq!(staged.held_writes(), 4);
        }
        assert_eq!(base.get(b"a").unwrap(), None, "held, not applied");
        let batch = overlay.into_batch();
        assert_eq!(batch.len(), 3, "one write per key");
        base.apply(batch).unwrap();
        model.apply(ordered.into_batch()).unwrap();
        let all = |t: &Tree| t.range(b"", None).map(|e| e.unwrap()).collect::<Vec<_>>();
        assert_eq!(all(&base), all(&model));
        // Committed rather than handed on: the same, in one step.
        let overlay = Staged::overlay(&base);
        overlay.tree().insert(b"late", b"4").unwrap();
        assert_eq!(overlay.commit_next().unwrap(), 0);
        assert_eq!(base.get(b"late").unwrap().as_deref(), Some(&b"4"[..]));
    }

    /// A step commits whole batches, oldest first, at most `COMMIT_STEP_WRITES` writes
    /// unless one batch alone is larger: the base is always as some batch left it.
    #[test]
    fn steps_commit_whole_batches_in_order() {
        let db = Db::memory();
        let base = db.tree("t").unwrap();
        let live = Staged::passthrough(&base);
        live.hold();
        let batch = |tag: u8, n: usize| {
            let mut b = Batch::new();
            for i in 0..n {
                b.insert([tag, (i >> 8) as u8, i as u8].to_vec(), vec![tag]);
            }
            b.insert(b"last".to_vec(), vec![tag]);
            b
        };
        let third = COMMIT_STEP_WRITES / 3;
        live.tree().apply(batch(1, third)).unwrap();
        live.tree().apply(batch(2, third)).unwrap();
        live.tree()
            .apply(batch(3, COMMIT_STEP_WRITES + 10))
            .unwrap();
        live.tree().apply(batch(4, 5)).unwrap();
        let last = || base.get(b"last").unwrap();
        let left = live.commit_next().unwrap();
        assert_eq!(last(), Some(vec![2]), "batches 1 and 2 fit in one step");
        assert_eq!(left, COMMIT_STEP_WRITES + 11 + 6);
        assert_eq!(
            live.commit_next().unwrap(),
            6,
            "batch 3 alone is larger than a step"
        );
        assert_eq!(last(), Some(vec![3]));
        assert_eq!(
            live.tree().get(b"last").unwrap(),
            Some(vec![4]),
            "readers see the newest"
        );
        live.commit().unwrap();
        assert_eq!(last(), Some(vec![4]));
        assert_eq!(base.len(), 2 * third + COMMIT_STEP_WRITES + 10 + 5 + 1);
        live.commit().unwrap();
        assert_eq!(live.commit_next().unwrap(), 0, "nothing held");
    }

    #[test]
    fn dropped_writes_never_reach_the_base() {
        let db = Db::memory();
        let base = db.tree("t").unwrap();
        base.insert(b"a", b"1").unwrap();
        let staged = held(&base);
        staged.tree().insert(b"a", b"2").unwrap();
        staged.tree().insert(b"b", b"3").unwrap();
        assert_eq!(staged.held_writes(), 2);
        assert_eq!(base.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        drop(staged);
        assert_eq!(base.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(base.get(b"b").unwrap(), None);
    }
}
