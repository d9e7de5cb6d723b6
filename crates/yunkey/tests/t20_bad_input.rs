//! Every bad input gets its own gRPC status with a message that says what is wrong, and
//! changes nothing: the state counts stay put and a good request still works afterwards.

mod common;

use common::{enroll_with_device, expect, now, transaction, Dev};
use tonic::Code;
use yunkey_client::{cluster_client, key_client, terminal_client};
use yunkey_proto::v1::sign_result::Result as Outcome;
use yunkey_proto::v1::{
    Algorithm, Authorization, AuthorizationFormat, EnrollUserRequest, GetTimeRequest,
    GetUserRequest, RegisterDeviceRequest, RevokeUserRequest, SignBatchRequest, SignRequest,
    StatusRequest, VerifyRequest, WriteProbeRequest,
};

async fn counts(dev: &Dev) -> (u64, u64, u64) {
    let s = cluster_client(dev.business().current_channel())
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    (s.users, s.devices, s.applied_index)
}

/// A dev cluster whose leader does not prune while the test runs: a prune is a Raft write,
/// and these tests read the applied index to check that refusals and retries write nothing.
fn dev_without_prunes() -> Dev {
    Dev::start_args(&["--prune-every", "86400"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_refusals() {
    let dev = dev_without_prunes();
    let alice = enroll_with_device(&dev, "alice").await;
    let bob = enroll_with_device(&dev, "bob").await;
    let mut key = key_client(dev.business().current_channel());
    let before = counts(&dev).await;

    // Unknown user.
    let mut req = alice.sign_request("", transaction("ghost", "1"));
    req.user_id = "ghost".into();
    expect(
        key.sign(req).await,
        Code::NotFound,
        &["ghost", "not enrolled"],
    );

    // A device registered to someone else.
    let tx = transaction("alice", "5");
    let mut req = alice.sign_request("", tx.clone());
    req.authorization = Some(bob.authorize(&tx));
    expect(
        key.sign(req).await,
        Code::PermissionDenied,
        &[&bob.device_id, "not registered"],
    );

    // The amount changed after the device approved.
    let tx = transaction("alice", "5");
    let mut req = alice.sign_request("", tx.clone());
    req.transaction.as_mut().unwrap().amount = "500".into();
    expect(
        key.sign(req).await,
        Code::PermissionDenied,
        &["does not cover this transaction"],
    );

    // Expired, and too far ahead.
    let mut tx = transaction("alice", "5");
    tx.expires_at = now() - 5;
    expect(
        key.sign(alice.sign_request("", tx)).await,
        Code::FailedPrecondition,
        &["expired"],
    );
    let mut tx = transaction("alice", "5");
    tx.expires_at = now() + 3600;
    expect(
        key.sign(alice.sign_request("", tx)).await,
        Code::FailedPrecondition,
        &["more than 600 s"],
    );

    // Malformed fields, each named.
    let good = transaction("alice", "5");
    type Mutation = Box<dyn Fn(&mut SignRequest)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (Box::new(|r| r.user_id = String::new()), "user_id"),
        (Box::new(|r| r.user_id = "a b".into()), "user_id"),
        (Box::new(|r| r.transaction = None), "transaction"),
        (Box::new(|r| r.authorization = None), "authorization"),
        (
            Box::new(|r| r.transaction.as_mut().unwrap().amount = "5.00".into()),
            "transaction.amount",
        ),
        (
            Box::new(|r| r.transaction.as_mut().unwrap().amount = "-5".into()),
            "transaction.amount",
        ),
        (
            Box::new(|r| r.transaction.as_mut().unwrap().currency = "euro".into()),
            "transaction.currency",
        ),
        (
            Box::new(|r| r.transaction.as_mut().unwrap().nonce = vec![1; 4]),
            "transaction.nonce",
        ),
        (
            Box::new(|r| r.transaction.as_mut().unwrap().payee = "x\ny".into()),
            "transaction.payee",
        ),
        (
            Box::new(|r| r.authorization.as_mut().unwrap().signature = vec![0; 200]),
            "authorization.signature",
        ),
        (
            Box::new(|r| r.authorization.as_mut().unwrap().device_id = String::new()),
            "authorization.device_id",
        ),
        (Box::new(|r| r.request_id = "bad id!".into()), "request_id"),
        (
            Box::new(|r| r.authorization.as_mut().unwrap().format = 9),
            "authorization.format",
        ),
    ];
    for (mutate, field) in cases {
        let mut req = alice.sign_request("", good.clone());
        mutate(&mut req);
        expect(key.sign(req).await, Code::InvalidArgument, &[field]);
    }
    // The reserved WebAuthn format, around a valid ECDSA signature: refused, not signed.
    let mut req = alice.sign_request("", good.clone());
    req.authorization.as_mut().unwrap().format = AuthorizationFormat::Webauthn as i32;
    expect(
        key.sign(req).await,
        Code::InvalidArgument,
        &["authorization.format", "not supported yet"],
    );
    // A signature of the right size but not DER: refused as not matching.
    let mut req = alice.sign_request("", good.clone());
    req.authorization = Some(Authorization {
        device_id: alice.device_id.clone(),
        signature: vec![0x30; 70],
        format: 0,
    });
    expect(
        key.sign(req).await,
        Code::PermissionDenied,
        &["does not cover"],
    );

    // Nothing above changed the state, and the untouched authorization still works.
    assert_eq!(
        counts(&dev).await,
        before,
        "refused requests must not write"
    );
    let ok = key
        .sign(alice.sign_request("r-1", good.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(!ok.signature.is_empty());

    // The same authorization again: refused under a new request id, even by the other path.
    expect(
        key.sign(alice.sign_request("r-2", good.clone())).await,
        Code::AlreadyExists,
        &["already used"],
    );
    let mut terminal = terminal_client(dev.device_channel(&alice).current_channel());
    expect(
        terminal
            .sign_transaction(alice.sign_request("r-3", good.clone()))
            .await,
        Code::AlreadyExists,
        &["already used"],
    );
    // ...while a retry with the first request id is signed again: the chip that signed first
    // answers from its replay guard with the very same bytes; the other holder makes a new
    // (randomized) signature of the same transaction. Both verify under alice's key.
    for _ in 0..4 {
        let again = key
            .sign(alice.sign_request("r-1", good.clone()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.tx_hash, ok.tx_hash);
        if again.chip_id == ok.chip_id {
            assert_eq!(again.signature, ok.signature, "the replay guard's answer");
        }
        let verified = key
            .verify(VerifyRequest {
                user_id: "alice".into(),
                transaction: Some(good.clone()),
                tx_hash: Vec::new(),
                signature: again.signature.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(verified.valid, "{}", verified.reason);
    }

    // Revoked users sign nothing.
    key.revoke_user(RevokeUserRequest {
        request_id: String::new(),
        user_id: "bob".into(),
        reason: "lost phone".into(),
    })
    .await
    .unwrap();
    expect(
        key.sign(bob.sign_request("", transaction("bob", "1")))
            .await,
        Code::PermissionDenied,
        &["revoked"],
    );
}

/// SignBatch: each item is answered in place as Sign would answer it alone; a refused item
/// stops nothing else; a batch of no item or too many is refused whole and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_batch_items_answered_in_place() {
    let dev = dev_without_prunes();
    let alice = enroll_with_device(&dev, "alice").await;
    let bob = enroll_with_device(&dev, "bob").await;
    let mut key = key_client(dev.business().current_channel());

    let (tx_a, tx_b) = (transaction("alice", "5"), transaction("bob", "7"));
    let mut tampered = alice.sign_request("", transaction("alice", "5"));
    tampered.transaction.as_mut().unwrap().amount = "500".into();
    let mut ghost = alice.sign_request("", transaction("ghost", "1"));
    ghost.user_id = "ghost".into();
    let items = vec![
        alice.sign_request("", tx_a.clone()),
        tampered,
        bob.sign_request("", tx_b.clone()),
        ghost,
    ];
    let results = key
        .sign_batch(SignBatchRequest { items })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 4);
    let signed = |i: usize| match &results[i].result {
        Some(Outcome::Signed(s)) => s.clone(),
        other => panic!("item {i}: {other:?}"),
    };
    let refused = |i: usize| match &results[i].result {
        Some(Outcome::Error(e)) => e.clone(),
        other => panic!("item {i}: {other:?}"),
    };
    for (i, user, tx) in [(0, "alice", &tx_a), (2, "bob", &tx_b)] {
        let s = signed(i);
        assert_eq!(s.certificate_chain.len(), 2, "item {i}");
        let verified = key
            .verify(VerifyRequest {
                user_id: user.into(),
                transaction: Some(tx.clone()),
                tx_hash: Vec::new(),
                signature: s.signature.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(verified.valid, "item {i}: {}", verified.reason);
    }
    let e = refused(1);
    assert_eq!(e.code, Code::PermissionDenied as i32, "{e:?}");
    assert!(
        e.message.contains("does not cover this transaction"),
        "{e:?}"
    );
    let e = refused(3);
    assert_eq!(e.code, Code::NotFound as i32, "{e:?}");
    assert!(e.message.contains("ghost"), "{e:?}");

    // The first item's authorization is consumed: under another request id it is a replay;
    // under its own (default) request id it is answered again, as Sign answers a retry.
    let before = counts(&dev).await;
    let results = key
        .sign_batch(SignBatchRequest {
            items: vec![
                alice.sign_request("another-id", tx_a.clone()),
                alice.sign_request("", tx_a.clone()),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    match &results[0].result {
        Some(Outcome::Error(e)) => assert_eq!(e.code, Code::AlreadyExists as i32, "{e:?}"),
        other => panic!("replay: {other:?}"),
    }
    match &results[1].result {
        Some(Outcome::Signed(s)) => assert_eq!(s.tx_hash, signed(0).tx_hash),
        other => panic!("retry: {other:?}"),
    }
    // Neither went through Raft: the replay is refused by the ledger here, and the retry is
    // known from the ledger entry, which is its record (no request record repeats it).
    assert_eq!(
        counts(&dev).await.2,
        before.2,
        "a replay and a retry write nothing"
    );

    // Two copies of a new request without a request id, proposed together: one consumes the
    // authorization, the other is its retry, and both are signed.
    let tx_c = transaction("alice", "9");
    let results = key
        .sign_batch(SignBatchRequest {
            items: vec![
                alice.sign_request("", tx_c.clone()),
                alice.sign_request("", tx_c.clone()),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let hashes: Vec<Vec<u8>> = results
        .iter()
        .map(|r| match &r.result {
            Some(Outcome::Signed(s)) => s.tx_hash.clone(),
            other => panic!("a copy: {other:?}"),
        })
        .collect();
    assert_eq!(hashes[0], hashes[1]);

    // No item, or more than 256: refused whole, naming `items`; nothing changes.
    let before_sizes = counts(&dev).await;
    expect(
        key.sign_batch(SignBatchRequest { items: vec![] }).await,
        Code::InvalidArgument,
        &["items", "has 0 items", "1 to 256"],
    );
    let many = (0..257)
        .map(|n| alice.sign_request("", transaction("alice", &(n + 1).to_string())))
        .collect();
    expect(
        key.sign_batch(SignBatchRequest { items: many }).await,
        Code::InvalidArgument,
        &["items", "has 257 items", "1 to 256"],
    );
    assert_eq!(counts(&dev).await, before_sizes);
    assert_eq!(before.0, before_sizes.0, "users");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_and_registration_refusals() {
    let dev = dev_without_prunes();
    let mut key = key_client(dev.business().current_channel());
    let mut terminal = terminal_client(dev.device().current_channel());
    let enroll = |user: &str, alg: i32, rid: &str| EnrollUserRequest {
        request_id: rid.into(),
        user_id: user.into(),
        algorithm: alg,
        display_name: String::new(),
        distinguishing_id: String::new(),
    };
    let first = key
        .enroll_user(enroll("dora", 0, "e-1"))
        .await
        .unwrap()
        .into_inner();
    // Idempotent retry: the same user, one user; since codes are stored only as hashes, the
    // retry carries a new code, and the first one is void.
    let retry = key
        .enroll_user(enroll("dora", 0, "e-1"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(retry.activation_code, first.activation_code);
    assert!(!retry.activation_code.is_empty());
    assert_eq!(
        retry.user.unwrap().public_key,
        first.user.clone().unwrap().public_key
    );
    let before = counts(&dev).await;
    assert_eq!(before.0, 1);

    expect(
        key.enroll_user(enroll("dora", 0, "e-2")).await,
        Code::AlreadyExists,
        &["dora", "already enrolled"],
    );
    // A distinguishing ID that is not for SM2, or not printable: refused, naming the field.
    for (alg, id, words) in [
        (0, "alice", &["distinguishing_id", "SM2 keys only"][..]),
        (
            Algorithm::Sm2 as i32,
            "has space",
            &["distinguishing_id", "printable"][..],
        ),
        (
            Algorithm::Sm2 as i32,
            &"x".repeat(65)[..],
            &["distinguishing_id", "64"][..],
        ),
    ] {
        expect(
            key.enroll_user(EnrollUserRequest {
                distinguishing_id: id.into(),
                ..enroll("eve", alg, "")
            })
            .await,
            Code::InvalidArgument,
            words,
        );
    }
    expect(
        key.enroll_user(enroll("eve", 42, "")).await,
        Code::InvalidArgument,
        &["algorithm"],
    );
    expect(
        key.enroll_user(enroll("", 0, "")).await,
        Code::InvalidArgument,
        &["user_id"],
    );
    expect(
        key.get_user(GetUserRequest {
            user_id: "nobody".into(),
            consistency: 0,
        })
        .await,
        Code::NotFound,
        &["nobody"],
    );
    expect(
        key.revoke_user(RevokeUserRequest {
            request_id: String::new(),
            user_id: "nobody".into(),
            reason: String::new(),
        })
        .await,
        Code::NotFound,
        &["nobody"],
    );

    // Registration: wrong code, bad proof, malformed key.
    let device = yunkey_crypto::ecdsa::PrivateKey::generate();
    let spki = device.public_key().to_spki_der();
    let register = |code: &str, proof: Vec<u8>, key: Vec<u8>| RegisterDeviceRequest {
        request_id: String::new(),
        user_id: "dora".into(),
        activation_code: code.into(),
        device_public_key: key,
        proof,
        device_name: String::new(),
        release_id: String::new(),
    };
    let proof_for = |code: &str| {
        device.sign_message(&yunkey_crypto::authz::registration_message(
            "dora", code, &spki,
        ))
    };
    for code in ["WRONG-CODE", &first.activation_code] {
        expect(
            terminal
                .register_device(register(code, proof_for(code), spki.clone()))
                .await,
            Code::PermissionDenied,
            &["activation code"],
        );
    }
    expect(
        terminal
            .register_device(register(
                &retry.activation_code,
                proof_for("other"),
                spki.clone(),
            ))
            .await,
        Code::PermissionDenied,
        &["proof of possession"],
    );
    expect(
        terminal
            .register_device(register(
                &retry.activation_code,
                proof_for(&retry.activation_code),
                b"junk".to_vec(),
            ))
            .await,
        Code::InvalidArgument,
        &["device_public_key"],
    );
    // Refused requests change nothing; the two wrong codes were each counted through Raft
    // (one entry each: --activation-attempts); the bad proof and key wrote nothing.
    assert_eq!(
        counts(&dev).await,
        (before.0, before.1, before.2 + 2),
        "refused requests must not write beyond counting wrong codes"
    );

    // The right code works once; a second device with the same code is refused.
    terminal
        .register_device(register(
            &retry.activation_code,
            proof_for(&retry.activation_code),
            spki.clone(),
        ))
        .await
        .unwrap();
    let other = yunkey_crypto::ecdsa::PrivateKey::generate();
    let other_spki = other.public_key().to_spki_der();
    let other_proof = other.sign_message(&yunkey_crypto::authz::registration_message(
        "dora",
        &retry.activation_code,
        &other_spki,
    ));
    expect(
        terminal
            .register_device(register(&retry.activation_code, other_proof, other_spki))
            .await,
        Code::PermissionDenied,
        &["activation code"],
    );
    // The enrolment retry no longer reveals the used code.
    let late = key
        .enroll_user(enroll("dora", 0, "e-1"))
        .await
        .unwrap()
        .into_inner();
    assert!(late.activation_code.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_refusals() {
    let dev = Dev::start();
    let get = || GetUserRequest {
        user_id: "x".into(),
        consistency: 0,
    };

    // No client certificate: the business API refuses, the device API serves.
    expect(
        key_client(dev.device().current_channel())
            .get_user(get())
            .await,
        Code::Unauthenticated,
        &["client certificate"],
    );
    let t = terminal_client(dev.device().current_channel())
        .get_time(GetTimeRequest {})
        .await
        .unwrap();
    assert!((t.into_inner().unix_seconds - now()).abs() < 5);

    // A node certificate is not a business client.
    expect(
        key_client(dev.as_node().current_channel())
            .get_user(get())
            .await,
        Code::PermissionDenied,
        &["role node"],
    );

    // A certificate from a CA the cluster does not trust fails the TLS handshake.
    let err = key_client(dev.untrusted().current_channel())
        .get_user(get())
        .await
        .unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    assert_ne!(
        err.code(),
        Code::NotFound,
        "an untrusted client must not reach the service"
    );

    // Oversized messages are refused before they are decoded (KeyService takes up to
    // yunkey_net::MAX_IMAGE_MESSAGE_BYTES, for face photos).
    let mut key = tonic_client_without_limits(&dev).await;
    let huge = EnrollUserRequest {
        request_id: String::new(),
        user_id: "big".into(),
        algorithm: 0,
        display_name: "x".repeat(yunkey_net::MAX_IMAGE_MESSAGE_BYTES + 1),
        distinguishing_id: String::new(),
    };
    let err = key.enroll_user(huge).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err:?}"
    );
    assert!(
        err.message().contains("message") || err.message().contains("length"),
        "{err:?}"
    );
    expect(
        key_client(dev.business().current_channel())
            .get_user(GetUserRequest {
                user_id: "big".into(),
                consistency: 0,
            })
            .await,
        Code::NotFound,
        &["big"],
    );

    // Health and the internal Raft service.
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(dev.business().current_channel());
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "yunkey.v1.KeyService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let raft = yunkey_proto::v1::raft_service_client::RaftServiceClient::new(
        dev.business().current_channel(),
    )
    .vote(yunkey_proto::v1::RaftPayload { data: vec![] })
    .await;
    expect(raft, Code::PermissionDenied, &["role client"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_probe_roles_and_effect() {
    let dev = Dev::start();
    // A device (no client certificate) may not write to the cluster's log.
    expect(
        cluster_client(dev.device().current_channel())
            .write_probe(WriteProbeRequest {})
            .await,
        Code::Unauthenticated,
        &["client certificate"],
    );
    let (users, devices, applied) = counts(&dev).await;
    // An operator's probe commits one entry: the applied index moves past it, nothing else.
    let r = cluster_client(dev.business().current_channel())
        .write_probe(WriteProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(r.log_index > applied, "{r:?} after applied index {applied}");
    assert_eq!(r.leader_id, r.node_id, "one node leads itself");
    let (users2, devices2, applied2) = counts(&dev).await;
    assert_eq!((users2, devices2), (users, devices));
    assert!(
        applied2 >= r.log_index,
        "applied {applied2} < {}",
        r.log_index
    );
    // A node identity may probe too (WriteProbe accepts every role: docs/api.md).
    let again = cluster_client(dev.as_node().current_channel())
        .write_probe(WriteProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(again.log_index > r.log_index);
    // The CLI: `yunkey ctl probe --json`.
    let out = dev.cli(&["--json", "ctl", "probe"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["log_index"].as_u64().unwrap() > again.log_index, "{v}");
}

async fn tonic_client_without_limits(
    dev: &Dev,
) -> yunkey_proto::v1::key_service_client::KeyServiceClient<tonic::transport::Channel> {
    yunkey_proto::v1::key_service_client::KeyServiceClient::new(dev.business().current_channel())
        .max_encoding_message_size(usize::MAX)
}
