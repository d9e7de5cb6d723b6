//! The yunkey client SDK.
//!
//! - [`Connection`]: TLS channels to one or more coordinators, and [`Connection::call`],
//!   which retries UNAVAILABLE with backoff until a deadline, moving to the next endpoint,
//!   while the caller keeps the same `request_id` so the cluster applies the request once.
//! - [`keystore`]: where a device keeps its key and how the user is verified.
//!   [`keystore::Keystore`] is the seam a phone's TEE implements, [`keystore::UserVerifier`]
//!   the one its biometric prompt implements; [`keystore::Keystore::unlock`] yields a
//!   [`keystore::DeviceKey`] that signs. [`keystore::FileKeystore`] seals the key in a file
//!   under a key derived from the user's PIN (Argon2id) and destroys it after repeated wrong
//!   PINs.
//! - [`terminal`]: the device's side of the flows: registering with an activation code,
//!   building a transaction and authorizing it.
//! - [`release`]: release manifests of the terminal software and the self-check against one.
//!
//! It sits at the start of the sign path: it builds the canonical transaction and the
//! device's authorization. It depends on the proto, crypto and net crates only.

mod connection;
mod error;
pub mod keystore;
pub mod release;
pub mod terminal;

pub use connection::{cluster_client, key_client, terminal_client, Connection, ConnectionOptions};
pub use error::ClientError;
