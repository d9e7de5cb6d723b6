//! The authorization check before a user key signs. In order:
//! 1. the key is a user key of the requested user;
//! 2. this chip's binding is at least as new as the one the request was decided on;
//! 3. the user is not revoked, and the device is bound to this key here and not revoked;
//! 4. the transaction is canonical and its authorization has not expired (nor lies too far
//!    ahead) on this chip's clock;
//! 5. the bound device key signed the authorization of exactly this transaction, whose hash
//!    is computed here from the canonical bytes, in a format this chip verifies
//!    ([`authz::verify_authorization`]);
//! 6. the chip-local replay guard ([`crate::replay`]);
//! 7. only then the custody signs the digest of the canonical bytes, computed here: the
//!    SHA-256 of (5) for a P-256 key (given with the bytes themselves, which the soft custody
//!    signs with ring), `SM3(Z_A || bytes)` with the key's distinguishing ID for an SM2 key.
//!
//! Nothing a caller brings (certificates, keys) takes part in the decision: only the request's
//! bytes and the key's binding, which only chips can change.

use super::{now_unix, ActivationModule};
use crate::custody::sign_checked;
use crate::{ChipError, SignAuthorized, Signed};
use yunkey_crypto::sig::{Algorithm, VerifyingKey};
use yunkey_crypto::validate;
use yunkey_crypto::{authz, tx, Digest};

impl ActivationModule {
    pub(super) fn sign_authorized_checked(
        &self,
        req: &SignAuthorized,
        tx_hash: &Digest,
    ) -> Result<Signed, ChipError> {
        validate::identifier("device_id", &req.device_id)?;
        // 1.
        let record = self.load_user_key(&req.key_handle, &req.user_id)?;
        let binding = &record.binding;
        // 2.
        if req.binding_seq > binding.seq {
            return Err(ChipError::BindingBehind {
                have: binding.seq,
                need: req.binding_seq,
            });
        }
        // 3.
        if binding.revoked {
            return Err(ChipError::UserRevoked);
        }
        let device = binding
            .device(&req.device_id)
            .ok_or_else(|| ChipError::DeviceNotBound {
                device_id: req.device_id.clone(),
            })?;
        if device.revoked {
            return Err(ChipError::DeviceRevoked {
                device_id: req.device_id.clone(),
            });
        }
        // 4.
        let transaction = tx::decode(&req.canonical_transaction)?;
        let now = now_unix();
        tx::check_expiry(
            transaction.expires_at,
            now,
            tx::MAX_AUTHORIZATION_LIFETIME_SECS,
        )?;
        // 5.
        let device_key = VerifyingKey::from_spki_der(&device.public_key_spki)
            .map_err(|_| ChipError::storage("reading a key", "a bound device key is corrupt"))?;
        authz::verify_authorization(
            req.authorization_format,
            &device_key,
            &req.user_id,
            &req.device_id,
            tx_hash,
            &req.authorization_signature,
        )
        .map_err(|refused| match refused {
            authz::AuthorizationRefused::Invalid(e) => ChipError::Invalid(e),
            authz::AuthorizationRefused::BadSignature => ChipError::BadAuthorization,
        })?;
        // 7. (computed before 6, which answers a repeat with the same signature and digest)
        let digest = match record.algorithm() {
            Algorithm::EcdsaP256 => *tx_hash,
            Algorithm::Sm2 => record.public_key()?.digest(&req.canonical_transaction),
        };
        // 6.
        if let Some(signature_der) = self.replay.check(tx_hash, &req.key_handle, now)? {
            return Ok(Signed {
                signature_der,
                digest,
            });
        }
        // 7.
        let signature_der = sign_checked(
            &*self.custody,
            &record.key_ref,
            &record.public_key()?,
            &req.canonical_transaction,
        )?;
        self.replay.record(
            *tx_hash,
            &req.key_handle,
            &signature_der,
            transaction.expires_at,
            now,
        );
        Ok(Signed {
            signature_der,
            digest,
        })
    }
}
