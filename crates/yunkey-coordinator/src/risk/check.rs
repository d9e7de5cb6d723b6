//! One transaction through the risk checks: assess, step up with the face, assess again.

use super::convert::{fired, reasons_text, verdict};
use super::RiskGate;
use crate::state::{FiredRule, RiskCheck, Verdict};
use tonic::transport::Channel;
use tonic::Code;
use yunkey_proto::v1 as pb;
use yunkey_proto::v1::risk_service_client::RiskServiceClient;

/// What the sign path asks about.
#[derive(Debug)]
pub struct Subject<'a> {
    /// Whose key.
    pub user_id: &'a str,
    /// The authorizing device.
    pub device_id: &'a str,
    /// The transaction.
    pub transaction: &'a pb::Transaction,
    /// Its canonical hash.
    pub tx_hash: [u8; 32],
    /// Where and when.
    pub context: pb::RiskContext,
    /// The user's face, when the request carries it.
    pub evidence: Option<&'a pb::BiometricEvidence>,
}

/// Why the checks refused a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// DENY, or no ALLOW after a step-up.
    Denied,
    /// STEP_UP and the request carries no face evidence.
    StepUpRequired,
    /// The face did not match.
    FaceMismatch,
    /// The risk service gave no usable answer, or the step-up could not be completed for a
    /// reason on its side; the deployment fails closed.
    NoAnswer,
    /// The face evidence cannot be used (the status code the risk service gave:
    /// INVALID_ARGUMENT for the photo, NOT_FOUND for a user without a face template).
    Evidence(Code),
}

/// What the checks decided.
#[derive(Debug)]
pub struct Outcome {
    /// For the audit trail.
    pub record: RiskCheck,
    /// `None`: sign.
    pub refusal: Option<(Refusal, String)>,
}

struct Decision {
    id: String,
    verdict: Verdict,
    reasons: Vec<FiredRule>,
}

/// Runs the risk checks of one transaction. Never fails: a risk service that cannot be used
/// is an outcome ([`Refusal::NoAnswer`], or signing failed open).
pub async fn check(gate: &RiskGate, s: &Subject<'_>) -> Outcome {
    let mut record = RiskCheck::default();
    let first = match assess(gate, s, None).await {
        Ok(d) => d,
        Err(failure) => return no_answer(gate, record, failure, true),
    };
    record.assessment_ids.push(first.id.clone());
    let decision = match first.verdict {
        Verdict::Allow | Verdict::Deny => first,
        Verdict::StepUp => {
            let Some(evidence) = s.evidence else {
                let message = format!(
                    "step-up required: the risk service asks for the user's face before this \
                     transaction is signed ({}; decision {}). Send the same request again with \
                     face evidence (yunkey terminal pay --face PHOTO); nothing was consumed",
                    reasons_text(&first.reasons),
                    first.id
                );
                record.verdict = Some(Verdict::StepUp);
                record.reasons = first.reasons;
                return refused(record, Refusal::StepUpRequired, message);
            };
            let auth = match authenticate(gate, s, evidence).await {
                Ok(a) => a,
                Err(AuthFailure::Evidence(code, message)) => {
                    record.verdict = Some(Verdict::StepUp);
                    record.reasons = first.reasons;
                    return refused(
                        record,
                        Refusal::Evidence(code),
                        format!("the face evidence was not checked: {message}"),
                    );
                }
                // A step-up was asked for: failing open here would sign a transaction the
                // risk service wanted checked. Always closed.
                Err(AuthFailure::NoAnswer(failure)) => {
                    return no_answer(gate, record, failure, false)
                }
            };
            record.authentication_id = auth.decision_id.clone();
            record.authentication_matched = auth.matched;
            if !auth.matched {
                let message = format!(
                    "the face does not match user {:?}'s enrolled face (score {:.3}, threshold \
                     {:.3}; authentication {}): the transaction is terminated",
                    s.user_id, auth.score, auth.threshold, auth.decision_id
                );
                record.verdict = Some(Verdict::StepUp);
                record.reasons = first.reasons;
                return refused(record, Refusal::FaceMismatch, message);
            }
            let authentication = pb::UserAuthentication {
                decision_id: auth.decision_id,
                method: "face".into(),
            };
            match assess(gate, s, Some(authentication)).await {
                Ok(second) => {
                    record.assessment_ids.push(second.id.clone());
                    second
                }
                Err(failure) => return no_answer(gate, record, failure, false),
            }
        }
    };
    record.verdict = Some(decision.verdict);
    record.reasons = decision.reasons;
    metrics::counter!("yunkey_risk_decisions_total", "verdict" => verdict_name(decision.verdict))
        .increment(1);
    match decision.verdict {
        Verdict::Allow => Outcome {
            record,
            refusal: None,
        },
        Verdict::Deny => {
            let message = format!(
                "the risk service denied this transaction ({}; decision {}): it is terminated",
                reasons_text(&record.reasons),
                decision.id
            );
            refused(record, Refusal::Denied, message)
        }
        Verdict::StepUp => {
            let message = format!(
                "the risk service still asks for a step-up after the face matched ({}; decision \
                 {}): the transaction is terminated",
                reasons_text(&record.reasons),
                decision.id
            );
            refused(record, Refusal::Denied, message)
        }
    }
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::StepUp => "step_up",
        Verdict::Deny => "deny",
    }
}

fn refused(record: RiskCheck, refusal: Refusal, message: String) -> Outcome {
    Outcome {
        record,
        refusal: Some((refusal, message)),
    }
}

/// The risk service could not be used. The first assessment may fail open when the
/// deployment says so; nothing else does.
fn no_answer(
    gate: &RiskGate,
    mut record: RiskCheck,
    failure: String,
    may_fail_open: bool,
) -> Outcome {
    metrics::counter!("yunkey_risk_failures_total").increment(1);
    record.failure = failure.clone();
    if may_fail_open && gate.fail_open {
        metrics::counter!("yunkey_risk_failed_open_total").increment(1);
        tracing::warn!(target: "yunkey::audit", endpoint = gate.endpoint(), %failure, "risk service gave no usable answer: signing without a decision (--risk-fail-open)");
        record.failed_open = true;
        return Outcome {
            record,
            refusal: None,
        };
    }
    tracing::warn!(endpoint = gate.endpoint(), %failure, "risk service gave no usable answer: signature refused");
    let message = format!(
        "the risk service gave no usable answer ({failure}): signing refused, this deployment \
         fails closed. Nothing was consumed: send the same request again later"
    );
    refused(record, Refusal::NoAnswer, message)
}

async fn assess(
    gate: &RiskGate,
    s: &Subject<'_>,
    authentication: Option<pb::UserAuthentication>,
) -> Result<Decision, String> {
    let request = pb::AssessRiskRequest {
        user_id: s.user_id.to_owned(),
        device_id: s.device_id.to_owned(),
        transaction: Some(s.transaction.clone()),
        tx_hash: s.tx_hash.to_vec(),
        context: Some(s.context.clone()),
        authentication,
    };
    let answer = call(
        gate,
        "AssessRisk",
        |mut client, req| async move { client.assess_risk(req).await },
        request,
    )
    .await
    .map_err(|f| f.to_string())?;
    if answer.decision_id.is_empty() || answer.decision_id.len() > 128 {
        return Err(format!(
            "AssessRisk answered with a decision id of {} bytes (1 to 128)",
            answer.decision_id.len()
        ));
    }
    if answer.tx_hash != s.tx_hash {
        return Err(format!(
            "AssessRisk decision {} is for another transaction",
            answer.decision_id
        ));
    }
    let now = crate::clock::now();
    if answer.expires_at <= now {
        return Err(format!(
            "AssessRisk decision {} had expired when it arrived (expires_at {}, now {now})",
            answer.decision_id, answer.expires_at
        ));
    }
    Ok(Decision {
        verdict: verdict(answer.verdict),
        reasons: fired(&answer.reasons),
        id: answer.decision_id,
    })
}

enum AuthFailure {
    Evidence(Code, String),
    NoAnswer(String),
}

async fn authenticate(
    gate: &RiskGate,
    s: &Subject<'_>,
    evidence: &pb::BiometricEvidence,
) -> Result<pb::AuthenticationResult, AuthFailure> {
    let request = pb::AuthenticateUserRequest {
        user_id: s.user_id.to_owned(),
        tx_hash: s.tx_hash.to_vec(),
        evidence: Some(evidence.clone()),
    };
    let answer = call(
        gate,
        "AuthenticateUser",
        |mut client, req| async move { client.authenticate_user(req).await },
        request,
    )
    .await
    .map_err(|failure| match failure.code {
        // The photo, or a user without a template: the caller's to fix.
        Some(code @ (Code::InvalidArgument | Code::NotFound)) => {
            AuthFailure::Evidence(code, failure.message)
        }
        _ => AuthFailure::NoAnswer(failure.to_string()),
    })?;
    if answer.decision_id.is_empty() || answer.decision_id.len() > 128 {
        return Err(AuthFailure::NoAnswer(format!(
            "AuthenticateUser answered with a decision id of {} bytes (1 to 128)",
            answer.decision_id.len()
        )));
    }
    if answer.tx_hash != s.tx_hash {
        return Err(AuthFailure::NoAnswer(format!(
            "AuthenticateUser result {} is for another transaction",
            answer.decision_id
        )));
    }
    Ok(answer)
}

/// A call that gave no answer.
struct CallFailure {
    rpc: &'static str,
    /// The status code, when the service answered with one.
    code: Option<Code>,
    message: String,
}

impl std::fmt::Display for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "{}: {code:?}: {}", self.rpc, self.message),
            None => write!(f, "{}: {}", self.rpc, self.message),
        }
    }
}

/// One call with the gate's deadline (sent as the gRPC timeout and enforced here too).
async fn call<Req, Resp, F, Fut>(
    gate: &RiskGate,
    rpc: &'static str,
    f: F,
    request: Req,
) -> Result<Resp, CallFailure>
where
    F: FnOnce(RiskServiceClient<Channel>, tonic::Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
{
    let mut req = tonic::Request::new(request);
    req.set_timeout(gate.timeout());
    match tokio::time::timeout(gate.timeout(), f(gate.client(), req)).await {
        Err(_) => Err(CallFailure {
            rpc,
            code: None,
            message: format!("no answer within {:?}", gate.timeout()),
        }),
        Ok(Err(status)) => Err(CallFailure {
            rpc,
            code: Some(status.code()),
            message: status.message().to_owned(),
        }),
        Ok(Ok(answer)) => Ok(answer.into_inner()),
    }
}
