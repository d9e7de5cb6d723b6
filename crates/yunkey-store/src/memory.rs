//! The in-memory engine: same semantics as sled, nothing on disk.
//!
//! Used by tests, and by the coordinator's Raft state machine, whose durability is the Raft
//! log and its snapshot files (it is rebuilt from them when a coordinator starts; see
//! `yunkey_raft::StateMachineStore`). So it must behave under load: a range walks the tree in
//! chunks of [`RANGE_CHUNK`] entries, taking the read lock once per chunk, so that a long
//! scan (a snapshot of a million users) neither copies the whole tree nor stops writers for
//! its whole length. Like sled's, such a scan is not a point-in-time view: entries written
//! behind the scan's position after it started are not seen, entries ahead of it are.

use crate::{Batch, DbEngine, Entry, Result, TreeEngine};
use smallvec::SmallVec;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, RwLock};

/// Entries a range reads per read-lock acquisition.
const RANGE_CHUNK: usize = 1024;

/// Longest key kept inside the tree's nodes rather than in a heap allocation of its own: the
/// coordinator's keys are a short prefix and an id (a ledger key is 34 bytes, a request key
/// for a request without a client id 71). A lookup in a tree of millions of keys compares a
/// key in each node it passes; inline, those bytes are in the node's own cache lines instead
/// of one cache miss each (docs/performance.md, item 27).
const INLINE_KEY: usize = 72;

type Key = SmallVec<[u8; INLINE_KEY]>;
type Map = BTreeMap<Key, Vec<u8>>;

/// A written key as the tree keeps it: inline whenever it is short enough. (`from_vec` alone
/// goes by the vector's capacity, so a short key built by pushing, with room to spare, would
/// stay on the heap.)
fn key(k: Vec<u8>) -> Key {
    if k.len() <= INLINE_KEY {
        Key::from_slice(&k)
    } else {
        Key::from_vec(k)
    }
}

#[derive(Default)]
pub(crate) struct MemDb {
    trees: Mutex<HashMap<String, Arc<MemTree>>>,
}

impl DbEngine for MemDb {
    fn open_tree(&self, name: &str) -> Result<Arc<dyn TreeEngine>> {
        let mut trees = self.trees.lock().expect("poisoned");
        Ok(trees.entry(name.to_owned()).or_default().clone())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64> {
        Ok(0)
    }
}

#[derive(Default)]
struct MemTree(Arc<RwLock<Map>>);

impl TreeEngine for MemTree {
    fn read(&self, key: &[u8], f: &mut dyn FnMut(&[u8])) -> Result<bool> {
        Ok(self
            .0
            .read()
            .expect("poisoned")
            .get(key)
            .map(|v| f(v))
            .is_some())
    }

    fn apply(&self, batch: Batch) -> Result<()> {
        let mut map = self.0.write().expect("poisoned");
        for (k, v) in batch.into_ops() {
            match v {
                Some(v) => map.insert(key(k), v),
                None => map.remove(k.as_slice()),
            };
        }
        Ok(())
    }

    fn range(
        &self,
        from: &[u8],
        to: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = Result<Entry>> + Send> {
        Box::new(ChunkedRange {
            map: self.0.clone(),
            next: Bound::Included(from.to_vec()),
            to: to.map(<[u8]>::to_vec),
            buffered: VecDeque::new(),
            done: false,
        })
    }

    fn last(&self) -> Result<Option<Entry>> {
        let map = self.0.read().expect("poisoned");
        Ok(map.iter().next_back().map(|(k, v)| (k.to_vec(), v.clone())))
    }

    fn first(&self) -> Result<Option<Entry>> {
        let map = self.0.read().expect("poisoned");
        Ok(map.iter().next().map(|(k, v)| (k.to_vec(), v.clone())))
    }

    fn len(&self) -> usize {
        self.0.read().expect("poisoned").len()
    }

    fn clear(&self) -> Result<()> {
        self.0.write().expect("poisoned").clear();
        Ok(())
    }
}

/// A range over a [`MemTree`], read [`RANGE_CHUNK`] entries at a time.
struct ChunkedRange {
    map: Arc<RwLock<Map>>,
    /// Where the next chunk starts.
    next: Bound<Vec<u8>>,
    /// Exclusive end, or none for the end of the tree.
    to: Option<Vec<u8>>,
    buffered: VecDeque<Entry>,
    done: bool,
}

impl ChunkedRange {
    fn fill(&mut self) {
        let map = self.map.read().expect("poisoned");
        let upper = match &self.to {
            Some(t) => Bound::Excluded(t.as_slice()),
            None => Bound::Unbounded,
        };
        let lower = match &self.next {
            Bound::Included(k) => Bound::Included(k.as_slice()),
            Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
            Bound::Unbounded => Bound::Unbounded,
        };
        // An empty or inverted range yields nothing (BTreeMap panics on an inverted one).
        let empty = match (&lower, &upper) {
            (Bound::Included(l), Bound::Excluded(u)) => l >= u,
            (Bound::Excluded(l), Bound::Excluded(u)) => l >= u,
            _ => false,
        };
        if !empty {
            self.buffered.extend(
                map.range::<[u8], _>((lower, upper))
                    .take(RANGE_CHUNK)
                    .map(|(k, v)| (k.to_vec(), v.clone())),
            );
        }
        match self.buffered.back() {
            Some((k, _)) if self.buffered.len() == RANGE_CHUNK => {
                self.next = Bound::Excluded(k.clone());
            }
            _ => self.done = true,
        }
    }
}

impl Iterator for ChunkedRange {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffered.is_empty() && !self.done {
            self.fill();
        }
        self.buffered.pop_front().map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_of(n: usize) -> MemTree {
        let tree = MemTree::default();
        let mut batch = Batch::new();
        for i in 0..n {
            batch.insert(format!("k{i:06}"), i.to_string());
        }
        tree.apply(batch).unwrap();
        tree
    }

    fn keys(it: Box<dyn Iterator<Item = Result<Entry>> + Send>) -> Vec<String> {
        it.map(|e| String::from_utf8(e.unwrap().0).unwrap())
            .collect()
    }

    #[test]
    fn short_keys_are_kept_inline_whatever_their_capacity() {
        let tree = MemTree::default();
        let mut roomy = Vec::with_capacity(4 * INLINE_KEY);
        roomy.extend_from_slice(&[7u8; INLINE_KEY]);
        let long = vec![8u8; INLINE_KEY + 1];
        let mut batch = Batch::new();
        batch.insert(roomy, b"a".to_vec());
        batch.insert(long, b"b".to_vec());
        tree.apply(batch).unwrap();
        let map = tree.0.read().unwrap();
        let spilled: Vec<(usize, bool)> = map.keys().map(|k| (k.len(), k.spilled())).collect();
        assert_eq!(spilled, [(INLINE_KEY, false), (INLINE_KEY + 1, true)]);
    }

    #[test]
    fn ranges_span_chunks_without_gaps_or_repeats() {
        let n = 3 * RANGE_CHUNK + 7;
        let tree = tree_of(n);
        let all = keys(tree.range(b"", None));
        let want: Vec<String> = (0..n).map(|i| format!("k{i:06}")).collect();
        assert_eq!(all, want);
        // Bounded both ends, ending exactly on a chunk boundary and inside one.
        let from = format!("k{:06}", 5);
        for len in [RANGE_CHUNK, RANGE_CHUNK + 1, 2 * RANGE_CHUNK - 1] {
            let to = format!("k{:06}", 5 + len);
            let got = keys(tree.range(from.as_bytes(), Some(to.as_bytes())));
            assert_eq!(got, want[5..5 + len].to_vec(), "len {len}");
        }
        assert!(keys(tree.range(b"k000009", Some(b"k000003"))).is_empty());
        assert!(keys(tree.range(b"k000003", Some(b"k000003"))).is_empty());
    }

    #[test]
    fn a_range_does_not_hold_the_tree_between_chunks() {
        let tree = tree_of(2 * RANGE_CHUNK);
        let mut it = tree.range(b"", None);
        assert!(it.next().is_some());
        // A writer is not blocked by the open range...
        let mut batch = Batch::new();
        batch.insert("k999999", "late");
        batch.remove(format!("k{:06}", 1));
        tree.apply(batch).unwrap();
        // ...and the range sees writes ahead of the chunk it has read, not those inside it.
        let rest = keys(it);
        assert_eq!(rest.len(), 2 * RANGE_CHUNK);
        assert_eq!(rest.first().map(String::as_str), Some("k000001"));
        assert_eq!(rest.last().map(String::as_str), Some("k999999"));
    }
}
