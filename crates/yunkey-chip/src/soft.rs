//! The soft chip: a [`KeyCustody`] in software, for development and tests, and
//! [`SoftChip::open`], which makes a whole chip of it in a directory.
//!
//! Layout of the directory:
//! - `master.key`: 32 random bytes (mode 0600), the key every record is sealed under
//!   (AES-256-GCM, or SM4-GCM as chosen when the chip was created: [`crate::seal_cipher`]).
//!   Anyone with this file and the store has every key of the chip: the soft chip is not a
//!   hardware boundary (see `docs/security.md`).
//! - `store/`: the [`ActivationModule`]'s database (sled).
//!
//! A key's [`KeyRef`] is its 32-byte private scalar (P-256 or SM2, as the reference names),
//! which exists on disk only inside the module's sealed record; in memory it lives in wiped
//! buffers.

use crate::custody::{CheckedDigest, CheckedMessage, CustodyKey, Kek, KeyCustody, KeyRef};
use crate::{ActivationModule, ChipConfig, ChipError};
use std::path::Path;
use std::sync::Arc;
use yunkey_crypto::cipher::Cipher;
use yunkey_crypto::keywrap;
use yunkey_crypto::ring_pairs::SigningPairs;
use yunkey_crypto::seal::SealKey;
use yunkey_crypto::sig::{Algorithm, SigningKey, VerifyingKey};
use yunkey_store::Db;
use zeroize::Zeroizing;

pub(crate) const MASTER_KEY_FILE: &str = "master.key";
pub(crate) const STORE_DIR: &str = "store";

/// P-256 keys whose ring key pair the soft custody keeps open (about 0.3 KB each): a
/// signature with an open pair costs one scalar multiplication instead of three
/// ([`yunkey_crypto::ring_pairs`]).
pub const OPEN_SIGNING_PAIRS: usize = 4096;

/// Keys kept in software under a master key.
pub struct SoftCustody {
    master: SealKey,
    /// What new records are sealed with.
    seal_cipher: Cipher,
    /// Opened ring pairs of the P-256 keys that sign, wiped when they leave.
    pairs: SigningPairs,
}

impl std::fmt::Debug for SoftCustody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SoftCustody(<redacted>)")
    }
}

impl SoftCustody {
    /// A custody over `master`, sealing with AES-256-GCM.
    pub fn new(master: SealKey) -> Self {
        Self::with_seal_cipher(master, Cipher::Aes256)
    }

    /// A custody over `master`, sealing new records with `cipher`'s GCM.
    pub fn with_seal_cipher(master: SealKey, seal_cipher: Cipher) -> Self {
        Self {
            master,
            seal_cipher,
            pairs: SigningPairs::new(OPEN_SIGNING_PAIRS),
        }
    }

    /// Loads the master key in `dir`, creating it (mode 0600, written atomically) on first use.
    pub fn open_dir(dir: &Path) -> Result<Self, ChipError> {
        let path = dir.join(MASTER_KEY_FILE);
        let master = match std::fs::read(&path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                SealKey::from_bytes(&bytes).map_err(|_| {
                    ChipError::storage("reading the master key", "master.key is not 32 bytes")
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SealKey::generate();
                yunkey_store::write_file_atomic(&path, key.expose(), 0o600)
                    .map_err(|e| ChipError::storage("writing the master key", e))?;
                key
            }
            Err(e) => return Err(ChipError::storage("reading the master key", e)),
        };
        Ok(Self::new(master))
    }

    fn key(key: &KeyRef) -> Result<SigningKey, ChipError> {
        SigningKey::from_secret_bytes(key.algorithm(), key.as_bytes())
            .map_err(|_| ChipError::storage("reading a key", "a stored key is corrupt"))
    }

    fn custody_key(key: SigningKey) -> CustodyKey {
        CustodyKey {
            public_key: key.public_key(),
            key_ref: KeyRef::new(key.algorithm(), key.to_secret_bytes().to_vec()),
        }
    }
}

impl KeyCustody for SoftCustody {
    fn describe(&self) -> String {
        match self.seal_cipher {
            Cipher::Aes256 => "soft".into(),
            other => format!("soft (sealed with {other})"),
        }
    }

    fn signs_in_memory(&self) -> bool {
        true
    }

    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, ChipError> {
        Ok(self.master.seal_with(self.seal_cipher, aad, plaintext))
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, ChipError> {
        self.master.open(aad, sealed).map_err(|_| {
            ChipError::storage(
                "opening a sealed record",
                "it fails authentication under the master key",
            )
        })
    }

    fn generate(&self, algorithm: Algorithm) -> Result<CustodyKey, ChipError> {
        Ok(Self::custody_key(SigningKey::generate(algorithm)))
    }

    fn export_wrapped(
        &self,
        key: &KeyRef,
        public_key: &VerifyingKey,
        kek: &Kek,
    ) -> Result<Vec<u8>, ChipError> {
        let pkcs8 = match public_key {
            // The same PKCS#8 bytes as p256 writes, without p256 deriving the public key again.
            VerifyingKey::P256(public) if key.algorithm() == Algorithm::EcdsaP256 => {
                yunkey_crypto::ecdsa::PrivateKey::pkcs8_der_from_parts(key.as_bytes(), public)
                    .map_err(|_| ChipError::storage("reading a key", "a stored key is corrupt"))?
            }
            _ => Self::key(key)?.to_pkcs8_der(),
        };
        keywrap::wrap(kek.cipher(), kek.expose(), &pkcs8)
            .map_err(|e| ChipError::storage("wrapping a key", e))
    }

    fn import_wrapped(
        &self,
        wrapped: &[u8],
        algorithm: Algorithm,
        kek: &Kek,
    ) -> Result<CustodyKey, ChipError> {
        let unseal = || ChipError::Unseal {
            what: "wrapped key",
        };
        let pkcs8 = keywrap::unwrap(kek.cipher(), kek.expose(), wrapped).map_err(|_| unseal())?;
        let pkcs8 = without_zero_padding(&pkcs8).ok_or_else(unseal)?;
        if algorithm == Algorithm::EcdsaP256 {
            // ring checks the document's public key against its scalar: one fast
            // multiplication where p256 would do two (docs/performance.md).
            let (secret, public) = yunkey_crypto::ecdsa::PrivateKey::pkcs8_der_to_parts(pkcs8)
                .map_err(|_| unseal())?;
            return Ok(CustodyKey {
                public_key: VerifyingKey::P256(public),
                key_ref: KeyRef::new(algorithm, secret.to_vec()),
            });
        }
        let key = SigningKey::from_pkcs8_der(pkcs8).map_err(|_| unseal())?;
        if key.algorithm() != algorithm {
            return Err(unseal());
        }
        Ok(Self::custody_key(key))
    }

    fn sign(&self, key: &KeyRef, digest: &CheckedDigest) -> Result<Vec<u8>, ChipError> {
        // No public key is derived per signature: the scalar signs directly.
        SigningKey::sign_digest_with_secret(key.algorithm(), key.as_bytes(), digest.digest())
            .map_err(|_| ChipError::storage("reading a key", "a stored key is corrupt"))
    }

    fn sign_message(
        &self,
        key: &KeyRef,
        checked: &CheckedMessage<'_>,
    ) -> Result<Vec<u8>, ChipError> {
        if key.algorithm() != Algorithm::EcdsaP256 {
            return self.sign(key, checked.digest());
        }
        // ring, about four times faster than p256's digest signing, with the key's pair kept
        // open (`yunkey_crypto::ring_pairs`).
        self.pairs
            .sign_message(key.as_bytes(), checked.public_key(), checked.message())
            .map_err(|_| ChipError::storage("reading a key", "a stored key is corrupt"))
    }

    fn destroy(&self, key: &KeyRef) -> Result<(), ChipError> {
        // The scalar lives only in the module's record, which the module removed, and in its
        // open pair, if it signed lately: wipe that too.
        if key.algorithm() == Algorithm::EcdsaP256 {
            if let Ok(private) = yunkey_crypto::ecdsa::PrivateKey::from_secret_bytes(key.as_bytes())
            {
                self.pairs.remove(&private.public_key());
            }
        }
        Ok(())
    }

    fn wraps_under(&self, _cipher: Cipher) -> bool {
        true
    }
}

/// The DER value at the front of `bytes`, allowing up to 7 zero bytes after it.
///
/// SoftHSM2 (2.6) zero-pads the PKCS#8 it wraps to a multiple of 8 bytes before applying
/// RFC 5649, so the padding is inside the wrap's message length; a chip must read such a key
/// as well as the exact PKCS#8 it writes itself.
fn without_zero_padding(bytes: &[u8]) -> Option<&[u8]> {
    let (header, len) = match bytes {
        [0x30, n, ..] if *n < 0x80 => (2, usize::from(*n)),
        [0x30, 0x81, n, ..] => (3, usize::from(*n)),
        [0x30, 0x82, hi, lo, ..] => (4, usize::from(u16::from_be_bytes([*hi, *lo]))),
        _ => return None,
    };
    let (der, padding) = bytes.split_at_checked(header + len)?;
    (padding.len() < 8 && padding.iter().all(|b| *b == 0)).then_some(der)
}

/// A software chip in a directory (see the module documentation for its layout).
#[derive(Debug)]
pub struct SoftChip;

impl SoftChip {
    /// Opens (creating on first use) the soft chip in `dir`, sealing with the cipher it was
    /// created with (AES-256 for a new one).
    pub fn open(dir: impl AsRef<Path>, config: ChipConfig) -> Result<ActivationModule, ChipError> {
        Self::open_with_seal_cipher(dir, config, None)
    }

    /// Opens (creating on first use) the soft chip in `dir`; a new chip seals its records with
    /// `seal_cipher` (AES-256 if `None`), fixed for its life: an existing chip that seals with
    /// another cipher than a `Some` one is refused ([`crate::seal_cipher`]).
    pub fn open_with_seal_cipher(
        dir: impl AsRef<Path>,
        config: ChipConfig,
        seal_cipher: Option<Cipher>,
    ) -> Result<ActivationModule, ChipError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)
            .map_err(|e| ChipError::storage("creating the chip directory", e))?;
        let custody = SoftCustody::open_dir(dir)?;
        let db = Db::open_sled(dir.join(STORE_DIR))
            .map_err(|e| ChipError::storage("opening the key store", e))?;
        let cipher = crate::seal_cipher::settle(&db, &custody.master, seal_cipher)?;
        let custody = SoftCustody::with_seal_cipher(custody.master, cipher);
        ActivationModule::open(db, Arc::new(custody), config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pkcs8_with_softhsm_zero_padding() {
        let custody = SoftCustody::new(SealKey::generate());
        let kek = crate::wrapped::DomainKeys::derive(&SealKey::generate())
            .kek()
            .clone();
        let key = SigningKey::generate(Algorithm::EcdsaP256);
        let mut padded = key.to_pkcs8_der().to_vec();
        padded.resize(padded.len().next_multiple_of(8), 0);
        let wrap = |pkcs8: &[u8]| keywrap::wrap(kek.cipher(), kek.expose(), pkcs8).unwrap();
        let imported = custody
            .import_wrapped(&wrap(&padded), Algorithm::EcdsaP256, &kek)
            .unwrap();
        assert_eq!(imported.public_key, key.public_key());
        // Eight zeros, or a non-zero byte after the DER, are not padding.
        for tail in [&[0u8; 8][..], &[0, 1][..]] {
            let mut bad = key.to_pkcs8_der().to_vec();
            bad.extend_from_slice(tail);
            assert!(custody
                .import_wrapped(&wrap(&bad), Algorithm::EcdsaP256, &kek)
                .is_err());
        }
        assert_eq!(
            without_zero_padding(&[0x30, 0x01, 0x05]),
            Some(&[0x30, 0x01, 0x05][..])
        );
        assert_eq!(without_zero_padding(&[0x30, 0x05, 0x05]), None);
    }
}
