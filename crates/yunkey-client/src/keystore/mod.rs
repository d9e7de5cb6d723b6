//! Where a device keeps its key, and how the user is verified before it is used.
//!
//! Three small traits make the seam:
//! - [`UserVerifier`]: asks the user and yields the secret that opens the key. A phone plugs
//!   its biometric prompt in here; the CLI asks for the PIN.
//! - [`Keystore`]: keeps device keys; [`Keystore::unlock`] verifies the user and hands out
//!   a [`DeviceKey`]. A phone implements it with its TEE or secure element (the key never
//!   leaves it, and the hardware counts failed verifications).
//! - [`DeviceKey`]: a key opened once, that signs without asking again and is wiped when the
//!   last handle is dropped (one payment, one TLS session).
//!
//! [`FileKeystore`] is the stand-in for the CLI: one JSON file per user, the P-256 scalar
//! sealed with AES-256-GCM under a key derived from the PIN with Argon2id ([`KdfParams`]).
//! Opening the key *is* the user verification: a wrong PIN does not open it. After
//! [`FileKeystoreOptions::max_failures`] wrong PINs in a row it destroys the sealed key and
//! answers [`ClientError::Locked`] until the device is registered again. What a file cannot
//! promise against a copy of itself is in docs/security.md ("Device keystore").

mod file;
mod kdf;
mod keyfile;
#[cfg(test)]
mod tests;

pub use file::{FileKeystore, FileKeystoreOptions};
pub use kdf::{KdfParams, MIN_SECRET_LEN};

use crate::ClientError;
use std::sync::Arc;
use yunkey_crypto::sig::{Algorithm, SigningKey};
use zeroize::Zeroizing;

/// What a device knows after registering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device id the cluster gave it.
    pub device_id: String,
    /// Its certificate (DER).
    pub certificate: Vec<u8>,
}

/// Verifies the user on the device and yields the secret that opens the device key: the
/// seam where a phone's biometric prompt plugs in (the CLI reads a PIN).
///
/// A keystore calls it once per [`Keystore::unlock`] or [`Keystore::create_key`]. An error
/// (the user cancelled, no PIN available) is not a failed verification: nothing was tried.
pub trait UserVerifier: Send + Sync {
    /// Asks the user; `prompt` says what for (for example "PIN for alice's device key").
    fn verify(&self, prompt: &str) -> Result<Zeroizing<String>, ClientError>;
}

/// A fixed secret: for tests, and for callers that already hold the PIN.
pub struct StaticSecret(pub Zeroizing<String>);

impl StaticSecret {
    /// A verifier that always answers `secret`.
    pub fn new(secret: &str) -> Self {
        Self(Zeroizing::new(secret.to_owned()))
    }
}

impl UserVerifier for StaticSecret {
    fn verify(&self, _prompt: &str) -> Result<Zeroizing<String>, ClientError> {
        Ok(self.0.clone())
    }
}

impl std::fmt::Debug for StaticSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticSecret(<redacted>)")
    }
}

/// A device key opened after the user was verified; signs without asking again, wiped on drop.
pub trait DeviceKey: Send + Sync {
    /// SubjectPublicKeyInfo DER.
    fn public_key_spki(&self) -> Vec<u8>;
    /// ECDSA P-256 or SM2.
    fn algorithm(&self) -> Algorithm;
    /// A DER signature over `message`: ECDSA P-256 over SHA-256(message), or SM2 over
    /// SM3(Z_A || message) with the default distinguishing ID.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, ClientError>;
    /// A DER signature over a TLS 1.3 handshake `message`: as [`DeviceKey::sign`], except
    /// that an SM2 key signs under the distinguishing ID of RFC 8998
    /// (`yunkey_net::sm2_tls::TLS13_SM2_ID`).
    fn sign_handshake(&self, message: &[u8]) -> Result<Vec<u8>, ClientError>;
}

/// A device's key store. Implementations keep the private key inside, require the user's
/// verification for every [`Keystore::unlock`], and lock themselves after repeated failed
/// verifications ([`ClientError::Locked`]).
pub trait Keystore: Send + Sync {
    /// Creates a new device key of `algorithm` for `user_id`, protected by the secret
    /// `verifier` yields, and returns it opened (the user just chose the secret). Replaces a
    /// key that was never registered, or one destroyed by a lockout; refuses if a registered,
    /// usable one exists.
    fn create_key_of(
        &self,
        user_id: &str,
        algorithm: Algorithm,
        verifier: &dyn UserVerifier,
    ) -> Result<Arc<dyn DeviceKey>, ClientError>;
    /// [`Keystore::create_key_of`] an ECDSA P-256 key.
    fn create_key(
        &self,
        user_id: &str,
        verifier: &dyn UserVerifier,
    ) -> Result<Arc<dyn DeviceKey>, ClientError> {
        self.create_key_of(user_id, Algorithm::EcdsaP256, verifier)
    }
    /// Verifies the user and opens `user_id`'s device key. A wrong secret counts towards the
    /// lockout ([`ClientError::WrongPin`]); once locked, every call answers
    /// [`ClientError::Locked`].
    fn unlock(
        &self,
        user_id: &str,
        verifier: &dyn UserVerifier,
    ) -> Result<Arc<dyn DeviceKey>, ClientError>;
    /// The device key's SPKI DER, if there is a usable (not destroyed) key for `user_id`.
    fn public_key(&self, user_id: &str) -> Result<Option<Vec<u8>>, ClientError>;
    /// Records the registration outcome.
    fn set_device(&self, user_id: &str, device: &DeviceInfo) -> Result<(), ClientError>;
    /// The registration outcome, if registered; [`ClientError::Locked`] if the key was
    /// destroyed by a lockout.
    fn device(&self, user_id: &str) -> Result<Option<DeviceInfo>, ClientError>;
}

/// A device key held in this process's memory (what [`FileKeystore`] opens). The scalar is
/// zeroized when dropped ([`SigningKey`] wipes itself); `Debug` shows only the public key.
pub struct SoftDeviceKey {
    key: SigningKey,
    spki: Vec<u8>,
}

impl SoftDeviceKey {
    /// Holds `key` (for a keystore that has opened it, or a device simulated in memory).
    pub fn new(key: impl Into<SigningKey>) -> Self {
        let key = key.into();
        let spki = key.public_key().to_spki_der();
        Self { key, spki }
    }
}

impl DeviceKey for SoftDeviceKey {
    fn public_key_spki(&self) -> Vec<u8> {
        self.spki.clone()
    }

    fn algorithm(&self) -> Algorithm {
        self.key.algorithm()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, ClientError> {
        Ok(self.key.sign_message(message))
    }

    fn sign_handshake(&self, message: &[u8]) -> Result<Vec<u8>, ClientError> {
        match &self.key {
            SigningKey::P256(k) => Ok(k.sign_message(message)),
            SigningKey::Sm2(k) => Ok(k
                .with_distid(yunkey_net::sm2_tls::TLS13_SM2_ID)
                .map_err(|e| ClientError::Invalid(e.to_string()))?
                .sign_message(message)),
        }
    }
}

impl std::fmt::Debug for SoftDeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SoftDeviceKey({:?})", self.key.public_key())
    }
}
