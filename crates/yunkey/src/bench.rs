//! `yunkey bench`: authorized signatures per second and latency through a running cluster,
//! printed beside the raw rate of the same cryptographic work measured in the same run.
//!
//! Each signature costs: the device's ECDSA signature over the authorization (done here, as
//! a phone would), the coordinator's verification of it, the chip's verification of it, and
//! the chip's ECDSA signature. The crypto ceiling is that work done back to back on every
//! core of this machine, with no network, Raft or TLS.

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
use yunkey_crypto::sig::{Algorithm, SigningKey};
use yunkey_crypto::{authz, tx};
use yunkey_proto::v1::{
    Authorization, EnrollUserRequest, RegisterDeviceRequest, RegisterDeviceResponse, SignRequest,
    Transaction,
};

pub(crate) struct BenchUser {
    pub(crate) user_id: String,
    pub(crate) device_id: String,
    /// The device key (of the user key's algorithm).
    pub(crate) key: SigningKey,
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
    let signature = u.key.sign_message(&authz::authorization_message(
        &u.user_id,
        &u.device_id,
        &hash,
    ));
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
            key,
            certificate: registered.certificate,
        });
    }
    Ok((users, enroll_rate))
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
        let (_, hash) = tx::encode_and_hash(&tx).expect("valid");
        let msg = authz::authorization_message("u", "d", &hash);
        let auth = device.sign_message(&msg);
        device_pub.verify_message(&msg, &auth).expect("verifies"); // coordinator
        device_pub.verify_message(&msg, &auth).expect("verifies"); // chip
        std::hint::black_box(user_key.sign_digest(&user_pub.digest(&msg))); // chip
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// One level of authorized signatures: worker `w` uses `conns[w % len]` and signs for the
/// users in turn.
async fn run_level(
    conns: &[Connection],
    users: &Arc<Vec<BenchUser>>,
    concurrency: usize,
    window: Duration,
) -> anyhow::Result<Level> {
    let seq = Arc::new(AtomicU64::new(0));
    load::run_level(concurrency, window, |w| {
        let (conn, users, seq) = (conns[w % conns.len()].clone(), users.clone(), seq.clone());
        move |i| {
            let user = &users[(w + i as usize * concurrency) % users.len()];
            let req = sign_request(user, seq.fetch_add(1, Ordering::Relaxed));
            let mut client = key_client(conn.current_channel());
            async move { client.sign(req).await.map(|_| ()) }
        }
    })
    .await
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

    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let per_core = tokio::task::spawn_blocking(move || {
        crypto_rate_per_core(Duration::from_secs(2), algorithm)
    })
    .await?;
    let ceiling = per_core * cores as f64;

    let mut levels = Vec::new();
    for &c in &args.concurrency {
        let level = run_level(&conns, &users, c.max(1), window).await?;
        if let Some(e) = &level.first_error {
            eprintln!("bench: concurrency {c}: first error: {e}");
        }
        levels.push(level);
    }
    let best = levels.iter().map(|l| l.rate).fold(0.0, f64::max);
    print(
        g.json,
        json!({
            "users": args.users,
            "algorithm": algorithm.name(),
            "enrollments_per_second": enroll_rate,
            "crypto_ceiling_per_second": ceiling,
            "crypto_per_core_per_second": per_core,
            "cores": cores,
            "levels": levels.iter().map(|l| l.json("signatures_per_second")).collect::<Vec<_>>(),
            "best_signatures_per_second": best,
            "best_fraction_of_ceiling": best / ceiling,
        }),
        || {
            let mut out = format!(
                "algorithm: {algorithm}\nenrolment: {enroll_rate:.0} users/s ({} users)\ncrypto ceiling: {ceiling:.0} signatures/s ({per_core:.0}/s per core x {cores} cores)\n\nconcurrency  signatures/s  p50 ms  p99 ms  errors\n",
                args.users
            );
            for l in &levels {
                out.push_str(&format!(
                    "{:>11}  {:>12.0}  {:>6.2}  {:>6.2}  {:>6}\n",
                    l.concurrency, l.rate, l.p50_ms, l.p99_ms, l.errors
                ));
            }
            out.push_str(&format!(
                "\nbest: {best:.0}/s = {:.0}% of the crypto ceiling",
                100.0 * best / ceiling
            ));
            out
        },
    );
    Ok(())
}
