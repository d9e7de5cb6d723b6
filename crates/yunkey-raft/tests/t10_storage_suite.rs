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
        Ok((dir, LogStore::open(db.clone())?, sm))
    }
}

struct MemBuilder;

impl StoreBuilder<Tc, LogStore<Tc>, Sm, TempDir> for MemBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore<Tc>, Sm), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::memory();
        let sm = StateMachineStore::open(db.clone(), dir.path(), Kv)?;
        Ok((dir, LogStore::open(db.clone())?, sm))
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
        let mut log = LogStore::<Tc>::open(db.clone()).unwrap();
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
    let mut log = LogStore::<Tc>::open(db.clone()).unwrap();
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
    let db = Db::memory();
    let mut log = LogStore::<Tc>::open(db.clone()).unwrap();
    db.tree("raft_meta")
        .unwrap()
        .insert(b"vote", b"\xff")
        .unwrap();
    assert!(log.read_vote().await.is_err());
    db.tree("raft_log")
        .unwrap()
        .insert(&5u64.to_be_bytes(), b"garbage")
        .unwrap();
    assert!(log.get_log_state().await.is_err());
    let snaps = tempfile::tempdir().unwrap();
    let mut sm = Sm::open(db.clone(), snaps.path(), Kv).unwrap();
    db.tree("sm")
        .unwrap()
        .insert(b"\x00applied", b"\x01")
        .unwrap();
    assert!(sm.applied_state().await.is_err());
}
