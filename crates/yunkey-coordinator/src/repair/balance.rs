//! Rebalance on the leader: when the chips that accept keys are not within the tolerance of
//! the fleet mean (a chip joined, a capacity changed), load the committed placement, ask the
//! pure planner ([`crate::rebalance`]) for moves, and carry them out at the repair rate with
//! the same add-before-remove steps as repair ([`super::moves`]).
//!
//! The imbalance check reads only the chip registry (each chip's `placed` count), so it runs at
//! every pass; the placement is loaded only when a plan is due. A move is checked against the
//! committed state just before it is carried out (the user may have been revoked, moved by
//! repair or revoked meanwhile) and skipped if it no longer applies. A leader change drops the
//! queue: the next leader plans again from what committed.

use super::moves::{add_holder, drop_holder};
use crate::core::Core;
use crate::error::Result;
use crate::rebalance::{self, ChipLoad, KeyTable, Tolerance};
use crate::state::{ChipRecord, KeyOwner, UserState};
use std::collections::{HashMap, VecDeque};

/// One planned move, by ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedMove {
    pub user_id: String,
    pub from: String,
    pub to: String,
}

/// What of a chip decides a plan besides the placement: id, capacity, and whether it takes
/// part. A change of any of them makes a new plan due at once.
pub(crate) type FleetShape = (String, u64, bool);

/// The fleet's shape now, by chip id.
pub(crate) fn shape(core: &Core) -> Result<Vec<FleetShape>> {
    Ok(core
        .view
        .chips()?
        .into_iter()
        .map(|c| {
            let accepts = core.placeable(&c.chip_id);
            (c.chip_id, c.capacity, accepts)
        })
        .collect())
}

fn loads(core: &Core, registry: &[ChipRecord]) -> Vec<ChipLoad> {
    registry
        .iter()
        .map(|c| ChipLoad {
            chip_id: c.chip_id.clone(),
            zone: c.zone.clone(),
            capacity: c.capacity,
            accepts: core.placeable(&c.chip_id),
        })
        .collect()
}

/// Whether the registry's counts say the fleet is out of balance (cheap: chips only).
pub(crate) fn needed(core: &Core, tolerance: Tolerance) -> Result<bool> {
    let registry = core.view.chips()?;
    let counts: Vec<u64> = registry.iter().map(|c| c.placed).collect();
    Ok(!rebalance::balanced(
        &loads(core, &registry),
        &counts,
        tolerance,
    ))
}

/// Loads every active user's holders and plans the moves.
pub(crate) fn plan(
    core: &Core,
    tolerance: Tolerance,
    page: usize,
) -> Result<VecDeque<PlannedMove>> {
    let registry = core.view.chips()?;
    let chips = loads(core, &registry);
    let index: HashMap<&str, u32> = registry
        .iter()
        .enumerate()
        .map(|(i, c)| (c.chip_id.as_str(), i as u32))
        .collect();
    let mut keys = KeyTable::default();
    let mut ids: Vec<String> = Vec::new();
    let mut cursor = String::new();
    loop {
        let users = core.view.users_after(&cursor, page)?;
        let Some(last) = users.last() else { break };
        cursor = last.user_id.clone();
        for user in users {
            if user.state != UserState::Active {
                continue;
            }
            let holders: Vec<u32> = user
                .holders
                .iter()
                .filter_map(|h| index.get(h.chip_id.as_str()).copied())
                .collect();
            keys.push(holders);
            ids.push(user.user_id);
        }
    }
    let moves = rebalance::plan(&chips, &keys, tolerance);
    Ok(moves
        .into_iter()
        .map(|m| PlannedMove {
            user_id: ids[m.key as usize].clone(),
            from: registry[m.from as usize].chip_id.clone(),
            to: registry[m.to as usize].chip_id.clone(),
        })
        .collect())
}

/// Carries out one planned move if it still applies; `Ok(false)` when it no longer does.
pub(crate) async fn carry_out(core: &Core, m: &PlannedMove) -> Result<bool> {
    let Some(user) = core.view.user(&m.user_id)? else {
        return Ok(false);
    };
    let Some(old) = user.holders.iter().find(|h| h.chip_id == m.from) else {
        return Ok(false);
    };
    if user.state != UserState::Active
        || user.holders.iter().any(|h| h.chip_id == m.to)
        || !core.placeable(&m.to)
    {
        return Ok(false);
    }
    let Some(target) = core.view.chip(&m.to)? else {
        return Ok(false);
    };
    let owner = KeyOwner::User(m.user_id.clone());
    add_holder(core, &owner, &user.wrapped_key, &target, "rebalance").await?;
    drop_holder(core, &owner, old, user.holders.len(), "rebalance").await?;
    metrics::counter!("yunkey_repair_moves_total", "kind" => "rebalance").increment(1);
    Ok(true)
}
