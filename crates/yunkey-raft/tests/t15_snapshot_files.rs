//! Snapshot files: a round trip through a file, corrupt files rejected before any state is
//! touched, the state rebuilt from the current snapshot on reopen (and an older version's
//! on-disk state dropped), and what the snapshot directory holds.

mod common;

use std::path::{Path, PathBuf};

use common::{set, Kv, Tc};
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use openraft::{Entry, EntryPayload, RaftSnapshotBuilder, Snapshot};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use yunkey_raft::{SnapshotFile, StateMachineStore};
use yunkey_store::Db;

type Sm = StateMachineStore<Tc, Kv>;

fn entries(n: u64) -> Vec<Entry<Tc>> {
    (1..=n)
        .map(|i| Entry {
            log_id: log_id(1, 1, i),
            payload: EntryPayload::Normal(set(&format!("key-{i:06}"), &format!("value-{i}"))),
        })
        .collect()
}

/// A store in `dir` (records in the sled database `db`, snapshots in `snapshots`; the state
/// itself is in memory, loaded from the current snapshot).
fn open(dir: &Path) -> (Db, Sm) {
    let db = Db::open_sled(dir.join("db")).unwrap();
    let sm = Sm::open(db.clone(), dir.join("snapshots"), Kv).unwrap();
    (db, sm)
}

fn dump(sm: &Sm) -> Vec<(Vec<u8>, Vec<u8>)> {
    sm.state().range(&[], None).map(|kv| kv.unwrap()).collect()
}

fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A source store with `n` entries applied and a snapshot built.
async fn source(n: u64) -> (TempDir, Sm, Snapshot<Tc>) {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut sm) = open(dir.path());
    sm.apply(entries(n)).await.unwrap();
    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    (dir, sm, snap)
}

/// Sends `bytes` into `dst` the way openraft's chunked transfer does.
async fn receive(dst: &mut Sm, bytes: &[u8]) -> Box<SnapshotFile> {
    let mut file = dst.begin_receiving_snapshot().await.unwrap();
    for chunk in bytes.chunks(4096) {
        file.write_all(chunk).await.unwrap();
    }
    file.shutdown().await.unwrap();
    file
}

fn file_bytes(snap: &Snapshot<Tc>) -> Vec<u8> {
    std::fs::read(snap.snapshot.path()).unwrap()
}

#[tokio::test]
async fn round_trip_through_a_received_file() {
    let (_src_dir, src, snap) = source(3000).await;
    let bytes = file_bytes(&snap);
    let dir = tempfile::tempdir().unwrap();
    let (_, mut dst) = open(dir.path());
    dst.apply(entries(5)).await.unwrap(); // state the snapshot replaces
    let received = receive(&mut dst, &bytes).await;
    dst.install_snapshot(&snap.meta, received).await.unwrap();
    assert_eq!(dump(&dst), dump(&src));
    assert_eq!(dst.last_applied().unwrap(), Some(log_id(1, 1, 3000)));

    // The received file became the current snapshot, and is the only file left.
    let current = dst.get_current_snapshot().await.unwrap().expect("current");
    assert_eq!(current.meta, snap.meta);
    assert_eq!(std::fs::read(current.snapshot.path()).unwrap(), bytes);
    assert_eq!(snapshot_files(dir.path()).len(), 1);

    // It survives a restart.
    drop((dst, current));
    let (_, mut dst) = open(dir.path());
    let current = dst.get_current_snapshot().await.unwrap().expect("kept");
    assert_eq!(current.meta, snap.meta);
    assert_eq!(dump(&dst), dump(&src));
}

/// Installs `bytes` and expects a rejection that leaves state and current snapshot alone.
async fn assert_rejected(bytes: &[u8], expect: &str) {
    let (_src_dir, _src, snap) = source(200).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, mut dst) = open(dir.path());
    dst.apply(entries(7)).await.unwrap();
    let own = dst
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let before = dump(&dst);
    let received = receive(&mut dst, bytes).await;
    let err = dst
        .install_snapshot(&snap.meta, received)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(expect), "unexpected error: {err}");
    assert_eq!(dump(&dst), before, "state touched by a rejected snapshot");
    let current = dst.get_current_snapshot().await.unwrap().expect("current");
    assert_eq!(current.meta, own.meta, "current snapshot replaced");
    let files = snapshot_files(dir.path());
    assert_eq!(files.len(), 1, "rejected file left behind: {files:?}");
    drop(dst);
    let (_, dst) = open(dir.path());
    assert_eq!(dump(&dst), before, "state changed after reopening");
}

#[tokio::test]
async fn truncated_file_is_rejected_with_state_untouched() {
    let (_d, _s, snap) = source(200).await;
    let bytes = file_bytes(&snap);
    assert_rejected(&bytes[..bytes.len() / 2], "truncated").await;
    assert_rejected(&bytes[..bytes.len() - 1], "truncated").await;
}

#[tokio::test]
async fn flipped_byte_is_rejected_with_state_untouched() {
    let (_d, _s, snap) = source(200).await;
    let mut bytes = file_bytes(&snap);
    // One bit of one value: the structure still parses, only the checksum can tell.
    let at = bytes
        .windows(9)
        .position(|w| w == b"value-100")
        .expect("value in file");
    bytes[at + 8] ^= 0x01;
    assert_rejected(&bytes, "checksum mismatch").await;
}

/// An older version kept the state on disk (tree `sm`) and marked installs in progress; the
/// first open drops both and loads the state from the current snapshot, which is exactly
/// finishing an install that a crash interrupted.
#[tokio::test]
async fn an_older_versions_stored_state_is_replaced_by_the_snapshot() {
    let (_src_dir, src, snap) = source(500).await;
    let bytes = file_bytes(&snap);
    let dir = tempfile::tempdir().unwrap();
    {
        let (db, mut dst) = open(dir.path());
        let received = receive(&mut dst, &bytes).await;
        dst.install_snapshot(&snap.meta, received).await.unwrap();
        // What an older version left after a crash midway through an install: the marker,
        // and a half-loaded state on disk.
        db.tree("raft_snapshot")
            .unwrap()
            .insert(b"installing", b"1")
            .unwrap();
        let stale = db.tree("sm").unwrap();
        stale.insert(b"key-000001", b"stale").unwrap();
        stale.insert(b"\x00applied", b"\xff").unwrap();
        db.flush().unwrap();
    }
    let (db, dst) = open(dir.path());
    assert_eq!(dump(&dst), dump(&src));
    assert_eq!(dst.last_applied().unwrap(), Some(log_id(1, 1, 500)));
    assert!(db.tree("sm").unwrap().is_empty(), "old on-disk state kept");
    assert!(db
        .tree("raft_snapshot")
        .unwrap()
        .get(b"installing")
        .unwrap()
        .is_none());
}

/// The state is rebuilt from the current snapshot: a damaged one stops the open, with an error
/// that says what to do, instead of starting with a wrong state.
#[tokio::test]
async fn a_corrupt_current_snapshot_refuses_to_open() {
    let (_src_dir, _src, snap) = source(50).await;
    let bytes = file_bytes(&snap);
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf;
    {
        let (_, mut dst) = open(dir.path());
        let received = receive(&mut dst, &bytes).await;
        dst.install_snapshot(&snap.meta, received).await.unwrap();
        path = dst
            .get_current_snapshot()
            .await
            .unwrap()
            .unwrap()
            .snapshot
            .path()
            .to_owned();
    }
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let db = Db::open_sled(dir.path().join("db")).unwrap();
    let err = Sm::open(db, dir.path().join("snapshots"), Kv)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot load the current snapshot"), "{err}");
    assert!(err.contains("truncated"), "{err}");
}

#[tokio::test]
async fn only_the_current_snapshot_file_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut sm) = open(dir.path());
    sm.apply(entries(10)).await.unwrap();
    let first = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    sm.apply(entries(20).split_off(10)).await.unwrap();
    let second = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_ne!(first.meta.snapshot_id, second.meta.snapshot_id);
    // The first file is gone from the directory, but its open handle still reads.
    assert!(!first.snapshot.path().exists());
    let files = snapshot_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(second.snapshot.path().ends_with(&files[0]));

    // An abandoned transfer leaves no file behind; neither does a crash during one.
    let receiving = sm.begin_receiving_snapshot().await.unwrap();
    assert_eq!(snapshot_files(dir.path()).len(), 2);
    drop(receiving);
    assert_eq!(snapshot_files(dir.path()).len(), 1);
    std::fs::write(
        dir.path().join("snapshots/receive-0000000099.tmp"),
        b"partial",
    )
    .unwrap();
    drop(sm);
    let (_, _sm) = open(dir.path());
    assert_eq!(snapshot_files(dir.path()), files);
}

/// A snapshot build does not stop applies: an apply started while the build is writing its
/// file returns while that file is still growing; the snapshot holds the state as of the
/// build's start, and the applies made meanwhile are in the state and not in the snapshot
/// (so a reopened store starts from the snapshot, and the log brings the rest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_go_on_while_a_snapshot_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut sm) = open(dir.path());
    let n = 60_000;
    sm.apply(entries(n)).await.unwrap();
    // The size of the file being built, if one is.
    let building = || {
        std::fs::read_dir(dir.path().join("snapshots"))
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().starts_with("build-"))
            .and_then(|e| e.metadata().ok())
            .map(|m| m.len())
    };
    let mut index = n;
    let mut snap = None;
    let mut sizes_after_apply = Vec::new();
    for _attempt in 0..5 {
        let mut builder = sm.get_snapshot_builder().await;
        let build = tokio::spawn(async move { builder.build_snapshot().await.unwrap() });
        while !build.is_finished() {
            if building().is_none() {
                tokio::task::yield_now().await;
                continue;
            }
            index += 1;
            let entry = Entry {
                log_id: log_id(1, 1, index),
                payload: EntryPayload::Normal(set(&format!("during-{index}"), "x")),
            };
            sm.apply([entry]).await.unwrap();
            sizes_after_apply.extend(building());
        }
        let built = build.await.unwrap();
        let full = std::fs::metadata(built.snapshot.path()).unwrap().len();
        snap = Some(built);
        if sizes_after_apply.iter().any(|&s| s < full) {
            break;
        }
        sizes_after_apply.clear();
    }
    assert!(
        !sizes_after_apply.is_empty(),
        "no apply returned while the snapshot file was being written"
    );
    let snap = snap.unwrap();
    let built_at = snap.meta.last_log_id.unwrap().index;
    assert!(built_at < index, "applies went on after the build began");
    assert_eq!(sm.last_applied().unwrap(), Some(log_id(1, 1, index)));

    // The snapshot is the state as of its own index: installed elsewhere, it has every key up
    // to that index and none after.
    let other = tempfile::tempdir().unwrap();
    let (_, mut dst) = open(other.path());
    let received = receive(&mut dst, &file_bytes(&snap)).await;
    dst.install_snapshot(&snap.meta, received).await.unwrap();
    let during = |sm: &Sm| sm.state().scan_prefix(b"during-").count() as u64;
    assert_eq!(during(&dst), built_at - n);
    assert_eq!(during(&sm), index - n);

    // Everything held during the build was folded back into the state: a read of each key
    // written during the build finds it.
    for i in (built_at + 1)..=index {
        let key = format!("during-{i}");
        assert_eq!(
            sm.state().get(key.as_bytes()).unwrap().as_deref(),
            Some(&b"x"[..])
        );
    }

    // Reopened, the store starts from the snapshot: the log (not kept by this test) would
    // bring the applies after it.
    drop((sm, dst, db));
    let (_, sm) = open(dir.path());
    assert_eq!(during(&sm), built_at - n);
    assert_eq!(sm.last_applied().unwrap(), snap.meta.last_log_id);
}
