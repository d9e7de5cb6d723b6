//! Benchmark of the rebalance planner at scale: USERS users (default 1,000,000) of R = 2 on
//! CHIPS chips (default 10) in 3 zones, placed as enrolment places them; then one empty chip
//! joins and the planner plans the moves. Prints the time to plan and the memory the
//! planner's input (the compact key table and the user ids the reconciler keeps) and its work
//! take, as the process's resident set (`VmRSS`, and the peak `VmHWM`, from /proc).
//!
//! `cargo run --release -p yunkey-coordinator --example rebalance_plan -- [USERS] [CHIPS]`

#[path = "common/mem.rs"]
mod mem;
use mem::rss_mb;
use std::time::Instant;
use yunkey_coordinator::rebalance::{self, ChipLoad, KeyTable, Tolerance};

fn main() {
    let mut args = std::env::args().skip(1);
    let users: usize = args.next().map_or(1_000_000, |a| a.parse().expect("USERS"));
    let chips_n: usize = args.next().map_or(10, |a| a.parse().expect("CHIPS"));
    let capacity = (users as u64 * 2).div_ceil(chips_n as u64) * 2;
    let mut chips: Vec<ChipLoad> = (0..chips_n)
        .map(|i| ChipLoad {
            chip_id: format!("chip-{i}"),
            zone: format!("zone-{}", i % 3),
            capacity,
            accepts: true,
        })
        .collect();
    let base = rss_mb().0;
    // Enrolment-like placement: two chips in different zones, round robin.
    let mut keys = KeyTable::with_capacity(users, 2);
    let mut ids: Vec<String> = Vec::with_capacity(users);
    for u in 0..users {
        let a = u % chips_n;
        let mut b = (u / chips_n + a + 1) % chips_n;
        while chips[b].zone == chips[a].zone {
            b = (b + 1) % chips_n;
        }
        keys.push([a as u32, b as u32]);
        ids.push(format!("user-{u:08}"));
    }
    let input = rss_mb().0 - base;
    chips.push(ChipLoad {
        chip_id: "chip-new".into(),
        zone: "zone-0".into(),
        capacity,
        accepts: true,
    });
    let before_plan = rss_mb().0;
    let started = Instant::now();
    let moves = rebalance::plan(&chips, &keys, Tolerance::default());
    let took = started.elapsed();
    let plan_peak = rss_mb().1 - before_plan;
    let checked = Instant::now();
    rebalance::check(&chips, &keys, &moves).expect("the plan passes its check");
    let check_took = checked.elapsed();
    keys.apply(&moves);
    let counts = rebalance::counts(&chips, &keys);
    println!(
        "users {users}, chips {chips_n} + 1 joining, R = 2: {} moves planned in {:.2} s (check {:.2} s)",
        moves.len(),
        took.as_secs_f64(),
        check_took.as_secs_f64()
    );
    println!(
        "resident: input (key table + user ids) {:.1} MiB, planning peak above it {:.1} MiB (moves {:.1} MiB of it); process peak {:.1} MiB",
        input,
        plan_peak,
        (moves.len() * std::mem::size_of::<rebalance::Move>()) as f64 / (1024.0 * 1024.0),
        rss_mb().1
    );
    println!(
        "balanced after: {} (copies per chip: min {}, max {})",
        rebalance::balanced(&chips, &counts, Tolerance::default()),
        counts.iter().min().unwrap_or(&0),
        counts.iter().max().unwrap_or(&0)
    );
    drop(ids);
}
