//! Raft plumbing for yunkey's coordinators, on top of [openraft] 0.9.
//!
//! What this crate is for:
//!
//! - **Log storage**: [`LogStore`] keeps the Raft log, the vote, the committed log id and the
//!   last purged log id in a [`yunkey_store::Wal`] (an append-only segmented log, one
//!   `fdatasync` per group commit), syncing at every point Raft requires durability.
//! - **State-machine storage**: [`StateMachineStore`] runs the application's deterministic
//!   [`Apply`] implementation and keeps its state in memory (the `sm` tree of an in-memory
//!   [`yunkey_store::Db`]), with the last applied log id written in the same atomic batch as
//!   each entry's writes. Its snapshots are files in a snapshot directory
//!   ([`SnapshotFile`]): a versioned, checksummed stream of the `sm` tree's records, built and
//!   installed in bounded memory beside the state; their records are in a durable `Db`. At open
//!   the state is loaded from the current snapshot, and openraft applies the log after it.
//! - **Network**: [`GrpcNetworkFactory`] (client side) and [`RaftGrpcServer`] (server side) carry
//!   openraft's messages, serialized with bincode, over the `yunkey.v1.RaftService` gRPC service
//!   (`AppendEntries` on one long-lived stream per follower, unary calls to a peer without it).
//! - **Write forwarding**: [`write()`] submits a command locally and forwards it to the leader when
//!   this node is not the leader, retrying until a deadline; it returns the entry's log index.
//! - **Promoting learners safely**: [`wait_caught_up()`] waits, on the leader, until a learner
//!   has acknowledged the log (openraft's blocking `add_learner` can report an unreachable
//!   learner caught up at once).
//! - **Linearizable reads anywhere**: [`ensure_linearizable()`] asks the leader for its read
//!   index (`ReadIndex` RPC) when this node is a follower, then waits until this node has
//!   applied it.
//!
//! What it must not depend on: no chip, no coordinator business logic, and no TLS configuration.
//! The caller supplies gRPC channels through a [`Connector`] (and wraps [`RaftGrpcServer`] with its
//! own authentication), so this crate never sees a certificate.
//!
//! Where it sits: under the coordinator. The coordinator declares its openraft type config, its
//! command type and its [`Apply`] implementation, and uses this crate for everything Raft needs
//! from storage and the network.
//!
//! # The type-config bound
//!
//! Everything here is generic over one bound, [`TypeConfig`], documented in one place: node ids
//! are `u64`, nodes are [`openraft::BasicNode`] (its `addr` is what the [`Connector`] dials),
//! snapshot data is a [`SnapshotFile`] (declare it: `SnapshotData = yunkey_raft::SnapshotFile`),
//! entries, responder and runtime (tokio) are openraft's defaults, the command type `D` is
//! `Clone` (writes may be retried), and the response type `R` is `Default` (returned for blank
//! and membership entries). `D` and `R` are serde types because openraft's `serde` feature is on.

mod apply;
mod codec;
mod error;
mod leader_call;
mod learner;
mod legacy;
mod log_migrate;
mod log_store;
mod network;
mod network_client;
mod reader;
mod server;
mod snapshot;
mod snapshot_dir;
mod snapshot_file;
mod snapshot_store;
mod state_machine;
mod writer;

use openraft::impls::OneshotResponder;
use openraft::{BasicNode, Entry, RaftTypeConfig, TokioRuntime};

pub use apply::Apply;
pub use error::{CatchUpError, WriteError};
pub use learner::{learner_progress, wait_caught_up, LearnerProgress};
pub use log_store::LogStore;
pub use network::{Connector, GrpcNetworkFactory};
pub use network_client::GrpcNetwork;
pub use reader::ensure_linearizable;
pub use server::{RaftGrpcServer, TARGET_HEADER};
pub use snapshot::SNAPSHOT_FORMAT_VERSION;
pub use snapshot_file::SnapshotFile;
pub use state_machine::StateMachineStore;
pub use writer::{write, Written};

/// The openraft type configs this crate supports: see the crate documentation.
///
/// Implemented automatically for every matching [`RaftTypeConfig`]; declare yours with
/// `openraft::declare_raft_types!`, setting `D`, `R` and `SnapshotData = yunkey_raft::SnapshotFile`
/// (the defaults fill in the rest).
pub trait TypeConfig:
    RaftTypeConfig<
    NodeId = u64,
    Node = BasicNode,
    Entry = Entry<Self>,
    SnapshotData = SnapshotFile,
    AsyncRuntime = TokioRuntime,
    Responder = OneshotResponder<Self>,
    D: Clone,
    R: Default,
>
{
}

impl<T> TypeConfig for T where
    T: RaftTypeConfig<
        NodeId = u64,
        Node = BasicNode,
        Entry = Entry<T>,
        SnapshotData = SnapshotFile,
        AsyncRuntime = TokioRuntime,
        Responder = OneshotResponder<T>,
        D: Clone,
        R: Default,
    >
{
}
