//! Channels to a cluster and the retry policy.

use crate::ClientError;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::Code;
use yunkey_net::device_tls::DeviceIdentity;
use yunkey_net::tls::TlsMaterial;
use yunkey_net::MAX_MESSAGE_BYTES;
use yunkey_proto::v1::cluster_service_client::ClusterServiceClient;
use yunkey_proto::v1::key_service_client::KeyServiceClient;
use yunkey_proto::v1::terminal_service_client::TerminalServiceClient;

/// How to reach a cluster.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// `https://host:port` of one or more coordinators.
    pub endpoints: Vec<String>,
    /// Trust root and, for business clients, the client identity.
    pub tls: TlsMaterial,
    /// Server name to check in certificates (default: each endpoint's host).
    pub domain: Option<String>,
    /// How long [`Connection::call`] keeps retrying.
    pub deadline: Duration,
}

/// How a connection's channels are made: yunkey's usual TLS, or the device channel.
#[derive(Debug, Clone)]
enum Transport {
    Tls(TlsMaterial),
    Device(TlsMaterial, DeviceIdentity),
}

impl Transport {
    fn connect(&self, endpoint: &str, domain: Option<&str>) -> Result<Channel, ClientError> {
        Ok(match self {
            Transport::Tls(tls) => yunkey_net::pool::connect_lazy(endpoint, tls, domain)?,
            Transport::Device(tls, identity) => {
                yunkey_net::device_tls::connect_lazy(endpoint, tls, domain, identity)?
            }
        })
    }
}

/// Channels to every endpoint, created once and reused.
#[derive(Debug, Clone)]
pub struct Connection {
    channels: Arc<Vec<(String, Channel)>>,
    /// Channels to leaders named by a hint that are not among `channels`.
    hinted: Arc<Mutex<Vec<(String, Channel)>>>,
    transport: Transport,
    domain: Option<String>,
    next: Arc<AtomicUsize>,
    deadline: Duration,
    /// The release id of the terminal software's manifest, sent with device requests (empty:
    /// none).
    release_id: String,
}

impl Connection {
    /// Channels to every endpoint (connected lazily).
    pub fn new(opts: &ConnectionOptions) -> Result<Self, ClientError> {
        Self::over(opts, Transport::Tls(opts.tls.clone()))
    }

    /// Channels to every endpoint over the device channel: TLS 1.3 with `identity` (the
    /// device certificate, the handshake signed in the keystore) as the client certificate.
    pub fn device(opts: &ConnectionOptions, identity: DeviceIdentity) -> Result<Self, ClientError> {
        Self::over(opts, Transport::Device(opts.tls.clone(), identity))
    }

    fn over(opts: &ConnectionOptions, transport: Transport) -> Result<Self, ClientError> {
        if opts.endpoints.is_empty() {
            return Err(ClientError::Invalid("no endpoint given".into()));
        }
        let channels = opts
            .endpoints
            .iter()
            .map(|e| Ok((e.clone(), transport.connect(e, opts.domain.as_deref())?)))
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok(Self {
            channels: Arc::new(channels),
            hinted: Arc::default(),
            transport,
            domain: opts.domain.clone(),
            next: Arc::default(),
            deadline: opts.deadline,
            release_id: String::new(),
        })
    }

    /// The same connection, sending `release_id` (the terminal software's manifest, checked
    /// by [`crate::release`]) with `RegisterDevice` and `SignTransaction`.
    pub fn with_release_id(mut self, release_id: impl Into<String>) -> Self {
        self.release_id = release_id.into();
        self
    }

    /// The release id sent with device requests (empty: none).
    pub fn release_id(&self) -> &str {
        &self.release_id
    }

    /// The channel to the leader a refusal names in its `x-yunkey-leader` metadata, if it
    /// names one (an `https://` URL). Reuses a channel to a known endpoint.
    fn hinted_channel(&self, status: &tonic::Status) -> Option<(String, Channel)> {
        let hint = status
            .metadata()
            .get(yunkey_net::LEADER_HINT_METADATA)?
            .to_str()
            .ok()?
            .trim()
            .to_owned();
        if !hint.starts_with("https://") {
            return None;
        }
        if let Some(known) = self.channels.iter().find(|(e, _)| *e == hint) {
            return Some(known.clone());
        }
        let mut hinted = self.hinted.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = hinted.iter().find(|(e, _)| *e == hint) {
            return Some(known.clone());
        }
        let channel = self.transport.connect(&hint, self.domain.as_deref()).ok()?;
        hinted.push((hint.clone(), channel.clone()));
        Some((hint, channel))
    }

    fn channel(&self, attempt: usize) -> &(String, Channel) {
        let base = self.next.load(Ordering::Relaxed);
        &self.channels[(base + attempt) % self.channels.len()]
    }

    /// A `KeyService` client on the current endpoint.
    pub fn key(&self) -> KeyServiceClient<Channel> {
        key_client(self.channel(0).1.clone())
    }

    /// A `TerminalService` client on the current endpoint.
    pub fn terminal(&self) -> TerminalServiceClient<Channel> {
        terminal_client(self.channel(0).1.clone())
    }

    /// A `ClusterService` client on the current endpoint.
    pub fn cluster(&self) -> ClusterServiceClient<Channel> {
        cluster_client(self.channel(0).1.clone())
    }

    /// Runs `call` on a channel, retrying UNAVAILABLE (and connection failures) with
    /// exponential backoff on the next endpoint until the deadline. A refusal that names the
    /// leader (`x-yunkey-leader` metadata: a request only the leader serves, such as a
    /// membership change) is retried there next, with the same certificate and trust root.
    /// The request itself, including its `request_id`, must be the same on every attempt.
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let end = Instant::now() + self.deadline;
        let mut backoff = Duration::from_millis(50);
        let mut attempt = 0;
        let mut redirect: Option<(String, Channel)> = None;
        // Followed leader hints; a few at most without a pause (stale views can disagree).
        let mut hops = 0;
        loop {
            let (endpoint, channel) = redirect
                .take()
                .unwrap_or_else(|| self.channel(attempt).clone());
            match call(channel).await {
                Ok(resp) => {
                    if attempt > 0 {
                        self.next.fetch_add(attempt, Ordering::Relaxed);
                    }
                    return Ok(resp.into_inner());
                }
                Err(status) if retryable(&status) && Instant::now() + backoff < end => {
                    redirect = self
                        .hinted_channel(&status)
                        .filter(|(hint, _)| *hint != endpoint && hops < 3);
                    hops += usize::from(redirect.is_some());
                    tracing::debug!(%endpoint, code = ?status.code(), leader = ?redirect.as_ref().map(|r| &r.0), "retrying");
                    if redirect.is_none() {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(250));
                        attempt += 1;
                    }
                }
                Err(status) => return Err(status.into()),
            }
        }
    }
}

/// UNAVAILABLE, and UNKNOWN, which is what a stream cut by a dying server looks like. Both
/// are safe to retry because every yunkey write is deduplicated by its request id. A status
/// with a typed reason is an answer, not a failure to reach the cluster: a risk service that
/// gave no answer (`Reason::RiskUnavailable`) was already waited for by the coordinator.
fn retryable(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Unknown)
        && yunkey_net::reason::Reason::of(status).is_none()
}

/// A `KeyService` client with yunkey's message limits (requests may carry a face photo).
pub fn key_client(ch: Channel) -> KeyServiceClient<Channel> {
    KeyServiceClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(yunkey_net::MAX_IMAGE_MESSAGE_BYTES)
}

/// A `TerminalService` client with yunkey's message limits (a step-up's request carries a
/// face photo).
pub fn terminal_client(ch: Channel) -> TerminalServiceClient<Channel> {
    TerminalServiceClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(yunkey_net::MAX_IMAGE_MESSAGE_BYTES)
}

/// A `ClusterService` client with yunkey's message limits.
pub fn cluster_client(ch: Channel) -> ClusterServiceClient<Channel> {
    ClusterServiceClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

impl Connection {
    /// The current endpoint's channel, for callers that manage their own retries (the
    /// benchmark).
    pub fn current_channel(&self) -> Channel {
        self.channel(0).1.clone()
    }
}
