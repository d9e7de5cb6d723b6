//! The chip's one error type. No variant ever carries key material: at most a key handle,
//! ids the caller sent, and short reasons.

use thiserror::Error;
use yunkey_crypto::tx::ExpiryError;
use yunkey_crypto::validate::InvalidField;

/// Why a chip operation was refused or failed. Mapped to a gRPC status in
/// [`crate::status::to_status`] only.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChipError {
    /// A request field is malformed (wrong length, bad identifier, non-canonical
    /// transaction, unparsable certificate or key).
    #[error("{0}")]
    Invalid(InvalidField),
    /// No key with this handle lives on this chip.
    #[error("no key with handle {handle:?} on this chip")]
    UnknownKey {
        /// The handle asked for.
        handle: String,
    },
    /// The chip holds as many keys as it may.
    #[error("chip is full: it holds its capacity of {capacity} keys")]
    Full {
        /// The configured capacity.
        capacity: u64,
    },
    /// A user key was asked to sign a bare digest.
    #[error("user keys sign only with a device authorization (use SignAuthorized)")]
    UserKeyNeedsAuthorization,
    /// A non-user key was asked to sign a device-authorized transaction.
    #[error("key is not a user key; SignAuthorized signs only with purpose USER keys")]
    NotAUserKey,
    /// The key belongs to another user than the request names.
    #[error("key does not belong to the requested user_id")]
    UserMismatch,
    /// A wrapped key's purpose or user id differs from what the unwrap request names.
    #[error("wrapped key was made for another purpose or user than requested")]
    WrappedKeyMismatch,
    /// The authorization's expiry is in the past or too far ahead.
    #[error("{0}")]
    Expiry(ExpiryError),
    /// The device certificate is not signed by the trust anchor (or uses another algorithm).
    #[error("device certificate is not issued by this cluster's user CA: {reason}")]
    UntrustedDeviceCertificate {
        /// What failed.
        reason: &'static str,
    },
    /// The device certificate is outside its validity period.
    #[error("device certificate is not valid now (outside its validity period)")]
    DeviceCertificateNotValidNow,
    /// The device certificate does not name the requested user and device.
    #[error("device certificate does not name user {user_id:?} and device {device_id:?}")]
    DeviceCertificateNames {
        /// The requested user.
        user_id: String,
        /// The requested device.
        device_id: String,
    },
    /// The authorization signature does not verify under the device certificate's key.
    #[error("authorization signature does not verify for this transaction, user and device")]
    BadAuthorization,
    /// The same transaction was already signed by this chip with a different key.
    #[error("this transaction hash was already signed with a different key")]
    Replay,
    /// The operation needs a security domain and the chip has none.
    #[error("chip is not in a security domain; InitDomain or ImportDomain first")]
    NotInDomain,
    /// The chip already belongs to a (different) security domain.
    #[error("chip already belongs to security domain {domain_id}")]
    AlreadyInDomain {
        /// The chip's current domain.
        domain_id: String,
    },
    /// A wrapped key or envelope does not open with this chip's keys.
    #[error("{what} does not open on this chip (made for another domain or chip, or altered)")]
    Unseal {
        /// What failed to open ("wrapped key", "domain envelope").
        what: &'static str,
    },
    /// No trust anchor has been set, so no device certificate can be checked.
    #[error("chip has no trust anchor; SetTrustAnchor first")]
    TrustAnchorNotSet,
    /// A different trust anchor is already set (it is write-once).
    #[error("chip already has a different trust anchor (it is write-once)")]
    TrustAnchorAlreadySet,
    /// The chip directory belongs to another chip id.
    #[error("chip directory belongs to chip {stored:?}, not {configured:?}")]
    ChipIdMismatch {
        /// The id stored on first open.
        stored: String,
        /// The id configured now.
        configured: String,
    },
    /// Storage or file IO failed, or stored state is corrupt. `op` is a short public reason;
    /// `detail` is for logs only and is not sent to callers.
    #[error("chip storage failure while {op}: {detail}")]
    Storage {
        /// What the chip was doing.
        op: &'static str,
        /// The underlying error's text (never key material).
        detail: String,
    },
}

impl ChipError {
    /// A storage failure.
    pub fn storage(op: &'static str, detail: impl std::fmt::Display) -> Self {
        ChipError::Storage {
            op,
            detail: detail.to_string(),
        }
    }

    /// A short, stable label for metrics and audit logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ChipError::Invalid(_) => "invalid",
            ChipError::UnknownKey { .. } => "unknown_key",
            ChipError::Full { .. } => "full",
            ChipError::UserKeyNeedsAuthorization => "user_key_needs_authorization",
            ChipError::NotAUserKey => "not_a_user_key",
            ChipError::UserMismatch => "user_mismatch",
            ChipError::WrappedKeyMismatch => "wrapped_key_mismatch",
            ChipError::Expiry(ExpiryError::Expired { .. }) => "expired",
            ChipError::Expiry(ExpiryError::TooFar { .. }) => "expiry_too_far",
            ChipError::UntrustedDeviceCertificate { .. } => "untrusted_device_certificate",
            ChipError::DeviceCertificateNotValidNow => "device_certificate_not_valid_now",
            ChipError::DeviceCertificateNames { .. } => "device_certificate_names",
            ChipError::BadAuthorization => "bad_authorization",
            ChipError::Replay => "replay",
            ChipError::NotInDomain => "not_in_domain",
            ChipError::AlreadyInDomain { .. } => "already_in_domain",
            ChipError::Unseal { .. } => "unseal",
            ChipError::TrustAnchorNotSet => "trust_anchor_not_set",
            ChipError::TrustAnchorAlreadySet => "trust_anchor_already_set",
            ChipError::ChipIdMismatch { .. } => "chip_id_mismatch",
            ChipError::Storage { .. } => "storage",
        }
    }
}

impl From<InvalidField> for ChipError {
    fn from(e: InvalidField) -> Self {
        ChipError::Invalid(e)
    }
}

impl From<ExpiryError> for ChipError {
    fn from(e: ExpiryError) -> Self {
        ChipError::Expiry(e)
    }
}

impl From<yunkey_store::StoreError> for ChipError {
    fn from(e: yunkey_store::StoreError) -> Self {
        ChipError::storage("accessing the key store", e)
    }
}
