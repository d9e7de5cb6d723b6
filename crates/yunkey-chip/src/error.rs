//! The chip's one error type. No variant ever carries key material: at most a key handle,
//! ids the caller sent, and short reasons.

use thiserror::Error;
use yunkey_crypto::cipher::Cipher;
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
    /// A non-user key was asked to sign a device-authorized transaction.
    #[error("key is not a user key; SignAuthorized signs only with purpose USER keys")]
    NotAUserKey,
    /// Certificates are issued only with a CA key.
    #[error("key is not a CA key; certificates are issued only with purpose CA keys")]
    NotACaKey,
    /// Release manifests are signed only with a code-signing key.
    #[error("key is not a code-signing key; release manifests are signed only with purpose CODE_SIGNING keys")]
    NotACodeSigningKey,
    /// The key belongs to another user than the request names.
    #[error("key does not belong to the requested user_id")]
    UserMismatch,
    /// A wrapped key's purpose or user id differs from what the unwrap request names.
    #[error("wrapped key was made for another purpose or user than requested")]
    WrappedKeyMismatch,
    /// The authorization's expiry is in the past or too far ahead.
    #[error("{0}")]
    Expiry(ExpiryError),
    /// The device is not bound to this user key on this chip.
    #[error("device {device_id:?} is not bound to this user's key on this chip")]
    DeviceNotBound {
        /// The device the request named.
        device_id: String,
    },
    /// The device was revoked for this key.
    #[error("device {device_id:?} is revoked for this user's key")]
    DeviceRevoked {
        /// The revoked device.
        device_id: String,
    },
    /// The user is revoked: the key signs nothing more.
    #[error("the user is revoked; this key signs nothing more")]
    UserRevoked,
    /// This chip's binding of the key is older than the one the request was decided on.
    #[error("this chip's binding of the key is at seq {have}, the request needs seq {need}; send the newer wrapped key with UpdateBinding first")]
    BindingBehind {
        /// The chip's binding seq.
        have: u64,
        /// The seq the request names.
        need: u64,
    },
    /// A wrapped key offered for a key record is another key.
    #[error("the wrapped key is not the key held under this handle")]
    KeyMismatch,
    /// The activation code is wrong, used or expired.
    #[error("the activation code is wrong, already used or expired; ask the business for a new enrolment")]
    ActivationInvalid,
    /// The device's proof of possession does not verify.
    #[error("the registration proof does not verify with device_public_key for this user and activation code")]
    BadRegistrationProof,
    /// The key has as many devices bound as it may.
    #[error("the key has {max} devices bound already")]
    TooManyDevices {
        /// [`crate::binding::MAX_DEVICES`].
        max: usize,
    },
    /// The operator's admission of a chip does not verify with the domain's operator key.
    #[error("chip admission refused: {reason}")]
    AdmissionRefused {
        /// Why.
        reason: &'static str,
    },
    /// The trust anchor is not the certificate of the CA key asked to issue.
    #[error(
        "the trust anchor is not this CA key's certificate; set the anchor issued with this key"
    )]
    AnchorKeyMismatch,
    /// The authorization signature does not verify under the bound device key.
    #[error("authorization signature does not verify with the bound device key for this transaction and user")]
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
    /// No trust anchor has been set, so no certificate can be issued under it.
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
    /// A CA key was asked to certify a key it does not certify: each algorithm's user keys
    /// have their own CA.
    #[error("a {ca} CA key does not certify a {subject} key; use the {subject} user CA")]
    CaAlgorithmMismatch {
        /// The CA key's algorithm.
        ca: yunkey_crypto::sig::Algorithm,
        /// The subject key's algorithm.
        subject: yunkey_crypto::sig::Algorithm,
    },
    /// This chip (its custody backend) or this use of a key does not support the algorithm.
    #[error("{algorithm} is not supported here: {reason}")]
    AlgorithmUnsupported {
        /// The algorithm asked for.
        algorithm: yunkey_crypto::sig::Algorithm,
        /// Why, and what to do instead.
        reason: &'static str,
    },
    /// The chip's key custody cannot wrap keys under the security domain's cipher (a PKCS#11
    /// token has no SM4), so the chip cannot create or join a domain of that cipher.
    #[error("this chip's key custody ({custody}) cannot wrap keys under {cipher}, the security domain's cipher; PKCS#11 chips wrap only under aes256, so an sm4 domain needs soft chips")]
    CipherUnsupported {
        /// The custody ([`crate::KeyCustody::describe`]).
        custody: String,
        /// The domain's cipher.
        cipher: Cipher,
    },
    /// The soft chip seals its records with another cipher than the one asked for; it is
    /// chosen when the chip is created and fixed for its life ([`crate::seal_cipher`]).
    #[error("this chip seals its records with {recorded} (chosen when it was created, fixed for its life), not {requested} as asked")]
    SealCipherMismatch {
        /// The cipher recorded when the chip was created.
        recorded: Cipher,
        /// The cipher asked for now.
        requested: Cipher,
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
            ChipError::NotAUserKey => "not_a_user_key",
            ChipError::NotACaKey => "not_a_ca_key",
            ChipError::NotACodeSigningKey => "not_a_code_signing_key",
            ChipError::UserMismatch => "user_mismatch",
            ChipError::WrappedKeyMismatch => "wrapped_key_mismatch",
            ChipError::Expiry(ExpiryError::Expired { .. }) => "expired",
            ChipError::Expiry(ExpiryError::TooFar { .. }) => "expiry_too_far",
            ChipError::DeviceNotBound { .. } => "device_not_bound",
            ChipError::DeviceRevoked { .. } => "device_revoked",
            ChipError::UserRevoked => "user_revoked",
            ChipError::BindingBehind { .. } => "binding_behind",
            ChipError::KeyMismatch => "key_mismatch",
            ChipError::ActivationInvalid => "activation_invalid",
            ChipError::BadRegistrationProof => "bad_registration_proof",
            ChipError::TooManyDevices { .. } => "too_many_devices",
            ChipError::AdmissionRefused { .. } => "admission_refused",
            ChipError::AnchorKeyMismatch => "anchor_key_mismatch",
            ChipError::BadAuthorization => "bad_authorization",
            ChipError::Replay => "replay",
            ChipError::NotInDomain => "not_in_domain",
            ChipError::AlreadyInDomain { .. } => "already_in_domain",
            ChipError::Unseal { .. } => "unseal",
            ChipError::TrustAnchorNotSet => "trust_anchor_not_set",
            ChipError::TrustAnchorAlreadySet => "trust_anchor_already_set",
            ChipError::ChipIdMismatch { .. } => "chip_id_mismatch",
            ChipError::AlgorithmUnsupported { .. } => "algorithm_unsupported",
            ChipError::CaAlgorithmMismatch { .. } => "ca_algorithm_mismatch",
            ChipError::CipherUnsupported { .. } => "cipher_unsupported",
            ChipError::SealCipherMismatch { .. } => "seal_cipher_mismatch",
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
