//! Checking what callers send, before anything is read or written: every field that is
//! missing or malformed is refused with INVALID_ARGUMENT naming it.

use crate::amount::Amount;
use crate::embed::MAX_IMAGE_BYTES;
use crate::error::RiskError;
use crate::geo::GeoPoint;
use yunkey_crypto::validate::{self, InvalidField};
use yunkey_proto::v1::{AssessRiskRequest, Transaction};

/// A checked AssessRisk request.
#[derive(Debug, Clone)]
pub struct Assessment {
    /// The user.
    pub user_id: String,
    /// The device that authorized it (may be empty).
    pub device_id: String,
    /// The transaction.
    pub transaction: Transaction,
    /// Its amount.
    pub amount: Amount,
    /// Its canonical hash, checked against the transaction.
    pub tx_hash: [u8; 32],
    /// Where the device says it is.
    pub location: Option<GeoPoint>,
    /// When the device was registered, if known.
    pub device_registered_at: Option<i64>,
    /// The AuthenticateUser result id given after a step-up.
    pub authentication_id: Option<String>,
    /// The channel (`terminal` or `business`), for the log.
    pub channel: String,
    /// Where the request came from, for the log.
    pub source_address: String,
    /// The coordinator's clock, for the log (the risk service decides on its own clock).
    pub coordinator_time: i64,
}

/// Checks a user id.
pub fn user_id(value: &str) -> Result<String, RiskError> {
    validate::identifier("user_id", value)?;
    Ok(value.to_owned())
}

/// Checks a tx_hash's length.
pub fn tx_hash(value: &[u8]) -> Result<[u8; 32], RiskError> {
    value.try_into().map_err(|_| {
        InvalidField::new(
            "tx_hash",
            format!(
                "is {} bytes; expected the 32-byte SHA-256 of the canonical transaction",
                value.len()
            ),
        )
        .into()
    })
}

/// Checks a face image's size (its content is the biometric unit's to judge).
pub fn face_image(field: &'static str, image: &[u8]) -> Result<(), RiskError> {
    if image.is_empty() {
        return Err(InvalidField::new(field, "is empty; send a JPEG or PNG photograph").into());
    }
    if image.len() > MAX_IMAGE_BYTES {
        return Err(InvalidField::new(
            field,
            format!(
                "is {} bytes; at most {MAX_IMAGE_BYTES} (4 MiB) are accepted",
                image.len()
            ),
        )
        .into());
    }
    Ok(())
}

/// Checks an AssessRisk request.
pub fn assessment(req: AssessRiskRequest) -> Result<Assessment, RiskError> {
    let user_id = user_id(&req.user_id)?;
    if !req.device_id.is_empty() {
        validate::identifier("device_id", &req.device_id)?;
    }
    let hash = tx_hash(&req.tx_hash)?;
    let transaction = req
        .transaction
        .ok_or_else(|| InvalidField::new("transaction", "is missing"))?;
    let (_, want) = yunkey_crypto::tx::encode_and_hash(&transaction)?;
    if want != hash {
        return Err(RiskError::TxHashMismatch {
            got: hex::encode(hash),
            want: hex::encode(want),
        });
    }
    // Validated as canonical above, so it parses.
    let amount = Amount::parse(&transaction.amount)
        .map_err(|reason| InvalidField::new("transaction.amount", reason))?;
    let ctx = req.context.unwrap_or_default();
    let location = ctx
        .location
        .map(|l| GeoPoint::new(l.latitude, l.longitude))
        .transpose()
        .map_err(|reason| InvalidField::new("context.location", reason))?;
    let device_registered_at = match ctx.device_registered_at {
        0 => None,
        t if t < 0 => {
            return Err(InvalidField::new(
                "context.device_registered_at",
                format!("is {t}; expected Unix seconds, or 0 when unknown"),
            )
            .into())
        }
        t => Some(t),
    };
    let authentication_id = match req.authentication {
        None => None,
        Some(a) if a.decision_id.is_empty() => None,
        Some(a) => {
            if a.decision_id.len() > 128 || a.decision_id.chars().any(char::is_control) {
                return Err(InvalidField::new(
                    "authentication.decision_id",
                    "is not 1 to 128 bytes without control characters",
                )
                .into());
            }
            if !(a.method.is_empty() || a.method == "face") {
                return Err(InvalidField::new(
                    "authentication.method",
                    format!(
                        "{:?} is not a method this risk service knows (\"face\")",
                        a.method
                    ),
                )
                .into());
            }
            Some(a.decision_id)
        }
    };
    Ok(Assessment {
        user_id,
        device_id: req.device_id,
        transaction,
        amount,
        tx_hash: hash,
        location,
        device_registered_at,
        authentication_id,
        channel: ctx.channel,
        source_address: ctx.source_address,
        coordinator_time: ctx.unix_seconds,
    })
}
