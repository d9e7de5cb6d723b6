//! Activation codes after enrolment: checking a presented code in Raft (and burning the
//! pending code after too many wrong ones), and issuing a new code (re-activation).
//!
//! A code is shown once and stored nowhere: the user record and the chips' binding keep its
//! SHA-256 only. A new code opens the next activation epoch in the key's binding (decided by a
//! chip, `ChipService.SetActivation`), which supersedes the old code on every holder.

use crate::core::Core;
use crate::error::{CoordError, Result};
use crate::state::{CommandResult, Op, UserRecord, UserState};
use yunkey_crypto::validate;
use yunkey_proto::v1::{ReactivateUserRequest, ReactivateUserResponse, SetActivationRequest};

/// Checks `code_sha256` against `user`'s pending code through Raft. A wrong code is counted;
/// at the limit (`--activation-attempts`) the pending code is burnt (logged and audited).
/// Answers [`CoordError::ActivationInvalid`] for a wrong, used, burnt or expired code alike.
pub async fn attempt(core: &Core, user: &UserRecord, code_sha256: &[u8; 32]) -> Result<()> {
    match &user.activation {
        // Nothing pending here: refuse without a write (a newer code may be on its way to
        // this node, but a device retries).
        None => return Err(CoordError::ActivationInvalid),
        Some(a) if a.expires_at <= crate::clock::now() => {
            return Err(CoordError::ActivationInvalid)
        }
        Some(_) => {}
    }
    let result = core
        .propose(
            "",
            &format!("device-for:{}", user.user_id),
            Op::ActivationAttempt {
                user_id: user.user_id.clone(),
                code_sha256: *code_sha256,
                limit: core.config.activation_attempts,
            },
        )
        .await?;
    match result {
        CommandResult::ActivationAccepted => Ok(()),
        CommandResult::ActivationFailureCounted { failures, burnt } => {
            if burnt {
                tracing::warn!(
                    target: "yunkey::audit",
                    user = %user.user_id,
                    failures,
                    "activation code burnt after too many wrong codes; issue a new one with `yunkey user reactivate`"
                );
                metrics::counter!("yunkey_activation_codes_burnt_total").increment(1);
            }
            Err(CoordError::ActivationInvalid)
        }
        other => Err(CoordError::Internal(format!(
            "activation attempt gave {other:?}"
        ))),
    }
}

/// Refuses when `user` has as many active devices as `--max-devices` allows.
pub fn room_for_a_device(core: &Core, user: &UserRecord) -> Result<()> {
    let active = user
        .devices
        .iter()
        .filter(|d| d.revoked_at.is_none())
        .count();
    if active >= core.config.max_devices {
        return Err(CoordError::TooManyDevices {
            user_id: user.user_id.clone(),
            active,
            limit: core.config.max_devices,
        });
    }
    Ok(())
}

/// `KeyService.ReactivateUser`.
pub async fn reactivate(
    core: &Core,
    actor: &str,
    req: ReactivateUserRequest,
) -> Result<ReactivateUserResponse> {
    validate::identifier("user_id", &req.user_id)?;
    let user = core
        .view
        .user(&req.user_id)?
        .ok_or_else(|| CoordError::UserNotFound(req.user_id.clone()))?;
    if user.state != UserState::Active {
        return Err(CoordError::UserRevoked(req.user_id));
    }
    room_for_a_device(core, &user)?;
    let (code, expires_at) = reissue(core, actor, &user).await?;
    let user = core
        .view
        .user(&req.user_id)?
        .ok_or_else(|| CoordError::UserNotFound(req.user_id.clone()))?;
    Ok(ReactivateUserResponse {
        user: Some(crate::convert::user(&core.view, &user)?),
        activation_code: code,
        expires_at,
    })
}

/// Issues `user` a new activation code: a holder opens it in the key's binding, Raft commits
/// its hash, the other holders get the binding pushed. Returns the code and its expiry. Every
/// call makes a new code (a code is never stored, so there is nothing to return twice).
pub async fn reissue(core: &Core, actor: &str, user: &UserRecord) -> Result<(String, i64)> {
    let code = crate::enroll::new_activation_code();
    let code_sha256 = yunkey_crypto::sha256(code.as_bytes());
    let expires_at = crate::clock::now() + core.config.activation_ttl_secs;
    let (holder, resp) = core
        .chips
        .first_answer(&user.holders, "the user's key", |chip, holder| {
            let request = SetActivationRequest {
                key_handle: holder.key_handle,
                user_id: user.user_id.clone(),
                activation_code_sha256: code_sha256.to_vec(),
                expires_at,
            };
            async move { chip.set_activation(request).await }
        })
        .await?;
    let rebinding = crate::bindings::rebinding(&resp);
    let request_id = format!(
        "reactivate-{}-{}",
        user.user_id,
        hex::encode(yunkey_crypto::random_bytes::<8>())
    );
    match core
        .propose(
            &request_id,
            actor,
            Op::Reactivate {
                user_id: user.user_id.clone(),
                code_sha256,
                expires_at,
                rebinding: rebinding.clone(),
            },
        )
        .await?
    {
        CommandResult::Reactivated => {
            crate::bindings::push(
                core,
                &user.user_id,
                &user.holders,
                &holder.chip_id,
                &rebinding,
            )
            .await;
            Ok((code, expires_at))
        }
        other => Err(CoordError::Internal(format!("unexpected result {other:?}"))),
    }
}
