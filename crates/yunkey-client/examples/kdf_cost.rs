//! Measures the cost of one PIN guess against a copied key file: one Argon2id derivation with
//! the parameters the file keystore writes ([`KdfParams::RECOMMENDED`]), beside the format-1
//! parameters and a few alternatives. docs/security.md ("Device keystore") quotes its output.
//!
//! ```text
//! cargo run -p yunkey-client --example kdf_cost [ROUNDS]
//! ```
//!
//! (The dev profile builds dependencies, argon2 among them, at opt-level 2; `--release` works
//! too.)

use std::time::Instant;
use yunkey_client::keystore::KdfParams;

fn main() {
    let rounds: u32 = std::env::args()
        .nth(1)
        .map(|r| r.parse().expect("ROUNDS is a number"))
        .unwrap_or(5);
    let candidates = [
        ("format 1 (Argon2 defaults)", KdfParams::FORMAT_1),
        (
            "64 MiB, 3 passes",
            KdfParams {
                memory_kib: 64 * 1024,
                passes: 3,
                lanes: 1,
            },
        ),
        (
            "128 MiB, 3 passes",
            KdfParams {
                memory_kib: 128 * 1024,
                passes: 3,
                lanes: 1,
            },
        ),
        (
            "192 MiB, 3 passes",
            KdfParams {
                memory_kib: 192 * 1024,
                passes: 3,
                lanes: 1,
            },
        ),
        (
            "256 MiB, 2 passes",
            KdfParams {
                memory_kib: 256 * 1024,
                passes: 2,
                lanes: 1,
            },
        ),
        ("recommended (format 2)", KdfParams::RECOMMENDED),
    ];
    // The fastest run is what an attacker with a quiet core gets; the budget uses it.
    println!("one guess = one Argon2id derivation, one core; fastest and median of {rounds}");
    for (name, params) in candidates {
        let mut times: Vec<f64> = (0..rounds)
            .map(|i| {
                let start = Instant::now();
                params
                    .derive(format!("1234567{i}").as_bytes(), &[7u8; 16])
                    .expect("derivation works");
                start.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(|a, b| a.total_cmp(b));
        let median = times[times.len() / 2];
        println!(
            "{name:<28} m={:>7} KiB t={} p={}: fastest {:>7.1} ms/guess, median {:>7.1}",
            params.memory_kib,
            params.passes,
            params.lanes,
            times[0] * 1e3,
            median * 1e3
        );
    }
}
