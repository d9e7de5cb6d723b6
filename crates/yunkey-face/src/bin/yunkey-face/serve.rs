//! `yunkey-face serve`.

use anyhow::Context;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tonic::transport::Server;
use yunkey_face::{FaceGrpc, Recognizer};
use yunkey_net::pki::files;
use yunkey_net::{AccessLayer, TlsFiles};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port; the endpoint line says which).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Directory with the TLS identity of role `risk`: `ca.pem`, `risk.pem`, `risk-key.pem`.
    #[arg(long)]
    tls_dir: PathBuf,
    /// Directory with the dlib models (scripts/face-models.sh DIR).
    #[arg(long)]
    models: PathBuf,
    /// Also write `https://host:port` to this file when ready.
    #[arg(long)]
    endpoint_file: Option<PathBuf>,
    /// Embeddings computed at once (each on its own core); default: the number of cores.
    #[arg(long)]
    workers: Option<usize>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    yunkey_net::install_crypto_provider();
    let recognizer = Recognizer::open(&args.models)?;
    let tls = TlsFiles {
        ca: args.tls_dir.join(files::CA),
        cert: Some(args.tls_dir.join(files::RISK)),
        key: Some(args.tls_dir.join(files::RISK_KEY)),
    }
    .load()
    .with_context(|| {
        format!(
            "loading the TLS identity of role risk from {}",
            args.tls_dir.display()
        )
    })?;
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let service = FaceGrpc::new(Arc::new(recognizer), workers);

    // Listen for the stop signals before saying we are ready.
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let host = if local.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        local.ip().to_string()
    };
    let endpoint = format!("https://{host}:{}", local.port());
    let router = Server::builder()
        .tls_config(tls.server()?)?
        // Every call is checked against the access table (FaceService.Embed: role risk).
        .layer(AccessLayer)
        .add_service(service.into_server());
    let server = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(yunkey_net::incoming(listener), stop)
            .await
    });

    if let Some(file) = &args.endpoint_file {
        write_endpoint(file, &endpoint)?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "endpoint: {endpoint}")?;
    out.flush()?;
    drop(out);

    server
        .await
        .context("the server task failed")?
        .context("the face server failed")?;
    eprintln!("yunkey-face: stopped");
    Ok(())
}

/// Writes the endpoint file whole (a reader never sees half a line).
fn write_endpoint(path: &Path, endpoint: &str) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{endpoint}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing the endpoint file {}", path.display()))
}
