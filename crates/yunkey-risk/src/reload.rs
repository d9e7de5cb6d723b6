//! Rules that change without a restart. [`RulesHandle`] holds the rules in force; every
//! assessment takes a snapshot of it. [`RulesWatcher`] polls the file (every second: its
//! content's SHA-256: a rules file is small, and a hash sees a change that keeps the
//! modification time and size) and reloads at once on SIGHUP. A new file that does not pass
//! [`Rules::parse`] is refused: the error is logged, the counter
//! `yunkey_risk_rules_rejected_total` goes up, and the rules in force stay.

use crate::rules::Rules;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// Counter of rules files refused on reload.
pub const REJECTED_METRIC: &str = "yunkey_risk_rules_rejected_total";
/// Counter of rules files loaded on reload.
pub const RELOADED_METRIC: &str = "yunkey_risk_rules_reloaded_total";

/// The rules in force, shared by every assessment.
#[derive(Debug, Clone)]
pub struct RulesHandle(Arc<RwLock<Arc<Rules>>>);

impl RulesHandle {
    /// A handle holding `rules`.
    pub fn new(rules: Rules) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(rules))))
    }

    /// The rules in force now.
    pub fn get(&self) -> Arc<Rules> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `rules` in force for the next assessment.
    pub fn set(&self, rules: Rules) {
        let rules = Arc::new(rules);
        match self.0.write() {
            Ok(mut g) => *g = rules,
            Err(poisoned) => *poisoned.into_inner() = rules,
        }
    }
}

/// What one look at the file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The same file as last time (or the same content).
    Unchanged,
    /// New rules are in force: their version.
    Loaded(String),
    /// The new file was refused (the rules in force stay): why.
    Rejected(String),
}

/// Watches a rules file and updates a [`RulesHandle`].
#[derive(Debug)]
pub struct RulesWatcher {
    path: PathBuf,
    handle: RulesHandle,
    /// Hash of the content last seen, loaded or refused.
    seen: [u8; 32],
}

impl RulesWatcher {
    /// A watcher of `path`, whose current content is what `handle` holds.
    pub fn new(path: &Path, handle: RulesHandle) -> Self {
        let seen = std::fs::read(path)
            .map(|b| yunkey_crypto::sha256(&b))
            .unwrap_or_default();
        Self {
            path: path.to_owned(),
            handle,
            seen,
        }
    }

    /// Looks at the file once. `force` (SIGHUP) also reports a refusal again.
    pub fn check(&mut self, force: bool) -> Reload {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) => {
                let hash = [0xff; 32];
                if !force && self.seen == hash {
                    return Reload::Unchanged;
                }
                self.seen = hash;
                return self.rejected(format!(
                    "cannot read rules file {}: {e}",
                    self.path.display()
                ));
            }
        };
        let hash = yunkey_crypto::sha256(&bytes);
        if hash == self.seen && !force {
            return Reload::Unchanged;
        }
        self.seen = hash;
        match Rules::parse_bytes(&bytes) {
            Ok(rules) if rules.version == self.handle.get().version => Reload::Unchanged,
            Ok(rules) => {
                let version = rules.version.clone();
                tracing::info!(
                    path = %self.path.display(),
                    version = %version,
                    rules = rules.all().count(),
                    "risk rules reloaded"
                );
                metrics::counter!(RELOADED_METRIC).increment(1);
                self.handle.set(rules);
                Reload::Loaded(version)
            }
            Err(e) => self.rejected(e.to_string()),
        }
    }

    fn rejected(&self, why: String) -> Reload {
        tracing::error!(
            path = %self.path.display(),
            error = %why,
            version = %self.handle.get().version,
            "new risk rules refused; the rules in force stay"
        );
        metrics::counter!(REJECTED_METRIC).increment(1);
        Reload::Rejected(why)
    }

    /// Checks every `every`, and at once on SIGHUP, until `stop` says so.
    pub async fn run(mut self, every: Duration, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hangup = Hangup::new();
        loop {
            let force = tokio::select! {
                _ = tick.tick() => false,
                _ = hangup.recv() => {
                    tracing::info!(path = %self.path.display(), "SIGHUP: reading the risk rules");
                    true
                }
                _ = stop.wait_for(|s| *s) => return,
            };
            // Reading and hashing a small file: quick, but still disk IO.
            self = match tokio::task::spawn_blocking(move || {
                self.check(force);
                self
            })
            .await
            {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(error = %e, "the rules watcher failed; rules no longer reload");
                    return;
                }
            };
        }
    }
}

/// SIGHUP, where there is one.
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    fn new() -> Self {
        #[cfg(unix)]
        {
            let signal =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                    .map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP; rules reload by polling only"))
                    .ok();
            Self { signal }
        }
        #[cfg(not(unix))]
        Self {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = self.signal.as_mut() {
            if s.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "format = 1\n[[velocity]]\nname = \"v\"\naction = \"deny\"\nweight = 10\nmax = 5\nwindow_seconds = 60\n";

    #[test]
    fn a_bad_file_keeps_the_old_rules_and_a_good_one_takes_effect() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.toml");
        std::fs::write(&path, GOOD).unwrap();
        let handle = RulesHandle::new(Rules::load(&path).unwrap());
        let first = handle.get().version.clone();
        let mut w = RulesWatcher::new(&path, handle.clone());
        assert_eq!(w.check(false), Reload::Unchanged);

        std::fs::write(&path, format!("{GOOD}oops = 1\n")).unwrap();
        let r = w.check(true);
        assert!(
            matches!(&r, Reload::Rejected(e) if e.contains("unknown field `oops`")),
            "{r:?}"
        );
        assert_eq!(handle.get().version, first);
        assert_eq!(handle.get().velocity[0].max, 5);
        // The same bad file is not reported every second.
        assert_eq!(w.check(false), Reload::Unchanged);

        std::fs::write(&path, GOOD.replace("max = 5", "max = 7")).unwrap();
        let r = w.check(true);
        assert!(matches!(&r, Reload::Loaded(v) if *v != first), "{r:?}");
        assert_eq!(handle.get().velocity[0].max, 7);

        std::fs::remove_file(&path).unwrap();
        assert!(matches!(w.check(false), Reload::Rejected(_)));
        assert_eq!(handle.get().velocity[0].max, 7);
        assert_eq!(w.check(false), Reload::Unchanged);
    }

    #[tokio::test]
    async fn the_watcher_task_picks_up_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.toml");
        std::fs::write(&path, GOOD).unwrap();
        let handle = RulesHandle::new(Rules::load(&path).unwrap());
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(
            RulesWatcher::new(&path, handle.clone()).run(Duration::from_millis(20), stop),
        );
        // The same size: only the content tells.
        std::fs::write(&path, GOOD.replace("max = 5", "max = 9")).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while handle.get().velocity[0].max != 9 {
            assert!(tokio::time::Instant::now() < deadline, "not reloaded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }
}
