//! Turning a photograph into a face embedding: the [`Embedder`] seam, and its real
//! implementation, [`GrpcEmbedder`], a client of the biometric unit's `FaceService.Embed`
//! (mutual TLS with the risk identity, a deadline on every call). Tests use a fake.
//!
//! Images pass through; nothing here logs or keeps them.

use crate::error::RiskError;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tonic::transport::Channel;
use yunkey_net::tls::TlsMaterial;
use yunkey_proto::v1::face_service_client::FaceServiceClient;
use yunkey_proto::v1::EmbedRequest;

/// Largest image accepted, in bytes (the biometric unit's limit).
pub const MAX_IMAGE_BYTES: usize = 4 * 1024 * 1024;
/// Longest embedding accepted from a biometric unit.
const MAX_EMBEDDING_LEN: usize = 4096;

/// A face embedding and the model that made it.
#[derive(Clone, PartialEq)]
pub struct Embedding {
    /// The descriptor.
    pub values: Vec<f32>,
    /// The model's name.
    pub model: String,
}

impl std::fmt::Debug for Embedding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedding")
            .field("model", &self.model)
            .field("len", &self.values.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Embedding {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.values);
    }
}

/// What [`Embedder::embed`] returns.
pub type EmbedFuture<'a> = Pin<Box<dyn Future<Output = Result<Embedding, RiskError>> + Send + 'a>>;

/// Makes face embeddings. Errors: [`RiskError::Evidence`] for an image that cannot be used
/// (its message reaches the caller unchanged), [`RiskError::BiometricUnavailable`] or
/// [`RiskError::BiometricTimeout`] when the unit does not answer.
pub trait Embedder: Send + Sync {
    /// The embedding of the one face in `image` (JPEG or PNG).
    fn embed<'a>(&'a self, image: &'a [u8]) -> EmbedFuture<'a>;
}

/// The biometric unit over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcEmbedder {
    endpoint: String,
    channel: Channel,
    timeout: Duration,
}

impl GrpcEmbedder {
    /// A client of the unit at `endpoint` (`https://host:port`), presenting `tls`'s identity
    /// (role `risk`), each call bounded by `timeout`. Connects lazily.
    pub fn new(endpoint: &str, tls: &TlsMaterial, timeout: Duration) -> Result<Self, RiskError> {
        let channel = yunkey_net::pool::connect_lazy(endpoint, tls, None).map_err(|e| {
            RiskError::BiometricUnavailable {
                endpoint: endpoint.to_owned(),
                reason: e.to_string(),
            }
        })?;
        Ok(Self {
            endpoint: endpoint.to_owned(),
            channel,
            timeout,
        })
    }

    async fn call(&self, image: &[u8]) -> Result<Embedding, RiskError> {
        let mut client = FaceServiceClient::new(self.channel.clone())
            .max_encoding_message_size(MAX_IMAGE_BYTES + 64 * 1024)
            .max_decoding_message_size(64 * 1024);
        let mut req = tonic::Request::new(EmbedRequest {
            image: image.to_vec(),
        });
        req.set_timeout(self.timeout);
        let unavailable = |reason: String| RiskError::BiometricUnavailable {
            endpoint: self.endpoint.clone(),
            reason,
        };
        let started = std::time::Instant::now();
        let reply = match tokio::time::timeout(self.timeout, client.embed(req)).await {
            Err(_) => {
                return Err(RiskError::BiometricTimeout {
                    endpoint: self.endpoint.clone(),
                    millis: self.timeout.as_millis(),
                })
            }
            Ok(Err(status)) => {
                // The deadline travels as `grpc-timeout`: the unit (or tonic on its side)
                // may end the call first, as DEADLINE_EXCEEDED or CANCELLED.
                let deadline_passed = started.elapsed() >= self.timeout;
                return Err(match status.code() {
                    tonic::Code::InvalidArgument => {
                        RiskError::Evidence(status.message().to_owned())
                    }
                    tonic::Code::DeadlineExceeded | tonic::Code::Cancelled if deadline_passed => {
                        RiskError::BiometricTimeout {
                            endpoint: self.endpoint.clone(),
                            millis: self.timeout.as_millis(),
                        }
                    }
                    tonic::Code::DeadlineExceeded => RiskError::BiometricTimeout {
                        endpoint: self.endpoint.clone(),
                        millis: self.timeout.as_millis(),
                    },
                    code => unavailable(format!("{code:?}: {}", status.message())),
                });
            }
            Ok(Ok(reply)) => reply.into_inner(),
        };
        check_embedding(reply.embedding, reply.model).map_err(unavailable)
    }
}

impl Embedder for GrpcEmbedder {
    fn embed<'a>(&'a self, image: &'a [u8]) -> EmbedFuture<'a> {
        Box::pin(self.call(image))
    }
}

/// An embedding from a unit's reply, if it is usable.
pub fn check_embedding(values: Vec<f32>, model: String) -> Result<Embedding, String> {
    if values.is_empty() || values.len() > MAX_EMBEDDING_LEN {
        return Err(format!(
            "the reply holds an embedding of {} numbers; expected 1 to {MAX_EMBEDDING_LEN}",
            values.len()
        ));
    }
    if !values.iter().all(|v| v.is_finite()) {
        return Err("the reply's embedding holds a number that is not finite".into());
    }
    if model.is_empty() {
        return Err("the reply names no model".into());
    }
    Ok(Embedding { values, model })
}
