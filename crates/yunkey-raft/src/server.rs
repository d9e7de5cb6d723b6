//! [`RaftGrpcServer`]: the server side of `yunkey.v1.RaftService`, dispatching to a local Raft.

use std::fmt::Debug;
use std::pin::Pin;

use futures::Stream;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{BasicNode, LogId, Raft};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
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
    fn check_target(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(value) = metadata.get(TARGET_HEADER) else {
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
    parse_payload(&req.into_inner(), what)
}

fn parse_payload<T: DeserializeOwned>(payload: &RaftPayload, what: &str) -> Result<T, Status> {
    decode(&payload.data)
        .map_err(|e| Status::invalid_argument(format!("malformed {what} payload: {e}")))
}

/// Counts an `AppendEntries` call received and the entries it carries: how many calls a
/// follower serves per entry, how many carry none (a heartbeat, or openraft telling the
/// follower the new commit index, which it sends on its own whenever the follower's
/// replication stream is idle; docs/performance.md, item 31), and whether they came on the
/// stream or as unary calls (from a leader of an older build, or after its stream was refused).
fn count_append(entries: usize, via: &'static str) {
    let carries = if entries == 0 { "nothing" } else { "entries" };
    metrics::counter!(
        "yunkey_raft_append_entries_received_total",
        "carries" => carries,
        "via" => via
    )
    .increment(1);
    metrics::counter!("yunkey_raft_entries_received_total").increment(entries as u64);
}

fn reply<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    reply_payload(value).map(Response::new)
}

fn reply_payload<T: Serialize>(value: &T) -> Result<RaftPayload, Status> {
    let data = encode(value).map_err(|e| Status::internal(format!("cannot encode reply: {e}")))?;
    Ok(RaftPayload { data })
}

/// The replies of one `AppendEntriesStream`, in the order of its requests.
type AppendReplies = Pin<Box<dyn Stream<Item = Result<RaftPayload, Status>> + Send>>;

/// Serves the requests of one `AppendEntriesStream` one after another, each answered before
/// the next is read (the leader sends the next only after this reply). Reading and appending
/// happen as the reply stream is polled: no task or channel of its own. A malformed request
/// ends the stream with `INVALID_ARGUMENT`; the leader then opens a new one.
fn append_replies<C: TypeConfig>(raft: Raft<C>, requests: Streaming<RaftPayload>) -> AppendReplies {
    Box::pin(futures::stream::unfold(
        Some((raft, requests)),
        |state| async move {
            let (raft, mut requests) = state?;
            let payload = match requests.message().await {
                Ok(Some(payload)) => payload,
                // The leader closed the stream (it stepped down or dropped this follower's
                // client), or the connection broke.
                Ok(None) | Err(_) => return None,
            };
            let rpc: AppendEntriesRequest<C> = match parse_payload(&payload, "AppendEntries") {
                Ok(rpc) => rpc,
                Err(status) => return Some((Err(status), None)),
            };
            count_append(rpc.entries.len(), "stream");
            let reply = reply_payload(&raft.append_entries(rpc).await);
            let next = reply.is_ok().then_some((raft, requests));
            Some((reply, next))
        },
    ))
}

#[tonic::async_trait]
impl<C: TypeConfig> RaftService for RaftGrpcServer<C> {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check_target(request.metadata())?;
        let rpc: AppendEntriesRequest<C> = parse(request, "AppendEntries")?;
        count_append(rpc.entries.len(), "unary");
        reply(&self.raft.append_entries(rpc).await)
    }

    type AppendEntriesStreamStream = AppendReplies;

    async fn append_entries_stream(
        &self,
        request: Request<Streaming<RaftPayload>>,
    ) -> Result<Response<AppendReplies>, Status> {
        self.check_target(request.metadata())?;
        Ok(Response::new(append_replies(
            self.raft.clone(),
            request.into_inner(),
        )))
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_target(request.metadata())?;
        let rpc: VoteRequest<u64> = parse(request, "Vote")?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check_target(request.metadata())?;
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
