//! gRPC adapters: each RPC checks the caller's role, runs one operation, and records
//! metrics and the audit line. Business logic lives in the operation modules.

mod cluster;
mod key;
pub mod refusal_log;
pub mod source_failures;
pub mod source_limit;
mod terminal;

pub use cluster::ClusterApi;
pub use key::KeyApi;
pub use terminal::TerminalApi;

use crate::error::CoordError;
use futures::FutureExt;
use refusal_log::{RefusalLog, Verdict};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Instant;
use tonic::{Code, Response, Status};

/// Runs one RPC's operation, recording `yunkey_rpc_requests_total{rpc,code}` and
/// `yunkey_rpc_duration_seconds{rpc}`, and an audit line for refusals.
///
/// Not `async fn`s, here and in [`observe_typed`] and [`observe_unauthenticated`]: an
/// `async fn` keeps its future argument twice in its own future (once as the argument, once
/// where it is awaited), and a sign call's future is kilobytes, copied whole when a task is
/// spawned (docs/performance.md, item 33). `map` keeps it once.
pub(crate) fn observe<'a, T: 'a>(
    rpc: &'static str,
    actor: &'a str,
    op: impl Future<Output = Result<T, CoordError>> + 'a,
) -> impl Future<Output = Result<Response<T>, Status>> + 'a {
    observe_typed(rpc, actor, op).map(|result| result.map(Response::new).map_err(Status::from))
}

/// [`observe`], keeping the typed result: for one item of a batch call, recorded as its own
/// request under `rpc`.
pub(crate) fn observe_typed<'a, T: 'a>(
    rpc: &'static str,
    actor: &'a str,
    op: impl Future<Output = Result<T, CoordError>> + 'a,
) -> impl Future<Output = Result<T, CoordError>> + 'a {
    let started = Instant::now();
    op.map(move |result| {
        match &result {
            Ok(_) => count(rpc, Code::Ok, started),
            Err(e) => {
                let code = e.code();
                count(rpc, code, started);
                tracing::info!(target: "yunkey::audit", rpc, actor, code = code_name(code), error = %e, "request refused");
            }
        }
        result
    })
}

/// [`observe`] for a call anyone may make (no client certificate): the caller gets
/// [`CoordError::to_unauthenticated_status`], which tells nothing about users; the audit
/// line keeps the distinct reason and the source address, but only as many lines as
/// `refusals` lets through (the rest are counted in its summary line).
pub(crate) fn observe_unauthenticated<'a, T: 'a>(
    rpc: &'static str,
    actor: &'a str,
    source: Option<SocketAddr>,
    refusals: &'a RefusalLog,
    op: impl Future<Output = Result<T, CoordError>> + 'a,
) -> impl Future<Output = Result<Response<T>, Status>> + 'a {
    let started = Instant::now();
    op.map(move |result| match result {
        Ok(v) => {
            count(rpc, Code::Ok, started);
            Ok(Response::new(v))
        }
        Err(e) => {
            let status = e.to_unauthenticated_status();
            count(rpc, status.code(), started);
            let (verdict, ended) = refusals.record(rpc, Instant::now());
            if let Some(summary) = ended {
                summary.log();
            }
            if verdict == Verdict::Log {
                let source = source.map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
                tracing::info!(
                    target: "yunkey::audit",
                    rpc,
                    actor,
                    source = %source,
                    code = code_name(status.code()),
                    error = %e,
                    "request refused"
                );
            }
            Err(status)
        }
    })
}

fn count(rpc: &'static str, code: Code, started: Instant) {
    metrics::counter!("yunkey_rpc_requests_total", "rpc" => rpc, "code" => code_name(code))
        .increment(1);
    metrics::histogram!("yunkey_rpc_duration_seconds", "rpc" => rpc)
        .record(started.elapsed().as_secs_f64());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Core;
    use crate::signing::{sign, Caller};
    use yunkey_proto::v1::SignRequest;

    /// The size of what `f` returns, without calling it.
    fn returned_size<A, B, C, R>(_f: impl FnOnce(A, B, C) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// Each item of a `SignBatch` call is a task holding `observe_typed(sign(..))`, copied
    /// whole when it is spawned (docs/performance.md, item 33): neither may grow back to the
    /// 9,232 and 18,552 bytes they were, by an `async fn` wrapper keeping the sign future
    /// twice or by a large future (openraft's write) inline in the sign path.
    #[test]
    fn a_sign_task_stays_small() {
        let signing = returned_size::<&'static Core, Caller<'static>, SignRequest, _>(sign);
        let observed = returned_size(|core: &'static Core, caller: Caller<'static>, req| {
            observe_typed("SignBatchItem", "actor", sign(core, caller, req))
        });
        assert!(signing < 6_000, "the sign future is {signing} bytes");
        assert!(
            observed < signing + 256,
            "observing a {signing}-byte future takes {observed} bytes"
        );
    }
}
