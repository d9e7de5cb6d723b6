//! [`Pkcs11Chip::open`]: a whole chip over a token, like `SoftChip::open` over a master key.

use crate::{Pkcs11Custody, Pkcs11Options};
use std::path::Path;
use std::sync::Arc;
use yunkey_chip::{ActivationModule, ChipConfig, ChipError};
use yunkey_store::Db;

const STORE_DIR: &str = "store";

/// A chip whose keys live in a PKCS#11 token.
///
/// What lives where:
/// - in the token: the sealing key `yunkey-master`, and every user and CA key pair;
/// - in the chip directory, `store/`: the activation module's database (sled), every record
///   sealed under the token's `yunkey-master` (the transport key, the domain secret, the
///   operator key, the trust anchor, and per key its owner, binding and token object id).
///
/// The directory is useless without the token, and the token's keys are useless without the
/// directory's records (the module decides every use of a key from them).
#[derive(Debug)]
pub struct Pkcs11Chip;

impl Pkcs11Chip {
    /// Opens (creating on first use) the chip whose database is in `dir`, with its keys in
    /// the token `options` names.
    pub fn open(
        dir: impl AsRef<Path>,
        config: ChipConfig,
        options: Pkcs11Options,
    ) -> Result<ActivationModule, ChipError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)
            .map_err(|e| ChipError::storage("creating the chip directory", e))?;
        let custody = Pkcs11Custody::open(options)?;
        let db = Db::open_sled(dir.join(STORE_DIR))
            .map_err(|e| ChipError::storage("opening the key store", e))?;
        ActivationModule::open(db, Arc::new(custody), config)
    }
}
