//! The in-memory engine, for tests. Same semantics as sled, nothing on disk.

use crate::{Batch, DbEngine, Entry, Result, TreeEngine};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, RwLock};

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
struct MemTree(RwLock<BTreeMap<Vec<u8>, Vec<u8>>>);

impl TreeEngine for MemTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.0.read().expect("poisoned").get(key).cloned())
    }

    fn apply(&self, batch: Batch) -> Result<()> {
        let mut map = self.0.write().expect("poisoned");
        for (k, v) in batch.into_ops() {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
        Ok(())
    }

    fn range(
        &self,
        from: &[u8],
        to: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = Result<Entry>> + Send> {
        let map = self.0.read().expect("poisoned");
        let upper = match to {
            Some(t) => Bound::Excluded(t.to_vec()),
            None => Bound::Unbounded,
        };
        let items: Vec<_> = map
            .range((Bound::Included(from.to_vec()), upper))
            .map(|(k, v)| Ok((k.clone(), v.clone())))
            .collect();
        Box::new(items.into_iter())
    }

    fn last(&self) -> Result<Option<Entry>> {
        let map = self.0.read().expect("poisoned");
        Ok(map.iter().next_back().map(|(k, v)| (k.clone(), v.clone())))
    }

    fn first(&self) -> Result<Option<Entry>> {
        let map = self.0.read().expect("poisoned");
        Ok(map.iter().next().map(|(k, v)| (k.clone(), v.clone())))
    }

    fn len(&self) -> usize {
        self.0.read().expect("poisoned").len()
    }

    fn clear(&self) -> Result<()> {
        self.0.write().expect("poisoned").clear();
        Ok(())
    }
}
