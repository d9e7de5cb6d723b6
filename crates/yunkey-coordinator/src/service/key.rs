//! `KeyService`: the business backends' API (role `client`).

use super::{observe, observe_typed};
use crate::core::Core;
use crate::error::CoordError;
use crate::state::{Op, UserState};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use yunkey_crypto::validate;
use yunkey_net::role::{self, Role};
use yunkey_proto::v1::key_service_server::KeyService;
use yunkey_proto::v1::{
    DeleteFaceRequest, DeleteFaceResponse, EnrollFaceRequest, EnrollFaceResponse,
    EnrollUserRequest, EnrollUserResponse, GetUserAuditRequest, GetUserAuditResponse,
    GetUserRequest, ReactivateUserRequest, ReactivateUserResponse, ReadConsistency,
    RevokeDeviceRequest, RevokeUserRequest, SignBatchRequest, SignBatchResponse, SignRequest,
    SignResponse, SignResult, User, VerifyRequest, VerifyResponse,
};

/// The `KeyService` implementation.
#[derive(Debug, Clone)]
pub struct KeyApi {
    core: Arc<Core>,
}

impl KeyApi {
    /// A service over `core`.
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

/// The caller's name for the audit trail, after checking its role: `client`, as every
/// `KeyService` row of the access table says (`yunkey_net::access::RPC_ROLES`; the access
/// layer has checked it already).
fn admit<T>(req: &Request<T>) -> Result<String, Status> {
    role::require(req, &[Role::Client])?;
    Ok(role::peer_name(req))
}

/// Reads a user, linearizably unless the caller accepts stale state.
pub(crate) async fn get_user(core: &Core, req: GetUserRequest) -> Result<User, CoordError> {
    validate::identifier("user_id", &req.user_id)?;
    if req.consistency() != ReadConsistency::Stale {
        core.raft.ensure_linearizable().await?;
    }
    let user = core
        .view
        .user(&req.user_id)?
        .ok_or_else(|| CoordError::UserNotFound(req.user_id.clone()))?;
    crate::convert::user(&core.view, &user)
}

async fn revoke(core: &Core, actor: &str, req: RevokeUserRequest) -> Result<User, CoordError> {
    validate::identifier("user_id", &req.user_id)?;
    validate::text("reason", &req.reason, 256, true)?;
    let request_id =
        crate::enroll::request_id(&req.request_id, || format!("revoke-{}", req.user_id))?;
    let Some(user) = core.view.user(&req.user_id)? else {
        return Err(CoordError::UserNotFound(req.user_id));
    };
    // A holder revokes the key's binding first, so that no chip signs for the user again,
    // whoever asks; the revocation commits even if no holder answers (logged).
    let revoked = if user.state == UserState::Active {
        crate::devices::revoke_in_chips(core, &user, None).await
    } else {
        None
    };
    core.propose(
        &request_id,
        actor,
        Op::RevokeUser {
            user_id: req.user_id.clone(),
            reason: req.reason.clone(),
            rebinding: revoked.as_ref().map(|(_, r)| r.clone()),
        },
    )
    .await
    .map_err(|e| match e {
        CoordError::UserNotFound(_) => CoordError::UserNotFound(req.user_id.clone()),
        other => other,
    })?;
    if let Some((chip, r)) = revoked {
        crate::bindings::push(core, &req.user_id, &user.holders, &chip, &r).await;
    }
    let user = core
        .view
        .user(&req.user_id)?
        .ok_or_else(|| CoordError::UserNotFound(req.user_id.clone()))?;
    tracing::info!(target: "yunkey::audit", actor, user = %req.user_id, "user revoked");
    crate::convert::user(&core.view, &user)
}

/// `SignBatch`: each item signed as `Sign` would sign it alone, on its own task (so that the
/// items' checks spread over the runtime's threads and their commands and chip calls are
/// batched together), each recorded as a `SignBatchItem` request; answered in the items'
/// order.
async fn sign_batch(
    core: &Arc<Core>,
    actor: &str,
    source: Option<std::net::SocketAddr>,
    req: SignBatchRequest,
) -> Result<SignBatchResponse, CoordError> {
    use crate::signing::MAX_BATCH_ITEMS;
    use yunkey_proto::v1::sign_result::Result as Outcome;
    let n = req.items.len();
    if n == 0 || n > MAX_BATCH_ITEMS {
        return Err(validate::InvalidField::new(
            "items",
            format!("has {n} items; send 1 to {MAX_BATCH_ITEMS} (more in further calls)"),
        )
        .into());
    }
    let tasks: Vec<_> = req
        .items
        .into_iter()
        .map(|item| {
            let (core, actor) = (core.clone(), actor.to_owned());
            tokio::spawn(async move {
                let caller = crate::signing::Caller {
                    actor: &actor,
                    channel: "business",
                    source,
                };
                let signed = crate::signing::sign(&core, caller, item);
                observe_typed("SignBatchItem", &actor, signed).await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for task in tasks {
        let outcome = match task.await {
            Ok(Ok(signed)) => Outcome::Signed(signed),
            Ok(Err(e)) => Outcome::Error(e.to_item_error()),
            Err(e) => Outcome::Error(
                CoordError::Internal(format!("a batch item's task failed: {e}")).to_item_error(),
            ),
        };
        results.push(SignResult {
            result: Some(outcome),
        });
    }
    Ok(SignBatchResponse { results })
}

#[tonic::async_trait]
impl KeyService for KeyApi {
    async fn enroll_user(
        &self,
        req: Request<EnrollUserRequest>,
    ) -> Result<Response<EnrollUserResponse>, Status> {
        let actor = admit(&req)?;
        let req = req.into_inner();
        let user = req.user_id.clone();
        let r = observe(
            "EnrollUser",
            &actor,
            crate::enroll::enroll(&self.core, &actor, req),
        )
        .await;
        if r.is_ok() {
            tracing::info!(target: "yunkey::audit", actor, user = %user, "user enrolled");
        }
        r
    }

    async fn get_user(&self, req: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let actor = admit(&req)?;
        observe("GetUser", &actor, get_user(&self.core, req.into_inner())).await
    }

    async fn revoke_user(&self, req: Request<RevokeUserRequest>) -> Result<Response<User>, Status> {
        let actor = admit(&req)?;
        observe(
            "RevokeUser",
            &actor,
            revoke(&self.core, &actor, req.into_inner()),
        )
        .await
    }

    async fn revoke_device(
        &self,
        req: Request<RevokeDeviceRequest>,
    ) -> Result<Response<User>, Status> {
        let actor = admit(&req)?;
        observe(
            "RevokeDevice",
            &actor,
            crate::devices::revoke(&self.core, &actor, req.into_inner()),
        )
        .await
    }

    async fn reactivate_user(
        &self,
        req: Request<ReactivateUserRequest>,
    ) -> Result<Response<ReactivateUserResponse>, Status> {
        let actor = admit(&req)?;
        observe(
            "ReactivateUser",
            &actor,
            crate::devices::activation::reactivate(&self.core, &actor, req.into_inner()),
        )
        .await
    }

    async fn sign(&self, req: Request<SignRequest>) -> Result<Response<SignResponse>, Status> {
        let actor = admit(&req)?;
        let caller = crate::signing::Caller {
            actor: &actor,
            channel: "business",
            source: req.remote_addr(),
        };
        observe(
            "Sign",
            &actor,
            crate::signing::sign(&self.core, caller, req.into_inner()),
        )
        .await
    }

    async fn sign_batch(
        &self,
        req: Request<SignBatchRequest>,
    ) -> Result<Response<SignBatchResponse>, Status> {
        let actor = admit(&req)?;
        let source = req.remote_addr();
        observe(
            "SignBatch",
            &actor,
            sign_batch(&self.core, &actor, source, req.into_inner()),
        )
        .await
    }

    async fn enroll_face(
        &self,
        req: Request<EnrollFaceRequest>,
    ) -> Result<Response<EnrollFaceResponse>, Status> {
        let actor = admit(&req)?;
        observe(
            "EnrollFace",
            &actor,
            crate::risk::faces::enroll(&self.core, &actor, req.into_inner()),
        )
        .await
    }

    async fn delete_face(
        &self,
        req: Request<DeleteFaceRequest>,
    ) -> Result<Response<DeleteFaceResponse>, Status> {
        let actor = admit(&req)?;
        observe(
            "DeleteFace",
            &actor,
            crate::risk::faces::delete(&self.core, &actor, req.into_inner()),
        )
        .await
    }

    async fn get_user_audit(
        &self,
        req: Request<GetUserAuditRequest>,
    ) -> Result<Response<GetUserAuditResponse>, Status> {
        let actor = admit(&req)?;
        observe(
            "GetUserAudit",
            &actor,
            crate::audit::user_audit(&self.core, req.into_inner()),
        )
        .await
    }

    async fn verify(
        &self,
        req: Request<VerifyRequest>,
    ) -> Result<Response<VerifyResponse>, Status> {
        let actor = admit(&req)?;
        observe("Verify", &actor, async {
            crate::signing::verify(&self.core, req.into_inner())
        })
        .await
    }
}
