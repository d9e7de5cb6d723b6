//! The `ChipBackend` seam: what any chip (the soft chip here, a PKCS#11 token later) offers.
//! Plain Rust types, synchronous calls; the gRPC server runs them on blocking threads.

use crate::ChipError;
use std::fmt;
use yunkey_crypto::Digest;

/// What a key may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyPurpose {
    /// A user's signing key: signs only with a device authorization the chip checked.
    User,
    /// A cluster CA key: signs digests at a coordinator's request.
    Ca,
}

impl KeyPurpose {
    /// One byte, for stored and wrapped formats.
    pub fn to_byte(self) -> u8 {
        match self {
            KeyPurpose::User => 1,
            KeyPurpose::Ca => 2,
        }
    }

    /// The inverse of [`KeyPurpose::to_byte`].
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(KeyPurpose::User),
            2 => Some(KeyPurpose::Ca),
            _ => None,
        }
    }
}

impl fmt::Display for KeyPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyPurpose::User => "user",
            KeyPurpose::Ca => "ca",
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
    /// DER of the trust anchor (user CA certificate), if set.
    pub trust_anchor: Option<Vec<u8>>,
}

/// A key made (or imported) inside a chip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedKey {
    /// The chip-local handle naming the key.
    pub handle: String,
    /// SubjectPublicKeyInfo DER of the public key.
    pub public_key_spki: Vec<u8>,
    /// The private key wrapped under the domain key (opaque; only domain members open it).
    pub wrapped_key: Vec<u8>,
}

/// The domain key encrypted to another chip's transport key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedDomain {
    /// Opaque envelope for the recipient chip's [`ChipBackend::import_domain`].
    pub envelope: Vec<u8>,
    /// The domain's id.
    pub domain_id: String,
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
    /// DER device certificate, issued by the trust anchor, naming `user_id` and `device_id`.
    pub device_certificate: Vec<u8>,
    /// The device that approved.
    pub device_id: String,
    /// DER ECDSA signature by the device key over the authorization message.
    pub authorization_signature: Vec<u8>,
}

/// A signature and the digest that was signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// DER ECDSA-Sig-Value.
    pub signature_der: Vec<u8>,
    /// The SHA-256 digest that was signed (for SignAuthorized, computed by the chip).
    pub digest: Digest,
}

/// A chip: keys are generated, used and destroyed inside it; private keys leave it only
/// wrapped under the security domain's key. Implementations must be safe to call from many
/// threads; every call may block (disk, token IO).
pub trait ChipBackend: Send + Sync {
    /// Identity, capacity and domain membership.
    fn info(&self) -> Result<ChipInfo, ChipError>;

    /// Creates a fresh security domain in this chip; returns its id. Refused if the chip is
    /// already in a domain.
    fn init_domain(&self) -> Result<String, ChipError>;

    /// Encrypts the domain state (domain key and trust anchor, if set) to the recipient
    /// chip's transport key (SubjectPublicKeyInfo DER).
    fn export_domain(&self, recipient_transport_spki: &[u8]) -> Result<ExportedDomain, ChipError>;

    /// Joins the domain in `envelope` (made by [`ChipBackend::export_domain`] for this chip);
    /// returns its id. Idempotent for the same domain; refused if in another.
    fn import_domain(&self, envelope: &[u8]) -> Result<String, ChipError>;

    /// Sets the user CA certificate (DER, ECDSA P-256) that device certificates must chain
    /// to. Write-once: the same certificate again is accepted, another is refused.
    fn set_trust_anchor(&self, cert_der: &[u8]) -> Result<(), ChipError>;

    /// Generates a key pair. `user_id` names the owner of a USER key and must be empty for
    /// a CA key. Needs a domain (the result carries the wrapped key).
    fn generate_key(&self, purpose: KeyPurpose, user_id: &str) -> Result<GeneratedKey, ChipError>;

    /// Signs a canonical transaction with a user key after checking the device
    /// authorization. Returns the signature over the SHA-256 of the transaction bytes.
    fn sign_authorized(&self, request: &SignAuthorized) -> Result<Signed, ChipError>;

    /// Signs a 32-byte digest with a CA key. User keys refuse.
    fn sign_digest(&self, handle: &str, digest: &Digest) -> Result<Signed, ChipError>;

    /// The key wrapped under the domain key.
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
}
