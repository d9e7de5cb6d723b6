//! Shared by the risk service's tests: transactions, a fake biometric unit, and a service
//! wired in memory with a clock the test moves.

#![allow(dead_code)]

use std::sync::Arc;
use tonic::{Code, Request};
use yunkey_proto::v1::risk_service_server::RiskService;
use yunkey_proto::v1::{
    AssessRiskRequest, AuthenticateUserRequest, BiometricEvidence, EnrollFaceRequest, Geolocation,
    RiskContext, RiskDecision, RiskVerdict, Transaction, UserAuthentication,
};
use yunkey_risk::assess::Assessor;
use yunkey_risk::clock::ManualClock;
use yunkey_risk::embed::{EmbedFuture, Embedder, Embedding};
use yunkey_risk::faces::Faces;
use yunkey_risk::reload::RulesHandle;
use yunkey_risk::service::RiskGrpc;
use yunkey_risk::store::RiskStore;
use yunkey_risk::template::TemplateKey;
use yunkey_risk::{RiskError, Rules};

/// 2024-01-02 12:00:00 UTC.
pub const NOON: i64 = 19_724 * 86_400 + 12 * 3600;

/// A transaction of `amount` `currency` to `payee`, expiring 5 minutes after `now`.
pub fn tx(amount: &str, currency: &str, payee: &str, now: i64) -> Transaction {
    Transaction {
        payer: "acct-alice".into(),
        payee: payee.into(),
        amount: amount.into(),
        currency: currency.into(),
        transaction_id: format!("t-{}", hex::encode(yunkey_crypto::random_bytes::<6>())),
        nonce: yunkey_crypto::random_bytes::<16>().to_vec(),
        expires_at: now + 300,
    }
}

/// The canonical hash of `tx`.
pub fn hash(tx: &Transaction) -> Vec<u8> {
    yunkey_crypto::tx::encode_and_hash(tx).unwrap().1.to_vec()
}

/// An AssessRisk request for `user` and `tx`.
pub fn assess_req(user: &str, tx: &Transaction) -> AssessRiskRequest {
    AssessRiskRequest {
        user_id: user.into(),
        device_id: "dev-1".into(),
        tx_hash: hash(tx),
        transaction: Some(tx.clone()),
        context: Some(RiskContext {
            channel: "terminal".into(),
            ..RiskContext::default()
        }),
        authentication: None,
    }
}

/// The same request, at a location.
pub fn at(mut req: AssessRiskRequest, latitude: f64, longitude: f64) -> AssessRiskRequest {
    req.context.get_or_insert_with(Default::default).location = Some(Geolocation {
        latitude,
        longitude,
    });
    req
}

/// The same request, with an authentication id.
pub fn with_auth(mut req: AssessRiskRequest, id: &str) -> AssessRiskRequest {
    req.authentication = Some(UserAuthentication {
        decision_id: id.into(),
        method: "face".into(),
    });
    req
}

/// A fake biometric unit: the image `face:<x>` has the embedding `[x, 0, 0]`; `noface` is
/// refused as the real unit would refuse it.
#[derive(Debug, Default)]
pub struct FakeEmbedder;

impl Embedder for FakeEmbedder {
    fn embed<'a>(&'a self, image: &'a [u8]) -> EmbedFuture<'a> {
        Box::pin(async move {
            let text = std::str::from_utf8(image).unwrap_or("");
            match text
                .strip_prefix("face:")
                .and_then(|x| x.parse::<f32>().ok())
            {
                Some(x) => Ok(Embedding {
                    values: vec![x, 0.0, 0.0],
                    model: "fake-model".into(),
                }),
                None => Err(RiskError::Evidence("no face found in the image".into())),
            }
        })
    }
}

/// A risk service wired in memory (or on `store`), with a manual clock.
pub struct Env {
    pub svc: RiskGrpc,
    pub clock: ManualClock,
    pub rules: RulesHandle,
    pub store: RiskStore,
}

impl Env {
    pub fn new(rules: &str) -> Self {
        Self::on(RiskStore::memory(), rules, NOON)
    }

    pub fn on(store: RiskStore, rules: &str, now: i64) -> Self {
        let rules = RulesHandle::new(Rules::parse(rules).expect("test rules"));
        let clock = ManualClock::at(now);
        let assessor = Arc::new(Assessor::new(
            store.clone(),
            rules.clone(),
            Arc::new(clock.clone()),
        ));
        let faces = Arc::new(Faces::new(
            store.clone(),
            TemplateKey::from_bytes([7; 32]),
            Some(Arc::new(FakeEmbedder)),
            rules.clone(),
            Arc::new(clock.clone()),
        ));
        Self {
            svc: RiskGrpc::new(assessor, faces),
            clock,
            rules,
            store,
        }
    }

    pub fn now(&self) -> i64 {
        use yunkey_risk::clock::Clock;
        self.clock.now()
    }

    pub fn tx(&self, amount: &str) -> Transaction {
        tx(amount, "EUR", "shop", self.now())
    }

    pub async fn assess(&self, req: AssessRiskRequest) -> Result<RiskDecision, tonic::Status> {
        self.svc
            .assess_risk(Request::new(req))
            .await
            .map(|r| r.into_inner())
    }

    /// Assesses `tx` for `user` and returns the verdict.
    pub async fn verdict(&self, user: &str, tx: &Transaction) -> RiskVerdict {
        verdict(&self.assess(assess_req(user, tx)).await.unwrap())
    }

    pub async fn enroll(&self, user: &str, image: &str) -> Result<i64, tonic::Status> {
        self.svc
            .enroll_face(Request::new(EnrollFaceRequest {
                user_id: user.into(),
                face_image: image.as_bytes().to_vec(),
            }))
            .await
            .map(|r| r.into_inner().enrolled_at)
    }

    pub async fn authenticate(
        &self,
        user: &str,
        tx: &Transaction,
        image: &str,
    ) -> Result<yunkey_proto::v1::AuthenticationResult, tonic::Status> {
        self.svc
            .authenticate_user(Request::new(AuthenticateUserRequest {
                user_id: user.into(),
                tx_hash: hash(tx),
                evidence: Some(BiometricEvidence {
                    face_image: image.as_bytes().to_vec(),
                }),
            }))
            .await
            .map(|r| r.into_inner())
    }
}

pub fn verdict(d: &RiskDecision) -> RiskVerdict {
    RiskVerdict::try_from(d.verdict).unwrap()
}

pub fn fired(d: &RiskDecision) -> Vec<&str> {
    d.reasons.iter().map(|r| r.rule.as_str()).collect()
}

/// Asserts `r` failed with `code` and a message containing `text`.
pub fn assert_status<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, text: &str) {
    let e = r.expect_err("expected an error");
    assert_eq!(e.code(), code, "{e:?}");
    assert!(
        e.message().contains(text),
        "{:?} does not contain {text:?}",
        e.message()
    );
}
