//! The rules file as written: TOML tables read with serde, every table refusing keys it does
//! not know. [`crate::rules`] checks the values and turns this into [`crate::Rules`].
//! `deploy/risk/rules.example.toml` documents every key.

use crate::amount::Amount;
use serde::Deserialize;

/// What a rule asks for when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The user must authenticate (face) before the transaction is signed.
    StepUp,
    /// The transaction is refused.
    Deny,
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    pub format: u32,
    #[serde(default)]
    pub general: RawGeneral,
    #[serde(default)]
    pub face: RawFace,
    #[serde(default)]
    pub amount_limit: Vec<RawAmountLimit>,
    #[serde(default)]
    pub velocity: Vec<RawVelocity>,
    #[serde(default)]
    pub new_device: Vec<RawNewDevice>,
    #[serde(default)]
    pub unusual_hours: Vec<RawUnusualHours>,
    #[serde(default)]
    pub impossible_travel: Vec<RawImpossibleTravel>,
    #[serde(default)]
    pub payee_block: Vec<RawPayeeBlock>,
}

/// `[general]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGeneral {
    #[serde(default)]
    pub timezone_offset_minutes: i32,
    #[serde(default = "default_validity")]
    pub decision_validity_seconds: u32,
}

impl Default for RawGeneral {
    fn default() -> Self {
        Self {
            timezone_offset_minutes: 0,
            decision_validity_seconds: default_validity(),
        }
    }
}

fn default_validity() -> u32 {
    crate::rules::DEFAULT_DECISION_VALIDITY_SECS as u32
}

/// `[face]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFace {
    #[serde(default = "default_threshold")]
    pub threshold: f64,
}

impl Default for RawFace {
    fn default() -> Self {
        Self {
            threshold: default_threshold(),
        }
    }
}

fn default_threshold() -> f64 {
    crate::rules::DEFAULT_FACE_THRESHOLD
}

/// Which amount an amount limit compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// This transaction's amount.
    Transaction,
    /// The day's total of counted transactions in the currency, this one included.
    Day,
}

/// `[[amount_limit]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAmountLimit {
    pub name: String,
    pub action: Action,
    pub weight: u32,
    pub currency: String,
    pub period: Period,
    pub above: Amount,
}

/// `[[velocity]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVelocity {
    pub name: String,
    pub action: Action,
    pub weight: u32,
    pub max: u32,
    pub window_seconds: u32,
}

/// `[[new_device]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNewDevice {
    pub name: String,
    pub action: Action,
    pub weight: u32,
    pub younger_than_seconds: u32,
}

/// `[[unusual_hours]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUnusualHours {
    pub name: String,
    pub action: Action,
    pub weight: u32,
    pub from: String,
    pub to: String,
}

/// `[[impossible_travel]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawImpossibleTravel {
    pub name: String,
    pub action: Action,
    pub weight: u32,
    pub above_km_per_hour: f64,
    #[serde(default)]
    pub min_distance_km: f64,
}

/// `[[payee_block]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPayeeBlock {
    pub name: String,
    pub action: Action,
    pub weight: u32,
    pub payees: Vec<String>,
}
