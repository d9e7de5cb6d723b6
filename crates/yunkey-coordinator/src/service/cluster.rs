//! `ClusterService`: the operators' API. Who may call each RPC is decided before the request
//! gets here, by the access table (`yunkey_net::access::RPC_ROLES`): membership and chip
//! admission need role `operator`.

use super::observe;
use crate::core::Core;
use crate::error::CoordError;
use crate::state::Op;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use yunkey_net::access;
use yunkey_net::role;
use yunkey_proto::v1::cluster_service_server::ClusterService;
use yunkey_proto::v1::{
    AddNodeRequest, AdmitChipRequest, Chip, DrainChipRequest, GetPlacementRequest,
    ListChipsRequest, ListChipsResponse, ListReleasesRequest, ListReleasesResponse,
    MembershipResponse, Placement, Release, ReleasePolicy, RemoveChipRequest, RemoveChipResponse,
    RemoveNodeRequest, RevokeReleaseRequest, SetReleasePolicyRequest, SignReleaseRequest,
    StatusRequest, StatusResponse, WriteProbeRequest, WriteProbeResponse,
};

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

/// The caller's name for the audit trail. Its role was checked by the access layer
/// (`yunkey_net::AccessLayer`) against the RPC's row; this checks it again from the same table,
/// in case the service is ever served without the layer.
fn admit<T>(req: &Request<T>, method: &str) -> Result<String, Status> {
    let certs = req.peer_certs();
    let path = format!("/{}/{method}", access::CLUSTER_SERVICE);
    access::check(&path, certs.as_deref().map(|c| c.as_slice()))?;
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
        state: core.chip_state(&record.chip_id) as i32,
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
    if let Some(ca) = core.view.ca_of(yunkey_crypto::sig::Algorithm::Sm2)? {
        status.sm2_user_ca_certificate = ca.certificate;
    }
    status.version = env!("CARGO_PKG_VERSION").to_owned();
    status.command_format = crate::state::COMMAND_FORMAT;
    status.repair_pending_users = core
        .repair_pending
        .load(std::sync::atomic::Ordering::Relaxed);
    status.rebalance_pending_moves = core
        .rebalance_pending
        .load(std::sync::atomic::Ordering::Relaxed);
    for chip in core.view.chips()? {
        if core.view.draining_since(&chip.chip_id)?.is_some() {
            status.draining_chips.push(chip_proto(core, &chip));
        }
    }
    Ok(status)
}

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let actor = admit(&req, "Status")?;
        observe("Status", &actor, status(&self.core)).await
    }

    async fn list_chips(
        &self,
        req: Request<ListChipsRequest>,
    ) -> Result<Response<ListChipsResponse>, Status> {
        let actor = admit(&req, "ListChips")?;
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

    async fn get_placement(
        &self,
        req: Request<GetPlacementRequest>,
    ) -> Result<Response<Placement>, Status> {
        let actor = admit(&req, "GetPlacement")?;
        let user_id = req.into_inner().user_id;
        observe("GetPlacement", &actor, async {
            yunkey_crypto::validate::identifier("user_id", &user_id)?;
            crate::explain::placement(&self.core, &user_id)
        })
        .await
    }

    async fn admit_chip(&self, req: Request<AdmitChipRequest>) -> Result<Response<Chip>, Status> {
        // Admission hands the security domain to a chip: operators only.
        let actor = admit(&req, "AdmitChip")?;
        let endpoint = req.into_inner().endpoint;
        observe("AdmitChip", &actor, async {
            yunkey_crypto::validate::text("endpoint", &endpoint, 256, false)?;
            let record = crate::admin::admit_chip(&self.core, &actor, &endpoint).await?;
            Ok(chip_proto(&self.core, &record))
        })
        .await
    }

    async fn drain_chip(&self, req: Request<DrainChipRequest>) -> Result<Response<Chip>, Status> {
        let actor = admit(&req, "DrainChip")?;
        let r = req.into_inner();
        observe("DrainChip", &actor, async {
            yunkey_crypto::validate::identifier("chip_id", &r.chip_id)?;
            self.core
                .propose(
                    "",
                    &actor,
                    Op::SetDraining {
                        chip_id: r.chip_id.clone(),
                        draining: !r.cancel,
                    },
                )
                .await?;
            let record = self
                .core
                .view
                .chip(&r.chip_id)?
                .ok_or_else(|| CoordError::ChipNotFound(r.chip_id.clone()))?;
            tracing::info!(target: "yunkey::audit", actor, chip = %r.chip_id, draining = !r.cancel, "chip draining set");
            Ok(chip_proto(&self.core, &record))
        })
        .await
    }

    async fn remove_chip(
        &self,
        req: Request<RemoveChipRequest>,
    ) -> Result<Response<RemoveChipResponse>, Status> {
        let actor = admit(&req, "RemoveChip")?;
        let r = req.into_inner();
        observe("RemoveChip", &actor, async {
            yunkey_crypto::validate::identifier("chip_id", &r.chip_id)?;
            self.core
                .propose(
                    "",
                    &actor,
                    Op::RemoveChip {
                        chip_id: r.chip_id.clone(),
                    },
                )
                .await?;
            tracing::info!(target: "yunkey::audit", actor, chip = %r.chip_id, "chip removed");
            Ok(RemoveChipResponse {})
        })
        .await
    }

    async fn add_node(
        &self,
        req: Request<AddNodeRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        let actor = admit(&req, "AddNode")?;
        observe(
            "AddNode",
            &actor,
            crate::membership::add_node(&self.core, &actor, req.into_inner()),
        )
        .await
    }

    async fn remove_node(
        &self,
        req: Request<RemoveNodeRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        let actor = admit(&req, "RemoveNode")?;
        observe(
            "RemoveNode",
            &actor,
            crate::membership::remove_node(&self.core, &actor, req.into_inner()),
        )
        .await
    }

    async fn write_probe(
        &self,
        req: Request<WriteProbeRequest>,
    ) -> Result<Response<WriteProbeResponse>, Status> {
        let actor = admit(&req, "WriteProbe")?;
        observe(
            "WriteProbe",
            &actor,
            crate::admin::write_probe(&self.core, &actor),
        )
        .await
    }

    async fn sign_release(
        &self,
        req: Request<SignReleaseRequest>,
    ) -> Result<Response<Release>, Status> {
        let actor = admit(&req, "SignRelease")?;
        observe(
            "SignRelease",
            &actor,
            crate::release::sign(&self.core, &actor, req.into_inner()),
        )
        .await
    }

    async fn revoke_release(
        &self,
        req: Request<RevokeReleaseRequest>,
    ) -> Result<Response<Release>, Status> {
        let actor = admit(&req, "RevokeRelease")?;
        observe(
            "RevokeRelease",
            &actor,
            crate::release::revoke(&self.core, &actor, req.into_inner()),
        )
        .await
    }

    async fn set_release_policy(
        &self,
        req: Request<SetReleasePolicyRequest>,
    ) -> Result<Response<ReleasePolicy>, Status> {
        let actor = admit(&req, "SetReleasePolicy")?;
        observe(
            "SetReleasePolicy",
            &actor,
            crate::release::set_policy(&self.core, &actor, req.into_inner()),
        )
        .await
    }

    async fn list_releases(
        &self,
        req: Request<ListReleasesRequest>,
    ) -> Result<Response<ListReleasesResponse>, Status> {
        let actor = admit(&req, "ListReleases")?;
        observe("ListReleases", &actor, async {
            crate::release::list(&self.core)
        })
        .await
    }
}
