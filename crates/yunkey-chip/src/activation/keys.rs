//! Key lifecycle: generate, copy in (unwrap), copy out (wrap), delete. Every key leaves the
//! chip only as a [`WrappedKey`], with its binding, under the domain's keys.

use super::store::KeyRecord;
use super::ActivationModule;
use crate::binding::Binding;
use crate::wrapped::{DomainKeys, WrappedKey};
use crate::{ChipError, GenerateKey, GeneratedKey, KeyPurpose};
use yunkey_crypto::sig::Algorithm;
use yunkey_crypto::validate::{self, InvalidField};

pub(super) fn new_handle() -> String {
    hex::encode(yunkey_crypto::random_bytes::<16>())
}

pub(super) fn check_owner(purpose: KeyPurpose, user_id: &str) -> Result<(), ChipError> {
    match purpose {
        KeyPurpose::User => validate::identifier("user_id", user_id)?,
        KeyPurpose::Ca | KeyPurpose::CodeSigning if !user_id.is_empty() => {
            return Err(
                InvalidField::new("user_id", "must be empty for a CA or code-signing key").into(),
            )
        }
        KeyPurpose::Ca | KeyPurpose::CodeSigning => {}
    }
    Ok(())
}

/// Checks a request's algorithm and distinguishing ID against its purpose; returns the ID the
/// key will sign under (empty for P-256). A user key of SM2 gets the caller's ID or the
/// default; an SM2 CA key the default; code-signing keys are P-256 only (the release checks
/// of every client verify ECDSA P-256).
fn check_algorithm(req: &GenerateKey) -> Result<String, ChipError> {
    match (req.algorithm, req.purpose) {
        (Algorithm::EcdsaP256, _) if !req.distid.is_empty() => Err(InvalidField::new(
            "distinguishing_id",
            "is for SM2 keys only; leave it empty for ECDSA P-256",
        )
        .into()),
        (Algorithm::EcdsaP256, _) => Ok(String::new()),
        (Algorithm::Sm2, KeyPurpose::CodeSigning) => Err(ChipError::AlgorithmUnsupported {
            algorithm: Algorithm::Sm2,
            reason: "the code-signing key is ECDSA P-256",
        }),
        (Algorithm::Sm2, KeyPurpose::Ca) if !req.distid.is_empty() => Err(InvalidField::new(
            "distinguishing_id",
            "a CA key signs under the default ID; leave it empty",
        )
        .into()),
        (Algorithm::Sm2, _) if req.distid.is_empty() => {
            Ok(yunkey_crypto::sm2::DEFAULT_DISTID.to_owned())
        }
        (Algorithm::Sm2, _) => {
            yunkey_crypto::sm2::check_distid(&req.distid)
                .map_err(|e| InvalidField::new("distinguishing_id", e.to_string()))?;
            Ok(req.distid.clone())
        }
    }
}

impl ActivationModule {
    /// The record's key wrapped, with its binding, under the domain's keys.
    pub(super) fn wrap_record(
        &self,
        record: &KeyRecord,
        keys: &DomainKeys,
    ) -> Result<Vec<u8>, ChipError> {
        let kwp =
            self.custody
                .export_wrapped(&record.key_ref, &record.public_key()?, keys.kek())?;
        Ok(WrappedKey {
            algorithm: record.algorithm(),
            purpose: record.purpose,
            user_id: record.user_id.clone(),
            public_key_spki: record.public_key_spki.clone(),
            distid: record.distid.clone(),
            binding: record.binding.clone(),
            kwp,
        }
        .seal(keys))
    }

    /// Stores a new record under a fresh handle, within capacity, durably. On failure the
    /// custody's key is destroyed (a token object must not be left behind).
    fn store_new(&self, record: KeyRecord, keys: &DomainKeys) -> Result<GeneratedKey, ChipError> {
        let result = self.store_new_inner(&record, keys);
        if result.is_err() {
            let _ = self.custody.destroy(&record.key_ref);
        }
        result
    }

    fn store_new_inner(
        &self,
        record: &KeyRecord,
        keys: &DomainKeys,
    ) -> Result<GeneratedKey, ChipError> {
        let mut used = self.lock_writes();
        if *used >= self.config.capacity {
            return Err(ChipError::Full {
                capacity: self.config.capacity,
            });
        }
        let wrapped_key = self.wrap_record(record, keys)?;
        let handle = new_handle();
        self.store.put(&*self.custody, &handle, record)?;
        *used += 1;
        Ok(GeneratedKey {
            wrapped_key,
            algorithm: record.algorithm(),
            distid: record.distid.clone(),
            public_key_spki: record.public_key_spki.clone(),
            binding_seq: record.binding.seq,
            handle,
        })
    }

    pub(super) fn generate_checked(&self, req: &GenerateKey) -> Result<GeneratedKey, ChipError> {
        check_owner(req.purpose, &req.user_id)?;
        if req.purpose != KeyPurpose::User && req.activation.is_some() {
            return Err(
                InvalidField::new("activation", "only a user key has a device activation").into(),
            );
        }
        let distid = check_algorithm(req)?;
        let keys = self.domain_keys()?;
        if *self.lock_writes() >= self.config.capacity {
            return Err(ChipError::Full {
                capacity: self.config.capacity,
            });
        }
        let key = self.custody.generate(req.algorithm)?;
        let record = KeyRecord {
            purpose: req.purpose,
            user_id: req.user_id.clone(),
            public_key_spki: key.public_key.to_spki_der(),
            distid,
            binding: Binding {
                activation: req.activation.clone(),
                ..Binding::default()
            },
            key_ref: key.key_ref,
        };
        self.store_new(record, &keys)
    }

    pub(super) fn unwrap_checked(
        &self,
        wrapped: &[u8],
        purpose: KeyPurpose,
        user_id: &str,
    ) -> Result<GeneratedKey, ChipError> {
        check_owner(purpose, user_id)?;
        let keys = self.domain_keys()?;
        let w = WrappedKey::open(&keys, wrapped)?;
        if w.purpose != purpose || w.user_id != user_id {
            return Err(ChipError::WrappedKeyMismatch);
        }
        let key = self
            .custody
            .import_wrapped(&w.kwp, w.algorithm, keys.kek())?;
        if key.public_key.to_spki_der() != w.public_key_spki {
            let _ = self.custody.destroy(&key.key_ref);
            return Err(ChipError::Unseal {
                what: "wrapped key",
            });
        }
        let record = KeyRecord {
            purpose,
            user_id: user_id.to_owned(),
            public_key_spki: w.public_key_spki,
            distid: w.distid,
            binding: w.binding,
            key_ref: key.key_ref,
        };
        self.store_new(record, &keys)
    }

    pub(super) fn wrap_checked(&self, handle: &str) -> Result<Vec<u8>, ChipError> {
        validate::identifier("key_handle", handle)?;
        let keys = self.domain_keys()?;
        let record = self.store.load(&*self.custody, handle)?;
        self.wrap_record(&record, &keys)
    }

    pub(super) fn list_checked(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<crate::KeyListing>, ChipError> {
        if !after.is_empty() {
            validate::identifier("after", after)?;
        }
        let mut out = Vec::new();
        for handle in self.store.handles_after(after, limit.clamp(1, 1000))? {
            // Opening the record authenticates what is reported.
            let record = self.store.load(&*self.custody, &handle)?;
            out.push(crate::KeyListing {
                handle,
                purpose: record.purpose,
                user_id: record.user_id,
            });
        }
        Ok(out)
    }

    pub(super) fn delete_checked(&self, handle: &str) -> Result<bool, ChipError> {
        validate::identifier("key_handle", handle)?;
        let mut used = self.lock_writes();
        if !self.store.has_key(handle)? {
            return Ok(false);
        }
        let record = self.store.load(&*self.custody, handle)?;
        self.store.remove(handle)?;
        *used = used.saturating_sub(1);
        // The record is gone, so the key is unusable; a token also drops its object.
        if let Err(e) = self.custody.destroy(&record.key_ref) {
            tracing::warn!(chip = %self.config.chip_id, error = %e, "custody could not destroy a deleted key's object");
        }
        Ok(true)
    }
}
