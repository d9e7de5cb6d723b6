//! Typed reasons for refusals a caller acts on differently than its gRPC code says: the
//! server names the reason in the `x-yunkey-reason` metadata of the status, and a client
//! decides on [`Reason`], never on the message text.

use tonic::Status;

/// Metadata key of a status's [`Reason`].
pub const REASON_METADATA: &str = "x-yunkey-reason";

/// Why the business transaction module refused a signature (docs/risk.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The risk service asks for the user's face: send the same request again with face
    /// evidence (FAILED_PRECONDITION). Nothing was consumed.
    StepUpRequired,
    /// The risk service denied the transaction (PERMISSION_DENIED). Terminated.
    RiskDenied,
    /// The face evidence does not match the user's template (PERMISSION_DENIED). Terminated.
    FaceMismatch,
    /// The risk service gave no usable answer and the deployment fails closed (UNAVAILABLE).
    /// Nothing was consumed: the same request may be retried.
    RiskUnavailable,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 4] = [
        Reason::StepUpRequired,
        Reason::RiskDenied,
        Reason::FaceMismatch,
        Reason::RiskUnavailable,
    ];

    /// Its name in the metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::StepUpRequired => "step-up-required",
            Reason::RiskDenied => "risk-denied",
            Reason::FaceMismatch => "face-mismatch",
            Reason::RiskUnavailable => "risk-unavailable",
        }
    }

    /// Names this reason in `status`.
    pub fn attach(self, status: &mut Status) {
        status.metadata_mut().insert(
            REASON_METADATA,
            tonic::metadata::MetadataValue::from_static(self.as_str()),
        );
    }

    /// The reason `status` names, if any (an unknown name is none).
    pub fn of(status: &Status) -> Option<Reason> {
        let name = status.metadata().get(REASON_METADATA)?.to_str().ok()?;
        Reason::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_survives_the_status_and_unknown_names_are_none() {
        for reason in Reason::ALL {
            let mut status = Status::failed_precondition("x");
            reason.attach(&mut status);
            assert_eq!(Reason::of(&status), Some(reason));
        }
        assert_eq!(Reason::of(&Status::internal("x")), None);
        let mut status = Status::internal("x");
        status
            .metadata_mut()
            .insert(REASON_METADATA, "from-the-future".parse().unwrap());
        assert_eq!(Reason::of(&status), None);
    }
}
