//! Stored values: a format version byte, then bincode. A value that does not decode is an
//! error that names the key, never a silent `None`.

use serde::{Deserialize, Serialize};
use yunkey_store::StoreError;

/// Version of the stored record format. Bump and add a migration when a record changes shape.
///
/// Format 2 (device bindings decided in chips) added `UserRecord::binding_seq`,
/// `DeviceRecord::revoked_at` and `ChipRecord::admission_signature`. Format 1 state is not
/// migrated: its users' keys carry no device binding, so no chip would sign with them; a
/// format 1 cluster is re-created (docs/operations.md, "Upgrading from format 1").
///
/// Format 3 changed no record's shape, so format 2 records are read as they are: it added
/// tables (`f/` activation failures, `e/` device revocation reasons) and stopped storing
/// activation codes (the `EnrollUser` entry and its stored result carry an empty code). A
/// format 2 enrolment result that still holds a code is never answered with it (a retry gets
/// a new code) and is blanked when its code is used or superseded
/// (`apply_devices::forget_code`).
pub(crate) const FORMAT_VERSION: u8 = 3;
/// The format before activation codes were kept out of the state; read as format 3.
const FORMAT_2: u8 = 2;

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Sized first: growing from one byte took about six reallocations per record.
    let size = bincode::serialized_size(value).expect("in-memory serialization cannot fail");
    let mut out = Vec::with_capacity(1 + size as usize);
    out.push(FORMAT_VERSION);
    bincode::serialize_into(&mut out, value).expect("in-memory serialization cannot fail");
    out
}

/// A stored value. Owned records (`T: DeserializeOwned`) and records that borrow from
/// `bytes` (`model_ref`) decode alike.
pub(crate) fn decode<'de, T: Deserialize<'de>>(
    key: &[u8],
    bytes: &'de [u8],
) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    match bytes.split_first() {
        Some((&FORMAT_VERSION | &FORMAT_2, rest)) => {
            bincode::deserialize(rest).map_err(|e| corrupt(e.to_string()))
        }
        Some((1, _)) => Err(corrupt(
            "format 1 (before device binding) is not migrated; re-create the cluster \
             (docs/operations.md, \"Upgrading from format 1\")"
                .into(),
        )),
        Some((v, _)) => Err(corrupt(format!("unknown format version {v}"))),
        None => Err(corrupt("empty value".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::DeviceRecord;

    /// `DeviceRecord` as it was declared before its byte fields were read and written as
    /// bytes (`serde_bytes`) rather than as sequences of `u8`: bincode writes a struct as the
    /// tuple of its fields.
    type DeviceAsSequences = (String, String, Vec<u8>, Vec<u8>, i64, Option<i64>);

    #[test]
    fn byte_fields_keep_their_stored_format() {
        let device = DeviceRecord {
            device_id: "dev-1".into(),
            name: "phone".into(),
            public_key: (0..=255).collect(),
            certificate: vec![0x30, 0x82, 0, 1],
            registered_at: 7,
            revoked_at: Some(9),
        };
        let d = device.clone();
        let before: DeviceAsSequences = (
            d.device_id,
            d.name,
            d.public_key,
            d.certificate,
            d.registered_at,
            d.revoked_at,
        );
        // The same bytes either way, so records written by older builds read as they are.
        assert_eq!(encode(&device), encode(&before));
        let read: DeviceRecord = decode(b"key", &encode(&before)).unwrap();
        assert_eq!(read, device);
        let back: DeviceAsSequences = decode(b"key", &encode(&device)).unwrap();
        assert_eq!(back, before);
    }
}
