//! The application's state machine seam.

use openraft::RaftTypeConfig;
use yunkey_store::{Batch, StoreError, Tree};

/// The application's deterministic state machine.
///
/// [`crate::StateMachineStore`] calls it once per committed normal entry, in log order.
pub trait Apply<C: RaftTypeConfig>: Send + Sync + 'static {
    /// Applies one command. Reads the state as of before this entry from `state` (every
    /// entry before this one applied); puts every write into `batch`, which the caller
    /// applies to the state atomically, together with the new applied index. `state` is for
    /// this call only and must not be kept. Must be deterministic. Keys starting with byte
    /// 0x00 are reserved.
    fn apply(&self, state: &Tree, batch: &mut Batch, command: &C::D) -> Result<C::R, StoreError>;
}
