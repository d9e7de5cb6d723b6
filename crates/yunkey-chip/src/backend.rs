//! The `ChipBackend` seam: what a chip offers the `ChipService` server (and, later, an
//! in-process client). Plain Rust types, synchronous calls; the gRPC server runs them on
//! blocking threads. [`crate::ActivationModule`] is the implementation that every real chip
//! uses, over any [`crate::KeyCustody`]; the trait exists so the server and coordinator tests
//! can be written against the seam.

use crate::binding::PendingActivation;
use crate::ChipError;
use std::fmt;
use yunkey_crypto::cipher::Cipher;
use yunkey_crypto::Digest;

/// What a key may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyPurpose {
    /// A user's signing key: signs only with a device authorization the chip checked.
    User,
    /// A cluster CA key: issues certificates that the chip builds from checked requests.
    Ca,
    /// The cluster's code-signing key: signs only release manifests
    /// ([`ChipBackend::sign_manifest`]), never a certificate or a transaction.
    CodeSigning,
}

impl KeyPurpose {
    /// One byte, for stored and wrapped formats.
    pub fn to_byte(self) -> u8 {
        match self {
            KeyPurpose::User => 1,
            KeyPurpose::Ca => 2,
            KeyPurpose::CodeSigning => 3,
        }
    }

    /// The inverse of [`KeyPurpose::to_byte`].
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(KeyPurpose::User),
            2 => Some(KeyPurpose::Ca),
            3 => Some(KeyPurpose::CodeSigning),
            _ => None,
        }
    }
}

impl fmt::Display for KeyPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyPurpose::User => "user",
            KeyPurpose::Ca => "ca",
            KeyPurpose::CodeSigning => "code_signing",
        })
    }
}

/// Identity, capacity and domain membership of a chip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChipInfo {
    /// The chip's id.
    pub chip_id: String,
    /// How many keys it may hold.
    pub capacity: u64,
    /// How many it holds.
    pub used: u64,
    /// Failure zone (rack, host, data centre) for placement.
    pub zone: String,
    /// SubjectPublicKeyInfo DER of the transport key (domain export is encrypted to it).
    pub transport_public_key: Vec<u8>,
    /// The security domain's id, if the chip is in one.
    pub domain_id: Option<String>,
    /// DER of the trust anchor (P-256 user CA certificate), if set.
    pub trust_anchor: Option<Vec<u8>>,
    /// DER of the SM2 user CA certificate, if set.
    pub sm2_trust_anchor: Option<Vec<u8>>,
    /// SubjectPublicKeyInfo DER of the domain's operator key, if the chip is in a domain.
    pub operator_key: Option<Vec<u8>>,
    /// The domain's cipher, if the chip is in a domain.
    pub domain_cipher: Option<Cipher>,
    /// What keeps the keys (`soft`, `pkcs11:...`).
    pub custody: String,
}

/// An operator's admission of a chip to the security domain: the operator key's signature
/// over [`yunkey_crypto::authz::chip_admission_message`] of the chip's id and transport key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChipAdmission {
    /// The admitted chip's id.
    pub chip_id: String,
    /// Its transport key (SubjectPublicKeyInfo DER).
    pub transport_public_key: Vec<u8>,
    /// DER ECDSA signature by the operator key.
    pub operator_signature: Vec<u8>,
}

/// A request to generate a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateKey {
    /// ECDSA P-256 or SM2.
    pub algorithm: yunkey_crypto::sig::Algorithm,
    /// For an SM2 user key: the distinguishing ID it signs under (empty: the default,
    /// [`yunkey_crypto::sm2::DEFAULT_DISTID`]). Empty for every other key.
    pub distid: String,
    /// User or CA key.
    pub purpose: KeyPurpose,
    /// The owner of a user key; empty for a CA key.
    pub user_id: String,
    /// For a user key: the pending first-device activation sealed into its binding.
    pub activation: Option<PendingActivation>,
}

/// A key made (or imported) inside a chip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedKey {
    /// The chip-local handle naming the key.
    pub handle: String,
    /// Its algorithm.
    pub algorithm: yunkey_crypto::sig::Algorithm,
    /// The SM2 distinguishing ID it signs under (empty for P-256).
    pub distid: String,
    /// SubjectPublicKeyInfo DER of the public key.
    pub public_key_spki: Vec<u8>,
    /// The key wrapped under the domain's keys, with its binding ([`crate::wrapped`]).
    pub wrapped_key: Vec<u8>,
    /// The binding's seq.
    pub binding_seq: u64,
}

/// A device asking to be bound to a user key with the one-time activation code.
#[derive(Clone, PartialEq, Eq)]
pub struct BindDevice {
    /// A holder's handle of the user key.
    pub key_handle: String,
    /// The user.
    pub user_id: String,
    /// The activation code the device presented (checked against the sealed hash).
    pub activation_code: String,
    /// SubjectPublicKeyInfo DER of the device key.
    pub device_public_key: Vec<u8>,
    /// DER ECDSA signature by the device key over
    /// [`yunkey_crypto::authz::registration_message`].
    pub proof: Vec<u8>,
}

impl fmt::Debug for BindDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BindDevice")
            .field("user_id", &self.user_id)
            .field("activation_code", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A re-activation: a new one-time code (by its hash) that lets one more device bind to a
/// user key. It opens the binding's next activation epoch, so it supersedes any earlier code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetActivation {
    /// A holder's handle of the user key.
    pub key_handle: String,
    /// The user.
    pub user_id: String,
    /// SHA-256 of the new code (the code itself never reaches a chip).
    pub code_sha256: [u8; 32],
    /// Unix seconds after which the code is void.
    pub expires_at: i64,
}

/// A revocation of a user (no device) or of one device, decided by a chip holding the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoke {
    /// A holder's handle of the user key.
    pub key_handle: String,
    /// The user.
    pub user_id: String,
    /// The device to revoke; `None` revokes the user.
    pub device_id: Option<String>,
}

/// The outcome of a binding change: the new wrapped key to commit and push to the other
/// holders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebound {
    /// The key wrapped with its new binding.
    pub wrapped_key: Vec<u8>,
    /// The new binding's seq.
    pub binding_seq: u64,
    /// The bound device's id, for [`ChipBackend::bind_device`].
    pub device_id: Option<String>,
}

/// A sign request for a user key, with the device's approval that the chip checks itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignAuthorized {
    /// The key to sign with (purpose USER).
    pub key_handle: String,
    /// The user the key must belong to.
    pub user_id: String,
    /// Canonical transaction bytes; the chip hashes them itself.
    pub canonical_transaction: Vec<u8>,
    /// The device that approved; it must be bound to the key on this chip.
    pub device_id: String,
    /// The device's proof over the authorization message, in `authorization_format`.
    pub authorization_signature: Vec<u8>,
    /// What `authorization_signature` holds (only ECDSA P-256 verifies so far).
    pub authorization_format: yunkey_crypto::authz::AuthorizationFormat,
    /// The binding seq the coordinators know; a chip that is behind refuses
    /// ([`ChipError::BindingBehind`]) until it is sent the newer wrapped key.
    pub binding_seq: u64,
}

/// What certificate to issue with a CA key. The chip builds the certificate itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateSubject {
    /// The CA's own self-signed certificate.
    Ca {
        /// Its common name.
        common_name: String,
    },
    /// A user certificate for the key in `wrapped_user_key` (owner and public key read from
    /// its authenticated metadata).
    User {
        /// A wrapped key of the domain.
        wrapped_user_key: Vec<u8>,
        /// Optional display name (as O).
        display_name: String,
    },
    /// A device certificate for a device bound in `wrapped_user_key`'s binding.
    Device {
        /// A wrapped key of the domain whose binding lists the device.
        wrapped_user_key: Vec<u8>,
        /// The device.
        device_id: String,
        /// How long the certificate is valid, in seconds; `None`: the default
        /// (`LEAF_VALIDITY_DAYS`). Between `MIN_DEVICE_VALIDITY_SECS` and the default.
        validity_secs: Option<i64>,
    },
    /// The code-signing certificate for the CODE_SIGNING key in `wrapped_key` (its public
    /// key read from the wrapped key's authenticated metadata).
    CodeSigning {
        /// A wrapped CODE_SIGNING key of the domain.
        wrapped_key: Vec<u8>,
    },
}

/// A request to sign a release manifest with a code-signing key. The chip builds the message
/// ([`yunkey_crypto::release::manifest_message`]) itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignManifest {
    /// The CODE_SIGNING key to sign with.
    pub key_handle: String,
    /// The release's version.
    pub version: yunkey_crypto::release::Version,
    /// SHA-256 of the released file.
    pub file_sha256: Digest,
}

/// A request to issue a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueCertificate {
    /// The CA key to sign with.
    pub ca_key_handle: String,
    /// What to certify.
    pub subject: CertificateSubject,
}

/// The domain state encrypted to another chip's transport key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedDomain {
    /// Opaque envelope for the recipient chip's [`ChipBackend::import_domain`].
    pub envelope: Vec<u8>,
    /// The domain's id.
    pub domain_id: String,
    /// The domain's cipher.
    pub cipher: Cipher,
}

/// A key as [`ChipBackend::list_keys`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyListing {
    /// Its handle.
    pub handle: String,
    /// User or CA key.
    pub purpose: KeyPurpose,
    /// The owner (empty for a CA key).
    pub user_id: String,
}

/// A signature and the digest that was signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// DER signature: ECDSA-Sig-Value, or SM2's `SEQUENCE { r, s }`.
    pub signature_der: Vec<u8>,
    /// The digest that was signed, computed by the chip: SHA-256 of the message for P-256,
    /// `SM3(Z_A || message)` for SM2.
    pub digest: Digest,
}

/// A chip: keys are generated, used and destroyed inside it; private keys leave it only
/// wrapped under the security domain's keys; a user key signs only for a device bound to it
/// inside the chips. Every call may block (disk, token IO).
pub trait ChipBackend: Send + Sync {
    /// Identity, capacity and domain membership.
    fn info(&self) -> Result<ChipInfo, ChipError>;

    /// Creates a fresh security domain in this chip with the operator's key (SPKI DER) and
    /// `cipher`, both then fixed for the domain's life; `admission` is the operator's
    /// admission of this chip itself. Refused if the chip is already in a domain, or if its
    /// custody cannot wrap under `cipher` ([`ChipError::CipherUnsupported`]).
    fn init_domain(
        &self,
        operator_key: &[u8],
        admission_signature: &[u8],
        cipher: Cipher,
    ) -> Result<String, ChipError>;

    /// Encrypts the domain state to another chip's transport key, only if the domain's
    /// operator key signed that chip's admission.
    fn export_domain(&self, recipient: &ChipAdmission) -> Result<ExportedDomain, ChipError>;

    /// Joins the domain in `envelope` (made by [`ChipBackend::export_domain`] for this chip),
    /// with the cipher the envelope names; returns its id. Idempotent for the same domain;
    /// refused if in another (or the same secret with another cipher), or if the custody
    /// cannot wrap under the domain's cipher.
    fn import_domain(&self, envelope: &[u8]) -> Result<String, ChipError>;

    /// Sets a user CA certificate (DER, ECDSA P-256 or SM2: each algorithm has its own
    /// anchor). Write-once: the same certificate again is accepted, another is refused.
    fn set_trust_anchor(&self, cert_der: &[u8]) -> Result<(), ChipError>;

    /// Generates a key pair. Needs a domain (the result carries the wrapped key).
    fn generate_key(&self, request: &GenerateKey) -> Result<GeneratedKey, ChipError>;

    /// Binds a device to a user key with the one-time activation code, after checking the
    /// code against the sealed hash and the device's proof of possession.
    fn bind_device(&self, request: &BindDevice) -> Result<Rebound, ChipError>;

    /// Takes a newer binding (from another holder, through the coordinators) in a wrapped key
    /// of the same key. An older one is refused; the same one is a no-op.
    fn update_binding(&self, handle: &str, wrapped: &[u8]) -> Result<Rebound, ChipError>;

    /// Revokes the user or one device in the key's binding.
    fn revoke(&self, request: &Revoke) -> Result<Rebound, ChipError>;

    /// Opens a new activation in the key's binding (see [`SetActivation`]).
    fn set_activation(&self, request: &SetActivation) -> Result<Rebound, ChipError>;

    /// Signs a canonical transaction with a user key after checking the device
    /// authorization against the key's binding. Returns the signature over the SHA-256 of the
    /// transaction bytes.
    fn sign_authorized(&self, request: &SignAuthorized) -> Result<Signed, ChipError>;

    /// Whether [`ChipBackend::sign_authorized`] computes in memory, without waiting on a
    /// device or a disk write (a soft chip: its key records are read from the store's cache
    /// and it signs in-process). The gRPC server then runs small batches of signatures on
    /// its own threads ([`crate::grpc::INLINE_SIGNATURES`]). `false` unless a backend says
    /// so.
    fn signs_in_memory(&self) -> bool {
        false
    }

    /// Builds and signs a certificate with a CA key; returns its DER.
    fn issue_certificate(&self, request: &IssueCertificate) -> Result<Vec<u8>, ChipError>;

    /// The key wrapped under the domain's keys, with its current binding.
    fn wrap_key(&self, handle: &str) -> Result<Vec<u8>, ChipError>;

    /// Imports a wrapped key under a new handle. The requested purpose and user id must be
    /// those the key was wrapped with.
    fn unwrap_key(
        &self,
        wrapped: &[u8],
        purpose: KeyPurpose,
        user_id: &str,
    ) -> Result<GeneratedKey, ChipError>;

    /// Destroys a key; `false` if there was none with this handle.
    fn delete_key(&self, handle: &str) -> Result<bool, ChipError>;

    /// Up to `limit` keys with handles after `after` (all from the first when empty), in
    /// handle order.
    fn list_keys(&self, after: &str, limit: usize) -> Result<Vec<KeyListing>, ChipError>;

    /// Signs the release manifest message of `request` with a CODE_SIGNING key; returns the
    /// signature over the message's SHA-256. Any other key is refused.
    fn sign_manifest(&self, request: &SignManifest) -> Result<Signed, ChipError>;
}
