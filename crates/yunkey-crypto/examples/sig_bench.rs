//! Per-core signature throughput of the chip's primitives: SM2 (RustCrypto `sm2` behind
//! `yunkey_crypto::sm2`) and ECDSA P-256 (`p256` signs, `ring` verifies messages), one thread,
//! each operation for a fixed time. Not a test: `scripts/bench-sm2.sh` runs it beside
//! `openssl speed`.
//!
//! ```text
//! cargo run --release -p yunkey-crypto --example sig_bench -- [--seconds N] [--tsv]
//! ```
//!
//! Rates are per CPU-second of the measuring thread (from `/proc/thread-self/schedstat`, as
//! `openssl speed` divides by CPU time), so a busy machine lowers them less than it lowers the
//! wall-clock rate, which is printed too. Where the CPU clock cannot be read, both are wall
//! clock. `--tsv` prints `name<TAB>ops per CPU-second<TAB>ops per wall-second` lines for scripts.

use std::hint::black_box;
use std::time::{Duration, Instant};
use yunkey_crypto::{ecdsa, sm2};

/// A message the size of a canonical transaction with its authorization, roughly.
const MESSAGE: &[u8] = &[0x5a; 200];

/// CPU time this thread has run, if Linux tells it.
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

struct Rate {
    name: &'static str,
    per_cpu_second: f64,
    per_wall_second: f64,
}

/// Runs `op` for `seconds` of wall time (after a short warm-up); counts how often it ran.
fn measure(name: &'static str, seconds: f64, mut op: impl FnMut()) -> Rate {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(100) {
        op();
    }
    let limit = Duration::from_secs_f64(seconds);
    let (wall, cpu) = (Instant::now(), thread_cpu_time());
    let mut ops = 0u64;
    while wall.elapsed() < limit {
        for _ in 0..8 {
            op();
        }
        ops += 8;
    }
    let wall = wall.elapsed().as_secs_f64();
    let cpu = match (cpu, thread_cpu_time()) {
        (Some(start), Some(end)) if end > start => (end - start).as_secs_f64(),
        _ => wall,
    };
    Rate {
        name,
        per_cpu_second: ops as f64 / cpu,
        per_wall_second: ops as f64 / wall,
    }
}

fn main() {
    let mut seconds = 3.0;
    let mut tsv = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|s: &f64| *s > 0.0)
                    .expect("--seconds takes a positive number");
            }
            "--tsv" => tsv = true,
            other => panic!("unknown argument {other:?} (use --seconds N, --tsv)"),
        }
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; run with --release for numbers worth comparing");
    }

    let sm2_key = sm2::PrivateKey::generate();
    let sm2_public = sm2_key.public_key();
    let sm2_e = sm2_public.digest(MESSAGE);
    let sm2_sig = sm2_key.sign_message(MESSAGE);
    // The `sm2` crate's own signer, kept across signatures: what signing costs without building
    // a signing key (a scalar multiplication and Z_A) per call, as `sm2::PrivateKey` does.
    let crate_key =
        ::sm2::dsa::SigningKey::from_slice(sm2::DEFAULT_DISTID, &sm2_key.to_secret_bytes())
            .expect("a valid key");
    let p256_key = ecdsa::PrivateKey::generate();
    let p256_public = p256_key.public_key();
    let p256_digest = yunkey_crypto::sha256(MESSAGE);
    let p256_sig = p256_key.sign_message(MESSAGE);
    sm2_public.verify_message(MESSAGE, &sm2_sig).unwrap();
    p256_public.verify_message(MESSAGE, &p256_sig).unwrap();

    let rates = [
        measure("sm2 sign_digest", seconds, || {
            black_box(sm2_key.sign_digest(black_box(&sm2_e)));
        }),
        measure("sm2 sign_message", seconds, || {
            black_box(sm2_key.sign_message(black_box(MESSAGE)));
        }),
        measure("sm2 sign_prehash, crate key kept", seconds, || {
            use ::sm2::dsa::signature::hazmat::PrehashSigner;
            let sig: ::sm2::dsa::Signature = crate_key.sign_prehash(black_box(&sm2_e)).unwrap();
            black_box(sig);
        }),
        measure("sm2 verify_digest", seconds, || {
            sm2_public
                .verify_digest(black_box(&sm2_e), black_box(&sm2_sig))
                .unwrap();
        }),
        measure("sm2 verify_message", seconds, || {
            sm2_public
                .verify_message(black_box(MESSAGE), black_box(&sm2_sig))
                .unwrap();
        }),
        measure("p256 sign_digest (p256)", seconds, || {
            black_box(p256_key.sign_digest(black_box(&p256_digest)));
        }),
        measure("p256 sign_message (p256)", seconds, || {
            black_box(p256_key.sign_message(black_box(MESSAGE)));
        }),
        measure("p256 verify_digest (p256)", seconds, || {
            p256_public
                .verify_digest(black_box(&p256_digest), black_box(&p256_sig))
                .unwrap();
        }),
        measure("p256 verify_message (ring)", seconds, || {
            p256_public
                .verify_message(black_box(MESSAGE), black_box(&p256_sig))
                .unwrap();
        }),
    ];

    if tsv {
        for r in &rates {
            println!(
                "{}\t{:.0}\t{:.0}",
                r.name, r.per_cpu_second, r.per_wall_second
            );
        }
        return;
    }
    let clock = if thread_cpu_time().is_some() {
        "per CPU-second of one thread"
    } else {
        "per wall-second (no CPU clock)"
    };
    println!(
        "one thread, {seconds} s each, {}-byte message; ops {clock}:",
        MESSAGE.len()
    );
    println!(
        "{:<36} {:>10} {:>10} {:>9}",
        "operation", "ops/s", "wall ops/s", "us/op"
    );
    for r in &rates {
        println!(
            "{:<36} {:>10.0} {:>10.0} {:>9.1}",
            r.name,
            r.per_cpu_second,
            r.per_wall_second,
            1e6 / r.per_cpu_second
        );
    }
}
