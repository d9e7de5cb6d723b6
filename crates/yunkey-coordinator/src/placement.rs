//! Placement: which chips get a new key. A pure function of the registry and health, so it
//! is deterministic and testable; the leader computes it, Raft commits the outcome.
//!
//! Rule: among routable chips with free capacity, prefer zones not yet used (by the chips
//! chosen so far and, when a key is repaired, by its surviving holders), then the most free
//! capacity (ties by chip id). Returns up to `replicas` chips.

use crate::state::ChipRecord;

/// A chip as placement sees it.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// The registry record.
    pub chip: &'a ChipRecord,
    /// Whether it is healthy enough to receive keys.
    pub routable: bool,
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
