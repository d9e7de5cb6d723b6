//! Writes staged over a tree ([`Staged`]): reads through the staged view see them, and
//! [`Staged::commit`] applies them all to the tree as one atomic batch.
//!
//! The Raft state machine applies a group of log entries this way: each entry reads what the
//! entries before it in the group wrote, and the engine takes one batch per group instead of
//! one per entry. With sled that matters: every batch seals and writes sled's IO buffer
//! (a `pwrite` and a `sync_file_range`, on its IO thread pool), so a batch per entry cost a
//! disk write per entry on every coordinator (docs/performance.md, run L).

use crate::{Batch, Entry, Result, Tree, TreeEngine};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

/// Staged writes: `Some(value)` sets a key, `None` removes it; the latest write per key.
type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Writes staged over a base tree; see the module documentation.
///
/// [`Staged::tree`] is a [`Tree`] whose reads (`get`, `range`, `first`, `last`, `len`) see the
/// base with the staged writes on top, and whose writes (`insert`, `remove`, `apply`,
/// `clear`) are staged, not applied. Nothing reaches the base until [`Staged::commit`];
/// dropping a `Staged` discards its writes. Other handles on the base see none of them until
/// the commit, and then all of them at once.
pub struct Staged {
    layer: Arc<Layer>,
    view: Tree,
}

impl Staged {
    /// An empty set of writes over `base`.
    pub fn new(base: &Tree) -> Self {
        let layer = Arc::new(Layer {
            base: base.clone(),
            writes: Mutex::new(Writes::new()),
        });
        Self {
            view: Tree(layer.clone()),
            layer,
        }
    }

    /// The base with the staged writes on top; writing through it stages.
    pub fn tree(&self) -> &Tree {
        &self.view
    }

    /// How many keys have a staged write.
    pub fn staged_keys(&self) -> usize {
        self.layer.writes().len()
    }

    /// Applies every staged write to the base tree as one atomic batch (nothing if none).
    pub fn commit(self) -> Result<()> {
        let writes = std::mem::take(&mut *self.layer.writes());
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
        self.layer.base.apply(batch)
    }
}

impl std::fmt::Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Staged({} keys)", self.staged_keys())
    }
}

/// The engine behind [`Staged::tree`].
struct Layer {
    base: Tree,
    writes: Mutex<Writes>,
}

impl Layer {
    fn writes(&self) -> MutexGuard<'_, Writes> {
        // The map is only ever replaced whole or edited key by key: a panic elsewhere
        // cannot leave it half-changed.
        self.writes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl TreeEngine for Layer {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(staged) = self.writes().get(key) {
            return Ok(staged.clone());
        }
        self.base.get(key)
    }

    fn apply(&self, batch: Batch) -> Result<()> {
        let mut writes = self.writes();
        for (key, value) in batch.into_ops() {
            writes.insert(key, value);
        }
        Ok(())
    }

    fn range(
        &self,
        from: &[u8],
        to: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = Result<Entry>> + Send> {
        let upper = match to {
            // An empty range (BTreeMap panics on one that ends before it starts).
            Some(t) if t <= from => return Box::new(std::iter::empty()),
            Some(t) => Bound::Excluded(t.to_vec()),
            None => Bound::Unbounded,
        };
        let staged: Vec<_> = self
            .writes()
            .range((Bound::Included(from.to_vec()), upper))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Box::new(Merged {
            base: self.base.0.range(from, to).peekable(),
            staged: staged.into_iter().peekable(),
        })
    }

    fn last(&self) -> Result<Option<Entry>> {
        let staged_last = self
            .writes()
            .iter()
            .rev()
            .find_map(|(k, v)| v.clone().map(|v| (k.clone(), v)));
        let base_last = match self.base.last()? {
            // The base's last key removed here: the answer is further down; walk (rare).
            Some((k, _)) if matches!(self.writes().get(&k), Some(None)) => {
                return self.range(&[], None).last().transpose();
            }
            // Overwritten here: the staged value is in `staged_last`'s candidates.
            Some((k, _)) if self.writes().contains_key(&k) => None,
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
        let writes = self.writes();
        let mut len = self.base.len();
        for (key, value) in writes.iter() {
            let in_base = matches!(self.base.get(key), Ok(Some(_)));
            match (value.is_some(), in_base) {
                (true, false) => len += 1,
                (false, true) => len -= 1,
                _ => {}
            }
        }
        len
    }

    fn clear(&self) -> Result<()> {
        let mut removed = Writes::new();
        for entry in self.base.range(&[], None) {
            removed.insert(entry?.0, None);
        }
        let mut writes = self.writes();
        for value in writes.values_mut() {
            *value = None;
        }
        writes.append(&mut removed);
        Ok(())
    }
}

/// The base's entries and the staged writes of one range, merged in key order: a staged write
/// replaces the base's entry of the same key, a staged removal hides it.
struct Merged {
    base: Peekable<Box<dyn Iterator<Item = Result<Entry>> + Send>>,
    staged: Peekable<std::vec::IntoIter<(Vec<u8>, Option<Vec<u8>>)>>,
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
    /// over a pseudo-random sequence of inserts, removes, batches and a clear; then the
    /// commit leaves the base equal to that tree.
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
        assert_ne!(
            all(&base),
            all(&model),
            "the base saw nothing before the commit"
        );
        staged.commit().unwrap();
        assert_eq!(all(&base), all(&model));
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
