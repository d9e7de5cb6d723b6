//! The key-custody seam: the few things a chip's key store must do, with no policy in it.
//!
//! Everything that decides *whether* a key may be used lives above this trait, in the
//! [`crate::ActivationModule`], and is the same for every backend. A custody backend only
//! keeps keys: it generates a key pair inside (ECDSA P-256, or SM2 where the backend supports
//! it), exports and imports it wrapped under the domain's key-encryption key, signs a digest
//! that the module has already checked, destroys a key, and seals the module's own records at
//! rest under a key that never leaves it.
//!
//! Two backends exist: the soft custody ([`crate::soft::SoftCustody`], a master key in a
//! file) and a PKCS#11 token (crate `yunkey-chip-pkcs11`). Both pass [`crate::conformance`].
//!
//! Wrapped keys are the PKCS#8 DER of the private key under AES-256 key wrap with padding
//! (RFC 5649, `CKM_AES_KEY_WRAP_PAD`), so a key wrapped by one backend imports into the other;
//! in a domain whose cipher is SM4, under SM4 key wrap with padding, which only the soft
//! custody does ([`KeyCustody::wraps_under`]).

use crate::ChipError;
use std::fmt;
use yunkey_crypto::cipher::Cipher;
use yunkey_crypto::sig::{Algorithm, VerifyingKey};
use yunkey_crypto::Digest;
use zeroize::Zeroizing;

/// A backend's reference to a key it keeps: opaque to the module, stored by it inside the
/// key's sealed record. For the soft custody it is the private scalar itself; for a token it
/// is the object's `CKA_ID`. It names the key's algorithm too. Wiped on drop, never printed.
pub struct KeyRef {
    algorithm: Algorithm,
    bytes: Zeroizing<Vec<u8>>,
}

impl KeyRef {
    /// A reference to a key of `algorithm` from the backend's bytes.
    pub fn new(algorithm: Algorithm, bytes: Vec<u8>) -> Self {
        Self {
            algorithm,
            bytes: Zeroizing::new(bytes),
        }
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The backend's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyRef(<redacted>)")
    }
}

/// A key pair a backend made or imported.
#[derive(Debug)]
pub struct CustodyKey {
    /// How the backend finds the private key again.
    pub key_ref: KeyRef,
    /// Its public key (for SM2, with the default distinguishing ID: the module sets the key's
    /// own).
    pub public_key: VerifyingKey,
}

/// The domain's key-encryption key, for the domain's cipher (AES-256 or SM4), derived inside
/// the module from the domain secret. Wiped on drop, never printed; its fingerprint lets a
/// backend cache a token object.
#[derive(Clone)]
pub struct Kek(Zeroizing<Vec<u8>>, Cipher);

impl Kek {
    pub(crate) fn new(cipher: Cipher, bytes: Zeroizing<Vec<u8>>) -> Self {
        debug_assert_eq!(bytes.len(), cipher.key_len());
        Self(bytes, cipher)
    }

    /// The key bytes ([`Cipher::key_len`] of them), for the backend's wrap and unwrap.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The block cipher to wrap with under this key: the domain's.
    pub fn cipher(&self) -> Cipher {
        self.1
    }

    /// A public, non-reversible name of this key.
    pub fn fingerprint(&self) -> String {
        let mut input = b"yunkey-kek-fingerprint/1".to_vec();
        input.extend_from_slice(&self.0[..]);
        hex::encode(&yunkey_crypto::sha256(&input)[..8])
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kek({})", self.fingerprint())
    }
}

/// A digest that the activation module has decided may be signed: only the module can make
/// one, so a backend's `sign` cannot be reached around the checks from outside this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedDigest(Digest);

impl CheckedDigest {
    pub(crate) fn new(digest: Digest) -> Self {
        Self(digest)
    }

    /// The digest to sign: SHA-256 of the message for a P-256 key, `SM3(Z_A || message)` for
    /// an SM2 key (the module computes both; see [`yunkey_crypto::sig::VerifyingKey::digest`]).
    pub fn digest(&self) -> &Digest {
        &self.0
    }
}

/// A message the activation module has decided may be signed with a P-256 key: the message,
/// its SHA-256 (the digest [`KeyCustody::sign`] would sign) and the key's public key. Only the
/// module can make one.
#[derive(Debug, Clone, Copy)]
pub struct CheckedMessage<'a> {
    digest: CheckedDigest,
    message: &'a [u8],
    public_key: &'a yunkey_crypto::ecdsa::PublicKey,
}

impl<'a> CheckedMessage<'a> {
    /// `digest` must be the SHA-256 of `message` (the module computed it from these bytes).
    pub(crate) fn new(
        digest: Digest,
        message: &'a [u8],
        public_key: &'a yunkey_crypto::ecdsa::PublicKey,
    ) -> Self {
        debug_assert_eq!(yunkey_crypto::sha256(message), digest);
        Self {
            digest: CheckedDigest(digest),
            message,
            public_key,
        }
    }

    /// The SHA-256 of [`CheckedMessage::message`].
    pub fn digest(&self) -> &CheckedDigest {
        &self.digest
    }

    /// The message.
    pub fn message(&self) -> &'a [u8] {
        self.message
    }

    /// The public key of the key that is to sign.
    pub fn public_key(&self) -> &'a yunkey_crypto::ecdsa::PublicKey {
        self.public_key
    }
}

/// Signs `message`, which the module built or checked, with `key` (whose public key is
/// `public`): a P-256 key over its SHA-256 through [`KeyCustody::sign_message`] (a backend may
/// sign the bytes faster than the digest), an SM2 key over `SM3(Z_A || message)`. The one way
/// the module signs bytes (user signatures, certificates).
pub(crate) fn sign_checked(
    custody: &dyn KeyCustody,
    key: &KeyRef,
    public: &VerifyingKey,
    message: &[u8],
) -> Result<Vec<u8>, ChipError> {
    match public {
        VerifyingKey::P256(p) => custody.sign_message(
            key,
            &CheckedMessage::new(yunkey_crypto::sha256(message), message, p),
        ),
        VerifyingKey::Sm2(_) => custody.sign(key, &CheckedDigest(public.digest(message))),
    }
}

/// What a chip's key store offers the activation module. Every call may block (disk, token
/// IO); implementations must be safe to call from many threads.
pub trait KeyCustody: Send + Sync {
    /// A short description for logs and `GetInfo` (`soft`, `pkcs11:<token label>`).
    fn describe(&self) -> String;

    /// Whether [`KeyCustody::sign`] and [`KeyCustody::open`] compute in this process's memory
    /// without waiting on a device (a token, a remote HSM). Then the chip's gRPC server
    /// signs small batches on its own threads instead of handing each one to a blocking
    /// thread ([`crate::ChipBackend::signs_in_memory`]). `false` unless a custody says so.
    fn signs_in_memory(&self) -> bool {
        false
    }

    /// Encrypts and authenticates one of the module's records under a key that never leaves
    /// the backend, binding `aad`.
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, ChipError>;

    /// Opens what [`KeyCustody::seal`] produced with the same `aad`; a record that was altered,
    /// moved or made elsewhere fails with [`ChipError::Storage`].
    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, ChipError>;

    /// Generates a key pair of `algorithm` inside; the private key never leaves in the clear.
    /// A backend that cannot hold keys of `algorithm` refuses with
    /// [`ChipError::AlgorithmUnsupported`].
    fn generate(&self, algorithm: Algorithm) -> Result<CustodyKey, ChipError>;

    /// The private key as KWP (RFC 5649) of its PKCS#8 DER under `kek`, with the kek's cipher
    /// (AES-256-KWP, or SM4-KWP in an SM4 domain). `public_key` is the key's own (the key
    /// record keeps it): a backend that builds the PKCS#8 itself uses it instead of deriving
    /// it again from the private key.
    fn export_wrapped(
        &self,
        key: &KeyRef,
        public_key: &VerifyingKey,
        kek: &Kek,
    ) -> Result<Vec<u8>, ChipError>;

    /// Imports what [`KeyCustody::export_wrapped`] produced (on this or another backend), a
    /// key of `algorithm` (the wrapped key's authenticated metadata names it).
    fn import_wrapped(
        &self,
        wrapped: &[u8],
        algorithm: Algorithm,
        kek: &Kek,
    ) -> Result<CustodyKey, ChipError>;

    /// Signs a digest the module checked with the key; returns a DER signature (ECDSA with
    /// low S, or SM2's `SEQUENCE { r, s }`).
    fn sign(&self, key: &KeyRef, digest: &CheckedDigest) -> Result<Vec<u8>, ChipError>;

    /// Signs a message the module checked with a P-256 key (the user's signature over a
    /// transaction); returns a low-S DER ECDSA signature over its SHA-256. By default this is
    /// [`KeyCustody::sign`] of the digest; a backend with a faster way that needs the message
    /// overrides it (the soft custody signs with ring).
    fn sign_message(
        &self,
        key: &KeyRef,
        checked: &CheckedMessage<'_>,
    ) -> Result<Vec<u8>, ChipError> {
        self.sign(key, checked.digest())
    }

    /// Destroys the key (a no-op for backends whose key lives only in the module's record).
    fn destroy(&self, key: &KeyRef) -> Result<(), ChipError>;

    /// Whether the backend can wrap and unwrap keys under a domain of `cipher`. The module
    /// refuses to create or join a domain whose cipher its custody cannot serve, with
    /// [`ChipError::CipherUnsupported`].
    fn wraps_under(&self, cipher: Cipher) -> bool;
}
