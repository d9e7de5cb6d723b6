//! The application's state machine seam.

use openraft::RaftTypeConfig;
use yunkey_store::{Batch, StoreError, Tree};

/// The application's deterministic state machine.
///
/// [`crate::StateMachineStore`] calls it once per committed normal entry, in log order.
pub trait Apply<C: RaftTypeConfig>: Send + Sync + 'static {
    /// Applies one command. Reads the state as of before this entry from `state` (a staged
    /// view: it holds the writes of the entries applied before this one in the same group);
    /// puts every write into `batch`. The caller stages the batch and applies a whole group
    /// of entries to the store atomically, together with the new applied index: `state` is
    /// for this call only and must not be kept. Must be deterministic. Keys starting with
    /// byte 0x00 are reserved.
    fn apply(&self, state: &Tree, batch: &mut Batch, command: &C::D) -> Result<C::R, StoreError>;
}
