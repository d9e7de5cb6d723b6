//! Format 1 snapshots (before snapshot files: one bincode value in the `raft_snapshot` tree,
//! holding every entry), migrated to a snapshot file when the store opens.

use std::io;

use openraft::{BasicNode, SnapshotMeta};
use serde::Deserialize;
use yunkey_store::{Batch, Db, Entry, Tree};

use crate::codec::{decode, encode, io_err};
use crate::snapshot;
use crate::snapshot_dir::SnapshotDir;
use crate::snapshot_store::{SnapshotRecord, KEY_CURRENT};

/// `raft_snapshot` key of a format 1 snapshot.
const KEY_LEGACY: &[u8] = b"current";
/// Magic and version that open a format 1 snapshot's data.
const MAGIC_V1: &[u8; 4] = b"YKSN";
const VERSION_V1: u32 = 1;

#[derive(Deserialize)]
struct StoredV1 {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

#[derive(Deserialize)]
struct DataV1 {
    entries: Vec<Entry>,
}

/// If a format 1 snapshot is stored, writes it out as a snapshot file, records that file in its
/// place and flushes. Blocking.
pub(crate) fn migrate(db: &Db, snap: &Tree, dir: &SnapshotDir) -> io::Result<()> {
    let Some(value) = snap.get(KEY_LEGACY).map_err(io_err)? else {
        return Ok(());
    };
    let stored: StoredV1 = decode(&value).map_err(|e| io_err(format!("corrupt record: {e}")))?;
    let data = &stored.data;
    if data.len() < 8 || &data[..4] != MAGIC_V1 || data[4..8] != VERSION_V1.to_be_bytes() {
        return Err(io_err("not a format 1 snapshot (bad magic or version)"));
    }
    let body: DataV1 = decode(&data[8..]).map_err(|e| io_err(format!("corrupt body: {e}")))?;
    tracing::info!(
        snapshot_id = %stored.meta.snapshot_id,
        "migrating the stored snapshot to a snapshot file"
    );
    let name = dir.new_snapshot_name(&stored.meta.snapshot_id);
    let tmp = dir.temp_path("migrate");
    snapshot::write_entries(body.entries.into_iter().map(Ok), &tmp)?;
    dir.rename_durably(&tmp, &dir.path_of(&name))?;
    let record = SnapshotRecord {
        meta: stored.meta,
        file: name,
    };
    let mut batch = Batch::new();
    batch.insert(KEY_CURRENT, encode(&record).map_err(io_err)?);
    batch.remove(KEY_LEGACY);
    snap.apply(batch).map_err(io_err)?;
    db.flush().map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::StoredMembership;
    use serde::Serialize;

    #[derive(Serialize)]
    struct StoredV1Out {
        meta: SnapshotMeta<u64, BasicNode>,
        data: Vec<u8>,
    }

    #[test]
    fn format_1_snapshot_becomes_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let db = Db::memory();
        let snap = db.tree("raft_snapshot").unwrap();
        let dir = SnapshotDir::open(tmp.path()).unwrap();
        let entries: Vec<Entry> = vec![(b"a".to_vec(), b"1".to_vec())];
        let mut data = MAGIC_V1.to_vec();
        data.extend_from_slice(&VERSION_V1.to_be_bytes());
        data.extend_from_slice(&encode(&(&entries,)).unwrap());
        let meta = SnapshotMeta {
            last_log_id: None,
            last_membership: StoredMembership::default(),
            snapshot_id: "0-0-0-1".into(),
        };
        let old = StoredV1Out { meta, data };
        snap.insert(KEY_LEGACY, &encode(&old).unwrap()).unwrap();

        migrate(&db, &snap, &dir).unwrap();
        assert!(snap.get(KEY_LEGACY).unwrap().is_none());
        let record: SnapshotRecord = decode(&snap.get(KEY_CURRENT).unwrap().unwrap()).unwrap();
        assert_eq!(record.meta.snapshot_id, "0-0-0-1");
        let path = dir.path_of(&record.file);
        assert_eq!(snapshot::verify(&path).unwrap().records, 1);
        migrate(&db, &snap, &dir).unwrap(); // nothing left to do
    }
}
