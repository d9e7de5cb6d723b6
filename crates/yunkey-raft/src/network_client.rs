//! [`GrpcNetwork`]: openraft's per-target network client over `yunkey.v1.RaftService`.

use std::error::Error;
use std::fmt::Debug;
use std::time::Duration;

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
use tonic::Code;
use yunkey_proto::v1::raft_service_client::RaftServiceClient;
use yunkey_proto::v1::RaftPayload;

use crate::codec::{any, decode, encode};
use crate::network::GrpcNetworkFactory;
use crate::TypeConfig;

type RpcResult<T, E> = Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

/// The network client to one target node, made by [`GrpcNetworkFactory`].
///
/// Error mapping (what failover relies on): connection failures and gRPC `UNAVAILABLE` are
/// `Unreachable`; the `RPCOption` hard TTL passing (or `DEADLINE_EXCEEDED`) is `Timeout`; an
/// error returned by the remote Raft is `RemoteError`; anything else is `Network`.
pub struct GrpcNetwork<C: TypeConfig> {
    factory: GrpcNetworkFactory<C>,
    target: u64,
    node: BasicNode,
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
        }
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
        let channel = self
            .factory
            .channel(&self.node)
            .map_err(|e| RPCError::Unreachable(Unreachable::from(any(e))))?;
        let mut client = RaftServiceClient::new(channel);
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(ttl);
        // The receiver refuses a request meant for another node id (see `TARGET_HEADER`).
        request.metadata_mut().insert(
            crate::server::TARGET_HEADER,
            tonic::metadata::MetadataValue::from(self.target),
        );
        let timeout = || {
            RPCError::Timeout(Timeout {
                action: rpc,
                id: self.factory.id(),
                target: self.target,
                timeout: ttl,
            })
        };
        let fut = async move {
            match rpc {
                RPCTypes::AppendEntries => client.append_entries(request).await,
                RPCTypes::Vote => client.vote(request).await,
                RPCTypes::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        let reply = match tokio::time::timeout(ttl, fut).await {
            Err(_) => return Err(timeout()),
            Ok(Err(status)) => {
                return Err(match status.code() {
                    Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
                    Code::DeadlineExceeded => timeout(),
                    Code::Cancelled if status.message().contains("Timeout expired") => timeout(),
                    _ => RPCError::Network(NetworkError::new(&status)),
                })
            }
            Ok(Ok(reply)) => reply.into_inner(),
        };
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
}

impl<C: TypeConfig> RaftNetwork<C> for GrpcNetwork<C> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>, openraft::error::Infallible> {
        self.call(RPCTypes::AppendEntries, &rpc, option.hard_ttl())
            .await
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
