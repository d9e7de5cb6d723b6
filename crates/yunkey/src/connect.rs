//! Finding the cluster: `--endpoint`/`--ca`/`--cert`/`--key` (or their environment
//! variables), else the dev cluster's files in `--data`.
//!
//! Two identities live in a dev data directory: the business client's (`client.pem`, for
//! `user`, `bench`) and the operator's (`operator.pem`, for `ctl` and `status`). `--cert` and
//! `--key` replace whichever one the command uses.

use crate::cli::Global;
use anyhow::{anyhow, Context};
use std::path::PathBuf;
use std::time::Duration;
use yunkey_client::{Connection, ConnectionOptions};
use yunkey_net::{pki::files, Role, TlsFiles};

/// Name of the file in which `yunkey dev` writes its endpoint.
pub const ENDPOINT_FILE: &str = "endpoint";
/// Name of the file in which `yunkey dev` writes the user CA certificate.
pub const USER_CA_FILE: &str = "user-ca.pem";

fn endpoints(g: &Global) -> anyhow::Result<Vec<String>> {
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

/// Connection as a device (server-authenticated TLS only).
pub fn device(g: &Global) -> anyhow::Result<Connection> {
    connect(g, None)
}

/// Connection as a business client to one given endpoint (one node of the cluster).
pub fn business_to(g: &Global, endpoint: &str, deadline: Duration) -> anyhow::Result<Connection> {
    let id = identity(g, Role::Client);
    connect_to(g, vec![endpoint.to_owned()], Some(id), deadline)
}

/// Connection as an operator to one given endpoint (one node of the cluster).
pub fn operator_to(g: &Global, endpoint: &str, deadline: Duration) -> anyhow::Result<Connection> {
    let id = identity(g, Role::Operator);
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
    let ca = g.ca.clone().unwrap_or_else(|| g.data.join(files::CA));
    let (cert, key) = match identity {
        Some((c, k)) => (Some(c), Some(k)),
        None => (None, None),
    };
    let tls = TlsFiles { ca, cert, key }
        .load()
        .context("loading TLS files (pass --ca/--cert/--key, or --data of a dev cluster)")?;
    Ok(Connection::new(&ConnectionOptions {
        endpoints,
        tls,
        domain: None,
        deadline,
    })?)
}
