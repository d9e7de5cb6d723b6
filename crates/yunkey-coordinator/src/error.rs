//! The coordinator's errors and their one mapping to gRPC statuses. Every message says what
//! the caller should do; none carries key material or activation codes.

use thiserror::Error;
use tonic::{Code, Status};
use yunkey_crypto::tx::ExpiryError;
use yunkey_crypto::validate::InvalidField;

/// Why a coordinator request failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CoordError {
    /// A request field is malformed.
    #[error("{0}")]
    InvalidArgument(#[from] InvalidField),
    /// No user with this id.
    #[error("user {0:?} is not enrolled")]
    UserNotFound(String),
    /// A user with this id exists.
    #[error("user {0:?} is already enrolled; use another user_id or GetUser")]
    UserExists(String),
    /// The user is revoked.
    #[error("user {0:?} is revoked; nothing is signed with their key")]
    UserRevoked(String),
    /// The device is not registered to the user.
    #[error("device {device_id:?} is not registered to user {user_id:?}")]
    UnknownDevice {
        /// The user.
        user_id: String,
        /// The device.
        device_id: String,
    },
    /// The device is revoked or was removed.
    #[error("device {device_id:?} of user {user_id:?} was {reason}; it authorizes nothing more: register a device with a new activation code (yunkey user reactivate)")]
    DeviceRevoked {
        /// The user.
        user_id: String,
        /// The device.
        device_id: String,
        /// `revoked (why)` or `removed (why)`, as recorded.
        reason: String,
    },
    /// The client certificate on the device channel is not the device's current one.
    #[error("{0}")]
    DeviceCertificate(String),
    /// The user has as many active devices as the cluster allows.
    #[error("user {user_id:?} has {active} active devices, the most allowed (--max-devices {limit}); remove one first (yunkey user device remove)")]
    TooManyDevices {
        /// The user.
        user_id: String,
        /// Active devices.
        active: usize,
        /// The limit.
        limit: usize,
    },
    /// A chip's operator admission is missing or does not verify.
    #[error("chip admission refused: {0}")]
    AdmissionRefused(String),
    /// The device key is registered already.
    #[error(
        "device key {0:?} is registered already; a device key serves one user (make a new key)"
    )]
    DeviceTaken(String),
    /// The device's authorization does not cover this request.
    #[error("authorization refused: {0}")]
    BadAuthorization(String),
    /// The authorization expired or reaches too far ahead.
    #[error("{0}")]
    Expired(#[from] ExpiryError),
    /// The authorization was used before.
    #[error("this authorization was already used (at Unix time {consumed_at}); approve a new transaction on the device")]
    AuthorizationUsed {
        /// When it was consumed.
        consumed_at: i64,
    },
    /// The activation code is wrong, used, burnt or expired.
    #[error(
        "activation code is wrong, already used, burnt by too many wrong attempts, or expired; ask the business for a new one (yunkey user reactivate)"
    )]
    ActivationInvalid,
    /// The request id was used for another kind of request.
    #[error("request_id was already used for a different {first_kind:?} request; use a fresh request_id")]
    RequestIdReused {
        /// The first use's kind.
        first_kind: String,
    },
    /// The algorithm is not served.
    #[error("{0}")]
    Unimplemented(String),
    /// The cluster cannot serve this yet (no CA, no chips, no leader).
    #[error("{0}")]
    Unavailable(String),
    /// Every chip is full.
    #[error("{0}")]
    NoCapacity(String),
    /// Too many unauthenticated requests from the caller's address.
    #[error(
        "too many unauthenticated requests from this address; retry after {retry_after_ms} ms"
    )]
    RateLimited {
        /// When the address's next request is let through.
        retry_after_ms: u64,
    },
    /// Too many refused registrations from the caller's address.
    #[error("too many refused registrations from this address; retry after {retry_after_secs} s")]
    TooManyFailures {
        /// When the address may try again.
        retry_after_secs: u64,
    },
    /// A chip refused or failed.
    #[error("{0}")]
    Chip(crate::chip_client::ChipFailure),
    /// A membership change named a node id that was used before.
    #[error("node id {node_id} was used before (first added with address {first_address}); node ids are never reused: pick a new id for this node and start it on an empty data dir")]
    NodeIdUsed {
        /// The id.
        node_id: u64,
        /// The address it was first added with.
        first_address: String,
    },
    /// No chip with this id is registered.
    #[error("chip {0:?} is not in the registry")]
    ChipNotFound(String),
    /// A membership change named a node that is not a member.
    #[error("node {0} is not a member of the cluster")]
    NodeNotFound(u64),
    /// The cluster is not in a state that allows this request.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Only the leader serves this request, and this node is not it. UNAVAILABLE, with the
    /// leader's address also in the `x-yunkey-leader` metadata
    /// ([`yunkey_net::LEADER_HINT_METADATA`]), so a client can send the same request there.
    #[error("node {node_id} is not the leader; membership changes are made by the leader, node {leader_id} at {leader_address}: send the same request there (yunkey ctl does)")]
    NotLeader {
        /// This node.
        node_id: u64,
        /// The leader it knows.
        leader_id: u64,
        /// The leader's address.
        leader_address: String,
    },
    /// The terminal software's release is not accepted by the cluster's release policy.
    #[error("release refused: {0}")]
    ReleaseRefused(String),
    /// No release with this id.
    #[error("release {0:?} is not known to this cluster; `yunkey release list` shows the signed releases")]
    ReleaseNotFound(String),
    /// The business transaction module's checks refused the signature (docs/risk.md).
    #[error("{message}")]
    RiskRefused {
        /// Why, typed (also in the status's `x-yunkey-reason`).
        refusal: crate::risk::Refusal,
        /// For people: the decision ids and the rules that fired.
        message: String,
    },
    /// Raft could not commit.
    #[error("{0}")]
    Raft(String),
    /// Local storage failed.
    #[error("storage: {0}")]
    Store(#[from] yunkey_store::StoreError),
    /// An internal invariant failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CoordError {
    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            CoordError::InvalidArgument(_) | CoordError::RequestIdReused { .. } => {
                Code::InvalidArgument
            }
            CoordError::UserNotFound(_) => Code::NotFound,
            CoordError::UserExists(_)
            | CoordError::AuthorizationUsed { .. }
            | CoordError::DeviceTaken(_) => Code::AlreadyExists,
            CoordError::UserRevoked(_)
            | CoordError::UnknownDevice { .. }
            | CoordError::DeviceRevoked { .. }
            | CoordError::DeviceCertificate(_)
            | CoordError::AdmissionRefused(_)
            | CoordError::BadAuthorization(_)
            | CoordError::ActivationInvalid => Code::PermissionDenied,
            CoordError::Expired(_)
            | CoordError::NodeIdUsed { .. }
            | CoordError::TooManyDevices { .. }
            | CoordError::FailedPrecondition(_)
            | CoordError::ReleaseRefused(_) => Code::FailedPrecondition,
            CoordError::NodeNotFound(_)
            | CoordError::ChipNotFound(_)
            | CoordError::ReleaseNotFound(_) => Code::NotFound,
            CoordError::Unimplemented(_) => Code::Unimplemented,
            CoordError::Unavailable(_) | CoordError::Raft(_) | CoordError::NotLeader { .. } => {
                Code::Unavailable
            }
            CoordError::NoCapacity(_)
            | CoordError::RateLimited { .. }
            | CoordError::TooManyFailures { .. } => Code::ResourceExhausted,
            CoordError::Chip(failure) => failure.code(),
            CoordError::RiskRefused { refusal, .. } => match refusal {
                crate::risk::Refusal::Denied | crate::risk::Refusal::FaceMismatch => {
                    Code::PermissionDenied
                }
                crate::risk::Refusal::StepUpRequired => Code::FailedPrecondition,
                crate::risk::Refusal::NoAnswer => Code::Unavailable,
                crate::risk::Refusal::Evidence(Code::NotFound) => Code::FailedPrecondition,
                crate::risk::Refusal::Evidence(_) => Code::InvalidArgument,
            },
            CoordError::Store(_) | CoordError::Internal(_) => Code::Internal,
        }
    }
}

/// What an unauthenticated `RegisterDevice` caller is told for every refusal that depends on
/// a user's state (see [`CoordError::reveals_user_state`]): one status and one message, so
/// that the answer does not tell whether the user exists, is revoked, or has a code pending.
pub const ACTIVATION_REFUSED: &str = "activation refused: the user id or activation code is wrong, or the code was used or has expired";

impl CoordError {
    /// Whether telling this error to an unauthenticated caller would tell them something
    /// about a user: that the user is enrolled or not, revoked, has an activation pending,
    /// or which request ids were used (the default ones name users: `enroll-ID`,
    /// `revoke-ID`). Malformed input, a proof that does not verify with the caller's own
    /// key, and failures after the code was accepted tell nothing about users.
    pub fn reveals_user_state(&self) -> bool {
        matches!(
            self,
            CoordError::UserNotFound(_)
                | CoordError::UserRevoked(_)
                | CoordError::ActivationInvalid
                | CoordError::RequestIdReused { .. }
        )
    }

    /// The status an unauthenticated caller gets: PERMISSION_DENIED [`ACTIVATION_REFUSED`]
    /// for every error that [reveals a user's state](Self::reveals_user_state), else the
    /// usual status. The typed error stays for the operator's log.
    pub fn to_unauthenticated_status(&self) -> Status {
        if self.reveals_user_state() {
            Status::permission_denied(ACTIVATION_REFUSED)
        } else {
            self.status()
        }
    }

    /// The status for this error: its code, its message, and for `NotLeader` the leader hint.
    pub fn status(&self) -> Status {
        let mut status = Status::new(self.code(), self.to_string());
        if let CoordError::NotLeader { leader_address, .. } = self {
            if let Ok(value) = leader_address.parse() {
                status
                    .metadata_mut()
                    .insert(yunkey_net::LEADER_HINT_METADATA, value);
            }
        }
        if let CoordError::RiskRefused { refusal, .. } = self {
            use yunkey_net::reason::Reason;
            let reason = match refusal {
                crate::risk::Refusal::Denied => Some(Reason::RiskDenied),
                crate::risk::Refusal::StepUpRequired => Some(Reason::StepUpRequired),
                crate::risk::Refusal::FaceMismatch => Some(Reason::FaceMismatch),
                crate::risk::Refusal::NoAnswer => Some(Reason::RiskUnavailable),
                crate::risk::Refusal::Evidence(_) => None,
            };
            if let Some(reason) = reason {
                reason.attach(&mut status);
            }
        }
        status
    }

    /// This error as one refused item of a batch call (`SignBatch`): the code, message and
    /// typed reason that [`CoordError::status`] gives for the same request alone.
    pub fn to_item_error(&self) -> yunkey_proto::v1::SignItemError {
        let status = self.status();
        yunkey_proto::v1::SignItemError {
            code: status.code() as i32,
            message: status.message().to_owned(),
            reason: yunkey_net::reason::Reason::of(&status)
                .map(|r| r.as_str().to_owned())
                .unwrap_or_default(),
        }
    }
}

impl From<CoordError> for Status {
    fn from(e: CoordError) -> Status {
        e.status()
    }
}

impl From<crate::state::Rejection> for CoordError {
    fn from(r: crate::state::Rejection) -> Self {
        use crate::state::Rejection as R;
        match r {
            R::RequestIdReused { first_kind } => CoordError::RequestIdReused { first_kind },
            R::UserExists(id) => CoordError::UserExists(id),
            R::UnknownUser(id) => CoordError::UserNotFound(id),
            R::UserRevoked(id) => CoordError::UserRevoked(id),
            R::DeviceTaken(id) => CoordError::DeviceTaken(id),
            R::ActivationInvalid => CoordError::ActivationInvalid,
            R::AuthorizationUsed { consumed_at } => CoordError::AuthorizationUsed { consumed_at },
            R::UnknownDevice => {
                CoordError::BadAuthorization("device is not registered to this user".into())
            }
            R::CaExists => CoordError::Internal("the user CA already exists".into()),
            R::CodeSigningExists => {
                CoordError::Internal("the code-signing key already exists".into())
            }
            R::UnknownRelease(id) => CoordError::ReleaseNotFound(id),
            R::NestedBatch => {
                CoordError::Internal("a batch of commands inside a batch was proposed".into())
            }
            R::StaleBinding { committed } => CoordError::Unavailable(format!(
                "another change to this user's key committed first (binding seq {committed}); retry"
            )),
            R::NodeIdUsed {
                node_id,
                first_address,
            } => CoordError::NodeIdUsed {
                node_id,
                first_address,
            },
            R::HolderExists { chip_id } => CoordError::FailedPrecondition(format!(
                "the key already has a holder on chip {chip_id}"
            )),
            R::TooFewHolders { have } => CoordError::FailedPrecondition(format!(
                "the key has {have} holders; dropping one would leave too few (add a holder first)"
            )),
            R::UnknownChip(id) => CoordError::ChipNotFound(id),
            R::ChipNotEmpty { keys } => CoordError::FailedPrecondition(format!(
                "the chip still holds {keys} keys; drain it first (yunkey ctl chip drain) and wait until it holds none"
            )),
            R::WrongDomain { cluster } => CoordError::Unavailable(format!(
                "chip belongs to another security domain than the cluster's ({cluster})"
            )),
            R::DeviceRevoked(device_id) => CoordError::FailedPrecondition(format!(
                "device {device_id} is revoked; a revoked device is not renewed"
            )),
            R::AuthorizationExpired {
                expires_at,
                horizon,
            } => CoordError::FailedPrecondition(format!(
                "authorization expired at {expires_at}: the cluster no longer accepts authorizations \
                 expiring at or before {horizon}; approve the transaction again on the device"
            )),
        }
    }
}

/// Result of a coordinator operation.
pub type Result<T, E = CoordError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_item_error_says_what_the_status_says() {
        let e = CoordError::RiskRefused {
            refusal: crate::risk::Refusal::StepUpRequired,
            message: "decision d-1: face needed".into(),
        };
        let item = e.to_item_error();
        let status = e.status();
        assert_eq!(item.code, status.code() as i32);
        assert_eq!(item.code, Code::FailedPrecondition as i32);
        assert_eq!(item.message, status.message());
        assert_eq!(item.reason, "step-up-required");
        let item = CoordError::AuthorizationUsed { consumed_at: 7 }.to_item_error();
        assert_eq!(item.code, Code::AlreadyExists as i32);
        assert_eq!(item.reason, "");
    }

    #[test]
    fn refusals_on_a_users_state_look_alike_to_an_anonymous_caller() {
        let hidden = [
            CoordError::UserNotFound("ghost".into()),
            CoordError::UserRevoked("rita".into()),
            CoordError::ActivationInvalid,
            CoordError::RequestIdReused {
                first_kind: "enroll".into(),
            },
        ];
        for e in hidden {
            let s = e.to_unauthenticated_status();
            assert_eq!(
                (s.code(), s.message()),
                (Code::PermissionDenied, ACTIVATION_REFUSED)
            );
        }
        // What depends on the request alone keeps its own status and message.
        let e = CoordError::InvalidArgument(InvalidField::new("proof", "is empty"));
        let s = e.to_unauthenticated_status();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("proof"), "{s:?}");
        let s = CoordError::RateLimited { retry_after_ms: 50 }.to_unauthenticated_status();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(
            s.message(),
            "too many unauthenticated requests from this address; retry after 50 ms"
        );
    }
}
