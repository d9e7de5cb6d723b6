//! `yunkey coordinator`: one coordinator of a multi-node cluster, as its own process.
//!
//! The first node starts with `--init` (a new one-node cluster) and the `--chip` URLs; every
//! other node starts on an empty data directory and waits until the leader adds it
//! (`yunkey ctl add-node`). The data directory belongs to one node id for life: the id is
//! written to `DIR/node-id` on first start and checked on every later one.

use crate::cli::{CoordinatorArgs, NodeId};
use crate::serve::{
    endpoint_of, install_metrics, node_tls, serve_plain_health, shutdown_signal, stopped,
};
use anyhow::{bail, Context};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use yunkey_coordinator::{admin, Core, Node, NodeOptions};

/// File in the data directory that holds the node id.
pub const NODE_ID_FILE: &str = "node-id";
/// The Raft store inside the data directory (as `Node::start` lays it out).
const RAFT_DIR: &str = "raft";

/// Resolves `--node-id`: a fixed id, or for `auto` the id recorded in `data`, else a new
/// random one (from the OS RNG, below 2^53 so that JSON tools keep it exact). A random id on
/// every new data dir is what keeps a node rebuilt on a wiped volume from reusing its old id;
/// the leader also refuses any id used before (`AddNode`).
fn resolve_node_id(data: &Path, arg: NodeId) -> anyhow::Result<u64> {
    match arg {
        NodeId::Fixed(id) => Ok(id),
        NodeId::Auto => match std::fs::read_to_string(data.join(NODE_ID_FILE)) {
            Ok(text) => text
                .trim()
                .parse()
                .with_context(|| format!("{} is not a node id", data.join(NODE_ID_FILE).display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes: [u8; 8] = yunkey_crypto::random_bytes();
                Ok((u64::from_le_bytes(bytes) >> 11).max(1))
            }
            Err(e) => {
                Err(e).with_context(|| format!("reading {}", data.join(NODE_ID_FILE).display()))
            }
        },
    }
}

/// Whether `--bootstrap-file` asks this node to initialize a new cluster: the file exists and
/// its first line is this node's advertised URL.
fn bootstrap_requested(file: &Path, advertise: &str) -> anyhow::Result<bool> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok(text.lines().next().map(str::trim) == Some(advertise)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
    }
}

/// Checks that `data` belongs to `node_id` (or to nobody yet) and records it durably.
fn claim_data_dir(data: &Path, node_id: u64) -> anyhow::Result<()> {
    let path = data.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let owner: u64 = text
                .trim()
                .parse()
                .with_context(|| format!("{} is not a node id", path.display()))?;
            if owner != node_id {
                bail!(
                    "this data dir belongs to node {owner} ({}), not node {node_id}: \
                     start node {owner} on it, or give node {node_id} its own empty directory",
                    data.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if data.join(RAFT_DIR).exists() {
                bail!(
                    "{} holds Raft data but no {NODE_ID_FILE} file: refusing to guess whose it is",
                    data.display()
                );
            }
            crate::serve::write_file_synced(&path, format!("{node_id}\n").as_bytes())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// One pass of the start-up bootstrap. On the leader: admits the `--chip` URLs that are not
/// registered yet and creates the user CA if there is none. Idempotent; run on every start.
/// Returns whether this node can serve: the CA is in its state and it has heard from a chip.
async fn bootstrap_step(core: &Core, chips: &[String]) -> anyhow::Result<bool> {
    let leader = core.raft.raft().metrics().borrow().current_leader;
    if leader == Some(core.node_id) {
        yunkey_coordinator::membership::record_members(core, "bootstrap").await?;
        let registry = core.view.chips()?;
        for url in chips {
            if !registry.iter().any(|c| &c.endpoint == url) {
                admin::admit_chip(core, "bootstrap", url).await?;
            }
        }
        if core.view.ca()?.is_none() && !core.view.chips()?.is_empty() {
            admin::ensure_ca(core, "bootstrap").await?;
        }
    }
    let chip_up = core
        .view
        .chips()?
        .iter()
        .any(|c| core.chips.routable(&c.chip_id));
    Ok(core.view.ca()?.is_some() && chip_up)
}

/// `MIN-MAX` milliseconds, MIN above the heartbeat and below MAX.
fn parse_range(text: &str) -> anyhow::Result<(u64, u64)> {
    let parsed = text
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)));
    match parsed {
        Some((min, max)) if min > 100 && min < max => Ok((min, max)),
        _ => bail!(
            "--election-timeout {text:?}: expected MIN-MAX in milliseconds with 100 < MIN < MAX \
             (the heartbeat is 100 ms), for example 300-500"
        ),
    }
}

/// `yunkey coordinator`.
pub async fn run(args: &CoordinatorArgs) -> anyhow::Result<()> {
    let data = &args.data;
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let node_id = resolve_node_id(data, args.node_id)?;
    let fresh = !data.join(RAFT_DIR).exists();
    if args.init && !fresh {
        bail!(
            "--init is only valid on an empty data dir; {} already holds a node's Raft data: \
             start it without --init",
            data.display()
        );
    }
    claim_data_dir(data, node_id)?;
    let tls = node_tls(&args.tls_dir)?;
    let metrics = install_metrics(&args.metrics)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let advertise = match &args.advertise {
        Some(a) => a.clone(),
        None => endpoint_of(&listener)?,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let init = args.init
        || match &args.bootstrap_file {
            Some(file) => fresh && bootstrap_requested(file, &advertise)?,
            None => false,
        };
    let mut opts = NodeOptions::new(node_id, data.clone(), advertise.clone(), tls, args.replicas);
    anyhow::ensure!(
        args.chip_down_after >= 1,
        "--chip-down-after must be at least 1 second (heartbeats run every 250 ms)"
    );
    anyhow::ensure!(
        args.repair_rate >= 1,
        "--repair-rate must be at least 1 user per second"
    );
    anyhow::ensure!(
        args.sweep_every >= 1,
        "--sweep-every must be at least 1 second"
    );
    opts.chips.down_after = std::time::Duration::from_secs(args.chip_down_after);
    opts.config.repair.rate = args.repair_rate;
    opts.config.unauthenticated_rate = args.unauthenticated_rate.0;
    args.devices.apply(&mut opts.config);
    args.risk.apply(&mut opts.config, &opts.tls)?;
    args.domain.apply(&mut opts.config);
    args.prune.apply(&mut opts.config);
    args.chip_calls.apply(&mut opts.chips);
    opts.config.repair.sweep_every = std::time::Duration::from_secs(args.sweep_every);
    opts.config.repair.rebalance = args
        .rebalance_tolerance
        .0
        .map(yunkey_coordinator::rebalance::Tolerance::percent);
    if let Some(range) = &args.election_timeout {
        let (min, max) = parse_range(range)?;
        opts.raft.election_timeout_min = min;
        opts.raft.election_timeout_max = max;
    }
    let (node, server) = Node::start(opts, listener, stopped(stop_rx.clone())).await?;
    let core = node.core.clone();
    let health = serve_plain_health(&args.health, node.health_service(), stop_rx.clone()).await?;
    let initialized = core
        .raft
        .raft()
        .is_initialized()
        .await
        .map_err(|e| anyhow::anyhow!("reading the Raft state: {e}"))?;
    if init {
        core.raft.initialize_single(node_id, &advertise).await?;
        println!("node {node_id}: initialized a new one-node cluster");
    } else if !initialized {
        println!(
            "node {node_id}: not a member of any cluster yet; waiting to be added by the leader as a learner \
             (yunkey ctl add-node --node-id {node_id} --address {advertise})"
        );
    }
    if let Some(m) = metrics {
        println!("metrics: http://{m}/metrics");
    }
    if let Some(h) = health {
        println!("health: {h} (grpc.health.v1, plaintext)");
    }
    println!("endpoint: {advertise}");

    let boot = {
        let (node, core, chips) = (node.clone(), core.clone(), Arc::new(args.chips.clone()));
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut last_error = String::new();
            loop {
                match bootstrap_step(&core, &chips).await {
                    Ok(true) => {
                        node.set_ready().await;
                        println!("ready: node {} can serve", core.node_id);
                        return;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        let e = e.to_string();
                        if e != last_error {
                            tracing::warn!(error = %e, "bootstrap step failed; retrying");
                            last_error = e;
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        })
    };

    shutdown_signal().await;
    eprintln!("stopping");
    let _ = stop_tx.send(true);
    boot.abort();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let _ = core.raft.raft().shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_node_id_is_new_on_an_empty_dir_and_kept_after() {
        let dir = tempfile::tempdir().unwrap();
        let a = resolve_node_id(dir.path(), NodeId::Auto).unwrap();
        let b = resolve_node_id(dir.path(), NodeId::Auto).unwrap();
        assert!((1..1 << 53).contains(&a) && b >= 1);
        assert_ne!(a, b, "two empty dirs must not get the same id");
        claim_data_dir(dir.path(), a).unwrap();
        assert_eq!(resolve_node_id(dir.path(), NodeId::Auto).unwrap(), a);
        assert_eq!(resolve_node_id(dir.path(), NodeId::Fixed(7)).unwrap(), 7);
        assert!(claim_data_dir(dir.path(), 7).is_err());
    }

    #[test]
    fn bootstrap_file_names_the_node_that_initializes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("init");
        let me = "https://coord-0.yunkey:7443";
        assert!(!bootstrap_requested(&file, me).unwrap());
        std::fs::write(&file, format!("{me}\n")).unwrap();
        assert!(bootstrap_requested(&file, me).unwrap());
        assert!(!bootstrap_requested(&file, "https://coord-1.yunkey:7443").unwrap());
    }
}
