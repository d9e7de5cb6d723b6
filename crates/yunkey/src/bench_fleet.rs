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
        user_id: s.user_id.clone(),
        authorization: Some(pb::Authorization {
            device_id: s.device_id.clone(),
            signature: s.key.sign_message(&authz::authorization_message(
                &s.user_id,
                &s.device_id,
                &hash,
            )),
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

/// One request of the signing load.
struct Outcome {
    user: usize,
    sent: Instant,
    done: Instant,
    ok: bool,
}

struct KillRound {
    rate: u32,
    victim: String,
    keys: u64,
    json: serde_json::Value,
    text: String,
}

/// One kill round (see the module doc).
async fn kill_round(
    fleet: &mut Fleet,
    args: &FleetBenchArgs,
    rate: u32,
    users: &[(String, String)],
    signers: &mut BTreeMap<String, Arc<Signer>>,
    dead: &mut Vec<String>,
) -> anyhow::Result<KillRound> {
    let business = fleet.business()?;
    let operator = fleet.operator()?;
    let device = fleet.device()?;
    let live: Vec<String> = fleet
        .chips
        .keys()
        .filter(|c| !dead.contains(c))
        .cloned()
        .collect();
    wait_chips_up(&operator, &live).await?;
    let chips = list_chips(&operator).await?;
    let victim = chips
        .iter()
        .filter(|c| live.contains(&c.chip_id))
        .max_by_key(|c| c.used)
        .context("no live chip")?
        .chip_id
        .clone();
    let placement = holders(&business, users).await?;
    let codes: BTreeMap<&String, &String> = users.iter().map(|(u, c)| (u, c)).collect();
    let mut on_victim: Vec<Arc<Signer>> = Vec::new();
    for (user, h) in &placement {
        if on_victim.len() == args.sign_users || !h.contains(&victim) {
            continue;
        }
        if !signers.contains_key(user) {
            let s = register(&device, user, codes[user]).await?;
            signers.insert(user.clone(), Arc::new(s));
        }
        on_victim.push(signers[user].clone());
    }
    let keys = keys_on(&operator, &victim).await?;
    eprintln!(
        "bench fleet: round at --repair-rate {rate}: killing {victim} ({keys} keys); {} of its users sign",
        on_victim.len()
    );

    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (kill_tx, kill_rx) = watch::channel(false);
    let interval = Duration::from_millis(args.sign_interval_ms);
    let n = on_victim.len().max(1) as f64;
    let tasks: Vec<_> = on_victim
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (s, conn, outcomes, stop, mut killed) = (
                s.clone(),
                business.clone(),
                outcomes.clone(),
                stop.clone(),
                kill_rx.clone(),
            );
            tokio::spawn(async move {
                // Spread the users' first requests over one interval.
                tokio::time::sleep(interval.mul_f64(i as f64 / n)).await;
                while !stop.load(Ordering::Relaxed) {
                    let req = sign_request(&s);
                    let sent = Instant::now();
                    let ok = conn
                        .call(|ch| {
                            let req = req.clone();
                            async move { key_client(ch).sign(req).await }
                        })
                        .await
                        .is_ok();
                    outcomes.lock().expect("poisoned").push(Outcome {
                        user: i,
                        sent,
                        done: Instant::now(),
                        ok,
                    });
                    // The next request at the interval, or at once when the chip is killed.
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        r = killed.changed() => if r.is_err() { tokio::time::sleep(interval).await },
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    fleet.kill9(&victim)?;
    let killed_at = Instant::now();
    let _ = kill_tx.send(true);
    dead.push(victim.clone());

    // Repair: the victim's committed key count, every 50 ms.
    let mut first_drop = None;
    let end = killed_at + Duration::from_secs(args.repair_timeout);
    let zero = loop {
        let left = keys_on(&operator, &victim).await?;
        let now = Instant::now();
        if left < keys && first_drop.is_none() {
            first_drop = Some(now);
        }
        if left == 0 {
            break now;
        }
        if now > end {
            bail!(
                "{victim} still listed by {left} keys {:?} after the kill",
                args.repair_timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let first_drop = first_drop.unwrap_or(zero);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let outcomes = std::mem::take(&mut *outcomes.lock().expect("poisoned"));
    let errors = outcomes.iter().filter(|o| !o.ok).count();
    let mut again: Vec<f64> = Vec::new();
    let mut never = 0;
    for u in 0..on_victim.len() {
        let first = outcomes
            .iter()
            .filter(|o| o.user == u && o.ok && o.sent >= killed_at)
            .map(|o| (o.done - killed_at).as_secs_f64() * 1000.0)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))));
        match first {
            Some(ms) => again.push(ms),
            None => never += 1,
        }
    }
    let in_flight: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.sent < killed_at && o.done > killed_at)
        .map(|o| (o.done - o.sent).as_secs_f64() * 1000.0)
        .collect();
    let mut during: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.ok && o.sent >= first_drop && o.done <= zero)
        .map(|o| (o.done - o.sent).as_secs_f64() * 1000.0)
        .collect();
    let window = (zero - first_drop).as_secs_f64();
    let repair_rate = if window > 0.0 {
        Some(keys.saturating_sub(1) as f64 / window)
    } else {
        None
    };
    let again_stats = stats_ms(&mut again);
    let during_stats = stats_ms(&mut during);
    let json = json!({
        "repair_rate_setting": rate,
        "victim": victim,
        "victim_keys": keys,
        "signing_users": on_victim.len(),
        "sign_interval_ms": args.sign_interval_ms,
        "sign_requests": outcomes.len(),
        "sign_errors": errors,
        "time_to_sign_again": again_stats,
        "users_never_signed_again": never,
        "in_flight_at_kill": { "count": in_flight.len(), "max_ms": in_flight.iter().copied().fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v)))) },
        "sign_latency_during_repair": during_stats,
        "kill_to_first_move_s": (first_drop - killed_at).as_secs_f64(),
        "kill_to_repaired_s": (zero - killed_at).as_secs_f64(),
        "repair_window_s": window,
        "repair_users_per_second": repair_rate,
    });
    let f =
        |v: &serde_json::Value, k: &str| v[k].as_f64().map_or("-".into(), |x| format!("{x:.0}"));
    let text = format!(
        "--repair-rate {rate}: killed {victim} ({keys} keys), {} of its users signing every {} ms\n  \
         time to sign again after the kill (ms): median {}, p99 {}, max {} over {} users ({never} never); \
         {errors} failed requests of {}; {} in flight at the kill\n  \
         repair: first move {:.2} s after the kill, all {keys} moved {:.2} s after it: {} users/s \
         (over {window:.2} s); sign latency meanwhile p50 {} ms, p99 {} ms\n",
        on_victim.len(),
        args.sign_interval_ms,
        f(&again_stats, "median_ms"),
        f(&again_stats, "p99_ms"),
        f(&again_stats, "max_ms"),
        again_stats["count"],
        outcomes.len(),
        in_flight.len(),
        (first_drop - killed_at).as_secs_f64(),
        (zero - killed_at).as_secs_f64(),
        repair_rate.map_or("-".into(), |r| format!("{r:.0}")),
        f(&during_stats, "median_ms"),
        f(&during_stats, "p99_ms"),
    );
    eprint!("bench fleet: {text}");
    Ok(KillRound {
        rate,
        victim,
        keys,
        json,
        text,
    })
}

fn coordinator_flags(args: &FleetBenchArgs, rate: u32) -> Vec<String> {
    vec![
        "--chip-down-after".into(),
        args.down_after.to_string(),
        "--repair-rate".into(),
        rate.to_string(),
    ]
}

/// The kill rounds' cluster (see the module doc).
async fn kill_rounds(
    args: &FleetBenchArgs,
    dir: PathBuf,
) -> anyhow::Result<(serde_json::Value, String)> {
    let mut fleet = Fleet::new(&dir)?;
    let chips: Vec<ChipSpec> = (1..=args.chips)
        .map(|i| ChipSpec {
            id: format!("chip-{i}"),
            zone: format!("zone-{}", i % 3 + 1),
            capacity: 1_000_000,
        })
        .collect();
    fleet.start_chips(&chips)?;
    fleet
        .start_coordinators(
            args.coordinators,
            &coordinator_flags(args, args.repair_rates[0]),
        )
        .await?;
    let business = fleet.business()?;
    let (users, took) = enrol(&business, "fleet", args.users, args.enroll_concurrency).await?;
    let enrol_rate = users.len() as f64 / took.as_secs_f64();
    eprintln!(
        "bench fleet: {} users enrolled in {took:.1?} ({enrol_rate:.0}/s)",
        users.len()
    );
    let mut signers = BTreeMap::new();
    let mut dead = Vec::new();
    let mut rounds = Vec::new();
    for (i, &rate) in args.repair_rates.iter().enumerate() {
        if i > 0 {
            fleet.restart_coordinators(&coordinator_flags(args, rate))?;
        }
        rounds.push(kill_round(&mut fleet, args, rate, &users, &mut signers, &mut dead).await?);
    }
    let json = json!({
        "chips": args.chips,
        "coordinators": args.coordinators,
        "users": users.len(),
        "enrolments_per_second": enrol_rate,
        "down_after_s": args.down_after,
        "rounds": rounds.iter().map(|r| r.json.clone()).collect::<Vec<_>>(),
    });
    let mut text = format!(
        "kill rounds: {} chips, {} coordinators, {} users (enrolled at {enrol_rate:.0}/s), chips down after {} s\n",
        args.chips,
        args.coordinators,
        users.len(),
        args.down_after
    );
    for r in &rounds {
        debug_assert!(r.rate > 0 && !r.victim.is_empty() && r.keys > 0);
        text.push_str(&r.text);
    }
    Ok((json, text))
}

/// The drain's cluster (see the module doc).
async fn drain(args: &FleetBenchArgs, dir: PathBuf) -> anyhow::Result<(serde_json::Value, String)> {
    let mut fleet = Fleet::new(&dir)?;
    let mut chips = vec![ChipSpec {
        id: "chip-1".into(),
        zone: "zone-0".into(),
        capacity: 10_000_000,
    }];
    chips.extend((2..=args.chips).map(|i| ChipSpec {
        id: format!("chip-{i}"),
        zone: format!("zone-{}", i % 2 + 1),
        capacity: 1_000_000,
    }));
    fleet.start_chips(&chips)?;
    fleet
        .start_coordinators(
            args.coordinators,
            &coordinator_flags(args, args.drain_repair_rate),
        )
        .await?;
    let business = fleet.business()?;
    let operator = fleet.operator()?;
    let (users, took) = enrol(&business, "drain", args.drain_keys, args.enroll_concurrency).await?;
    let enrol_rate = users.len() as f64 / took.as_secs_f64();
    let keys = keys_on(&operator, "chip-1").await?;
    eprintln!(
        "bench fleet: {} users enrolled in {took:.1?} ({enrol_rate:.0}/s); chip-1 holds {keys} keys; draining it",
        users.len()
    );
    drop(users);
    let started = Instant::now();
    operator
        .call(|ch| async move {
            cluster_client(ch)
                .drain_chip(pb::DrainChipRequest {
                    chip_id: "chip-1".into(),
                    cancel: false,
                })
                .await
        })
        .await?;
    let end = started + Duration::from_secs(args.drain_timeout);
    let mut first_move = None;
    let mut last_report = Instant::now();
    let done = loop {
        let left = keys_on(&operator, "chip-1").await?;
        let now = Instant::now();
        if left < keys && first_move.is_none() {
            first_move = Some(now);
        }
        if left == 0 {
            break now;
        }
        if now > end {
            bail!(
                "chip-1 still holds {left} keys {} s after the drain began",
                args.drain_timeout
            );
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            last_report = now;
            eprintln!(
                "bench fleet: draining: {left} keys left after {:.0} s",
                (now - started).as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let wall = (done - started).as_secs_f64();
    let removed = operator
        .call(|ch| async move {
            cluster_client(ch)
                .remove_chip(pb::RemoveChipRequest {
                    chip_id: "chip-1".into(),
                })
                .await
        })
        .await
        .is_ok();
    let rate = keys as f64 / wall;
    let json = json!({
        "chips": args.chips,
        "coordinators": args.coordinators,
        "users": args.drain_keys,
        "enrolments_per_second": enrol_rate,
        "enrolment_s": took.as_secs_f64(),
        "drained_chip_keys": keys,
        "repair_rate_setting": args.drain_repair_rate,
        "drain_wall_s": wall,
        "drain_first_move_s": first_move.map(|t| (t - started).as_secs_f64()),
        "drain_keys_per_second": rate,
        "removed_after": removed,
    });
    let text = format!(
        "drain: {} chips, {} coordinators; chip-1 held {keys} keys ({} users enrolled at {enrol_rate:.0}/s in {:.0} s)\n  \
         --repair-rate {}: drained in {wall:.1} s ({rate:.0} keys/s); RemoveChip after it: {}\n",
        args.chips,
        args.coordinators,
        args.drain_keys,
        took.as_secs_f64(),
        args.drain_repair_rate,
        if removed { "accepted" } else { "REFUSED" }
    );
    eprint!("bench fleet: {text}");
    Ok((json, text))
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
        kill_rounds(args, dir.join("kill")).await?
    } else {
        (serde_json::Value::Null, String::new())
    };
    let (drain_json, drain_text) = if args.drain_keys > 0 {
        drain(args, dir.join("drain")).await?
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
