//! Waiting for a learner to catch up before it is promoted to voter.
//!
//! openraft 0.9's `Raft::add_learner(.., blocking = true)` returns once the learner's lag is at
//! most `Config::replication_lag_threshold` (5,000 entries by default), where the lag of a
//! learner that never answered is the leader's whole log. On a young cluster (fewer than 5,000
//! entries) an unreachable learner is therefore "caught up" at once, and promoting it makes a
//! voter that never votes: with one original voter, every later write needs it and stalls.
//! [`wait_caught_up`] asks for proof instead: an acknowledgement from the learner.

use crate::error::CatchUpError;
use crate::TypeConfig;
use openraft::{Raft, RaftMetrics};
use std::time::Duration;

/// What the leader's metrics say about a learner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnerProgress {
    /// It has acknowledged the log up to `since` and lags by at most the allowed entries.
    CaughtUp {
        /// The index it acknowledged.
        matched: u64,
    },
    /// Not yet: `matched` is what it acknowledged so far (`None`: nothing).
    Behind {
        /// The index it acknowledged, if any.
        matched: Option<u64>,
        /// The leader's last log index.
        last: u64,
    },
    /// This node is not the leader (it has no replication metrics).
    NotLeader,
    /// The learner is not in the membership.
    Removed,
}

/// Decides from one metrics snapshot whether learner `id` has acknowledged the log up to
/// index `since` and lags the leader's last index by at most `max_lag` entries.
pub fn learner_progress(
    m: &RaftMetrics<u64, openraft::BasicNode>,
    id: u64,
    since: u64,
    max_lag: u64,
) -> LearnerProgress {
    if m.membership_config.membership().get_node(&id).is_none() {
        return LearnerProgress::Removed;
    }
    let Some(replication) = &m.replication else {
        return LearnerProgress::NotLeader;
    };
    let matched = replication
        .get(&id)
        .cloned()
        .flatten()
        .map(|log_id| log_id.index);
    let last = m.last_log_index.unwrap_or(0);
    match matched {
        Some(matched) if matched >= since && last.saturating_sub(matched) <= max_lag => {
            LearnerProgress::CaughtUp { matched }
        }
        _ => LearnerProgress::Behind { matched, last },
    }
}

/// On the leader: waits until learner `id` has acknowledged the log up to index `since` (the
/// entry that added it) and lags by at most `max_lag` entries, at most `timeout`. Returns the
/// index it acknowledged.
pub async fn wait_caught_up<C: TypeConfig>(
    raft: &Raft<C>,
    id: u64,
    since: u64,
    max_lag: u64,
    timeout: Duration,
) -> Result<u64, CatchUpError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut rx = raft.metrics();
    loop {
        let progress = learner_progress(&rx.borrow_and_update(), id, since, max_lag);
        let (matched, last) = match progress {
            LearnerProgress::CaughtUp { matched } => return Ok(matched),
            LearnerProgress::NotLeader => return Err(CatchUpError::NotLeader),
            LearnerProgress::Removed => return Err(CatchUpError::Removed),
            LearnerProgress::Behind { matched, last } => (matched, last),
        };
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(CatchUpError::Shutdown),
            Err(_) => {
                return Err(CatchUpError::Timeout {
                    matched,
                    last,
                    seconds: timeout.as_secs(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::log_id;
    use openraft::{BasicNode, Membership, StoredMembership};
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    /// Leader 1 with learner 2, whose replication shows `matched` for 2; last index `last`.
    fn metrics(matched: Option<u64>, last: u64) -> RaftMetrics<u64, BasicNode> {
        let mut m = RaftMetrics::new_initial(1);
        let nodes = BTreeMap::from([(1, BasicNode::new("a")), (2, BasicNode::new("b"))]);
        m.membership_config = Arc::new(StoredMembership::new(
            Some(log_id(1, 1, 2)),
            Membership::new(vec![BTreeSet::from([1])], nodes),
        ));
        m.last_log_index = Some(last);
        m.replication = Some(BTreeMap::from([
            (1, Some(log_id(1, 1, last))),
            (2, matched.map(|i| log_id(1, 1, i))),
        ]));
        m
    }

    #[test]
    fn a_learner_that_never_answered_is_behind_even_on_a_short_log() {
        // openraft's blocking add_learner calls this caught up (lag 4 < 5,000).
        assert_eq!(
            learner_progress(&metrics(None, 3), 2, 2, 100),
            LearnerProgress::Behind {
                matched: None,
                last: 3
            }
        );
        // Acknowledged something, but not the entry that added it.
        assert_eq!(
            learner_progress(&metrics(Some(1), 3), 2, 2, 100),
            LearnerProgress::Behind {
                matched: Some(1),
                last: 3
            }
        );
    }

    #[test]
    fn caught_up_needs_the_adding_entry_and_a_small_lag() {
        assert_eq!(
            learner_progress(&metrics(Some(3), 3), 2, 2, 100),
            LearnerProgress::CaughtUp { matched: 3 }
        );
        assert_eq!(
            learner_progress(&metrics(Some(2), 500), 2, 2, 100),
            LearnerProgress::Behind {
                matched: Some(2),
                last: 500
            }
        );
        assert_eq!(
            learner_progress(&metrics(Some(450), 500), 2, 2, 100),
            LearnerProgress::CaughtUp { matched: 450 }
        );
    }

    #[test]
    fn removed_learner_and_lost_leadership_end_the_wait() {
        assert_eq!(
            learner_progress(&metrics(Some(3), 3), 7, 2, 100),
            LearnerProgress::Removed
        );
        let mut follower = metrics(None, 3);
        follower.replication = None;
        assert_eq!(
            learner_progress(&follower, 2, 2, 100),
            LearnerProgress::NotLeader
        );
    }
}
