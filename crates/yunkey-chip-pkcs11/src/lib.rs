//! A chip whose keys live in a PKCS#11 token: [`Pkcs11Custody`], the [`KeyCustody`] of
//! `yunkey-chip` over a token, and [`Pkcs11Chip::open`], which puts yunkey's signature
//! activation module ([`yunkey_chip::ActivationModule`]) in front of it.
//!
//! Where it sits in the sign path: last. The activation module, in the `yunkey chip` process,
//! checks every request exactly as for the soft chip (the device binding, the authorization,
//! expiry, replay, revocation) and only then hands this custody a
//! [`yunkey_chip::custody::CheckedDigest`] to sign. The token does the key work:
//! - user and CA keys are P-256 pairs generated in the token (`CKA_TOKEN`, `CKA_PRIVATE`,
//!   `CKA_SENSITIVE`; `CKA_EXTRACTABLE` only so that `C_WrapKey` can wrap them: their value
//!   is never readable), found again by `CKA_ID` (16 random bytes, the key's [`KeyRef`]);
//! - keys leave the token only as `C_WrapKey` with `CKM_AES_KEY_WRAP_PAD` (RFC 5649) of their
//!   PKCS#8 under the domain's key-encryption key, which the module hands down and which
//!   lives in the token as a non-extractable session object; `C_UnwrapKey` imports what a
//!   soft chip or another token wrapped, so a mixed fleet shares one format;
//! - the module's records (its database in the chip directory) are sealed with AES-256-GCM
//!   under `yunkey-master`, a token-resident AES key that never leaves the token;
//! - signatures are `CKM_ECDSA` over the checked digest, returned as DER with low S.
//!
//! Dependencies: `yunkey-chip` (the custody trait, the module), `yunkey-crypto` (P-256 types),
//! `yunkey-store` (the module's database) and `cryptoki`, which wraps the PKCS#11 C API; this
//! crate has no unsafe code of its own. Nothing else depends on it but the `yunkey` binary:
//! `yunkey-chip` must never depend on `cryptoki`.
//!
//! Tested against SoftHSM2 (`tests/`); see `docs/operations.md` for running a token chip.

mod chip;
mod custody;
mod ec;
mod options;
mod token;

pub use chip::Pkcs11Chip;
pub use custody::Pkcs11Custody;
pub use options::{Pin, Pkcs11Options, TokenSelector};

#[cfg(doc)]
use yunkey_chip::{custody::KeyRef, KeyCustody};
