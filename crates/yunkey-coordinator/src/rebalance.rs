//! The rebalance planner: which key copies move where so that every chip's utilization comes
//! back near the fleet mean after a chip joins or a capacity changes. A pure, deterministic
//! function of the fleet and the committed placement, like [`crate::placement`]; the leader's
//! reconciler ([`crate::repair`]) runs it and carries out its moves add before remove.
//!
//! # The rule
//! Only chips that accept keys (up and not draining) take part. With `P` copies on them and
//! `C` capacity in all, the fleet mean utilization is `P / C`, and a chip's *share* is
//! `mean × capacity`. A chip is *balanced* when its count of copies is within
//! `tolerance × share` of its share, or within one copy, whichever is larger ([`Tolerance`]).
//!
//! When some chip is not, the planner moves one copy at a time from the chip furthest above its
//! share to the chip furthest below it that can take one of its keys, as long as one of the
//! two is out of tolerance, until every chip is balanced or no allowed move helps.
//!
//! A move of a key from chip `a` to chip `b` is allowed only when `b` takes part, has room and
//! does not hold the key, and the key's holders span at least as many zones afterwards as
//! before. A move never changes how many holders a key has, so no key drops below R. A move
//! is made only when `a` is more than one copy further above its share than `b` is, so every
//! move lowers the sum over chips of (copies − share)²: planning again converges instead of
//! moving copies back and forth. Where zones forbid the moves (one zone with less capacity than
//! the others holds more than its share, for example), the plan stops short; [`check`]
//! verifies every plan, and the property tests in `rebalance/tests.rs` hold it to the rule.

use std::cmp::Ordering;

/// Default tolerance: a chip is balanced within 10 % of the fleet mean utilization.
pub const DEFAULT_TOLERANCE_PERCENT: u32 = 10;

/// How far from the fleet mean a chip's utilization may be before the planner moves copies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Allowed deviation as a fraction of the mean (0.10 is 10 %).
    pub fraction: f64,
}

impl Tolerance {
    /// A tolerance of `percent` % of the mean.
    pub fn percent(percent: u32) -> Self {
        Self {
            fraction: f64::from(percent) / 100.0,
        }
    }
}

impl Default for Tolerance {
    fn default() -> Self {
        Self::percent(DEFAULT_TOLERANCE_PERCENT)
    }
}

/// A chip as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChipLoad {
    /// Chip id (used only in errors and for ties: the planner works on indexes).
    pub chip_id: String,
    /// Failure zone.
    pub zone: String,
    /// Keys it can hold.
    pub capacity: u64,
    /// Whether it takes part: up and not draining. Others are neither emptied nor filled here
    /// (repair and drain handle them).
    pub accepts: bool,
}

/// The committed placement in compact form: for each key, the indexes (into the chip list)
/// of its holders. About 4 bytes per holder plus 4 per key, so a million users of R = 2 take
/// about 12 MB.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyTable {
    offsets: Vec<u32>,
    holders: Vec<u32>,
}

impl KeyTable {
    /// An empty table with room for `keys` keys of `replicas` holders.
    pub fn with_capacity(keys: usize, replicas: usize) -> Self {
        let mut offsets = Vec::with_capacity(keys + 1);
        offsets.push(0);
        Self {
            offsets,
            holders: Vec::with_capacity(keys * replicas),
        }
    }

    /// Appends a key held by the chips at `holders` (indexes into the chip list); returns its
    /// index.
    pub fn push(&mut self, holders: impl IntoIterator<Item = u32>) -> u32 {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.holders.extend(holders);
        self.offsets.push(self.holders.len() as u32);
        (self.offsets.len() - 2) as u32
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The holders of key `key`.
    pub fn holders(&self, key: u32) -> &[u32] {
        let (a, b) = (
            self.offsets[key as usize] as usize,
            self.offsets[key as usize + 1] as usize,
        );
        &self.holders[a..b]
    }

    fn holders_mut(&mut self, key: u32) -> &mut [u32] {
        let (a, b) = (
            self.offsets[key as usize] as usize,
            self.offsets[key as usize + 1] as usize,
        );
        &mut self.holders[a..b]
    }

    /// Applies `moves` (as [`plan`] returns them) to the table.
    pub fn apply(&mut self, moves: &[Move]) {
        for m in moves {
            if let Some(h) = self.holders_mut(m.key).iter_mut().find(|h| **h == m.from) {
                *h = m.to;
            }
        }
    }
}

/// One move: key `key`'s copy on chip `from` goes to chip `to` (indexes into the inputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    /// Index of the key in the [`KeyTable`].
    pub key: u32,
    /// Index of the chip that gives the copy up.
    pub from: u32,
    /// Index of the chip that receives it.
    pub to: u32,
}

/// Copies per chip as the table lists them.
pub fn counts(chips: &[ChipLoad], keys: &KeyTable) -> Vec<u64> {
    let mut counts = vec![0u64; chips.len()];
    for &h in &keys.holders {
        if let Some(c) = counts.get_mut(h as usize) {
            *c += 1;
        }
    }
    counts
}

/// The fleet mean utilization over the chips that accept keys, if any capacity accepts.
fn mean(chips: &[ChipLoad], counts: &[u64]) -> Option<f64> {
    let (placed, capacity) = chips
        .iter()
        .zip(counts)
        .filter(|(c, _)| c.accepts)
        .fold((0u64, 0u64), |(p, cap), (c, n)| (p + n, cap + c.capacity));
    (capacity > 0).then(|| placed as f64 / capacity as f64)
}

/// Whether every accepting chip is within `tolerance` of the fleet mean (see the module doc).
pub fn balanced(chips: &[ChipLoad], counts: &[u64], tolerance: Tolerance) -> bool {
    let Some(mean) = mean(chips, counts) else {
        return true;
    };
    chips
        .iter()
        .zip(counts)
        .filter(|(c, _)| c.accepts)
        .all(|(c, &n)| {
            let target = mean * c.capacity as f64;
            (n as f64 - target).abs() <= (tolerance.fraction * target).max(1.0)
        })
}

fn zone_count(chips: &[ChipLoad], holders: impl Iterator<Item = u32>) -> usize {
    let mut zones: Vec<&str> = holders.map(|h| chips[h as usize].zone.as_str()).collect();
    zones.sort_unstable();
    zones.dedup();
    zones.len()
}

/// Zones the key's holders span if its copy on `from` went to `to`.
fn zones_after(chips: &[ChipLoad], holders: &[u32], from: u32, to: u32) -> usize {
    zone_count(
        chips,
        holders.iter().map(|&h| if h == from { to } else { h }),
    )
}

/// The planner's working state: the placement as moves change it, and each chip's count.
struct Work<'a> {
    chips: &'a [ChipLoad],
    table: KeyTable,
    counts: Vec<u64>,
    /// Each chip's exact share at the fleet mean (0 for chips that take no part).
    targets: Vec<f64>,
    /// Keys that list each chip (moved-off keys are skipped when met).
    on_chip: Vec<Vec<u32>>,
    moves: Vec<Move>,
}

impl<'a> Work<'a> {
    fn new(chips: &'a [ChipLoad], keys: &KeyTable, mean: f64) -> Self {
        let mut on_chip: Vec<Vec<u32>> = vec![Vec::new(); chips.len()];
        for key in 0..keys.len() as u32 {
            for &h in keys.holders(key) {
                if let Some(list) = on_chip.get_mut(h as usize) {
                    list.push(key);
                }
            }
        }
        Self {
            chips,
            table: keys.clone(),
            counts: counts(chips, keys),
            targets: chips
                .iter()
                .map(|c| {
                    if c.accepts {
                        mean * c.capacity as f64
                    } else {
                        0.0
                    }
                })
                .collect(),
            on_chip,
            moves: Vec::new(),
        }
    }

    /// How far above (positive) or below its share chip `i` is.
    fn deviation(&self, i: usize) -> f64 {
        self.counts[i] as f64 - self.targets[i]
    }

    /// Whether moving one copy from `from` to `to` lowers the sum of squared deviations (it does
    /// exactly when their deviations differ by more than one copy). Every move made keeps to
    /// this, so planning again can only converge.
    fn improves(&self, from: usize, to: usize) -> bool {
        self.deviation(from) - self.deviation(to) > 1.0
    }

    /// Whether key `key`'s copy on `from` may go to `to`: `to` takes part, has room and does
    /// not hold the key, and the key spans no fewer zones afterwards.
    fn allowed(&self, key: u32, from: usize, to: usize) -> bool {
        let holders = self.table.holders(key);
        let target = &self.chips[to];
        if !target.accepts
            || self.counts[to] >= target.capacity
            || holders.contains(&(to as u32))
            || !holders.contains(&(from as u32))
        {
            return false;
        }
        zones_after(self.chips, holders, from as u32, to as u32)
            >= zone_count(self.chips, holders.iter().copied())
    }

    fn make(&mut self, key: u32, from: usize, to: usize) {
        debug_assert!(self.allowed(key, from, to));
        let m = Move {
            key,
            from: from as u32,
            to: to as u32,
        };
        self.table.apply(std::slice::from_ref(&m));
        self.counts[from] -= 1;
        self.counts[to] += 1;
        self.on_chip[to].push(key);
        self.moves.push(m);
    }

    /// Whether chip `i` is out of tolerance.
    fn out(&self, i: usize, tolerance: Tolerance) -> bool {
        self.deviation(i).abs() > (tolerance.fraction * self.targets[i]).max(1.0)
    }

    /// A key on `from` that may move to `to`, resuming the search of this pair where it last
    /// stopped (`cursors`); keys passed over are ineligible or have moved away.
    fn key_for(&self, from: usize, to: usize, cursors: &mut [usize]) -> Option<u32> {
        let cursor = &mut cursors[from * self.chips.len() + to];
        let list = &self.on_chip[from];
        while *cursor < list.len() {
            let key = list[*cursor];
            if self.allowed(key, from, to) {
                return Some(key);
            }
            *cursor += 1;
        }
        None
    }

    /// The next move: from the chip furthest above its share to the one furthest below that
    /// can take one of its keys, where the move evens the two out and one of them is out of
    /// tolerance.
    fn next(&self, tolerance: Tolerance, cursors: &mut [usize]) -> Option<(u32, usize, usize)> {
        let mut takers: Vec<usize> = (0..self.chips.len())
            .filter(|&i| self.chips[i].accepts)
            .collect();
        takers.sort_by(|&a, &b| {
            self.deviation(b)
                .partial_cmp(&self.deviation(a))
                .unwrap_or(Ordering::Equal)
                .then(a.cmp(&b))
        });
        for &from in &takers {
            for &to in takers.iter().rev() {
                if !self.improves(from, to) {
                    break;
                }
                if !(self.out(from, tolerance) || self.out(to, tolerance))
                    || self.counts[to] >= self.chips[to].capacity
                {
                    continue;
                }
                if let Some(key) = self.key_for(from, to, cursors) {
                    return Some((key, from, to));
                }
            }
        }
        None
    }
}

/// Plans the moves that bring every accepting chip within `tolerance` of its share (see the
/// module doc); empty when the fleet is already [`balanced`]. Deterministic: the same input
/// gives the same plan.
pub fn plan(chips: &[ChipLoad], keys: &KeyTable, tolerance: Tolerance) -> Vec<Move> {
    let counts = counts(chips, keys);
    let Some(mean) = mean(chips, &counts) else {
        return Vec::new();
    };
    if balanced(chips, &counts, tolerance) {
        return Vec::new();
    }
    let mut work = Work::new(chips, keys, mean);
    let mut cursors = vec![0usize; chips.len() * chips.len()];
    let mut rescanned = false;
    while !balanced(chips, &work.counts, tolerance) {
        match work.next(tolerance, &mut cursors) {
            Some((key, from, to)) => {
                work.make(key, from, to);
                rescanned = false;
            }
            // A key passed over once may have become movable since (its other holders
            // moved): search every list once more from the start before giving up.
            None if !rescanned => {
                cursors.iter_mut().for_each(|c| *c = 0);
                rescanned = true;
            }
            None => break,
        }
    }
    debug_assert!(check(chips, keys, &work.moves).is_ok());
    work.moves
}

/// Checks a plan against the rule: each move takes a copy from a chip that holds it to an
/// accepting chip that does not, within capacity, never lowering the number of zones the key
/// spans, and brings the two chips closer to their shares (so planning again converges); no
/// key changes its number of holders. Says which move breaks what.
pub fn check(chips: &[ChipLoad], keys: &KeyTable, moves: &[Move]) -> Result<(), String> {
    let mut table = keys.clone();
    let mut counts = counts(chips, keys);
    let mean = mean(chips, &counts).unwrap_or(0.0);
    let deviation = |i: usize, counts: &[u64]| counts[i] as f64 - mean * chips[i].capacity as f64;
    for (n, m) in moves.iter().enumerate() {
        let (Some(from), Some(to)) = (chips.get(m.from as usize), chips.get(m.to as usize)) else {
            return Err(format!("move {n} names a chip that is not in the input"));
        };
        if m.key as usize >= table.len() {
            return Err(format!("move {n} names key {} out of range", m.key));
        }
        let holders = table.holders(m.key);
        if !holders.contains(&m.from) {
            return Err(format!(
                "move {n}: {} does not hold key {}",
                from.chip_id, m.key
            ));
        }
        if holders.contains(&m.to) {
            return Err(format!(
                "move {n}: {} already holds key {}",
                to.chip_id, m.key
            ));
        }
        if !from.accepts {
            return Err(format!("move {n}: {} does not take part", from.chip_id));
        }
        if !to.accepts || counts[m.to as usize] >= to.capacity {
            return Err(format!("move {n}: {} cannot take a key", to.chip_id));
        }
        let before = zone_count(chips, holders.iter().copied());
        if zones_after(chips, holders, m.from, m.to) < before {
            return Err(format!("move {n}: key {} would span fewer zones", m.key));
        }
        if deviation(m.from as usize, &counts) - deviation(m.to as usize, &counts) <= 1.0 {
            return Err(format!(
                "move {n}: {} is not enough above {}'s load for the move to even them out",
                from.chip_id, to.chip_id
            ));
        }
        table.apply(std::slice::from_ref(m));
        counts[m.from as usize] -= 1;
        counts[m.to as usize] += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
