//! Applying an [`Op::Batch`]: its commands in order, each as if it were an entry of its own.
//!
//! Each command reads what the commands before it in the batch wrote (a [`Staged`] view over
//! the entry's state), so two uses of one authorization in a batch are one consumption and one
//! replay refusal, exactly as in two entries. All their writes go into the entry's one batch.

use super::apply::App;
use super::command::{Command, CommandResult, Op, Rejection};
use yunkey_store::{Batch, Staged, StoreError, Tree};

pub(super) fn apply(
    app: &App,
    state: &Tree,
    batch: &mut Batch,
    commands: &[Command],
) -> Result<CommandResult, StoreError> {
    let staged = Staged::overlay(state);
    let mut results = Vec::with_capacity(commands.len());
    for cmd in commands {
        if let Op::Batch(_) = cmd.op {
            results.push(CommandResult::Rejected(Rejection::NestedBatch));
            continue;
        }
        let mut writes = Batch::new();
        results.push(app.apply_command(staged.tree(), &mut writes, cmd)?);
        staged.tree().apply(writes)?;
    }
    // `staged` held every write in memory, in order; the entry's batch carries them.
    batch.extend(staged.into_batch());
    Ok(CommandResult::Batch(results))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::UserRecord;
    use yunkey_store::Db;

    fn user(id: &str) -> UserRecord {
        crate::state::apply::tests::user(id, "CODE")
    }

    fn command(request_id: &str, now: i64, op: Op) -> Command {
        Command {
            request_id: request_id.into(),
            actor: "test".into(),
            now,
            op,
        }
    }

    fn consume(user: &str, hash: u8) -> Op {
        Op::ConsumeAuthorization {
            user_id: user.into(),
            device_id: "phone".into(),
            tx_hash: [hash; 32],
            expires_at: 500,
        }
    }

    fn enroll(id: &str) -> Op {
        Op::EnrollUser {
            user: user(id),
            activation_code: String::new(),
        }
    }

    /// Every key and value of a tree.
    fn contents(tree: &Tree) -> Vec<(Vec<u8>, Vec<u8>)> {
        tree.range(b"", None).map(|e| e.unwrap()).collect()
    }

    /// Applies `cmd` as one entry, the way the Raft state machine does.
    fn entry(tree: &Tree, cmd: &Command) -> CommandResult {
        let mut batch = Batch::new();
        let result = App::default().apply_command(tree, &mut batch, cmd).unwrap();
        tree.apply(batch).unwrap();
        result
    }

    #[test]
    fn a_batch_applies_like_its_commands_one_entry_each() {
        let commands = vec![
            command("enroll-alice", 10, enroll("alice")),
            // Reads what the command before it wrote: alice exists.
            command("enroll-alice-again", 11, enroll("alice")),
            command("", 12, consume("nobody", 1)),
            command("retry", 13, enroll("bob")),
            // The same request id again, for the same request: the first result.
            command("retry", 14, enroll("bob")),
            // ... and for another request: refused.
            command("retry", 15, enroll("carol")),
            command(
                "",
                16,
                Op::Batch(vec![command("inner", 16, enroll("dave"))]),
            ),
            command("", 17, Op::Probe),
        ];
        // The nested batch is refused and writes nothing; the others apply as entries would.
        let one_by_one = Db::memory().tree("sm").unwrap();
        let expected: Vec<CommandResult> = commands
            .iter()
            .filter(|c| !matches!(c.op, Op::Batch(_)))
            .map(|c| entry(&one_by_one, c))
            .collect();

        let batched = Db::memory().tree("sm").unwrap();
        let result = entry(&batched, &command("", 18, Op::Batch(commands)));
        let CommandResult::Batch(mut results) = result else {
            panic!("a batch answers with a batch of results, got {result:?}");
        };
        assert_eq!(
            results.remove(6),
            CommandResult::Rejected(Rejection::NestedBatch)
        );
        assert_eq!(results, expected);
        assert!(matches!(results[0], CommandResult::Enrolled { .. }));
        assert!(matches!(
            results[1],
            CommandResult::Rejected(Rejection::UserExists(_))
        ));
        assert!(matches!(
            results[5],
            CommandResult::Rejected(Rejection::RequestIdReused { .. })
        ));
        // The same state, key for key and value for value (audit records included).
        assert_eq!(contents(&batched), contents(&one_by_one));
        assert!(!contents(&batched).is_empty());
    }

    #[test]
    fn two_uses_of_one_authorization_in_a_batch_are_one_consumption() {
        let tree = Db::memory().tree("sm").unwrap();
        // A user with a device, so that consumption succeeds.
        let mut alice = user("alice");
        alice.devices.push(crate::state::DeviceRecord {
            device_id: "phone".into(),
            name: String::new(),
            public_key: vec![],
            certificate: vec![],
            registered_at: 1,
            revoked_at: None,
        });
        entry(
            &tree,
            &command(
                "enroll-alice",
                1,
                Op::EnrollUser {
                    user: alice,
                    activation_code: String::new(),
                },
            ),
        );
        let result = entry(
            &tree,
            &command(
                "",
                20,
                Op::Batch(vec![
                    command("sign-1", 20, consume("alice", 9)),
                    command("sign-2", 20, consume("alice", 9)),
                    command("sign-3", 20, consume("alice", 10)),
                ]),
            ),
        );
        assert_eq!(
            result,
            CommandResult::Batch(vec![
                CommandResult::Consumed,
                CommandResult::Rejected(Rejection::AuthorizationUsed { consumed_at: 20 }),
                CommandResult::Consumed,
            ])
        );
        let view = crate::state::StateView::new(tree.clone());
        assert_eq!(view.signature_count().unwrap(), 2);
        assert!(view.ledger(&[9; 32]).unwrap().is_some());
        assert!(view.ledger(&[10; 32]).unwrap().is_some());
    }
}
