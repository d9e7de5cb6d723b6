//! Carrying a key's binding between its holders. A chip decides every change to a binding
//! (bind, revoke) and returns the key re-wrapped with it; the coordinators commit that wrapped
//! key through Raft and push it to the other holders with `UpdateBinding`, which merges it
//! (revocations are never undone). A holder that missed a push refuses to sign once a request
//! names the newer seq, and the sign path then pushes the committed wrapped key and retries.

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

/// Sends `wrapped_key` to one holder.
pub async fn update_holder(
    core: &Core,
    holder: &HolderRecord,
    wrapped_key: &[u8],
) -> Result<u64, tonic::Status> {
    let endpoint = core.chips.endpoint_of(&holder.chip_id).ok_or_else(|| {
        tonic::Status::unavailable(format!("chip {} has no known endpoint", holder.chip_id))
    })?;
    let mut client = core
        .chips
        .client(&endpoint)
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let resp = client
        .update_binding(core.chips.request(UpdateBindingRequest {
            key_handle: holder.key_handle.clone(),
            wrapped_key: wrapped_key.to_vec(),
        }))
        .await?;
    Ok(resp.into_inner().binding_seq)
}

/// Pushes a committed binding to every holder but `done` (best effort: a holder that misses it
/// is brought up to date by the sign path).
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
        .map(|h| async move {
            if let Err(status) = update_holder(core, h, &rebinding.wrapped_key).await {
                tracing::warn!(
                    chip = %h.chip_id,
                    user = user_id,
                    seq = rebinding.binding_seq,
                    error = %status.message(),
                    "a holder did not take the new binding yet; signing will bring it up to date"
                );
            }
        });
    futures::future::join_all(pushes).await;
}
