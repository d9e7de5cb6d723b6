//! A closed-loop load at one concurrency level, shared by `yunkey bench` and
//! `yunkey bench cluster`: that many workers each repeat one call for a time window; the
//! result is the rate of operations done by successful calls (one per call, or a batch
//! call's items), the calls' p50/p99 latency and the errors.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    let hist = Arc::new(Mutex::new(hdrhistogram::Histogram::<u64>::new(3)?));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let mut call = worker(w);
            let (hist, stop, ok, errors, first_error) = (
                hist.clone(),
                stop.clone(),
                ok.clone(),
                errors.clone(),
                first_error.clone(),
            );
            tokio::spawn(async move {
                let mut local = hdrhistogram::Histogram::<u64>::new(3).expect("valid bounds");
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let result = call(i).await;
                    i += 1;
                    match result {
                        Ok(done) => {
                            local.record(t.elapsed().as_micros() as u64).ok();
                            ok.fetch_add(done, Ordering::Relaxed);
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            let mut first = first_error.lock().expect("poisoned");
                            if first.is_none() {
                                *first = Some(format!("{:?}: {}", e.code(), e.message()));
                            }
                        }
                    }
                }
                hist.lock().expect("poisoned").add(&local).ok();
            })
        })
        .collect();
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let hist = hist.lock().expect("poisoned");
    let ok = ok.load(Ordering::Relaxed);
    let first_error = first_error.lock().expect("poisoned").clone();
    Ok(Level {
        concurrency,
        ok,
        errors: errors.load(Ordering::Relaxed),
        rate: ok as f64 / elapsed,
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        first_error,
    })
}
