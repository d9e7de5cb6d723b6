//! `TerminalService`: the devices' API. No client certificate: a device proves itself with
//! signatures by its own key (proof of possession, then one authorization per transaction).

use super::observe;
use crate::core::Core;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use yunkey_proto::v1::terminal_service_server::TerminalService;
use yunkey_proto::v1::{
    GetTimeRequest, GetTimeResponse, RegisterDeviceRequest, RegisterDeviceResponse, SignRequest,
    SignResponse,
};

/// The `TerminalService` implementation.
#[derive(Debug, Clone)]
pub struct TerminalApi {
    core: Arc<Core>,
}

impl TerminalApi {
    /// A service over `core`.
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

#[tonic::async_trait]
impl TerminalService for TerminalApi {
    async fn register_device(
        &self,
        req: Request<RegisterDeviceRequest>,
    ) -> Result<Response<RegisterDeviceResponse>, Status> {
        let req = req.into_inner();
        let actor = format!("device-for:{}", req.user_id);
        observe(
            "RegisterDevice",
            &actor,
            crate::devices::register(&self.core, req),
        )
        .await
    }

    async fn sign_transaction(
        &self,
        req: Request<SignRequest>,
    ) -> Result<Response<SignResponse>, Status> {
        let req = req.into_inner();
        let actor = format!(
            "device:{}",
            req.authorization
                .as_ref()
                .map(|a| a.device_id.as_str())
                .unwrap_or("")
        );
        observe(
            "SignTransaction",
            &actor,
            crate::signing::sign(&self.core, &actor, req),
        )
        .await
    }

    async fn get_time(
        &self,
        _req: Request<GetTimeRequest>,
    ) -> Result<Response<GetTimeResponse>, Status> {
        Ok(Response::new(GetTimeResponse {
            unix_seconds: crate::clock::now(),
        }))
    }
}
