//! The module's state in its database: two trees, every secret record sealed under the
//! custody's key with associated data naming the chip and the record, so a record cannot be
//! moved to another chip, handle or name.
//!
//! - `meta`: `format` (plain, [`FORMAT`]), `chip_id` (plain), and sealed: `transport_key`,
//!   `domain_key`, `domain_cipher` (one [`Cipher::to_byte`]; absent in stores from before
//!   domains had a cipher, whose domain is AES-256), `operator_key`, `trust_anchor`,
//!   `trust_anchor_sm2`; a soft chip also keeps its `seal_cipher` there
//!   ([`crate::seal_cipher`]).
//! - `keys`: handle -> sealed [`KeyRecord`]: version 2 (a P-256 key: purpose, user, public
//!   key, binding, custody reference) or version 3 (any algorithm: the same with the algorithm
//!   byte and the SM2 distinguishing ID). P-256 keys are still written as version 2, so a chip
//!   of the version before SM2 reads them all.
//!
//! Format 1 stores (the soft chip before device binding) have no `format` entry; they are
//! refused with a message that says so, since their keys carry no binding to migrate.

use super::DomainState;
use crate::anchor::TrustAnchor;
use crate::binding::Binding;
use crate::custody::{KeyCustody, KeyRef};
use crate::wrapped::{put_lp, take_lp, DomainKeys};
use crate::{ChipError, KeyPurpose};
use std::sync::Arc;
use yunkey_crypto::cipher::Cipher;
use yunkey_crypto::ecdsa::{PrivateKey, PublicKey};
use yunkey_crypto::seal::SealKey;
use yunkey_crypto::sig::{Algorithm, VerifyingKey};
use yunkey_store::{Batch, Db, Tree};
use zeroize::Zeroizing;

/// Version of the module's stored format.
pub(crate) const FORMAT: u8 = 2;
const META_FORMAT: &[u8] = b"format";
pub(super) const META_CHIP_ID: &[u8] = b"chip_id";
pub(super) const META_TRANSPORT: &str = "transport_key";
pub(super) const META_DOMAIN: &str = "domain_key";
pub(super) const META_DOMAIN_CIPHER: &str = "domain_cipher";
pub(super) const META_OPERATOR: &str = "operator_key";
pub(super) const META_ANCHOR: &str = "trust_anchor";
pub(super) const META_SM2_ANCHOR: &str = "trust_anchor_sm2";

/// A key as the module keeps it.
#[derive(Debug)]
pub(super) struct KeyRecord {
    pub purpose: KeyPurpose,
    pub user_id: String,
    pub public_key_spki: Vec<u8>,
    /// The SM2 distinguishing ID the key signs under (empty for P-256).
    pub distid: String,
    pub binding: Binding,
    /// The custody's reference, which names the algorithm.
    pub key_ref: KeyRef,
}

/// Record version of a P-256 key (the only kind before SM2), still written for them so that
/// a chip of the version before reads every P-256 record.
const RECORD_P256: u8 = 2;
/// Record version that names the algorithm and carries the SM2 distinguishing ID.
const RECORD_ALGORITHM: u8 = 3;

impl KeyRecord {
    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.key_ref.algorithm()
    }

    /// The public key, with the distinguishing ID the key signs under.
    pub fn public_key(&self) -> Result<VerifyingKey, ChipError> {
        VerifyingKey::from_spki_der_as(self.algorithm(), &self.public_key_spki, &self.distid)
            .map_err(|_| ChipError::storage("reading a key", "a stored public key is corrupt"))
    }

    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = match self.algorithm() {
            Algorithm::EcdsaP256 => Zeroizing::new(vec![RECORD_P256, self.purpose.to_byte()]),
            alg => Zeroizing::new(vec![
                RECORD_ALGORITHM,
                self.purpose.to_byte(),
                alg.to_byte(),
            ]),
        };
        put_lp(&mut out, self.user_id.as_bytes());
        put_lp(&mut out, &self.public_key_spki);
        if self.algorithm() != Algorithm::EcdsaP256 {
            put_lp(&mut out, self.distid.as_bytes());
        }
        put_lp(&mut out, &self.binding.encode());
        put_lp(&mut out, self.key_ref.as_bytes());
        out
    }

    fn decode(handle: &str, bytes: &[u8]) -> Result<Self, ChipError> {
        let corrupt = || ChipError::storage("reading a key", format!("record {handle} is corrupt"));
        let purpose = bytes
            .get(1)
            .and_then(|b| KeyPurpose::from_byte(*b))
            .ok_or_else(corrupt)?;
        let (algorithm, rest) = match bytes.first() {
            Some(&RECORD_P256) => (Algorithm::EcdsaP256, &bytes[2..]),
            Some(&RECORD_ALGORITHM) => (
                bytes
                    .get(2)
                    .and_then(|b| Algorithm::from_byte(*b))
                    .ok_or_else(corrupt)?,
                &bytes[3..],
            ),
            _ => return Err(corrupt()),
        };
        let (user, rest) = take_lp(rest).ok_or_else(corrupt)?;
        let (spki, rest) = take_lp(rest).ok_or_else(corrupt)?;
        let (distid, rest) = match algorithm {
            Algorithm::EcdsaP256 => (&[][..], rest),
            _ => take_lp(rest).ok_or_else(corrupt)?,
        };
        let (binding, rest) = take_lp(rest).ok_or_else(corrupt)?;
        let (key_ref, rest) = take_lp(rest).ok_or_else(corrupt)?;
        if !rest.is_empty() {
            return Err(corrupt());
        }
        Ok(Self {
            purpose,
            user_id: std::str::from_utf8(user).map_err(|_| corrupt())?.to_owned(),
            public_key_spki: spki.to_vec(),
            distid: std::str::from_utf8(distid)
                .map_err(|_| corrupt())?
                .to_owned(),
            binding: Binding::decode(binding).map_err(|_| corrupt())?,
            key_ref: KeyRef::new(algorithm, key_ref.to_vec()),
        })
    }
}

/// The module's trees.
pub(super) struct Store {
    db: Db,
    meta: Tree,
    keys: Tree,
    chip_id: String,
}

impl Store {
    /// Opens the trees and checks the stored format and chip id.
    pub fn open(db: Db, chip_id: &str) -> Result<Self, ChipError> {
        let meta = db.tree("meta")?;
        let keys = db.tree("keys")?;
        if let Some(stored) = meta.get(META_CHIP_ID)? {
            if stored != chip_id.as_bytes() {
                return Err(ChipError::ChipIdMismatch {
                    stored: String::from_utf8_lossy(&stored).into_owned(),
                    configured: chip_id.to_owned(),
                });
            }
            match meta.get(META_FORMAT)?.as_deref() {
                Some([FORMAT]) => {}
                None => {
                    return Err(ChipError::storage(
                        "opening the chip",
                        "this chip directory is in format 1 (before device binding); its keys \
                         cannot be bound to devices, so it is not migrated: re-create the cluster \
                         (docs/operations.md, \"Upgrading from format 1\")",
                    ))
                }
                Some(other) => {
                    return Err(ChipError::storage(
                        "opening the chip",
                        format!("unknown stored format {other:?}; this yunkey is too old for it"),
                    ))
                }
            }
        }
        Ok(Self {
            db,
            meta,
            keys,
            chip_id: chip_id.to_owned(),
        })
    }

    fn aad(&self, label: &str, name: &str) -> Vec<u8> {
        let mut aad = label.as_bytes().to_vec();
        put_lp(&mut aad, self.chip_id.as_bytes());
        put_lp(&mut aad, name.as_bytes());
        aad
    }

    /// The chip's transport key, made and stored (durably) on first open.
    pub fn load_or_create_transport(
        &self,
        custody: &dyn KeyCustody,
    ) -> Result<PrivateKey, ChipError> {
        if let Some(secret) = self.get_meta(custody, META_TRANSPORT)? {
            return PrivateKey::from_secret_bytes(&secret)
                .map_err(|_| ChipError::storage("opening the chip", "transport key is corrupt"));
        }
        let transport = PrivateKey::generate();
        let mut batch = Batch::new();
        batch.insert(META_CHIP_ID, self.chip_id.as_bytes());
        batch.insert(META_FORMAT, vec![FORMAT]);
        batch.insert(
            META_TRANSPORT.as_bytes(),
            custody.seal(
                &self.aad("yunkey-meta/2", META_TRANSPORT),
                &transport.to_secret_bytes(),
            )?,
        );
        self.meta.apply(batch)?;
        // Durability point: the chip's identity and transport key exist before anyone can
        // learn the transport public key.
        self.db.flush()?;
        Ok(transport)
    }

    /// The domain state stored by earlier runs.
    pub fn load_domain(&self, custody: &dyn KeyCustody) -> Result<DomainState, ChipError> {
        let mut state = DomainState::default();
        if let Some(secret) = self.get_meta(custody, META_DOMAIN)? {
            let secret = SealKey::from_bytes(&secret)
                .map_err(|_| ChipError::storage("opening the chip", "domain key is corrupt"))?;
            state.keys = Some(DomainKeys::derive_with(
                &secret,
                self.domain_cipher(custody)?,
            ));
            state.secret = Some(secret);
        }
        if let Some(der) = self.get_meta(custody, META_OPERATOR)? {
            let key = PublicKey::from_spki_der(&der)
                .map_err(|_| ChipError::storage("opening the chip", "operator key is corrupt"))?;
            state.operator = Some((key, der.to_vec()));
        }
        if let Some(der) = self.get_meta(custody, META_ANCHOR)? {
            state.anchor = Some(Arc::new(TrustAnchor::parse(&der).map_err(|_| {
                ChipError::storage("opening the chip", "trust anchor is corrupt")
            })?));
        }
        if let Some(der) = self.get_meta(custody, META_SM2_ANCHOR)? {
            state.sm2_anchor = Some(Arc::new(TrustAnchor::parse(&der).map_err(|_| {
                ChipError::storage("opening the chip", "SM2 trust anchor is corrupt")
            })?));
        }
        Ok(state)
    }

    /// The domain's cipher: AES-256 in a store from before domains had one.
    fn domain_cipher(&self, custody: &dyn KeyCustody) -> Result<Cipher, ChipError> {
        match self
            .get_meta(custody, META_DOMAIN_CIPHER)?
            .as_ref()
            .map(|v| v.as_slice())
        {
            None => Ok(Cipher::Aes256),
            Some([b]) => Cipher::from_byte(*b).ok_or_else(|| {
                ChipError::storage(
                    "opening the chip",
                    "the domain names a cipher this yunkey does not know",
                )
            }),
            Some(_) => Err(ChipError::storage(
                "opening the chip",
                "domain cipher is corrupt",
            )),
        }
    }

    fn get_meta(
        &self,
        custody: &dyn KeyCustody,
        name: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ChipError> {
        match self.meta.get(name.as_bytes())? {
            Some(sealed) => Ok(Some(
                custody.open(&self.aad("yunkey-meta/2", name), &sealed)?,
            )),
            None => Ok(None),
        }
    }

    /// Writes sealed meta records atomically and durably.
    pub fn put_meta(
        &self,
        custody: &dyn KeyCustody,
        records: &[(&str, &[u8])],
    ) -> Result<(), ChipError> {
        let mut batch = Batch::new();
        for (name, value) in records {
            batch.insert(
                name.as_bytes(),
                custody.seal(&self.aad("yunkey-meta/2", name), value)?,
            );
        }
        self.meta.apply(batch)?;
        // Durability point: domain state is on disk before the caller reports success.
        self.db.flush()?;
        Ok(())
    }

    /// The number of key records.
    pub fn key_count(&self) -> u64 {
        self.keys.len() as u64
    }

    /// Whether a record exists under `handle`.
    pub fn has_key(&self, handle: &str) -> Result<bool, ChipError> {
        Ok(self.keys.get(handle.as_bytes())?.is_some())
    }

    /// Reads and opens the record under `handle`.
    pub fn load(&self, custody: &dyn KeyCustody, handle: &str) -> Result<KeyRecord, ChipError> {
        let sealed = self
            .keys
            .get(handle.as_bytes())?
            .ok_or_else(|| ChipError::UnknownKey {
                handle: handle.to_owned(),
            })?;
        let plain = custody
            .open(&self.aad("yunkey-key-record/2", handle), &sealed)
            .map_err(|_| {
                ChipError::storage(
                    "reading a key",
                    format!("record {handle} fails authentication"),
                )
            })?;
        KeyRecord::decode(handle, &plain)
    }

    /// Seals and writes the record under `handle`, durably.
    pub fn put(
        &self,
        custody: &dyn KeyCustody,
        handle: &str,
        record: &KeyRecord,
    ) -> Result<(), ChipError> {
        let sealed = custody.seal(&self.aad("yunkey-key-record/2", handle), &record.encode())?;
        self.keys.insert(handle.as_bytes(), &sealed)?;
        // Durability point: the record is on disk before its handle or new binding is handed
        // out.
        self.db.flush()?;
        Ok(())
    }

    /// Removes the record under `handle`, durably.
    pub fn remove(&self, handle: &str) -> Result<(), ChipError> {
        self.keys.remove(handle.as_bytes())?;
        // Durability point: the key is gone from disk before we report it deleted.
        self.db.flush()?;
        Ok(())
    }

    /// Up to `limit` handles after `after` (from the first when empty), in order.
    pub fn handles_after(&self, after: &str, limit: usize) -> Result<Vec<String>, ChipError> {
        let mut from = after.as_bytes().to_vec();
        if !after.is_empty() {
            from.push(0);
        }
        self.keys
            .range(&from, None)
            .take(limit)
            .map(|e| {
                let (k, _) = e?;
                String::from_utf8(k)
                    .map_err(|_| ChipError::storage("listing keys", "a handle is not UTF-8"))
            })
            .collect()
    }

    /// Test-only: the raw trees, to tamper with records.
    #[cfg(test)]
    pub fn keys_tree(&self) -> &Tree {
        &self.keys
    }

    /// Test-only: flush.
    #[cfg(test)]
    pub fn flush(&self) -> Result<(), ChipError> {
        Ok(self.db.flush()?)
    }
}
