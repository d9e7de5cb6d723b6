//! Bounded logging of refused unauthenticated calls. Anyone can send those, so one log line
//! per refusal would let anyone fill the disk (48,000 guesses made 16 MB of log). Per process,
//! the first [`LOGGED_PER_WINDOW`] refusals of each [`WINDOW`] are logged in full (the audit
//! line, with the distinct internal reason); the rest are only counted, and one summary line
//! per window says how many were not logged. The metrics count every refusal.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refusals logged in full per window.
pub const LOGGED_PER_WINDOW: u32 = 10;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(10);

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it in full.
    Log,
    /// Count it only.
    Suppress,
}

/// Refusals not logged in a window that ended, by RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppressed {
    /// `(rpc, count)`, each RPC once.
    pub by_rpc: Vec<(&'static str, u64)>,
    /// How long the window lasted.
    pub over: Duration,
}

impl Suppressed {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.by_rpc.iter().map(|(_, n)| n).sum()
    }

    /// Writes the summary line.
    pub fn log(&self) {
        let by_rpc = self
            .by_rpc
            .iter()
            .map(|(rpc, n)| format!("{rpc}={n}"))
            .collect::<Vec<_>>()
            .join(",");
        tracing::info!(
            target: "yunkey::audit",
            suppressed = self.total(),
            by_rpc = %by_rpc,
            "{} refusals of unauthenticated calls suppressed in the last {} s",
            self.total(),
            self.over.as_secs()
        );
    }
}

#[derive(Debug)]
struct Window {
    started: Instant,
    logged: u32,
    suppressed: Vec<(&'static str, u64)>,
}

/// The per-process limiter of refusal log lines.
#[derive(Debug)]
pub struct RefusalLog {
    window: Mutex<Window>,
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl RefusalLog {
    /// A limiter whose first window starts at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            window: Mutex::new(Window {
                started: now,
                logged: 0,
                suppressed: Vec::new(),
            }),
        }
    }

    /// Records a refusal of `rpc` at `now`: whether to log it, and the summary of the window
    /// that ended before it, if it suppressed any.
    pub fn record(&self, rpc: &'static str, now: Instant) -> (Verdict, Option<Suppressed>) {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let ended = Self::roll(&mut w, now);
        if w.logged < LOGGED_PER_WINDOW {
            w.logged += 1;
            return (Verdict::Log, ended);
        }
        match w.suppressed.iter_mut().find(|(r, _)| *r == rpc) {
            Some((_, n)) => *n += 1,
            None => w.suppressed.push((rpc, 1)),
        }
        (Verdict::Suppress, ended)
    }

    /// The summary of the window, if it has ended by `now` and suppressed any (a timer calls
    /// this, so that the last burst's summary does not wait for the next refusal).
    pub fn flush(&self, now: Instant) -> Option<Suppressed> {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        Self::roll(&mut w, now)
    }

    fn roll(w: &mut Window, now: Instant) -> Option<Suppressed> {
        let over = now.saturating_duration_since(w.started);
        if over < WINDOW {
            return None;
        }
        w.started = now;
        w.logged = 0;
        let by_rpc = std::mem::take(&mut w.suppressed);
        (!by_rpc.is_empty()).then_some(Suppressed { by_rpc, over })
    }
}

/// Logs the summary of each window that suppressed refusals, once it ends, until `log` is
/// dropped.
pub async fn flush_loop(log: std::sync::Weak<RefusalLog>) {
    let mut tick = tokio::time::interval(WINDOW / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(log) = log.upgrade() else { return };
        if let Some(s) = log.flush(Instant::now()) {
            s.log();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_ones_are_logged_then_counted_then_summed_up() {
        let t0 = Instant::now();
        let log = RefusalLog::new(t0);
        let mut logged = 0;
        for i in 0..300 {
            let rpc = if i % 3 == 0 {
                "GetTime"
            } else {
                "RegisterDevice"
            };
            let (verdict, ended) = log.record(rpc, t0 + Duration::from_millis(i));
            assert_eq!(ended, None);
            if verdict == Verdict::Log {
                logged += 1;
            }
        }
        assert_eq!(logged, LOGGED_PER_WINDOW);
        assert_eq!(log.flush(t0 + WINDOW / 2), None, "the window is still open");
        let s = log.flush(t0 + WINDOW).expect("a summary");
        assert_eq!(s.total(), 300 - u64::from(LOGGED_PER_WINDOW));
        assert_eq!(s.by_rpc.len(), 2);
        // A new window: logged in full again; nothing left to sum up.
        assert_eq!(log.record("RegisterDevice", t0 + WINDOW).0, Verdict::Log);
        assert_eq!(log.flush(t0 + WINDOW * 3), None);
    }

    #[test]
    fn the_next_refusal_carries_the_summary_of_the_window_before() {
        let t0 = Instant::now();
        let log = RefusalLog::new(t0);
        for _ in 0..=LOGGED_PER_WINDOW {
            log.record("RegisterDevice", t0);
        }
        let (verdict, ended) = log.record("RegisterDevice", t0 + WINDOW);
        assert_eq!(verdict, Verdict::Log);
        assert_eq!(
            ended.expect("a summary").by_rpc,
            vec![("RegisterDevice", 1)]
        );
    }
}
