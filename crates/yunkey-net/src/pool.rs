//! One gRPC channel per endpoint. A tonic `Channel` multiplexes calls over HTTP/2 and
//! reconnects by itself, so it is created once and cloned for every call.

use crate::tls::TlsMaterial;
use crate::{NetError, MAX_MESSAGE_BYTES};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How long a new connection (TCP and TLS) may take before a call on it fails, unless a
/// pool is given another with [`ChannelPool::with_connect_timeout`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Caches a channel per endpoint URL, all with the same TLS material.
#[derive(Clone, Debug)]
pub struct ChannelPool {
    tls: TlsMaterial,
    domain: Option<String>,
    connect_timeout: Duration,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl ChannelPool {
    /// A pool whose channels use `tls`. `domain` overrides the server name checked in the
    /// server's certificate (default: the endpoint's host).
    pub fn new(tls: TlsMaterial, domain: Option<String>) -> Self {
        Self {
            tls,
            domain,
            connect_timeout: CONNECT_TIMEOUT,
            channels: Arc::default(),
        }
    }

    /// The same pool, whose new channels give up connecting after `timeout` instead of
    /// [`CONNECT_TIMEOUT`] (for probes that must report a dead endpoint quickly).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The channel to `endpoint` (`https://host:port`), created lazily on first use.
    pub fn get(&self, endpoint: &str) -> Result<Channel, NetError> {
        let mut channels = self.channels.lock().expect("channel pool poisoned");
        if let Some(ch) = channels.get(endpoint) {
            return Ok(ch.clone());
        }
        let ch = connect_lazy_within(
            endpoint,
            &self.tls,
            self.domain.as_deref(),
            self.connect_timeout,
        )?;
        channels.insert(endpoint.to_owned(), ch.clone());
        Ok(ch)
    }
}

/// A lazily connecting channel to `endpoint` with yunkey's timeouts and keep-alives.
pub fn connect_lazy(
    endpoint: &str,
    tls: &TlsMaterial,
    domain: Option<&str>,
) -> Result<Channel, NetError> {
    connect_lazy_within(endpoint, tls, domain, CONNECT_TIMEOUT)
}

/// [`connect_lazy`] with another connect timeout (TCP and TLS) than [`CONNECT_TIMEOUT`].
pub fn connect_lazy_within(
    endpoint: &str,
    tls: &TlsMaterial,
    domain: Option<&str>,
    connect_timeout: Duration,
) -> Result<Channel, NetError> {
    let bad = |reason: String| NetError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let uri: http_uri::Uri = endpoint.parse().map_err(|e| bad(format!("{e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad(
            "must start with https:// (yunkey always uses TLS)".into()
        ));
    }
    let host = uri
        .host()
        .ok_or_else(|| bad("has no host".into()))?
        .to_owned();
    let domain = domain.map(str::to_owned).unwrap_or(host);
    let ep = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| bad(e.to_string()))?
        .tls_config(tls.client(&domain))
        .map_err(|e| NetError::Tls(e.to_string()))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    let _ = MAX_MESSAGE_BYTES;
    Ok(ep.connect_lazy())
}

mod http_uri {
    pub use tonic::codegen::http::Uri;
}
