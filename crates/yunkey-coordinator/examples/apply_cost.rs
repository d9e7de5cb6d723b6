//! CPU per consumed authorization in the replicated state machine: what each of the three
//! coordinators spends applying one signature's `ConsumeChecked`, in `Op::Batch` entries of
//! 64 (as `KeyService.SignBatch` under load makes them), with pruning on (the default), over
//! a ledger that already holds `PREFILL` consumed authorizations.
//!
//! No Raft, no network, no log: the coordinator's `App` applies each entry to the in-memory
//! state exactly as the Raft state machine does (one batch per entry). Prints the time spent
//! applying (the commands are made outside the timing) in three windows after the prefill,
//! in µs per command.
//!
//! ```text
//! cargo run --release -p yunkey-coordinator --example apply_cost -- [PREFILL] [MEASURED]
//! ```
//!
//! Defaults: 500,000 prefilled and 300,000 measured commands (peak RSS about 1.5 GB, 11 s).
//! It allocates with mimalloc, with transparent huge pages off, as the `yunkey` binary does.

use std::time::Instant;
use yunkey_coordinator::state::{
    App, ChipRecord, Command, DeviceRecord, HolderRecord, Op, UserRecord, UserState,
};
use yunkey_store::{Batch, Db, Tree};

/// The `yunkey` binary's allocator, so that the figures are the coordinator's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Users signing (as `scripts/bench-coordinators.sh`'s `SIGN_USERS`).
const USERS: usize = 256;
/// Commands per `Op::Batch` entry.
const PER_ENTRY: usize = 64;
/// Proposer clock at the start (advanced one second per 4,000 commands, a busy cluster).
const START: i64 = 1_700_000_000;

fn entry(app: &App, tree: &Tree, cmd: &Command) {
    let mut batch = Batch::new();
    app.apply_command(tree, &mut batch, cmd)
        .expect("apply succeeds");
    tree.apply(batch)
        .expect("the in-memory state takes the batch");
}

fn command(now: i64, request_id: String, op: Op) -> Command {
    Command {
        request_id,
        actor: "bench-client".into(),
        now,
        op,
    }
}

fn user(i: usize) -> UserRecord {
    let id = format!("bench-user-{i:05}");
    UserRecord {
        user_id: id.clone(),
        algorithm: 1,
        public_key: vec![0x30; 91],
        wrapped_key: vec![0xAB; 220],
        binding_seq: 3,
        certificate: vec![0x30; 520],
        state: UserState::Active,
        holders: (0..2)
            .map(|h| HolderRecord {
                chip_id: format!("chip-{}", (i + h) % 4 + 1),
                key_handle: format!("{id}-{h:08x}"),
            })
            .collect(),
        devices: vec![DeviceRecord {
            device_id: format!("dev-{i:016x}"),
            name: "phone".into(),
            public_key: vec![0x30; 91],
            certificate: vec![0x30; 430],
            registered_at: START - 100,
            revoked_at: None,
        }],
        activation: None,
        created_at: START - 100,
        revoked_reason: None,
    }
}

/// A distinct transaction hash per command.
fn tx_hash(n: u64) -> [u8; 32] {
    let mut h = [0u8; 32];
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in h.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    h
}

fn main() {
    // As `yunkey`'s `main`: otherwise the kernel zeroing 2 MB pages for mimalloc's arenas
    // is a fifth of the time measured.
    rustix::thread::disable_transparent_huge_pages(true).expect("prctl(PR_SET_THP_DISABLE)");
    let mut args = std::env::args().skip(1);
    let prefill: u64 = args.next().map_or(500_000, |a| a.parse().expect("PREFILL"));
    let measured: u64 = args
        .next()
        .map_or(300_000, |a| a.parse().expect("MEASURED"));
    let app = App::default();
    let tree = Db::memory().tree("sm").expect("memory tree");
    for chip in 1..=4 {
        let chip = ChipRecord {
            chip_id: format!("chip-{chip}"),
            endpoint: format!("https://127.0.0.1:{}", 17500 + chip),
            zone: format!("zone-{chip}"),
            capacity: 1_000_000,
            placed: 0,
            transport_key: vec![0x30; 91],
            admitted_at: START,
            admission_signature: vec![0x30; 71],
        };
        let op = Op::AdmitChip {
            chip,
            domain_id: "domain-bench".into(),
            operator_key: vec![0x30; 91],
        };
        entry(&app, &tree, &command(START, String::new(), op));
    }
    let users: Vec<UserRecord> = (0..USERS).map(user).collect();
    for u in &users {
        let op = Op::EnrollUser {
            user: u.clone(),
            activation_code: String::new(),
        };
        entry(
            &app,
            &tree,
            &command(START, format!("enroll-{}", u.user_id), op),
        );
    }
    // Pruning on, as by default: the ledger and audit indexes the prune reads are written.
    let prune = Op::Prune {
        horizon: START - 600,
        audit_before: START - 86_400,
    };
    entry(&app, &tree, &command(START, String::new(), prune));

    let mut n: u64 = 0;
    // Only the applies are timed, not the making of the commands (the proposer's work).
    let mut run = |count: u64| -> f64 {
        let mut applying = std::time::Duration::ZERO;
        let end = n + count;
        while n < end {
            let now = START + (n / 4_000) as i64;
            let commands = (0..PER_ENTRY as u64)
                .map(|k| {
                    let seq = n + k;
                    let u = &users[(seq as usize) % USERS];
                    let hash = tx_hash(seq);
                    // A sign without a request id of the caller's is proposed without one
                    // (its ledger entry is its record; `signing::Retry`).
                    command(
                        now,
                        String::new(),
                        Op::ConsumeChecked {
                            user_id: u.user_id.clone(),
                            device_id: u.devices[0].device_id.clone(),
                            tx_hash: hash,
                            expires_at: now + 300,
                            risk: None,
                        },
                    )
                })
                .collect();
            let batch = command(now, String::new(), Op::Batch(commands));
            let started = Instant::now();
            entry(&app, &tree, &batch);
            applying += started.elapsed();
            n += PER_ENTRY as u64;
        }
        applying.as_secs_f64() * 1e6 / count as f64
    };
    let started = Instant::now();
    run(prefill);
    println!(
        "prefill: {prefill} commands in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for window in 1..=3 {
        let us = run(measured / 3);
        println!("window {window}: {us:.2} µs per ConsumeChecked");
    }
}
