//! etcd-bench: the etcd side of `scripts/bench-coordinators.sh`, measured the way
//! `yunkey bench cluster` measures a yunkey coordinator cluster.
//!
//! - Puts per second (one Put = one Raft write, acknowledged after commit and apply) at each
//!   concurrency level: that many puts in flight, each worker looping on one HTTP/2
//!   connection, the workers spread round-robin over every member (a follower forwards the
//!   proposal to the leader). No retries; failures are counted. p50/p99 from an HDR histogram.
//! - Failover: writers loop Put (each starts at another member, moves to the next on any error
//!   or after a 2 s timeout); the leader (maintenance Status) is killed with `--kill-cmd`;
//!   the figure is the time from the kill command returning (the member is dead) to the
//!   acknowledgement of the first put *sent* after it. `--restart-cmd` starts it again before
//!   the next round.
//!
//! `{id}` in the commands is the 1-based position of the leader in `--endpoints`.

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use etcd_client::{Certificate, Client, ConnectOptions, Identity, KvClient, TlsOptions};
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(about = "Puts/s, latency and leader failover of an etcd cluster")]
struct Args {
    /// Client URLs of every member, comma-separated, in member order (`{id}` = position).
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// Concurrency levels (puts in flight).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Seconds per level.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// HTTP/2 connections opened to each member.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Bytes of each put's value.
    #[arg(long, default_value_t = 32)]
    value_size: usize,
    /// Only the failover rounds.
    #[arg(long)]
    failover_only: bool,
    /// Leader kills to time (0 skips failover).
    #[arg(long, default_value_t = 3)]
    failover_rounds: usize,
    /// Shell command that kill -9s member `{id}` and returns once it is dead.
    #[arg(long)]
    kill_cmd: Option<String>,
    /// Shell command that starts member `{id}` again on its data (in the background).
    #[arg(long)]
    restart_cmd: Option<String>,
    /// Writers looping Put during a failover round.
    #[arg(long, default_value_t = 4)]
    failover_writers: usize,
    /// CA certificate (PEM) for https endpoints.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const FAILOVER_CALL_TIMEOUT: Duration = Duration::from_secs(2);

fn options(args: &Args) -> anyhow::Result<ConnectOptions> {
    let mut opts = ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
    if let Some(ca) = &args.ca {
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(
            std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?,
        ));
        if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
            tls = tls.identity(Identity::from_pem(
                std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?,
                std::fs::read(key).with_context(|| format!("reading {}", key.display()))?,
            ));
        }
        opts = opts.with_tls(tls);
    }
    Ok(opts)
}

/// A client with its own connection to one member.
async fn client(args: &Args, endpoint: &str) -> anyhow::Result<Client> {
    Client::connect([endpoint], Some(options(args)?))
        .await
        .with_context(|| format!("connecting to {endpoint}"))
}

struct Level {
    concurrency: usize,
    ok: u64,
    errors: u64,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    first_error: Option<String>,
}

async fn run_level(
    kvs: &[KvClient],
    concurrency: usize,
    window: Duration,
    value: &[u8],
) -> anyhow::Result<Level> {
    let hist = Arc::new(Mutex::new(hdrhistogram::Histogram::<u64>::new(3)?));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let mut kv = kvs[w % kvs.len()].clone();
            let (hist, stop, ok, errors, first_error) = (
                hist.clone(),
                stop.clone(),
                ok.clone(),
                errors.clone(),
                first_error.clone(),
            );
            let value = value.to_vec();
            let key = format!("bench/c{concurrency}/w{w}");
            tokio::spawn(async move {
                let mut local = hdrhistogram::Histogram::<u64>::new(3).expect("valid bounds");
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = tokio::time::timeout(
                        CALL_TIMEOUT,
                        kv.put(key.clone(), value.clone(), None),
                    )
                    .await
                    .map_err(|_| "timed out".to_owned())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                    match r {
                        Ok(_) => {
                            local.record(t.elapsed().as_micros() as u64).ok();
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            first_error.lock().expect("poisoned").get_or_insert(e);
                        }
                    }
                }
                hist.lock().expect("poisoned").add(&local).ok();
            })
        })
        .collect();
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let hist = hist.lock().expect("poisoned");
    let ok = ok.load(Ordering::Relaxed);
    let first_error = first_error.lock().expect("poisoned").clone();
    Ok(Level {
        concurrency,
        ok,
        errors: errors.load(Ordering::Relaxed),
        rate: ok as f64 / elapsed,
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        first_error,
    })
}

fn shell(cmd: &str, id: usize) -> anyhow::Result<()> {
    let cmd = cmd.replace("{id}", &id.to_string());
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .stdin(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Waits until a put through every member is acknowledged.
async fn wait_healthy(args: &Args, timeout: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + timeout;
    for ep in &args.endpoints {
        loop {
            let attempt = async {
                let mut c = client(args, ep).await?;
                tokio::time::timeout(Duration::from_secs(2), c.put("bench/health", "ok", None))
                    .await
                    .map_err(|_| anyhow!("timed out"))??;
                Ok::<_, anyhow::Error>(())
            }
            .await;
            match attempt {
                Ok(()) => break,
                Err(e) if Instant::now() > end => {
                    bail!("{ep} did not acknowledge a put within {timeout:?}: {e:#}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    Ok(())
}

/// The leader's 1-based position in `--endpoints`.
async fn leader(args: &Args) -> anyhow::Result<usize> {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let mut ids = Vec::new();
        let mut leader_id = 0;
        for ep in &args.endpoints {
            let status = async {
                let mut c = client(args, ep).await?;
                let s = tokio::time::timeout(Duration::from_secs(2), c.status())
                    .await
                    .map_err(|_| anyhow!("timed out"))??;
                Ok::<_, anyhow::Error>(s)
            }
            .await;
            match status {
                Ok(s) => {
                    ids.push(s.header().map(|h| h.member_id()).unwrap_or(0));
                    if s.leader() != 0 {
                        leader_id = s.leader();
                    }
                }
                Err(_) => ids.push(0),
            }
        }
        if let Some(pos) = ids.iter().position(|id| *id != 0 && *id == leader_id) {
            return Ok(pos + 1);
        }
        if Instant::now() > end {
            bail!("no leader among the endpoints within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Round {
    killed: usize,
    resume_ms: Option<f64>,
    acked_before: usize,
    acked_after: usize,
    kill_ms: f64,
}

async fn failover_round(
    args: &Args,
    kill: &str,
    restart: &str,
    value: &[u8],
) -> anyhow::Result<Round> {
    wait_healthy(args, Duration::from_secs(90)).await?;
    let acks: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..args.failover_writers.max(1) {
        let mut kvs = Vec::new();
        for ep in &args.endpoints {
            kvs.push(client(args, ep).await?.kv_client());
        }
        let (acks, stop, value) = (acks.clone(), stop.clone(), value.to_vec());
        writers.push(tokio::spawn(async move {
            let mut at = w;
            let key = format!("bench/failover/w{w}");
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let mut kv = kvs[at % kvs.len()].clone();
                let r = tokio::time::timeout(
                    FAILOVER_CALL_TIMEOUT,
                    kv.put(key.clone(), value.clone(), None),
                )
                .await;
                match r {
                    Ok(Ok(_)) => acks.lock().expect("poisoned").push((sent, Instant::now())),
                    _ => {
                        at += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let victim = leader(args).await?;
    // The clock starts once the kill command has returned, i.e. the process is gone: a write
    // sent while the command was still starting up could still reach the old leader.
    let kill_started = Instant::now();
    shell(kill, victim)?;
    let killed_at = Instant::now();
    let kill_ms = (killed_at - kill_started).as_secs_f64() * 1000.0;
    let deadline = killed_at + Duration::from_secs(20);
    let resume = loop {
        let first = acks
            .lock()
            .expect("poisoned")
            .iter()
            .filter(|(sent, _)| *sent > killed_at)
            .map(|(_, acked)| *acked)
            .min();
        if let Some(acked) = first {
            break Some(acked - killed_at);
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
    }
    let acks = acks.lock().expect("poisoned");
    let acked_before = acks.iter().filter(|(_, a)| *a <= killed_at).count();
    let acked_after = acks.len() - acked_before;
    drop(acks);
    shell(restart, victim)?;
    Ok(Round {
        killed: victim,
        resume_ms: resume.map(|d| d.as_secs_f64() * 1000.0),
        acked_before,
        acked_after,
        kill_ms,
    })
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        bail!("--concurrency must list positive numbers");
    }
    if args.failover_rounds > 0 && (args.kill_cmd.is_none() || args.restart_cmd.is_none()) {
        bail!("failover rounds need --kill-cmd and --restart-cmd (or pass --failover-rounds 0)");
    }
    wait_healthy(&args, Duration::from_secs(60)).await?;
    let value = vec![b'v'; args.value_size];
    let mut kvs = Vec::new();
    for _ in 0..args.connections.max(1) {
        for ep in &args.endpoints {
            kvs.push(client(&args, ep).await?.kv_client());
        }
    }
    let window = Duration::from_secs(args.seconds);
    let mut levels = Vec::new();
    if !args.failover_only {
        for &c in &args.concurrency {
            let l = run_level(&kvs, c, window, &value).await?;
            eprintln!(
                "etcd-bench: put c={c}: {:.0}/s p50 {:.2} ms p99 {:.2} ms, {} errors",
                l.rate, l.p50_ms, l.p99_ms, l.errors
            );
            levels.push(l);
        }
    }
    let mut rounds = Vec::new();
    if let (Some(kill), Some(restart)) = (&args.kill_cmd, &args.restart_cmd) {
        for r in 0..args.failover_rounds {
            let round = failover_round(&args, kill, restart, &value).await?;
            eprintln!(
                "etcd-bench: failover round {}: member {} killed, first put sent after the kill acknowledged after {}",
                r + 1,
                round.killed,
                round
                    .resume_ms
                    .map(|m| format!("{m:.0} ms"))
                    .unwrap_or_else(|| "never (20 s)".into())
            );
            rounds.push(round);
        }
        wait_healthy(&args, Duration::from_secs(90)).await?;
    }
    let mut resumed: Vec<f64> = rounds.iter().filter_map(|r| r.resume_ms).collect();
    let median_ms = median(&mut resumed);
    if args.json {
        let out = json!({
            "endpoints": args.endpoints,
            "seconds_per_level": args.seconds,
            "connections": kvs.len(),
            "value_size": args.value_size,
            "levels": { "put": levels.iter().map(|l| json!({
                "concurrency": l.concurrency, "ok": l.ok, "errors": l.errors,
                "per_second": l.rate, "p50_ms": l.p50_ms, "p99_ms": l.p99_ms,
                "first_error": l.first_error,
            })).collect::<Vec<_>>() },
            "failover": {
                "writers": args.failover_writers,
                "rounds": rounds.iter().map(|r| json!({
                    "killed_member": r.killed, "resume_ms": r.resume_ms,
                    "acked_before_kill": r.acked_before, "acked_after_kill": r.acked_after,
                    "kill_command_ms": r.kill_ms,
                })).collect::<Vec<_>>(),
                "median_resume_ms": median_ms,
            },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("concurrency        puts/s   p50 ms   p99 ms  errors");
        for l in &levels {
            println!(
                "{:>11}  {:>12.0}  {:>7.2}  {:>7.2}  {:>6}",
                l.concurrency, l.rate, l.p50_ms, l.p99_ms, l.errors
            );
        }
        for r in &rounds {
            println!(
                "member {} killed: {}",
                r.killed,
                r.resume_ms
                    .map(|m| format!("{m:.0} ms"))
                    .unwrap_or_else(|| "no put within 20 s".into())
            );
        }
        if let Some(m) = median_ms {
            println!("median: {m:.0} ms");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("etcd-bench: error: {e:#}");
        std::process::exit(1);
    }
}
