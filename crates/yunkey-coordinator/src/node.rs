//! Starting a coordinator: its store, Raft, chip heartbeats, and the gRPC server that serves
//! the public API, the internal Raft service, health and reflection on one TLS port.

use crate::chips::{Chips, ChipsConfig};
use crate::core::{CoordinatorConfig, Core};
use crate::error::{CoordError, Result};
use crate::service::{ClusterApi, KeyApi, TerminalApi};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tonic::transport::Server;
use yunkey_net::tls::TlsMaterial;
use yunkey_net::{AccessLayer, ChannelPool, MAX_MESSAGE_BYTES};
use yunkey_proto::v1::cluster_service_server::ClusterServiceServer;
use yunkey_proto::v1::key_service_server::KeyServiceServer;
use yunkey_proto::v1::raft_service_server::RaftServiceServer;
use yunkey_proto::v1::terminal_service_server::TerminalServiceServer;
use yunkey_store::Db;

/// How to run one coordinator.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Raft node id; never reused for another node.
    pub node_id: u64,
    /// Where its store lives.
    pub data_dir: PathBuf,
    /// `https://host:port` other nodes and clients reach it at.
    pub advertise: String,
    /// TLS with the node identity.
    pub tls: TlsMaterial,
    /// Tunables.
    pub config: CoordinatorConfig,
    /// Chip health thresholds.
    pub chips: ChipsConfig,
    /// Raft timing.
    pub raft: openraft::Config,
}

impl NodeOptions {
    /// Options with the default chip thresholds, Raft timing and tunables, except `replicas`.
    pub fn new(
        node_id: u64,
        data_dir: PathBuf,
        advertise: String,
        tls: TlsMaterial,
        replicas: usize,
    ) -> Self {
        Self {
            node_id,
            data_dir,
            advertise,
            tls,
            config: CoordinatorConfig {
                replicas,
                ..Default::default()
            },
            chips: ChipsConfig::default(),
            raft: crate::raft::raft_config(),
        }
    }
}

/// A running coordinator.
#[derive(Clone)]
pub struct Node {
    /// Its core, for in-process bootstrap steps.
    pub core: Arc<Core>,
    health: tonic_health::server::HealthReporter,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.core.node_id)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Opens the store and Raft, starts chip heartbeats, and serves gRPC on `listener` until
    /// `shutdown` resolves. Returns the node and the server task.
    pub async fn start(
        opts: NodeOptions,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(Node, tokio::task::JoinHandle<Result<()>>)> {
        std::fs::create_dir_all(&opts.data_dir).map_err(|e| {
            CoordError::Internal(format!("cannot create {}: {e}", opts.data_dir.display()))
        })?;
        let db = Db::open_sled(opts.data_dir.join("raft"))?;
        let pool = ChannelPool::new(opts.tls.clone(), None);
        let raft_pool = pool.clone();
        let connect: yunkey_raft::Connector = Arc::new(move |node: &openraft::BasicNode| {
            raft_pool.get(&node.addr).map_err(|e| e.to_string())
        });
        let audit_dir = opts.data_dir.join("audit");
        let audit_log = crate::audit_log::AuditLog::open(&audit_dir)
            .map_err(|e| CoordError::Internal(format!("cannot open the audit log: {e}")))?;
        let opened = crate::raft::open(
            opts.node_id,
            opts.data_dir.join("raft-log"),
            db,
            crate::state::App::with_audit_log(Arc::new(audit_log)),
            opts.data_dir.join("snapshots"),
            connect,
            opts.raft.clone(),
            opts.config.write_timeout,
        )
        .await?;
        let chips = Chips::new(pool, opts.chips.clone());
        let core = Arc::new(Core::new(
            opts.node_id,
            opened.handle,
            opened.view.clone(),
            chips.clone(),
            opts.config.clone(),
        )?);
        match &opts.config.risk {
            Some(risk) => {
                tracing::info!(endpoint = %risk.endpoint, fail_open = risk.fail_open, timeout = ?risk.timeout, "risk service: asked before every signature")
            }
            None => {
                tracing::warn!("no risk service (--risk-endpoint): signatures are not risk-checked")
            }
        }
        tokio::spawn(chips.heartbeat_loop(opened.view));
        tokio::spawn(crate::raft::export_metrics(core.raft.clone()));
        tokio::spawn(crate::repair::run(core.clone()));
        tokio::spawn(crate::batch::watch_members(core.clone()));
        tokio::spawn(crate::prune::run(core.clone()));

        // One TLS 1.3 port for every caller: roles from the cluster CA, devices from the user
        // CA once the cluster has one.
        let (cert_pem, key_pem) = opts.tls.identity_pem().ok_or_else(|| {
            CoordError::Internal("a coordinator needs a TLS certificate and key".into())
        })?;
        let view = core.view.clone();
        let sm2_view = core.view.clone();
        let roots = Arc::new(
            yunkey_net::server_tls::ClientRoots::new(
                opts.tls.ca_pem(),
                Box::new(move || view.ca().ok().flatten().map(|ca| ca.certificate)),
                Box::new(move || {
                    sm2_view
                        .ca_of(yunkey_crypto::sig::Algorithm::Sm2)
                        .ok()
                        .flatten()
                        .map(|ca| ca.certificate)
                }),
            )
            .map_err(|e| CoordError::Internal(e.to_string()))?,
        );
        let tls = Arc::new(
            yunkey_net::server_tls::server_config(cert_pem, key_pem, roots.clone())
                .map_err(|e| CoordError::Internal(e.to_string()))?,
        );
        let (health, health_service) = tonic_health::server::health_reporter();
        // The public services report SERVING only once the node can enrol and sign
        // (`set_ready`); membership (ClusterService) works before, so that a new node can be
        // added.
        health.set_not_serving::<KeyServiceServer<KeyApi>>().await;
        health
            .set_not_serving::<TerminalServiceServer<TerminalApi>>()
            .await;
        health
            .set_serving::<ClusterServiceServer<ClusterApi>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(yunkey_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| CoordError::Internal(format!("reflection: {e}")))?;
        // Internal Raft traffic: only peers holding a node certificate (the access table).
        let raft_service = RaftServiceServer::new(opened.server)
            .max_decoding_message_size(crate::raft::RAFT_MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::raft::RAFT_MAX_MESSAGE_BYTES);

        let terminal = TerminalApi::new(core.clone());
        tokio::spawn(crate::service::refusal_log::flush_loop(
            terminal.refusal_log(),
        ));
        let router = Server::builder()
            // Every call is checked against the access table before it is decoded.
            .layer(AccessLayer)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(
                // Sign and EnrollFace may carry a photo.
                KeyServiceServer::new(KeyApi::new(core.clone()))
                    .max_decoding_message_size(yunkey_net::MAX_IMAGE_MESSAGE_BYTES),
            )
            .add_service(
                // SignTransaction may carry a photo (a step-up's face evidence).
                TerminalServiceServer::new(terminal)
                    .max_decoding_message_size(yunkey_net::MAX_IMAGE_MESSAGE_BYTES),
            )
            .add_service(
                ClusterServiceServer::new(ClusterApi::new(core.clone()))
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(raft_service);
        let incoming = yunkey_net::server_tls::incoming(listener, tls);
        let task = tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
                .map_err(|e| CoordError::Internal(format!("gRPC server: {e}")))
        });
        Ok((Node { core, health }, task))
    }

    /// The same `grpc.health.v1` statuses as on the TLS port, as a service to serve without
    /// TLS (for probes that cannot present a certificate, such as the kubelet's). It tells
    /// only which services are SERVING.
    pub fn health_service(
        &self,
    ) -> tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService> {
        tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(self.health.clone()),
        )
    }

    /// Reports the public services as SERVING on `grpc.health.v1` (call once the cluster
    /// can enrol and sign).
    pub async fn set_ready(&self) {
        self.health.set_serving::<KeyServiceServer<KeyApi>>().await;
        self.health
            .set_serving::<TerminalServiceServer<TerminalApi>>()
            .await;
    }
}
