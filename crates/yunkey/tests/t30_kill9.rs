//! Durability: `kill -9` of `yunkey dev` in the middle of an enrolment load loses no
//! enrolment a client saw acknowledged, and a consumed authorization stays consumed.

mod common;

use common::{enroll_with_device, transaction, Dev};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::Code;
use yunkey_client::key_client;
use yunkey_proto::v1::{EnrollUserRequest, GetUserRequest, ReadConsistency};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("cluster");
    let mut dev = Dev::start_in(&dir);

    // A consumed authorization before the crash.
    let alice = enroll_with_device(&dev, "alice").await;
    let tx = transaction("alice", "3");
    key_client(dev.business().current_channel())
        .sign(alice.sign_request("before-crash", tx.clone()))
        .await
        .unwrap();

    for round in 0..3 {
        let acked = Arc::new(Mutex::new(Vec::<String>::new()));
        let key = key_client(dev.business().current_channel());
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let (mut key, acked) = (key.clone(), acked.clone());
                tokio::spawn(async move {
                    for i in 0.. {
                        let user_id = format!("r{round}-w{w}-u{i}");
                        let req = EnrollUserRequest {
                            request_id: format!("enroll-{user_id}"),
                            user_id: user_id.clone(),
                            algorithm: 0,
                            display_name: String::new(),
                            distinguishing_id: String::new(),
                        };
                        match key.enroll_user(req).await {
                            Ok(_) => acked.lock().unwrap().push(user_id),
                            Err(e) => {
                                eprintln!("writer {w} stopped: {e:?}");
                                return;
                            }
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300 + 200 * round)).await;
        dev.kill9();
        for w in writers {
            let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
        }
        let acked = acked.lock().unwrap().clone();
        assert!(
            !acked.is_empty(),
            "round {round}: some enrolments were acknowledged before the kill"
        );

        dev = Dev::start_in(&dir);
        let mut key = key_client(dev.business().current_channel());
        for user_id in &acked {
            let user = key
                .get_user(GetUserRequest {
                    user_id: user_id.clone(),
                    consistency: ReadConsistency::Linearizable as i32,
                })
                .await
                .unwrap_or_else(|e| {
                    panic!("round {round}: acknowledged user {user_id} lost: {e:?}")
                })
                .into_inner();
            assert!(!user.holders.is_empty());
        }
        eprintln!(
            "round {round}: {} acknowledged enrolments all present after kill -9",
            acked.len()
        );
    }

    // The authorization consumed before the crashes is still consumed.
    let err = key_client(dev.business().current_channel())
        .sign(alice.sign_request("after-crash", tx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    // And the user can still sign new transactions after the crashes.
    key_client(dev.business().current_channel())
        .sign(alice.sign_request("", transaction("alice", "4")))
        .await
        .unwrap();
}
