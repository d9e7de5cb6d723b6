//! Between the risk service's messages and the stored [`RiskCheck`] records.

use crate::state::{FiredRule, RiskCheck, Verdict};
use yunkey_proto::v1 as pb;

pub(super) fn verdict(wire: i32) -> Verdict {
    match pb::RiskVerdict::try_from(wire) {
        Ok(pb::RiskVerdict::Allow) => Verdict::Allow,
        Ok(pb::RiskVerdict::StepUp) => Verdict::StepUp,
        // Unset or unknown: the safe reading.
        _ => Verdict::Deny,
    }
}

pub(super) fn verdict_to_wire(v: Verdict) -> pb::RiskVerdict {
    match v {
        Verdict::Allow => pb::RiskVerdict::Allow,
        Verdict::StepUp => pb::RiskVerdict::StepUp,
        Verdict::Deny => pb::RiskVerdict::Deny,
    }
}

/// At most this many rules, and this many bytes of each field, are kept from a decision.
const MAX_RULES: usize = 32;
const MAX_FIELD: usize = 256;

fn clip(s: &str) -> String {
    if s.len() <= MAX_FIELD {
        return s.to_owned();
    }
    let mut end = MAX_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

pub(super) fn fired(rules: &[pb::FiredRule]) -> Vec<FiredRule> {
    rules
        .iter()
        .take(MAX_RULES)
        .map(|r| FiredRule {
            rule: clip(&r.rule),
            detail: clip(&r.detail),
            verdict: verdict(r.verdict),
        })
        .collect()
}

/// The wire form of a stored check (the audit API).
pub fn to_wire(r: &RiskCheck) -> pb::RiskRecord {
    pb::RiskRecord {
        assessment_ids: r.assessment_ids.clone(),
        authentication_id: r.authentication_id.clone(),
        authentication_matched: r.authentication_matched,
        verdict: r
            .verdict
            .map(verdict_to_wire)
            .unwrap_or(pb::RiskVerdict::Unspecified) as i32,
        reasons: r
            .reasons
            .iter()
            .map(|x| pb::FiredRule {
                rule: x.rule.clone(),
                detail: x.detail.clone(),
                verdict: verdict_to_wire(x.verdict) as i32,
            })
            .collect(),
        failed_open: r.failed_open,
        failure: r.failure.clone(),
    }
}

/// "rule: detail; rule: detail" for messages.
pub(super) fn reasons_text(rules: &[FiredRule]) -> String {
    if rules.is_empty() {
        return "no rule named".to_owned();
    }
    rules
        .iter()
        .map(|r| format!("{}: {}", r.rule, r.detail))
        .collect::<Vec<_>>()
        .join("; ")
}
