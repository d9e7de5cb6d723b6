//! openraft's storage conformance suite on both engines, plus restart and corruption tests.
//! (Snapshot files: `t15_snapshot_files.rs`.)

mod common;

use common::{set, Kv, Tc};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{log_id, StoreBuilder, Suite};
use openraft::{Entry, EntryPayload, RaftSnapshotBuilder, StorageError, Vote};
use tempfile::TempDir;
use yunkey_raft::{LogStore, StateMachineStore};
use yunkey_store::Db;

type Sm = StateMachineStore<Tc, Kv>;

struct SledBuilder;

impl StoreBuilder<Tc, LogStore<Tc>, Sm, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore<Tc>, Sm), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open_sled(dir.path().join("db")).expect("open sled");
        let sm = StateMachineStore::open(db.clone(), dir.path().join("snapshots"), Kv)?;
        let log = LogStore::open(&dir.path().join("raft-log"), &db)?;
        Ok((dir, log, sm))
    }
}

struct MemBuilder;

impl StoreBuilder<Tc, LogStore<Tc>, Sm, TempDir> for MemBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore<Tc>, Sm), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::memory();
        let sm = StateMachineStore::open(db.clone(), dir.path().join("snapshots"), Kv)?;
        let log = LogStore::open(&dir.path().join("raft-log"), &db)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_suite_sled() {
    Suite::test_all(SledBuilder).expect("openraft storage suite on sled");
}

#[test]
fn openraft_suite_memory() {
    Suite::test_all(MemBuilder).expect("openraft storage suite on memory");
}

fn normal(term: u64, index: u64, key: &str, value: &str) -> Entry<Tc> {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Normal(set(key, value)),
    }
}

#[tokio::test]
async fn state_vote_and_log_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let entries = vec![
        normal(1, 1, "a", "1"),
        normal(1, 2, "b", "2"),
        normal(2, 3, "a", "3"),
    ];
    {
        let db = Db::open_sled(dir.path().join("db")).unwrap();
        let mut log = LogStore::<Tc>::open(&dir.path().join("raft-log"), &db).unwrap();
        let mut sm = Sm::open(db, dir.path().join("snapshots"), Kv).unwrap();
        log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        log.blocking_append(entries.clone()).await.unwrap();
        let resps = sm.apply(entries).await.unwrap();
        assert_eq!(resps[2], common::Prev(Some("1".into())));
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(2, 1, 3)));
    }
    let db = Db::open_sled(dir.path().join("db")).unwrap();
    let mut log = LogStore::<Tc>::open(&dir.path().join("raft-log"), &db).unwrap();
    let mut sm = Sm::open(db, dir.path().join("snapshots"), Kv).unwrap();
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(Vote::new_committed(2, 1))
    );
    assert_eq!(
        log.get_log_state().await.unwrap().last_log_id,
        Some(log_id(2, 1, 3))
    );
    assert_eq!(sm.last_applied().unwrap(), Some(log_id(2, 1, 3)));
    assert_eq!(sm.state().get(b"a").unwrap().as_deref(), Some(&b"3"[..]));
    assert_eq!(sm.state().get(b"b").unwrap().as_deref(), Some(&b"2"[..]));
    let snap = sm
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("snapshot kept");
    assert_eq!(snap.meta.last_log_id, Some(log_id(2, 1, 3)));
}

#[tokio::test]
async fn corrupt_values_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::memory();
    {
        // Written past the log store, as a bad disk or a bug would leave them.
        let wal = yunkey_store::Wal::open(dir.path().join("raft-log")).unwrap();
        wal.set_meta(b"vote", b"\xff").unwrap();
        wal.append([(5, b"garbage".to_vec())]).unwrap();
        wal.sync().unwrap();
    }
    let mut log = LogStore::<Tc>::open(&dir.path().join("raft-log"), &db).unwrap();
    assert!(log.read_vote().await.is_err());
    assert!(log.get_log_state().await.is_err());
    let snaps = tempfile::tempdir().unwrap();
    let mut sm = Sm::open(db, snaps.path(), Kv).unwrap();
    // The state is in memory; a bug writing a reserved key is what could corrupt it.
    sm.state().insert(b"\x00applied", b"\x01").unwrap();
    assert!(sm.applied_state().await.is_err());
}
