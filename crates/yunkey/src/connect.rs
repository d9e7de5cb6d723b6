//! Finding the cluster: `--endpoint`/`--ca`/`--cert`/`--key` (or their environment
//! variables), else the dev cluster's files in `--data`.
//!
//! Commands that need one node's own answer (`ctl status`, `bench cluster`) probe it once
//! with [`status_at`], with short timeouts, instead of retrying.
//!
//! Two identities live in a dev data directory: the business client's (`client.pem`, for
//! `user`, `bench`) and the operator's (`operator.pem`, for `ctl` and `status`). `--cert` and
//! `--key` replace whichever one the command uses.

use crate::cli::Global;
use anyhow::{anyhow, Context};
use std::path::PathBuf;
use std::time::Duration;
use yunkey_client::{cluster_client, Connection, ConnectionOptions};
use yunkey_net::pool::ChannelPool;
use yunkey_net::tls::TlsMaterial;
use yunkey_net::{pki::files, Role, TlsFiles};
use yunkey_proto::v1::{StatusRequest, StatusResponse};

/// Name of the file in which `yunkey dev` writes its endpoint.
pub const ENDPOINT_FILE: &str = "endpoint";
/// Name of the file in which `yunkey dev` writes the user CA certificate.
pub const USER_CA_FILE: &str = "user-ca.pem";

/// The endpoints to use: `--endpoint`, else the dev cluster's `DATA/endpoint`.
pub fn endpoints(g: &Global) -> anyhow::Result<Vec<String>> {
    if !g.endpoint.is_empty() {
        return Ok(g.endpoint.clone());
    }
    let path = g.data.join(ENDPOINT_FILE);
    let text = std::fs::read_to_string(&path).map_err(|_| {
        anyhow!(
            "no cluster endpoint: {} does not exist. Start `yunkey dev` (or pass --data DIR of a running one), \
             or give --endpoint https://HOST:PORT with --ca",
            path.display()
        )
    })?;
    Ok(vec![text.trim().to_owned()])
}

/// The identity a command presents: `--cert`/`--key`, else `role`'s files in `--data`.
fn identity(g: &Global, role: Role) -> (PathBuf, PathBuf) {
    let (cert, key) = files::identity(role);
    (
        g.cert.clone().unwrap_or_else(|| g.data.join(cert)),
        g.key.clone().unwrap_or_else(|| g.data.join(key)),
    )
}

/// Connection as a business client (with the client identity).
pub fn business(g: &Global) -> anyhow::Result<Connection> {
    connect(g, Some(identity(g, Role::Client)))
}

/// Connection as an operator (with the operator identity): membership, chips, status.
pub fn operator(g: &Global) -> anyhow::Result<Connection> {
    connect(g, Some(identity(g, Role::Operator)))
}

/// Connection as a device before it has a certificate (server-authenticated TLS only):
/// registration and the clock.
pub fn device(g: &Global) -> anyhow::Result<Connection> {
    connect(g, None)
}

/// Connection over the device channel: TLS 1.3 with the device certificate, the handshake
/// signed by the device key in its keystore.
pub fn device_channel(
    g: &Global,
    identity: yunkey_net::device_tls::DeviceIdentity,
) -> anyhow::Result<Connection> {
    Ok(Connection::device(
        &ConnectionOptions {
            endpoints: endpoints(g)?,
            tls: tls(g, None)?,
            domain: None,
            deadline: Duration::from_secs(g.timeout),
        },
        identity,
    )?)
}

/// Connection as a business client to one given endpoint (one node of the cluster).
pub fn business_to(g: &Global, endpoint: &str, deadline: Duration) -> anyhow::Result<Connection> {
    let id = identity(g, Role::Client);
    connect_to(g, vec![endpoint.to_owned()], Some(id), deadline)
}

fn connect(g: &Global, identity: Option<(PathBuf, PathBuf)>) -> anyhow::Result<Connection> {
    connect_to(g, endpoints(g)?, identity, Duration::from_secs(g.timeout))
}

fn connect_to(
    g: &Global,
    endpoints: Vec<String>,
    identity: Option<(PathBuf, PathBuf)>,
    deadline: Duration,
) -> anyhow::Result<Connection> {
    Ok(Connection::new(&ConnectionOptions {
        endpoints,
        tls: tls(g, identity)?,
        domain: None,
        deadline,
    })?)
}

fn tls(g: &Global, identity: Option<(PathBuf, PathBuf)>) -> anyhow::Result<TlsMaterial> {
    let ca = g.ca.clone().unwrap_or_else(|| g.data.join(files::CA));
    let (cert, key) = match identity {
        Some((c, k)) => (Some(c), Some(k)),
        None => (None, None),
    };
    TlsFiles { ca, cert, key }
        .load()
        .context("loading TLS files (pass --ca/--cert/--key, or --data of a dev cluster)")
}

/// How long a probe waits for a new connection (TCP and TLS) to one node.
pub const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a probe waits for a node's answer, connecting included.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Channels for probes of single nodes, presenting `role`'s identity: a node that is down
/// fails within [`PROBE_CONNECT_TIMEOUT`] (at once when its port is closed), one that
/// accepts but does not answer within [`PROBE_TIMEOUT`].
pub fn probe_pool(g: &Global, role: Role) -> anyhow::Result<ChannelPool> {
    Ok(ChannelPool::new(tls(g, Some(identity(g, role)))?, None)
        .with_connect_timeout(PROBE_CONNECT_TIMEOUT))
}

/// Asks the coordinator at `address` for its own `Status`, once (no retry, no other
/// endpoint). The error says why it did not answer.
pub async fn status_at(pool: &ChannelPool, address: &str) -> Result<StatusResponse, String> {
    let channel = pool.get(address).map_err(|e| e.to_string())?;
    let mut req = tonic::Request::new(StatusRequest {});
    req.set_timeout(PROBE_TIMEOUT);
    match tokio::time::timeout(PROBE_TIMEOUT, cluster_client(channel).status(req)).await {
        Ok(Ok(answer)) => Ok(answer.into_inner()),
        Ok(Err(status)) => Err(why(&status)),
        Err(_) => Err(format!(
            "no answer within {} s",
            PROBE_TIMEOUT.as_secs_f64()
        )),
    }
}

/// A gRPC failure as one line: the code, the message, and the transport errors under it
/// (`UNAVAILABLE: tcp connect error: Connection refused (os error 111)`).
fn why(status: &tonic::Status) -> String {
    let mut out = format!(
        "{}: {}",
        crate::output::status_name(status.code()),
        status.message()
    );
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}
