//! [`GrpcNetwork`]: openraft's per-target network client over `yunkey.v1.RaftService`.

use std::error::Error;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes, RaftNetwork};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};
use yunkey_proto::v1::raft_service_client::RaftServiceClient;
use yunkey_proto::v1::RaftPayload;

use crate::codec::{any, decode, encode};
use crate::network::GrpcNetworkFactory;
use crate::TypeConfig;

type RpcResult<T, E> = Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

/// How long a peer that refused `AppendEntriesStream` (an older build answers `UNIMPLEMENTED`,
/// or `PERMISSION_DENIED` from its access table) is sent unary `AppendEntries` before the stream
/// is tried again, so that a peer upgraded in place gets the stream back without a leader
/// change.
pub const STREAM_RECHECK: Duration = Duration::from_secs(60);

/// The network client to one target node, made by [`GrpcNetworkFactory`].
///
/// `AppendEntries` (openraft sends them one at a time per target) go on one long-lived
/// `AppendEntriesStream`, opened on first use and again after any failure; `Vote` and
/// `InstallSnapshot` are unary calls.
///
/// Error mapping (what failover relies on): connection failures and gRPC `UNAVAILABLE` are
/// `Unreachable`; the `RPCOption` hard TTL passing (or `DEADLINE_EXCEEDED`) is `Timeout`; an
/// error returned by the remote Raft is `RemoteError`; anything else is `Network`.
pub struct GrpcNetwork<C: TypeConfig> {
    factory: GrpcNetworkFactory<C>,
    target: u64,
    node: BasicNode,
    /// The open `AppendEntriesStream`, if any.
    stream: Option<AppendStream>,
    /// When the target last answered that it does not know `AppendEntriesStream`.
    stream_unknown_since: Option<Instant>,
}

/// One open `AppendEntriesStream`: requests go in through `requests`, and each is answered by
/// the next message of `replies`.
struct AppendStream {
    requests: mpsc::Sender<RaftPayload>,
    replies: Streaming<RaftPayload>,
}

impl<C: TypeConfig> Debug for GrpcNetwork<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcNetwork")
            .field("target", &self.target)
            .field("addr", &self.node.addr)
            .finish()
    }
}

impl<C: TypeConfig> GrpcNetwork<C> {
    pub(crate) fn new(factory: GrpcNetworkFactory<C>, target: u64, node: BasicNode) -> Self {
        Self {
            factory,
            target,
            node,
            stream: None,
            stream_unknown_since: None,
        }
    }

    /// Names the target node in a request's metadata: the receiver refuses a request meant for
    /// another node id (see `TARGET_HEADER`).
    fn name_target(&self, metadata: &mut tonic::metadata::MetadataMap) {
        metadata.insert(
            crate::server::TARGET_HEADER,
            tonic::metadata::MetadataValue::from(self.target),
        );
    }

    /// The cached channel to the target; failing to build one means it is unreachable.
    // The error is openraft's `RPCError`, which `RaftNetwork` returns as it is.
    #[allow(clippy::result_large_err)]
    fn channel<E: Error>(&self) -> RpcResult<Channel, E> {
        self.factory
            .channel(&self.node)
            .map_err(|e| RPCError::Unreachable(Unreachable::from(any(e))))
    }

    fn timeout<E: Error>(
        &self,
        rpc: RPCTypes,
        ttl: Duration,
    ) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
        RPCError::Timeout(Timeout {
            action: rpc,
            id: self.factory.id(),
            target: self.target,
            timeout: ttl,
        })
    }

    /// What a failed call's status means to openraft (see the type's documentation).
    fn status_error<E: Error>(
        &self,
        rpc: RPCTypes,
        ttl: Duration,
        status: Status,
    ) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
        match status.code() {
            Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
            Code::DeadlineExceeded => self.timeout(rpc, ttl),
            Code::Cancelled if status.message().contains("Timeout expired") => {
                self.timeout(rpc, ttl)
            }
            _ => RPCError::Network(NetworkError::new(&status)),
        }
    }

    /// Decodes a reply's `Result<Resp, RaftError<E>>`.
    #[allow(clippy::result_large_err)]
    fn decode_reply<Resp, E>(&self, rpc: RPCTypes, reply: &RaftPayload) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        let result: Result<Resp, RaftError<u64, E>> = decode(&reply.data).map_err(|e| {
            RPCError::Network(NetworkError::from(any(format!(
                "undecodable {rpc} reply: {e}"
            ))))
        })?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }

    /// Whether `AppendEntries` should go on the stream: yes unless the target refused it less
    /// than [`STREAM_RECHECK`] ago.
    fn stream_allowed(&self) -> bool {
        self.stream_unknown_since
            .is_none_or(|since| since.elapsed() >= STREAM_RECHECK)
    }

    /// Sends one `AppendEntries` payload on the stream (opening it first if needed) and waits
    /// for its reply. Any failure closes the stream; the next call opens a new one.
    async fn append_streamed(&mut self, data: Vec<u8>) -> Result<RaftPayload, StreamFailure> {
        if self.stream.is_none() {
            let channel = self
                .factory
                .channel(&self.node)
                .map_err(|e| StreamFailure::Failed(Status::unavailable(e)))?;
            let (requests, rx) = mpsc::channel(1);
            let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            self.name_target(request.metadata_mut());
            let replies = RaftServiceClient::new(channel)
                .append_entries_stream(request)
                .await
                .map_err(|status| match status.code() {
                    // An older build: tonic answers UNIMPLEMENTED for a method it lacks, and
                    // yunkey's access layer PERMISSION_DENIED for a path not in its table. Either
                    // way unary calls follow; if they are refused too, that error is reported.
                    Code::Unimplemented | Code::PermissionDenied => {
                        tracing::warn!(
                            target_node = self.target,
                            code = ?status.code(),
                            message = status.message(),
                            "peer refused AppendEntriesStream (an older build?); sending it unary \
                             AppendEntries, and asking again in {} s",
                            STREAM_RECHECK.as_secs()
                        );
                        StreamFailure::Unknown
                    }
                    _ => StreamFailure::Failed(status),
                })?
                .into_inner();
            self.stream = Some(AppendStream { requests, replies });
        }
        let stream = self.stream.as_mut().expect("opened above");
        let reply = match stream.requests.send(RaftPayload { data }).await {
            Err(_) => Err(Status::unavailable("the AppendEntries stream closed")),
            Ok(()) => match stream.replies.message().await {
                Ok(Some(reply)) => Ok(reply),
                Ok(None) => Err(Status::unavailable(
                    "the follower closed the AppendEntries stream",
                )),
                Err(status) => Err(status),
            },
        };
        reply.map_err(|status| {
            self.stream = None;
            StreamFailure::Failed(status)
        })
    }

    /// Sends one bincode request and decodes the server's `Result<Resp, RaftError<E>>`.
    async fn call<Req, Resp, E>(
        &self,
        rpc: RPCTypes,
        req: &Req,
        ttl: Duration,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        let data = encode(req).map_err(|e| RPCError::Network(NetworkError::from(any(e))))?;
        let mut client = RaftServiceClient::new(self.channel()?);
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(ttl);
        self.name_target(request.metadata_mut());
        let fut = async move {
            match rpc {
                RPCTypes::AppendEntries => client.append_entries(request).await,
                RPCTypes::Vote => client.vote(request).await,
                RPCTypes::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        let reply = match tokio::time::timeout(ttl, fut).await {
            Err(_) => return Err(self.timeout(rpc, ttl)),
            Ok(Err(status)) => return Err(self.status_error(rpc, ttl, status)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        self.decode_reply(rpc, &reply)
    }
}

/// Why a streamed `AppendEntries` failed.
enum StreamFailure {
    /// The target does not serve `AppendEntriesStream` (an older build) or refused to open it.
    Unknown,
    /// The stream could not be opened, it broke, or the target refused the request.
    Failed(Status),
}

impl<C: TypeConfig> RaftNetwork<C> for GrpcNetwork<C> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>, openraft::error::Infallible> {
        let rpc_type = RPCTypes::AppendEntries;
        let ttl = option.hard_ttl();
        if !self.stream_allowed() {
            return self.call(rpc_type, &rpc, ttl).await;
        }
        let data = encode(&rpc).map_err(|e| RPCError::Network(NetworkError::from(any(e))))?;
        match tokio::time::timeout(ttl, self.append_streamed(data)).await {
            Err(_) => {
                // A reply that comes later would answer the next request: start afresh.
                self.stream = None;
                Err(self.timeout(rpc_type, ttl))
            }
            Ok(Ok(reply)) => self.decode_reply(rpc_type, &reply),
            Ok(Err(StreamFailure::Unknown)) => {
                self.stream_unknown_since = Some(Instant::now());
                self.call(rpc_type, &rpc, ttl).await
            }
            Ok(Err(StreamFailure::Failed(status))) => Err(self.status_error(rpc_type, ttl, status)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        self.call(RPCTypes::InstallSnapshot, &rpc, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>, openraft::error::Infallible> {
        self.call(RPCTypes::Vote, &rpc, option.hard_ttl()).await
    }
}
