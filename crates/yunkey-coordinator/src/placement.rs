//! Placement: which chips get a new key. A pure function of the registry and health, so it
//! is deterministic and testable; the leader computes it, Raft commits the outcome.
//!
//! Rule: among routable chips with free capacity, prefer zones not yet used (by the chips
//! chosen so far and, when a key is repaired, by its surviving holders), then the most free
//! capacity (ties by chip id). Returns up to `replicas` chips.
//!
//! The registry counts a key on its chips once its enrolment commits. [`InFlight`] counts
//! the keys this coordinator is placing and has not committed yet, so that enrolments at
//! the same time spread over the chips instead of all choosing the emptiest ones.

use crate::state::ChipRecord;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A chip as placement sees it.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// The registry record.
    pub chip: &'a ChipRecord,
    /// Whether it is healthy enough to receive keys.
    pub routable: bool,
}

/// Keys this coordinator is placing now, by chip: chosen, not yet counted in the registry.
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    counts: Arc<Mutex<HashMap<String, u64>>>,
}

/// Keeps the keys of one placement counted as placed until it drops (the enrolment has
/// committed, and the registry counts them, or it failed).
#[derive(Debug)]
pub struct Placing {
    in_flight: InFlight,
    chips: Vec<String>,
}

impl InFlight {
    /// Chooses up to `replicas` chips ([`place`]) among `registry`, each counted with the
    /// keys this coordinator is placing on it now, `placeable` saying which may take keys;
    /// the chosen chips count this key until the returned [`Placing`] drops.
    pub fn place(
        &self,
        registry: &[ChipRecord],
        placeable: impl Fn(&str) -> bool,
        replicas: usize,
    ) -> (Vec<ChipRecord>, Placing) {
        let mut counts = self.counts.lock().expect("poisoned");
        let counted: Vec<ChipRecord> = registry
            .iter()
            .map(|chip| ChipRecord {
                placed: chip.placed + counts.get(&chip.chip_id).copied().unwrap_or(0),
                ..chip.clone()
            })
            .collect();
        let candidates: Vec<_> = counted
            .iter()
            .map(|chip| Candidate {
                chip,
                routable: placeable(&chip.chip_id),
            })
            .collect();
        let chosen_ids: Vec<String> = place(&candidates, replicas)
            .iter()
            .map(|c| c.chip_id.clone())
            .collect();
        for id in &chosen_ids {
            *counts.entry(id.clone()).or_default() += 1;
        }
        let chosen = chosen_ids
            .iter()
            .filter_map(|id| registry.iter().find(|c| &c.chip_id == id).cloned())
            .collect();
        let placing = Placing {
            in_flight: self.clone(),
            chips: chosen_ids,
        };
        (chosen, placing)
    }

    /// Keys being placed on `chip_id` now.
    pub fn on(&self, chip_id: &str) -> u64 {
        let counts = self.counts.lock().expect("poisoned");
        counts.get(chip_id).copied().unwrap_or(0)
    }
}

impl Drop for Placing {
    fn drop(&mut self) {
        let mut counts = match self.in_flight.counts.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        for id in &self.chips {
            if let Some(n) = counts.get_mut(id) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(id);
                }
            }
        }
    }
}

/// Chooses up to `replicas` chips for a new key; see the module doc.
pub fn place<'a>(candidates: &[Candidate<'a>], replicas: usize) -> Vec<&'a ChipRecord> {
    place_beside(candidates, replicas, &[])
}

/// Chooses up to `replicas` more chips for a key whose surviving holders are in `zones_held`:
/// zones not held come first; see the module doc.
pub fn place_beside<'a>(
    candidates: &[Candidate<'a>],
    replicas: usize,
    zones_held: &[&str],
) -> Vec<&'a ChipRecord> {
    let mut free: Vec<&ChipRecord> = candidates
        .iter()
        .filter(|c| c.routable && c.chip.placed < c.chip.capacity)
        .map(|c| c.chip)
        .collect();
    free.sort_by(|a, b| {
        (b.capacity - b.placed)
            .cmp(&(a.capacity - a.placed))
            .then_with(|| a.chip_id.cmp(&b.chip_id))
    });
    let mut chosen: Vec<&ChipRecord> = Vec::with_capacity(replicas);
    // First pass: one chip per zone; second pass: fill up regardless of zone.
    for pass in 0..2 {
        for chip in &free {
            if chosen.len() == replicas {
                break;
            }
            let zone_taken = chosen.iter().any(|c| c.zone == chip.zone)
                || zones_held.contains(&chip.zone.as_str());
            let already = chosen.iter().any(|c| c.chip_id == chip.chip_id);
            if !already && (pass == 1 || !zone_taken) {
                chosen.push(chip);
            }
        }
    }
    debug_assert!(check(&chosen, replicas));
    chosen
}

/// The invariants of a placement: no chip twice, at most `replicas` chips, none full.
pub fn check(chosen: &[&ChipRecord], replicas: usize) -> bool {
    let mut ids: Vec<_> = chosen.iter().map(|c| &c.chip_id).collect();
    ids.sort();
    ids.dedup();
    ids.len() == chosen.len()
        && chosen.len() <= replicas
        && chosen.iter().all(|c| c.placed < c.capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chip(id: &str, zone: &str, capacity: u64, placed: u64) -> ChipRecord {
        ChipRecord {
            chip_id: id.into(),
            endpoint: String::new(),
            zone: zone.into(),
            capacity,
            placed,
            transport_key: vec![],
            admitted_at: 0,
            admission_signature: vec![],
        }
    }

    fn routable(chips: &[ChipRecord]) -> Vec<Candidate<'_>> {
        chips
            .iter()
            .map(|chip| Candidate {
                chip,
                routable: true,
            })
            .collect()
    }

    #[test]
    fn placements_in_flight_spread_over_the_chips() {
        let chips = [
            chip("a", "z1", 100, 0),
            chip("b", "z2", 100, 0),
            chip("c", "z3", 100, 0),
            chip("d", "z4", 100, 0),
        ];
        let in_flight = InFlight::default();
        let mut held = Vec::new();
        let mut per_chip: std::collections::HashMap<String, u64> = Default::default();
        // 40 enrolments at once, none committed: each chip gets its share, as if counted.
        for _ in 0..40 {
            let (chosen, placing) = in_flight.place(&chips, |_| true, 2);
            assert_eq!(chosen.len(), 2);
            for c in &chosen {
                *per_chip.entry(c.chip_id.clone()).or_default() += 1;
                // The registry's own record comes back, not the counted copy.
                assert_eq!(c.placed, 0);
            }
            held.push(placing);
        }
        for id in ["a", "b", "c", "d"] {
            assert_eq!(per_chip[id], 20, "{per_chip:?}");
            assert_eq!(in_flight.on(id), 20);
        }
        // Done (committed or failed): no longer counted here.
        drop(held);
        for id in ["a", "b", "c", "d"] {
            assert_eq!(in_flight.on(id), 0);
        }
        // An unplaceable chip is never chosen.
        let (chosen, _placing) = in_flight.place(&chips, |id| id != "a", 3);
        assert!(chosen.iter().all(|c| c.chip_id != "a"), "{chosen:?}");
    }

    #[test]
    fn prefers_zones_then_free_capacity() {
        let chips = [
            chip("a", "z1", 10, 0),
            chip("b", "z1", 10, 1),
            chip("c", "z2", 10, 5),
        ];
        let cands = routable(&chips);
        let ids: Vec<_> = place(&cands, 2)
            .iter()
            .map(|c| c.chip_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "c"]);
        let ids: Vec<_> = place(&cands, 3)
            .iter()
            .map(|c| c.chip_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "c", "b"]);
    }

    #[test]
    fn skips_full_and_unroutable() {
        let chips = [
            chip("a", "z1", 1, 1),
            chip("b", "z2", 10, 0),
            chip("c", "z3", 10, 0),
        ];
        let cands = [
            Candidate {
                chip: &chips[0],
                routable: true,
            },
            Candidate {
                chip: &chips[1],
                routable: false,
            },
            Candidate {
                chip: &chips[2],
                routable: true,
            },
        ];
        let ids: Vec<_> = place(&cands, 2)
            .iter()
            .map(|c| c.chip_id.as_str())
            .collect();
        assert_eq!(ids, ["c"]);
        assert!(place(&cands[..2], 2).is_empty());
    }

    #[test]
    fn a_repair_prefers_the_zones_the_survivors_are_not_in() {
        let chips = [
            chip("a", "z1", 10, 0),
            chip("b", "z1", 10, 0),
            chip("c", "z2", 10, 9),
        ];
        let cands = routable(&chips);
        // Without survivors the emptiest chip wins; beside a survivor in z1, z2 does.
        assert_eq!(place(&cands, 1)[0].chip_id, "a");
        assert_eq!(place_beside(&cands, 1, &["z1"])[0].chip_id, "c");
        // When no other zone has room, a chip of a held zone is still chosen.
        assert_eq!(place_beside(&cands[..2], 1, &["z1"])[0].chip_id, "a");
    }

    #[test]
    fn deterministic() {
        let chips: Vec<_> = (0..20)
            .map(|i| chip(&format!("c{i:02}"), &format!("z{}", i % 3), 100, i))
            .collect();
        let cands = routable(&chips);
        let a: Vec<_> = place(&cands, 3).iter().map(|c| c.chip_id.clone()).collect();
        let b: Vec<_> = place(&cands, 3).iter().map(|c| c.chip_id.clone()).collect();
        assert_eq!(a, b);
        assert!(check(&place(&cands, 3), 3));
    }
}
