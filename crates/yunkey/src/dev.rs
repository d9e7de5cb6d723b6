//! `yunkey dev`: a whole cluster in one process. Every part is the real one, talking over
//! real TLS sockets: three soft chips serving ChipService on loopback ports, and one
//! coordinator (Raft on sled) serving the public API. Data lives in `--data`; starting again
//! on the same directory keeps every user.
//!
//! Like the dev TLS CA, the dev cluster's domain operator key (`domain-operator-key.pem`, which
//! admits chips to the security domain) is kept in the data directory, and `yunkey dev` admits its own
//! chips with it. That is for development only: in production the operator key stays offline
//! (docs/operations.md, "Admitting chips").

use crate::admission;
use crate::cli::DevArgs;
use crate::connect::{ENDPOINT_FILE, USER_CA_FILE};
use crate::output::cert_pem;
use crate::serve::{install_metrics, serve_chip, shutdown_signal, stopped, write_file_synced};
use anyhow::Context;
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use yunkey_chip::ChipConfig;
use yunkey_coordinator::{admin, Node, NodeOptions};
use yunkey_crypto::cipher::Cipher;
use yunkey_crypto::ecdsa::PrivateKey;
use yunkey_net::pki::DevPki;
use yunkey_net::tls::TlsMaterial;
use yunkey_net::Role;

/// The dev cluster's domain operator key, in the data directory.
pub const OPERATOR_KEY_FILE: &str = "domain-operator-key.pem";

/// Serves one soft chip on a loopback port, sealing with `seal_cipher` (see
/// `SoftChip::open_with_seal_cipher`), admitted by `operator`; returns its endpoint.
async fn start_chip(
    dir: &Path,
    config: ChipConfig,
    seal_cipher: Option<Cipher>,
    tls: &TlsMaterial,
    operator: &PrivateKey,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let (endpoint, _task) = serve_chip(
        dir,
        &dir.join(crate::admission::ADMISSION_FILE),
        config,
        seal_cipher,
        tls,
        listener,
        stop,
    )
    .await?;
    let (identity, transport) = admission::read_identity(&dir.join(admission::IDENTITY_FILE))?;
    let signed = admission::sign(operator, &identity.chip_id, &transport)?;
    admission::write_admission(&dir.join(admission::ADMISSION_FILE), &signed)?;
    Ok(endpoint)
}

/// `yunkey dev`.
pub async fn run(args: &DevArgs) -> anyhow::Result<()> {
    let data = &args.data;
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let _ = std::fs::remove_file(data.join(ENDPOINT_FILE));
    let pki = DevPki::ensure(data)?;
    let tls = pki.tls_files(Role::Node).load()?;
    let operator = admission::ensure_operator_key(&data.join(OPERATOR_KEY_FILE))?;
    let metrics = install_metrics(&args.metrics)?;
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut chip_endpoints = Vec::new();
    for i in 1..=args.chips {
        let config = ChipConfig {
            chip_id: format!("chip-{i}"),
            capacity: args.chip_capacity,
            zone: format!("zone-{}", (i - 1) % 3 + 1),
        };
        let dir = data.join("chips").join(&config.chip_id);
        // The chips seal with the domain's cipher when one is asked for.
        let seal = args.domain.domain_cipher;
        chip_endpoints
            .push(start_chip(&dir, config, seal, &tls, &operator, stop_rx.clone()).await?);
    }

    let listener = TcpListener::bind(args.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (choose another with --listen)",
            args.listen
        )
    })?;
    let local = listener.local_addr()?;
    let host = if local.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        local.ip().to_string()
    };
    let advertise = format!("https://{host}:{}", local.port());
    let mut opts = NodeOptions::new(
        1,
        data.join("coordinator"),
        advertise.clone(),
        tls,
        args.replicas,
    );
    args.devices.apply(&mut opts.config);
    args.risk.apply(&mut opts.config, &opts.tls)?;
    args.domain.apply(&mut opts.config);
    args.prune.apply(&mut opts.config);
    args.chip_calls.apply(&mut opts.chips);
    let (node, server) = Node::start(opts, listener, stopped(stop_rx.clone())).await?;
    let core = node.core.clone();
    core.raft.initialize_single(1, &advertise).await?;
    core.raft.wait_leader(Duration::from_secs(15)).await?;
    for endpoint in &chip_endpoints {
        let chip = admin::admit_chip(&core, "dev", endpoint).await?;
        // Ready means able to enrol and sign: wait for the chip's first heartbeat.
        if !core
            .chips
            .wait_up(&chip.chip_id, Duration::from_secs(10))
            .await
        {
            anyhow::bail!(
                "chip {} did not answer its heartbeat within 10 s",
                chip.chip_id
            );
        }
    }
    let ca = admin::ensure_ca(&core, "dev").await?;
    write_file_synced(
        &data.join(USER_CA_FILE),
        cert_pem(&ca.certificate).as_bytes(),
    )?;
    node.set_ready().await;
    write_file_synced(
        &data.join(ENDPOINT_FILE),
        format!("{advertise}\n").as_bytes(),
    )?;

    let users = core.view.user_count()?;
    println!(
        "yunkey dev: 1 coordinator, {} chips, {users} users, data in {}",
        args.chips,
        data.display()
    );
    if let Some(m) = metrics {
        println!("metrics: http://{m}/metrics");
    }
    println!("endpoint: {advertise}");

    shutdown_signal().await;
    eprintln!("stopping");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let _ = core.raft.raft().shutdown().await;
    let _ = std::fs::remove_file(data.join(ENDPOINT_FILE));
    Ok(())
}
