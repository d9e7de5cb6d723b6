//! `yunkey.v1.RiskService` over gRPC: checks each request ([`crate::request`]), hands it to
//! the [`Assessor`] or [`Faces`], and maps errors to statuses ([`RiskError::to_status`]).
//! Who may call is decided before this, by `yunkey_net::AccessLayer` (role `node`).

use crate::assess::{Assessor, Decision};
use crate::error::RiskError;
use crate::faces::Faces;
use crate::request;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use yunkey_crypto::validate::InvalidField;
use yunkey_proto::v1::risk_service_server::{RiskService, RiskServiceServer};
use yunkey_proto::v1::{
    AssessRiskRequest, AuthenticateUserRequest, AuthenticationResult, DeleteFaceRequest,
    DeleteFaceResponse, EnrollFaceRequest, EnrollFaceResponse, FiredRule, RiskDecision,
    RiskVerdict,
};

/// Largest request the risk service decodes: a 4 MiB image and some room.
pub const MAX_REQUEST_BYTES: usize = crate::embed::MAX_IMAGE_BYTES + 64 * 1024;

/// The RiskService implementation.
#[derive(Debug, Clone)]
pub struct RiskGrpc {
    assessor: Arc<Assessor>,
    faces: Arc<Faces>,
}

impl RiskGrpc {
    /// A service deciding with `assessor` and authenticating with `faces`.
    pub fn new(assessor: Arc<Assessor>, faces: Arc<Faces>) -> Self {
        Self { assessor, faces }
    }

    /// The tonic server, accepting requests up to [`MAX_REQUEST_BYTES`].
    pub fn into_server(self) -> RiskServiceServer<Self> {
        RiskServiceServer::new(self)
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(64 * 1024)
    }
}

/// The wire form of a decision.
pub fn decision_to_proto(d: Decision) -> RiskDecision {
    RiskDecision {
        decision_id: d.id,
        verdict: d.verdict.to_proto() as i32,
        score: d.score,
        reasons: d
            .fired
            .into_iter()
            .map(|f| FiredRule {
                rule: f.rule,
                detail: f.detail,
                verdict: match f.action {
                    crate::rules::Action::StepUp => RiskVerdict::StepUp,
                    crate::rules::Action::Deny => RiskVerdict::Deny,
                } as i32,
            })
            .collect(),
        expires_at: d.expires_at,
        tx_hash: d.tx_hash.to_vec(),
    }
}

#[tonic::async_trait]
impl RiskService for RiskGrpc {
    async fn assess_risk(
        &self,
        req: Request<AssessRiskRequest>,
    ) -> Result<Response<RiskDecision>, Status> {
        let a = request::assessment(req.into_inner())?;
        let d = self.assessor.assess(a).await?;
        Ok(Response::new(decision_to_proto(d)))
    }

    async fn authenticate_user(
        &self,
        req: Request<AuthenticateUserRequest>,
    ) -> Result<Response<AuthenticationResult>, Status> {
        let req = req.into_inner();
        let user = request::user_id(&req.user_id)?;
        let tx_hash = request::tx_hash(&req.tx_hash)?;
        let evidence = req
            .evidence
            .ok_or_else(|| RiskError::from(InvalidField::new("evidence", "is missing")))?;
        request::face_image("evidence.face_image", &evidence.face_image)?;
        let out = self
            .faces
            .authenticate(&user, tx_hash, &evidence.face_image)
            .await?;
        Ok(Response::new(AuthenticationResult {
            matched: out.matched,
            score: out.score,
            threshold: out.threshold,
            decision_id: out.id,
            tx_hash: out.tx_hash.to_vec(),
        }))
    }

    async fn enroll_face(
        &self,
        req: Request<EnrollFaceRequest>,
    ) -> Result<Response<EnrollFaceResponse>, Status> {
        let req = req.into_inner();
        let user = request::user_id(&req.user_id)?;
        request::face_image("face_image", &req.face_image)?;
        let enrolled_at = self.faces.enroll(&user, &req.face_image).await?;
        Ok(Response::new(EnrollFaceResponse { enrolled_at }))
    }

    async fn delete_face(
        &self,
        req: Request<DeleteFaceRequest>,
    ) -> Result<Response<DeleteFaceResponse>, Status> {
        let user = request::user_id(&req.into_inner().user_id)?;
        let deleted = self.faces.delete(&user).await?;
        Ok(Response::new(DeleteFaceResponse { deleted }))
    }
}
