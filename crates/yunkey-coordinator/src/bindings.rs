//! Carrying a key's binding between its holders. A chip decides every change to a binding
//! (bind, revoke) and returns the key re-wrapped with it; the coordinators commit that wrapped
//! key through Raft and push it to the other holders with `UpdateBinding`, which merges it
//! (revocations are never undone). A holder that missed a push refuses to sign once a request
//! names the newer seq, and the sign path then pushes the committed wrapped key and retries.

use crate::chip_client::{ChipClient, ChipResult};
use crate::core::Core;
use crate::state::{HolderRecord, Rebinding};
use yunkey_proto::v1::{BindingResponse, UpdateBindingRequest};

/// The rebinding in a chip's answer.
pub fn rebinding(resp: &BindingResponse) -> Rebinding {
    Rebinding {
        wrapped_key: resp.wrapped_key.clone(),
        binding_seq: resp.binding_seq,
    }
}

/// Sends `wrapped_key` to one holder; returns the holder's binding seq.
pub async fn update_holder(
    chip: &dyn ChipClient,
    holder: &HolderRecord,
    wrapped_key: &[u8],
) -> ChipResult<u64> {
    let resp = chip
        .update_binding(UpdateBindingRequest {
            key_handle: holder.key_handle.clone(),
            wrapped_key: wrapped_key.to_vec(),
        })
        .await?;
    Ok(resp.binding_seq)
}

/// Pushes a committed binding to every holder but `done` that is up (best effort: a holder
/// that misses it, or is suspect or down now, is brought up to date by the sign path, or
/// replaced by repair; waiting here for a dead chip's timeout would only delay the caller).
pub async fn push(
    core: &Core,
    user_id: &str,
    holders: &[HolderRecord],
    done: &str,
    rebinding: &Rebinding,
) {
    let pushes = holders
        .iter()
        .filter(|h| h.chip_id != done)
        .filter(|h| {
            let up = core.chips.routable(&h.chip_id);
            if !up {
                tracing::debug!(chip = %h.chip_id, user = user_id, "binding not pushed to a holder that is not up");
            }
            up
        })
        .map(|h| async move {
            let pushed = match core.chips.chip(&h.chip_id) {
                Ok(chip) => update_holder(&*chip, h, &rebinding.wrapped_key)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(error) = pushed {
                tracing::warn!(
                    chip = %h.chip_id,
                    user = user_id,
                    seq = rebinding.binding_seq,
                    error,
                    "a holder did not take the new binding yet; signing will bring it up to date"
                );
            }
        });
    futures::future::join_all(pushes).await;
}
