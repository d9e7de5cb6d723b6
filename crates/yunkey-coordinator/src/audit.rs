//! Reading the replicated audit trail: a user's lines (`KeyService.GetUserAudit`), with the
//! risk checks' decision ids of every signature and refusal.

use crate::core::Core;
use crate::error::Result;
use yunkey_crypto::validate::{self, InvalidField};
use yunkey_proto::v1 as pb;

/// Lines returned when the request does not say.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most lines one request returns.
pub const MAX_LIMIT: u32 = 1000;

/// The newest lines of a user's audit trail, oldest first (linearizable).
pub async fn user_audit(
    core: &Core,
    req: pb::GetUserAuditRequest,
) -> Result<pb::GetUserAuditResponse> {
    validate::identifier("user_id", &req.user_id)?;
    let limit = match req.limit {
        0 => DEFAULT_LIMIT,
        n if n <= MAX_LIMIT => n,
        n => {
            return Err(InvalidField::new(
                "limit",
                format!("is {n}; ask for at most {MAX_LIMIT} lines (0 means {DEFAULT_LIMIT})"),
            )
            .into())
        }
    };
    core.raft.ensure_linearizable().await?;
    // A user who was never enrolled has no lines; one who was keeps them after revocation.
    let entries = core
        .view
        .user_audit(&req.user_id, limit as usize)?
        .into_iter()
        .map(|r| pb::AuditEntry {
            seq: r.seq,
            at: r.at,
            actor: r.actor,
            action: r.action,
            outcome: r.outcome,
            tx_hash: r.tx_hash.map(|h| h.to_vec()).unwrap_or_default(),
            risk: r.risk.as_ref().map(crate::risk::to_wire),
        })
        .collect();
    Ok(pb::GetUserAuditResponse { entries })
}
