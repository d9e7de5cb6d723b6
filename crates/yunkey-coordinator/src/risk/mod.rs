//! The business transaction module's checks on the sign path (docs/risk.md).
//!
//! Before any chip is asked to sign, the coordinator asks the business's risk service
//! (`RiskService.AssessRisk`). ALLOW signs; DENY terminates; STEP_UP needs the user's face:
//! with face evidence in the request the coordinator has it checked
//! (`RiskService.AuthenticateUser`) and assesses again with the match, without it the caller
//! is told to send it. Every call has a deadline. A risk service that gives no usable answer
//! refuses the signature (fail closed), unless the deployment fails open, which is recorded.
//! What was decided ([`RiskCheck`]) goes into the Raft audit trail with the signature or the
//! refusal; a refusal consumes nothing, so the same authorization may be sent again.

mod check;
mod convert;
pub mod faces;

pub use check::{check, Outcome, Refusal, Subject};
pub use convert::to_wire;

use crate::core::Core;
use crate::error::{CoordError, Result};
use crate::state::{Op, RiskCheck, UserEvent};
use std::net::SocketAddr;
use std::time::Duration;
use tonic::transport::Channel;
use yunkey_crypto::validate::InvalidField;
use yunkey_net::tls::TlsMaterial;
use yunkey_proto::v1 as pb;
use yunkey_proto::v1::risk_service_client::RiskServiceClient;

/// Default deadline of each call to the risk service.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// How a coordinator reaches the business's risk service.
#[derive(Debug, Clone)]
pub struct RiskConfig {
    /// `https://host:port` of the risk service.
    pub endpoint: String,
    /// The coordinator's node identity (the risk service checks role `node`) and the CA the
    /// risk service's certificate must chain to.
    pub tls: TlsMaterial,
    /// Deadline of each call.
    pub timeout: Duration,
    /// Sign when the risk service gives no usable answer (recorded in the audit trail as
    /// failed open). Off by default: no answer, no signature.
    pub fail_open: bool,
}

/// A connected risk service.
#[derive(Debug, Clone)]
pub struct RiskGate {
    client: RiskServiceClient<Channel>,
    timeout: Duration,
    fail_open: bool,
    endpoint: String,
}

impl RiskGate {
    /// A gate to the risk service of `config` (the connection is made on first use).
    pub fn new(config: &RiskConfig) -> Result<Self, yunkey_net::NetError> {
        let channel = yunkey_net::pool::connect_lazy(&config.endpoint, &config.tls, None)?;
        Ok(Self {
            client: RiskServiceClient::new(channel)
                .max_decoding_message_size(yunkey_net::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(yunkey_net::MAX_IMAGE_MESSAGE_BYTES),
            timeout: config.timeout,
            fail_open: config.fail_open,
            endpoint: config.endpoint.clone(),
        })
    }

    /// The client, for calls outside the sign path (face templates).
    pub fn client(&self) -> RiskServiceClient<Channel> {
        self.client.clone()
    }

    /// The deadline of each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Where the risk service is.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// Largest face photo accepted, in bytes (the limit `risk.proto` states).
pub use yunkey_net::MAX_FACE_IMAGE_BYTES;

/// Checks the step-up evidence and the location a request carries, before anything else is
/// done with them.
pub fn check_evidence(
    evidence: Option<&pb::BiometricEvidence>,
    location: Option<&pb::Geolocation>,
) -> Result<()> {
    if let Some(evidence) = evidence {
        check_face_image("evidence.face_image", &evidence.face_image)?;
    }
    if let Some(l) = location {
        if !(l.latitude.is_finite() && (-90.0..=90.0).contains(&l.latitude)) {
            return Err(InvalidField::new("location.latitude", "must be -90..=90 degrees").into());
        }
        if !(l.longitude.is_finite() && (-180.0..=180.0).contains(&l.longitude)) {
            return Err(
                InvalidField::new("location.longitude", "must be -180..=180 degrees").into(),
            );
        }
    }
    Ok(())
}

/// A face photo's size: present, and at most [`MAX_FACE_IMAGE_BYTES`].
pub fn check_face_image(field: &'static str, image: &[u8]) -> Result<()> {
    if image.is_empty() {
        return Err(InvalidField::new(field, "is empty; give a JPEG or PNG photo").into());
    }
    if image.len() > MAX_FACE_IMAGE_BYTES {
        return Err(InvalidField::new(
            field,
            format!(
                "is {} bytes; a face photo may be at most {MAX_FACE_IMAGE_BYTES} bytes",
                image.len()
            ),
        )
        .into());
    }
    Ok(())
}

/// What the risk service is told besides the transaction.
pub fn context(
    channel: &'static str,
    source: Option<SocketAddr>,
    device_registered_at: i64,
    location: Option<pb::Geolocation>,
) -> pb::RiskContext {
    pb::RiskContext {
        source_address: source.map(|a| a.to_string()).unwrap_or_default(),
        unix_seconds: crate::clock::now(),
        location,
        device_registered_at,
        channel: channel.to_owned(),
    }
}

/// Runs the risk checks before a signature. On a refusal, records it (with the decision
/// ids) in the Raft audit trail and returns it; otherwise returns what to record with the
/// signature.
pub async fn before_signing(
    core: &Core,
    gate: &RiskGate,
    actor: &str,
    subject: &Subject<'_>,
) -> Result<RiskCheck> {
    let Outcome { record, refusal } = check(gate, subject).await;
    let Some((refusal, message)) = refusal else {
        return Ok(record);
    };
    let event = Op::RecordUserEvent {
        user_id: subject.user_id.to_owned(),
        event: UserEvent::SignRefused {
            device_id: subject.device_id.to_owned(),
            tx_hash: subject.tx_hash,
            risk: record,
            refusal: message.clone(),
        },
    };
    // The refusal stands even if it cannot be recorded (no leader, say); the log says so.
    if let Err(e) = core.propose("", actor, event).await {
        tracing::error!(user = subject.user_id, error = %e, "a refused signature could not be recorded in the audit trail");
    }
    Err(CoordError::RiskRefused { refusal, message })
}
