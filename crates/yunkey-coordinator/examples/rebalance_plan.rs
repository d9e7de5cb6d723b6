//! Benchmark of the rebalance planner at scale: USERS users (default 1,000,000) of R = 2 on
//! CHIPS chips (default 10) in 3 zones, placed as enrolment places them; then one empty chip
//! joins and the planner plans the moves. Prints the time to plan and the heap the planner's
//! input (the compact key table and the user ids the reconciler keeps) and its work take,
//! measured by a counting allocator.
//!
//! `cargo run --release -p yunkey-coordinator --example rebalance_plan -- [USERS] [CHIPS]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use yunkey_coordinator::rebalance::{self, ChipLoad, KeyTable, Tolerance};

struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = NOW.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: the caller's layout is passed through unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

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
    let base = NOW.load(Ordering::Relaxed);
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
    let input = NOW.load(Ordering::Relaxed) - base;
    chips.push(ChipLoad {
        chip_id: "chip-new".into(),
        zone: "zone-0".into(),
        capacity,
        accepts: true,
    });
    PEAK.store(NOW.load(Ordering::Relaxed), Ordering::Relaxed);
    let before_plan = NOW.load(Ordering::Relaxed);
    let started = Instant::now();
    let moves = rebalance::plan(&chips, &keys, Tolerance::default());
    let took = started.elapsed();
    let plan_peak = PEAK.load(Ordering::Relaxed) - before_plan;
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
        "heap: input (key table + user ids) {:.1} MiB, planning peak above it {:.1} MiB, moves {:.1} MiB",
        mib(input),
        mib(plan_peak),
        mib(moves.len() * std::mem::size_of::<rebalance::Move>())
    );
    println!(
        "balanced after: {} (copies per chip: min {}, max {})",
        rebalance::balanced(&chips, &counts, Tolerance::default()),
        counts.iter().min().unwrap_or(&0),
        counts.iter().max().unwrap_or(&0)
    );
    drop(ids);
}
