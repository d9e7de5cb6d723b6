//! The replicated state: what it holds, the commands that change it, and how they apply.
//!
//! Every change goes through a [`Command`] committed by Raft and applied by [`App`]
//! deterministically on every node; reads go through [`StateView`]. The state lives in one
//! tree of the store (see `keys` for the layout), so one entry's writes and the applied index
//! land in one atomic batch.

mod apply;
mod apply_batch;
mod apply_devices;
mod apply_fleet;
mod apply_prune;
mod apply_release;
mod apply_sign;
mod codec;
mod command;
mod keys;
mod model;
mod model_ref;
mod model_release;
mod model_risk;
mod view;

pub use apply::App;
pub use apply_prune::{Sweep, PRUNE_BATCH};
pub use command::{
    fingerprint, Command, CommandResult, Op, PriorRequest, Rejection, COMMAND_FORMAT,
    COMMAND_FORMAT_BATCH, COMMAND_FORMAT_PRUNE,
};
pub use model::{
    Activation, AuditRecord, CaRecord, ChipRecord, DeviceRecord, HolderRecord, KeyOwner,
    LedgerEntry, NodeIdRecord, Rebinding, UserRecord, UserState,
};
pub use model_ref::{DeviceRef, HolderRef, UserRef};
pub use model_release::{CodeSigningRecord, ReleasePolicy, ReleaseRecord};
pub use model_risk::{FiredRule, RiskCheck, UserAuditRecord, UserEvent, Verdict};
pub use view::StateView;
