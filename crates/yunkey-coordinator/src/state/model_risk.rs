//! Stored records of the business transaction module's checks (docs/risk.md): what the risk
//! service and the biometric unit decided about a signature, kept with the signature or the
//! refusal in the audit trail, and the per-user audit index.

use serde::{Deserialize, Serialize};

/// The risk service's verdict, as stored (the `RiskVerdict` numbers of `risk.proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Sign.
    Allow,
    /// Sign only after the user authenticated.
    StepUp,
    /// Terminate.
    Deny,
}

/// One rule that fired, as the risk service named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FiredRule {
    /// The rule's name.
    pub rule: String,
    /// What it saw.
    pub detail: String,
    /// What it asked for.
    pub verdict: Verdict,
}

/// What the risk checks of one transaction decided.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskCheck {
    /// The assessments, in order (one, or two around a step-up).
    pub assessment_ids: Vec<String>,
    /// The user authentication asked for by a step-up (empty: none).
    pub authentication_id: String,
    /// Whether it matched.
    pub authentication_matched: bool,
    /// The verdict acted on (`None`: no usable answer; see `failure`).
    pub verdict: Option<Verdict>,
    /// The rules that fired in the decision acted on.
    pub reasons: Vec<FiredRule>,
    /// Signed without a decision because the risk service failed and the deployment fails
    /// open.
    pub failed_open: bool,
    /// Why the risk service gave no usable answer (empty when it did).
    pub failure: String,
}

/// Something about a user that changes no state and is kept for the audit trail only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserEvent {
    /// The risk checks refused a signature (denied, a step-up asked for, a face that did not
    /// match, or no answer with the deployment failing closed). Nothing was consumed.
    SignRefused {
        /// The authorizing device.
        device_id: String,
        /// The transaction.
        tx_hash: [u8; 32],
        /// What was decided.
        risk: RiskCheck,
        /// The refusal as the caller was told it.
        refusal: String,
    },
    /// A face template was stored at the risk service.
    FaceEnrolled,
    /// The user's face template was deleted at the risk service (`deleted`: one was there).
    FaceDeleted {
        /// Whether a template was there.
        deleted: bool,
    },
}

/// One line of a user's audit trail (the `w/` index; the cluster-wide trail is `a/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAuditRecord {
    /// The position in the cluster-wide trail.
    pub seq: u64,
    /// Unix seconds.
    pub at: i64,
    /// Who asked.
    pub actor: String,
    /// The command's kind (`sign`, `sign_refused`, `enroll`, ...).
    pub action: String,
    /// `ok` or the rejection.
    pub outcome: String,
    /// The transaction, for signatures and refused signatures.
    pub tx_hash: Option<[u8; 32]>,
    /// The risk checks, for signatures and refused signatures (`None`: no risk service).
    pub risk: Option<RiskCheck>,
}
