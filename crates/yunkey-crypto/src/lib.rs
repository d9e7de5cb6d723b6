//! yunkey's wire formats and cryptographic primitives.
//!
//! Everything here is pure computation, no IO: the canonical transaction encoding and its
//! hash ([`tx`]), the messages a device signs ([`authz`]), ECDSA P-256 signing and
//! verification ([`ecdsa`]), SM2 with SM3 ([`sm2`], GB/T 32918), keys of either algorithm behind
//! one type ([`sig`]), authenticated sealing of key material at rest ([`seal`]) and
//! the envelope that carries the security domain from one chip to another ([`envelope`]),
//! and the key wrapping and message authentication of the domain's wrapped keys
//! ([`keywrap`]), with AES-256 or SM4 as a deployment chooses ([`cipher`]).
//!
//! It sits under both ends of the sign path: the terminal builds and signs with it, the
//! coordinator and the chip check with it. It may depend on `yunkey-proto` and RustCrypto
//! crates only; never on storage, networking or any other yunkey crate.

pub mod authz;
pub mod cipher;
pub mod ecdsa;
pub mod envelope;
mod error;
pub mod keywrap;
pub mod names;
pub mod release;
pub mod ring_pairs;
pub mod seal;
pub mod sig;
pub mod sm2;
pub mod tx;
pub mod validate;

pub use error::CryptoError;

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Digest {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

/// Fills a fresh array with bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use rand_core::RngCore;
    let mut out = [0u8; N];
    rand_core::OsRng.fill_bytes(&mut out);
    out
}

/// Compares two byte strings in constant time (for secrets such as activation codes).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
