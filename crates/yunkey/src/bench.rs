//! `yunkey bench`: authorized signatures per second and latency through a running cluster,
//! printed beside the raw rate of the same cryptographic work measured in the same run.
//!
//! Each signature costs: the device's ECDSA signature over the authorization (done here, as
//! a phone would), the coordinator's verification of it, the chip's verification of it, and
//! the chip's ECDSA signature. Three ceilings are measured in the same run, each on one core
//! for 2 s and multiplied by the cores of this machine (no network, Raft or TLS):
//! - ours: that work with the servers' own code (ring verifications, the chip's ring
//!   signature for P-256), plus the device's signature with p256;
//! - the reference: the servers' part alone (2 verifications + 1 signature of P-256) with
//!   ring, the fastest library here; the figure the performance targets are a fraction of;
//! - enrolment: one key generated, wrapped, imported on R chips (unwrap and parse), and one
//!   certificate-sized signature, with the servers' own code.

use crate::cli::{BenchArgs, Global};
use crate::connect;
use crate::load::{self, Level};
use crate::output::print;
use anyhow::{bail, Context};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use yunkey_client::{key_client, terminal_client, Connection};
use yunkey_crypto::sig::{Algorithm, SigningKey, VerifyingKey};
use yunkey_crypto::{authz, tx};
use yunkey_proto::v1::{
    Authorization, EnrollUserRequest, RegisterDeviceRequest, RegisterDeviceResponse,
    SignBatchRequest, SignBatchResponse, SignRequest, Transaction,
};

pub(crate) struct BenchUser {
    pub(crate) user_id: String,
    pub(crate) device_id: String,
    /// The device key (of the user key's algorithm).
    pub(crate) key: SigningKey,
    /// The same key in ring, for a P-256 device: the bench signs each authorization as a
    /// phone would, with fast platform crypto, so that the load generator takes as little of
    /// the cores it shares with the cluster as it can (ring signs several times faster than
    /// p256; an authorization needs no deterministic signature).
    pub(crate) fast: Option<ring::signature::EcdsaKeyPair>,
    /// The device certificate (for the device channel).
    pub(crate) certificate: Vec<u8>,
}

fn transaction(user: &str, seq: u64) -> Transaction {
    Transaction {
        payer: user.to_owned(),
        payee: "bench-shop".to_owned(),
        amount: "9.99".to_owned(),
        currency: "EUR".to_owned(),
        transaction_id: format!("bench-{seq}"),
        nonce: yunkey_crypto::random_bytes::<16>().to_vec(),
        expires_at: yunkey_coordinator::clock::now() + 300,
    }
}

pub(crate) fn sign_request(u: &BenchUser, seq: u64) -> SignRequest {
    let tx = transaction(&u.user_id, seq);
    let (_, hash) = tx::encode_and_hash(&tx).expect("bench transactions are valid");
    let message = authz::authorization_message(&u.user_id, &u.device_id, &hash);
    let signature = match &u.fast {
        Some(pair) => pair
            .sign(&ring::rand::SystemRandom::new(), &message)
            .expect("ring signs with a valid key")
            .as_ref()
            .to_vec(),
        None => u.key.sign_message(&message),
    };
    SignRequest {
        request_id: String::new(),
        release_id: String::new(),
        evidence: None,
        location: None,
        user_id: u.user_id.clone(),
        transaction: Some(tx),
        authorization: Some(Authorization {
            device_id: u.device_id.clone(),
            signature,
            format: authz::AuthorizationFormat::for_key(u.key.algorithm()).to_wire(),
        }),
    }
}

/// Enrols `n` users with keys of `algorithm` and registers a device of the same algorithm
/// for each; returns them and the enrolment rate.
pub(crate) async fn setup_users(
    business: &Connection,
    device: &Connection,
    n: usize,
    algorithm: Algorithm,
) -> anyhow::Result<(Vec<BenchUser>, f64)> {
    let run = hex::encode(yunkey_crypto::random_bytes::<4>());
    let started = Instant::now();
    let enrolled = futures::future::try_join_all((0..n).map(|i| {
        let business = business.clone();
        let user_id = format!("bench-{run}-{i}");
        async move {
            let resp = business
                .call(|ch| {
                    let req = EnrollUserRequest {
                        request_id: format!("enroll-{user_id}"),
                        user_id: user_id.clone(),
                        algorithm: algorithm.to_proto() as i32,
                        display_name: String::new(),
                        distinguishing_id: String::new(),
                    };
                    async move { key_client(ch).enroll_user(req).await }
                })
                .await?;
            Ok::<_, anyhow::Error>((user_id, resp.activation_code))
        }
    }))
    .await?;
    let enroll_rate = n as f64 / started.elapsed().as_secs_f64();
    let mut users = Vec::with_capacity(n);
    for (user_id, code) in enrolled {
        let key = SigningKey::generate(algorithm);
        let spki = key.public_key().to_spki_der();
        let proof = key.sign_message(&authz::registration_message(&user_id, &code, &spki));
        let req = RegisterDeviceRequest {
            request_id: String::new(),
            user_id: user_id.clone(),
            activation_code: code,
            device_public_key: spki,
            proof,
            device_name: "bench".into(),
            release_id: String::new(),
        };
        let resp = register_device(device, &req).await?;
        let registered = resp.device.context("no device in reply")?;
        users.push(BenchUser {
            user_id,
            device_id: registered.device_id,
            fast: ring_pair(&key),
            key,
            certificate: registered.certificate,
        });
    }
    Ok((users, enroll_rate))
}

/// `key` as a ring key pair, for a P-256 key.
fn ring_pair(key: &SigningKey) -> Option<ring::signature::EcdsaKeyPair> {
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    (key.algorithm() == Algorithm::EcdsaP256).then(|| {
        EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            &key.to_pkcs8_der(),
            &ring::rand::SystemRandom::new(),
        )
        .expect("ring reads a P-256 PKCS#8 key")
    })
}

/// `RegisterDevice`, waiting out the coordinators' rate limit per source address on
/// unauthenticated calls when it is hit: a bench registers many devices from one address.
pub(crate) async fn register_device(
    device: &Connection,
    req: &RegisterDeviceRequest,
) -> Result<RegisterDeviceResponse, yunkey_client::ClientError> {
    loop {
        let result = device
            .call(|ch| {
                let req = req.clone();
                async move { terminal_client(ch).register_device(req).await }
            })
            .await;
        match result {
            Err(yunkey_client::ClientError::Status {
                code: tonic::Code::ResourceExhausted,
                ..
            }) => tokio::time::sleep(Duration::from_millis(100)).await,
            other => return other,
        }
    }
}

/// The same crypto work as one authorized signature (two verifications of the device's
/// authorization, one signature by the user's key), with keys of `algorithm`, on one core,
/// per second.
fn crypto_rate_per_core(window: Duration, algorithm: Algorithm) -> f64 {
    let device = SigningKey::generate(algorithm);
    let device_pub = device.public_key();
    let user_key = SigningKey::generate(algorithm);
    let user_pub = user_key.public_key();
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < window {
        let tx = transaction("u", n);
        let (canonical, hash) = tx::encode_and_hash(&tx).expect("valid");
        let msg = authz::authorization_message("u", "d", &hash);
        let auth = device.sign_message(&msg);
        device_pub.verify_message(&msg, &auth).expect("verifies"); // coordinator
        device_pub.verify_message(&msg, &auth).expect("verifies"); // chip
        std::hint::black_box(chip_signature(&user_key, &user_pub, &canonical)); // chip
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// The user key's signature of a canonical transaction as the soft chip makes it: ring for
/// P-256 (`PrivateKey::sign_message_with_secret`), the SM2 digest signature for SM2.
fn chip_signature(key: &SigningKey, public: &VerifyingKey, canonical: &[u8]) -> Vec<u8> {
    match (key, public) {
        (SigningKey::P256(k), VerifyingKey::P256(p)) => {
            yunkey_crypto::ecdsa::PrivateKey::sign_message_with_secret(
                &k.to_secret_bytes(),
                p,
                canonical,
            )
            .expect("a fresh key signs")
        }
        _ => key.sign_digest(&public.digest(canonical)),
    }
}

/// The reference ceiling on one core, per second: the servers' cryptography of one
/// authorized signature (two P-256 verifications of the device's authorization, one P-256
/// signature of the transaction) done with ring, whatever the bench's algorithm.
fn ring_rate_per_core(window: Duration) -> f64 {
    use ring::signature::{EcdsaKeyPair, KeyPair, UnparsedPublicKey};
    use ring::signature::{ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING as SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pair = |rng: &ring::rand::SystemRandom| {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&SIGNING, rng).expect("ring generates a key");
        EcdsaKeyPair::from_pkcs8(&SIGNING, pkcs8.as_ref(), rng).expect("ring reads its key")
    };
    let (device, user) = (pair(&rng), pair(&rng));
    let device_pub = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, device.public_key().as_ref());
    let started = Instant::now();
    let (mut n, mut spent) = (0u64, Duration::ZERO);
    while started.elapsed() < window {
        let tx = transaction("u", n);
        let (_, hash) = tx::encode_and_hash(&tx).expect("valid");
        let msg = authz::authorization_message("u", "d", &hash);
        let auth = device.sign(&rng, &msg).expect("ring signs"); // the phone: not counted
        let auth = auth.as_ref().to_vec();
        let t = Instant::now();
        device_pub.verify(&msg, &auth).expect("verifies"); // coordinator
        device_pub.verify(&msg, &auth).expect("verifies"); // chip
        std::hint::black_box(user.sign(&rng, &msg).expect("ring signs")); // chip
        spent += t.elapsed();
        n += 1;
    }
    n as f64 / spent.as_secs_f64()
}

/// The enrolment ceiling on one core, per second, with the servers' own code: a key of
/// `algorithm` generated, its PKCS#8 wrapped under a domain KEK (AES-256-KWP), unwrapped and
/// parsed on each of `replicas` chips, and one signature over a certificate-sized body.
fn enrol_rate_per_core(window: Duration, algorithm: Algorithm, replicas: usize) -> f64 {
    use yunkey_crypto::{cipher::Cipher, keywrap};
    let kek = yunkey_crypto::random_bytes::<32>();
    let ca = SigningKey::generate(algorithm);
    let ca_pub = ca.public_key();
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < window {
        let key = SigningKey::generate(algorithm);
        let wrapped = keywrap::wrap(Cipher::Aes256, &kek, &key.to_pkcs8_der()).expect("wraps");
        for _ in 0..replicas {
            let pkcs8 = keywrap::unwrap(Cipher::Aes256, &kek, &wrapped).expect("unwraps");
            std::hint::black_box(SigningKey::from_pkcs8_der(&pkcs8).expect("parses"));
        }
        let mut body = key.public_key().to_spki_der();
        body.resize(400, 0x30);
        std::hint::black_box(chip_signature(&ca, &ca_pub, &body));
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// One call of the load: `batch` signatures (`Sign` for 1, `SignBatch` for more) for the
/// users from turn `first` on (`stride` apart), over `conn`.
fn sign_call(
    conn: &Connection,
    users: &[BenchUser],
    seq: &AtomicU64,
    batch: usize,
    first: usize,
    stride: usize,
) -> impl std::future::Future<Output = Result<u64, tonic::Status>> + Send + 'static {
    let mut items: Vec<_> = (0..batch)
        .map(|k| {
            let turn = first + k * stride;
            sign_request(
                &users[turn % users.len()],
                seq.fetch_add(1, Ordering::Relaxed),
            )
        })
        .collect();
    let mut client = key_client(conn.current_channel());
    async move {
        if items.len() == 1 {
            let req = items.pop().expect("one item");
            client.sign(req).await.map(|_| 1)
        } else {
            signed_items(client.sign_batch(SignBatchRequest { items }).await?)
        }
    }
}

/// One closed-loop level of authorized signatures: worker `w` uses `conns[w % len]` and signs
/// for the users in turn.
async fn run_level(
    conns: &[Connection],
    users: &Arc<Vec<BenchUser>>,
    concurrency: usize,
    batch: usize,
    window: Duration,
) -> anyhow::Result<Level> {
    let seq = Arc::new(AtomicU64::new(0));
    load::run_level(concurrency, window, |w| {
        let (conn, users, seq) = (conns[w % conns.len()].clone(), users.clone(), seq.clone());
        move |i| {
            let first = i as usize * batch * concurrency + w;
            sign_call(&conn, &users, &seq, batch, first, concurrency)
        }
    })
    .await
}

/// One open-loop level: `rate` signatures per second (in calls of `batch`), call `i` over
/// `conns[i % len]`, the users in turn.
async fn run_paced(
    conns: &[Connection],
    users: &Arc<Vec<BenchUser>>,
    rate: f64,
    batch: usize,
    window: Duration,
) -> anyhow::Result<load::Paced> {
    let seq = AtomicU64::new(0);
    load::run_paced(rate / batch as f64, window, PACED_MAX_IN_FLIGHT, |i| {
        let conn = &conns[i as usize % conns.len()];
        sign_call(conn, users, &seq, batch, i as usize * batch, 1)
    })
    .await
}

/// The most calls a paced level keeps in flight; a call due beyond it waits, and the wait
/// counts in its latency.
pub const PACED_MAX_IN_FLIGHT: usize = 1024;

/// The items a `SignBatch` call signed; its first refused item, if any, fails the call (so
/// the level reports it as an error).
fn signed_items(reply: tonic::Response<SignBatchResponse>) -> Result<u64, tonic::Status> {
    use yunkey_proto::v1::sign_result::Result as Outcome;
    let results = reply.into_inner().results;
    for r in &results {
        match &r.result {
            Some(Outcome::Signed(_)) => {}
            Some(Outcome::Error(e)) => {
                return Err(tonic::Status::new(e.code.into(), e.message.clone()))
            }
            None => return Err(tonic::Status::internal("a SignBatch result is empty")),
        }
    }
    Ok(results.len() as u64)
}

/// `yunkey bench`.
pub async fn run(g: &Global, args: &BenchArgs) -> anyhow::Result<()> {
    match &args.mode {
        Some(crate::cli::BenchMode::Cluster(c)) => return crate::bench_cluster::run(g, c).await,
        Some(crate::cli::BenchMode::Fleet(f)) => return crate::bench_fleet::run(g, f).await,
        Some(crate::cli::BenchMode::DeviceChannel(d)) => {
            return crate::bench_device::run(g, d).await
        }
        None => {}
    }
    if args.users == 0 || args.concurrency.is_empty() {
        bail!("--users and --concurrency must be positive");
    }
    let business = connect::business(g)?;
    let device = connect::device(g)?;
    // Several connections, as several backend instances would open: one HTTP/2 connection
    // is processed by one task on each side and would cap the rate by itself.
    let conns = (0..args.connections.max(1))
        .map(|_| connect::business(g))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let algorithm = args.algorithm.into();
    let (users, enroll_rate) = setup_users(&business, &device, args.users, algorithm).await?;
    let users = Arc::new(users);
    let window = Duration::from_secs(args.seconds);
    let batch = usize::from(args.batch);

    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let replicas = args.replicas.max(1);
    let (per_core, ring_per_core, enrol_per_core) = tokio::task::spawn_blocking(move || {
        let second = Duration::from_secs(2);
        (
            crypto_rate_per_core(second, algorithm),
            ring_rate_per_core(second),
            enrol_rate_per_core(second, algorithm, replicas),
        )
    })
    .await?;
    let ceiling = per_core * cores as f64;
    let ring_ceiling = ring_per_core * cores as f64;
    let enrol_ceiling = enrol_per_core * cores as f64;

    let mut levels = Vec::new();
    for &c in &args.concurrency {
        let level = run_level(&conns, &users, c.max(1), batch, window).await?;
        if let Some(e) = &level.first_error {
            eprintln!("bench: concurrency {c}: first error: {e}");
        }
        levels.push(level);
    }
    let best = levels.iter().map(|l| l.rate).fold(0.0, f64::max);
    if !args.paced_at.is_empty() && best <= 0.0 {
        bail!("--paced-at needs a rate to pace against: no concurrency level signed anything");
    }
    let mut paced = Vec::new();
    for &fraction in &args.paced_at {
        let p = run_paced(&conns, &users, fraction * best, batch, window).await?;
        if let Some(e) = &p.level.first_error {
            eprintln!("bench: paced at {fraction} of the peak: first error: {e}");
        }
        paced.push((fraction, p));
    }
    print(
        g.json,
        json!({
            "users": args.users,
            "algorithm": algorithm.name(),
            "batch": batch,
            "enrollments_per_second": enroll_rate,
            "crypto_ceiling_per_second": ceiling,
            "crypto_per_core_per_second": per_core,
            "cores": cores,
            "levels": levels.iter().map(|l| l.json("signatures_per_second")).collect::<Vec<_>>(),
            "paced": paced.iter().map(|(fraction, p)| {
                let mut v = p.json("signatures_per_second");
                v["fraction_of_best"] = (*fraction).into();
                v
            }).collect::<Vec<_>>(),
            "best_signatures_per_second": best,
            "best_fraction_of_ceiling": best / ceiling,
            "ring_ceiling_per_second": ring_ceiling,
            "ring_per_core_per_second": ring_per_core,
            "best_fraction_of_ring_ceiling": best / ring_ceiling,
            "replicas": replicas,
            "enrolment_ceiling_per_second": enrol_ceiling,
            "enrolment_fraction_of_ceiling": enroll_rate / enrol_ceiling,
        }),
        || {
            let mut out = format!(
                "algorithm: {algorithm}\nenrolment: {enroll_rate:.0} users/s ({} users) = {:.1}% of its crypto ceiling {enrol_ceiling:.0}/s (key generation, {replicas} imports, a certificate signature; {enrol_per_core:.0}/s per core)\n\
                 crypto ceiling, ours: {ceiling:.0} signatures/s ({per_core:.0}/s per core x {cores} cores; the device signature included)\n\
                 crypto ceiling, reference: {ring_ceiling:.0} signatures/s (ring P-256, 2 verifications + 1 signature: {ring_per_core:.0}/s per core)\n\n\
                 {}concurrency  signatures/s  p50 ms  p99 ms  errors\n",
                args.users,
                100.0 * enroll_rate / enrol_ceiling,
                if batch > 1 {
                    format!("KeyService.SignBatch, {batch} signatures per call; latencies are of the calls\n")
                } else {
                    String::new()
                }
            );
            for l in &levels {
                out.push_str(&format!(
                    "{:>11}  {:>12.0}  {:>6.2}  {:>6.2}  {:>6}\n",
                    l.concurrency, l.rate, l.p50_ms, l.p99_ms, l.errors
                ));
            }
            if !paced.is_empty() {
                out.push_str(&format!(
                    "\npaced (open loop; latency from each call's due time; at most {PACED_MAX_IN_FLIGHT} in flight)\n\
                     of best  asked/s  signatures/s  p50 ms  p99 ms  in flight  errors\n"
                ));
            }
            for (fraction, p) in &paced {
                let l = &p.level;
                out.push_str(&format!(
                    "{:>7.2}  {:>7.0}  {:>12.0}  {:>6.2}  {:>6.2}  {:>9}  {:>6}\n",
                    fraction,
                    p.target_rate * batch as f64,
                    l.rate,
                    l.p50_ms,
                    l.p99_ms,
                    l.concurrency,
                    l.errors
                ));
            }
            out.push_str(&format!(
                "\nbest: {best:.0}/s = {:.1}% of the reference ceiling, {:.1}% of ours",
                100.0 * best / ring_ceiling,
                100.0 * best / ceiling
            ));
            out
        },
    );
    Ok(())
}
