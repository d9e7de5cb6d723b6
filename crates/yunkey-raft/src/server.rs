//! [`RaftGrpcServer`]: the server side of `yunkey.v1.RaftService`, dispatching to a local Raft.

use std::fmt::Debug;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{BasicNode, LogId, Raft};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};
use yunkey_proto::v1::raft_service_server::{RaftService, RaftServiceServer};
use yunkey_proto::v1::RaftPayload;

use crate::codec::{decode, encode};
use crate::TypeConfig;

/// What the `ClientWrite` RPC returns, bincode-encoded: the application's response with the
/// log index of its entry, or Raft's error (with a `ForwardToLeader` hint when this node is
/// not the leader).
pub(crate) type ClientWriteReply<C> = Result<
    (<C as openraft::RaftTypeConfig>::R, u64),
    RaftError<u64, ClientWriteError<u64, BasicNode>>,
>;

/// What the `ReadIndex` RPC returns, bincode-encoded: the log id a linearizable read must see
/// (as `Raft::ensure_linearizable` gives it), or Raft's error (`ForwardToLeader` when this
/// node is not the leader).
pub(crate) type ReadIndexReply =
    Result<Option<LogId<u64>>, RaftError<u64, CheckIsLeaderError<u64, BasicNode>>>;

/// Serves `yunkey.v1.RaftService` for one local [`Raft`] node.
///
/// Every reply is bincode of `Result<Response, RaftError<..>>`, decoded by
/// [`crate::GrpcNetwork`] and [`crate::write()`]. It does no authentication: the caller wraps it
/// (for example with an mTLS role check).
pub struct RaftGrpcServer<C: TypeConfig> {
    raft: Raft<C>,
}

impl<C: TypeConfig> Debug for RaftGrpcServer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RaftGrpcServer")
    }
}

impl<C: TypeConfig> RaftGrpcServer<C> {
    /// A server for `raft`.
    pub fn new(raft: Raft<C>) -> Self {
        Self { raft }
    }

    /// The tonic service, ready to add to a `tonic::transport::Server`.
    pub fn into_service(self) -> RaftServiceServer<Self> {
        RaftServiceServer::new(self)
    }
}

/// gRPC metadata naming the node id a Raft RPC is meant for. A node refuses a request meant
/// for another id: a node that took over an address (a pod back on a new volume, under a new
/// id) must never answer votes or entries for the member that was there before.
pub const TARGET_HEADER: &str = "x-yunkey-raft-target";

impl<C: TypeConfig> RaftGrpcServer<C> {
    /// Refuses a request whose [`TARGET_HEADER`] names another node (a request without it, from
    /// an older peer, is accepted).
    fn check_target(&self, request: &Request<RaftPayload>) -> Result<(), Status> {
        let Some(value) = request.metadata().get(TARGET_HEADER) else {
            return Ok(());
        };
        let target: u64 = value
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Status::invalid_argument(format!("malformed {TARGET_HEADER}")))?;
        let me = self.raft.metrics().borrow().id;
        if target != me {
            return Err(Status::failed_precondition(format!(
                "this address now serves Raft node {me}, not node {target}: node {target} was \
                 replaced; remove it from the cluster (yunkey ctl remove-node --node-id {target})"
            )));
        }
        Ok(())
    }
}

fn parse<T: DeserializeOwned>(req: Request<RaftPayload>, what: &str) -> Result<T, Status> {
    decode(&req.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("malformed {what} payload: {e}")))
}

/// Counts an `AppendEntries` call received and the entries it carries: how many calls a
/// follower serves per entry, and how many carry none (a heartbeat, or openraft telling the
/// follower the new commit index, which it sends on its own whenever the follower's
/// replication stream is idle; docs/performance.md, item 31).
fn count_append(entries: usize) {
    let carries = if entries == 0 { "nothing" } else { "entries" };
    metrics::counter!("yunkey_raft_append_entries_received_total", "carries" => carries)
        .increment(1);
    metrics::counter!("yunkey_raft_entries_received_total").increment(entries as u64);
}

fn reply<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    let data = encode(value).map_err(|e| Status::internal(format!("cannot encode reply: {e}")))?;
    Ok(Response::new(RaftPayload { data }))
}

#[tonic::async_trait]
impl<C: TypeConfig> RaftService for RaftGrpcServer<C> {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check_target(&request)?;
        let rpc: AppendEntriesRequest<C> = parse(request, "AppendEntries")?;
        count_append(rpc.entries.len());
        reply(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_target(&request)?;
        let rpc: VoteRequest<u64> = parse(request, "Vote")?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check_target(&request)?;
        let rpc: InstallSnapshotRequest<C> = parse(request, "InstallSnapshot")?;
        reply(&self.raft.install_snapshot(rpc).await)
    }

    async fn client_write(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let cmd: C::D = parse(request, "ClientWrite")?;
        let res: ClientWriteReply<C> = self
            .raft
            .client_write(cmd)
            .await
            .map(|r| (r.data, r.log_id.index));
        reply(&res)
    }

    async fn read_index(
        &self,
        _request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let res: ReadIndexReply = self.raft.ensure_linearizable().await;
        reply(&res)
    }
}
