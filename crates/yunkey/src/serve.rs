//! Pieces shared by the long-running processes (`yunkey dev`, `yunkey chip`,
//! `yunkey coordinator`): serving a soft chip, the metrics endpoint, stop signals, and small
//! file helpers.

use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use yunkey_chip::{ChipBackend, ChipConfig, ChipGrpc, SoftChip};
use yunkey_crypto::cipher::Cipher;
use yunkey_net::pki::files;
use yunkey_net::tls::TlsMaterial;
use yunkey_net::{AccessLayer, TlsFiles};

/// Resolves once `rx` says stop.
pub async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// `https://host:port` for a bound listener (an unspecified address becomes 127.0.0.1).
pub fn endpoint_of(listener: &TcpListener) -> anyhow::Result<String> {
    let local = listener.local_addr()?;
    let host = if local.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        local.ip().to_string()
    };
    Ok(format!("https://{host}:{}", local.port()))
}

/// Opens the soft chip in `dir` (sealing with `seal_cipher`, see
/// [`SoftChip::open_with_seal_cipher`]) and serves its ChipService over TLS on `listener` until
/// `stop` says so. Writes the chip's public `identity.json` for the operator and reports the
/// `admission` file the operator provides ([`crate::admission`]). Returns its endpoint
/// and the server task.
pub async fn serve_chip(
    dir: &Path,
    admission: &Path,
    config: ChipConfig,
    seal_cipher: Option<Cipher>,
    tls: &TlsMaterial,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(String, JoinHandle<()>)> {
    let id = config.chip_id.clone();
    let chip = SoftChip::open_with_seal_cipher(dir, config, seal_cipher)
        .with_context(|| format!("opening soft chip {id} in {}", dir.display()))?;
    serve_opened_chip(dir, admission, Arc::new(chip), id, tls, listener, stop)
}

/// Serves the ChipService of an opened chip of any backend, whose directory is `dir`, as
/// [`serve_chip`] does for a soft chip.
pub fn serve_opened_chip(
    dir: &Path,
    admission: &Path,
    chip: Arc<dyn ChipBackend>,
    id: String,
    tls: &TlsMaterial,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(String, JoinHandle<()>)> {
    let info = chip.info()?;
    crate::admission::write_identity(dir, &id, &info.transport_public_key)?;
    let endpoint = endpoint_of(&listener)?;
    let service = ChipGrpc::new(chip).with_admission(crate::admission::source(admission));
    let router = Server::builder()
        .tls_config(tls.server()?)?
        // Every call is checked against the access table (every ChipService RPC: role node).
        .layer(AccessLayer)
        .add_service(service.into_server());
    let task = tokio::spawn(async move {
        let incoming = yunkey_net::incoming(listener);
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, stopped(stop))
            .await
        {
            tracing::error!(chip = %id, error = %e, "chip server failed");
        }
    });
    Ok((endpoint, task))
}

/// The node identity (certificate `node.pem`, key `node-key.pem`, trust root `ca.pem`) from a
/// PKI directory laid out like `DevPki`'s.
pub fn node_tls(dir: &Path) -> anyhow::Result<TlsMaterial> {
    TlsFiles {
        ca: dir.join(files::CA),
        cert: Some(dir.join(files::NODE)),
        key: Some(dir.join(files::NODE_KEY)),
    }
    .load()
    .with_context(|| format!("loading the node TLS identity from {}", dir.display()))
}

/// Writes `path` atomically and durably: the file and its directory are fsynced.
pub fn write_file_synced(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    yunkey_store::write_file_atomic(path, contents, 0o644)
        .with_context(|| format!("writing {}", path.display()))
}

/// Starts the Prometheus endpoint on `addr`, unless it is `off`.
pub fn install_metrics(addr: &str) -> anyhow::Result<Option<SocketAddr>> {
    if addr == "off" {
        return Ok(None);
    }
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("--metrics {addr:?} is not HOST:PORT or off"))?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .with_context(|| format!("starting the metrics endpoint on {addr}"))?;
    Ok(Some(addr))
}

/// The plaintext `grpc.health.v1` service that `--health` serves.
pub type PlainHealth =
    tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>;

/// Serves `health` without TLS on `addr` (the `--health` flag), unless it is `off`, until
/// `stop` says so. For probes that cannot present a client certificate (the kubelet's gRPC
/// probe); it answers nothing but serving statuses.
pub async fn serve_plain_health(
    addr: &str,
    health: PlainHealth,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<SocketAddr>> {
    if addr == "off" {
        return Ok(None);
    }
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("--health {addr:?} is not HOST:PORT or off"))?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--health)"))?;
    let bound = listener.local_addr()?;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(async move {
        if let Err(e) = Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(incoming, stopped(stop))
            .await
        {
            tracing::error!(error = %e, "health endpoint failed");
        }
    });
    Ok(Some(bound))
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
