//! `yunkey chip`: one soft chip as its own process, serving ChipService over TLS with the
//! node identity. The operator admits it with the domain operator key (`yunkey pki
//! admit-chip` on its `identity.json`); coordinators then add it with
//! `yunkey coordinator --chip URL` (or AdmitChip).

use crate::cli::{ChipArgs, Global};
use crate::serve::{install_metrics, node_tls, serve_chip, serve_plain_health, shutdown_signal};
use anyhow::Context;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use yunkey_chip::ChipConfig;

/// `yunkey chip`.
pub async fn run(g: &Global, args: &ChipArgs) -> anyhow::Result<()> {
    let tls = node_tls(&args.tls_dir)?;
    let metrics = install_metrics(&args.metrics)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let config = ChipConfig {
        chip_id: args.id.clone(),
        capacity: args.capacity,
        zone: args.zone.clone(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let admission = args
        .admission
        .clone()
        .unwrap_or_else(|| g.data.join(crate::admission::ADMISSION_FILE));
    let (endpoint, task) =
        serve_chip(&g.data, &admission, config, &tls, listener, stop_rx.clone()).await?;
    println!(
        "yunkey chip {}: zone {}, capacity {}, data in {}",
        args.id,
        args.zone,
        args.capacity,
        g.data.display()
    );
    if !admission.exists() {
        let identity = g.data.join(crate::admission::IDENTITY_FILE);
        println!(
            "not admitted yet: sign {} with `yunkey pki admit-chip` and put the result at {}",
            identity.display(),
            admission.display()
        );
        // The identity on one line, for hosts where the file is hard to reach (a container
        // without a shell): `yunkey chip ... | grep '^identity: '`.
        let (parsed, _) = crate::admission::read_identity(&identity)?;
        println!("identity: {}", serde_json::to_string(&parsed)?);
    }
    let reporter = tonic_health::server::HealthReporter::new();
    reporter
        .set_service_status(
            "yunkey.v1.ChipService",
            tonic_health::ServingStatus::Serving,
        )
        .await;
    let health = tonic_health::server::HealthService::from_health_reporter(reporter);
    let health = tonic_health::pb::health_server::HealthServer::new(health);
    if let Some(h) = serve_plain_health(&args.health, health, stop_rx.clone()).await? {
        println!("health: {h} (grpc.health.v1, plaintext)");
    }
    if let Some(m) = metrics {
        println!("metrics: http://{m}/metrics");
    }
    println!("endpoint: {endpoint}");
    shutdown_signal().await;
    eprintln!("stopping");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    Ok(())
}
