//! `ClusterService`: the operators' API (role `client` or `node`).

use super::observe;
use crate::core::Core;
use crate::error::CoordError;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use yunkey_net::role::{self, Role};
use yunkey_proto::v1::cluster_service_server::ClusterService;
use yunkey_proto::v1::{
    AddNodeRequest, AdmitChipRequest, Chip, ListChipsRequest, ListChipsResponse,
    MembershipResponse, RemoveNodeRequest, StatusRequest, StatusResponse, WriteProbeRequest,
    WriteProbeResponse,
};

fn forwarded<T>(req: &Request<T>) -> bool {
    req.metadata()
        .get(crate::membership::FORWARDED_HEADER)
        .is_some()
}

/// The `ClusterService` implementation.
#[derive(Debug, Clone)]
pub struct ClusterApi {
    core: Arc<Core>,
}

impl ClusterApi {
    /// A service over `core`.
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

fn admit<T>(req: &Request<T>) -> Result<String, Status> {
    role::require(req, &[Role::Client, Role::Node])?;
    Ok(role::peer_name(req))
}

fn chip_proto(core: &Core, record: &crate::state::ChipRecord) -> Chip {
    let (_, last_ms) = core.chips.last_report(&record.chip_id);
    Chip {
        chip_id: record.chip_id.clone(),
        endpoint: record.endpoint.clone(),
        zone: record.zone.clone(),
        capacity: record.capacity,
        used: record.placed,
        state: core.chips.state(&record.chip_id) as i32,
        last_heartbeat_ms: last_ms,
    }
}

async fn status(core: &Core) -> Result<StatusResponse, CoordError> {
    let mut status = core.raft.status();
    status.users = core.view.user_count()?;
    status.devices = core.view.device_count()?;
    status.chips = core.view.chips()?.len() as u64;
    if let Some(ca) = core.view.ca()? {
        status.user_ca_holders = ca.holders.iter().map(crate::convert::holder).collect();
        status.user_ca_certificate = ca.certificate;
    }
    status.version = env!("CARGO_PKG_VERSION").to_owned();
    Ok(status)
}

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let actor = admit(&req)?;
        observe("Status", &actor, status(&self.core)).await
    }

    async fn list_chips(
        &self,
        req: Request<ListChipsRequest>,
    ) -> Result<Response<ListChipsResponse>, Status> {
        let actor = admit(&req)?;
        observe("ListChips", &actor, async {
            Ok(ListChipsResponse {
                chips: self
                    .core
                    .view
                    .chips()?
                    .iter()
                    .map(|c| chip_proto(&self.core, c))
                    .collect(),
            })
        })
        .await
    }

    async fn admit_chip(&self, req: Request<AdmitChipRequest>) -> Result<Response<Chip>, Status> {
        // Admission hands the security domain to a chip: node identities only.
        role::require(&req, &[Role::Node])?;
        let actor = role::peer_name(&req);
        let endpoint = req.into_inner().endpoint;
        observe("AdmitChip", &actor, async {
            yunkey_crypto::validate::text("endpoint", &endpoint, 256, false)?;
            let record = crate::admin::admit_chip(&self.core, &actor, &endpoint).await?;
            Ok(chip_proto(&self.core, &record))
        })
        .await
    }

    async fn add_node(
        &self,
        req: Request<AddNodeRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        let actor = admit(&req)?;
        let fwd = forwarded(&req);
        observe(
            "AddNode",
            &actor,
            crate::membership::add_node(&self.core, &actor, req.into_inner(), fwd),
        )
        .await
    }

    async fn remove_node(
        &self,
        req: Request<RemoveNodeRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        let actor = admit(&req)?;
        let fwd = forwarded(&req);
        observe(
            "RemoveNode",
            &actor,
            crate::membership::remove_node(&self.core, &actor, req.into_inner(), fwd),
        )
        .await
    }

    async fn write_probe(
        &self,
        req: Request<WriteProbeRequest>,
    ) -> Result<Response<WriteProbeResponse>, Status> {
        let actor = admit(&req)?;
        observe(
            "WriteProbe",
            &actor,
            crate::admin::write_probe(&self.core, &actor),
        )
        .await
    }
}
