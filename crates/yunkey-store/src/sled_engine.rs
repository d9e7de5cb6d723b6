//! The sled engine. sled 0.34's `flush` is `sync_file_range`-based, not `fsync`; it is still
//! the only durability point sled offers, and callers flush before acknowledging.

use crate::{Batch, DbEngine, Entry, Result, TreeEngine};
use std::path::Path;
use std::sync::Arc;

pub(crate) struct SledDb(sled::Db);

impl SledDb {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(256 * 1024 * 1024)
            .flush_every_ms(Some(500))
            .open()?;
        Ok(Self(db))
    }
}

impl DbEngine for SledDb {
    fn open_tree(&self, name: &str) -> Result<Arc<dyn TreeEngine>> {
        Ok(Arc::new(SledTree(self.0.open_tree(name)?)))
    }

    fn flush(&self) -> Result<()> {
        self.0.flush()?;
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64> {
        Ok(self.0.size_on_disk()?)
    }
}

struct SledTree(sled::Tree);

fn entry(r: sled::Result<(sled::IVec, sled::IVec)>) -> Result<Entry> {
    let (k, v) = r?;
    Ok((k.to_vec(), v.to_vec()))
}

impl TreeEngine for SledTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.0.get(key)?.map(|v| v.to_vec()))
    }

    fn apply(&self, batch: Batch) -> Result<()> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.into_ops() {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        self.0.apply_batch(b)?;
        Ok(())
    }

    fn range(
        &self,
        from: &[u8],
        to: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = Result<Entry>> + Send> {
        match to {
            Some(to) => Box::new(self.0.range(from.to_vec()..to.to_vec()).map(entry)),
            None => Box::new(self.0.range(from.to_vec()..).map(entry)),
        }
    }

    fn last(&self) -> Result<Option<Entry>> {
        Ok(self.0.last()?.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    fn first(&self) -> Result<Option<Entry>> {
        Ok(self.0.first()?.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn clear(&self) -> Result<()> {
        self.0.clear()?;
        Ok(())
    }
}
