//! Shared test type config and state machine.
#![allow(dead_code)]

use serde::{Deserialize, Serialize};
use yunkey_raft::Apply;
use yunkey_store::{Batch, StoreError, Tree};

/// Sets `key` to `value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set {
    pub key: String,
    pub value: String,
}

/// The previous value of the key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prev(pub Option<String>);

openraft::declare_raft_types!(
    /// Test type config.
    pub Tc: D = Set, R = Prev, SnapshotData = yunkey_raft::SnapshotFile
);

/// Key-value state machine: one `sm` key per `Set`.
pub struct Kv;

impl Apply<Tc> for Kv {
    fn apply(&self, state: &Tree, batch: &mut Batch, cmd: &Set) -> Result<Prev, StoreError> {
        let prev = state
            .get(cmd.key.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        batch.insert(cmd.key.as_bytes(), cmd.value.as_bytes());
        Ok(Prev(prev))
    }
}

pub fn set(key: &str, value: &str) -> Set {
    Set {
        key: key.into(),
        value: value.into(),
    }
}
