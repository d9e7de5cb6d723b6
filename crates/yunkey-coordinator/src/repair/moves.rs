//! The move protocol, add before remove: a chip imports a key from the wrapped copy in Raft
//! state and Raft commits it as a holder ([`add_holder`]); only then is an old holder dropped
//! ([`drop_holder`]), which the state machine refuses below `keep` holders. Repair, restore,
//! drain and rebalance are all made of these two steps.

use crate::core::Core;
use crate::error::{CoordError, Result};
use crate::placement::{self, Candidate};
use crate::state::{ChipRecord, HolderRecord, KeyOwner, Op};
use std::collections::HashSet;
use yunkey_proto::v1::{KeyHandleRequest, KeyPurpose, UnwrapKeyRequest};

/// How many holders a key should have: R for users, at least 2 for the user CA and the
/// code-signing key.
pub(crate) fn wanted(core: &Core, owner: &KeyOwner) -> usize {
    match owner {
        KeyOwner::Ca | KeyOwner::Sm2Ca | KeyOwner::CodeSigning => core.config.replicas.max(2),
        KeyOwner::User(_) => core.config.replicas,
    }
}

/// Step 1 and 2: `target` imports the key from `wrapped_key`, then Raft commits it as a
/// holder. If the state machine refuses the holder the copy is surplus and is deleted; after
/// any other failure it may be committed, and is left to the sweep.
pub(crate) async fn add_holder(
    core: &Core,
    owner: &KeyOwner,
    wrapped_key: &[u8],
    target: &ChipRecord,
    why: &'static str,
) -> Result<HolderRecord> {
    let (purpose, user_id) = match owner {
        KeyOwner::User(id) => (KeyPurpose::User, id.clone()),
        KeyOwner::Ca | KeyOwner::Sm2Ca => (KeyPurpose::Ca, String::new()),
        KeyOwner::CodeSigning => (KeyPurpose::CodeSigning, String::new()),
    };
    let chip = core.chips.at(&target.chip_id, &target.endpoint)?;
    let imported = chip
        .unwrap_key(UnwrapKeyRequest {
            wrapped_key: wrapped_key.to_vec(),
            purpose: purpose as i32,
            user_id,
        })
        .await
        .map_err(CoordError::Chip)?;
    let holder = HolderRecord {
        chip_id: target.chip_id.clone(),
        key_handle: imported.key_handle,
    };
    let added = core
        .propose(
            "",
            why,
            Op::AddHolder {
                owner: owner.clone(),
                holder: holder.clone(),
            },
        )
        .await;
    if let Err(e) = added {
        // Only the state machine's refusal proves that the holder was not committed: any other
        // error can follow a commit (a leader that stepped down forwards the entry to its
        // successor; "committed but not applied here"), and deleting the copy then would leave
        // a committed holder without the key. Such a copy is left to the sweep, which deletes
        // it only if no committed placement lists it.
        let refused = matches!(
            e,
            CoordError::FailedPrecondition(_)
                | CoordError::UserNotFound(_)
                | CoordError::ChipNotFound(_)
        );
        if refused {
            let _ = chip
                .delete_key(KeyHandleRequest {
                    key_handle: holder.key_handle,
                })
                .await;
        }
        return Err(e);
    }
    metrics::counter!("yunkey_repair_moves_total", "kind" => "add").increment(1);
    tracing::info!(target: "yunkey::audit", key = %owner, chip = %holder.chip_id, why, "holder added");
    Ok(holder)
}

/// Step 3: Raft drops `old` (refused below `keep` holders); then, if its chip is up, its copy
/// is deleted. A dead chip keeps its copy until it comes back and the sweep finds it.
pub(crate) async fn drop_holder(
    core: &Core,
    owner: &KeyOwner,
    old: &HolderRecord,
    keep: usize,
    why: &'static str,
) -> Result<()> {
    core.propose(
        "",
        why,
        Op::RemoveHolder {
            owner: owner.clone(),
            chip_id: old.chip_id.clone(),
            keep: keep as u32,
        },
    )
    .await?;
    metrics::counter!("yunkey_repair_moves_total", "kind" => "remove").increment(1);
    tracing::info!(target: "yunkey::audit", key = %owner, chip = %old.chip_id, why, "holder dropped");
    if core.chips.routable(&old.chip_id) {
        if let Ok(chip) = core.chips.chip(&old.chip_id) {
            let _ = chip
                .delete_key(KeyHandleRequest {
                    key_handle: old.key_handle.clone(),
                })
                .await;
        }
    }
    Ok(())
}

/// Brings one key to its wanted number of good holders, new ones in zones the good holders
/// are not in where the fleet allows, then drops its bad ones (add before remove).
pub(crate) async fn repair_key(
    core: &Core,
    owner: KeyOwner,
    holders: &[HolderRecord],
    wrapped_key: &[u8],
    bad: &HashSet<String>,
) -> Result<()> {
    let r = wanted(core, &owner);
    let good = holders.iter().filter(|h| !bad.contains(&h.chip_id)).count();
    let missing = r.saturating_sub(good);
    let mut holders: Vec<HolderRecord> = holders.to_vec();
    if missing > 0 {
        let registry = core.view.chips()?;
        let zones_held: Vec<&str> = holders
            .iter()
            .filter(|h| !bad.contains(&h.chip_id))
            .filter_map(|h| registry.iter().find(|c| c.chip_id == h.chip_id))
            .map(|c| c.zone.as_str())
            .collect();
        let candidates: Vec<Candidate<'_>> = registry
            .iter()
            .filter(|c| !holders.iter().any(|h| h.chip_id == c.chip_id))
            .map(|chip| Candidate {
                chip,
                routable: core.placeable(&chip.chip_id),
            })
            .collect();
        for target in placement::place_beside(&candidates, missing, &zones_held) {
            holders.push(add_holder(core, &owner, wrapped_key, target, "repair").await?);
        }
    }
    let good_now = holders.iter().filter(|h| !bad.contains(&h.chip_id)).count();
    if good_now < r {
        return Ok(());
    }
    for old in holders.iter().filter(|h| bad.contains(&h.chip_id)) {
        drop_holder(core, &owner, old, r, "repair").await?;
    }
    // More good holders than wanted: a move whose "add" committed but whose "remove" did not
    // (its leader died in between, or the dead chip came back first). Trim the surplus.
    let mut good: Vec<&HolderRecord> = holders
        .iter()
        .filter(|h| !bad.contains(&h.chip_id))
        .collect();
    while good.len() > r {
        let registry = core.view.chips()?;
        let zone = |h: &HolderRecord| {
            registry
                .iter()
                .find(|c| c.chip_id == h.chip_id)
                .map(|c| c.zone.clone())
        };
        // The newest holder whose zone another holder also covers, else the newest.
        let at = (0..good.len())
            .rev()
            .find(|&i| {
                let z = zone(good[i]);
                good.iter()
                    .enumerate()
                    .any(|(j, other)| j != i && zone(other) == z)
            })
            .unwrap_or(good.len() - 1);
        let surplus = good.remove(at);
        drop_holder(core, &owner, surplus, r, "trim").await?;
    }
    Ok(())
}
