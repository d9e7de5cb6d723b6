//! The drain of `yunkey bench fleet` (see the parent module's doc).

use super::*;

/// The drain's cluster (see the module doc).
pub(super) async fn drain(
    args: &FleetBenchArgs,
    dir: PathBuf,
) -> anyhow::Result<(serde_json::Value, String)> {
    let mut fleet = Fleet::new(&dir)?;
    let mut chips = vec![ChipSpec {
        id: "chip-1".into(),
        zone: "zone-0".into(),
        capacity: 10_000_000,
    }];
    chips.extend((2..=args.chips).map(|i| ChipSpec {
        id: format!("chip-{i}"),
        zone: format!("zone-{}", i % 2 + 1),
        capacity: 1_000_000,
    }));
    fleet.start_chips(&chips)?;
    fleet
        .start_coordinators(
            args.coordinators,
            &coordinator_flags(args, args.drain_repair_rate),
        )
        .await?;
    let business = fleet.business()?;
    let operator = fleet.operator()?;
    let (users, took) = enrol(&business, "drain", args.drain_keys, args.enroll_concurrency).await?;
    let enrol_rate = users.len() as f64 / took.as_secs_f64();
    let keys = keys_on(&operator, "chip-1").await?;
    eprintln!(
        "bench fleet: {} users enrolled in {took:.1?} ({enrol_rate:.0}/s); chip-1 holds {keys} keys; draining it",
        users.len()
    );
    drop(users);
    let started = Instant::now();
    operator
        .call(|ch| async move {
            cluster_client(ch)
                .drain_chip(pb::DrainChipRequest {
                    chip_id: "chip-1".into(),
                    cancel: false,
                })
                .await
        })
        .await?;
    let end = started + Duration::from_secs(args.drain_timeout);
    let mut first_move = None;
    let mut last_report = Instant::now();
    let done = loop {
        let left = keys_on(&operator, "chip-1").await?;
        let now = Instant::now();
        if left < keys && first_move.is_none() {
            first_move = Some(now);
        }
        if left == 0 {
            break now;
        }
        if now > end {
            bail!(
                "chip-1 still holds {left} keys {} s after the drain began",
                args.drain_timeout
            );
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            last_report = now;
            eprintln!(
                "bench fleet: draining: {left} keys left after {:.0} s",
                (now - started).as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let wall = (done - started).as_secs_f64();
    let removed = operator
        .call(|ch| async move {
            cluster_client(ch)
                .remove_chip(pb::RemoveChipRequest {
                    chip_id: "chip-1".into(),
                })
                .await
        })
        .await
        .is_ok();
    let rate = keys as f64 / wall;
    let json = json!({
        "chips": args.chips,
        "coordinators": args.coordinators,
        "users": args.drain_keys,
        "enrolments_per_second": enrol_rate,
        "enrolment_s": took.as_secs_f64(),
        "drained_chip_keys": keys,
        "repair_rate_setting": args.drain_repair_rate,
        "drain_wall_s": wall,
        "drain_first_move_s": first_move.map(|t| (t - started).as_secs_f64()),
        "drain_keys_per_second": rate,
        "removed_after": removed,
    });
    let text = format!(
        "drain: {} chips, {} coordinators; chip-1 held {keys} keys ({} users enrolled at {enrol_rate:.0}/s in {:.0} s)\n  \
         --repair-rate {}: drained in {wall:.1} s ({rate:.0} keys/s); RemoveChip after it: {}\n",
        args.chips,
        args.coordinators,
        args.drain_keys,
        took.as_secs_f64(),
        args.drain_repair_rate,
        if removed { "accepted" } else { "REFUSED" }
    );
    eprint!("bench fleet: {text}");
    Ok((json, text))
}
