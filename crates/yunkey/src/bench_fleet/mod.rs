//! `yunkey bench fleet`: the chip fleet's failover, repair and drain, measured on a cluster of
//! real processes that the bench starts itself ([`crate::fleet_procs`]): `--chips` soft chips
//! and `--coordinators` coordinators of this same binary, on loopback with TLS.
//!
//! 1. **Kill rounds**, one per `--repair-rates` entry, on one cluster of `--users` users
//!    (coordinators restarted with that `--repair-rate` before each round):
//!    - the live chip holding the most keys is chosen; up to `--sign-users` of its users get a
//!      device, and each signs in a loop, one request at a time, every
//!      `--sign-interval-ms`, through the client SDK (`Connection::call`: it retries
//!      UNAVAILABLE on the next endpoint);
//!    - the chip is killed with SIGKILL; the clock starts once the process is reaped. At that
//!      moment every signing user sends a new request at once. **Time to sign again**: per
//!      user, from the kill to the answer of its first successful request sent after it;
//!    - **repair rate**: the chip's committed key count (`ListChips.used`, which drops as each
//!      `RemoveHolder` commits) is polled every 50 ms; the rate is the keys moved after the
//!      first one divided by the time from the first drop to zero.
//! 2. **Drain**, on a second cluster: one chip with ten times the capacity of the others is
//!    every user's first holder (placement prefers the most free capacity) and gets
//!    `--drain-keys` keys; `DrainChip` is called and the wall time runs until `ListChips` shows
//!    it holds none. Then `RemoveChip` must succeed.

use crate::cli::{FleetBenchArgs, Global};
use crate::fleet_procs::{ChipSpec, Fleet};
use crate::output::print;
use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use yunkey_client::{cluster_client, key_client, Connection};
use yunkey_crypto::ecdsa::PrivateKey;
use yunkey_crypto::{authz, tx};
use yunkey_proto::v1 as pb;

/// A user with a registered device, as the phone holds it.
struct Signer {
    user_id: String,
    device_id: String,
    key: PrivateKey,
}

/// The work directory: removed at the end unless `--keep` (or the run failed).
struct Work {
    dir: PathBuf,
    keep: bool,
    ok: bool,
}

impl Drop for Work {
    fn drop(&mut self) {
        if self.keep || !self.ok {
            eprintln!("bench fleet: work directory kept: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn stats_ms(values: &mut [f64]) -> serde_json::Value {
    values.sort_by(|a, b| a.total_cmp(b));
    json!({
        "count": values.len(),
        "median_ms": percentile(values, 50.0),
        "p99_ms": percentile(values, 99.0),
        "max_ms": values.last(),
    })
}

/// Enrols `n` users `<prefix>-<i>` with `concurrency` requests in flight; returns each user's
/// activation code, and the time it took.
async fn enrol(
    conn: &Connection,
    prefix: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<(Vec<(String, String)>, Duration)> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut out = Vec::with_capacity(n);
    let mut results = futures::stream::iter(0..n)
        .map(|i| {
            let conn = conn.clone();
            let user_id = format!("{prefix}-{i}");
            async move {
                let req = pb::EnrollUserRequest {
                    request_id: format!("enroll-{user_id}"),
                    user_id: user_id.clone(),
                    algorithm: 0,
                    distinguishing_id: String::new(),
                    display_name: String::new(),
                };
                let resp = conn
                    .call(|ch| {
                        let req = req.clone();
                        async move { key_client(ch).enroll_user(req).await }
                    })
                    .await
                    .with_context(|| format!("enrolling {user_id}"))?;
                Ok::<_, anyhow::Error>((user_id, resp.activation_code))
            }
        })
        .buffer_unordered(concurrency.max(1));
    while let Some(r) = results.next().await {
        out.push(r?);
        if last_report.elapsed() > Duration::from_secs(15) {
            last_report = Instant::now();
            eprintln!(
                "bench fleet: {} of {n} users enrolled ({:.0}/s)",
                out.len(),
                out.len() as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    Ok((out, started.elapsed()))
}

async fn register(device: &Connection, user_id: &str, code: &str) -> anyhow::Result<Signer> {
    let key = PrivateKey::generate();
    let spki = key.public_key().to_spki_der();
    let req = pb::RegisterDeviceRequest {
        request_id: String::new(),
        user_id: user_id.to_owned(),
        activation_code: code.to_owned(),
        proof: key.sign_message(&authz::registration_message(user_id, code, &spki)),
        device_public_key: spki,
        device_name: "bench".into(),
        release_id: String::new(),
    };
    let resp = crate::bench::register_device(device, &req)
        .await
        .with_context(|| format!("registering a device for {user_id}"))?;
    Ok(Signer {
        user_id: user_id.to_owned(),
        device_id: resp.device.context("no device in the reply")?.device_id,
        key,
    })
}

fn sign_request(s: &Signer) -> pb::SignRequest {
    let tx = pb::Transaction {
        payer: s.user_id.clone(),
        payee: "bench-shop".into(),
        amount: "1".into(),
        currency: "EUR".into(),
        transaction_id: format!("fleet-{}", hex::encode(yunkey_crypto::random_bytes::<8>())),
        nonce: yunkey_crypto::random_bytes::<16>().to_vec(),
        expires_at: yunkey_coordinator::clock::now() + 300,
    };
    let (_, hash) = tx::encode_and_hash(&tx).expect("bench transactions are valid");
    pb::SignRequest {
        request_id: String::new(),
        release_id: String::new(),
        evidence: None,
        location: None,
        user_id: s.user_id.clone(),
        authorization: Some(pb::Authorization {
            device_id: s.device_id.clone(),
            signature: s.key.sign_message(&authz::authorization_message(
                &s.user_id,
                &s.device_id,
                &hash,
            )),
            format: pb::AuthorizationFormat::EcdsaP256Sha256 as i32,
        }),
        transaction: Some(tx),
    }
}

async fn list_chips(operator: &Connection) -> anyhow::Result<Vec<pb::Chip>> {
    Ok(operator
        .call(|ch| async move { cluster_client(ch).list_chips(pb::ListChipsRequest {}).await })
        .await?
        .chips)
}

async fn keys_on(operator: &Connection, chip: &str) -> anyhow::Result<u64> {
    Ok(list_chips(operator)
        .await?
        .iter()
        .find(|c| c.chip_id == chip)
        .map(|c| c.used)
        .unwrap_or(0))
}

/// Waits until every chip in `live` is up as the serving coordinator sees it.
async fn wait_chips_up(operator: &Connection, live: &[String]) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let chips = list_chips(operator).await?;
        let up = live.iter().all(|id| {
            chips
                .iter()
                .any(|c| &c.chip_id == id && c.state == pb::ChipState::Up as i32)
        });
        if up {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("chips {live:?} not all up within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Each user's holders (stale reads, after the cluster is quiet).
async fn holders(
    conn: &Connection,
    users: &[(String, String)],
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    let mut reads = futures::stream::iter(users.iter().map(|(u, _)| u.clone()))
        .map(|user_id| {
            let conn = conn.clone();
            async move {
                let req = pb::GetUserRequest {
                    user_id: user_id.clone(),
                    consistency: pb::ReadConsistency::Stale as i32,
                };
                let u = conn
                    .call(|ch| {
                        let req = req.clone();
                        async move { key_client(ch).get_user(req).await }
                    })
                    .await?;
                Ok::<_, anyhow::Error>((
                    user_id,
                    u.holders.into_iter().map(|h| h.chip_id).collect(),
                ))
            }
        })
        .buffer_unordered(32);
    while let Some(r) = reads.next().await {
        let (u, h) = r?;
        out.insert(u, h);
    }
    Ok(out)
}

mod drain;
mod kill;

/// The coordinators' flags for a run at `rate` users/s.
fn coordinator_flags(args: &FleetBenchArgs, rate: u32) -> Vec<String> {
    vec![
        "--chip-down-after".into(),
        args.down_after.to_string(),
        "--repair-rate".into(),
        rate.to_string(),
    ]
}

/// `yunkey bench fleet`.
pub async fn run(g: &Global, args: &FleetBenchArgs) -> anyhow::Result<()> {
    if args.chips < 6 {
        bail!("--chips must be at least 6 (two kill rounds leave 4 chips for R = 2 repair)");
    }
    if args.repair_rates.is_empty() || args.repair_rates.contains(&0) {
        bail!("--repair-rates must list positive rates");
    }
    if args.repair_rates.len() > args.chips - 2 {
        bail!("at most --chips minus 2 kill rounds");
    }
    let dir = match &args.work {
        Some(d) => {
            if d.exists() && std::fs::read_dir(d)?.next().is_some() {
                bail!("--work {} is not empty", d.display());
            }
            d.clone()
        }
        None => std::env::temp_dir().join(format!(
            "yunkey-bench-fleet-{}",
            hex::encode(yunkey_crypto::random_bytes::<4>())
        )),
    };
    std::fs::create_dir_all(&dir)?;
    let mut work = Work {
        dir: dir.clone(),
        keep: args.keep,
        ok: false,
    };
    let started = yunkey_coordinator::clock::now();
    let (kill_json, kill_text) = if args.users > 0 {
        kill::kill_rounds(args, dir.join("kill")).await?
    } else {
        (serde_json::Value::Null, String::new())
    };
    let (drain_json, drain_text) = if args.drain_keys > 0 {
        drain::drain(args, dir.join("drain")).await?
    } else {
        (serde_json::Value::Null, String::new())
    };
    work.ok = true;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    print(
        g.json,
        json!({
            "started_unix": started,
            "cores": cores,
            "kill": kill_json,
            "drain": drain_json,
        }),
        || {
            format!("{cores} cores\n{kill_text}{drain_text}")
                .trim_end()
                .to_owned()
        },
    );
    Ok(())
}
