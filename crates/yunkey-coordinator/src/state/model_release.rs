//! Records of terminal releases: the code-signing key (in chips, like the user CA's), every
//! signed release, and the policy that decides which releases devices may run. No record
//! holds a private key in plaintext: the code-signing key appears only wrapped.

use serde::{Deserialize, Serialize};

use super::model::HolderRecord;

/// The cluster's code-signing key, whose key lives in chips (purpose CODE_SIGNING).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeSigningRecord {
    /// Its certificate DER, issued by the user CA.
    #[serde(with = "serde_bytes")]
    pub certificate: Vec<u8>,
    /// The key wrapped under the domain key.
    #[serde(with = "serde_bytes")]
    pub wrapped_key: Vec<u8>,
    /// Chips holding the key.
    pub holders: Vec<HolderRecord>,
}

/// A signed release of the terminal software.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    /// `rel-` + 20 hex digits (`yunkey_crypto::release::release_id`).
    pub release_id: String,
    /// `MAJOR.MINOR.PATCH`, as (major, minor, patch).
    pub version: (u32, u32, u32),
    /// SHA-256 of the released file.
    pub file_sha256: [u8; 32],
    /// DER ECDSA signature by the code-signing key over the manifest message.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
    /// Unix seconds.
    pub signed_at: i64,
    /// Who signed it (the operator's certificate name).
    pub signed_by: String,
    /// When it was revoked (Unix seconds), if it was.
    pub revoked_at: Option<i64>,
    /// Why.
    pub revoked_reason: String,
}

/// Which releases devices may present on `RegisterDevice` and `SignTransaction`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasePolicy {
    /// Releases below this version are refused.
    pub min_version: Option<(u32, u32, u32)>,
    /// Requests without a release id are refused.
    pub require_release: bool,
}
