//! `yunkey user audit`, `face-enroll`, `face-delete`: a user's audit trail with the risk
//! checks' decisions, and their face template at the risk service (docs/risk.md).

use crate::cli::Global;
use crate::output::print;
use anyhow::Context;
use serde_json::json;
use std::path::Path;
use yunkey_client::Connection;
use yunkey_proto::v1::{
    AuditEntry, DeleteFaceRequest, EnrollFaceRequest, GetUserAuditRequest, RiskRecord, RiskVerdict,
};

fn verdict_name(v: i32) -> &'static str {
    match RiskVerdict::try_from(v) {
        Ok(RiskVerdict::Allow) => "ALLOW",
        Ok(RiskVerdict::StepUp) => "STEP_UP",
        Ok(RiskVerdict::Deny) => "DENY",
        _ => "-",
    }
}

fn risk_json(r: &RiskRecord) -> serde_json::Value {
    json!({
        "assessment_ids": r.assessment_ids,
        "authentication_id": (!r.authentication_id.is_empty()).then_some(&r.authentication_id),
        "authentication_matched": (!r.authentication_id.is_empty()).then_some(r.authentication_matched),
        "verdict": verdict_name(r.verdict),
        "reasons": r.reasons.iter().map(|x| json!({
            "rule": x.rule, "detail": x.detail, "verdict": verdict_name(x.verdict),
        })).collect::<Vec<_>>(),
        "failed_open": r.failed_open,
        "failure": (!r.failure.is_empty()).then_some(&r.failure),
    })
}

fn entry_json(e: &AuditEntry) -> serde_json::Value {
    json!({
        "seq": e.seq, "at": e.at, "actor": e.actor, "action": e.action, "outcome": e.outcome,
        "tx_hash": (!e.tx_hash.is_empty()).then(|| hex::encode(&e.tx_hash)),
        "risk": e.risk.as_ref().map(risk_json),
    })
}

/// One line per entry; the risk checks indented below their entry.
fn entry_text(e: &AuditEntry) -> String {
    let mut line = format!(
        "{:>8}  {}  {:<16} {:<24} {}",
        e.seq, e.at, e.action, e.actor, e.outcome
    );
    if !e.tx_hash.is_empty() {
        line.push_str(&format!("\n          tx {}", hex::encode(&e.tx_hash)));
    }
    match &e.risk {
        Some(r) => {
            line.push_str(&format!(
                "\n          risk {} {}",
                verdict_name(r.verdict),
                r.assessment_ids.join(", ")
            ));
            for x in &r.reasons {
                line.push_str(&format!("\n            {}: {}", x.rule, x.detail));
            }
            if !r.authentication_id.is_empty() {
                line.push_str(&format!(
                    "\n          face {} {}",
                    if r.authentication_matched {
                        "matched"
                    } else {
                        "did not match"
                    },
                    r.authentication_id
                ));
            }
            if r.failed_open {
                line.push_str(&format!("\n          FAILED OPEN: {}", r.failure));
            } else if !r.failure.is_empty() {
                line.push_str(&format!("\n          no answer: {}", r.failure));
            }
        }
        None if e.action == "sign" => line.push_str("\n          risk: no risk service"),
        None => {}
    }
    line
}

/// `yunkey user audit ID`.
pub async fn audit(g: &Global, conn: &Connection, user_id: &str, limit: u32) -> anyhow::Result<()> {
    let req = GetUserAuditRequest {
        user_id: user_id.to_owned(),
        limit,
    };
    let resp = conn
        .call(|ch| {
            let req = req.clone();
            async move { yunkey_client::key_client(ch).get_user_audit(req).await }
        })
        .await?;
    print(
        g.json,
        json!({ "user_id": user_id, "entries": resp.entries.iter().map(entry_json).collect::<Vec<_>>() }),
        || {
            if resp.entries.is_empty() {
                return format!("no audit lines for {user_id}");
            }
            let mut out = format!(
                "{:>8}  {:<10}  {:<16} {:<24} {}",
                "SEQ", "AT (UNIX)", "ACTION", "ACTOR", "OUTCOME"
            );
            for e in &resp.entries {
                out.push('\n');
                out.push_str(&entry_text(e));
            }
            out
        },
    );
    Ok(())
}

/// `yunkey user face-enroll ID PHOTO`.
pub async fn face_enroll(
    g: &Global,
    conn: &Connection,
    user_id: &str,
    photo: &Path,
) -> anyhow::Result<()> {
    let face_image =
        std::fs::read(photo).with_context(|| format!("reading the photo {}", photo.display()))?;
    let req = EnrollFaceRequest {
        user_id: user_id.to_owned(),
        face_image,
    };
    let resp = conn
        .call(|ch| {
            let req = req.clone();
            async move { yunkey_client::key_client(ch).enroll_face(req).await }
        })
        .await?;
    print(
        g.json,
        json!({ "user_id": user_id, "enrolled_at": resp.enrolled_at }),
        || format!("face template stored for {user_id} (the photo was not kept)"),
    );
    Ok(())
}

/// `yunkey user face-delete ID`.
pub async fn face_delete(g: &Global, conn: &Connection, user_id: &str) -> anyhow::Result<()> {
    let req = DeleteFaceRequest {
        user_id: user_id.to_owned(),
    };
    let resp = conn
        .call(|ch| {
            let req = req.clone();
            async move { yunkey_client::key_client(ch).delete_face(req).await }
        })
        .await?;
    print(
        g.json,
        json!({ "user_id": user_id, "deleted": resp.deleted }),
        || {
            if resp.deleted {
                format!("face template of {user_id} deleted")
            } else {
                format!("{user_id} had no face template")
            }
        },
    );
    Ok(())
}
