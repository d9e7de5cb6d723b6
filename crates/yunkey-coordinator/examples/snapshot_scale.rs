//! How one coordinator's replicated state scales with the number of users: apply rate,
//! snapshot build time and file size, snapshot transfer and install time (an install is what
//! a coordinator's start does too: check the file, load it into memory), and process memory
//! (VmRSS, and the peak VmHWM), which now holds the whole state.
//!
//! Uses the real state machine (`yunkey_raft::StateMachineStore` running the coordinator's
//! `App`, state in memory, snapshots as files recorded in sled), no Raft network and no log
//! store: entries are fed
//! straight to `apply`, and a snapshot is "received" by writing its file into a fresh store's
//! `begin_receiving_snapshot` file in chunks of the coordinator's snapshot chunk size, as
//! openraft's chunked transfer does.
//!
//! ```text
//! cargo run --release -p yunkey-coordinator --example snapshot_scale -- 1000000
//! ```
//!
//! Checkpoints at 100k, 250k, 500k and 1M users (capped by the argument, which is also a
//! checkpoint). A step taking more than ten minutes ends the run with what was measured.
//! While each snapshot is built, more users are enrolled 10 entries per `apply` call, as
//! Raft would feed them, every 5 ms (at most 2,000 users/s, the enrolment target): the
//! longest of those calls is the pause a build causes, and the count shows that applies
//! went on.

#[path = "common/mem.rs"]
mod mem;
use mem::rss_mb;
use std::time::{Duration, Instant};

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use yunkey_coordinator::raft::{TypeConfig, SNAPSHOT_CHUNK_BYTES};
use yunkey_coordinator::state::{
    Activation, App, ChipRecord, Command, HolderRecord, Op, StateView, UserRecord, UserState,
};
use yunkey_raft::StateMachineStore;
use yunkey_store::Db;

type Store = StateMachineStore<TypeConfig, App>;

/// Entries per `apply` call.
const BATCH: u64 = 1000;
/// A step longer than this ends the run (the 500k -> 1M apply step takes about 270 s on the
/// shared 2-core machine).
const STEP_LIMIT: Duration = Duration::from_secs(600);
/// While a snapshot is built: one `apply` of 10 users per this interval.
const DURING_BUILD_EVERY: Duration = Duration::from_millis(5);
/// Proposer clock used for every command.
const NOW: i64 = 1_700_000_000;
const CHIPS: [&str; 2] = ["chip-a", "chip-b"];

/// Deterministic filler bytes (xorshift), so values are not trivially compressible.
fn filler(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn entry(index: u64, op: Op, request_id: String) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Command {
            request_id,
            actor: "client:bench".into(),
            now: NOW,
            op,
        }),
    }
}

fn enroll(i: u64) -> Op {
    let user_id = format!("user-{i:08}");
    let code = format!("{:016X}", i.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let user = UserRecord {
        user_id: user_id.clone(),
        algorithm: 1,
        public_key: filler(i * 4, 91),
        // A format 2 wrapped key: header, binding, RFC 5649 wrap of PKCS#8, HMAC (~320 bytes).
        wrapped_key: filler(i * 4 + 1, 320),
        binding_seq: 0,
        certificate: filler(i * 4 + 2, 400),
        state: UserState::Active,
        holders: CHIPS
            .iter()
            .map(|c| HolderRecord {
                chip_id: (*c).into(),
                key_handle: format!("kh-{}", hex::encode(filler(i * 4 + 3, 16))),
            })
            .collect(),
        devices: Vec::new(),
        activation: Some(Activation {
            code_sha256: yunkey_crypto::sha256(code.as_bytes()),
            expires_at: NOW + 7 * 86_400,
            enroll_request_id: format!("enroll-u{i}"),
        }),
        created_at: NOW,
        revoked_reason: None,
    };
    Op::EnrollUser {
        user,
        activation_code: code,
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[derive(Default)]
struct Row {
    users: u64,
    apply_rate: f64,
    rss_mb: f64,
    build_s: Option<f64>,
    longest_apply_ms: Option<f64>,
    applied_during_build: Option<u64>,
    snap_mb: Option<f64>,
    receive_s: Option<f64>,
    install_s: Option<f64>,
    rss_after_mb: Option<f64>,
    peak_mb: Option<f64>,
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "—".into(), |v| format!("{v:.prec$}"))
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| users | apply users/s | RSS MB | snapshot build s | users applied during the build | longest apply during the build ms | snapshot file MB | receive s | install s | RSS after snapshot+install MB | peak RSS MB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.users,
            r.apply_rate,
            r.rss_mb,
            opt(r.build_s, 2),
            r.applied_during_build
                .map_or_else(|| "—".into(), |n| n.to_string()),
            opt(r.longest_apply_ms, 1),
            opt(r.snap_mb, 0),
            opt(r.receive_s, 2),
            opt(r.install_s, 2),
            opt(r.rss_after_mb, 0),
            opt(r.peak_mb, 0),
        );
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let target: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("usage: snapshot_scale [USERS]"))
        .unwrap_or(1_000_000);
    let mut checkpoints: Vec<u64> = [100_000, 250_000, 500_000, 1_000_000]
        .into_iter()
        .filter(|&c| c < target)
        .collect();
    checkpoints.push(target);

    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open_sled(dir.path().join("raft")).expect("open sled");
    let mut store =
        Store::open(db, dir.path().join("snapshots"), App::default()).expect("open state machine");
    let view = StateView::new(store.state());
    println!(
        "snapshot_scale: up to {target} users, checkpoints {checkpoints:?}, snapshots in {}",
        dir.path().display()
    );

    // Two chips, so that every enrolment updates their placement counts.
    let mut index = 1u64;
    let admits: Vec<_> = CHIPS
        .iter()
        .map(|c| {
            let e = entry(
                index,
                Op::AdmitChip {
                    chip: ChipRecord {
                        chip_id: (*c).into(),
                        endpoint: format!("https://{c}.example:7443"),
                        zone: format!("zone-{c}"),
                        capacity: 2_000_000,
                        placed: 0,
                        transport_key: filler(index, 91),
                        admitted_at: NOW,
                        admission_signature: filler(index + 1, 71),
                    },
                    domain_id: "domain-bench".into(),
                    operator_key: filler(index + 2, 91),
                },
                format!("admit-{c}"),
            );
            index += 1;
            e
        })
        .collect();
    store.apply(admits).await.expect("admit chips");

    let mut rows: Vec<Row> = Vec::new();
    let mut users = 0u64;
    'run: for &checkpoint in &checkpoints {
        // Apply up to the checkpoint.
        let from = users;
        let started = Instant::now();
        while users < checkpoint {
            let n = BATCH.min(checkpoint - users);
            let entries: Vec<_> = (users..users + n)
                .map(|i| {
                    let e = entry(index, enroll(i), format!("enroll-u{i}"));
                    index += 1;
                    e
                })
                .collect();
            store.apply(entries).await.expect("apply");
            users += n;
            if started.elapsed() > STEP_LIMIT {
                println!("apply step over {STEP_LIMIT:?} at {users} users; stopping",);
                break;
            }
        }
        let apply_s = started.elapsed().as_secs_f64();
        let apply_rate = (users - from) as f64 / apply_s;
        assert_eq!(view.user_count().expect("user count"), users);
        let (rss, _) = rss_mb();
        println!(
            "{users} users: applied {} in {apply_s:.1}s ({apply_rate:.0}/s), RSS {rss:.0} MB",
            users - from,
        );
        let mut row = Row {
            users,
            apply_rate,
            rss_mb: rss,
            ..Row::default()
        };
        if users < checkpoint {
            rows.push(row);
            break 'run;
        }

        // Build the snapshot, enrolling more users meanwhile.
        let mut builder = store.get_snapshot_builder().await;
        let build = tokio::spawn(async move {
            let started = Instant::now();
            let snapshot = builder.build_snapshot().await.expect("build snapshot");
            (snapshot, started.elapsed().as_secs_f64())
        });
        let at_build = users;
        let mut longest = Duration::ZERO;
        while !build.is_finished() {
            let entries: Vec<_> = (users..users + 10)
                .map(|i| {
                    let e = entry(index, enroll(i), format!("enroll-u{i}"));
                    index += 1;
                    e
                })
                .collect();
            let started = Instant::now();
            store.apply(entries).await.expect("apply during the build");
            longest = longest.max(started.elapsed());
            users += 10;
            tokio::time::sleep_until((started + DURING_BUILD_EVERY).into()).await;
        }
        let (snapshot, build_s) = build.await.expect("build task");
        let longest_ms = longest.as_secs_f64() * 1000.0;
        row.longest_apply_ms = Some(longest_ms);
        row.applied_during_build = Some(users - at_build);
        let snap_path = snapshot.snapshot.path().to_owned();
        let snap_mb = mb(std::fs::metadata(&snap_path).expect("snapshot file").len());
        println!(
            "  snapshot built in {build_s:.2}s, {snap_mb:.0} MB; {} users applied meanwhile, longest apply {longest_ms:.1} ms",
            users - at_build
        );
        row.build_s = Some(build_s);
        row.snap_mb = Some(snap_mb);
        if build_s > STEP_LIMIT.as_secs_f64() {
            println!("  snapshot build over {STEP_LIMIT:?}; stopping");
            rows.push(row);
            break 'run;
        }

        // Receive it into a fresh store, chunk by chunk as a follower would, then install it.
        let install_dir = tempfile::tempdir().expect("tempdir");
        let install_db = Db::open_sled(install_dir.path().join("raft")).expect("open sled");
        let mut fresh = Store::open(
            install_db,
            install_dir.path().join("snapshots"),
            App::default(),
        )
        .expect("open state machine");
        let started = Instant::now();
        let mut received = fresh
            .begin_receiving_snapshot()
            .await
            .expect("begin receiving");
        let mut source = snapshot.snapshot;
        let mut chunk = vec![0u8; SNAPSHOT_CHUNK_BYTES as usize];
        loop {
            let n = source.read(&mut chunk).await.expect("read snapshot");
            if n == 0 {
                break;
            }
            received.write_all(&chunk[..n]).await.expect("receive");
        }
        received.shutdown().await.expect("finish receiving");
        drop(source);
        let receive_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        fresh
            .install_snapshot(&snapshot.meta, received)
            .await
            .expect("install snapshot");
        let install_s = started.elapsed().as_secs_f64();
        let installed = StateView::new(fresh.state())
            .user_count()
            .expect("installed user count");
        // The build starts holding writes a moment after it is spawned: the snapshot has the
        // users up to that moment.
        assert!(
            (at_build..=users).contains(&installed),
            "installed store has {installed} users; {at_build} to {users} expected"
        );
        let (rss_after, peak) = rss_mb();
        println!(
            "  received in {receive_s:.2}s, installed in {install_s:.2}s ({installed} users), RSS {rss_after:.0} MB, peak {peak:.0} MB"
        );
        row.receive_s = Some(receive_s);
        row.install_s = Some(install_s);
        row.rss_after_mb = Some(rss_after);
        row.peak_mb = Some(peak);
        rows.push(row);
        drop(fresh);
        drop(install_dir);
        if install_s > STEP_LIMIT.as_secs_f64() {
            println!("  install over {STEP_LIMIT:?}; stopping");
            break 'run;
        }
    }
    print_table(&rows);
}
