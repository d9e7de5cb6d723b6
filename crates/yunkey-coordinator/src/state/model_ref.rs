//! Records read where the state tree keeps them, borrowing their strings and bytes instead of
//! copying them. The sign path reads a user record (about 2 KB: two certificates and a
//! wrapped key in some fifteen allocations) for every signature, on the leader to check the
//! request and on every coordinator to apply it, and needs a few of its fields
//! (docs/performance.md, item 29).
//!
//! A `…Ref` declares the leading fields of its record, in the record's order and with the
//! same types: bincode writes a struct as the tuple of its fields, and a decode may stop
//! before the record's end. The tests below check each against its record; a field added to
//! a record goes at its end (`codec::FORMAT_VERSION`), which a `…Ref` may leave out.

use super::model::UserState;
use serde::Deserialize;

/// The leading fields of a [`super::UserRecord`], borrowed.
#[derive(Debug, Deserialize)]
pub struct UserRef<'a> {
    /// User id.
    pub user_id: &'a str,
    /// Algorithm number as in the protobuf `Algorithm`.
    pub algorithm: i32,
    /// SubjectPublicKeyInfo DER.
    pub public_key: &'a [u8],
    /// The wrapped private key.
    pub wrapped_key: &'a [u8],
    /// The seq of the binding in `wrapped_key`.
    pub binding_seq: u64,
    /// User certificate DER.
    pub certificate: &'a [u8],
    /// Active or revoked.
    pub state: UserState,
    /// Chips holding the key.
    #[serde(borrow)]
    pub holders: Vec<HolderRef<'a>>,
    /// Registered devices.
    #[serde(borrow)]
    pub devices: Vec<DeviceRef<'a>>,
}

/// A [`super::HolderRecord`], borrowed.
#[derive(Debug, Deserialize)]
pub struct HolderRef<'a> {
    /// The chip.
    pub chip_id: &'a str,
    /// The key's handle inside that chip.
    pub key_handle: &'a str,
}

/// A [`super::DeviceRecord`], borrowed.
#[derive(Debug, Deserialize)]
pub struct DeviceRef<'a> {
    /// Device id.
    pub device_id: &'a str,
    /// Label given at registration.
    pub name: &'a str,
    /// SubjectPublicKeyInfo DER.
    pub public_key: &'a [u8],
    /// Device certificate DER.
    pub certificate: &'a [u8],
    /// Unix seconds.
    pub registered_at: i64,
    /// When it was revoked (Unix seconds).
    pub revoked_at: Option<i64>,
}

impl HolderRef<'_> {
    /// An owned copy, for a chip call that outlives the read.
    pub fn to_record(&self) -> super::HolderRecord {
        super::HolderRecord {
            chip_id: self.chip_id.to_owned(),
            key_handle: self.key_handle.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::codec::{decode, encode};
    use super::super::model::{Activation, DeviceRecord, HolderRecord, UserRecord};
    use super::*;

    fn user(activation: bool) -> UserRecord {
        let device = |i: u8, revoked_at| DeviceRecord {
            device_id: format!("dev-{i}"),
            name: format!("phone {i}"),
            public_key: vec![i; 91],
            certificate: vec![0x30, i, 7],
            registered_at: 1_700_000_000 + i64::from(i),
            revoked_at,
        };
        UserRecord {
            user_id: "alice".into(),
            algorithm: 2,
            public_key: (0..91).collect(),
            wrapped_key: (0..=255).rev().collect(),
            binding_seq: 9,
            certificate: vec![0x30, 0x82, 1, 2, 3],
            state: UserState::Revoked,
            holders: vec![
                HolderRecord {
                    chip_id: "chip-1".into(),
                    key_handle: "k-1".into(),
                },
                HolderRecord {
                    chip_id: "chip-3".into(),
                    key_handle: "k-3".into(),
                },
            ],
            devices: vec![device(1, None), device(2, Some(1_700_000_500))],
            activation: activation.then(|| Activation {
                code_sha256: [7; 32],
                expires_at: 1_700_000_900,
                enroll_request_id: "enroll-alice".into(),
            }),
            created_at: 1_699_999_999,
            revoked_reason: Some("lost".into()),
        }
    }

    #[test]
    fn a_user_read_in_place_has_its_records_fields() {
        for activation in [false, true] {
            let record = user(activation);
            let bytes = encode(&record);
            let read: UserRef<'_> = decode(b"u/alice", &bytes).unwrap();
            assert_eq!(read.user_id, record.user_id);
            assert_eq!(read.algorithm, record.algorithm);
            assert_eq!(read.public_key, record.public_key);
            assert_eq!(read.wrapped_key, record.wrapped_key);
            assert_eq!(read.binding_seq, record.binding_seq);
            assert_eq!(read.certificate, record.certificate);
            assert_eq!(read.state, record.state);
            let holders: Vec<HolderRecord> =
                read.holders.iter().map(HolderRef::to_record).collect();
            assert_eq!(holders, record.holders);
            assert_eq!(read.devices.len(), record.devices.len());
            for (d, r) in read.devices.iter().zip(&record.devices) {
                assert_eq!(d.device_id, r.device_id);
                assert_eq!(d.name, r.name);
                assert_eq!(d.public_key, r.public_key);
                assert_eq!(d.certificate, r.certificate);
                assert_eq!(d.registered_at, r.registered_at);
                assert_eq!(d.revoked_at, r.revoked_at);
            }
        }
    }

    #[test]
    fn a_damaged_user_is_a_typed_corruption_in_place_too() {
        let bytes = encode(&user(false));
        let cut = &bytes[..bytes.len() / 2];
        match decode::<UserRef<'_>>(b"u/alice", cut) {
            Err(yunkey_store::StoreError::Corrupt { key, .. }) => assert_eq!(key, "u/alice"),
            other => panic!("{other:?}"),
        }
    }
}
