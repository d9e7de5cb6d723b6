//! The sweep: deletes chips' copies that no committed placement lists (a chip that came back
//! after it was replaced, a copy imported by a leader that died before committing it, a copy
//! whose binding missed a revocation while its chip was down).

use crate::core::Core;
use crate::error::{CoordError, Result};
use std::collections::HashSet;
use yunkey_proto::v1::{KeyEntry, KeyHandleRequest, KeyPurpose, ListKeysRequest};

/// Whether the committed placement lists `handle` on `chip_id`.
fn listed(core: &Core, chip_id: &str, entry: &KeyEntry) -> Result<bool> {
    let holders = if entry.purpose == KeyPurpose::Ca as i32 {
        // Either user CA's key: the P-256 one or the SM2 one.
        let mut holders = core.view.ca()?.map(|c| c.holders).unwrap_or_default();
        if let Some(sm2) = core.view.ca_of(yunkey_crypto::sig::Algorithm::Sm2)? {
            holders.extend(sm2.holders);
        }
        holders
    } else if entry.purpose == KeyPurpose::CodeSigning as i32 {
        core.view
            .code_signing()?
            .map(|c| c.holders)
            .unwrap_or_default()
    } else {
        core.view
            .user(&entry.user_id)?
            .map(|u| u.holders)
            .unwrap_or_default()
    };
    Ok(holders
        .iter()
        .any(|h| h.chip_id == chip_id && h.key_handle == entry.key_handle))
}

/// One sweep over the reachable chips: deletes every copy that this sweep and the previous one
/// (at least [`super::RepairConfig::sweep_every`] earlier) both found unlisted by the committed
/// placement; returns what this sweep found unlisted. The two sightings keep a copy that is
/// being imported right now (its `AddHolder` not yet committed) from being deleted.
pub(crate) async fn sweep(
    core: &Core,
    before: &HashSet<(String, String)>,
) -> Result<HashSet<(String, String)>> {
    let mut unlisted = HashSet::new();
    for chip in core.view.chips()? {
        if !core.chips.routable(&chip.chip_id) {
            continue;
        }
        let client = core.chips.at(&chip.chip_id, &chip.endpoint)?;
        let mut after = String::new();
        loop {
            let page = client
                .list_keys(ListKeysRequest {
                    after: after.clone(),
                    limit: 1000,
                })
                .await
                .map_err(CoordError::Chip)?;
            let Some(last) = page.keys.last() else { break };
            after = last.key_handle.clone();
            for entry in &page.keys {
                if listed(core, &chip.chip_id, entry)? {
                    continue;
                }
                let copy = (chip.chip_id.clone(), entry.key_handle.clone());
                if before.contains(&copy) {
                    let deleted = client
                        .delete_key(KeyHandleRequest {
                            key_handle: entry.key_handle.clone(),
                        })
                        .await;
                    if deleted.is_ok() {
                        metrics::counter!("yunkey_repair_moves_total", "kind" => "sweep")
                            .increment(1);
                        tracing::info!(target: "yunkey::audit", chip = %chip.chip_id, "an unlisted copy deleted");
                    }
                } else {
                    unlisted.insert(copy);
                }
            }
        }
    }
    Ok(unlisted)
}
