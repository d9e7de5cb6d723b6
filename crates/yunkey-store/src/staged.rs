//! Writes staged over a tree ([`Staged`]): reads through the staged view see them, and they
//! reach the tree as atomic batches when committed.
//!
//! Two uses in the Raft state machine:
//! - it applies a group of log entries as one batch: each entry reads what the entries before
//!   it in the group wrote, and the engine takes one batch per group instead of one per entry.
//!   With sled that matters: every batch seals and writes sled's IO buffer (a `pwrite` and a
//!   `sync_file_range`, on its IO thread pool), so a batch per entry cost a disk write per
//!   entry on every coordinator (docs/performance.md, run L);
//! - while a snapshot is written from the tree, new writes are held in memory
//!   ([`Staged::hold`]) so that the tree stands still without stopping the writers; then they
//!   are folded back in steps ([`Staged::commit_oldest`]) while writes go on.

use crate::{Batch, Entry, Result, Tree, TreeEngine};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// Staged writes: `Some(value)` sets a key, `None` removes it; the latest write per key.
type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Writes staged over a base tree; see the module documentation.
///
/// [`Staged::tree`] is a [`Tree`] whose reads (`get`, `range`, `first`, `last`, `len`) see the
/// base with the staged writes on top. While the `Staged` holds writes, its writes (`insert`,
/// `remove`, `apply`, `clear`) are staged in memory and the base does not change; otherwise
/// they go straight to the base. Staged writes live in layers, oldest first; new writes go
/// to the newest. Other handles on the base see none of them until they are committed, and
/// then a whole layer at once. Dropping a `Staged` discards what it still holds.
pub struct Staged {
    layers: Arc<Layers>,
    view: Tree,
}

impl Staged {
    /// A `Staged` over `base` that holds its writes from the start (one empty layer).
    pub fn new(base: &Tree) -> Self {
        let staged = Self::passthrough(base);
        staged.hold();
        staged
    }

    /// A `Staged` over `base` that writes straight through until [`Staged::hold`].
    pub fn passthrough(base: &Tree) -> Self {
        let layers = Arc::new(Layers {
            base: base.clone(),
            stack: RwLock::new(Vec::new()),
            committing: Mutex::new(()),
        });
        Self {
            view: Tree(layers.clone()),
            layers,
        }
    }

    /// The base with the staged writes on top; see the type's documentation.
    pub fn tree(&self) -> &Tree {
        &self.view
    }

    /// From now on, writes are held in memory and the base stands still, until
    /// [`Staged::commit`]. Holding already: nothing changes.
    pub fn hold(&self) {
        let mut stack = self.layers.stack_mut();
        if stack.is_empty() {
            stack.push(Arc::default());
        }
    }

    /// Whether writes are being held.
    pub fn is_holding(&self) -> bool {
        !self.layers.stack().is_empty()
    }

    /// How many keys have a staged write (a key written in several layers counts once per
    /// layer).
    pub fn staged_keys(&self) -> usize {
        self.layers.stack().iter().map(|l| lock(l).len()).sum()
    }

    /// Applies every held write to the base as one atomic batch (nothing if none) and stops
    /// holding: later writes go straight to the base. The caller keeps writers out while this
    /// runs (a write during it could be lost); readers may go on.
    pub fn commit(&self) -> Result<()> {
        let _one = lock(&self.layers.committing);
        let layers: Vec<_> = self.layers.stack().clone();
        let mut all = Writes::new();
        for layer in &layers {
            all.extend(lock(layer).iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        self.layers.apply_to_base(all)?;
        self.layers.stack_mut().clear();
        Ok(())
    }

    /// Folds the oldest held layer into the base as one atomic batch while writes go on: a
    /// new layer takes the writes from here, the oldest is applied to the base, then dropped.
    /// Returns how many staged keys are left (in the newer layers). Not holding: nothing,
    /// `Ok(0)`. To stop holding, call this until few keys are left, then [`Staged::commit`]
    /// with the writers stopped for that short moment.
    pub fn commit_oldest(&self) -> Result<usize> {
        let _one = lock(&self.layers.committing);
        let oldest = {
            let mut stack = self.layers.stack_mut();
            let Some(oldest) = stack.first().cloned() else {
                return Ok(0);
            };
            stack.push(Arc::default());
            oldest
        };
        // The oldest layer stays readable while the base takes its writes: readers see the
        // same values before, during and after.
        let writes = lock(&oldest).clone();
        self.layers.apply_to_base(writes)?;
        let mut stack = self.layers.stack_mut();
        stack.remove(0);
        Ok(stack.iter().map(|l| lock(l).len()).sum())
    }
}

impl std::fmt::Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Staged({} keys)", self.staged_keys())
    }
}

/// Locks a mutex whose data is only ever changed key by key or replaced whole: a panic
/// elsewhere cannot leave it half-changed.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The engine behind [`Staged::tree`]: the base and the layers of held writes, oldest first.
struct Layers {
    base: Tree,
    stack: RwLock<Vec<Arc<Mutex<Writes>>>>,
    /// One commit at a time.
    committing: Mutex<()>,
}

impl Layers {
    fn stack(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Mutex<Writes>>>> {
        self.stack.read().unwrap_or_else(|e| e.into_inner())
    }

    fn stack_mut(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<Mutex<Writes>>>> {
        self.stack.write().unwrap_or_else(|e| e.into_inner())
    }

    fn apply_to_base(&self, writes: Writes) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::new();
        for (key, value) in writes {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        self.base.apply(batch)
    }

    /// The newest staged write of each key in `[from, to)`, across the layers.
    fn staged_range(&self, from: &[u8], to: Option<&[u8]>) -> Writes {
        let upper = match to {
            Some(t) => Bound::Excluded(t.to_vec()),
            None => Bound::Unbounded,
        };
        let mut out = Writes::new();
        for layer in self.stack().iter() {
            let layer = lock(layer);
            out.extend(
                layer
                    .range((Bound::Included(from.to_vec()), upper.clone()))
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
        out
    }
}

impl TreeEngine for Layers {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        for layer in self.stack().iter().rev() {
            if let Some(staged) = lock(layer).get(key) {
                return Ok(staged.clone());
            }
        }
        self.base.get(key)
    }

    fn apply(&self, batch: Batch) -> Result<()> {
        let stack = self.stack();
        match stack.last() {
            Some(top) => {
                let mut top = lock(top);
                for (key, value) in batch.into_ops() {
                    top.insert(key, value);
                }
                Ok(())
            }
            None => self.base.apply(batch),
        }
    }

    fn range(
        &self,
        from: &[u8],
        to: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = Result<Entry>> + Send> {
        if matches!(to, Some(t) if t <= from) {
            // An empty range (BTreeMap panics on one that ends before it starts).
            return Box::new(std::iter::empty());
        }
        let staged = self.staged_range(from, to);
        Box::new(Merged {
            base: self.base.0.range(from, to).peekable(),
            staged: staged.into_iter().peekable(),
        })
    }

    fn last(&self) -> Result<Option<Entry>> {
        let staged = self.staged_range(&[], None);
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
        for (key, value) in self.staged_range(&[], None) {
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
        if self.stack().is_empty() {
            return self.base.clear();
        }
        let mut removed = Writes::new();
        for entry in self.base.range(&[], None) {
            removed.insert(entry?.0, None);
        }
        for key in self.staged_range(&[], None).into_keys() {
            removed.insert(key, None);
        }
        let stack = self.stack();
        if let Some(top) = stack.last() {
            lock(top).append(&mut removed);
        }
        Ok(())
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
        let staged = Staged::new(&base);
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
                staged.commit_oldest().unwrap();
            }
            if step == 450 {
                staged.commit().unwrap();
                assert!(!staged.is_holding());
            }
            let view = staged.tree();
            assert_eq!(view.get(&key).unwrap(), model.get(&key).unwrap());
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
        // The oldest layer goes in; a write after it stays held, readable, and on top.
        assert_eq!(live.commit_oldest().unwrap(), 0);
        live.tree().insert(b"a", b"3").unwrap();
        assert_eq!(base.get(b"a").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(base.get(b"b").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(live.tree().get(b"a").unwrap().as_deref(), Some(&b"3"[..]));
        assert_eq!(live.staged_keys(), 1);
        live.commit().unwrap();
        assert!(!live.is_holding());
        assert_eq!(base.get(b"a").unwrap().as_deref(), Some(&b"3"[..]));
        live.tree().remove(b"b").unwrap();
        assert_eq!(base.get(b"b").unwrap(), None, "straight through again");
    }

    #[test]
    fn dropped_writes_never_reach_the_base() {
        let db = Db::memory();
        let base = db.tree("t").unwrap();
        base.insert(b"a", b"1").unwrap();
        let staged = Staged::new(&base);
        staged.tree().insert(b"a", b"2").unwrap();
        staged.tree().insert(b"b", b"3").unwrap();
        assert_eq!(staged.staged_keys(), 2);
        assert_eq!(base.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        drop(staged);
        assert_eq!(base.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(base.get(b"b").unwrap(), None);
    }
}
