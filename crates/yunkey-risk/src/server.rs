//! The risk service process: opens its data directory, loads the rules, and serves
//! RiskService over TLS behind the access table, with the rules watcher and the pruner
//! beside it, until told to stop.
//!
//! Data directory: `store/` (sled: counters, counted transactions, authentication results,
//! sealed templates), `endpoint` (the `https://host:port` it serves, written once ready) and,
//! unless `--template-key` says otherwise, `template.key`.

use crate::assess::Assessor;
use crate::clock::{Clock, SystemClock};
use crate::embed::{Embedder, GrpcEmbedder};
use crate::error::RiskError;
use crate::faces::Faces;
use crate::reload::{RulesHandle, RulesWatcher};
use crate::rules::Rules;
use crate::service::RiskGrpc;
use crate::store::RiskStore;
use crate::template::TemplateKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use yunkey_net::tls::TlsMaterial;
use yunkey_net::AccessLayer;

/// Name of the endpoint file in the data directory.
pub const ENDPOINT_FILE: &str = "endpoint";
/// Name of the store directory in the data directory.
pub const STORE_DIR: &str = "store";
/// Default template key file in the data directory.
pub const TEMPLATE_KEY_FILE: &str = "template.key";
/// How often the rules file is looked at.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);
/// How often expired records are pruned.
pub const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// The biometric unit to call.
#[derive(Debug, Clone)]
pub struct FaceUnit {
    /// `https://host:port`.
    pub endpoint: String,
    /// Deadline of each Embed call.
    pub timeout: Duration,
}

/// What `yunkey risk serve` is given.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The rules file.
    pub rules: PathBuf,
    /// The data directory.
    pub data: PathBuf,
    /// The risk identity (role `risk`) and the CA that callers' certificates chain to.
    pub tls: TlsMaterial,
    /// The biometric unit, if any.
    pub face: Option<FaceUnit>,
    /// The template key file [default: DATA/template.key], created if missing.
    pub template_key: Option<PathBuf>,
    /// How often the rules file is looked at.
    pub watch_every: Duration,
}

impl ServeConfig {
    /// A configuration with the defaults for everything optional.
    pub fn new(rules: PathBuf, data: PathBuf, tls: TlsMaterial) -> Self {
        Self {
            rules,
            data,
            tls,
            face: None,
            template_key: None,
            watch_every: WATCH_EVERY,
        }
    }
}

/// A running risk service.
#[derive(Debug)]
pub struct Running {
    /// `https://host:port`.
    pub endpoint: String,
    /// The rules in force.
    pub rules: RulesHandle,
    /// Ends when the server has stopped.
    pub task: JoinHandle<Result<(), RiskError>>,
}

/// `https://host:port` of a bound listener (an unspecified address becomes 127.0.0.1).
pub fn endpoint_of(listener: &TcpListener) -> Result<String, RiskError> {
    let local = listener
        .local_addr()
        .map_err(|e| RiskError::Internal(format!("listener address: {e}")))?;
    let host = if local.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        local.ip().to_string()
    };
    Ok(format!("https://{host}:{}", local.port()))
}

fn internal(what: &str, e: impl std::fmt::Display) -> RiskError {
    RiskError::Internal(format!("{what}: {e}"))
}

/// Starts serving on `listener` until `stop` says so. Returns once the service is ready
/// (and `DATA/endpoint` is written).
pub async fn serve(
    config: ServeConfig,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
) -> Result<Running, RiskError> {
    serve_with(config, listener, stop, Arc::new(SystemClock), None).await
}

/// [`serve`] with another clock, and optionally another embedder than the gRPC client of
/// `config.face` (tests).
pub async fn serve_with(
    config: ServeConfig,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
    clock: Arc<dyn Clock>,
    embedder: Option<Arc<dyn Embedder>>,
) -> Result<Running, RiskError> {
    let rules = Rules::load(&config.rules)?;
    tracing::info!(
        path = %config.rules.display(),
        version = %rules.version,
        rules = rules.all().count(),
        "risk rules loaded"
    );
    let handle = RulesHandle::new(rules);
    std::fs::create_dir_all(&config.data)
        .map_err(|e| internal(&format!("creating {}", config.data.display()), e))?;
    let store_dir = config.data.join(STORE_DIR);
    let store = tokio::task::spawn_blocking(move || RiskStore::open(&store_dir))
        .await
        .map_err(|e| internal("opening the store", e))??;
    let key_path = config
        .template_key
        .clone()
        .unwrap_or_else(|| config.data.join(TEMPLATE_KEY_FILE));
    let key = open_template_key(&key_path)?;
    let embedder = match (embedder, &config.face) {
        (Some(e), _) => Some(e),
        (None, Some(unit)) => Some(Arc::new(GrpcEmbedder::new(
            &unit.endpoint,
            &config.tls,
            unit.timeout,
        )?) as Arc<dyn Embedder>),
        (None, None) => {
            tracing::warn!(
                "no --face: EnrollFace and AuthenticateUser are refused (FAILED_PRECONDITION)"
            );
            None
        }
    };
    let assessor = Arc::new(Assessor::new(store.clone(), handle.clone(), clock.clone()));
    let faces = Arc::new(Faces::new(
        store.clone(),
        key,
        embedder,
        handle.clone(),
        clock.clone(),
    ));
    let router = Server::builder()
        .tls_config(config.tls.server().map_err(|e| internal("TLS", e))?)
        .map_err(|e| internal("TLS", e))?
        // Every call is checked against the access table (RiskService: role node).
        .layer(AccessLayer)
        .add_service(RiskGrpc::new(assessor, faces).into_server());

    tokio::spawn(
        RulesWatcher::new(&config.rules, handle.clone()).run(config.watch_every, stop.clone()),
    );
    tokio::spawn(prune_loop(store, clock, stop.clone()));

    let endpoint = endpoint_of(&listener)?;
    let endpoint_file = config.data.join(ENDPOINT_FILE);
    let text = format!("{endpoint}\n");
    tokio::task::spawn_blocking(move || {
        yunkey_store::write_file_atomic(&endpoint_file, text.as_bytes(), 0o644)
            .map_err(|e| internal(&format!("writing {}", endpoint_file.display()), e))
    })
    .await
    .map_err(|e| internal("writing the endpoint file", e))??;

    let mut stop_rx = stop;
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(yunkey_net::incoming(listener), async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .await
            .map_err(|e| internal("risk server", e))
    });
    Ok(Running {
        endpoint,
        rules: handle,
        task,
    })
}

fn open_template_key(path: &Path) -> Result<TemplateKey, RiskError> {
    let (key, created) = TemplateKey::read_or_create(path).map_err(RiskError::TemplateKey)?;
    if created {
        tracing::warn!(
            path = %path.display(),
            "created a new face-template key; back it up apart from the data directory (without it, templates cannot be read)"
        );
    }
    Ok(key)
}

async fn prune_loop(store: RiskStore, clock: Arc<dyn Clock>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let s = store.clone();
        let now = clock.now();
        match tokio::task::spawn_blocking(move || s.prune(now)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::debug!(records = n, "pruned expired risk records"),
            Ok(Err(e)) => tracing::warn!(error = %e, "pruning expired risk records failed"),
            Err(e) => tracing::warn!(error = %e, "pruning task failed"),
        }
    }
}
