//! The one seam from coordinator to chip: [`ChipClient`], with a typed [`ChipFailure`] that
//! says whether another holder of the key is worth trying, one timeout policy and one set of
//! metrics (`yunkey_chip_call_seconds{op, outcome}`).
//!
//! [`GrpcChip`] implements it over the generated `ChipService` client, for any transport: a
//! TLS channel to a chip process in production, or, in unit tests, the chip's server itself
//! (`yunkey_chip::ChipGrpc::in_process` over a soft chip), so the coordinator's logic runs
//! against real chips without sockets.

use std::fmt;
use std::time::{Duration, Instant};
use tonic::codegen::{Body, Bytes, StdError};
use tonic::{Code, Status};
use yunkey_proto::v1 as pb;
use yunkey_proto::v1::chip_service_client::ChipServiceClient;

/// Why a call to a chip did not succeed, decided once from the chip's status.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ChipFailure {
    /// The chip could not be reached, or the connection broke.
    Unreachable {
        /// The chip.
        chip_id: String,
        /// What failed.
        detail: String,
    },
    /// The chip did not answer within the call timeout.
    Timeout {
        /// The chip.
        chip_id: String,
    },
    /// The chip does not hold the key asked for (a move raced the request, or it lost it).
    KeyMissing {
        /// The chip.
        chip_id: String,
        /// The chip's message.
        message: String,
    },
    /// The chip failed inside (storage), or is full: another chip may serve.
    Failed {
        /// The chip.
        chip_id: String,
        /// Its status code.
        code: Code,
        /// Its message.
        message: String,
    },
    /// The chip refused the request itself; every holder would say the same.
    Refused {
        /// The chip.
        chip_id: String,
        /// Its status code (PERMISSION_DENIED, FAILED_PRECONDITION, INVALID_ARGUMENT, ...).
        code: Code,
        /// The chip error's kind (`yunkey_proto::chip_error`), if it gave one.
        kind: Option<String>,
        /// Its message.
        message: String,
    },
}

impl ChipFailure {
    /// Classifies a chip's status.
    pub fn from_status(chip_id: &str, status: &Status) -> Self {
        let chip_id = chip_id.to_owned();
        let message = status.message().to_owned();
        match status.code() {
            Code::Unavailable | Code::Unknown | Code::Cancelled => ChipFailure::Unreachable {
                chip_id,
                detail: message,
            },
            Code::DeadlineExceeded => ChipFailure::Timeout { chip_id },
            Code::NotFound => ChipFailure::KeyMissing { chip_id, message },
            code @ (Code::Internal | Code::ResourceExhausted | Code::DataLoss) => {
                ChipFailure::Failed {
                    chip_id,
                    code,
                    message,
                }
            }
            code => ChipFailure::Refused {
                chip_id,
                code,
                kind: yunkey_proto::chip_error::kind(status).map(str::to_owned),
                message,
            },
        }
    }

    /// Classifies one item's refusal in a batch answer, as if the chip had returned it as
    /// the status of a single call.
    pub fn from_item(chip_id: &str, item: &pb::ChipItemError) -> Self {
        let mut status = Status::new(Code::from_i32(item.code), item.message.clone());
        let kind = (!item.kind.is_empty())
            .then(|| item.kind.parse().ok())
            .flatten();
        if let Some(kind) = kind {
            status
                .metadata_mut()
                .insert(yunkey_proto::chip_error::KIND_HEADER, kind);
        }
        Self::from_status(chip_id, &status)
    }

    /// Whether the chip does not know the call at all (an older chip; UNIMPLEMENTED with no
    /// chip error kind), as against refusing what was asked.
    pub fn call_unknown(&self) -> bool {
        matches!(
            self,
            ChipFailure::Refused {
                code: Code::Unimplemented,
                kind: None,
                ..
            }
        )
    }

    /// Whether another holder of the same key may succeed where this chip did not.
    pub fn try_another_holder(&self) -> bool {
        !matches!(self, ChipFailure::Refused { .. })
    }

    /// Whether the chip itself seems gone (route around it at once).
    pub fn chip_unhealthy(&self) -> bool {
        matches!(
            self,
            ChipFailure::Unreachable { .. } | ChipFailure::Timeout { .. }
        )
    }

    /// Whether the chip refused because its binding of the key is behind the request's.
    pub fn binding_behind(&self) -> bool {
        matches!(self, ChipFailure::Refused { kind: Some(k), .. } if k == yunkey_proto::chip_error::BINDING_BEHIND)
    }

    /// The chip it concerns.
    pub fn chip_id(&self) -> &str {
        match self {
            ChipFailure::Unreachable { chip_id, .. }
            | ChipFailure::Timeout { chip_id }
            | ChipFailure::KeyMissing { chip_id, .. }
            | ChipFailure::Failed { chip_id, .. }
            | ChipFailure::Refused { chip_id, .. } => chip_id,
        }
    }

    /// The gRPC code a caller of the coordinator sees for it.
    pub fn code(&self) -> Code {
        match self {
            ChipFailure::Unreachable { .. } | ChipFailure::Timeout { .. } => Code::Unavailable,
            ChipFailure::KeyMissing { .. } | ChipFailure::Failed { .. } => Code::Internal,
            ChipFailure::Refused { code, .. } => match code {
                Code::PermissionDenied | Code::FailedPrecondition | Code::InvalidArgument => *code,
                _ => Code::Internal,
            },
        }
    }

    fn label(&self) -> &'static str {
        match self {
            ChipFailure::Unreachable { .. } => "unreachable",
            ChipFailure::Timeout { .. } => "timeout",
            ChipFailure::KeyMissing { .. } => "key_missing",
            ChipFailure::Failed { .. } => "failed",
            ChipFailure::Refused { .. } => "refused",
        }
    }
}

impl fmt::Display for ChipFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChipFailure::Unreachable { chip_id, detail } => {
                write!(f, "chip {chip_id} is unreachable: {detail}")
            }
            ChipFailure::Timeout { chip_id } => write!(f, "chip {chip_id} did not answer in time"),
            ChipFailure::KeyMissing { chip_id, message }
            | ChipFailure::Failed {
                chip_id, message, ..
            }
            | ChipFailure::Refused {
                chip_id, message, ..
            } => write!(f, "chip {chip_id}: {message}"),
        }
    }
}

/// A result of a chip call.
pub type ChipResult<T> = std::result::Result<T, ChipFailure>;

/// What the coordinator asks of a chip. Every coordinator-to-chip call goes through this.
#[tonic::async_trait]
pub trait ChipClient: Send + Sync + fmt::Debug {
    /// The chip's id as the coordinator knows it (or the endpoint, before admission).
    fn chip_id(&self) -> &str;
    /// `GetInfo` with `timeout` (heartbeats use their own).
    async fn get_info(&self, timeout: Duration) -> ChipResult<pb::ChipInfo>;
    /// `InitDomain`.
    async fn init_domain(&self, r: pb::InitDomainRequest) -> ChipResult<pb::DomainResponse>;
    /// `ExportDomain`.
    async fn export_domain(
        &self,
        r: pb::ExportDomainRequest,
    ) -> ChipResult<pb::ExportDomainResponse>;
    /// `ImportDomain`.
    async fn import_domain(&self, r: pb::ImportDomainRequest) -> ChipResult<pb::DomainResponse>;
    /// `SetTrustAnchor`.
    async fn set_trust_anchor(
        &self,
        r: pb::SetTrustAnchorRequest,
    ) -> ChipResult<pb::DomainResponse>;
    /// `GenerateKey`.
    async fn generate_key(&self, r: pb::GenerateKeyRequest) -> ChipResult<pb::GenerateKeyResponse>;
    /// `BindDevice`.
    async fn bind_device(&self, r: pb::BindDeviceRequest) -> ChipResult<pb::BindingResponse>;
    /// `UpdateBinding`.
    async fn update_binding(&self, r: pb::UpdateBindingRequest) -> ChipResult<pb::BindingResponse>;
    /// `RevokeBinding`.
    async fn revoke_binding(&self, r: pb::RevokeBindingRequest) -> ChipResult<pb::BindingResponse>;
    /// `SetActivation`.
    async fn set_activation(&self, r: pb::SetActivationRequest) -> ChipResult<pb::BindingResponse>;
    /// `SignAuthorized`.
    async fn sign_authorized(
        &self,
        r: pb::SignAuthorizedRequest,
    ) -> ChipResult<pb::SignatureResponse>;
    /// `SignAuthorizedBatch`: the outer error is the call's own failure; each item's answer,
    /// in the items' order, is inside.
    async fn sign_authorized_batch(
        &self,
        items: Vec<pb::SignAuthorizedRequest>,
    ) -> ChipResult<Vec<ChipResult<pb::SignatureResponse>>>;
    /// `IssueCertificate`.
    async fn issue_certificate(
        &self,
        r: pb::IssueCertificateRequest,
    ) -> ChipResult<pb::IssueCertificateResponse>;
    /// `UnwrapKey`.
    async fn unwrap_key(&self, r: pb::UnwrapKeyRequest) -> ChipResult<pb::GenerateKeyResponse>;
    /// `DeleteKey`.
    async fn delete_key(&self, r: pb::KeyHandleRequest) -> ChipResult<pb::DeleteKeyResponse>;
    /// `ListKeys`.
    async fn list_keys(&self, r: pb::ListKeysRequest) -> ChipResult<pb::ListKeysResponse>;
    /// `SignManifest`.
    async fn sign_manifest(&self, r: pb::SignManifestRequest) -> ChipResult<pb::SignatureResponse>;
}

/// [`ChipClient`] over the generated gRPC client, for any transport `T`.
#[derive(Clone)]
pub struct GrpcChip<T> {
    chip_id: String,
    client: ChipServiceClient<T>,
    timeout: Duration,
}

impl<T> fmt::Debug for GrpcChip<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcChip")
            .field("chip_id", &self.chip_id)
            .finish_non_exhaustive()
    }
}

impl<T> GrpcChip<T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    /// A client named `chip_id` over `transport`, every call bounded by `timeout`.
    pub fn new(chip_id: &str, transport: T, timeout: Duration) -> Self {
        Self {
            chip_id: chip_id.to_owned(),
            client: ChipServiceClient::new(transport)
                .max_decoding_message_size(yunkey_net::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(yunkey_net::MAX_MESSAGE_BYTES),
            timeout,
        }
    }
}

/// Runs one call with the timeout policy and records its metrics.
async fn observed<R, Fut>(
    chip_id: &str,
    op: &'static str,
    timeout: Duration,
    call: Fut,
) -> ChipResult<R>
where
    Fut: std::future::Future<Output = Result<tonic::Response<R>, Status>>,
{
    let started = Instant::now();
    let result = match tokio::time::timeout(timeout, call).await {
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) => Err(ChipFailure::from_status(chip_id, &status)),
        Err(_) => Err(ChipFailure::Timeout {
            chip_id: chip_id.to_owned(),
        }),
    };
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.label(),
    };
    metrics::histogram!("yunkey_chip_call_seconds", "op" => op, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    result
}

/// Each item's answer of a batch, or a failure of the whole call if the chip did not answer
/// each item once.
fn batch_results(
    chip_id: &str,
    asked: usize,
    answer: pb::SignAuthorizedBatchResponse,
) -> ChipResult<Vec<ChipResult<pb::SignatureResponse>>> {
    use pb::sign_authorized_result::Result as Item;
    if answer.results.len() != asked {
        return Err(ChipFailure::Failed {
            chip_id: chip_id.to_owned(),
            code: Code::Internal,
            message: format!(
                "answered {} results to a batch of {asked} signatures",
                answer.results.len()
            ),
        });
    }
    Ok(answer
        .results
        .into_iter()
        .map(|r| match r.result {
            Some(Item::Signed(signed)) => Ok(signed),
            Some(Item::Error(e)) => Err(ChipFailure::from_item(chip_id, &e)),
            None => Err(ChipFailure::Failed {
                chip_id: chip_id.to_owned(),
                code: Code::Internal,
                message: "answered an empty result in a batch".into(),
            }),
        })
        .collect())
}

fn request<M>(msg: M, timeout: Duration) -> tonic::Request<M> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(timeout);
    req
}

/// The impl of [`ChipClient`] for [`GrpcChip`]: every call but `get_info` is the same
/// (the generated method, the call timeout, the metrics), so a macro writes them.
macro_rules! grpc_chip_client {
    ($($name:ident($req:ty) -> $resp:ty;)*) => {
        #[tonic::async_trait]
        impl<T> ChipClient for GrpcChip<T>
        where
            T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + Sync + 'static,
            T::Error: Into<StdError>,
            T::ResponseBody: Body<Data = Bytes> + Send + 'static,
            <T::ResponseBody as Body>::Error: Into<StdError> + Send,
            T::Future: Send,
        {
            fn chip_id(&self) -> &str {
                &self.chip_id
            }

            async fn get_info(&self, timeout: Duration) -> ChipResult<pb::ChipInfo> {
                let mut client = self.client.clone();
                observed(
                    &self.chip_id,
                    "get_info",
                    timeout,
                    client.get_info(request(pb::GetInfoRequest {}, timeout)),
                )
                .await
            }

            async fn sign_authorized_batch(
                &self,
                items: Vec<pb::SignAuthorizedRequest>,
            ) -> ChipResult<Vec<ChipResult<pb::SignatureResponse>>> {
                let mut client = self.client.clone();
                let asked = items.len();
                let answer = observed(
                    &self.chip_id,
                    "sign_authorized_batch",
                    self.timeout,
                    client.sign_authorized_batch(request(
                        pb::SignAuthorizedBatchRequest { items },
                        self.timeout,
                    )),
                )
                .await?;
                batch_results(&self.chip_id, asked, answer)
            }

            $(
                async fn $name(&self, r: $req) -> ChipResult<$resp> {
                    let mut client = self.client.clone();
                    observed(
                        &self.chip_id,
                        stringify!($name),
                        self.timeout,
                        client.$name(request(r, self.timeout)),
                    )
                    .await
                }
            )*
        }
    };
}

grpc_chip_client! {
    init_domain(pb::InitDomainRequest) -> pb::DomainResponse;
    export_domain(pb::ExportDomainRequest) -> pb::ExportDomainResponse;
    import_domain(pb::ImportDomainRequest) -> pb::DomainResponse;
    set_trust_anchor(pb::SetTrustAnchorRequest) -> pb::DomainResponse;
    generate_key(pb::GenerateKeyRequest) -> pb::GenerateKeyResponse;
    bind_device(pb::BindDeviceRequest) -> pb::BindingResponse;
    update_binding(pb::UpdateBindingRequest) -> pb::BindingResponse;
    revoke_binding(pb::RevokeBindingRequest) -> pb::BindingResponse;
    set_activation(pb::SetActivationRequest) -> pb::BindingResponse;
    sign_authorized(pb::SignAuthorizedRequest) -> pb::SignatureResponse;
    issue_certificate(pb::IssueCertificateRequest) -> pb::IssueCertificateResponse;
    unwrap_key(pb::UnwrapKeyRequest) -> pb::GenerateKeyResponse;
    delete_key(pb::KeyHandleRequest) -> pb::DeleteKeyResponse;
    list_keys(pb::ListKeysRequest) -> pb::ListKeysResponse;
    sign_manifest(pb::SignManifestRequest) -> pb::SignatureResponse;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_say_whether_another_holder_helps() {
        let behind = {
            let mut s = Status::failed_precondition("behind");
            s.metadata_mut().insert(
                yunkey_proto::chip_error::KIND_HEADER,
                yunkey_proto::chip_error::BINDING_BEHIND.parse().unwrap(),
            );
            s
        };
        let cases = [
            (Status::unavailable("x"), true, true, Code::Unavailable),
            // A hung chip (paused, cut off without a reset) ends in the channel's own timeout,
            // which tonic reports as CANCELLED "Timeout expired" (found by the chaos suite).
            (
                Status::cancelled("Timeout expired"),
                true,
                true,
                Code::Unavailable,
            ),
            (
                Status::deadline_exceeded("x"),
                true,
                true,
                Code::Unavailable,
            ),
            (Status::not_found("x"), true, false, Code::Internal),
            (Status::internal("x"), true, false, Code::Internal),
            (Status::resource_exhausted("x"), true, false, Code::Internal),
            (
                Status::permission_denied("x"),
                false,
                false,
                Code::PermissionDenied,
            ),
            (behind, false, false, Code::FailedPrecondition),
        ];
        for (status, another, unhealthy, code) in cases {
            let f = ChipFailure::from_status("chip-1", &status);
            assert_eq!(f.try_another_holder(), another, "{status:?}");
            assert_eq!(f.chip_unhealthy(), unhealthy, "{status:?}");
            assert_eq!(f.code(), code, "{status:?}");
            assert_eq!(f.chip_id(), "chip-1");
        }
        let mut s = Status::failed_precondition("behind");
        s.metadata_mut().insert(
            yunkey_proto::chip_error::KIND_HEADER,
            yunkey_proto::chip_error::BINDING_BEHIND.parse().unwrap(),
        );
        assert!(ChipFailure::from_status("c", &s).binding_behind());
        assert!(!ChipFailure::from_status("c", &Status::failed_precondition("x")).binding_behind());
    }
}
