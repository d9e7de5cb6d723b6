//! `TerminalService`: the devices' API. `SignTransaction` and `RenewDevice` run on the device
//! channel: the device's certificate is the TLS client certificate, checked against the state
//! ([`crate::devices::check_peer`]) before anything else; the device then also signs each
//! transaction's authorization with its key.
//!
//! `RegisterDevice` and `GetTime` need nothing at all, so anyone may call them: they are rate
//! limited per source address ([`super::source_limit`]), their refusals are logged in bounded
//! amounts ([`super::refusal_log`]), and a refused registration does not tell whether the user
//! exists or is revoked ([`CoordError::to_unauthenticated_status`]).

use super::refusal_log::RefusalLog;
use super::source_failures::SourceFailures;
use super::source_limit::SourceLimiter;
use super::{observe, observe_unauthenticated};
use crate::core::Core;
use crate::error::CoordError;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Instant;
use tonic::{Request, Response, Status};
use yunkey_proto::v1::terminal_service_server::TerminalService;
use yunkey_proto::v1::{
    GetTimeRequest, GetTimeResponse, RegisterDeviceRequest, RegisterDeviceResponse,
    RenewDeviceRequest, SignRequest, SignResponse,
};

/// The `TerminalService` implementation.
#[derive(Debug, Clone)]
pub struct TerminalApi {
    core: Arc<Core>,
    limiter: Option<Arc<SourceLimiter>>,
    failures: Arc<SourceFailures>,
    refusals: Arc<RefusalLog>,
}

impl TerminalApi {
    /// A service over `core`, with the rate limit of `core.config.unauthenticated_rate`.
    pub fn new(core: Arc<Core>) -> Self {
        let limiter = core
            .config
            .unauthenticated_rate
            .map(|rate| Arc::new(SourceLimiter::new(rate)));
        Self {
            core,
            limiter,
            failures: Arc::new(SourceFailures::default()),
            refusals: Arc::new(RefusalLog::default()),
        }
    }

    /// The refusal log, for [`super::refusal_log::flush_loop`].
    pub fn refusal_log(&self) -> Weak<RefusalLog> {
        Arc::downgrade(&self.refusals)
    }

    /// Takes a token from the bucket of the caller's address.
    fn admit(&self, source: Option<SocketAddr>) -> Result<(), CoordError> {
        match &self.limiter {
            None => Ok(()),
            Some(limiter) => {
                limiter
                    .check(source.map(|a| a.ip()))
                    .map_err(|wait| CoordError::RateLimited {
                        retry_after_ms: u64::try_from(wait.as_nanos().div_ceil(1_000_000))
                            .unwrap_or(u64::MAX)
                            .max(1),
                    })
            }
        }
    }
}

/// The verified client certificate of the call (DER), if one was presented.
fn peer_leaf<T>(req: &Request<T>) -> Option<Vec<u8>> {
    req.peer_certs()
        .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()))
}

#[tonic::async_trait]
impl TerminalService for TerminalApi {
    async fn register_device(
        &self,
        req: Request<RegisterDeviceRequest>,
    ) -> Result<Response<RegisterDeviceResponse>, Status> {
        let source = req.remote_addr();
        let req = req.into_inner();
        let actor = format!("device-for:{}", req.user_id);
        let ip = source.map(|a| a.ip());
        let op = async {
            self.admit(source)?;
            self.failures.check(ip, Instant::now()).map_err(|wait| {
                CoordError::TooManyFailures {
                    retry_after_secs: wait.as_secs().max(1),
                }
            })?;
            // The terminal software's release, before anything else is looked at.
            crate::release::check(&self.core, &req.release_id)?;
            let result = crate::devices::register(&self.core, req).await;
            if matches!(&result, Err(e) if e.reveals_user_state()) {
                self.failures.record(ip, Instant::now());
            }
            result
        };
        observe_unauthenticated("RegisterDevice", &actor, source, &self.refusals, op).await
    }

    async fn sign_transaction(
        &self,
        req: Request<SignRequest>,
    ) -> Result<Response<SignResponse>, Status> {
        let leaf = peer_leaf(&req);
        let source = req.remote_addr();
        let req = req.into_inner();
        let device_id = req
            .authorization
            .as_ref()
            .map(|a| a.device_id.clone())
            .unwrap_or_default();
        let actor = format!("device:{device_id}");
        let core = &self.core;
        observe("SignTransaction", &actor, async {
            crate::devices::check_peer(core, leaf.as_deref(), &req.user_id, &device_id)?;
            // The terminal software's release, before the authorization is consumed.
            crate::release::check(core, &req.release_id)?;
            let caller = crate::signing::Caller {
                actor: &actor,
                channel: "terminal",
                source,
            };
            crate::signing::sign(core, caller, req).await
        })
        .await
    }

    async fn renew_device(
        &self,
        req: Request<RenewDeviceRequest>,
    ) -> Result<Response<RegisterDeviceResponse>, Status> {
        let leaf = peer_leaf(&req);
        let req = req.into_inner();
        let actor = format!("device:{}", req.device_id);
        observe(
            "RenewDevice",
            &actor,
            crate::devices::renew(&self.core, leaf.as_deref(), req),
        )
        .await
    }

    async fn get_time(
        &self,
        req: Request<GetTimeRequest>,
    ) -> Result<Response<GetTimeResponse>, Status> {
        let source = req.remote_addr();
        let op = async {
            self.admit(source)?;
            Ok(GetTimeResponse {
                unix_seconds: crate::clock::now(),
            })
        };
        observe_unauthenticated("GetTime", "anonymous", source, &self.refusals, op).await
    }
}
