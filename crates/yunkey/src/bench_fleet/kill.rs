//! The kill rounds of `yunkey bench fleet` (see the parent module's doc).

use super::*;

/// One request of the signing load.
struct Outcome {
    user: usize,
    sent: Instant,
    done: Instant,
    ok: bool,
}

struct KillRound {
    rate: u32,
    victim: String,
    keys: u64,
    json: serde_json::Value,
    text: String,
}

/// One kill round (see the module doc).
async fn kill_round(
    fleet: &mut Fleet,
    args: &FleetBenchArgs,
    rate: u32,
    users: &[(String, String)],
    signers: &mut BTreeMap<String, Arc<Signer>>,
    dead: &mut Vec<String>,
) -> anyhow::Result<KillRound> {
    let business = fleet.business()?;
    let operator = fleet.operator()?;
    let device = fleet.device()?;
    let live: Vec<String> = fleet
        .chips
        .keys()
        .filter(|c| !dead.contains(c))
        .cloned()
        .collect();
    wait_chips_up(&operator, &live).await?;
    let chips = list_chips(&operator).await?;
    let victim = chips
        .iter()
        .filter(|c| live.contains(&c.chip_id))
        .max_by_key(|c| c.used)
        .context("no live chip")?
        .chip_id
        .clone();
    let placement = holders(&business, users).await?;
    let codes: BTreeMap<&String, &String> = users.iter().map(|(u, c)| (u, c)).collect();
    let mut on_victim: Vec<Arc<Signer>> = Vec::new();
    for (user, h) in &placement {
        if on_victim.len() == args.sign_users || !h.contains(&victim) {
            continue;
        }
        if !signers.contains_key(user) {
            let s = register(&device, user, codes[user]).await?;
            signers.insert(user.clone(), Arc::new(s));
        }
        on_victim.push(signers[user].clone());
    }
    let keys = keys_on(&operator, &victim).await?;
    eprintln!(
        "bench fleet: round at --repair-rate {rate}: killing {victim} ({keys} keys); {} of its users sign",
        on_victim.len()
    );

    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (kill_tx, kill_rx) = watch::channel(false);
    let interval = Duration::from_millis(args.sign_interval_ms);
    let n = on_victim.len().max(1) as f64;
    let tasks: Vec<_> = on_victim
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (s, conn, outcomes, stop, mut killed) = (
                s.clone(),
                business.clone(),
                outcomes.clone(),
                stop.clone(),
                kill_rx.clone(),
            );
            tokio::spawn(async move {
                // Spread the users' first requests over one interval.
                tokio::time::sleep(interval.mul_f64(i as f64 / n)).await;
                while !stop.load(Ordering::Relaxed) {
                    let req = sign_request(&s);
                    let sent = Instant::now();
                    let ok = conn
                        .call(|ch| {
                            let req = req.clone();
                            async move { key_client(ch).sign(req).await }
                        })
                        .await
                        .is_ok();
                    outcomes.lock().expect("poisoned").push(Outcome {
                        user: i,
                        sent,
                        done: Instant::now(),
                        ok,
                    });
                    // The next request at the interval, or at once when the chip is killed.
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        r = killed.changed() => if r.is_err() { tokio::time::sleep(interval).await },
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    fleet.kill9(&victim)?;
    let killed_at = Instant::now();
    let _ = kill_tx.send(true);
    dead.push(victim.clone());

    // Repair: the victim's committed key count, every 50 ms.
    let mut first_drop = None;
    let end = killed_at + Duration::from_secs(args.repair_timeout);
    let zero = loop {
        let left = keys_on(&operator, &victim).await?;
        let now = Instant::now();
        if left < keys && first_drop.is_none() {
            first_drop = Some(now);
        }
        if left == 0 {
            break now;
        }
        if now > end {
            bail!(
                "{victim} still listed by {left} keys {:?} after the kill",
                args.repair_timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let first_drop = first_drop.unwrap_or(zero);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let outcomes = std::mem::take(&mut *outcomes.lock().expect("poisoned"));
    let errors = outcomes.iter().filter(|o| !o.ok).count();
    let mut again: Vec<f64> = Vec::new();
    let mut never = 0;
    for u in 0..on_victim.len() {
        let first = outcomes
            .iter()
            .filter(|o| o.user == u && o.ok && o.sent >= killed_at)
            .map(|o| (o.done - killed_at).as_secs_f64() * 1000.0)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))));
        match first {
            Some(ms) => again.push(ms),
            None => never += 1,
        }
    }
    let in_flight: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.sent < killed_at && o.done > killed_at)
        .map(|o| (o.done - o.sent).as_secs_f64() * 1000.0)
        .collect();
    let mut during: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.ok && o.sent >= first_drop && o.done <= zero)
        .map(|o| (o.done - o.sent).as_secs_f64() * 1000.0)
        .collect();
    let window = (zero - first_drop).as_secs_f64();
    let repair_rate = if window > 0.0 {
        Some(keys.saturating_sub(1) as f64 / window)
    } else {
        None
    };
    let again_stats = stats_ms(&mut again);
    let during_stats = stats_ms(&mut during);
    let json = json!({
        "repair_rate_setting": rate,
        "victim": victim,
        "victim_keys": keys,
        "signing_users": on_victim.len(),
        "sign_interval_ms": args.sign_interval_ms,
        "sign_requests": outcomes.len(),
        "sign_errors": errors,
        "time_to_sign_again": again_stats,
        "users_never_signed_again": never,
        "in_flight_at_kill": { "count": in_flight.len(), "max_ms": in_flight.iter().copied().fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v)))) },
        "sign_latency_during_repair": during_stats,
        "kill_to_first_move_s": (first_drop - killed_at).as_secs_f64(),
        "kill_to_repaired_s": (zero - killed_at).as_secs_f64(),
        "repair_window_s": window,
        "repair_users_per_second": repair_rate,
    });
    let f =
        |v: &serde_json::Value, k: &str| v[k].as_f64().map_or("-".into(), |x| format!("{x:.0}"));
    let text = format!(
        "--repair-rate {rate}: killed {victim} ({keys} keys), {} of its users signing every {} ms\n  \
         time to sign again after the kill (ms): median {}, p99 {}, max {} over {} users ({never} never); \
         {errors} failed requests of {}; {} in flight at the kill\n  \
         repair: first move {:.2} s after the kill, all {keys} moved {:.2} s after it: {} users/s \
         (over {window:.2} s); sign latency meanwhile p50 {} ms, p99 {} ms\n",
        on_victim.len(),
        args.sign_interval_ms,
        f(&again_stats, "median_ms"),
        f(&again_stats, "p99_ms"),
        f(&again_stats, "max_ms"),
        again_stats["count"],
        outcomes.len(),
        in_flight.len(),
        (first_drop - killed_at).as_secs_f64(),
        (zero - killed_at).as_secs_f64(),
        repair_rate.map_or("-".into(), |r| format!("{r:.0}")),
        f(&during_stats, "median_ms"),
        f(&during_stats, "p99_ms"),
    );
    eprint!("bench fleet: {text}");
    Ok(KillRound {
        rate,
        victim,
        keys,
        json,
        text,
    })
}

/// The kill rounds' cluster (see the module doc).
pub(super) async fn kill_rounds(
    args: &FleetBenchArgs,
    dir: PathBuf,
) -> anyhow::Result<(serde_json::Value, String)> {
    let mut fleet = Fleet::new(&dir)?;
    let chips: Vec<ChipSpec> = (1..=args.chips)
        .map(|i| ChipSpec {
            id: format!("chip-{i}"),
            zone: format!("zone-{}", i % 3 + 1),
            capacity: 1_000_000,
        })
        .collect();
    fleet.start_chips(&chips)?;
    fleet
        .start_coordinators(
            args.coordinators,
            &coordinator_flags(args, args.repair_rates[0]),
        )
        .await?;
    let business = fleet.business()?;
    let (users, took) = enrol(&business, "fleet", args.users, args.enroll_concurrency).await?;
    let enrol_rate = users.len() as f64 / took.as_secs_f64();
    eprintln!(
        "bench fleet: {} users enrolled in {took:.1?} ({enrol_rate:.0}/s)",
        users.len()
    );
    let mut signers = BTreeMap::new();
    let mut dead = Vec::new();
    let mut rounds = Vec::new();
    for (i, &rate) in args.repair_rates.iter().enumerate() {
        if i > 0 {
            fleet.restart_coordinators(&coordinator_flags(args, rate))?;
        }
        rounds.push(kill_round(&mut fleet, args, rate, &users, &mut signers, &mut dead).await?);
    }
    let json = json!({
        "chips": args.chips,
        "coordinators": args.coordinators,
        "users": users.len(),
        "enrolments_per_second": enrol_rate,
        "down_after_s": args.down_after,
        "rounds": rounds.iter().map(|r| r.json.clone()).collect::<Vec<_>>(),
    });
    let mut text = format!(
        "kill rounds: {} chips, {} coordinators, {} users (enrolled at {enrol_rate:.0}/s), chips down after {} s\n",
        args.chips,
        args.coordinators,
        users.len(),
        args.down_after
    );
    for r in &rounds {
        debug_assert!(r.rate > 0 && !r.victim.is_empty() && r.keys > 0);
        text.push_str(&r.text);
    }
    Ok((json, text))
}
