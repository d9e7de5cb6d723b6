//! `yunkey bench cluster`: a coordinator cluster's own figures, for comparison with other
//! replicated stores (`scripts/bench-coordinators.sh` runs it beside etcd).
//!
//! 1. Enrolments per second: `KeyService.EnrollUser` with a new user id each time.
//! 2. Committed Raft writes per second: `ClusterService.WriteProbe`, one no-op entry that is
//!    acknowledged only once it is committed on a majority and applied on the serving node.
//!
//! Both at each concurrency level: that many requests in flight, each worker looping on one
//! HTTP/2 connection, the workers spread round-robin over every member (a follower forwards
//! writes to the leader, as it does for real clients). No client retries: a failed call is
//! counted as an error.
//!
//! 3. Failover: writers loop `WriteProbe` (each starts at another member, moves to the next
//!    one on any error); the leader is killed with `--kill-cmd`; the figure is the time from
//!    the kill command returning (the process is dead) to the acknowledgement of the first
//!    write *sent* after it. The node is restarted with `--restart-cmd` and has caught up
//!    before the next round.

use crate::cli::{ClusterBenchArgs, Global};
use crate::connect;
use crate::load::{self, Level};
use crate::output::print;
use anyhow::{bail, Context};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use yunkey_client::{cluster_client, key_client};
use yunkey_proto::v1::{EnrollUserRequest, StatusRequest, WriteProbeRequest};

/// A member of the cluster.
#[derive(Debug, Clone)]
struct Member {
    node_id: u64,
    address: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Enroll,
    Write,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Enroll => "enroll",
            Op::Write => "raft_write",
        }
    }
}

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const FAILOVER_CALL_TIMEOUT: Duration = Duration::from_secs(2);

fn with_timeout<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(timeout);
    req
}

/// A new HTTP/2 connection (lazily connected) to one member, with the business identity.
fn channel(g: &Global, address: &str) -> anyhow::Result<Channel> {
    Ok(connect::business_to(g, address, Duration::from_secs(5))?.current_channel())
}

/// The members, as the first reachable endpoint reports them.
async fn members(g: &Global) -> anyhow::Result<Vec<Member>> {
    let conn = connect::business(g)?;
    let s = conn
        .call(|ch| async move { cluster_client(ch).status(StatusRequest {}).await })
        .await
        .context("asking the cluster for its members")?;
    if s.nodes.is_empty() {
        bail!("the cluster reports no members (is it initialized?)");
    }
    Ok(s.nodes
        .iter()
        .map(|n| Member {
            node_id: n.node_id,
            address: n.address.clone(),
        })
        .collect())
}

/// One level of `op`: worker `w` loops on `chans[w % len]`, each enrolment with a new user id.
async fn run_level(
    chans: &[Channel],
    op: Op,
    concurrency: usize,
    window: Duration,
    tag: &str,
) -> anyhow::Result<Level> {
    load::run_level(concurrency, window, |w| {
        let ch = chans[w % chans.len()].clone();
        let prefix = format!("bench-{tag}-c{concurrency}-w{w}");
        move |i| {
            let (mut key, mut cluster) = (key_client(ch.clone()), cluster_client(ch.clone()));
            let user_id = format!("{prefix}-{i}");
            async move {
                match op {
                    Op::Enroll => {
                        let req = EnrollUserRequest {
                            request_id: String::new(),
                            user_id,
                            algorithm: 0,
                            distinguishing_id: String::new(),
                            display_name: String::new(),
                        };
                        key.enroll_user(with_timeout(req, CALL_TIMEOUT))
                            .await
                            .map(|_| 1)
                    }
                    Op::Write => cluster
                        .write_probe(with_timeout(WriteProbeRequest {}, CALL_TIMEOUT))
                        .await
                        .map(|_| 1),
                }
            }
        }
    })
    .await
}

fn shell(cmd: &str, id: u64) -> anyhow::Result<()> {
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

/// Waits until a write through every member is acknowledged (a restarted node has then
/// caught up: it answers only once it has applied the write itself).
async fn wait_healthy(g: &Global, members: &[Member], timeout: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + timeout;
    for m in members {
        let ch = channel(g, &m.address)?;
        loop {
            let r = cluster_client(ch.clone())
                .write_probe(with_timeout(WriteProbeRequest {}, Duration::from_secs(2)))
                .await;
            match r {
                Ok(_) => break,
                Err(e) if Instant::now() > end => bail!(
                    "node {} at {} did not acknowledge a write within {timeout:?}: {:?}: {}",
                    m.node_id,
                    m.address,
                    e.code(),
                    e.message()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    Ok(())
}

async fn leader(g: &Global, members: &[Member]) -> anyhow::Result<Member> {
    let pool = connect::probe_pool(g, yunkey_net::Role::Client)?;
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        for m in members {
            if let Ok(s) = connect::status_at(&pool, &m.address).await {
                if let Some(l) = members.iter().find(|m| m.node_id == s.leader_id) {
                    return Ok(l.clone());
                }
            }
        }
        if Instant::now() > end {
            bail!("no leader known to any member within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Round {
    killed: u64,
    resume_ms: Option<f64>,
    acked_before: usize,
    acked_after: usize,
    kill_ms: f64,
}

async fn failover_round(
    g: &Global,
    members: &[Member],
    args: &ClusterBenchArgs,
    kill: &str,
    restart: &str,
) -> anyhow::Result<Round> {
    wait_healthy(g, members, Duration::from_secs(90)).await?;
    // Writers: each holds one new connection per member, starting at another member.
    let acks: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..args.failover_writers.max(1) {
        let chans = members
            .iter()
            .map(|m| channel(g, &m.address))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (acks, stop) = (acks.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut at = w;
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let r = cluster_client(chans[at % chans.len()].clone())
                    .write_probe(with_timeout(WriteProbeRequest {}, FAILOVER_CALL_TIMEOUT))
                    .await;
                match r {
                    Ok(_) => acks.lock().expect("poisoned").push((sent, Instant::now())),
                    Err(_) => {
                        at += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let victim = leader(g, members).await?;
    // The clock starts once the kill command has returned, i.e. the process is gone: a write
    // sent while the command was still starting up could still reach the old leader.
    let kill_started = Instant::now();
    shell(kill, victim.node_id)?;
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
    shell(restart, victim.node_id)?;
    Ok(Round {
        killed: victim.node_id,
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

/// `yunkey bench cluster`.
pub async fn run(g: &Global, args: &ClusterBenchArgs) -> anyhow::Result<()> {
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        bail!("--concurrency must list positive numbers");
    }
    if args.failover_rounds > 0 && (args.kill_cmd.is_none() || args.restart_cmd.is_none()) {
        bail!("failover rounds need --kill-cmd and --restart-cmd (or pass --failover-rounds 0)");
    }
    let members = members(g).await?;
    wait_healthy(g, &members, Duration::from_secs(60)).await?;
    // Connections interleaved by member: worker w uses chans[w % len], so every level
    // spreads its workers evenly over the members.
    let mut chans = Vec::new();
    for _ in 0..args.connections.max(1) {
        for m in &members {
            chans.push(channel(g, &m.address)?);
        }
    }
    let tag = hex::encode(yunkey_crypto::random_bytes::<4>());
    let window = Duration::from_secs(args.seconds);
    let mut ops = vec![Op::Write];
    if !args.no_enroll {
        ops.insert(0, Op::Enroll);
    }
    let mut results: Vec<(Op, Vec<Level>)> = Vec::new();
    for op in ops {
        let mut levels = Vec::new();
        for &c in &args.concurrency {
            let level = run_level(&chans, op, c, window, &tag).await?;
            eprintln!(
                "bench: {} c={c}: {:.0}/s p50 {:.2} ms p99 {:.2} ms, {} errors",
                op.name(),
                level.rate,
                level.p50_ms,
                level.p99_ms,
                level.errors
            );
            levels.push(level);
        }
        results.push((op, levels));
    }

    let mut rounds = Vec::new();
    if let (Some(kill), Some(restart)) = (&args.kill_cmd, &args.restart_cmd) {
        for r in 0..args.failover_rounds {
            let round = failover_round(g, &members, args, kill, restart).await?;
            eprintln!(
                "bench: failover round {}: leader {} killed, first write sent after the kill acknowledged after {}",
                r + 1,
                round.killed,
                round
                    .resume_ms
                    .map(|m| format!("{m:.0} ms"))
                    .unwrap_or_else(|| "never (20 s)".into())
            );
            rounds.push(round);
        }
        wait_healthy(g, &members, Duration::from_secs(90)).await?;
    }
    let mut resumed: Vec<f64> = rounds.iter().filter_map(|r| r.resume_ms).collect();
    let median_ms = median(&mut resumed);

    print(
        g.json,
        json!({
            "members": members.iter().map(|m| json!({"node_id": m.node_id, "address": m.address})).collect::<Vec<_>>(),
            "seconds_per_level": args.seconds,
            "connections": chans.len(),
            "levels": results.iter().map(|(op, levels)| (op.name().to_owned(), serde_json::Value::Array(levels.iter().map(|l| l.json("per_second")).collect()))).collect::<serde_json::Map<_, _>>(),
            "failover": {
                "writers": args.failover_writers,
                "rounds": rounds.iter().map(|r| json!({
                    "killed_node": r.killed, "resume_ms": r.resume_ms,
                    "acked_before_kill": r.acked_before, "acked_after_kill": r.acked_after,
                    "kill_command_ms": r.kill_ms,
                })).collect::<Vec<_>>(),
                "median_resume_ms": median_ms,
            },
        }),
        || {
            let mut out = format!(
                "{} members, {} connections, {} s per level\n\nop          concurrency        ops/s   p50 ms   p99 ms  errors\n",
                members.len(),
                chans.len(),
                args.seconds
            );
            for (op, levels) in &results {
                for l in levels {
                    out.push_str(&format!(
                        "{:<10}  {:>11}  {:>11.0}  {:>7.2}  {:>7.2}  {:>6}\n",
                        op.name(),
                        l.concurrency,
                        l.rate,
                        l.p50_ms,
                        l.p99_ms,
                        l.errors
                    ));
                }
            }
            if !rounds.is_empty() {
                out.push_str("\nleader kill -9 -> first acknowledged write sent after it:\n");
                for r in &rounds {
                    out.push_str(&format!(
                        "  node {} killed: {}\n",
                        r.killed,
                        r.resume_ms
                            .map(|m| format!("{m:.0} ms"))
                            .unwrap_or_else(|| "no write within 20 s".into())
                    ));
                }
                if let Some(m) = median_ms {
                    out.push_str(&format!("  median: {m:.0} ms\n"));
                }
            }
            out.trim_end().to_owned()
        },
    );
    Ok(())
}
