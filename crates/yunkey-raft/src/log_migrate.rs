//! Moving a Raft log kept in the node's database (yunkey up to 2026-12: trees `raft_log`,
//! index → bincode entry, and `raft_meta`, the vote and log pointers) into the [`Wal`].
//!
//! Crash-safe and done once: the log is copied into a fresh directory beside the target,
//! synced, and renamed into place; only then are the old trees cleared. A crash before the
//! rename leaves the old trees whole (the copy is redone); one after it leaves the new log
//! whole (the old trees are cleared at the next open).

use std::path::Path;

use openraft::LogId;
use yunkey_store::{Db, StoreError, Tree, Wal};

use crate::codec::decode;
use crate::log_store::{KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE};

const LOG_TREE: &str = "raft_log";
const META_TREE: &str = "raft_meta";
/// Entries copied per write.
const CHUNK: usize = 1024;

/// Moves the log from `db` to a [`Wal`] at `dir`, if `db` holds one.
pub(crate) fn migrate(db: &Db, dir: &Path) -> Result<(), StoreError> {
    let log = db.tree(LOG_TREE)?;
    let meta = db.tree(META_TREE)?;
    if log.is_empty() && meta.is_empty() {
        return Ok(());
    }
    if !dir.exists() {
        copy(&log, &meta, dir)?;
    }
    log.clear()?;
    meta.clear()?;
    db.flush()?;
    tracing::info!(to = %dir.display(), "Raft log moved from the database to its own log directory");
    Ok(())
}

fn copy(log: &Tree, meta: &Tree, dir: &Path) -> Result<(), StoreError> {
    let mut name = dir
        .file_name()
        .ok_or_else(|| StoreError::Engine(format!("{} names no directory", dir.display())))?
        .to_os_string();
    name.push(".import");
    let tmp = dir.with_file_name(name);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
    }
    let wal = Wal::open(&tmp)?;
    for key in [KEY_VOTE, KEY_COMMITTED, KEY_LAST_PURGED] {
        if let Some(value) = meta.get(key)? {
            wal.set_meta(key, &value)?;
        }
    }
    // Entries at or below the purge point may be left over from a purge cut short by a crash.
    let purged = match meta.get(KEY_LAST_PURGED)? {
        Some(raw) => Some(
            decode::<LogId<u64>>(&raw)
                .map_err(|e| StoreError::Corrupt {
                    key: "raft_meta/last_purged".into(),
                    reason: e.to_string(),
                })?
                .index,
        ),
        None => None,
    };
    if let Some(p) = purged {
        wal.purge_to(p)?;
    }
    let mut chunk = Vec::with_capacity(CHUNK);
    for kv in log.range(&[], None) {
        let (key, value) = kv?;
        let index = <[u8; 8]>::try_from(&key[..])
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Corrupt {
                key: format!("raft_log/{key:02x?}"),
                reason: "a log key is 8 bytes".into(),
            })?;
        if purged.is_some_and(|p| index <= p) {
            continue;
        }
        chunk.push((index, value));
        if chunk.len() == CHUNK {
            wal.append(std::mem::take(&mut chunk))?;
        }
    }
    wal.append(chunk)?;
    wal.sync()?;
    drop(wal);
    std::fs::rename(&tmp, dir).map_err(|e| StoreError::io(dir, e))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        yunkey_store::sync_dir(parent).map_err(|e| StoreError::io(parent, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode;

    #[test]
    fn a_log_in_the_database_moves_once_and_keeps_everything_live() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sled(dir.path().join("db")).unwrap();
        let log = db.tree(LOG_TREE).unwrap();
        let meta = db.tree(META_TREE).unwrap();
        // Entry 3 is a leftover of a purge to 3 cut short.
        for i in 3u64..=7 {
            log.insert(&i.to_be_bytes(), format!("e{i}").as_bytes())
                .unwrap();
        }
        let purged: LogId<u64> = openraft::testing::log_id(1, 1, 3);
        meta.insert(KEY_LAST_PURGED, &encode(&purged).unwrap())
            .unwrap();
        meta.insert(KEY_VOTE, b"vote bytes").unwrap();
        let target = dir.path().join("raft-log");
        migrate(&db, &target).unwrap();
        assert!(log.is_empty() && meta.is_empty(), "old trees cleared");
        assert!(!dir.path().join("raft-log.import").exists());
        let wal = Wal::open(&target).unwrap();
        assert_eq!(
            wal.meta(KEY_VOTE).unwrap().as_deref(),
            Some(&b"vote bytes"[..])
        );
        assert_eq!(wal.purged().unwrap(), Some(3));
        let got = wal.range(0, None).unwrap();
        let want: Vec<(u64, Vec<u8>)> = (4u64..=7)
            .map(|i| (i, format!("e{i}").into_bytes()))
            .collect();
        assert_eq!(got, want);
        drop(wal);
        // Nothing left to move: a second open changes nothing.
        migrate(&db, &target).unwrap();
        assert_eq!(Wal::open(&target).unwrap().range(0, None).unwrap(), want);
    }

    #[test]
    fn a_copy_cut_short_is_redone() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sled(dir.path().join("db")).unwrap();
        db.tree(LOG_TREE)
            .unwrap()
            .insert(&1u64.to_be_bytes(), b"one")
            .unwrap();
        // A half-made copy from a crash.
        let half = Wal::open(dir.path().join("raft-log.import")).unwrap();
        half.append([(9, b"stale".to_vec())]).unwrap();
        half.sync().unwrap();
        drop(half);
        let target = dir.path().join("raft-log");
        migrate(&db, &target).unwrap();
        assert_eq!(
            Wal::open(&target).unwrap().range(0, None).unwrap(),
            vec![(1, b"one".to_vec())]
        );
    }
}
