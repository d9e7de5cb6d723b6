//! Failed registrations per source address: past [`MAX_FAILURES_PER_SOURCE`] refusals in a
//! [`FAILURE_WINDOW`], an address may not try again until the window ends. This is on top of
//! the rate limit ([`super::source_limit`]), which bounds how fast anyone may ask; this bounds
//! how many wrong codes one address may try across users. Each coordinator counts its own
//! (a guesser spread over N coordinators gets N times the budget); the count per user, which
//! bounds the guesses against one code, is in Raft (`--activation-attempts`).
//!
//! Memory is bounded by [`super::source_limit::MAX_TRACKED_SOURCES`] addresses; when full,
//! ended windows are dropped, and if none has ended, unknown addresses share one window.

use super::source_limit::{source_key, MAX_TRACKED_SOURCES};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refused registrations one address may have in a window.
pub const MAX_FAILURES_PER_SOURCE: u32 = 20;
/// The window.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Failed registrations per address, in fixed windows.
#[derive(Debug)]
pub struct SourceFailures {
    windows: Mutex<HashMap<IpAddr, Window>>,
    max_failures: u32,
    window: Duration,
    max_sources: usize,
}

impl Default for SourceFailures {
    fn default() -> Self {
        Self::new(MAX_FAILURES_PER_SOURCE, FAILURE_WINDOW, MAX_TRACKED_SOURCES)
    }
}

/// The key of an address; every unknown address shares one.
fn key(source: Option<IpAddr>) -> IpAddr {
    source.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), source_key)
}

impl SourceFailures {
    /// `max_failures` per `window` per address, tracking at most `max_sources` addresses.
    pub fn new(max_failures: u32, window: Duration, max_sources: usize) -> Self {
        Self {
            windows: Mutex::new(HashMap::new()),
            max_failures,
            window,
            max_sources,
        }
    }

    /// `Err(wait)` if `source` used up its failures: how long until its window ends.
    pub fn check(&self, source: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let windows = self.windows.lock().expect("failures lock");
        // An address not tracked while the table is full shares the unknown addresses' window.
        let window = windows.get(&key(source)).or_else(|| {
            (windows.len() >= self.max_sources)
                .then(|| windows.get(&key(None)))
                .flatten()
        });
        match window {
            Some(w) if w.failures >= self.max_failures => {
                let ends = w.started + self.window;
                match ends.checked_duration_since(now) {
                    Some(wait) if !wait.is_zero() => Err(wait),
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// Counts a refused registration from `source`.
    pub fn record(&self, source: Option<IpAddr>, now: Instant) {
        let mut windows = self.windows.lock().expect("failures lock");
        let mut k = key(source);
        if !windows.contains_key(&k) && windows.len() >= self.max_sources {
            let window = self.window;
            windows.retain(|_, w| now.duration_since(w.started) < window);
            if windows.len() >= self.max_sources {
                k = key(None);
            }
        }
        let w = windows.entry(k).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.duration_since(w.started) >= self.window {
            *w = Window {
                started: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_stopped_for_the_rest_of_its_window() {
        let f = SourceFailures::new(3, Duration::from_secs(60), 2);
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(f.check(Some(a), t0).is_ok());
            f.record(Some(a), t0);
        }
        let wait = f.check(Some(a), t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(
            f.check(Some(b), t0).is_ok(),
            "another address is not affected"
        );
        assert!(f.check(Some(a), t0 + Duration::from_secs(60)).is_ok());
        f.record(Some(a), t0 + Duration::from_secs(61));
        assert!(
            f.check(Some(a), t0 + Duration::from_secs(62)).is_ok(),
            "a new window"
        );
    }

    #[test]
    fn the_table_is_bounded() {
        let f = SourceFailures::new(1, Duration::from_secs(60), 2);
        let t0 = Instant::now();
        for i in 1..=5u8 {
            f.record(Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, i))), t0);
        }
        assert!(
            f.windows.lock().unwrap().len() <= 3,
            "two addresses and the shared key"
        );
        // Addresses past the bound share the unknown addresses' window, which is used up.
        assert!(f
            .check(Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9))), t0)
            .is_err());
        assert!(f.check(None, t0).is_err());
        assert!(f
            .check(
                Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9))),
                t0 + Duration::from_secs(60)
            )
            .is_ok());
    }
}
