//! What the risk service stores, and how: every value is one format-version byte followed by
//! the record in bincode. A value of another version, or one that does not decode, is an
//! error ([`StoreError::Corrupt`]), never a silent default.
//!
//! Keys, all in one tree so that one batch can change several records atomically:
//!
//! | key | value |
//! |---|---|
//! | `u/<user>` | [`UserRecord`]: velocity timestamps, daily totals, last location |
//! | `c/<user>\0<tx_hash>` | [`CountedRecord`]: a transaction that was counted, and what it added |
//! | `a/<decision id>` | [`AuthRecord`]: an AuthenticateUser result |
//! | `f/<user>` | [`FaceRecord`]: the user's encrypted face template |
//! | `x/<prune at><key>` | the version byte only: `key` is deleted after `prune at` |

use crate::geo::GeoPoint;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use yunkey_store::StoreError;

/// Format version of every record this build writes and reads.
pub const VERSION: u8 = 1;

/// A user's counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    /// When each counted transaction was counted (Unix seconds, oldest first), as far back as
    /// the longest velocity window.
    pub counted_at: Vec<i64>,
    /// Per currency: the local day and that day's total.
    pub daily: Vec<DailyTotal>,
    /// The last counted transaction that had a location.
    pub last_location: Option<LastLocation>,
}

/// One currency's total on one local day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DailyTotal {
    /// ISO 4217 code.
    pub currency: String,
    /// Local day number (days since 1970-01-01 after the timezone offset).
    pub day: i64,
    /// Total, in units of 10^-8.
    pub units: u128,
}

/// Where and when the user last transacted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LastLocation {
    /// Where.
    pub point: GeoPoint,
    /// When it was counted, Unix seconds.
    pub at: i64,
    /// Which transaction.
    pub tx_hash: [u8; 32],
}

/// A counted transaction: what it added to its user's counters, so that a re-assessment of
/// it is not counted again and sees the counters as they were without it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountedRecord {
    /// When it was counted.
    pub at: i64,
    /// Its currency.
    pub currency: String,
    /// Its amount, in units of 10^-8.
    pub units: u128,
    /// The local day it was added to.
    pub day: i64,
    /// The user's last location before it (if it moved the last location).
    pub previous_location: Option<(GeoPoint, i64)>,
}

/// An AuthenticateUser result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthRecord {
    /// Whose evidence it was.
    pub user_id: String,
    /// For which transaction.
    pub tx_hash: [u8; 32],
    /// Whether it matched.
    pub matched: bool,
    /// Unix seconds after which it is void.
    pub expires_at: i64,
}

/// A user's face template, sealed ([`crate::template`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceRecord {
    /// When it was enrolled, Unix seconds.
    pub enrolled_at: i64,
    /// The sealed template.
    pub sealed: Vec<u8>,
}

/// `u/<user>`.
pub fn user_key(user: &str) -> Vec<u8> {
    [b"u/", user.as_bytes()].concat()
}

/// `c/<user>\0<tx_hash>` (user ids never contain a NUL).
pub fn counted_key(user: &str, tx_hash: &[u8; 32]) -> Vec<u8> {
    [b"c/", user.as_bytes(), b"\0", tx_hash].concat()
}

/// `a/<decision id>`.
pub fn auth_key(id: &str) -> Vec<u8> {
    [b"a/", id.as_bytes()].concat()
}

/// `f/<user>`.
pub fn face_key(user: &str) -> Vec<u8> {
    [b"f/", user.as_bytes()].concat()
}

/// Prefix of the prune index.
pub const PRUNE_PREFIX: &[u8] = b"x/";

/// The prune index entry for `key`, due at `at`: `x/` then `at` as 8 big-endian bytes (sign
/// bit flipped, so the order is numeric), then `key`.
pub fn prune_key(at: i64, key: &[u8]) -> Vec<u8> {
    [PRUNE_PREFIX, &prune_stamp(at), key].concat()
}

/// The sortable 8 bytes of a prune time.
pub fn prune_stamp(at: i64) -> [u8; 8] {
    ((at as u64) ^ (1 << 63)).to_be_bytes()
}

/// The key a prune index entry points at.
pub fn pruned_key(index_key: &[u8]) -> Option<&[u8]> {
    index_key.get(PRUNE_PREFIX.len() + 8..)
}

/// The stored form of `value`.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![VERSION];
    // Serializing these plain structs into a Vec cannot fail.
    bincode::serialize_into(&mut out, value).unwrap_or_default();
    out
}

/// Decodes a value stored under `key`.
pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).escape_debug().to_string(),
        reason,
    };
    match bytes.split_first() {
        None => Err(corrupt("empty value".into())),
        Some((&VERSION, rest)) => {
            bincode::deserialize(rest).map_err(|e| corrupt(format!("format {VERSION}: {e}")))
        }
        Some((v, _)) => Err(corrupt(format!(
            "format version {v}; this yunkey reads format {VERSION} (written by a newer yunkey?)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_a_version_byte() {
        let rec = UserRecord {
            counted_at: vec![1, 2, 3],
            daily: vec![DailyTotal {
                currency: "EUR".into(),
                day: 19_000,
                units: u128::from(u64::MAX) * 10,
            }],
            last_location: Some(LastLocation {
                point: GeoPoint::new(1.5, -2.5).unwrap(),
                at: 7,
                tx_hash: [9; 32],
            }),
        };
        let bytes = encode(&rec);
        assert_eq!(bytes[0], VERSION);
        assert_eq!(decode::<UserRecord>(b"u/x", &bytes).unwrap(), rec);
    }

    #[test]
    fn other_versions_and_garbage_are_errors() {
        let mut bytes = encode(&UserRecord::default());
        bytes[0] = 2;
        let e = decode::<UserRecord>(b"u/x", &bytes)
            .unwrap_err()
            .to_string();
        assert!(e.contains("format version 2"), "{e}");
        assert!(decode::<UserRecord>(b"u/x", &[]).is_err());
        assert!(decode::<AuthRecord>(b"a/x", &[VERSION, 1, 2]).is_err());
    }

    #[test]
    fn prune_keys_sort_by_time() {
        let a = prune_key(-5, b"a/x");
        let b = prune_key(0, b"a/x");
        let c = prune_key(1_700_000_000, b"a/x");
        assert!(a < b && b < c);
        assert_eq!(pruned_key(&c), Some(&b"a/x"[..]));
    }
}
