//! The state machine applies a group of entries as staged writes and one atomic batch: each
//! entry reads what the entries before it in the same `apply` call wrote, across the group
//! size limit too, and the applied index is the last entry's.

mod common;

use common::{set, Kv, Prev, Tc};
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use openraft::{Entry, EntryPayload};
use yunkey_raft::StateMachineStore;
use yunkey_store::Db;

type Sm = StateMachineStore<Tc, Kv>;

/// Entry `i` sets `counter` to `i` and `key-i` to `i`.
fn entry(i: u64) -> Vec<Entry<Tc>> {
    [
        set("counter", &i.to_string()),
        set(&format!("key-{i:05}"), "x"),
    ]
    .into_iter()
    .enumerate()
    .map(|(k, cmd)| Entry {
        log_id: log_id(1, 1, 2 * i + k as u64 - 1),
        payload: EntryPayload::Normal(cmd),
    })
    .collect()
}

#[tokio::test]
async fn entries_of_one_apply_call_see_each_others_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_sled(dir.path().join("db")).unwrap();
    let mut sm = Sm::open(db, dir.path().join("snapshots"), Kv).unwrap();
    // 2,500 commands: more than one staged batch (1,024 entries) in a single call.
    let n = 1_250;
    let responses = sm.apply((1..=n).flat_map(entry)).await.unwrap();
    assert_eq!(responses.len(), 2 * n as usize);
    for i in 1..=n {
        let prev = &responses[2 * (i as usize - 1)];
        let want = (i > 1).then(|| (i - 1).to_string());
        assert_eq!(
            prev,
            &Prev(want),
            "entry {i} read the counter its predecessor set"
        );
        assert_eq!(responses[2 * (i as usize - 1) + 1], Prev(None));
    }
    let state = sm.state();
    assert_eq!(
        state.get(b"counter").unwrap().unwrap(),
        n.to_string().as_bytes()
    );
    assert_eq!(state.scan_prefix(b"key-").count(), n as usize);
    assert_eq!(sm.last_applied().unwrap(), Some(log_id(1, 1, 2 * n)));

    // A second call continues from the committed state.
    let responses = sm.apply(entry(n + 1)).await.unwrap();
    assert_eq!(responses[0], Prev(Some(n.to_string())));
    assert_eq!(sm.last_applied().unwrap(), Some(log_id(1, 1, 2 * n + 2)));
}
