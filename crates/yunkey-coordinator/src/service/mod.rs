//! gRPC adapters: each RPC checks the caller's role, runs one operation, and records
//! metrics and the audit line. Business logic lives in the operation modules.

mod cluster;
mod key;
mod terminal;

pub use cluster::ClusterApi;
pub use key::KeyApi;
pub use terminal::TerminalApi;

use crate::error::CoordError;
use std::future::Future;
use std::time::Instant;
use tonic::{Code, Response, Status};

/// Runs one RPC's operation, recording `yunkey_rpc_requests_total{rpc,code}` and
/// `yunkey_rpc_duration_seconds{rpc}`, and an audit line for refusals.
pub(crate) async fn observe<T>(
    rpc: &'static str,
    actor: &str,
    op: impl Future<Output = Result<T, CoordError>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let result = op.await;
    let code = match &result {
        Ok(_) => Code::Ok,
        Err(e) => e.code(),
    };
    metrics::counter!("yunkey_rpc_requests_total", "rpc" => rpc, "code" => code_name(code))
        .increment(1);
    metrics::histogram!("yunkey_rpc_duration_seconds", "rpc" => rpc)
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(v) => Ok(Response::new(v)),
        Err(e) => {
            tracing::info!(target: "yunkey::audit", rpc, actor, code = code_name(code), error = %e, "request refused");
            Err(e.into())
        }
    }
}

/// The canonical upper-case name of a gRPC code.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
