//! Applying commands. Deterministic: the same state and command give the same writes on
//! every node. Reads see the state before this entry; all writes go into one batch that the
//! Raft store applies atomically together with the applied index.

use super::codec::{decode, encode};
use super::command::{Command, CommandResult, Op, PriorRequest, Rejection};
use super::keys;
use super::model::{AuditRecord, LedgerEntry, UserState};
use super::view::StateView;
use yunkey_store::{Batch, StoreError, Tree};

/// The coordinator's state machine.
#[derive(Debug, Default, Clone)]
pub struct App;

impl App {
    /// Applies one command; see the module doc.
    pub fn apply_command(
        &self,
        tree: &Tree,
        batch: &mut Batch,
        cmd: &Command,
    ) -> Result<CommandResult, StoreError> {
        if let Op::Probe = cmd.op {
            // A probe only exercises Raft: no state, no request record, no audit record (a
            // health check run every few seconds would otherwise grow the audit trail).
            return Ok(CommandResult::Probed);
        }
        let view = StateView::new(tree.clone());
        let kind = cmd.op.kind();
        if !cmd.request_id.is_empty() {
            if let Some(prior) = view.request(&cmd.request_id)? {
                if prior.kind != kind || prior.fingerprint != cmd.op.fingerprint() {
                    return Ok(CommandResult::Rejected(Rejection::RequestIdReused {
                        first_kind: prior.kind,
                    }));
                }
                return Ok(prior.result);
            }
        }
        let mut w = Writer { tree, batch };
        let result = apply_op(&view, &mut w, cmd)?;
        let outcome = match &result {
            CommandResult::Rejected(r) => format!("rejected: {r:?}"),
            _ => "ok".to_owned(),
        };
        // Only successes are remembered: a rejection changed nothing, so a retry may
        // legitimately be evaluated again.
        if !cmd.request_id.is_empty() && !matches!(result, CommandResult::Rejected(_)) {
            w.put(
                &keys::request(&cmd.request_id),
                &PriorRequest {
                    kind: kind.to_owned(),
                    fingerprint: cmd.op.fingerprint(),
                    result: result.clone(),
                },
            );
        }
        let seq = w.bump(keys::AUDIT_SEQ)? - 1;
        w.put(
            &keys::audit(seq),
            &AuditRecord {
                at: cmd.now,
                actor: cmd.actor.clone(),
                action: format!("{:?}", cmd.op),
                outcome,
            },
        );
        Ok(result)
    }
}

struct Writer<'a> {
    tree: &'a Tree,
    batch: &'a mut Batch,
}

impl Writer<'_> {
    fn put<T: serde::Serialize>(&mut self, key: &[u8], value: &T) {
        self.batch.insert(key, encode(value));
    }

    /// Increments a counter and returns its new value.
    fn bump(&mut self, key: &[u8]) -> Result<u64, StoreError> {
        let current = match self.tree.get(key)? {
            Some(v) => {
                u64::from_be_bytes(v.as_slice().try_into().map_err(|_| StoreError::Corrupt {
                    key: String::from_utf8_lossy(key).into_owned(),
                    reason: "counter is not 8 bytes".into(),
                })?)
            }
            None => 0,
        };
        self.batch.insert(key, (current + 1).to_be_bytes().to_vec());
        Ok(current + 1)
    }
}

fn reject(r: Rejection) -> Result<CommandResult, StoreError> {
    Ok(CommandResult::Rejected(r))
}

fn apply_op(
    view: &StateView,
    w: &mut Writer<'_>,
    cmd: &Command,
) -> Result<CommandResult, StoreError> {
    match &cmd.op {
        Op::AdmitChip { chip, domain_id } => {
            match view.domain()? {
                Some(cluster) if &cluster != domain_id => {
                    return reject(Rejection::WrongDomain { cluster });
                }
                Some(_) => {}
                None => w.put(keys::DOMAIN, domain_id),
            }
            let mut record = chip.clone();
            if let Some(existing) = view.chip(&chip.chip_id)? {
                record.placed = existing.placed;
                record.admitted_at = existing.admitted_at;
            }
            w.put(&keys::chip(&chip.chip_id), &record);
            Ok(CommandResult::ChipAdmitted)
        }
        Op::InitCa(ca) => {
            if view.ca()?.is_some() {
                return reject(Rejection::CaExists);
            }
            w.put(keys::CA, ca);
            Ok(CommandResult::CaInitialized)
        }
        Op::EnrollUser {
            user,
            activation_code,
        } => {
            if view.user(&user.user_id)?.is_some() {
                return reject(Rejection::UserExists(user.user_id.clone()));
            }
            for holder in &user.holders {
                if let Some(mut chip) = view.chip(&holder.chip_id)? {
                    chip.placed += 1;
                    w.put(&keys::chip(&chip.chip_id), &chip);
                }
            }
            w.put(&keys::user(&user.user_id), user);
            w.bump(keys::COUNT_USERS)?;
            Ok(CommandResult::Enrolled {
                user_id: user.user_id.clone(),
                activation_code: activation_code.clone(),
            })
        }
        Op::RegisterDevice {
            user_id,
            code_sha256,
            device,
        } => {
            let Some(mut user) = view.user(user_id)? else {
                return reject(Rejection::UnknownUser(user_id.clone()));
            };
            if user.state != UserState::Active {
                return reject(Rejection::UserRevoked(user_id.clone()));
            }
            if w.tree.get(&keys::device(&device.device_id))?.is_some() {
                return reject(Rejection::DeviceTaken(device.device_id.clone()));
            }
            let Some(activation) = user.activation.take() else {
                return reject(Rejection::ActivationInvalid);
            };
            if !yunkey_crypto::ct_eq(&activation.code_sha256, code_sha256)
                || activation.expires_at <= cmd.now
            {
                return reject(Rejection::ActivationInvalid);
            }
            // The code is used up: forget it in the enrolment's stored result too.
            let enroll_key = keys::request(&activation.enroll_request_id);
            if let Some(raw) = w.tree.get(&enroll_key)? {
                let mut prior: PriorRequest = decode(&enroll_key, &raw)?;
                prior.result = CommandResult::Enrolled {
                    user_id: user_id.clone(),
                    activation_code: String::new(),
                };
                w.put(&enroll_key, &prior);
            }
            user.devices.push(device.clone());
            w.put(&keys::user(user_id), &user);
            w.put(&keys::device(&device.device_id), user_id);
            w.bump(keys::COUNT_DEVICES)?;
            Ok(CommandResult::DeviceRegistered {
                user_id: user_id.clone(),
                device_id: device.device_id.clone(),
            })
        }
        Op::RevokeUser { user_id, reason } => {
            let Some(mut user) = view.user(user_id)? else {
                return reject(Rejection::UnknownUser(user_id.clone()));
            };
            user.state = UserState::Revoked;
            user.revoked_reason = Some(reason.clone());
            user.activation = None;
            w.put(&keys::user(user_id), &user);
            Ok(CommandResult::Revoked)
        }
        Op::ConsumeAuthorization {
            user_id,
            device_id,
            tx_hash,
            expires_at,
        } => {
            let Some(user) = view.user(user_id)? else {
                return reject(Rejection::UnknownUser(user_id.clone()));
            };
            if user.state != UserState::Active {
                return reject(Rejection::UserRevoked(user_id.clone()));
            }
            if !user.devices.iter().any(|d| &d.device_id == device_id) {
                return reject(Rejection::UnknownDevice);
            }
            if let Some(entry) = view.ledger(tx_hash)? {
                return reject(Rejection::AuthorizationUsed {
                    consumed_at: entry.consumed_at,
                });
            }
            w.put(
                &keys::ledger(tx_hash),
                &LedgerEntry {
                    user_id: user_id.clone(),
                    device_id: device_id.clone(),
                    request_id: cmd.request_id.clone(),
                    expires_at: *expires_at,
                    consumed_at: cmd.now,
                },
            );
            w.bump(keys::COUNT_SIGNATURES)?;
            Ok(CommandResult::Consumed)
        }
        Op::RecordNodeId(record) => {
            if let Some(first) = view.node_id(record.node_id)? {
                return reject(Rejection::NodeIdUsed {
                    node_id: record.node_id,
                    first_address: first.address,
                });
            }
            w.put(&keys::node_id(record.node_id), record);
            Ok(CommandResult::NodeIdRecorded)
        }
        // Answered in `apply_command` before any write.
        Op::Probe => Ok(CommandResult::Probed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Activation, DeviceRecord, UserRecord};
    use yunkey_store::Db;

    fn user(id: &str, code: &str) -> UserRecord {
        UserRecord {
            user_id: id.into(),
            algorithm: 1,
            public_key: vec![1],
            wrapped_key: vec![2],
            certificate: vec![3],
            state: UserState::Active,
            holders: vec![],
            devices: vec![],
            activation: Some(Activation {
                code_sha256: yunkey_crypto::sha256(code.as_bytes()),
                expires_at: 1000,
                enroll_request_id: format!("enroll-{id}"),
            }),
            created_at: 1,
            revoked_reason: None,
        }
    }

    fn device(id: &str) -> DeviceRecord {
        DeviceRecord {
            device_id: id.into(),
            name: String::new(),
            public_key: vec![],
            certificate: vec![],
            registered_at: 1,
        }
    }

    struct Sm {
        tree: Tree,
    }

    impl Sm {
        fn new() -> Self {
            Self {
                tree: Db::memory().tree("sm").unwrap(),
            }
        }
        fn run(&self, request_id: &str, now: i64, op: Op) -> CommandResult {
            let mut batch = Batch::new();
            let cmd = Command {
                request_id: request_id.into(),
                actor: "test".into(),
                now,
                op,
            };
            let r = App.apply_command(&self.tree, &mut batch, &cmd).unwrap();
            self.tree.apply(batch).unwrap();
            r
        }
        fn view(&self) -> StateView {
            StateView::new(self.tree.clone())
        }
    }

    fn consume(user: &str, dev: &str, hash: u8) -> Op {
        Op::ConsumeAuthorization {
            user_id: user.into(),
            device_id: dev.into(),
            tx_hash: [hash; 32],
            expires_at: 500,
        }
    }

    #[test]
    fn enrol_register_consume_and_replay() {
        let sm = Sm::new();
        let enrolled = sm.run(
            "enroll-alice",
            10,
            Op::EnrollUser {
                user: user("alice", "CODE"),
                activation_code: "CODE".into(),
            },
        );
        assert!(
            matches!(enrolled, CommandResult::Enrolled { ref activation_code, .. } if activation_code == "CODE")
        );
        // Retry: the same result, one user.
        assert_eq!(
            sm.run(
                "enroll-alice",
                11,
                Op::EnrollUser {
                    user: user("alice", "OTHER"),
                    activation_code: "OTHER".into()
                }
            ),
            enrolled
        );
        assert_eq!(sm.view().user_count().unwrap(), 1);
        // The same request id for another user is refused, not answered with alice's result.
        assert!(matches!(
            sm.run(
                "enroll-alice",
                12,
                Op::EnrollUser {
                    user: user("bob", "X"),
                    activation_code: "X".into()
                }
            ),
            CommandResult::Rejected(Rejection::RequestIdReused { .. })
        ));
        assert!(matches!(
            sm.run("e2", 12, Op::EnrollUser { user: user("alice", "X"), activation_code: "X".into() }),
            CommandResult::Rejected(Rejection::UserExists(ref u)) if u == "alice"
        ));

        // Wrong code, then the right one; the code is then forgotten everywhere.
        let register = |code: &str, dev: &str| Op::RegisterDevice {
            user_id: "alice".into(),
            code_sha256: yunkey_crypto::sha256(code.as_bytes()),
            device: device(dev),
        };
        assert_eq!(
            sm.run("r1", 20, register("NOPE", "d1")),
            CommandResult::Rejected(Rejection::ActivationInvalid)
        );
        assert!(matches!(
            sm.run("r2", 20, register("CODE", "d1")),
            CommandResult::DeviceRegistered { .. }
        ));
        assert_eq!(
            sm.run("r3", 20, register("CODE", "d2")),
            CommandResult::Rejected(Rejection::ActivationInvalid)
        );
        let prior = sm.view().request("enroll-alice").unwrap().unwrap();
        assert!(
            matches!(prior.result, CommandResult::Enrolled { ref activation_code, .. } if activation_code.is_empty())
        );
        assert!(sm
            .view()
            .user("alice")
            .unwrap()
            .unwrap()
            .activation
            .is_none());

        // Consume once; a replay under another id is refused; a retry is answered.
        assert_eq!(
            sm.run("s1", 30, consume("alice", "d1", 7)),
            CommandResult::Consumed
        );
        assert_eq!(
            sm.run("s2", 31, consume("alice", "d1", 7)),
            CommandResult::Rejected(Rejection::AuthorizationUsed { consumed_at: 30 })
        );
        assert_eq!(
            sm.run("s1", 32, consume("alice", "d1", 7)),
            CommandResult::Consumed
        );
        assert!(matches!(
            sm.run("s1", 32, consume("alice", "d1", 8)),
            CommandResult::Rejected(Rejection::RequestIdReused { .. })
        ));
        assert_eq!(
            sm.run("s3", 33, consume("alice", "dX", 9)),
            CommandResult::Rejected(Rejection::UnknownDevice)
        );
        assert_eq!(sm.view().signature_count().unwrap(), 1);

        // Revoked users consume nothing.
        assert_eq!(
            sm.run(
                "v1",
                40,
                Op::RevokeUser {
                    user_id: "alice".into(),
                    reason: "lost".into()
                }
            ),
            CommandResult::Revoked
        );
        assert!(matches!(
            sm.run("s4", 41, consume("alice", "d1", 10)),
            CommandResult::Rejected(Rejection::UserRevoked(_))
        ));
        // Every applied command left an audit record.
        assert!(sm.view().audit_tail(100).unwrap().len() >= 10);
    }

    #[test]
    fn node_ids_are_recorded_once_and_never_reused() {
        let sm = Sm::new();
        let record = |id: u64, address: &str| {
            Op::RecordNodeId(crate::state::NodeIdRecord {
                node_id: id,
                address: address.into(),
                added_at: 1,
            })
        };
        assert_eq!(
            sm.run("", 1, record(1, "https://a:1")),
            CommandResult::NodeIdRecorded
        );
        assert_eq!(
            sm.run("", 2, record(2, "https://b:1")),
            CommandResult::NodeIdRecorded
        );
        // Another node under a used id, even at another address, is refused.
        assert_eq!(
            sm.run("", 3, record(2, "https://c:1")),
            CommandResult::Rejected(Rejection::NodeIdUsed {
                node_id: 2,
                first_address: "https://b:1".into()
            })
        );
        let ids: Vec<u64> = sm
            .view()
            .node_ids()
            .unwrap()
            .iter()
            .map(|r| r.node_id)
            .collect();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(
            sm.view().node_id(2).unwrap().unwrap().address,
            "https://b:1",
            "the first record is kept"
        );
        assert!(sm.view().node_id(3).unwrap().is_none());
    }

    #[test]
    fn activation_expires_and_device_keys_serve_one_user() {
        let sm = Sm::new();
        for u in ["a", "b"] {
            sm.run(
                "",
                1,
                Op::EnrollUser {
                    user: user(u, "C"),
                    activation_code: "C".into(),
                },
            );
        }
        let register = |u: &str, dev: &str| Op::RegisterDevice {
            user_id: u.into(),
            code_sha256: yunkey_crypto::sha256(b"C"),
            device: device(dev),
        };
        assert_eq!(
            sm.run("", 5000, register("a", "d1")),
            CommandResult::Rejected(Rejection::ActivationInvalid),
            "expired"
        );
        assert!(matches!(
            sm.run("", 5, register("a", "d1")),
            CommandResult::DeviceRegistered { .. }
        ));
        assert_eq!(
            sm.run("", 5, register("b", "d1")),
            CommandResult::Rejected(Rejection::DeviceTaken("d1".into()))
        );
        assert!(
            sm.view().user("b").unwrap().unwrap().activation.is_some(),
            "the refused registration used nothing"
        );
    }

    #[test]
    fn probe_writes_nothing() {
        let sm = Sm::new();
        assert_eq!(sm.run("", 1, Op::Probe), CommandResult::Probed);
        // Even under a request id: no request record, no audit record, no state.
        assert_eq!(sm.run("probe-1", 1, Op::Probe), CommandResult::Probed);
        assert!(sm.tree.is_empty());
    }
}
