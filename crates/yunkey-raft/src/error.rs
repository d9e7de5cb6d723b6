//! The crate's error type.

use thiserror::Error;

/// Why [`crate::write()`] did not return a response.
///
/// A write that failed with [`WriteError::Unavailable`] may still have been committed (it may
/// have reached a leader just before the deadline): the application deduplicates by request id.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The deadline passed before a leader accepted and applied the command: no leader was known
    /// or reachable, or the leader did not answer in time. The caller maps this to UNAVAILABLE.
    #[error("no leader committed the write within the deadline: {0}")]
    Unavailable(String),
    /// The local Raft node stopped or panicked; it will not serve writes again.
    #[error("raft node is shut down: {0}")]
    Fatal(String),
    /// The local Raft storage failed.
    #[error("raft storage error: {0}")]
    Storage(String),
    /// The leader rejected the command or answered with something that cannot be decoded.
    #[error("remote error: {0}")]
    Remote(String),
    /// The command could not be serialized.
    #[error("cannot encode command: {0}")]
    Codec(String),
}

/// Why [`crate::wait_caught_up()`] did not see the learner catch up.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CatchUpError {
    /// The deadline passed first. `matched` is the last log index the learner acknowledged
    /// (`None`: it never answered), `last` the leader's last log index.
    #[error("it acknowledged {} of the leader's {} log entries within {seconds} s", .matched.map_or("none".to_owned(), |m| format!("up to index {m}")), .last)]
    Timeout {
        /// Highest log index the learner acknowledged, if any.
        matched: Option<u64>,
        /// The leader's last log index.
        last: u64,
        /// The deadline, in seconds.
        seconds: u64,
    },
    /// This node stopped being the leader while waiting.
    #[error("this node stopped being the leader while waiting")]
    NotLeader,
    /// The learner was removed from the membership while waiting.
    #[error("it was removed from the membership while waiting")]
    Removed,
    /// The local Raft node shut down.
    #[error("the raft node shut down")]
    Shutdown,
}
