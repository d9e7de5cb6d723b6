//! Bad input gets INVALID_ARGUMENT naming the field; face enrolment, deletion and the
//! biometric unit's refusals reach the caller with clear statuses; templates are stored
//! sealed.

mod common;

use common::*;
use std::sync::Arc;
use tonic::{Code, Request};
use yunkey_proto::v1::risk_service_server::RiskService;
use yunkey_proto::v1::{
    AuthenticateUserRequest, DeleteFaceRequest, EnrollFaceRequest, Geolocation,
};
use yunkey_risk::assess::Assessor;
use yunkey_risk::faces::Faces;
use yunkey_risk::service::RiskGrpc;
use yunkey_risk::template::TemplateKey;

#[tokio::test]
async fn malformed_assessments_are_invalid_argument() {
    let env = Env::new("format = 1");
    let tx = env.tx("10");
    let good = assess_req("alice", &tx);

    let mut r = good.clone();
    r.user_id.clear();
    assert_status(
        env.assess(r).await,
        Code::InvalidArgument,
        "user_id: must not be empty",
    );

    let mut r = good.clone();
    r.user_id = "alice smith".into();
    assert_status(env.assess(r).await, Code::InvalidArgument, "user_id");

    let mut r = good.clone();
    r.tx_hash.pop();
    assert_status(
        env.assess(r).await,
        Code::InvalidArgument,
        "tx_hash: is 31 bytes",
    );

    let mut r = good.clone();
    r.tx_hash = vec![0; 33];
    assert_status(
        env.assess(r).await,
        Code::InvalidArgument,
        "tx_hash: is 33 bytes",
    );

    let mut r = good.clone();
    r.tx_hash[0] ^= 1;
    assert_status(
        env.assess(r).await,
        Code::InvalidArgument,
        "is not the hash of the transaction",
    );

    // The hash of another transaction.
    let mut r = good.clone();
    r.tx_hash = hash(&env.tx("10"));
    assert_status(
        env.assess(r).await,
        Code::InvalidArgument,
        "is not the hash of the transaction",
    );

    let mut r = good.clone();
    r.transaction = None;
    assert_status(
        env.assess(r).await,
        Code::InvalidArgument,
        "transaction: is missing",
    );

    let mut r = good.clone();
    r.transaction.as_mut().unwrap().amount = "10.50".into();
    assert_status(
        env.assess(r).await,
        Code::InvalidArgument,
        "transaction.amount",
    );

    let mut r = good.clone();
    r.transaction.as_mut().unwrap().currency = "eur".into();
    assert_status(
        env.assess(r).await,
        Code::InvalidArgument,
        "transaction.currency",
    );

    let mut r = good.clone();
    r.context.as_mut().unwrap().location = Some(Geolocation {
        latitude: 95.0,
        longitude: 0.0,
    });
    assert_status(
        env.assess(r).await,
        Code::InvalidArgument,
        "context.location",
    );

    let mut r = good.clone();
    r.context.as_mut().unwrap().device_registered_at = -5;
    assert_status(
        env.assess(r).await,
        Code::InvalidArgument,
        "context.device_registered_at",
    );

    // No context at all is fine.
    let mut r = good.clone();
    r.context = None;
    assert!(env.assess(r).await.is_ok());
}

#[tokio::test]
async fn faces_enrol_authenticate_and_delete() {
    let env = Env::new("format = 1\n[face]\nthreshold = 0.25");
    let tx = env.tx("10");
    assert_status(
        env.authenticate("alice", &tx, "face:1").await,
        Code::NotFound,
        "user alice has no face template; enrol one with `yunkey user face-enroll`",
    );
    assert_eq!(env.enroll("alice", "face:1").await.unwrap(), NOON);
    let r = env.authenticate("alice", &tx, "face:1.25").await.unwrap();
    assert!(r.matched, "distance equal to the threshold matches");
    assert_eq!(r.threshold, 0.25);
    let r = env.authenticate("alice", &tx, "face:1.3").await.unwrap();
    assert!(!r.matched);
    // Re-enrolment replaces the template.
    env.enroll("alice", "face:3").await.unwrap();
    assert!(
        env.authenticate("alice", &tx, "face:3")
            .await
            .unwrap()
            .matched
    );
    assert!(
        !env.authenticate("alice", &tx, "face:1")
            .await
            .unwrap()
            .matched
    );

    // The biometric unit's refusal passes through.
    assert_status(
        env.authenticate("alice", &tx, "noface").await,
        Code::InvalidArgument,
        "no face found in the image",
    );
    assert_status(
        env.enroll("bob", "noface").await,
        Code::InvalidArgument,
        "no face found",
    );

    // Stored sealed: the record holds no plaintext embedding or model name.
    let rec = env.store.face("alice").unwrap().unwrap();
    assert_eq!(rec.sealed[0], yunkey_risk::template::SEALED_VERSION);
    assert!(!rec.sealed.windows(10).any(|w| w == b"fake-model"));
    assert!(!rec.sealed.windows(4).any(|w| w == 3.0f32.to_le_bytes()));

    let delete = |user: &str| {
        env.svc.delete_face(Request::new(DeleteFaceRequest {
            user_id: user.into(),
        }))
    };
    assert!(delete("alice").await.unwrap().into_inner().deleted);
    assert!(!delete("alice").await.unwrap().into_inner().deleted);
    assert_status(
        env.authenticate("alice", &tx, "face:3").await,
        Code::NotFound,
        "no face template",
    );
    assert_status(delete("").await, Code::InvalidArgument, "user_id");
}

#[tokio::test]
async fn malformed_face_requests_are_invalid_argument() {
    let env = Env::new("format = 1");
    env.enroll("alice", "face:1").await.unwrap();
    let tx = env.tx("10");
    let auth = |req: AuthenticateUserRequest| env.svc.authenticate_user(Request::new(req));
    let mut good = AuthenticateUserRequest {
        user_id: "alice".into(),
        tx_hash: hash(&tx),
        evidence: Some(yunkey_proto::v1::BiometricEvidence {
            face_image: b"face:1".to_vec(),
        }),
    };
    assert!(auth(good.clone()).await.unwrap().into_inner().matched);
    good.tx_hash.truncate(8);
    assert_status(
        auth(good.clone()).await,
        Code::InvalidArgument,
        "tx_hash: is 8 bytes",
    );
    good.tx_hash = hash(&tx);
    good.evidence = None;
    assert_status(
        auth(good.clone()).await,
        Code::InvalidArgument,
        "evidence: is missing",
    );
    good.evidence = Some(Default::default());
    assert_status(
        auth(good.clone()).await,
        Code::InvalidArgument,
        "evidence.face_image: is empty",
    );
    good.evidence.as_mut().unwrap().face_image = vec![0; 4 * 1024 * 1024 + 1];
    assert_status(
        auth(good.clone()).await,
        Code::InvalidArgument,
        "at most 4194304",
    );
    let r = env
        .svc
        .enroll_face(Request::new(EnrollFaceRequest {
            user_id: String::new(),
            face_image: b"face:1".to_vec(),
        }))
        .await;
    assert_status(r, Code::InvalidArgument, "user_id");
}

#[tokio::test]
async fn without_a_biometric_unit_faces_are_refused_clearly() {
    let env = Env::new("format = 1");
    let clock = Arc::new(env.clock.clone());
    let assessor = Arc::new(Assessor::new(
        env.store.clone(),
        env.rules.clone(),
        clock.clone(),
    ));
    let faces = Arc::new(Faces::new(
        env.store.clone(),
        TemplateKey::generate(),
        None,
        env.rules.clone(),
        clock,
    ));
    let svc = RiskGrpc::new(assessor, faces);
    let r = svc
        .enroll_face(Request::new(EnrollFaceRequest {
            user_id: "alice".into(),
            face_image: b"face:1".to_vec(),
        }))
        .await;
    assert_status(r, Code::FailedPrecondition, "--face");
}

#[tokio::test]
async fn a_template_sealed_under_another_key_is_not_opened() {
    let env = Env::new("format = 1");
    env.enroll("alice", "face:1").await.unwrap();
    // The same store, another template key.
    let clock = Arc::new(env.clock.clone());
    let assessor = Arc::new(Assessor::new(
        env.store.clone(),
        env.rules.clone(),
        clock.clone(),
    ));
    let faces = Arc::new(Faces::new(
        env.store.clone(),
        TemplateKey::generate(),
        Some(Arc::new(FakeEmbedder)),
        env.rules.clone(),
        clock,
    ));
    let other = Env {
        svc: RiskGrpc::new(assessor, faces),
        clock: env.clock.clone(),
        rules: env.rules.clone(),
        store: env.store.clone(),
    };
    assert_status(
        other.authenticate("alice", &env.tx("1"), "face:1").await,
        Code::Internal,
        "wrong --template-key",
    );
}
