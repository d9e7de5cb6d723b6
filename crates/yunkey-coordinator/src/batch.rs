//! Group commit of proposals: commands proposed on this node at the same time go to Raft as
//! one log entry ([`Op::Batch`]), so that concurrent signatures and enrolments share one
//! append, one replication round, one forward to the leader and one apply instead of one each.
//!
//! A command is proposed at once when no batch is in flight; while [`MAX_IN_FLIGHT`] batches
//! are, the commands that arrive wait and go together in the next one (at most
//! [`MAX_BATCH`]). So one caller alone waits for nothing more than before, and under load the
//! batches grow with the load. A command that finds nothing waiting and a slot free is
//! proposed by its caller's own task, as a group of one, without the two task hand-offs
//! through the batching task (the common case at low concurrency). Each command keeps its own request id, audit records and
//! result; a batch that fails to commit fails each of its callers with the same error, and
//! each retries with its own request id as before.
//!
//! Rolling upgrades: a node older than command format [`COMMAND_FORMAT_BATCH`] cannot read a
//! batch entry, so batching starts only once every member has reported that format in
//! `Status` ([`watch_members`]); until then each command is an entry of its own, as before.
//! The same watch tells the leader when every member applies prunes
//! ([`Batcher::cluster_format`], `crate::prune`). A member's format is remembered once seen:
//! rolling a member back to an older build afterwards is not supported (docs/operations.md, "Upgrades and batched log entries").

use crate::core::Core;
use crate::error::{CoordError, Result};
use crate::raft::RaftHandle;
use crate::state::{Command, CommandResult, Op, COMMAND_FORMAT, COMMAND_FORMAT_BATCH};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Most commands in one batch entry. An enrolment is about 2 KB, so an entry stays well
/// under a megabyte.
pub const MAX_BATCH: usize = 128;

/// Batches of one node in flight at once; more commands wait and join the next batch.
pub const MAX_IN_FLIGHT: usize = 4;

/// How often [`watch_members`] asks members it has not seen at this build's format yet.
pub const MEMBER_POLL: Duration = Duration::from_secs(2);

/// Commands waiting for a batch, beyond which callers wait to queue.
const QUEUE: usize = 4096;

/// A command's result and the index of the log entry that carried it (shared by the commands
/// batched with it).
type Indexed = (CommandResult, u64);

struct Pending {
    cmd: Command,
    reply: oneshot::Sender<Result<Indexed>>,
}

/// The proposals of one node; see the module documentation.
pub struct Batcher {
    queue: mpsc::Sender<Pending>,
    gate: Arc<Gate>,
    /// The [`MAX_IN_FLIGHT`] slots, shared with the batching task.
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("open", &self.gate.is_open())
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// Starts the batching task of `raft` (on the current Tokio runtime); it ends when the
    /// batcher is dropped.
    pub fn start(raft: RaftHandle, node_id: u64) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        let gate = Arc::new(Gate::new(node_id));
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        tokio::spawn(run(raft, rx, gate.clone(), slots.clone()));
        Self { queue, gate, slots }
    }

    /// Whether every member applies batch entries, so that commands are batched.
    pub fn is_open(&self) -> bool {
        self.gate.is_open()
    }

    /// The newest command format every member applies, as last seen (0 while unknown).
    pub fn cluster_format(&self) -> u32 {
        self.gate.cluster_format()
    }

    /// Commits `cmd` through Raft, in a batch with others when the gate is open, and returns
    /// its own result once this node applied it.
    pub async fn write(&self, raft: &RaftHandle, cmd: Command) -> Result<CommandResult> {
        Ok(self.write_indexed(raft, cmd).await?.0)
    }

    /// [`Batcher::write`], also returning the index of the log entry that carried the command
    /// (the batch's, when it went in one).
    pub async fn write_indexed(&self, raft: &RaftHandle, cmd: Command) -> Result<Indexed> {
        if !self.gate.is_open() {
            return alone(raft, cmd).await;
        }
        // Nothing waiting and a slot free (a free permit means no one waits for one): the
        // batching task would propose this command alone at once; do it here.
        if self.queue.capacity() == self.queue.max_capacity() {
            if let Ok(_slot) = self.slots.clone().try_acquire_owned() {
                return alone(raft, cmd).await;
            }
        }
        let (reply, answer) = oneshot::channel();
        if let Err(refused) = self.queue.send(Pending { cmd, reply }).await {
            // The batching task is gone (shutting down): propose it alone.
            return alone(raft, refused.0.cmd).await;
        }
        answer.await.unwrap_or_else(|_| {
            Err(CoordError::Unavailable(
                "the coordinator is shutting down; retry with the same request_id".into(),
            ))
        })
    }
}

/// Proposes one command in an entry of its own. Boxed: openraft's write future is several
/// kilobytes, and inline it would make every caller's future (each signature's task) that
/// much larger, to be copied when the task is spawned (docs/performance.md, item 33).
async fn alone(raft: &RaftHandle, cmd: Command) -> Result<Indexed> {
    Box::pin(raft.write_indexed(cmd)).await
}

/// Takes the waiting commands in batches, at most [`MAX_IN_FLIGHT`] at a time.
async fn run(
    raft: RaftHandle,
    mut rx: mpsc::Receiver<Pending>,
    gate: Arc<Gate>,
    slots: Arc<Semaphore>,
) {
    while let Some(first) = rx.recv().await {
        // Wait for a slot before gathering, so that what arrives meanwhile joins this batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut group = vec![first];
        while group.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(pending) => group.push(pending),
                Err(_) => break,
            }
        }
        let (raft, gate) = (raft.clone(), gate.clone());
        tokio::spawn(async move {
            commit(&raft, &gate, group).await;
            drop(slot);
        });
    }
}

/// Commits one group and answers each of its callers: one entry each if the group is one
/// command, or if the gate closed since they were queued (a member that cannot read a batch
/// joined).
async fn commit(raft: &RaftHandle, gate: &Gate, group: Vec<Pending>) {
    if group.len() == 1 || !gate.is_open() {
        futures::future::join_all(group.into_iter().map(|Pending { cmd, reply }| async move {
            let _ = reply.send(raft.write_indexed(cmd).await);
        }))
        .await;
        return;
    }
    metrics::histogram!("yunkey_raft_batch_commands").record(group.len() as f64);
    let (commands, replies): (Vec<Command>, Vec<_>) =
        group.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let wrapper = Command {
        request_id: String::new(),
        actor: "batch".into(),
        now: crate::clock::now(),
        op: Op::Batch(commands),
    };
    match raft.write_indexed(wrapper).await {
        Ok((CommandResult::Batch(results), index)) if results.len() == replies.len() => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok((result, index)));
            }
        }
        Ok((other, _)) => {
            for reply in replies {
                let _ = reply.send(Err(CoordError::Internal(format!(
                    "a batch of commands was answered with {other:?}"
                ))));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(for_each_caller(&e)));
            }
        }
    }
}

/// The error of a failed batch write, for one of its callers: the same kind and message.
fn for_each_caller(e: &CoordError) -> CoordError {
    match e {
        CoordError::Raft(m) => CoordError::Raft(m.clone()),
        CoordError::Unavailable(m) => CoordError::Unavailable(m.clone()),
        other => CoordError::Internal(other.to_string()),
    }
}

/// The command format of each member, as last seen, and what follows for the cluster.
struct Gate {
    node_id: u64,
    /// The newest format each member reported (this node: its own).
    formats: Mutex<HashMap<u64, u32>>,
    /// The lowest format of the members, when [`Gate::settle`] last looked (0: unknown).
    cluster: AtomicU32,
}

impl Gate {
    fn new(node_id: u64) -> Self {
        Self {
            node_id,
            formats: Mutex::new(HashMap::from([(node_id, COMMAND_FORMAT)])),
            cluster: AtomicU32::new(0),
        }
    }

    /// Whether batches may be proposed (every member reads them).
    fn is_open(&self) -> bool {
        self.cluster_format() >= COMMAND_FORMAT_BATCH
    }

    fn cluster_format(&self) -> u32 {
        self.cluster.load(Ordering::Relaxed)
    }

    /// The format `node_id` was last seen at (0: never seen).
    fn format_of(&self, node_id: u64) -> u32 {
        let formats = self.formats.lock().unwrap_or_else(|e| e.into_inner());
        formats.get(&node_id).copied().unwrap_or(0)
    }

    fn mark(&self, node_id: u64, format: u32) {
        let mut formats = self.formats.lock().unwrap_or_else(|e| e.into_inner());
        let seen = formats.entry(node_id).or_insert(0);
        *seen = (*seen).max(format);
    }

    /// Takes the lowest format of `members` as the cluster's (0 while no membership is known:
    /// a node not added to a cluster yet); batching opens at [`COMMAND_FORMAT_BATCH`].
    /// Returns whether batching is open.
    fn settle(&self, members: &[u64]) -> bool {
        let lowest = members
            .iter()
            .map(|id| self.format_of(*id))
            .min()
            .unwrap_or(0);
        let before = self.cluster.swap(lowest, Ordering::Relaxed);
        if before != lowest {
            let open = lowest >= COMMAND_FORMAT_BATCH;
            tracing::info!(
                node_id = self.node_id,
                command_format = lowest,
                batching = open,
                "every member applies command format {lowest}: proposals {}",
                if open {
                    "are batched"
                } else {
                    "go one per log entry"
                }
            );
        }
        lowest >= COMMAND_FORMAT_BATCH
    }
}

/// Asks every member not yet seen at this build's command format ([`COMMAND_FORMAT`]) for
/// its `Status`, every [`MEMBER_POLL`], and settles the cluster's format from what they
/// said: batching opens at [`COMMAND_FORMAT_BATCH`], pruning at
/// [`crate::state::COMMAND_FORMAT_PRUNE`]. Runs for the life of the coordinator.
pub async fn watch_members(core: Arc<Core>) {
    loop {
        let members = core.raft.members();
        let gate = &core.batcher.gate;
        for (id, address) in &members {
            if gate.format_of(*id) >= COMMAND_FORMAT {
                continue;
            }
            if let Some(format) = command_format(&core, address).await {
                gate.mark(*id, format);
            }
        }
        let ids: Vec<u64> = members.iter().map(|(id, _)| *id).collect();
        gate.settle(&ids);
        tokio::time::sleep(MEMBER_POLL).await;
    }
}

/// The command format the coordinator at `address` reports (0 from a build before format 2);
/// `None` if it does not answer within a second.
async fn command_format(core: &Core, address: &str) -> Option<u32> {
    crate::membership::peer_status(core, address, Duration::from_secs(1))
        .await
        .ok()
        .map(|status| status.command_format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_opens_only_when_every_member_was_seen_at_the_format() {
        let gate = Gate::new(1);
        assert!(!gate.is_open(), "closed until the members were asked");
        assert!(
            !gate.settle(&[]),
            "closed before this node knows its cluster"
        );
        assert_eq!(gate.cluster_format(), 0);
        assert!(gate.settle(&[1]), "a one-member cluster batches");
        assert_eq!(gate.cluster_format(), COMMAND_FORMAT);
        assert!(!gate.settle(&[1, 2, 3]), "2 and 3 not seen yet");
        assert!(!gate.is_open());
        gate.mark(2, COMMAND_FORMAT);
        assert!(!gate.settle(&[1, 2, 3]));
        // A member of the batch format but not the prune format: batches, no prunes.
        gate.mark(3, COMMAND_FORMAT_BATCH);
        assert!(gate.settle(&[1, 2, 3]));
        assert_eq!(gate.cluster_format(), COMMAND_FORMAT_BATCH);
        const { assert!(COMMAND_FORMAT_BATCH < crate::state::COMMAND_FORMAT_PRUNE) };
        // Upgraded: prunes too. A format is never lowered by an older answer.
        gate.mark(3, COMMAND_FORMAT);
        gate.mark(3, 1);
        assert!(gate.settle(&[1, 2, 3]));
        assert_eq!(gate.cluster_format(), COMMAND_FORMAT);
        // A new member closes it until it is seen too.
        assert!(!gate.settle(&[1, 2, 3, 4]));
        assert_eq!(gate.cluster_format(), 0);
        gate.mark(4, COMMAND_FORMAT);
        assert!(gate.settle(&[1, 2, 3, 4]));
    }

    fn enroll(request_id: &str, user_id: &str) -> Command {
        Command {
            request_id: request_id.into(),
            actor: "test".into(),
            now: 1,
            op: Op::EnrollUser {
                user: crate::state::UserRecord {
                    user_id: user_id.into(),
                    algorithm: 1,
                    public_key: vec![1],
                    wrapped_key: vec![2],
                    certificate: vec![3],
                    state: crate::state::UserState::Active,
                    holders: vec![],
                    devices: vec![],
                    activation: None,
                    created_at: 1,
                    revoked_reason: None,
                    binding_seq: 0,
                },
                activation_code: String::new(),
            },
        }
    }

    /// On a real one-node Raft (openraft, the log and sled state in a temporary directory).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_proposals_share_entries_and_each_gets_its_own_result() {
        let dir = tempfile::tempdir().unwrap();
        let db = yunkey_store::Db::open_sled(dir.path().join("raft")).unwrap();
        let connect: yunkey_raft::Connector = Arc::new(|_| Err("a one-node cluster".into()));
        let opened = crate::raft::open(
            1,
            dir.path().join("raft-log"),
            db,
            crate::state::App::default(),
            dir.path().join("snapshots"),
            connect,
            crate::raft::raft_config(),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        let (raft, view) = (opened.handle, opened.view);
        raft.initialize_single(1, "https://127.0.0.1:1")
            .await
            .unwrap();
        raft.wait_leader(Duration::from_secs(10)).await.unwrap();
        let batcher = Batcher::start(raft.clone(), 1);
        // Closed: one entry per command, as before batching existed.
        let before = raft.status().last_log_index;
        batcher
            .write(&raft, enroll("first", "first"))
            .await
            .unwrap();
        assert_eq!(raft.status().last_log_index, before + 1);
        assert!(batcher.gate.settle(&[1]));

        // Open, a command alone is proposed at once and alone (by its caller's own task).
        for _ in 0..3 {
            let before = raft.status().last_log_index;
            let probe = Command {
                request_id: String::new(),
                actor: "t".into(),
                now: 1,
                op: Op::Probe,
            };
            let (result, index) = batcher.write_indexed(&raft, probe).await.unwrap();
            assert_eq!(result, CommandResult::Probed);
            assert_eq!(
                (index, raft.status().last_log_index),
                (before + 1, before + 1)
            );
        }

        // 200 at once: users 0..150, and users 0..50 again under other request ids.
        let before = raft.status().last_log_index;
        let calls = (0..200).map(|i| {
            let (user, request) = if i < 150 {
                (format!("u{i}"), format!("r{i}"))
            } else {
                (format!("u{}", i - 150), format!("again{i}"))
            };
            let (batcher, raft) = (&batcher, &raft);
            async move {
                (
                    user.clone(),
                    batcher.write(raft, enroll(&request, &user)).await,
                )
            }
        });
        let answers = futures::future::join_all(calls).await;
        let entries = raft.status().last_log_index - before;
        assert!(
            entries < 200 / 2,
            "200 concurrent commands took {entries} log entries"
        );
        let mut enrolled = std::collections::BTreeMap::<String, usize>::new();
        for (user, answer) in answers {
            match answer.unwrap() {
                CommandResult::Enrolled { user_id, .. } => {
                    assert_eq!(user_id, user, "each caller gets its own result");
                    *enrolled.entry(user).or_default() += 1;
                }
                CommandResult::Rejected(crate::state::Rejection::UserExists(id)) => {
                    assert_eq!(id, user)
                }
                other => panic!("{user}: {other:?}"),
            }
        }
        assert_eq!(enrolled.len(), 150);
        assert!(enrolled.values().all(|n| *n == 1), "{enrolled:?}");
        // "first" and the 150.
        assert_eq!(view.user_count().unwrap(), 151);

        // Probes batch too, and each learns the index of the entry that carried it.
        let before = raft.status().last_log_index;
        let probes = (0..64).map(|_| {
            let probe = Command {
                request_id: String::new(),
                actor: "t".into(),
                now: 1,
                op: Op::Probe,
            };
            batcher.write_indexed(&raft, probe)
        });
        let indexes: std::collections::BTreeSet<u64> = futures::future::join_all(probes)
            .await
            .into_iter()
            .map(|r| {
                let (result, index) = r.unwrap();
                assert_eq!(result, CommandResult::Probed);
                index
            })
            .collect();
        let after = raft.status().last_log_index;
        assert!(
            indexes.len() < 64,
            "64 probes took {} entries",
            indexes.len()
        );
        assert!(
            indexes.iter().all(|i| (before + 1..=after).contains(i)),
            "{indexes:?} not in {before}..={after}"
        );
        assert_eq!(
            indexes.len() as u64,
            after - before,
            "every entry carried a probe"
        );
    }

    #[test]
    fn a_failed_batch_fails_each_caller_with_the_same_kind() {
        let e = CoordError::Raft("could not commit: x".into());
        assert!(matches!(for_each_caller(&e), CoordError::Raft(m) if m == "could not commit: x"));
        let e = CoordError::Unavailable("later".into());
        assert!(matches!(for_each_caller(&e), CoordError::Unavailable(m) if m == "later"));
    }
}
