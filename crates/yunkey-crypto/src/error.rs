use thiserror::Error;

/// What went wrong in a cryptographic operation. Never carries key material.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// A public key is not a valid P-256 SubjectPublicKeyInfo DER.
    #[error("public key is not a valid P-256 SubjectPublicKeyInfo (DER)")]
    BadPublicKey,
    /// A signature is not a DER ECDSA-Sig-Value.
    #[error("signature is not a DER-encoded ECDSA signature")]
    MalformedSignature,
    /// A well-formed signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// Sealed data failed authentication: wrong key, wrong context or tampering.
    #[error("sealed data failed authentication (wrong key, wrong context, or tampered)")]
    Unseal,
    /// Input of the wrong length or shape.
    #[error("malformed input: {0}")]
    Malformed(&'static str),
}
