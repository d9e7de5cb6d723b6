//! The snapshot data format: a header with a format version, then every entry of the `sm` tree.

use serde::{Deserialize, Serialize};
use yunkey_store::Entry;

use crate::codec::{decode, encode};

/// Version of the snapshot data format written by this crate. Readers reject other versions.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;

/// Magic bytes that open every snapshot.
const MAGIC: &[u8; 4] = b"YKSN";

/// The contents of a snapshot: every `(key, value)` of the state-machine tree, reserved keys
/// (last applied log id, last membership) included.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotData {
    /// Every entry of the `sm` tree, in key order.
    pub(crate) entries: Vec<Entry>,
}

impl SnapshotData {
    /// `MAGIC`, the big-endian `u32` format version, then the bincode body.
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let body = encode(self).map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(8 + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Parses [`SnapshotData::to_bytes`]'s output, rejecting unknown magic or versions.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < 8 || &bytes[..4] != MAGIC {
            return Err("not a yunkey snapshot (bad magic)".into());
        }
        let mut v = [0u8; 4];
        v.copy_from_slice(&bytes[4..8]);
        let version = u32::from_be_bytes(v);
        if version != SNAPSHOT_FORMAT_VERSION {
            return Err(format!(
                "unsupported snapshot format version {version} (expected {SNAPSHOT_FORMAT_VERSION})"
            ));
        }
        decode(&bytes[8..]).map_err(|e| format!("corrupt snapshot body: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_check() {
        let d = SnapshotData {
            entries: vec![(b"a".to_vec(), b"1".to_vec())],
        };
        let mut bytes = d.to_bytes().unwrap();
        assert_eq!(SnapshotData::from_bytes(&bytes).unwrap().entries, d.entries);
        bytes[7] = 99;
        assert!(SnapshotData::from_bytes(&bytes)
            .unwrap_err()
            .contains("version"));
        assert!(SnapshotData::from_bytes(b"xx").is_err());
    }
}
