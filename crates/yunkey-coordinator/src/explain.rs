//! Why a user's key is placed where it is: its holders with their chips' zone and health, and
//! what the reconciler will do about them, in words an operator can act on
//! (`yunkey ctl placement USER_ID`).

use crate::core::Core;
use crate::error::{CoordError, Result};
use crate::state::UserState;
use std::collections::BTreeSet;
use yunkey_proto::v1::{ChipState, PlacedHolder, Placement};

fn holder_note(state: ChipState, known: bool) -> &'static str {
    if !known {
        return "not in the chip registry: the reconciler replaces this holder";
    }
    match state {
        ChipState::Up => "up",
        ChipState::Suspect => "suspect: missed a heartbeat; signing tries the other holders first",
        ChipState::Down => "down: the reconciler replaces this holder, add before remove",
        ChipState::Draining => "draining: the reconciler moves this copy to another chip",
        ChipState::Unspecified => "unknown",
    }
}

/// The placement of `user_id`'s key as this node sees it.
pub fn placement(core: &Core, user_id: &str) -> Result<Placement> {
    let user = core
        .view
        .user(user_id)?
        .ok_or_else(|| CoordError::UserNotFound(user_id.to_owned()))?;
    let registry = core.view.chips()?;
    let r = core.config.replicas;
    let mut zones = BTreeSet::new();
    let mut holders = Vec::new();
    let mut good = 0usize;
    for h in &user.holders {
        let chip = registry.iter().find(|c| c.chip_id == h.chip_id);
        let state = core.chip_state(&h.chip_id);
        if let Some(c) = chip {
            zones.insert(c.zone.clone());
        }
        if chip.is_some() && matches!(state, ChipState::Up | ChipState::Suspect) {
            good += 1;
        }
        holders.push(PlacedHolder {
            chip_id: h.chip_id.clone(),
            zone: chip.map(|c| c.zone.clone()).unwrap_or_default(),
            state: state as i32,
            key_handle: h.key_handle.clone(),
            note: holder_note(state, chip.is_some()).to_owned(),
        });
    }
    let fleet_zones: BTreeSet<&str> = registry
        .iter()
        .filter(|c| core.placeable(&c.chip_id) && c.placed < c.capacity)
        .map(|c| c.zone.as_str())
        .collect();
    let revoked = user.state == UserState::Revoked;
    let mut notes = Vec::new();
    if revoked {
        notes.push("revoked: the key signs nothing and the reconciler no longer moves it".into());
    } else {
        if user.holders.len() < r {
            notes.push(format!(
                "{} of {r} holders: the reconciler adds {} (a replica copy failed, or a repair is under way)",
                user.holders.len(),
                r - user.holders.len()
            ));
        }
        let bad = user.holders.len() - good;
        if bad > 0 {
            notes.push(format!(
                "{bad} holder(s) down, draining or removed: each is replaced, add before remove, at the repair rate"
            ));
        }
        let spread = zones.len().min(r);
        let possible = fleet_zones.len().min(r);
        if spread < possible {
            notes.push(format!(
                "spans {} zone(s) while {} zone(s) have room: the next repair or rebalance move of this key prefers a new zone",
                zones.len(),
                fleet_zones.len()
            ));
        }
        if notes.is_empty() {
            notes.push(format!(
                "{} holder(s) up in {} zone(s): nothing to do",
                user.holders.len(),
                zones.len()
            ));
        }
    }
    Ok(Placement {
        user_id: user.user_id,
        replicas: r as u32,
        holders,
        zones: zones.len() as u32,
        fleet_zones: fleet_zones.len() as u32,
        notes,
        revoked,
    })
}
