//! The yunkey coordinator.
//!
//! Coordinators keep the cluster's replicated state on Raft (users, devices, certificates,
//! the chip registry, placements, and the ledger of consumed authorizations), place users'
//! keys on chips, route every signature to a healthy chip that holds the key, and serve the
//! public gRPC API (`KeyService`, `TerminalService`, `ClusterService`) plus the internal Raft
//! service, all on one TLS port.
//!
//! In the sign path it is the middle: the terminal's authorization arrives here, is checked
//! (device, expiry, signature), put to the business's risk checks ([`risk`]), consumed
//! through Raft (replay defence, audit), and forwarded to a chip that checks it again and
//! signs.
//!
//! Layout: [`state`] (records, commands, apply), [`raft`] (type config and handle),
//! [`batch`] (group commit of proposals), [`placement`] (pure placement), [`chips`]
//! (connections, health; [`chip_batch`] batches signatures per chip), [`ca`] (certificates signed inside chips), the operations
//! [`enroll`], [`devices`], [`signing`], [`admin`], [`membership`], and the gRPC adapters in
//! [`service`]. [`node`] assembles a running coordinator.
//!
//! It depends on the proto, crypto, store, net and raft crates; never on a chip
//! implementation (chips are reached only over gRPC).

pub mod admin;
pub mod audit;
pub mod audit_log;
pub mod batch;
pub mod bindings;
pub mod ca;
pub mod chip_batch;
pub mod chip_client;
pub mod chips;
pub mod clock;
pub mod convert;
pub mod core;
pub mod devices;
pub mod enroll;
pub mod error;
pub mod explain;
pub mod membership;
pub mod node;
pub mod placement;
pub mod prune;
pub mod raft;
pub mod rebalance;
pub mod release;
pub mod repair;
pub mod replicas;
pub mod risk;
pub mod service;
pub mod signing;
pub mod state;

pub use crate::core::{CoordinatorConfig, Core};
pub use error::CoordError;
pub use node::{Node, NodeOptions};
