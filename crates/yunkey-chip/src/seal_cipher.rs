//! The soft chip's sealing cipher: AES-256-GCM or SM4-GCM for every record the soft custody
//! seals under its master key (`yunkey chip --seal-cipher`).
//!
//! It is chosen when the chip directory is created, recorded in the store's `meta` tree
//! (entry `seal_cipher`: one [`Cipher::to_byte`], itself sealed under the master key with that
//! cipher), and fixed for the chip's life: an open that asks for the other cipher is refused
//! with [`ChipError::SealCipherMismatch`]; an open that asks for none takes the recorded one. A
//! directory made before the choice existed seals with AES-256, and is recorded so on its next
//! open.
//!
//! The record decides what new records are sealed with. Opening never depends on it: every
//! sealed blob names its own cipher ([`yunkey_crypto::seal`]).

use crate::ChipError;
use yunkey_crypto::cipher::Cipher;
use yunkey_crypto::seal::SealKey;
use yunkey_store::Db;

const RECORD: &[u8] = b"seal_cipher";
const AAD: &[u8] = b"yunkey-seal-cipher/1";
/// The entry the activation module's store writes on a chip's first open: a directory that
/// has it existed before the sealing cipher was recorded.
const CHIP_ID: &[u8] = b"chip_id";

/// The sealing cipher of the chip whose store is `db`: the recorded one, or, on first open,
/// `requested` (AES-256 if `None`), recorded durably. Refuses a `requested` cipher other than
/// the recorded one.
pub(crate) fn settle(
    db: &Db,
    master: &SealKey,
    requested: Option<Cipher>,
) -> Result<Cipher, ChipError> {
    let meta = db.tree("meta")?;
    let recorded = match meta.get(RECORD)? {
        Some(sealed) => {
            let plain = master.open(AAD, &sealed).map_err(|_| {
                ChipError::storage(
                    "opening the chip",
                    "the seal_cipher record fails authentication under the master key",
                )
            })?;
            match plain.as_slice() {
                [b] => Cipher::from_byte(*b),
                _ => None,
            }
            .ok_or_else(|| {
                ChipError::storage(
                    "opening the chip",
                    "the seal_cipher record names no cipher this yunkey knows",
                )
            })?
        }
        None => {
            let cipher = if meta.get(CHIP_ID)?.is_some() {
                Cipher::Aes256
            } else {
                requested.unwrap_or_default()
            };
            meta.insert(RECORD, &master.seal_with(cipher, AAD, &[cipher.to_byte()]))?;
            // Durability point: the choice is on disk before any record is sealed with it.
            db.flush()?;
            cipher
        }
    };
    match requested {
        Some(requested) if requested != recorded => Err(ChipError::SealCipherMismatch {
            recorded,
            requested,
        }),
        _ => Ok(recorded),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, Device, Operator};
    use crate::{ChipBackend, ChipConfig, SoftChip};
    use std::path::Path;

    fn config() -> ChipConfig {
        ChipConfig {
            chip_id: "chip-1".into(),
            capacity: 8,
            zone: "zone-a".into(),
        }
    }

    /// The cipher every sealed value of the stopped chip in `dir` names, per tree.
    fn sealed_with(dir: &Path) -> Vec<(String, Option<Cipher>)> {
        let db = Db::open_sled(dir.join("store")).unwrap();
        let mut out = Vec::new();
        for tree in ["meta", "keys"] {
            for entry in db.tree(tree).unwrap().range(b"", None) {
                let (key, value) = entry.unwrap();
                if key == b"chip_id" || key == b"format" {
                    continue;
                }
                out.push((
                    format!("{tree}/{}", String::from_utf8_lossy(&key)),
                    SealKey::cipher_of(&value),
                ));
            }
        }
        out
    }

    #[test]
    fn an_sm4_sealed_chip_reopens_and_keeps_its_cipher() {
        let dir = tempfile::tempdir().unwrap();
        let phone = Device::new("alice");
        let key = {
            let chip =
                SoftChip::open_with_seal_cipher(dir.path(), config(), Some(Cipher::Sm4)).unwrap();
            assert_eq!(chip.info().unwrap().custody, "soft (sealed with sm4)");
            Operator::new().init_domain(&chip);
            let (key, code) = testing::enrol(&chip, "alice");
            chip.bind_device(&phone.bind_request(&key.handle, &code))
                .unwrap();
            key
        };
        let sealed = sealed_with(dir.path());
        assert!(sealed.len() >= 5, "{sealed:?}");
        assert!(
            sealed.iter().all(|(_, c)| *c == Some(Cipher::Sm4)),
            "every record is SM4-GCM: {sealed:?}"
        );
        // Reopened without a choice, it keeps SM4 and its keys sign.
        let chip = SoftChip::open(dir.path(), config()).unwrap();
        assert_eq!(chip.info().unwrap().custody, "soft (sealed with sm4)");
        let (tx, _) = testing::canonical_tx("5", 60);
        chip.sign_authorized(&phone.request(&key.handle, &tx))
            .unwrap();
        drop(chip);
        // Asking for the other cipher is refused, naming both.
        let err = SoftChip::open_with_seal_cipher(dir.path(), config(), Some(Cipher::Aes256))
            .unwrap_err();
        assert_eq!(
            err,
            ChipError::SealCipherMismatch {
                recorded: Cipher::Sm4,
                requested: Cipher::Aes256
            }
        );
        let text = err.to_string();
        assert!(text.contains("sm4") && text.contains("aes256"), "{text}");
        SoftChip::open_with_seal_cipher(dir.path(), config(), Some(Cipher::Sm4)).unwrap();
    }

    #[test]
    fn a_chip_from_before_the_choice_stays_aes256() {
        let dir = tempfile::tempdir().unwrap();
        {
            let chip = SoftChip::open(dir.path(), config()).unwrap();
            assert_eq!(chip.info().unwrap().custody, "soft");
            Operator::new().init_domain(&chip);
            testing::enrol(&chip, "alice");
        }
        assert!(sealed_with(dir.path())
            .iter()
            .all(|(_, c)| *c == Some(Cipher::Aes256)));
        // Remove the record, as a directory made before it existed has none.
        {
            let db = Db::open_sled(dir.path().join("store")).unwrap();
            db.tree("meta").unwrap().remove(RECORD).unwrap();
            db.flush().unwrap();
        }
        let err =
            SoftChip::open_with_seal_cipher(dir.path(), config(), Some(Cipher::Sm4)).unwrap_err();
        assert!(
            matches!(
                err,
                ChipError::SealCipherMismatch {
                    recorded: Cipher::Aes256,
                    requested: Cipher::Sm4
                }
            ),
            "{err}"
        );
        let chip = SoftChip::open(dir.path(), config()).unwrap();
        assert_eq!(chip.info().unwrap().used, 1);
    }

    #[test]
    fn a_tampered_record_is_refused() {
        let db = Db::memory();
        let master = SealKey::generate();
        assert_eq!(settle(&db, &master, Some(Cipher::Sm4)), Ok(Cipher::Sm4));
        assert_eq!(settle(&db, &master, None), Ok(Cipher::Sm4));
        // Another master key (or a record moved from another chip) does not open it.
        assert!(matches!(
            settle(&db, &SealKey::generate(), None),
            Err(ChipError::Storage { .. })
        ));
        let meta = db.tree("meta").unwrap();
        let aes = master.seal_with(Cipher::Aes256, AAD, &[Cipher::Aes256.to_byte()]);
        let mut forged = aes.clone();
        forged[20] ^= 1;
        meta.insert(RECORD, &forged).unwrap();
        assert!(matches!(
            settle(&db, &master, None),
            Err(ChipError::Storage { .. })
        ));
        meta.insert(RECORD, &master.seal_with(Cipher::Sm4, AAD, &[7]))
            .unwrap();
        assert!(matches!(
            settle(&db, &master, None),
            Err(ChipError::Storage { .. })
        ));
    }
}
