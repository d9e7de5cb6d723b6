//! Signatures per second per core through the whole chip sign path,
//! `ActivationModule::sign_authorized` (binding and expiry checks, the device's authorization
//! verified, the replay guard, the key record opened, the signature), for an ECDSA P-256 user
//! with a P-256 device and an SM2 user with an SM2 device, side by side, on one thread, with
//! the soft custody. A benchmark, not a test:
//!
//! ```text
//! cargo run --release -p yunkey-chip --example algorithm_bench -- [--count N] [--rounds R] [--tsv]
//! ```
//!
//! Requests (fresh transactions, each authorized by the device) are made before the clock
//! starts; only the chip's work is timed. No tracing subscriber is installed. `--tsv` prints
//! `name<TAB>median signatures/s` lines for scripts (`scripts/bench-sm2.sh`).

use std::time::Instant;
use yunkey_chip::testing::{self, Device, Operator};
use yunkey_chip::{ActivationModule, ChipBackend, ChipConfig, SignAuthorized, SoftChip};
use yunkey_crypto::sig::Algorithm;

struct Args {
    count: usize,
    rounds: usize,
    tsv: bool,
}

fn args() -> Args {
    let mut out = Args {
        count: 2000,
        rounds: 3,
        tsv: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--tsv" => out.tsv = true,
            "--count" | "--rounds" => {
                let value: usize = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{flag} needs a number"));
                if flag == "--count" {
                    out.count = value.max(1);
                } else {
                    out.rounds = value.max(1);
                }
            }
            other => panic!("unknown flag {other}; use --count N, --rounds R, --tsv"),
        }
    }
    out
}

/// A soft chip in a domain with one user key of `algorithm` bound to a device of the same.
struct Bench {
    chip: ActivationModule,
    handle: String,
    phone: Device,
}

impl Bench {
    fn new(dir: &std::path::Path, algorithm: Algorithm) -> Self {
        let chip = SoftChip::open(
            dir,
            ChipConfig {
                chip_id: format!("bench-{}", algorithm.name()),
                capacity: 4,
                zone: "bench".into(),
            },
        )
        .expect("soft chip");
        Operator::new().init_domain(&chip);
        let (key, code) = testing::enrol_with(&chip, "alice", algorithm, "");
        let phone = Device::new_with("alice", algorithm);
        chip.bind_device(&phone.bind_request(&key.handle, &code))
            .expect("bind");
        Self {
            chip,
            handle: key.handle,
            phone,
        }
    }

    /// Signatures per second on this thread over `count` fresh requests.
    fn rate(&self, count: usize) -> f64 {
        let requests: Vec<SignAuthorized> = (0..count)
            .map(|i| {
                let (tx, _) = testing::canonical_tx(&(i + 1).to_string(), 500);
                self.phone.request(&self.handle, &tx)
            })
            .collect();
        let t = Instant::now();
        for r in &requests {
            self.chip.sign_authorized(r).expect("sign");
        }
        count as f64 / t.elapsed().as_secs_f64()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args = args();
    let tmp = tempfile::tempdir().expect("temp dir");
    let benches = [Algorithm::EcdsaP256, Algorithm::Sm2]
        .map(|a| (a, Bench::new(&tmp.path().join(a.name()), a)));
    for (_, b) in &benches {
        b.rate(200); // warm up
    }
    let mut rates = [Vec::new(), Vec::new()];
    for _ in 0..args.rounds {
        // Alternate, so that machine noise hits both alike.
        for (i, (_, b)) in benches.iter().enumerate() {
            rates[i].push(b.rate(args.count));
        }
    }
    if !args.tsv {
        println!(
            "algorithm_bench: ActivationModule::sign_authorized on one thread, soft custody, \
             {} signatures x {} rounds",
            args.count, args.rounds
        );
        println!(
            "{:<10} {:>30}  {:>8}",
            "algorithm", "rounds (sig/s)", "median"
        );
    }
    for (i, (algorithm, _)) in benches.iter().enumerate() {
        let m = median(rates[i].clone());
        if args.tsv {
            println!("chip sign_authorized {}\t{m:.0}", algorithm.name());
        } else {
            let rounds: Vec<String> = rates[i].iter().map(|r| format!("{r:.0}")).collect();
            println!(
                "{:<10} {:>30}  {m:>8.0}",
                algorithm.name(),
                rounds.join(" ")
            );
        }
    }
}
