//! The risk service's one error type, mapped to a gRPC status in one place
//! ([`RiskError::to_status`]). No variant carries an image or a template.

use crate::rules::RulesError;
use crate::template::TemplateError;
use yunkey_crypto::validate::InvalidField;
use yunkey_store::StoreError;

/// Why a risk-service call was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RiskError {
    /// A request field is missing or malformed.
    #[error("{0}")]
    Invalid(InvalidField),
    /// `tx_hash` is not the SHA-256 of the canonical transaction sent with it.
    #[error("tx_hash {got} is not the hash of the transaction ({want}); send the SHA-256 of the canonical transaction (docs/api.md, \"Canonical transaction\")")]
    TxHashMismatch {
        /// What the caller sent, hex.
        got: String,
        /// The transaction's hash, hex.
        want: String,
    },
    /// The transaction expired before it was assessed.
    #[error(
        "the transaction expired at {expires_at} (risk service time {now}); authorize it again"
    )]
    Expired {
        /// Its expiry.
        expires_at: i64,
        /// The risk service's clock.
        now: i64,
    },
    /// The user has no face template.
    #[error("user {user} has no face template; enrol one with `yunkey user face-enroll`")]
    NoTemplate {
        /// The user.
        user: String,
    },
    /// No biometric unit is configured.
    #[error("this risk service has no biometric unit: start it with --face https://HOST:PORT")]
    NoBiometricUnit,
    /// The biometric unit refused the image (no face, several faces, unreadable, too large):
    /// its message, unchanged.
    #[error("{0}")]
    Evidence(String),
    /// The biometric unit could not be reached or failed.
    #[error("biometric unit {endpoint}: {reason}")]
    BiometricUnavailable {
        /// Its endpoint.
        endpoint: String,
        /// What happened.
        reason: String,
    },
    /// The biometric unit did not answer in time.
    #[error("biometric unit {endpoint} did not answer within {millis} ms")]
    BiometricTimeout {
        /// Its endpoint.
        endpoint: String,
        /// The deadline.
        millis: u128,
    },
    /// The enrolled template and the probe come from different models (or sizes).
    #[error("user {user}'s face template was made by model {enrolled:?}; the biometric unit now uses {probe:?}: enrol the face again")]
    ModelMismatch {
        /// The user.
        user: String,
        /// The template's model.
        enrolled: String,
        /// The probe's model.
        probe: String,
    },
    /// A stored template cannot be opened (wrong `--template-key`, or tampering).
    #[error("user {user}'s face template cannot be opened: {error}")]
    Template {
        /// The user.
        user: String,
        /// Why.
        error: TemplateError,
    },
    /// The template key file cannot be read or created.
    #[error(transparent)]
    TemplateKey(TemplateError),
    /// The rules could not be loaded.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// The store failed.
    #[error("risk service storage: {0}")]
    Store(#[from] StoreError),
    /// Anything else that is the server's fault (a task that died, a socket that failed).
    #[error("{0}")]
    Internal(String),
}

impl From<InvalidField> for RiskError {
    fn from(e: InvalidField) -> Self {
        RiskError::Invalid(e)
    }
}

impl RiskError {
    /// The status a caller sees.
    pub fn to_status(&self) -> tonic::Status {
        use tonic::Status;
        let msg = self.to_string();
        match self {
            RiskError::Invalid(_) | RiskError::TxHashMismatch { .. } | RiskError::Evidence(_) => {
                Status::invalid_argument(msg)
            }
            RiskError::Expired { .. }
            | RiskError::NoBiometricUnit
            | RiskError::ModelMismatch { .. } => Status::failed_precondition(msg),
            RiskError::NoTemplate { .. } => Status::not_found(msg),
            RiskError::BiometricUnavailable { .. } => Status::unavailable(msg),
            RiskError::BiometricTimeout { .. } => Status::deadline_exceeded(msg),
            RiskError::Template { .. }
            | RiskError::TemplateKey(_)
            | RiskError::Rules(_)
            | RiskError::Store(_)
            | RiskError::Internal(_) => Status::internal(msg),
        }
    }
}

impl From<RiskError> for tonic::Status {
    fn from(e: RiskError) -> Self {
        e.to_status()
    }
}
