//! Validated rules: [`Rules::parse`] reads a rules file (TOML, see
//! `deploy/risk/rules.example.toml`) and checks every value, so that the engine never meets a
//! rule it cannot apply. A refusal names the field and what is wrong.

use crate::amount::Amount;
pub use crate::rules_file::{Action, Period};
use crate::rules_file::{
    RawAmountLimit, RawFile, RawImpossibleTravel, RawNewDevice, RawPayeeBlock, RawUnusualHours,
    RawVelocity,
};
use std::collections::{BTreeSet, HashSet};
use std::path::Path;

/// The rules-file format this build reads (`format = 1`).
pub const FORMAT: u32 = 1;
/// How long a decision is valid when `[general] decision_validity_seconds` is not set.
pub const DEFAULT_DECISION_VALIDITY_SECS: i64 = 60;
/// Face match threshold when `[face] threshold` is not set (the reference recogniser's).
pub const DEFAULT_FACE_THRESHOLD: f64 = 0.6;
/// Longest velocity window, in seconds (7 days).
pub const MAX_WINDOW_SECS: u32 = 7 * 86_400;
/// Largest velocity `max` (per-user timestamps kept are bounded by it).
pub const MAX_VELOCITY: u32 = 10_000;
/// Timezone offsets accepted, in minutes (UTC-14:00 to UTC+14:00).
const MAX_OFFSET_MINUTES: i32 = 14 * 60;

/// Why a rules file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RulesError {
    /// The file could not be read.
    #[error("cannot read rules file {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// The IO error.
        error: std::io::Error,
    },
    /// Not TOML, or a key that is unknown, missing or of the wrong type (the message has the
    /// line and column).
    #[error("rules file is not valid: {0}")]
    Syntax(String),
    /// A value that is out of range or inconsistent.
    #[error("rules file is not valid: {field}: {reason}")]
    Invalid {
        /// Where: `velocity[1] ("velocity.minute").max`.
        field: String,
        /// What is wrong and what is expected.
        reason: String,
    },
}

/// What every rule has.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleMeta {
    /// Its name, shown in `FiredRule.rule`.
    pub name: String,
    /// What it asks for.
    pub action: Action,
    /// What it adds to the score (0 to 100) when it fires.
    pub weight: u32,
}

/// A limit on one transaction's amount or on the day's total, in one currency.
#[derive(Debug, Clone, PartialEq)]
pub struct AmountLimit {
    /// Name, action and weight.
    pub meta: RuleMeta,
    /// ISO 4217 code.
    pub currency: String,
    /// What is compared.
    pub period: Period,
    /// Fires when the amount is strictly above this.
    pub above: Amount,
}

/// At most `max` counted transactions in any `window_secs`, per user.
#[derive(Debug, Clone, PartialEq)]
pub struct Velocity {
    /// Name, action and weight.
    pub meta: RuleMeta,
    /// Transactions allowed in the window.
    pub max: u32,
    /// The sliding window, in seconds.
    pub window_secs: u32,
}

/// A device registered less than `younger_than_secs` ago.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDevice {
    /// Name, action and weight.
    pub meta: RuleMeta,
    /// Age below which a device is new.
    pub younger_than_secs: u32,
}

/// Local time of day (after the timezone offset) in `[from, to)`, minutes after midnight;
/// wraps midnight when `from > to`.
#[derive(Debug, Clone, PartialEq)]
pub struct UnusualHours {
    /// Name, action and weight.
    pub meta: RuleMeta,
    /// Start of the window, minutes after local midnight.
    pub from_minute: u32,
    /// End of the window (excluded).
    pub to_minute: u32,
}

/// The speed implied by the previous geolocated transaction and this one.
#[derive(Debug, Clone, PartialEq)]
pub struct ImpossibleTravel {
    /// Name, action and weight.
    pub meta: RuleMeta,
    /// Fires above this speed.
    pub above_km_per_hour: f64,
    /// Distances up to this never fire (location noise).
    pub min_distance_km: f64,
}

/// Payees that are refused (compared case-insensitively).
#[derive(Debug, Clone, PartialEq)]
pub struct PayeeBlock {
    /// Name, action and weight.
    pub meta: RuleMeta,
    /// Lower-cased payees.
    pub payees: HashSet<String>,
}

/// A checked rules file.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// The rules' version: the first 16 hex digits of the file's SHA-256.
    pub version: String,
    /// Local time = UTC + this; days for daily totals and hours for `unusual_hours` are local.
    pub timezone_offset_minutes: i32,
    /// How long a decision or an authentication result is valid, in seconds.
    pub decision_validity_secs: i64,
    /// Face match threshold: a probe matches when its distance is at or below it.
    pub face_threshold: f64,
    /// `[[amount_limit]]`.
    pub amount_limits: Vec<AmountLimit>,
    /// `[[velocity]]`.
    pub velocity: Vec<Velocity>,
    /// `[[new_device]]`.
    pub new_device: Vec<NewDevice>,
    /// `[[unusual_hours]]`.
    pub unusual_hours: Vec<UnusualHours>,
    /// `[[impossible_travel]]`.
    pub impossible_travel: Vec<ImpossibleTravel>,
    /// `[[payee_block]]`.
    pub payee_block: Vec<PayeeBlock>,
}

impl Rules {
    /// Reads and checks the rules file at `path`.
    pub fn load(path: &Path) -> Result<Self, RulesError> {
        let bytes = std::fs::read(path).map_err(|error| RulesError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Self::parse_bytes(&bytes)
    }

    /// Checks rules-file bytes (UTF-8 TOML).
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, RulesError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| RulesError::Syntax(format!("the file is not UTF-8: {e}")))?;
        Self::parse(text)
    }

    /// Checks rules-file text.
    pub fn parse(text: &str) -> Result<Self, RulesError> {
        let raw: RawFile = toml::from_str(text)
            .map_err(|e| RulesError::Syntax(e.to_string().trim().to_owned()))?;
        let version = hex::encode(&yunkey_crypto::sha256(text.as_bytes())[..8]);
        Checker::default().check(raw, version)
    }

    /// Every rule's name, action and weight, in file order by kind.
    pub fn all(&self) -> impl Iterator<Item = &RuleMeta> {
        self.amount_limits
            .iter()
            .map(|r| &r.meta)
            .chain(self.velocity.iter().map(|r| &r.meta))
            .chain(self.new_device.iter().map(|r| &r.meta))
            .chain(self.unusual_hours.iter().map(|r| &r.meta))
            .chain(self.impossible_travel.iter().map(|r| &r.meta))
            .chain(self.payee_block.iter().map(|r| &r.meta))
    }

    /// The longest velocity window (how long velocity timestamps are kept), at least an hour
    /// so that a rule added later sees recent history.
    pub fn longest_window_secs(&self) -> i64 {
        self.velocity
            .iter()
            .map(|v| i64::from(v.window_secs))
            .max()
            .unwrap_or(0)
            .max(3600)
    }

    /// The day number (days since 1970-01-01, local) of Unix time `t`.
    pub fn local_day(&self, t: i64) -> i64 {
        (t + i64::from(self.timezone_offset_minutes) * 60).div_euclid(86_400)
    }

    /// Minutes after local midnight of Unix time `t`.
    pub fn local_minute(&self, t: i64) -> u32 {
        ((t + i64::from(self.timezone_offset_minutes) * 60).rem_euclid(86_400) / 60) as u32
    }
}

#[derive(Default)]
struct Checker {
    names: BTreeSet<String>,
}

type Check<T> = Result<T, RulesError>;

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> RulesError {
    RulesError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

impl Checker {
    fn check(mut self, raw: RawFile, version: String) -> Check<Rules> {
        if raw.format != FORMAT {
            return Err(invalid(
                "format",
                format!(
                    "is {}; this yunkey reads rules files of format {FORMAT}",
                    raw.format
                ),
            ));
        }
        let offset = raw.general.timezone_offset_minutes;
        if offset.abs() > MAX_OFFSET_MINUTES {
            return Err(invalid(
                "general.timezone_offset_minutes",
                format!("is {offset}; expected -{MAX_OFFSET_MINUTES} to {MAX_OFFSET_MINUTES} (UTC-14:00 to UTC+14:00)"),
            ));
        }
        let validity = raw.general.decision_validity_seconds;
        if !(1..=3600).contains(&validity) {
            return Err(invalid(
                "general.decision_validity_seconds",
                format!("is {validity}; expected 1 to 3600"),
            ));
        }
        let threshold = raw.face.threshold;
        if !(threshold.is_finite() && threshold > 0.0) {
            return Err(invalid(
                "face.threshold",
                format!("is {threshold}; expected a positive distance such as 0.6"),
            ));
        }
        let amount_limits = enumerate(raw.amount_limit, "amount_limit", |at, r| {
            self.amount_limit(at, r)
        })?;
        let velocity = enumerate(raw.velocity, "velocity", |at, r| self.velocity(at, r))?;
        let new_device = enumerate(raw.new_device, "new_device", |at, r| self.new_device(at, r))?;
        let unusual_hours = enumerate(raw.unusual_hours, "unusual_hours", |at, r| {
            self.hours(at, r)
        })?;
        let impossible_travel = enumerate(raw.impossible_travel, "impossible_travel", |at, r| {
            self.travel(at, r)
        })?;
        let payee_block = enumerate(raw.payee_block, "payee_block", |at, r| self.payees(at, r))?;
        Ok(Rules {
            version,
            timezone_offset_minutes: offset,
            decision_validity_secs: i64::from(validity),
            face_threshold: threshold,
            amount_limits,
            velocity,
            new_device,
            unusual_hours,
            impossible_travel,
            payee_block,
        })
    }

    fn meta(&mut self, at: &str, name: String, action: Action, weight: u32) -> Check<RuleMeta> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if name.is_empty() || name.len() > 64 || !name.chars().all(ok_char) {
            return Err(invalid(
                format!("{at}.name"),
                format!("{name:?} is not 1 to 64 characters of A-Z a-z 0-9 . _ -"),
            ));
        }
        if !self.names.insert(name.clone()) {
            return Err(invalid(
                format!("{at}.name"),
                format!("{name:?} is used by another rule; rule names must be unique"),
            ));
        }
        if weight > 100 {
            return Err(invalid(
                format!("{at} ({name:?}).weight"),
                format!("is {weight}; expected 0 to 100"),
            ));
        }
        Ok(RuleMeta {
            name,
            action,
            weight,
        })
    }

    fn amount_limit(&mut self, at: &str, r: RawAmountLimit) -> Check<AmountLimit> {
        let meta = self.meta(at, r.name, r.action, r.weight)?;
        if !(r.currency.len() == 3 && r.currency.bytes().all(|b| b.is_ascii_uppercase())) {
            return Err(invalid(
                format!("{at} ({:?}).currency", meta.name),
                format!(
                    "{:?} is not 3 upper-case letters (for example \"EUR\")",
                    r.currency
                ),
            ));
        }
        Ok(AmountLimit {
            meta,
            currency: r.currency,
            period: r.period,
            above: r.above,
        })
    }

    fn velocity(&mut self, at: &str, r: RawVelocity) -> Check<Velocity> {
        let meta = self.meta(at, r.name, r.action, r.weight)?;
        let field = |f: &str| format!("{at} ({:?}).{f}", meta.name);
        if !(1..=MAX_VELOCITY).contains(&r.max) {
            return Err(invalid(
                field("max"),
                format!("is {}; expected 1 to {MAX_VELOCITY} transactions", r.max),
            ));
        }
        if !(1..=MAX_WINDOW_SECS).contains(&r.window_seconds) {
            return Err(invalid(
                field("window_seconds"),
                format!(
                    "is {}; expected 1 to {MAX_WINDOW_SECS} (7 days)",
                    r.window_seconds
                ),
            ));
        }
        Ok(Velocity {
            meta,
            max: r.max,
            window_secs: r.window_seconds,
        })
    }

    fn new_device(&mut self, at: &str, r: RawNewDevice) -> Check<NewDevice> {
        let meta = self.meta(at, r.name, r.action, r.weight)?;
        if r.younger_than_seconds == 0 {
            return Err(invalid(
                format!("{at} ({:?}).younger_than_seconds", meta.name),
                "is 0; expected a positive age in seconds, for example 86400 (a day)",
            ));
        }
        Ok(NewDevice {
            meta,
            younger_than_secs: r.younger_than_seconds,
        })
    }

    fn hours(&mut self, at: &str, r: RawUnusualHours) -> Check<UnusualHours> {
        let meta = self.meta(at, r.name, r.action, r.weight)?;
        let field = |f: &str| format!("{at} ({:?}).{f}", meta.name);
        let from_minute = clock_minute(&r.from).map_err(|e| invalid(field("from"), e))?;
        let to_minute = clock_minute(&r.to).map_err(|e| invalid(field("to"), e))?;
        if from_minute == to_minute {
            return Err(invalid(
                field("to"),
                "equals `from`: the window would be empty (or the whole day)",
            ));
        }
        Ok(UnusualHours {
            meta,
            from_minute,
            to_minute,
        })
    }

    fn travel(&mut self, at: &str, r: RawImpossibleTravel) -> Check<ImpossibleTravel> {
        let meta = self.meta(at, r.name, r.action, r.weight)?;
        let field = |f: &str| format!("{at} ({:?}).{f}", meta.name);
        if !(r.above_km_per_hour.is_finite() && r.above_km_per_hour > 0.0) {
            return Err(invalid(
                field("above_km_per_hour"),
                format!(
                    "is {}; expected a positive speed such as 900",
                    r.above_km_per_hour
                ),
            ));
        }
        if !(r.min_distance_km.is_finite() && r.min_distance_km >= 0.0) {
            return Err(invalid(
                field("min_distance_km"),
                format!("is {}; expected 0 or more kilometres", r.min_distance_km),
            ));
        }
        Ok(ImpossibleTravel {
            meta,
            above_km_per_hour: r.above_km_per_hour,
            min_distance_km: r.min_distance_km,
        })
    }

    fn payees(&mut self, at: &str, r: RawPayeeBlock) -> Check<PayeeBlock> {
        let meta = self.meta(at, r.name, r.action, r.weight)?;
        let mut payees = HashSet::new();
        for (i, p) in r.payees.iter().enumerate() {
            let field = || format!("{at} ({:?}).payees[{i}]", meta.name);
            if p.is_empty() || p.chars().any(char::is_control) {
                return Err(invalid(field(), "is empty or has control characters"));
            }
            if !payees.insert(p.to_lowercase()) {
                return Err(invalid(
                    field(),
                    format!("{p:?} is listed twice (payees are compared ignoring case)"),
                ));
            }
        }
        if payees.is_empty() {
            return Err(invalid(
                format!("{at} ({:?}).payees", meta.name),
                "is empty; list at least one payee, or remove the rule",
            ));
        }
        Ok(PayeeBlock { meta, payees })
    }
}

/// Checks each raw rule with `f`, passing it its position (`velocity[1]`).
fn enumerate<R, T>(
    raw: Vec<R>,
    kind: &str,
    mut f: impl FnMut(&str, R) -> Check<T>,
) -> Check<Vec<T>> {
    raw.into_iter()
        .enumerate()
        .map(|(i, r)| f(&format!("{kind}[{i}]"), r))
        .collect()
}

/// `"HH:MM"` (00:00 to 24:00) as minutes after midnight (24:00 is 0 of the next day).
fn clock_minute(text: &str) -> Result<u32, String> {
    let bad = || format!("{text:?} is not a time of day HH:MM (00:00 to 24:00)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    match (h, m) {
        (24, 0) => Ok(0),
        (0..=23, 0..=59) => Ok(h * 60 + m),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = include_str!("../../../deploy/risk/rules.example.toml");

    fn err(text: &str) -> String {
        Rules::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_example_file_is_valid() {
        let rules = Rules::parse(EXAMPLE).unwrap();
        assert!(rules.all().count() >= 8);
        assert_eq!(rules.version.len(), 16);
    }

    #[test]
    fn defaults_apply_to_a_minimal_file() {
        let rules = Rules::parse("format = 1").unwrap();
        assert_eq!(rules.decision_validity_secs, 60);
        assert_eq!(rules.face_threshold, 0.6);
        assert_eq!(rules.timezone_offset_minutes, 0);
        assert_eq!(rules.all().count(), 0);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let e = err("format = 1\n[general]\ntimezone = 60\n");
        assert!(e.contains("unknown field `timezone`"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        let e = err("format = 1\n[[velocity]]\nname = \"v\"\naction = \"deny\"\nweight = 1\nmax = 1\nwindow_seconds = 60\nwindow = 3\n");
        assert!(e.contains("unknown field `window`"), "{e}");
        let e = err("format = 1\n[[speeding]]\nname = \"v\"\n");
        assert!(e.contains("unknown field `speeding`"), "{e}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let rule = |body: &str| {
            format!("format = 1\n[[amount_limit]]\nname = \"a\"\naction = \"deny\"\nweight = 10\ncurrency = \"EUR\"\nperiod = \"transaction\"\n{body}\n")
        };
        let e = err(&rule("above = 1000.5"));
        assert!(e.contains("float") && e.contains("\"1000.5\""), "{e}");
        let e = err(&rule("above = \"ten\""));
        assert!(e.contains("not a decimal amount"), "{e}");
        assert!(Rules::parse(&rule("above = \"1000.50\"")).is_ok());
        let e = err(&rule("above = 5").replace("\"EUR\"", "\"eur\""));
        assert!(e.contains("amount_limit[0] (\"a\").currency"), "{e}");
        let e = err(&rule("above = 5").replace("weight = 10", "weight = 101"));
        assert!(e.contains("amount_limit[0] (\"a\").weight: is 101"), "{e}");
        let e = err(&rule("above = 5").replace("\"deny\"", "\"block\""));
        assert!(e.contains("unknown variant `block`"), "{e}");
        let e = err(&rule("above = 5").replace("\"transaction\"", "\"week\""));
        assert!(e.contains("unknown variant `week`"), "{e}");
        let e = err(&rule(""));
        assert!(e.contains("missing field `above`"), "{e}");
        let e = err("format = 2");
        assert!(e.contains("format: is 2"), "{e}");
        let e = err("format = 1\n[general]\ntimezone_offset_minutes = 900");
        assert!(e.contains("general.timezone_offset_minutes"), "{e}");
        let e = err("format = 1\n[face]\nthreshold = -1.0");
        assert!(e.contains("face.threshold"), "{e}");
        let e = err("format = 1\n[[unusual_hours]]\nname = \"h\"\naction = \"step_up\"\nweight = 1\nfrom = \"25:00\"\nto = \"06:00\"");
        assert!(e.contains("unusual_hours[0] (\"h\").from"), "{e}");
        let e = err("format = 1\n[[payee_block]]\nname = \"p\"\naction = \"deny\"\nweight = 1\npayees = [\"Mule\", \"mule\"]");
        assert!(e.contains("payees[1]") && e.contains("twice"), "{e}");
        let e = err("format = 1\n[[velocity]]\nname = \"v\"\naction = \"deny\"\nweight = 1\nmax = 0\nwindow_seconds = 60");
        assert!(e.contains("velocity[0] (\"v\").max: is 0"), "{e}");
        let e = err("format = 1\n[[new_device]]\nname = \"d\"\naction = \"deny\"\nweight = 1\nyounger_than_seconds = 60\n[[new_device]]\nname = \"d\"\naction = \"deny\"\nweight = 1\nyounger_than_seconds = 60");
        assert!(
            e.contains("new_device[1].name") && e.contains("unique"),
            "{e}"
        );
        let e = err("format = 1\n[[impossible_travel]]\nname = \"t\"\naction = \"deny\"\nweight = 1\nabove_km_per_hour = nan");
        assert!(e.contains("above_km_per_hour"), "{e}");
        let e = err("format = [");
        assert!(e.contains("rules file is not valid"), "{e}");
    }

    #[test]
    fn local_days_and_minutes_follow_the_offset() {
        let mut rules = Rules::parse("format = 1").unwrap();
        let midnight = 19_000 * 86_400;
        assert_eq!(rules.local_day(midnight - 1), 18_999);
        assert_eq!(rules.local_day(midnight), 19_000);
        assert_eq!(rules.local_minute(midnight + 90 * 60), 90);
        rules.timezone_offset_minutes = 120;
        assert_eq!(rules.local_day(midnight - 2 * 3600), 19_000);
        assert_eq!(rules.local_minute(midnight), 120);
        rules.timezone_offset_minutes = -60;
        assert_eq!(rules.local_day(midnight + 59 * 60), 18_999);
        assert_eq!(rules.local_minute(midnight), 23 * 60);
    }

    #[test]
    fn clock_times_parse() {
        assert_eq!(clock_minute("00:00"), Ok(0));
        assert_eq!(clock_minute("06:30"), Ok(390));
        assert_eq!(clock_minute("24:00"), Ok(0));
        assert!(clock_minute("6:30").is_err());
        assert!(clock_minute("24:01").is_err());
        assert!(clock_minute("12:60").is_err());
    }
}
