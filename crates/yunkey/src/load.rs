//! The loads of `yunkey bench` and `yunkey bench cluster`.
//!
//! - [`run_level`], closed loop at one concurrency level: that many workers each repeat one
//!   call for a time window.
//! - [`run_paced`], open loop at one rate: calls leave on a fixed schedule whether or not
//!   earlier ones have returned, and each call's latency counts from the time it was due, so a
//!   client that falls behind shows in the latency instead of hiding it (no coordinated
//!   omission).
//!
//! Either gives the rate of operations done by successful calls (one per call, or a batch
//! call's items), the calls' p50/p99 latency and the errors.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

/// The figures of one level.
pub struct Level {
    /// Calls in flight.
    pub concurrency: usize,
    /// Operations done by successful calls (a batch call counts its items).
    pub ok: u64,
    /// Failed calls.
    pub errors: u64,
    /// Operations per second.
    pub rate: f64,
    /// Median latency of successful calls.
    pub p50_ms: f64,
    /// 99th percentile latency of successful calls.
    pub p99_ms: f64,
    /// The first failure's code and message.
    pub first_error: Option<String>,
}

impl Level {
    /// The level as JSON; the rate is named `rate_name` (for example `signatures_per_second`).
    pub fn json(&self, rate_name: &str) -> serde_json::Value {
        serde_json::json!({
            "concurrency": self.concurrency, "ok": self.ok, "errors": self.errors,
            rate_name: self.rate, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms,
            "first_error": self.first_error,
        })
    }
}

/// What the calls of one level gave, shared by the tasks that make them.
#[derive(Clone)]
struct Tally {
    hist: Arc<Mutex<Histogram<u64>>>,
    ok: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    first_error: Arc<Mutex<Option<String>>>,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            hist: Arc::new(Mutex::new(Histogram::new(3)?)),
            ok: Arc::default(),
            errors: Arc::default(),
            first_error: Arc::default(),
        })
    }

    /// Counts one call: a success's operations, with its latency in `hist`; a failure, whose
    /// code and message are kept if it is the first.
    fn count(
        &self,
        result: Result<u64, tonic::Status>,
        latency: Duration,
        hist: &mut Histogram<u64>,
    ) {
        match result {
            Ok(done) => {
                hist.record(latency.as_micros() as u64).ok();
                self.ok.fetch_add(done, Ordering::Relaxed);
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().expect("poisoned");
                if first.is_none() {
                    *first = Some(format!("{:?}: {}", e.code(), e.message()));
                }
            }
        }
    }

    /// The level's figures, `elapsed` after it started.
    fn level(&self, concurrency: usize, elapsed: Duration) -> Level {
        let hist = self.hist.lock().expect("poisoned");
        let ok = self.ok.load(Ordering::Relaxed);
        Level {
            concurrency,
            ok,
            errors: self.errors.load(Ordering::Relaxed),
            rate: ok as f64 / elapsed.as_secs_f64(),
            p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
            first_error: self.first_error.lock().expect("poisoned").clone(),
        }
    }
}

/// Runs `concurrency` workers for `window`. `worker(w)` makes worker `w`'s call: called with
/// 0, 1, 2, ... until the window closes, it returns one call's future, which gives the number
/// of operations the call did (1 for a single call).
pub async fn run_level<W, C, Fut>(
    concurrency: usize,
    window: Duration,
    worker: W,
) -> anyhow::Result<Level>
where
    W: Fn(usize) -> C,
    C: FnMut(u64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<u64, tonic::Status>> + Send,
{
    let tally = Tally::new()?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let mut call = worker(w);
            let (tally, stop) = (tally.clone(), stop.clone());
            tokio::spawn(async move {
                // Each worker times into its own histogram, merged at the end: no lock per call.
                let mut local = Histogram::<u64>::new(3).expect("valid bounds");
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let result = call(i).await;
                    i += 1;
                    tally.count(result, t.elapsed(), &mut local);
                }
                tally.hist.lock().expect("poisoned").add(&local).ok();
            })
        })
        .collect();
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await?;
    }
    Ok(tally.level(concurrency, started.elapsed()))
}

/// The figures of one open-loop level ([`run_paced`]).
pub struct Paced {
    /// Calls per second the schedule asked for.
    pub target_rate: f64,
    /// The figures measured; `concurrency` is the most calls that were in flight at once.
    pub level: Level,
}

impl Paced {
    /// The level as JSON (see [`Level::json`]), with the asked-for call rate and the most calls
    /// in flight at once.
    pub fn json(&self, rate_name: &str) -> serde_json::Value {
        let mut v = self.level.json(rate_name);
        v["target_calls_per_second"] = self.target_rate.into();
        v["max_in_flight"] = self.level.concurrency.into();
        if let Some(fields) = v.as_object_mut() {
            fields.remove("concurrency");
        }
        v
    }
}

/// Sends `call(0)`, `call(1)`, ... at `rate` calls per second for `window` (at least one
/// call), each due at `start + i / rate`, with at most `max_in_flight` calls outstanding
/// (when that many are, the next call waits, and its wait counts in its latency). A call's
/// latency runs from the time it was due to its reply. Tokio's timer ticks in milliseconds,
/// so the calls due within one tick leave together.
pub async fn run_paced<C, Fut>(
    rate: f64,
    window: Duration,
    max_in_flight: usize,
    mut call: C,
) -> anyhow::Result<Paced>
where
    C: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<u64, tonic::Status>> + Send + 'static,
{
    anyhow::ensure!(
        rate.is_finite() && rate > 0.0,
        "a paced level needs a positive rate, not {rate}"
    );
    anyhow::ensure!(max_in_flight > 0, "a paced level needs room for one call");
    let tally = Tally::new()?;
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let mut max_seen = 0;
    let mut calls = tokio::task::JoinSet::new();
    let started = Instant::now();
    // At least one call, so that a rate too low for the window still gives a latency.
    let total = ((rate * window.as_secs_f64()).round() as u64).max(1);
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let slot = slots.clone().acquire_owned().await?;
        max_seen = max_seen.max(max_in_flight - slots.available_permits());
        let fut = call(i);
        let tally = tally.clone();
        calls.spawn(async move {
            let result = fut.await;
            let latency = due.elapsed();
            drop(slot);
            tally.count(result, latency, &mut tally.hist.lock().expect("poisoned"));
        });
        // Reap finished calls as they go, so the set stays as small as what is in flight.
        while calls.try_join_next().transpose()?.is_some() {}
    }
    while calls.join_next().await.transpose()?.is_some() {}
    Ok(Paced {
        target_rate: rate,
        level: tally.level(max_seen, started.elapsed()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls of 20 ms each, due every 5 ms for `window`, at most `max_in_flight` at once.
    async fn twenty_ms_calls_every_5_ms(window: Duration, max_in_flight: usize) -> Paced {
        run_paced(200.0, window, max_in_flight, |_| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(1)
        })
        .await
        .unwrap()
    }

    /// Calls that take 20 ms each, due every 5 ms: the schedule keeps its rate (about four
    /// calls overlap) and each latency is at least the call's own 20 ms.
    #[tokio::test]
    async fn paced_calls_leave_on_schedule_and_overlap() {
        let p = twenty_ms_calls_every_5_ms(Duration::from_millis(500), 64).await;
        assert_eq!(p.level.ok, 100, "every scheduled call ran");
        assert!(p.level.p50_ms >= 20.0, "p50 {}", p.level.p50_ms);
        assert!(
            (3..=64).contains(&p.level.concurrency),
            "calls overlapped: at most {} in flight",
            p.level.concurrency
        );
    }

    /// With one call allowed in flight, calls of 20 ms due every 5 ms fall behind, and the
    /// wait shows in the latency (it counts from the time each call was due).
    #[tokio::test]
    async fn a_call_held_back_counts_its_wait() {
        let p = twenty_ms_calls_every_5_ms(Duration::from_millis(200), 1).await;
        assert_eq!(p.level.ok, 40);
        assert_eq!(p.level.concurrency, 1);
        assert!(
            p.level.p99_ms >= 400.0,
            "the last calls waited for the ones before: p99 {} ms",
            p.level.p99_ms
        );
    }

    /// A rate too low for the window still sends one call, so the level has a latency.
    #[tokio::test]
    async fn a_slow_rate_sends_at_least_one_call() {
        let p = run_paced(1.0, Duration::from_millis(100), 4, |_| async { Ok(1) })
            .await
            .unwrap();
        assert_eq!((p.level.ok, p.level.errors, p.level.concurrency), (1, 0, 1));
    }

    #[tokio::test]
    async fn bad_rates_are_refused() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = run_paced(rate, Duration::from_millis(10), 1, |_| async { Ok(1) })
                .await
                .err()
                .expect("refused");
            assert!(err.to_string().contains("positive rate"), "{err}");
        }
    }

    /// Failed calls are counted, not timed, and the first one's code and message are kept.
    #[tokio::test]
    async fn failed_paced_calls_are_counted() {
        let p = run_paced(1000.0, Duration::from_millis(10), 8, |i| async move {
            if i % 2 == 0 {
                Ok(1)
            } else {
                Err(tonic::Status::unavailable("chip down"))
            }
        })
        .await
        .unwrap();
        assert_eq!((p.level.ok, p.level.errors), (5, 5));
        let first = p.level.first_error.unwrap();
        assert!(
            first.contains("Unavailable") && first.contains("chip down"),
            "{first}"
        );
    }
}
