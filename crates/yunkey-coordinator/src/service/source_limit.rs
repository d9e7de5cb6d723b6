//! A rate limit per source address on the unauthenticated calls (`RegisterDevice`,
//! `GetTime`): a token bucket per remote IP (an IPv6 address counts by its /64, the least a
//! host is given), from `governor`'s keyed GCRA limiter.
//!
//! Memory is bounded: at most [`MAX_TRACKED_SOURCES`] addresses are tracked. Buckets that
//! have refilled (indistinguishable from a fresh one) are dropped every
//! [`HOUSEKEEPING_EVERY`], and whenever the table is full. If it is still full after that
//! (more than that many addresses active at once), every request is checked against one
//! shared bucket of the same size until room frees up: a flood from many addresses then
//! throttles new addresses together, but cannot grow the table.

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

/// Default steady rate of unauthenticated requests per source address, per second.
pub const DEFAULT_PER_SECOND: u32 = 20;
/// Default burst of unauthenticated requests per source address.
pub const DEFAULT_BURST: u32 = 40;
/// Most source addresses tracked at once.
pub const MAX_TRACKED_SOURCES: usize = 100_000;
/// How often buckets that have refilled are dropped.
pub const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(10);

/// The limit on unauthenticated requests per source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceRate {
    /// Requests per second, sustained.
    pub per_second: NonZeroU32,
    /// Requests allowed at once from an address that was quiet.
    pub burst: NonZeroU32,
}

impl Default for SourceRate {
    fn default() -> Self {
        Self {
            per_second: NonZeroU32::new(DEFAULT_PER_SECOND).expect("non-zero"),
            burst: NonZeroU32::new(DEFAULT_BURST).expect("non-zero"),
        }
    }
}

type Keyed<C> =
    RateLimiter<IpAddr, DashMapStateStore<IpAddr>, C, NoOpMiddleware<<C as Clock>::Instant>>;
type Shared<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Token buckets per source address.
pub struct SourceLimiter<C: Clock = DefaultClock> {
    per_source: Keyed<C>,
    overflow: Shared<C>,
    clock: C,
    last_housekeeping: Mutex<C::Instant>,
    max_sources: usize,
}

impl<C: Clock> std::fmt::Debug for SourceLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceLimiter")
            .field("tracked", &self.per_source.len())
            .field("max_sources", &self.max_sources)
            .finish_non_exhaustive()
    }
}

impl SourceLimiter {
    /// A limiter of `rate` per address on the system clock.
    pub fn new(rate: SourceRate) -> Self {
        Self::with_clock(rate, MAX_TRACKED_SOURCES, DefaultClock::default())
    }
}

impl<C: Clock + Clone> SourceLimiter<C> {
    /// A limiter of `rate` per address, tracking at most `max_sources`, on `clock`.
    pub fn with_clock(rate: SourceRate, max_sources: usize, clock: C) -> Self {
        let quota = Quota::per_second(rate.per_second).allow_burst(rate.burst);
        Self {
            per_source: RateLimiter::new(quota, DashMapStateStore::default(), clock.clone()),
            overflow: RateLimiter::new(quota, InMemoryState::default(), clock.clone()),
            last_housekeeping: Mutex::new(clock.now()),
            clock,
            max_sources,
        }
    }

    /// Takes a token for a request from `source` (`None`: the address is unknown; all such
    /// requests share one bucket). `Err` holds how long until the next token.
    pub fn check(&self, source: Option<IpAddr>) -> Result<(), Duration> {
        let key = source.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), source_key);
        self.housekeeping(false);
        if self.per_source.len() >= self.max_sources {
            self.housekeeping(true);
        }
        let now = self.clock.now();
        let result = if self.per_source.len() < self.max_sources {
            self.per_source.check_key(&key)
        } else {
            self.overflow.check()
        };
        result.map_err(|not_until| not_until.wait_time_from(now))
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.per_source.len()
    }

    /// Drops refilled buckets, if `HOUSEKEEPING_EVERY` has passed (or `now_anyway`, at most
    /// once a second: the table is full, and a sweep costs a pass over it).
    fn housekeeping(&self, now_anyway: bool) {
        let Ok(mut last) = self.last_housekeeping.try_lock() else {
            return; // another request is at it
        };
        let now = self.clock.now();
        let since = Duration::from(now.duration_since(*last));
        let due = if now_anyway {
            Duration::from_secs(1)
        } else {
            HOUSEKEEPING_EVERY
        };
        if since >= due {
            self.per_source.retain_recent();
            self.per_source.shrink_to_fit();
            *last = now;
        }
    }
}

/// The bucket key of an address: IPv4 as is (also when mapped into IPv6), IPv6 by its /64.
pub fn source_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limiter(
        per_second: u32,
        burst: u32,
        max: usize,
    ) -> (SourceLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let rate = SourceRate {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        };
        (SourceLimiter::with_clock(rate, max, clock.clone()), clock)
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn burst_then_refusal_then_refill() {
        let (l, clock) = limiter(20, 40, 100);
        for _ in 0..40 {
            l.check(ip("192.0.2.1")).unwrap();
        }
        let wait = l.check(ip("192.0.2.1")).unwrap_err();
        assert_eq!(wait, Duration::from_millis(50), "one token every 1/20 s");
        // Another address has its own bucket.
        l.check(ip("192.0.2.2")).unwrap();
        clock.advance(Duration::from_millis(50));
        l.check(ip("192.0.2.1")).unwrap();
        l.check(ip("192.0.2.1")).unwrap_err();
        clock.advance(Duration::from_secs(2));
        for _ in 0..40 {
            l.check(ip("192.0.2.1")).unwrap();
        }
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_v4_as_v4() {
        let (l, _) = limiter(1, 2, 100);
        l.check(ip("2001:db8:1:2::1")).unwrap();
        l.check(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert!(l.check(ip("2001:db8:1:2::3")).is_err(), "same /64");
        l.check(ip("2001:db8:1:3::1")).unwrap();
        l.check(ip("::ffff:192.0.2.7")).unwrap();
        l.check(ip("192.0.2.7")).unwrap();
        assert!(
            l.check(ip("192.0.2.7")).is_err(),
            "mapped is the same address"
        );
        // Unknown addresses share one bucket.
        l.check(None).unwrap();
        l.check(None).unwrap();
        assert!(l.check(None).is_err());
    }

    #[test]
    fn the_table_stays_bounded_and_idle_entries_go() {
        let (l, clock) = limiter(10, 2, 50);
        for i in 0..200u32 {
            let addr = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            let _ = l.check(Some(addr));
            assert!(l.tracked() <= 50, "{} tracked", l.tracked());
        }
        // Full of fresh entries: the rest share one bucket (2 at once).
        let refused = (0..10u32)
            .filter(|i| {
                l.check(Some(IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i))))
                    .is_err()
            })
            .count();
        assert!(refused >= 8, "{refused} of 10 refused");
        // Once the buckets refill and housekeeping runs, the entries are gone.
        clock.advance(HOUSEKEEPING_EVERY);
        l.check(ip("192.0.2.1")).unwrap();
        assert_eq!(l.tracked(), 1);
    }
}
