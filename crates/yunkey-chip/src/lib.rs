//! yunkey's chip layer: the [`ChipBackend`] seam every crypto chip implements, the
//! [`SoftChip`] (a software chip in a directory, for development and tests), and
//! [`ChipGrpc`], the `ChipService` gRPC server over any backend.
//!
//! Users' private signing keys live only inside chips. A chip is the last step of the sign
//! path and acts as the signature activation module: whatever the coordinators decided, it
//! re-checks the user's device authorization itself (canonical transaction, expiry, device
//! certificate chaining to the trust anchor and naming the user and device, the device's
//! signature over the authorization message) and signs exactly the transaction hash it
//! computed itself. Private keys leave a chip only wrapped under the security domain's key.
//!
//! Dependencies: this crate knows nothing of coordinators or Raft. The [`ChipBackend`] trait
//! depends only on plain Rust types (no proto types, no storage); only [`SoftChip`] uses
//! `yunkey-store`, so a PKCS#11 token can implement the same trait and must pass the same
//! [`conformance`] suite.
//!
//! Errors are one enum, [`ChipError`], mapped to gRPC statuses only in [`status`].

pub mod backend;
pub mod conformance;
pub mod devcert;
pub mod error;
pub mod grpc;
pub mod replay;
pub mod soft;
pub mod status;
pub mod testing;
pub mod wrapped;

pub use backend::{
    ChipBackend, ChipInfo, ExportedDomain, GeneratedKey, KeyPurpose, SignAuthorized, Signed,
};
pub use error::ChipError;
pub use grpc::ChipGrpc;
pub use soft::{SoftChip, SoftChipConfig};
