//! **For tests only; never in a release build.** Reads a *stopped* soft chip's data directory
//! and returns the private scalar of every key it holds, so that a test can search data
//! directories and logs for them (the invariant "a private key exists in plaintext only inside
//! a chip").
//!
//! Compiled only with the `test-key-scalars` feature of `yunkey-chip`, which no crate enables
//! in its `[dependencies]`: the `yunkey` crate enables it in its `[dev-dependencies]` only, and
//! Cargo's feature resolver 2 does not unify dev-dependency features into `cargo build
//! --release`, so the `yunkey` binary never contains this code (`docs/security.md` says how
//! that was checked).
//!
//! It works for the soft custody only, whose key reference is the scalar itself, sealed in the
//! module's record under `master.key`: it opens the records exactly as the chip would. A chip
//! process must not have the directory open (sled locks it).

use super::store::{Store, META_CHIP_ID};
use crate::soft::{SoftCustody, MASTER_KEY_FILE, STORE_DIR};
use crate::{ChipError, KeyPurpose};
use std::fmt;
use std::path::Path;
use yunkey_crypto::ecdsa::PrivateKey;
use yunkey_crypto::seal::SealKey;
use yunkey_store::Db;
use zeroize::Zeroizing;

/// One key of a soft chip, with its private scalar. Never printed: `Debug` shows everything
/// but the scalar, which is wiped on drop.
pub struct KeyScalar {
    /// The chip's handle of the key.
    pub handle: String,
    /// A user key or a CA key.
    pub purpose: KeyPurpose,
    /// The user the key belongs to (empty for a CA key).
    pub user_id: String,
    /// The key's public key (SubjectPublicKeyInfo, DER), checked against the scalar.
    pub public_key_spki: Vec<u8>,
    scalar: Zeroizing<[u8; 32]>,
}

impl KeyScalar {
    /// The 32-byte big-endian private scalar.
    pub fn expose_scalar(&self) -> &[u8; 32] {
        &self.scalar
    }
}

impl fmt::Debug for KeyScalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyScalar")
            .field("handle", &self.handle)
            .field("purpose", &self.purpose)
            .field("user_id", &self.user_id)
            .field("scalar", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Every key of the stopped soft chip in `dir`, with its scalar (see the module doc). Fails if
/// the directory is not a soft chip's, or a record does not open or does not match its public
/// key.
pub fn soft_chip_scalars(dir: &Path) -> Result<Vec<KeyScalar>, ChipError> {
    const OP: &str = "test-key-scalars: reading a stopped soft chip";
    let master = Zeroizing::new(
        std::fs::read(dir.join(MASTER_KEY_FILE)).map_err(|e| ChipError::storage(OP, e))?,
    );
    let custody = SoftCustody::new(
        SealKey::from_bytes(&master).map_err(|_| ChipError::storage(OP, "bad master.key"))?,
    );
    let db = Db::open_sled(dir.join(STORE_DIR)).map_err(|e| ChipError::storage(OP, e))?;
    let chip_id = db
        .tree("meta")?
        .get(META_CHIP_ID)?
        .ok_or_else(|| ChipError::storage(OP, "no chip id in the store"))?;
    let chip_id = String::from_utf8(chip_id).map_err(|_| ChipError::storage(OP, "chip id"))?;
    let store = Store::open(db, &chip_id)?;
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let handles = store.handles_after(&after, 1000)?;
        let Some(last) = handles.last() else { break };
        after = last.clone();
        for handle in handles {
            let record = store.load(&custody, &handle)?;
            let scalar: [u8; 32] =
                record.key_ref.as_bytes().try_into().map_err(|_| {
                    ChipError::storage(OP, "a key reference is not a 32-byte scalar")
                })?;
            let scalar = Zeroizing::new(scalar);
            let key = PrivateKey::from_secret_bytes(&scalar[..])
                .map_err(|_| ChipError::storage(OP, "a stored scalar is not a P-256 key"))?;
            if key.public_key().to_spki_der() != record.public_key_spki {
                return Err(ChipError::storage(
                    OP,
                    "a scalar does not match its public key",
                ));
            }
            out.push(KeyScalar {
                handle,
                purpose: record.purpose,
                user_id: record.user_id.clone(),
                public_key_spki: record.public_key_spki.clone(),
                scalar,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, Operator};
    use crate::{ChipConfig, SoftChip};

    #[test]
    fn reads_every_key_of_a_stopped_soft_chip_and_never_prints_a_scalar() {
        let dir = tempfile::tempdir().unwrap();
        let handles = {
            let chip = SoftChip::open(
                dir.path(),
                ChipConfig {
                    chip_id: "chip-1".into(),
                    capacity: 8,
                    zone: "z".into(),
                },
            )
            .unwrap();
            Operator::new().init_domain(&chip);
            let (a, _) = testing::enrol(&chip, "alice");
            let (b, _) = testing::enrol(&chip, "bob");
            vec![(a, "alice"), (b, "bob")]
        };
        let keys = soft_chip_scalars(dir.path()).unwrap();
        assert_eq!(keys.len(), 2);
        for (generated, user) in handles {
            let k = keys.iter().find(|k| k.handle == generated.handle).unwrap();
            assert_eq!(k.user_id, user);
            assert_eq!(k.public_key_spki, generated.public_key_spki);
            let shown = format!("{k:?}");
            assert!(!shown.contains(&hex::encode(k.expose_scalar())), "{shown}");
            assert!(shown.contains("<redacted>"));
        }
        // Not a chip directory: a clear error, and no master key made.
        let empty = tempfile::tempdir().unwrap();
        assert!(soft_chip_scalars(empty.path()).is_err());
        assert!(!empty.path().join(MASTER_KEY_FILE).exists());
    }
}
