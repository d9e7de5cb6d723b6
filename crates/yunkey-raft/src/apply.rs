//! The application's state machine seam.

use openraft::RaftTypeConfig;
use yunkey_store::{Batch, StoreError, Tree};

/// The application's deterministic state machine.
///
/// [`crate::StateMachineStore`] calls it once per committed normal entry, in log order.
pub trait Apply<C: RaftTypeConfig>: Send + Sync + 'static {
    /// Applies one command. Reads the state as of before this entry from `state`;
    /// puts every write into `batch`, which the caller applies atomically together with the
    /// new applied index. Must be deterministic. Keys starting with byte 0x00 are reserved.
    fn apply(&self, state: &Tree, batch: &mut Batch, command: &C::D) -> Result<C::R, StoreError>;
}
