//! Records of the replicated state. None holds a private key in plaintext: user and CA keys
//! appear only wrapped under the security domain's key.

use serde::{Deserialize, Serialize};

/// Whether a user may sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserState {
    /// Enrolled and usable.
    Active,
    /// Revoked; sign requests are refused.
    Revoked,
}

/// A chip holding a copy of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRecord {
    /// The chip.
    pub chip_id: String,
    /// The key's handle inside that chip.
    pub key_handle: String,
}

/// The pending one-time activation of a user's first device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// SHA-256 of the activation code (the code itself is never stored in the user record).
    pub code_sha256: [u8; 32],
    /// Unix seconds after which the code is void.
    pub expires_at: i64,
    /// The enrolment request that created it (its stored result keeps the code for retries
    /// until the code is used).
    pub enroll_request_id: String,
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Device id (derived from the device key).
    pub device_id: String,
    /// Label given at registration.
    pub name: String,
    /// SubjectPublicKeyInfo DER.
    #[serde(with = "serde_bytes")]
    pub public_key: Vec<u8>,
    /// Device certificate DER.
    #[serde(with = "serde_bytes")]
    pub certificate: Vec<u8>,
    /// Unix seconds.
    pub registered_at: i64,
    /// When it was revoked (Unix seconds); a revoked device authorizes nothing.
    pub revoked_at: Option<i64>,
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// User id.
    pub user_id: String,
    /// Algorithm number as in the protobuf `Algorithm`.
    pub algorithm: i32,
    /// SubjectPublicKeyInfo DER.
    #[serde(with = "serde_bytes")]
    pub public_key: Vec<u8>,
    /// The private key wrapped under the domain's keys, with its device binding as of
    /// `binding_seq` (restores the key if every holder dies; brings a holder's binding up to
    /// date).
    #[serde(with = "serde_bytes")]
    pub wrapped_key: Vec<u8>,
    /// The seq of the binding in `wrapped_key`; chips behind it refuse to sign.
    pub binding_seq: u64,
    /// User certificate DER.
    #[serde(with = "serde_bytes")]
    pub certificate: Vec<u8>,
    /// Active or revoked.
    pub state: UserState,
    /// Chips holding the key.
    pub holders: Vec<HolderRecord>,
    /// Registered devices.
    pub devices: Vec<DeviceRecord>,
    /// Pending first-device activation.
    pub activation: Option<Activation>,
    /// Unix seconds.
    pub created_at: i64,
    /// Why it was revoked.
    pub revoked_reason: Option<String>,
}

/// A chip admitted to the security domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChipRecord {
    /// Chip id.
    pub chip_id: String,
    /// `https://host:port` of its ChipService.
    pub endpoint: String,
    /// Failure zone.
    pub zone: String,
    /// Keys it can hold.
    pub capacity: u64,
    /// Keys placed on it by the cluster.
    pub placed: u64,
    /// Its transport public key (SPKI DER).
    #[serde(with = "serde_bytes")]
    pub transport_key: Vec<u8>,
    /// Unix seconds.
    pub admitted_at: i64,
    /// The operator's admission signature over its id and transport key.
    #[serde(with = "serde_bytes")]
    pub admission_signature: Vec<u8>,
}

/// A user CA (ECDSA P-256 at `m/ca`, SM2 at `m/ca_sm2`), whose key lives in chips.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRecord {
    /// Self-signed CA certificate DER.
    #[serde(with = "serde_bytes")]
    pub certificate: Vec<u8>,
    /// CA key wrapped under the domain key.
    #[serde(with = "serde_bytes")]
    pub wrapped_key: Vec<u8>,
    /// Chips holding the CA key.
    pub holders: Vec<HolderRecord>,
}

/// A consumed authorization: the replay defence and the audit record of a signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Whose key signs.
    pub user_id: String,
    /// Which device authorized.
    pub device_id: String,
    /// The request that consumed it.
    pub request_id: String,
    /// The transaction's expiry (the entry may be pruned some time after it).
    pub expires_at: i64,
    /// Unix seconds when it was consumed.
    pub consumed_at: i64,
}

/// One line of the replicated audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Unix seconds.
    pub at: i64,
    /// Who asked (for example `client:CN` or `device:dev-...`).
    pub actor: String,
    /// What (for example `enroll alice`).
    pub action: String,
    /// `ok` or the refusal.
    pub outcome: String,
}

/// A coordinator node id that was once added to the cluster. Kept forever: node ids are
/// never reused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeIdRecord {
    /// The Raft node id.
    pub node_id: u64,
    /// The address it was added with.
    pub address: String,
    /// When (Unix seconds, the proposer's clock).
    pub added_at: i64,
}

/// A key's new binding, decided by a chip: the wrapped key that carries it and its seq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebinding {
    /// The key wrapped with the new binding.
    #[serde(with = "serde_bytes")]
    pub wrapped_key: Vec<u8>,
    /// The binding's seq.
    pub binding_seq: u64,
}

/// Whose key a holder change is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyOwner {
    /// A user's key.
    User(String),
    /// The user CA's key.
    Ca,
    /// The code-signing key of terminal releases.
    CodeSigning,
    /// The SM2 user CA's key.
    Sm2Ca,
}

impl KeyOwner {
    /// The user, for a user's key.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            KeyOwner::User(id) => Some(id),
            KeyOwner::Ca | KeyOwner::CodeSigning | KeyOwner::Sm2Ca => None,
        }
    }
}

impl std::fmt::Display for KeyOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyOwner::User(id) => write!(f, "user {id}"),
            KeyOwner::Ca => f.write_str("the user CA"),
            KeyOwner::CodeSigning => f.write_str("the code-signing key"),
            KeyOwner::Sm2Ca => f.write_str("the SM2 user CA"),
        }
    }
}
