//! A user key's binding: which devices may authorize signatures with it, whether the user or a
//! device is revoked, and the pending one-time activation that lets the first device bind.
//!
//! The binding is decided inside chips only. It travels between chips inside the wrapped key,
//! authenticated under the domain's MAC key ([`crate::wrapped`]), so a coordinator can carry
//! it but cannot forge or alter it. Every change raises `seq`. A chip takes another chip's
//! binding only by [`Binding::merge`], a join: revocations and consumed activations are kept
//! from both sides, so a revocation, once a chip has seen it, cannot be undone by replaying an
//! older wrapped key or by a binding forked on a chip that had not seen it yet.
//!
//! Activations have epochs. Enrolment opens epoch 0; each re-activation (a new code from the
//! operator, [`Binding::reactivate`]) opens the next one. The merge keeps the activation of
//! the higher epoch, so a new code supersedes an old one everywhere, and within one epoch a
//! consumed activation stays consumed.
//!
//! Encoding (format 2):
//! ```text
//! 2 (1) || seq (8, BE) || revoked (1) || activation_epoch (4, BE) || has_activation (1)
//!   [|| activation_code_sha256 (32) || activation_expires_at (8, BE, signed)]
//!   || device count (2, BE) || per device: device_id (lp) || public_key_spki (lp) || revoked (1)
//! ```
//! where `lp` is a 2-byte big-endian length and the bytes. Format 1 is format 2 without the
//! epoch; it decodes as epoch 0 and is written back as format 2.

use crate::wrapped::{put_lp, take_lp};
use crate::ChipError;
use yunkey_crypto::validate::InvalidField;

/// Format version of an encoded binding.
pub const FORMAT: u8 = 2;
/// The format before activation epochs (still read).
const FORMAT_1: u8 = 1;
/// Most devices one user key may have bound (revoked ones included).
pub const MAX_DEVICES: usize = 16;

/// The first device's pending activation: the hash of the one-time code and its expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingActivation {
    /// SHA-256 of the activation code (the code itself never reaches a chip's storage).
    pub code_sha256: [u8; 32],
    /// Unix seconds after which the code is void.
    pub expires_at: i64,
}

/// A device bound to a user key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundDevice {
    /// `dev-...`, derived from the key ([`yunkey_crypto::names::device_id`]).
    pub device_id: String,
    /// SubjectPublicKeyInfo DER of the device key.
    pub public_key_spki: Vec<u8>,
    /// Whether the device is revoked (it stays listed so that it cannot be bound again).
    pub revoked: bool,
}

/// A user key's binding. Cluster (CA) keys carry the empty binding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Binding {
    /// Raised by one on every change.
    pub seq: u64,
    /// The user is revoked: the key signs nothing more.
    pub revoked: bool,
    /// The epoch of `activation`: 0 from enrolment, raised by each re-activation.
    pub activation_epoch: u32,
    /// The pending activation, until it is used: it lets one more device bind.
    pub activation: Option<PendingActivation>,
    /// Bound devices.
    pub devices: Vec<BoundDevice>,
}

fn corrupt(reason: &str) -> ChipError {
    ChipError::Invalid(InvalidField::new(
        "wrapped_key",
        format!("binding {reason}"),
    ))
}

impl Binding {
    /// The device `device_id`, if bound (revoked or not).
    pub fn device(&self, device_id: &str) -> Option<&BoundDevice> {
        self.devices.iter().find(|d| d.device_id == device_id)
    }

    /// The join of two bindings of the same key: the higher seq; revoked if either is; every
    /// device of either, revoked if revoked in either; the activation of the higher epoch, and
    /// within one epoch only if both still have the same one pending (a consumed activation
    /// stays consumed).
    pub fn merge(&self, other: &Binding) -> Binding {
        let mut devices = self.devices.clone();
        for d in &other.devices {
            match devices.iter_mut().find(|m| m.device_id == d.device_id) {
                Some(m) => m.revoked |= d.revoked,
                None => devices.push(d.clone()),
            }
        }
        devices.truncate(MAX_DEVICES);
        Binding {
            seq: self.seq.max(other.seq),
            revoked: self.revoked || other.revoked,
            activation_epoch: self.activation_epoch.max(other.activation_epoch),
            activation: match self.activation_epoch.cmp(&other.activation_epoch) {
                std::cmp::Ordering::Greater => self.activation.clone(),
                std::cmp::Ordering::Less => other.activation.clone(),
                std::cmp::Ordering::Equal => match (&self.activation, &other.activation) {
                    (Some(a), Some(b)) if a == b => Some(a.clone()),
                    _ => None,
                },
            },
            devices,
        }
    }

    /// The encoded form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT];
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.push(u8::from(self.revoked));
        out.extend_from_slice(&self.activation_epoch.to_be_bytes());
        match &self.activation {
            Some(a) => {
                out.push(1);
                out.extend_from_slice(&a.code_sha256);
                out.extend_from_slice(&a.expires_at.to_be_bytes());
            }
            None => out.push(0),
        }
        let n = u16::try_from(self.devices.len()).expect("at most MAX_DEVICES devices");
        out.extend_from_slice(&n.to_be_bytes());
        for d in &self.devices {
            put_lp(&mut out, d.device_id.as_bytes());
            put_lp(&mut out, &d.public_key_spki);
            out.push(u8::from(d.revoked));
        }
        out
    }

    /// Reads [`Binding::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Result<Self, ChipError> {
        let (version, rest) = bytes.split_first().ok_or_else(|| corrupt("is empty"))?;
        if *version != FORMAT && *version != FORMAT_1 {
            return Err(corrupt("has an unknown format version"));
        }
        let take = |rest: &mut &[u8], n: usize| -> Result<Vec<u8>, ChipError> {
            let v = rest
                .get(..n)
                .ok_or_else(|| corrupt("is truncated"))?
                .to_vec();
            *rest = &rest[n..];
            Ok(v)
        };
        let mut rest = rest;
        let seq = u64::from_be_bytes(take(&mut rest, 8)?.try_into().expect("8 bytes"));
        let flag = |b: u8| match b {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(corrupt("has a bad flag")),
        };
        let revoked = flag(take(&mut rest, 1)?[0])?;
        let activation_epoch = if *version == FORMAT_1 {
            0
        } else {
            u32::from_be_bytes(take(&mut rest, 4)?.try_into().expect("4 bytes"))
        };
        let activation = if flag(take(&mut rest, 1)?[0])? {
            let code_sha256 = take(&mut rest, 32)?.try_into().expect("32 bytes");
            let expires_at = i64::from_be_bytes(take(&mut rest, 8)?.try_into().expect("8 bytes"));
            Some(PendingActivation {
                code_sha256,
                expires_at,
            })
        } else {
            None
        };
        let n = u16::from_be_bytes(take(&mut rest, 2)?.try_into().expect("2 bytes")) as usize;
        if n > MAX_DEVICES {
            return Err(corrupt("lists too many devices"));
        }
        let mut devices = Vec::with_capacity(n);
        for _ in 0..n {
            let (id, r) = take_lp(rest).ok_or_else(|| corrupt("is truncated"))?;
            let (spki, r) = take_lp(r).ok_or_else(|| corrupt("is truncated"))?;
            let device_id = std::str::from_utf8(id)
                .map_err(|_| corrupt("has a non-UTF-8 device id"))?
                .to_owned();
            let public_key_spki = spki.to_vec();
            rest = r;
            let revoked = flag(take(&mut rest, 1)?[0])?;
            devices.push(BoundDevice {
                device_id,
                public_key_spki,
                revoked,
            });
        }
        if !rest.is_empty() {
            return Err(corrupt("has trailing bytes"));
        }
        Ok(Self {
            seq,
            revoked,
            activation_epoch,
            activation,
            devices,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_every_revocation() {
        let dev = |id: &str, revoked| BoundDevice {
            device_id: id.into(),
            public_key_spki: vec![1],
            revoked,
        };
        let base = Binding {
            seq: 1,
            devices: vec![dev("a", false)],
            ..Binding::default()
        };
        // One chip revoked the user; another, not knowing, revoked device a and bound b.
        let revoked_user = Binding {
            seq: 2,
            revoked: true,
            ..base.clone()
        };
        let forked = Binding {
            seq: 3,
            devices: vec![dev("a", true), dev("b", false)],
            ..base.clone()
        };
        for merged in [revoked_user.merge(&forked), forked.merge(&revoked_user)] {
            assert!(merged.revoked);
            assert_eq!(merged.seq, 3);
            assert!(merged.device("a").unwrap().revoked);
            assert!(!merged.device("b").unwrap().revoked);
        }
        let pending = Binding {
            activation: Some(PendingActivation {
                code_sha256: [1; 32],
                expires_at: 9,
            }),
            ..Binding::default()
        };
        assert!(pending.merge(&base).activation.is_none());
        assert_eq!(pending.merge(&pending), pending);
        // A re-activation (next epoch) wins over the consumed or pending code of the last one,
        // whichever side it comes from; an older epoch never brings an old code back.
        let renewed = Binding {
            seq: 4,
            activation_epoch: 1,
            activation: Some(PendingActivation {
                code_sha256: [2; 32],
                expires_at: 99,
            }),
            ..base.clone()
        };
        for merged in [
            renewed.merge(&pending),
            pending.merge(&renewed),
            renewed.merge(&base),
        ] {
            assert_eq!(merged.activation_epoch, 1);
            assert_eq!(merged.activation, renewed.activation);
        }
        let consumed = Binding {
            seq: 5,
            activation: None,
            ..renewed.clone()
        };
        assert!(consumed.merge(&renewed).activation.is_none());
        assert!(consumed.merge(&pending).activation.is_none());
    }

    #[test]
    fn format_1_reads_as_epoch_0() {
        // seq 3, not revoked, a pending activation, no devices, in format 1.
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&3u64.to_be_bytes());
        v1.push(0);
        v1.push(1);
        v1.extend_from_slice(&[7u8; 32]);
        v1.extend_from_slice(&50i64.to_be_bytes());
        v1.extend_from_slice(&0u16.to_be_bytes());
        let b = Binding::decode(&v1).unwrap();
        assert_eq!(b.seq, 3);
        assert_eq!(b.activation_epoch, 0);
        assert_eq!(b.activation.as_ref().unwrap().code_sha256, [7; 32]);
        assert_eq!(b.encode()[0], FORMAT);
        assert_eq!(Binding::decode(&b.encode()).unwrap(), b);
    }

    #[test]
    fn round_trip_and_strictness() {
        let b = Binding {
            seq: 7,
            revoked: false,
            activation_epoch: 3,
            activation: Some(PendingActivation {
                code_sha256: [3; 32],
                expires_at: -5,
            }),
            devices: vec![BoundDevice {
                device_id: "dev-1".into(),
                public_key_spki: vec![1, 2, 3],
                revoked: true,
            }],
        };
        let e = b.encode();
        assert_eq!(Binding::decode(&e).unwrap(), b);
        assert_eq!(
            Binding::decode(&Binding::default().encode()).unwrap(),
            Binding::default()
        );
        let mut trailing = e.clone();
        trailing.push(0);
        assert!(Binding::decode(&trailing).is_err());
        assert!(Binding::decode(&e[..e.len() - 1]).is_err());
        let mut bad_version = e;
        bad_version[0] = 9;
        assert!(Binding::decode(&bad_version).is_err());
    }
}
