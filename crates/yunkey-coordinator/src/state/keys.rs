//! Key layout of the state tree. Every key starts with a one-letter table prefix and `/`.
//! (Keys starting with byte 0x00 belong to the Raft store.)
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `u/` | user id | [`UserRecord`](super::UserRecord) |
//! | `d/` | device id | user id (index) |
//! | `f/` | user id | failed activation attempts against the pending code (u32; absent: 0) |
//! | `e/` | device id | why the device was revoked or removed (ended) |
//! | `l/` | tx hash (32 bytes) | [`LedgerEntry`](super::LedgerEntry) |
//! | `x/` | expiry (8 bytes, ordered), tx hash | empty: the ledger's expiry index (written once the cluster prunes, see `apply_prune`) |
//! | `r/` | request id | stored first result of that request |
//! | `c/` | chip id | [`ChipRecord`](super::ChipRecord) |
//! | `s/` | chip id | Unix seconds since the chip is draining (absent: not draining) |
//! | `a/` | big-endian sequence | [`AuditRecord`](super::AuditRecord) |
//! | `w/` | user id, `/`, big-endian sequence | [`UserAuditRecord`](super::UserAuditRecord): the user's lines of the audit trail |
//! | `z/` | big-endian sequence | user id: whose `w/` line goes with the `a/` record (written once the cluster prunes) |
//! | `n/` | node id (u64 BE) | [`NodeIdRecord`](super::NodeIdRecord): every coordinator id ever added, never removed |
//! | `v/` | release id | [`ReleaseRecord`](super::ReleaseRecord) |
//! | `m/ca` | | [`CaRecord`](super::CaRecord): the ECDSA P-256 user CA |
//! | `m/ca_sm2` | | [`CaRecord`](super::CaRecord): the SM2 user CA (made at the first SM2 enrolment) |
//! | `k/` | user id | an SM2 user's distinguishing ID, when it is not the default |
//! | `m/code_signing` | | [`CodeSigningRecord`](super::CodeSigningRecord) |
//! | `m/release_policy` | | [`ReleasePolicy`](super::ReleasePolicy) (absent: the default) |
//! | `m/domain` | | domain id |
//! | `m/operator_key` | | the domain's operator key (SPKI DER) |
//! | `m/audit_seq` | | next audit sequence (u64 BE) |
//! | `m/pruned_until` | | the prune horizon (i64 BE): ledger entries expiring at or before it may be gone (absent: never pruned) |
//! | `m/prune_sweep` | | [`Sweep`](super::apply_prune::Sweep): how far the walk over ledger entries from before the first prune got |
//! | `m/audit_sweep` | | [`Sweep`](super::apply_prune::Sweep): how far the walk over users' audit lines from before the first prune got |
//! | `m/count/*` | | counters (u64 BE) |

pub(crate) fn user(id: &str) -> Vec<u8> {
    [b"u/", id.as_bytes()].concat()
}
pub(crate) const USER_PREFIX: &[u8] = b"u/";

pub(crate) fn user_distid(id: &str) -> Vec<u8> {
    [b"k/", id.as_bytes()].concat()
}

pub(crate) fn device(id: &str) -> Vec<u8> {
    [b"d/", id.as_bytes()].concat()
}

pub(crate) fn activation_failures(user_id: &str) -> Vec<u8> {
    [b"f/", user_id.as_bytes()].concat()
}

pub(crate) fn device_revocation(device_id: &str) -> Vec<u8> {
    [b"e/", device_id.as_bytes()].concat()
}

pub(crate) fn ledger(tx_hash: &[u8; 32]) -> Vec<u8> {
    [LEDGER_PREFIX, tx_hash].concat()
}

/// An expiry as 8 bytes that sort like the number (the sign bit flipped, big-endian).
fn ordered(expires_at: i64) -> [u8; 8] {
    ((expires_at as u64) ^ (1 << 63)).to_be_bytes()
}

pub(crate) const EXPIRY_PREFIX: &[u8] = b"x/";

pub(crate) fn expiry(expires_at: i64, tx_hash: &[u8; 32]) -> Vec<u8> {
    [EXPIRY_PREFIX, &ordered(expires_at)[..], tx_hash].concat()
}

/// The first index key after every entry expiring at or before `expires_at`.
pub(crate) fn expiry_after(expires_at: i64) -> Vec<u8> {
    match expires_at.checked_add(1) {
        Some(next) => [EXPIRY_PREFIX, &ordered(next)[..]].concat(),
        None => b"x0".to_vec(),
    }
}

/// The tx hash of an expiry index key.
pub(crate) fn expiry_tx_hash(key: &[u8]) -> Option<[u8; 32]> {
    key.get(EXPIRY_PREFIX.len() + 8..)?.try_into().ok()
}

pub(crate) const LEDGER_PREFIX: &[u8] = b"l/";

pub(crate) fn request(id: &str) -> Vec<u8> {
    [b"r/", id.as_bytes()].concat()
}

pub(crate) fn chip(id: &str) -> Vec<u8> {
    [b"c/", id.as_bytes()].concat()
}
pub(crate) const CHIP_PREFIX: &[u8] = b"c/";

pub(crate) fn draining(id: &str) -> Vec<u8> {
    [b"s/", id.as_bytes()].concat()
}

pub(crate) const AUDIT_PREFIX: &[u8] = b"a/";

pub(crate) fn audit(seq: u64) -> Vec<u8> {
    [AUDIT_PREFIX, &seq.to_be_bytes()].concat()
}

pub(crate) fn audit_user(seq: u64) -> Vec<u8> {
    [&b"z/"[..], &seq.to_be_bytes()].concat()
}

pub(crate) const USER_AUDIT_PREFIX: &[u8] = b"w/";

pub(crate) fn user_audit(user_id: &str, seq: u64) -> Vec<u8> {
    [&user_audit_prefix(user_id)[..], &seq.to_be_bytes()].concat()
}

/// `/` cannot occur in a user id, so one user's prefix never covers another's.
pub(crate) fn user_audit_prefix(user_id: &str) -> Vec<u8> {
    [USER_AUDIT_PREFIX, user_id.as_bytes(), b"/"].concat()
}

pub(crate) fn node_id(id: u64) -> Vec<u8> {
    [&b"n/"[..], &id.to_be_bytes()].concat()
}
pub(crate) const NODE_ID_PREFIX: &[u8] = b"n/";

pub(crate) fn release(id: &str) -> Vec<u8> {
    [b"v/", id.as_bytes()].concat()
}
pub(crate) const RELEASE_PREFIX: &[u8] = b"v/";

pub(crate) const CA: &[u8] = b"m/ca";
pub(crate) const SM2_CA: &[u8] = b"m/ca_sm2";
pub(crate) const CODE_SIGNING: &[u8] = b"m/code_signing";
pub(crate) const RELEASE_POLICY: &[u8] = b"m/release_policy";
pub(crate) const DOMAIN: &[u8] = b"m/domain";
pub(crate) const OPERATOR_KEY: &[u8] = b"m/operator_key";
pub(crate) const AUDIT_SEQ: &[u8] = b"m/audit_seq";
pub(crate) const PRUNED_UNTIL: &[u8] = b"m/pruned_until";
pub(crate) const PRUNE_SWEEP: &[u8] = b"m/prune_sweep";
pub(crate) const AUDIT_SWEEP: &[u8] = b"m/audit_sweep";
pub(crate) const COUNT_USERS: &[u8] = b"m/count/users";
pub(crate) const COUNT_DEVICES: &[u8] = b"m/count/devices";
pub(crate) const COUNT_SIGNATURES: &[u8] = b"m/count/signatures";
