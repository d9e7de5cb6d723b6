//! Users' face templates at the risk service (`KeyService.EnrollFace`/`DeleteFace`): the
//! coordinator checks the user and the photo, forwards the call, and records that it happened
//! (never the photo) in the audit trail.

use super::{check_face_image, RiskGate};
use crate::core::Core;
use crate::error::{CoordError, Result};
use crate::state::{Op, UserEvent};
use tonic::Code;
use yunkey_crypto::validate;
use yunkey_proto::v1 as pb;

fn gate(core: &Core) -> Result<&RiskGate> {
    core.risk.as_ref().ok_or_else(|| {
        CoordError::FailedPrecondition(
            "this cluster has no risk service (start the coordinators with --risk-endpoint), \
             so it keeps no face templates"
                .into(),
        )
    })
}

fn enrolled_user(core: &Core, user_id: &str) -> Result<()> {
    validate::identifier("user_id", user_id)?;
    core.view
        .user(user_id)?
        .ok_or_else(|| CoordError::UserNotFound(user_id.to_owned()))?;
    Ok(())
}

/// The risk service's refusal, passed on: its INVALID_ARGUMENT and NOT_FOUND are the
/// caller's to fix; anything else means it could not do it.
fn forwarded(rpc: &str, status: tonic::Status) -> CoordError {
    match status.code() {
        Code::InvalidArgument => CoordError::InvalidArgument(validate::InvalidField::new(
            "face_image",
            status.message().to_owned(),
        )),
        Code::NotFound => CoordError::FailedPrecondition(status.message().to_owned()),
        code => CoordError::Unavailable(format!(
            "the risk service did not complete {rpc}: {code:?}: {}",
            status.message()
        )),
    }
}

/// Puts what was done with a template in the user's audit trail.
async fn record(core: &Core, actor: &str, user_id: String, event: UserEvent) -> Result<()> {
    core.propose("", actor, Op::RecordUserEvent { user_id, event })
        .await
        .map(|_| ())
}

/// Stores a user's face template at the risk service.
pub async fn enroll(
    core: &Core,
    actor: &str,
    req: pb::EnrollFaceRequest,
) -> Result<pb::EnrollFaceResponse> {
    enrolled_user(core, &req.user_id)?;
    check_face_image("face_image", &req.face_image)?;
    let gate = gate(core)?;
    let user_id = req.user_id.clone();
    let mut call = tonic::Request::new(req);
    // Making a template takes longer than a decision: a photo goes through the recogniser.
    call.set_timeout(gate.timeout() * 5);
    let answer = gate
        .client()
        .enroll_face(call)
        .await
        .map_err(|s| forwarded("EnrollFace", s))?
        .into_inner();
    record(core, actor, user_id, UserEvent::FaceEnrolled).await?;
    Ok(answer)
}

/// Deletes a user's face template at the risk service.
pub async fn delete(
    core: &Core,
    actor: &str,
    req: pb::DeleteFaceRequest,
) -> Result<pb::DeleteFaceResponse> {
    // A user who is gone may still have a template to delete: only the id's form is checked.
    validate::identifier("user_id", &req.user_id)?;
    let gate = gate(core)?;
    let user_id = req.user_id.clone();
    let mut call = tonic::Request::new(req);
    call.set_timeout(gate.timeout());
    let answer = gate
        .client()
        .delete_face(call)
        .await
        .map_err(|s| forwarded("DeleteFace", s))?
        .into_inner();
    let deleted = answer.deleted;
    record(core, actor, user_id, UserEvent::FaceDeleted { deleted }).await?;
    Ok(answer)
}
