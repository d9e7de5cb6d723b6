//! How the in-memory tree's key layout costs, at the coordinator's key shapes
//! (docs/performance.md, item 27): a `BTreeMap` with keys on the heap (`Vec<u8>`, the layout
//! before 2026-12-04) against keys inline up to 72 bytes (`SmallVec<[u8; 72]>`, what
//! `MemTree` keeps), then the same operations through `Db::memory()`'s public API.
//!
//! Keys: half 34 bytes (a ledger key's length), half 71 (a request key's), each a short
//! prefix and pseudo-random bytes; inserted in one shuffled order, read in another.
//!
//! Run: `cargo run --release -p yunkey-store --example memtree_keys -- [KEYS] [ROUNDS]`
//! (defaults 2000000 and 2). Prints nanoseconds per insert and per get, each round.

use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;
use yunkey_store::Db;

/// Deterministic pseudo-random numbers (splitmix64): the same keys every run.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn key(i: u64) -> Vec<u8> {
    let (prefix, len): (&[u8], usize) = if i.is_multiple_of(2) {
        (b"l/", 34)
    } else {
        (b"request/", 71)
    };
    let mut k = prefix.to_vec();
    let mut n = 0u64;
    while k.len() < len {
        k.extend_from_slice(&mix(i.wrapping_mul(31).wrapping_add(n)).to_be_bytes());
        n += 1;
    }
    k.truncate(len);
    k
}

/// A shuffled order of `0..n` (Fisher–Yates with `mix`).
fn order(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (mix(seed ^ i as u64) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

fn ns_per(n: usize, start: Instant) -> f64 {
    start.elapsed().as_nanos() as f64 / n as f64
}

/// Inserts every key, then reads every key; returns (ns per insert, ns per get).
fn bench_map<K: Ord + for<'a> From<&'a [u8]> + std::borrow::Borrow<[u8]>>(
    keys: &[Vec<u8>],
    ins: &[usize],
    get: &[usize],
) -> (f64, f64) {
    let mut map: BTreeMap<K, Vec<u8>> = BTreeMap::new();
    let t = Instant::now();
    for &i in ins {
        map.insert(K::from(&keys[i][..]), vec![1u8; 64]);
    }
    let insert = ns_per(ins.len(), t);
    let t = Instant::now();
    for &i in get {
        black_box(map.get(&keys[i][..]));
    }
    (insert, ns_per(get.len(), t))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map_or(2_000_000, |a| a.parse().expect("KEYS: a number"));
    let rounds: usize = args
        .next()
        .map_or(2, |a| a.parse().expect("ROUNDS: a number"));
    let keys: Vec<Vec<u8>> = (0..n as u64).map(key).collect();
    let (ins, get) = (order(n, 1), order(n, 2));
    println!("{n} keys (half 34 bytes, half 71), ns per operation");
    for round in 1..=rounds {
        let (vi, vg) = bench_map::<Vec<u8>>(&keys, &ins, &get);
        let (si, sg) = bench_map::<SmallVec<[u8; 72]>>(&keys, &ins, &get);
        let db = Db::memory();
        let tree = db.tree("t").expect("memory tree");
        let t = Instant::now();
        for &i in &ins {
            tree.insert(&keys[i], &[1u8; 64][..]).expect("insert");
        }
        let ti = ns_per(n, t);
        let t = Instant::now();
        for &i in &get {
            black_box(tree.get(&keys[i]).expect("get"));
        }
        let tg = ns_per(n, t);
        println!(
            "round {round}: BTreeMap<Vec<u8>> insert {vi:.0} get {vg:.0} | \
             BTreeMap<SmallVec<[u8; 72]>> insert {si:.0} get {sg:.0} | \
             Db::memory() tree insert {ti:.0} get {tg:.0}"
        );
    }
}
