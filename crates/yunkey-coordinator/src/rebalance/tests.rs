use super::*;
use proptest::prelude::*;

fn chip(id: &str, zone: &str, capacity: u64) -> ChipLoad {
    ChipLoad {
        chip_id: id.into(),
        zone: zone.into(),
        capacity,
        accepts: true,
    }
}

/// Sum over accepting chips of (copies − share)²: every planned move lowers it.
fn potential(chips: &[ChipLoad], keys: &KeyTable) -> f64 {
    let counts = counts(chips, keys);
    let Some(mean) = mean(chips, &counts) else {
        return 0.0;
    };
    chips
        .iter()
        .zip(&counts)
        .filter(|(c, _)| c.accepts)
        .map(|(c, &n)| (n as f64 - mean * c.capacity as f64).powi(2))
        .sum()
}

/// Whether some allowed move would still even out a chip that is out of tolerance.
fn improving_move_left(chips: &[ChipLoad], keys: &KeyTable) -> bool {
    let counts = counts(chips, keys);
    let Some(mean) = mean(chips, &counts) else {
        return false;
    };
    let work = Work::new(chips, keys, mean);
    let tolerance = Tolerance::default();
    (0..chips.len()).any(|d| {
        (0..chips.len()).any(|r| {
            chips[d].accepts
                && d != r
                && work.improves(d, r)
                && (work.out(d, tolerance) || work.out(r, tolerance))
                && (0..keys.len() as u32).any(|k| work.allowed(k, d, r))
        })
    })
}

#[test]
fn a_chip_that_joins_gets_its_share_and_zones_stay_spread() {
    // Three chips, two zones, 30 keys of R = 2 on distinct zones; chip d (zone 2) joins empty.
    let mut chips = vec![
        chip("a", "z1", 100),
        chip("b", "z2", 100),
        chip("c", "z1", 100),
    ];
    let mut keys = KeyTable::default();
    for i in 0..30u32 {
        let z1 = if i % 2 == 0 { 0 } else { 2 };
        keys.push([z1, 1]);
    }
    assert!(plan(&chips, &keys, Tolerance::default()).is_empty());
    chips.push(chip("d", "z2", 100));
    let moves = plan(&chips, &keys, Tolerance::default());
    check(&chips, &keys, &moves).unwrap();
    // b held all 30 zone-2 copies; d takes them until both are within the tolerance of their
    // share of 15 (10 % of it is 1.5 copies), and no key loses its second zone.
    assert_eq!(moves.len(), 14);
    assert!(moves.iter().all(|m| m.from == 1 && m.to == 3));
    keys.apply(&moves);
    assert_eq!(counts(&chips, &keys), [15, 16, 15, 14]);
    assert!(balanced(
        &chips,
        &counts(&chips, &keys),
        Tolerance::default()
    ));
}

#[test]
fn within_tolerance_nothing_moves_and_capacity_weights_the_share() {
    let chips = [chip("a", "z", 100), chip("b", "z", 300)];
    let mut keys = KeyTable::default();
    for _ in 0..10 {
        keys.push([0]);
    }
    for _ in 0..30 {
        keys.push([1]);
    }
    assert!(plan(&chips, &keys, Tolerance::default()).is_empty());
    let mut skewed = KeyTable::default();
    for _ in 0..40 {
        skewed.push([0]);
    }
    let moves = plan(&chips, &skewed, Tolerance::default());
    skewed.apply(&moves);
    // Shares 10 and 30; a stops one copy above its share (the tolerance's floor is one copy).
    assert_eq!(counts(&chips, &skewed), [11, 29]);
    assert!(balanced(
        &chips,
        &counts(&chips, &skewed),
        Tolerance::default()
    ));
}

#[test]
fn draining_and_down_chips_take_no_part() {
    let mut chips = vec![
        chip("a", "z", 100),
        chip("b", "z", 100),
        chip("c", "z", 100),
    ];
    chips[0].accepts = false;
    let mut keys = KeyTable::default();
    for _ in 0..20 {
        keys.push([0, 1]);
    }
    let moves = plan(&chips, &keys, Tolerance::default());
    check(&chips, &keys, &moves).unwrap();
    assert!(moves.iter().all(|m| m.from == 1 && m.to == 2));
    assert_eq!(moves.len(), 9);
}

#[test]
fn check_names_what_a_bad_plan_breaks() {
    let chips = [chip("a", "z1", 10), chip("b", "z2", 10), chip("c", "z1", 1)];
    let mut keys = KeyTable::default();
    keys.push([0, 1]);
    keys.push([2]);
    let bad = |m: Move| check(&chips, &keys, &[m]).unwrap_err();
    assert!(bad(Move {
        key: 0,
        from: 2,
        to: 1
    })
    .contains("does not hold"));
    assert!(bad(Move {
        key: 0,
        from: 0,
        to: 1
    })
    .contains("already holds"));
    assert!(bad(Move {
        key: 0,
        from: 1,
        to: 2
    })
    .contains("cannot take"));
    assert!(bad(Move {
        key: 1,
        from: 2,
        to: 9
    })
    .contains("not in the input"));
    let chips = [
        chip("a", "z1", 10),
        chip("b", "z2", 10),
        chip("c", "z1", 10),
    ];
    assert!(check(
        &chips,
        &keys,
        &[Move {
            key: 0,
            from: 1,
            to: 2
        }]
    )
    .unwrap_err()
    .contains("fewer zones"));
    // One copy on a, none on b: moving it only swaps which chip is off its share.
    let chips = [chip("a", "z", 10), chip("b", "z", 10)];
    let mut one = KeyTable::default();
    one.push([0]);
    assert!(check(
        &chips,
        &one,
        &[Move {
            key: 0,
            from: 0,
            to: 1
        }]
    )
    .unwrap_err()
    .contains("even them out"));
}

prop_compose! {
    fn fleet()(
        shape in prop::collection::vec((0u8..3, 20u64..200, prop::bool::weighted(0.85)), 2..10),
        replicas in 1usize..=3,
        seeds in prop::collection::vec(any::<u64>(), 0..300),
        joins in 0usize..3,
    ) -> (Vec<ChipLoad>, KeyTable) {
        let mut chips: Vec<ChipLoad> = shape
            .iter()
            .enumerate()
            .map(|(i, &(zone, capacity, accepts))| ChipLoad {
                chip_id: format!("c{i}"),
                zone: format!("z{zone}"),
                capacity,
                accepts,
            })
            .collect();
        let n = chips.len() as u64;
        let mut keys = KeyTable::default();
        let mut load = vec![0u64; chips.len()];
        for seed in seeds {
            // Distinct holders with room, picked from the seed.
            let mut holders: Vec<u32> = Vec::new();
            for j in 0..replicas as u64 {
                let start = (seed.rotate_left(j as u32 * 17) % n) as usize;
                if let Some(h) = (0..chips.len())
                    .map(|k| (start + k) % chips.len())
                    .find(|&h| !holders.contains(&(h as u32)) && load[h] < chips[h].capacity)
                {
                    holders.push(h as u32);
                    load[h] += 1;
                }
            }
            if !holders.is_empty() {
                keys.push(holders);
            }
        }
        // Chips that join empty after the keys were placed.
        for j in 0..joins {
            chips.push(ChipLoad {
                chip_id: format!("new{j}"),
                zone: format!("z{j}"),
                capacity: 150,
                accepts: true,
            });
        }
        (chips, keys)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every plan passes `check`: no key loses a holder or a zone, no chip overflows, only
    /// accepting chips give and take.
    #[test]
    fn plans_keep_holders_zones_and_capacity((chips, keys) in fleet()) {
        let moves = plan(&chips, &keys, Tolerance::default());
        prop_assert_eq!(check(&chips, &keys, &moves), Ok(()));
        let mut after = keys.clone();
        after.apply(&moves);
        for key in 0..keys.len() as u32 {
            prop_assert_eq!(after.holders(key).len(), keys.holders(key).len());
            let before_zones = zone_count(&chips, keys.holders(key).iter().copied());
            prop_assert!(zone_count(&chips, after.holders(key).iter().copied()) >= before_zones);
        }
    }

    /// The same input gives the same plan.
    #[test]
    fn plans_are_deterministic((chips, keys) in fleet()) {
        prop_assert_eq!(
            plan(&chips, &keys, Tolerance::default()),
            plan(&chips, &keys, Tolerance::default())
        );
    }

    /// Planning again after applying a plan converges: every plan lowers the sum of squared
    /// deviations from the chips' shares, and a fixed point comes within a few rounds.
    #[test]
    fn replanning_converges((chips, mut keys) in fleet()) {
        let mut last = potential(&chips, &keys);
        let mut rounds = 0;
        loop {
            let moves = plan(&chips, &keys, Tolerance::default());
            if moves.is_empty() {
                break;
            }
            keys.apply(&moves);
            let now = potential(&chips, &keys);
            prop_assert!(now < last, "round {rounds}: {now} after {last}");
            last = now;
            rounds += 1;
            prop_assert!(rounds <= 10, "no fixed point after 10 rounds");
        }
    }

    /// One plan either balances the fleet within the tolerance, or leaves no allowed move that
    /// would still help a chip out of tolerance; with one zone and room, it balances.
    #[test]
    fn one_plan_balances_or_nothing_allowed_helps((chips, mut keys) in fleet()) {
        let moves = plan(&chips, &keys, Tolerance::default());
        keys.apply(&moves);
        prop_assert!(
            balanced(&chips, &counts(&chips, &keys), Tolerance::default())
                || !improving_move_left(&chips, &keys)
        );
    }
}

#[test]
fn one_zone_fleets_of_many_keys_balance_in_one_plan() {
    // Enough keys per chip that holder clashes cannot block the shares.
    for joining in 1..=3u64 {
        let mut chips: Vec<ChipLoad> = (0..5).map(|i| chip(&format!("c{i}"), "z", 1_000)).collect();
        let mut keys = KeyTable::default();
        for k in 0..2_000u32 {
            keys.push([k % 5, (k / 5 + k % 5 + 1) % 5]);
        }
        for j in 0..joining {
            chips.push(chip(&format!("new{j}"), "z", 500 + 250 * j));
        }
        let moves = plan(&chips, &keys, Tolerance::default());
        check(&chips, &keys, &moves).unwrap();
        keys.apply(&moves);
        assert!(balanced(
            &chips,
            &counts(&chips, &keys),
            Tolerance::default()
        ));
    }
}
