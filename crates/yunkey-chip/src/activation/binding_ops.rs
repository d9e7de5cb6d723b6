//! Changes to a user key's binding, decided here: binding a device with the one-time
//! activation code, taking another holder's binding, and revoking the user or a device.
//! Each returns the key re-wrapped with the new binding, which the coordinators commit and
//! push to the other holders.

use super::store::KeyRecord;
use super::{now_unix, ActivationModule};
use crate::binding::{Binding, BoundDevice, MAX_DEVICES};
use crate::wrapped::WrappedKey;
use crate::{BindDevice, ChipError, KeyPurpose, Rebound, Revoke, SetActivation};
use yunkey_crypto::sig::VerifyingKey;
use yunkey_crypto::validate::{self, InvalidField};
use yunkey_crypto::{authz, ct_eq, names, sha256};

/// Longest DER signature of a 256-bit curve (ECDSA P-256 or SM2).
const MAX_SIGNATURE: usize = 72;

impl ActivationModule {
    /// Loads a user key's record and checks that it belongs to `user_id`.
    pub(super) fn load_user_key(
        &self,
        handle: &str,
        user_id: &str,
    ) -> Result<KeyRecord, ChipError> {
        validate::identifier("key_handle", handle)?;
        validate::identifier("user_id", user_id)?;
        let record = self.store.load(&*self.custody, handle)?;
        if record.purpose != KeyPurpose::User {
            return Err(ChipError::NotAUserKey);
        }
        if !ct_eq(record.user_id.as_bytes(), user_id.as_bytes()) {
            return Err(ChipError::UserMismatch);
        }
        Ok(record)
    }

    /// Stores `record` with `binding` and returns it re-wrapped.
    fn rebind(
        &self,
        handle: &str,
        mut record: KeyRecord,
        binding: Binding,
        device_id: Option<String>,
    ) -> Result<Rebound, ChipError> {
        let keys = self.domain_keys()?;
        let changed = binding != record.binding;
        record.binding = binding;
        if changed {
            self.store.put(&*self.custody, handle, &record)?;
        }
        Ok(Rebound {
            wrapped_key: self.wrap_record(&record, &keys)?,
            binding_seq: record.binding.seq,
            device_id,
        })
    }

    pub(super) fn bind_device_checked(&self, req: &BindDevice) -> Result<Rebound, ChipError> {
        validate::text("activation_code", &req.activation_code, 64, false)?;
        let device_key = VerifyingKey::from_spki_der(&req.device_public_key).map_err(|_| {
            InvalidField::new(
                "device_public_key",
                "must be a P-256 or SM2 SubjectPublicKeyInfo (DER)",
            )
        })?;
        if req.proof.is_empty() || req.proof.len() > MAX_SIGNATURE {
            return Err(InvalidField::new(
                "proof",
                "must be a DER ECDSA or SM2 signature (1 to 72 bytes)",
            )
            .into());
        }
        let _writes = self.lock_writes();
        let record = self.load_user_key(&req.key_handle, &req.user_id)?;
        let binding = &record.binding;
        if binding.revoked {
            return Err(ChipError::UserRevoked);
        }
        let proof_ok = || {
            let message = authz::registration_message(
                &req.user_id,
                &req.activation_code,
                &req.device_public_key,
            );
            device_key
                .verify_message(&message, &req.proof)
                .map_err(|_| ChipError::BadRegistrationProof)
        };
        let device_id = names::device_id(&req.device_public_key);
        if let Some(bound) = binding.device(&device_id) {
            if bound.revoked {
                return Err(ChipError::DeviceRevoked { device_id });
            }
            // A retry after a lost reply: the device holds the key, nothing changes.
            proof_ok()?;
            let binding = binding.clone();
            return self.rebind(&req.key_handle, record, binding, Some(device_id));
        }
        match &binding.activation {
            Some(a)
                if ct_eq(&a.code_sha256, &sha256(req.activation_code.as_bytes()))
                    && a.expires_at > now_unix() => {}
            _ => return Err(ChipError::ActivationInvalid),
        }
        proof_ok()?;
        if binding.devices.len() >= MAX_DEVICES {
            return Err(ChipError::TooManyDevices { max: MAX_DEVICES });
        }
        let mut next = binding.clone();
        next.seq += 1;
        next.activation = None;
        next.devices.push(BoundDevice {
            device_id: device_id.clone(),
            public_key_spki: req.device_public_key.clone(),
            revoked: false,
        });
        self.rebind(&req.key_handle, record, next, Some(device_id))
    }

    pub(super) fn update_binding_checked(
        &self,
        handle: &str,
        wrapped: &[u8],
    ) -> Result<Rebound, ChipError> {
        validate::identifier("key_handle", handle)?;
        let keys = self.domain_keys()?;
        let offered = WrappedKey::open(&keys, wrapped)?;
        let _writes = self.lock_writes();
        let record = self.store.load(&*self.custody, handle)?;
        if offered.purpose != record.purpose
            || offered.user_id != record.user_id
            || offered.public_key_spki != record.public_key_spki
        {
            return Err(ChipError::KeyMismatch);
        }
        let merged = record.binding.merge(&offered.binding);
        self.rebind(handle, record, merged, None)
    }

    pub(super) fn set_activation_checked(&self, req: &SetActivation) -> Result<Rebound, ChipError> {
        if req.expires_at <= now_unix() {
            return Err(InvalidField::new("expires_at", "must be in the future").into());
        }
        let _writes = self.lock_writes();
        let record = self.load_user_key(&req.key_handle, &req.user_id)?;
        if record.binding.revoked {
            return Err(ChipError::UserRevoked);
        }
        let mut next = record.binding.clone();
        next.seq += 1;
        next.activation_epoch = next
            .activation_epoch
            .checked_add(1)
            .ok_or_else(|| InvalidField::new("key_handle", "has no activation epoch left"))?;
        next.activation = Some(crate::binding::PendingActivation {
            code_sha256: req.code_sha256,
            expires_at: req.expires_at,
        });
        self.rebind(&req.key_handle, record, next, None)
    }

    pub(super) fn revoke_checked(&self, req: &Revoke) -> Result<Rebound, ChipError> {
        let _writes = self.lock_writes();
        let record = self.load_user_key(&req.key_handle, &req.user_id)?;
        let mut next = record.binding.clone();
        match &req.device_id {
            None if next.revoked => {}
            None => {
                next.revoked = true;
                next.activation = None;
                next.seq += 1;
            }
            Some(device_id) => {
                validate::identifier("device_id", device_id)?;
                let device = next
                    .devices
                    .iter_mut()
                    .find(|d| d.device_id == *device_id)
                    .ok_or_else(|| ChipError::DeviceNotBound {
                        device_id: device_id.clone(),
                    })?;
                if !device.revoked {
                    device.revoked = true;
                    next.seq += 1;
                }
            }
        }
        self.rebind(&req.key_handle, record, next, req.device_id.clone())
    }
}
