//! yunkey's chip layer: the signature activation module ([`ActivationModule`]) that decides
//! every use of a key, the [`KeyCustody`] seam under it that keeps keys (the soft custody
//! here, a PKCS#11 token in `yunkey-chip-pkcs11`), and [`ChipGrpc`], the `ChipService` gRPC
//! server over any [`ChipBackend`].
//!
//! Users' private signing keys live only inside chips, and a chip is the last step of the
//! sign path. It holds against the operator of the service itself, not only against faulty
//! coordinators:
//! - a user key signs only for a device the chips themselves bound to it, with the one-time
//!   activation code whose hash the generating chip sealed into the key's binding, and only a
//!   transaction whose hash the chip computed and the device signed ([`binding`],
//!   `activation::authorize`);
//! - revocations are part of the binding, which only chips change and which never goes back;
//! - a CA key signs only certificates the chip builds from checked input;
//! - the security domain (the keys that wrap every key) goes only to chips admitted by the
//!   domain's operator key, which is fixed when the domain is created;
//! - a key leaves a chip only wrapped under the domain's keys ([`wrapped`]).
//!
//! Dependencies: this crate knows nothing of coordinators or Raft. [`KeyCustody`] depends
//! only on plain Rust types; the module keeps its state in a `yunkey-store` database given to
//! it. Errors are one enum, [`ChipError`], mapped to gRPC statuses only in [`status`].

pub mod activation;
pub mod anchor;
pub mod backend;
pub mod binding;
pub mod conformance;
pub mod custody;
pub mod error;
pub mod grpc;
pub mod replay;
pub mod seal_cipher;
pub mod soft;
pub mod status;
pub mod testing;
pub mod wrapped;

pub use activation::{ActivationModule, ChipConfig};
pub use backend::{
    BindDevice, CertificateSubject, ChipAdmission, ChipBackend, ChipInfo, ExportedDomain,
    GenerateKey, GeneratedKey, IssueCertificate, KeyListing, KeyPurpose, Rebound, Revoke,
    SetActivation, SignAuthorized, SignManifest, Signed,
};
pub use custody::KeyCustody;
pub use error::ChipError;
pub use grpc::{AdmissionSource, ChipGrpc, OperatorAdmission};
pub use soft::{SoftChip, SoftCustody};
