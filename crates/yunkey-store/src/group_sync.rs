//! Group commit of blocking flushes: callers that ask for a flush while one is running wait
//! for the next one, which covers them all, instead of each syncing in turn.
//!
//! A flush covers every write made before it *started*. So a caller takes a ticket (after its
//! writes); the first caller to find no flush running starts one for every ticket taken so far,
//! and the others wait until a flush that covers their ticket has finished. Under load, N
//! concurrent callers cost about two syncs instead of N; a lone caller waits for nothing more.
//!
//! A failed flush covers nobody: its caller gets the error, and each waiter it would have
//! covered runs (or joins) the next flush and gets that one's outcome.

use std::sync::{Condvar, Mutex};

use crate::Result;

#[derive(Default)]
struct State {
    /// Tickets handed out: one per caller, taken after its writes.
    issued: u64,
    /// Every ticket up to this one is covered by a finished flush.
    covered: u64,
    /// A flush is running.
    running: bool,
}

/// See the module documentation.
#[derive(Default)]
pub(crate) struct GroupSync {
    state: Mutex<State>,
    done: Condvar,
}

impl GroupSync {
    /// Returns once a flush (`sync`) that started after this call began has succeeded, running
    /// it on this thread when none is running.
    pub(crate) fn flush(&self, sync: impl FnOnce() -> Result<()>) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.issued += 1;
        let ticket = state.issued;
        loop {
            if state.covered >= ticket {
                return Ok(());
            }
            if !state.running {
                state.running = true;
                let target = state.issued;
                drop(state);
                let outcome = sync();
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                state.running = false;
                if outcome.is_ok() {
                    state.covered = state.covered.max(target);
                }
                self.done.notify_all();
                return outcome;
            }
            state = self.done.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreError;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_lone_caller_syncs_once_per_call() {
        let g = GroupSync::default();
        let syncs = AtomicUsize::new(0);
        for _ in 0..3 {
            g.flush(|| {
                syncs.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(syncs.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn concurrent_callers_share_syncs_and_each_is_covered_by_one_that_started_after_it() {
        let g = Arc::new(GroupSync::default());
        let syncs = Arc::new(AtomicUsize::new(0));
        // Each caller "writes" (bumps `written`), then flushes; a sync records how far the
        // writes had got when it started, and each caller checks its write was covered.
        let written = Arc::new(AtomicUsize::new(0));
        let synced_upto = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..32)
            .map(|_| {
                let (g, syncs, written, synced_upto) = (
                    g.clone(),
                    syncs.clone(),
                    written.clone(),
                    synced_upto.clone(),
                );
                std::thread::spawn(move || {
                    let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                    g.flush(|| {
                        let upto = written.load(Ordering::SeqCst);
                        syncs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        synced_upto.fetch_max(upto, Ordering::SeqCst);
                        Ok(())
                    })
                    .unwrap();
                    assert!(
                        synced_upto.load(Ordering::SeqCst) >= mine,
                        "write {mine} acknowledged before a sync covered it"
                    );
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n = syncs.load(Ordering::SeqCst);
        assert!(
            n < 32,
            "32 concurrent callers ran {n} syncs: none was shared"
        );
    }

    #[test]
    fn a_failed_sync_covers_nobody_and_waiters_try_again() {
        let g = Arc::new(GroupSync::default());
        let fail_next = Arc::new(AtomicBool::new(true));
        let syncs = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (g, fail_next, syncs) = (g.clone(), fail_next.clone(), syncs.clone());
                std::thread::spawn(move || {
                    g.flush(|| {
                        syncs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(10));
                        if fail_next.swap(false, Ordering::SeqCst) {
                            Err(StoreError::Engine("disk on fire".into()))
                        } else {
                            Ok(())
                        }
                    })
                    .is_ok()
                })
            })
            .collect();
        let ok = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|ok| *ok)
            .count();
        // Exactly the one caller that ran the failing sync sees the failure.
        assert_eq!(ok, 7);
        assert!(syncs.load(Ordering::SeqCst) >= 2);
    }
}
