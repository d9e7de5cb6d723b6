//! The one place where [`ChipError`] becomes a gRPC [`Status`].
//!
//! Choices worth knowing:
//! - An expired authorization, or one expiring too far ahead, is `FAILED_PRECONDITION`: the
//!   request is well formed and the caller is entitled to it, but the approval is not valid at
//!   the chip's current time; the fix is to ask the device for a fresh authorization.
//!   `PERMISSION_DENIED` is reserved for approvals that are wrong, not stale.
//! - Storage failures are `INTERNAL` with only a short reason; the detail goes to the log.

use crate::ChipError;
use tonic::Status;

pub use yunkey_proto::chip_error::{kind as error_kind, KIND_HEADER as ERROR_KIND_HEADER};

/// Maps a chip error to the status a caller sees, with a message that says what to fix, and
/// its kind in the [`ERROR_KIND_HEADER`] metadata.
pub fn to_status(err: &ChipError) -> Status {
    let mut status = status_of(err);
    if let Ok(kind) = err.kind().parse() {
        status.metadata_mut().insert(ERROR_KIND_HEADER, kind);
    }
    status
}

fn status_of(err: &ChipError) -> Status {
    let msg = err.to_string();
    match err {
        ChipError::Invalid(_) => Status::invalid_argument(msg),
        ChipError::UnknownKey { .. } => Status::not_found(msg),
        ChipError::Full { .. } => Status::resource_exhausted(format!(
            "{msg}; delete keys or place the key on another chip"
        )),
        ChipError::NotAUserKey
        | ChipError::NotACaKey
        | ChipError::NotACodeSigningKey
        | ChipError::UserMismatch
        | ChipError::WrappedKeyMismatch
        | ChipError::DeviceNotBound { .. }
        | ChipError::DeviceRevoked { .. }
        | ChipError::UserRevoked
        | ChipError::KeyMismatch
        | ChipError::ActivationInvalid
        | ChipError::BadRegistrationProof
        | ChipError::AdmissionRefused { .. }
        | ChipError::BadAuthorization
        | ChipError::Replay => Status::permission_denied(msg),
        ChipError::TooManyDevices { .. } => {
            Status::resource_exhausted(format!("{msg}; revoke a device before binding another"))
        }
        ChipError::Expiry(_) => {
            Status::failed_precondition(format!("{msg}; ask the device for a fresh authorization"))
        }
        ChipError::NotInDomain
        | ChipError::AlreadyInDomain { .. }
        | ChipError::Unseal { .. }
        | ChipError::TrustAnchorNotSet
        | ChipError::TrustAnchorAlreadySet
        | ChipError::BindingBehind { .. }
        | ChipError::AnchorKeyMismatch
        | ChipError::CaAlgorithmMismatch { .. }
        | ChipError::ChipIdMismatch { .. }
        | ChipError::CipherUnsupported { .. }
        | ChipError::SealCipherMismatch { .. } => Status::failed_precondition(msg),
        ChipError::AlgorithmUnsupported { .. } => Status::unimplemented(msg),
        ChipError::Storage { op, detail } => {
            tracing::error!(op, detail, "chip storage failure");
            Status::internal(format!("chip storage failure while {op}"))
        }
    }
}

impl From<ChipError> for Status {
    fn from(e: ChipError) -> Self {
        to_status(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use yunkey_crypto::tx::ExpiryError;

    #[test]
    fn codes() {
        let cases = [
            (ChipError::UnknownKey { handle: "h".into() }, Code::NotFound),
            (ChipError::Full { capacity: 1 }, Code::ResourceExhausted),
            (ChipError::BadAuthorization, Code::PermissionDenied),
            (ChipError::NotAUserKey, Code::PermissionDenied),
            (ChipError::NotACodeSigningKey, Code::PermissionDenied),
            (ChipError::UserMismatch, Code::PermissionDenied),
            (
                ChipError::DeviceNotBound {
                    device_id: "dev-1".into(),
                },
                Code::PermissionDenied,
            ),
            (ChipError::UserRevoked, Code::PermissionDenied),
            (
                ChipError::BindingBehind { have: 1, need: 2 },
                Code::FailedPrecondition,
            ),
            (
                ChipError::Expiry(ExpiryError::Expired {
                    expires_at: 1,
                    now: 2,
                }),
                Code::FailedPrecondition,
            ),
            (ChipError::NotInDomain, Code::FailedPrecondition),
            (ChipError::TrustAnchorNotSet, Code::FailedPrecondition),
            (
                ChipError::AlreadyInDomain {
                    domain_id: "d".into(),
                },
                Code::FailedPrecondition,
            ),
            (
                ChipError::Invalid(yunkey_crypto::validate::InvalidField::new("f", "bad")),
                Code::InvalidArgument,
            ),
        ];
        assert_eq!(
            ChipError::BindingBehind { have: 0, need: 1 }.kind(),
            yunkey_proto::chip_error::BINDING_BEHIND
        );
        for (err, code) in cases {
            let status = to_status(&err);
            assert_eq!(status.code(), code, "{err}");
            assert_eq!(error_kind(&status), Some(err.kind()));
        }
        let s = to_status(&ChipError::storage(
            "writing a key",
            "disk /secret/path broke",
        ));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("/secret/path"));
    }
}
