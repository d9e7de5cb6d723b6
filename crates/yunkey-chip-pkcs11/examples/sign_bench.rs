//! Signatures per second through the whole chip sign path, `ActivationModule::sign_authorized`
//! (binding and expiry checks, the device's authorization verified, the replay guard, the
//! key record opened, the signature), with the soft custody and with a SoftHSM2 token, side by
//! side in one run, on 1 and 2 threads. A benchmark, not a test:
//!
//! ```text
//! cargo run --release -p yunkey-chip-pkcs11 --example sign_bench -- [--count N] [--rounds R]
//! ```
//!
//! It makes its own SoftHSM2 token in a temporary directory (needs `softhsm2-util`; the module
//! is found at the Debian path or given with `--module PATH`). Requests (fresh transactions,
//! each authorized by the device) are made before the clock starts; only the chip's work is
//! timed. No tracing subscriber is installed, so the audit log costs nothing here.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Barrier;
use std::time::Instant;
use yunkey_chip::testing::{self, Device, Operator};
use yunkey_chip::{
    ActivationModule, ChipBackend, ChipConfig, KeyCustody, SignAuthorized, SoftChip, SoftCustody,
};
use yunkey_chip_pkcs11::{Pin, Pkcs11Chip, Pkcs11Custody, Pkcs11Options, TokenSelector};
use yunkey_crypto::seal::SealKey;

const PIN: &str = "bench-pin";

struct Args {
    count: usize,
    rounds: usize,
    module: PathBuf,
}

fn args() -> Args {
    let mut out = Args {
        count: 2000,
        rounds: 3,
        module: PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--count" => out.count = value.parse().expect("--count N"),
            "--rounds" => out.rounds = value.parse().expect("--rounds R"),
            "--module" => out.module = value.into(),
            other => panic!("unknown flag {other}; use --count, --rounds, --module"),
        }
    }
    out
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?} ({e}); install SoftHSM2: apt-get install -y softhsm2")
    });
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn config(id: &str) -> ChipConfig {
    ChipConfig {
        chip_id: id.into(),
        capacity: 16,
        zone: "bench".into(),
    }
}

/// A chip in a domain with one user key bound to one device.
struct Bench {
    name: &'static str,
    chip: ActivationModule,
    handle: String,
    phone: Device,
}

impl Bench {
    fn new(name: &'static str, chip: ActivationModule) -> Self {
        Operator::new().init_domain(&chip);
        let (key, code) = testing::enrol(&chip, "alice");
        let phone = Device::new("alice");
        chip.bind_device(&phone.bind_request(&key.handle, &code))
            .expect("bind");
        Self {
            name,
            chip,
            handle: key.handle,
            phone,
        }
    }

    fn requests(&self, n: usize) -> Vec<SignAuthorized> {
        (0..n)
            .map(|i| {
                let (tx, _) = testing::canonical_tx(&(i + 1).to_string(), 500);
                self.phone.request(&self.handle, &tx)
            })
            .collect()
    }

    /// Signatures per second with `threads` threads, each signing `count` requests.
    fn rate(&self, threads: usize, count: usize) -> f64 {
        let work: Vec<Vec<SignAuthorized>> = (0..threads).map(|_| self.requests(count)).collect();
        let start = Barrier::new(threads + 1);
        let elapsed = std::thread::scope(|s| {
            for requests in &work {
                let (chip, start) = (&self.chip, &start);
                s.spawn(move || {
                    start.wait();
                    for r in requests {
                        chip.sign_authorized(r).expect("sign");
                    }
                });
            }
            start.wait();
            let t = Instant::now();
            // The scope joins every thread before returning.
            t
        })
        .elapsed();
        (threads * count) as f64 / elapsed.as_secs_f64()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args = args();
    let tmp = tempfile::tempdir().expect("temp dir");
    let conf = tmp.path().join("softhsm2.conf");
    std::fs::create_dir(tmp.path().join("tokens")).unwrap();
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tmp.path().join("tokens").display()
        ),
    )
    .unwrap();
    // Before the module is loaded: SoftHSM2 reads it at C_Initialize.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let version = run(Command::new("softhsm2-util").arg("--version"));
    run(Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "bench"])
        .args(["--so-pin", "bench-so-pin", "--pin", PIN]));

    let soft = Bench::new(
        "soft",
        SoftChip::open(tmp.path().join("soft"), config("soft")).expect("soft chip"),
    );
    let options = Pkcs11Options::new(
        &args.module,
        TokenSelector::Label("bench".into()),
        Pin::new(PIN),
    );
    let pkcs11 = Bench::new(
        "pkcs11",
        Pkcs11Chip::open(tmp.path().join("pkcs11"), config("pkcs11"), options)
            .expect("PKCS#11 chip"),
    );
    println!(
        "sign_bench: ActivationModule::sign_authorized, {} signatures per thread, {} rounds",
        args.count, args.rounds
    );
    println!(
        "soft   = SoftCustody (p256 crate, records under AES-256-GCM in software)\n\
         pkcs11 = Pkcs11Custody on SoftHSM2 {version} ({}), token custody {}",
        args.module.display(),
        pkcs11.chip.info().unwrap().custody
    );
    println!(
        "cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // Warm up both (caches, the token's session pool).
    for b in [&soft, &pkcs11] {
        b.rate(2, 200);
    }
    println!(
        "{:>7} {:>7}  {:>30}  {:>8}",
        "threads", "backend", "rounds (sig/s)", "median"
    );
    let mut medians = Vec::new();
    for threads in [1, 2] {
        let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..args.rounds {
            // Alternate, so that machine noise hits both alike.
            for (i, b) in [&soft, &pkcs11].into_iter().enumerate() {
                rates[i].push(b.rate(threads, args.count));
            }
        }
        for (i, b) in [&soft, &pkcs11].into_iter().enumerate() {
            let rounds: Vec<String> = rates[i].iter().map(|r| format!("{r:.0}")).collect();
            let m = median(rates[i].clone());
            println!(
                "{threads:>7} {:>7}  {:>30}  {m:>8.0}",
                b.name,
                rounds.join(" ")
            );
            medians.push((threads, b.name, m));
        }
    }
    for threads in [1, 2] {
        let get = |name| {
            medians
                .iter()
                .find(|(t, n, _)| *t == threads && *n == name)
                .map_or(0.0, |m| m.2)
        };
        println!(
            "{threads} thread(s): pkcs11 / soft = {:.2}",
            get("pkcs11") / get("soft")
        );
    }
    // The soft custody's signature alone (yunkey_crypto, the p256 crate), for comparison.
    let key = yunkey_crypto::ecdsa::PrivateKey::generate();
    let digest = yunkey_crypto::sha256(b"bench");
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(key.sign_digest(&digest));
    }
    println!(
        "one P-256 signature in software (p256 crate, as SoftCustody::sign): {:.1} us",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    // The token's signature alone: CKM_ECDSA on a session key, straight through cryptoki.
    println!(
        "one CKM_ECDSA C_Sign in the token: {:.1} us",
        token_sign_us(&args.module, &digest, n)
    );
    // The per-record cost on the sign path: opening the key's sealed record.
    let record = vec![7u8; 200];
    let token = Pkcs11Custody::open(Pkcs11Options::new(
        &args.module,
        TokenSelector::Label("bench".into()),
        Pin::new(PIN),
    ))
    .expect("custody");
    let soft = SoftCustody::new(SealKey::generate());
    for (name, custody) in [("soft", &soft as &dyn KeyCustody), ("pkcs11", &token)] {
        let sealed = custody.seal(b"aad", &record).unwrap();
        let n = 5000;
        let t = Instant::now();
        for _ in 0..n {
            custody.open(b"aad", &sealed).unwrap();
        }
        println!(
            "open one 200-byte sealed record (AES-256-GCM), {name}: {:.1} us",
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    }
}

/// Microseconds per `C_Sign` (CKM_ECDSA, P-256) of a session key in the `bench` token.
fn token_sign_us(module: &std::path::Path, digest: &[u8], n: usize) -> f64 {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::Attribute;
    use cryptoki::session::UserType;
    let ctx = Pkcs11::new(module).expect("module");
    // Already initialised by the chip in this process: that is fine.
    let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == "bench")
        .expect("bench token");
    let session = ctx.open_rw_session(slot).unwrap();
    let _ = session.login(UserType::User, Some(&PIN.to_owned().into()));
    let p256 = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let (_, private) = session
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::Token(false), Attribute::EcParams(p256)],
            &[Attribute::Token(false), Attribute::Sign(true)],
        )
        .unwrap();
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(session.sign(&Mechanism::Ecdsa, private, digest).unwrap());
    }
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}
