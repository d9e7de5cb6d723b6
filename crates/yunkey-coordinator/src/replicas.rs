//! Creating a key on its chosen holders: generated inside the first chip, then copied to the
//! others as the wrapped key (only the domain key opens it, inside a chip).

use crate::core::Core;
use crate::error::{CoordError, Result};
use crate::state::{ChipRecord, HolderRecord};
use yunkey_proto::v1::{
    Algorithm, GenerateKeyRequest, GenerateKeyResponse, KeyPurpose, UnwrapKeyRequest,
};

/// Generates a key of `algorithm` and `purpose` (for `user_id`, empty for cluster keys; an SM2
/// user key signing under `distid`, empty for the default; a user key with its pending
/// first-device activation: the code's SHA-256 and expiry) in `chosen[0]` and copies
/// it to the rest. A copy that fails is logged and skipped: one holder plus the
/// wrapped key in Raft state is enough to acknowledge, and repair restores R later.
pub async fn create_key(
    core: &Core,
    chosen: &[&ChipRecord],
    algorithm: Algorithm,
    purpose: KeyPurpose,
    user_id: &str,
    distid: &str,
    activation: Option<([u8; 32], i64)>,
) -> Result<(GenerateKeyResponse, Vec<HolderRecord>)> {
    let (generated, first) = generate(
        core, chosen, algorithm, purpose, user_id, distid, activation,
    )
    .await?;
    let copies = copy_to(core, &chosen[1..], &generated, purpose, user_id).await;
    Ok((generated, std::iter::once(first).chain(copies).collect()))
}

/// The first half of [`create_key`]: generates the key in `chosen[0]` (refused with
/// NoCapacity or Unavailable when `chosen` is empty). Returns the chip's answer and the
/// holder it makes.
pub async fn generate(
    core: &Core,
    chosen: &[&ChipRecord],
    algorithm: Algorithm,
    purpose: KeyPurpose,
    user_id: &str,
    distid: &str,
    activation: Option<([u8; 32], i64)>,
) -> Result<(GenerateKeyResponse, HolderRecord)> {
    let first = chosen.first().ok_or_else(|| {
        if core
            .view
            .chips()
            .map(|c| c.iter().any(|c| core.chips.routable(&c.chip_id)))
            .unwrap_or(false)
        {
            CoordError::NoCapacity("every healthy chip is full; add chips".into())
        } else {
            CoordError::Unavailable("no chip is healthy right now; retry shortly".into())
        }
    })?;
    let generated = core
        .chips
        .at(&first.chip_id, &first.endpoint)?
        .generate_key(GenerateKeyRequest {
            algorithm: algorithm as i32,
            purpose: purpose as i32,
            user_id: user_id.to_owned(),
            distinguishing_id: distid.to_owned(),
            activation_code_sha256: activation.map(|a| a.0.to_vec()).unwrap_or_default(),
            activation_expires_at: activation.map(|a| a.1).unwrap_or_default(),
        })
        .await
        .map_err(CoordError::Chip)?;
    let holder = HolderRecord {
        chip_id: first.chip_id.clone(),
        key_handle: generated.key_handle.clone(),
    };
    Ok((generated, holder))
}

/// The second half of [`create_key`]: copies the generated key to `replicas`, all at once.
/// Returns the holders made, in `replicas`' order; a copy that fails is logged and skipped.
pub async fn copy_to(
    core: &Core,
    replicas: &[&ChipRecord],
    generated: &GenerateKeyResponse,
    purpose: KeyPurpose,
    user_id: &str,
) -> Vec<HolderRecord> {
    let copies = replicas.iter().map(|replica| async move {
        let copied = async {
            core.chips
                .at(&replica.chip_id, &replica.endpoint)?
                .unwrap_key(UnwrapKeyRequest {
                    wrapped_key: generated.wrapped_key.clone(),
                    purpose: purpose as i32,
                    user_id: user_id.to_owned(),
                })
                .await
                .map_err(CoordError::Chip)
        }
        .await;
        match copied {
            Ok(resp) => Some(HolderRecord {
                chip_id: replica.chip_id.clone(),
                key_handle: resp.key_handle,
            }),
            Err(e) => {
                tracing::warn!(chip = %replica.chip_id, error = %e, ?purpose, "replica copy failed");
                None
            }
        }
    });
    futures::future::join_all(copies)
        .await
        .into_iter()
        .flatten()
        .collect()
}
