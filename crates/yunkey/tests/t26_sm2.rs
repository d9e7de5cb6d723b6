//! 国密: SM2 users end to end.
//!
//! - The walkthrough with SM2 through the real binary, checked with OpenSSL: an SM2 user with
//!   their own distinguishing ID, an SM2 device key (its certificate from the SM2 user CA and
//!   an `sm2sig_sm3` TLS handshake on the device channel), a payment saved with `--save`, the
//!   signature verified by `openssl dgst -sm3 -sigopt distid:<ID>` and the chain by
//!   `openssl verify`.
//! - SM2 and P-256 never stand in for each other: a signature of one verifies as nothing of the
//!   other, and an authorization in one form is refused as the other.
//! - A mixed cluster (3 coordinator processes, 2 chip processes) of P-256 and SM2 users keeps
//!   signing for both through a kill -9 of a coordinator and of a chip.

mod common;

use common::{openssl, Cluster, Dev, Proc, TestDevice};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;
use tonic::Code;
use yunkey_client::{key_client, terminal_client, Connection};
use yunkey_crypto::sig::{Algorithm, SigningKey, VerifyingKey};
use yunkey_proto::v1::{GetUserRequest, SignRequest, SignResponse, VerifyRequest};

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sm2_walkthrough_verified_by_openssl() {
    let dev = Dev::start();
    let work = tempfile::tempdir().unwrap();
    let keystore = work.path().join("alice-phone");
    let receipt = work.path().join("receipt");
    let id = "alice@bank.example";
    let code = ok(&dev.cli(&[
        "user",
        "enroll",
        "alice",
        "--algorithm",
        "sm2",
        "--distinguishing-id",
        id,
        "--quiet",
    ]));
    let code = code.trim();
    ok(&dev.cli(&[
        "terminal",
        "register",
        "--user",
        "alice",
        "--activation-code",
        code,
        "--keystore",
        keystore.to_str().unwrap(),
        "--algorithm",
        "sm2",
    ]));
    let shown = ok(&dev.cli(&["user", "show", "alice"]));
    assert!(
        shown.contains(&format!("sm2 (distinguishing ID {id})")),
        "{shown}"
    );
    // The payment goes over the device channel: the SM2 device certificate and an sm2sig_sm3
    // handshake.
    ok(&dev.cli(&[
        "terminal",
        "pay",
        "--user",
        "alice",
        "--payee",
        "Corner Shop",
        "--amount",
        "88",
        "--currency",
        "CNY",
        "--keystore",
        keystore.to_str().unwrap(),
        "--save",
        receipt.to_str().unwrap(),
        "--yes",
    ]));

    // The signature, under alice's ID, and not under the default one, nor as ECDSA.
    let dgst = |digest: &[&str]| {
        let mut args = vec!["dgst"];
        args.extend_from_slice(digest);
        args.extend_from_slice(&[
            "-verify",
            "user-pub.pem",
            "-signature",
            "signature.der",
            "transaction.txt",
        ]);
        openssl(&args, &receipt)
    };
    let alice_id = format!("distid:{id}");
    let (verified, text) = dgst(&["-sm3", "-sigopt", &alice_id]);
    assert!(verified && text.contains("Verified OK"), "{text}");
    let (verified, text) = dgst(&["-sm3", "-sigopt", "distid:1234567812345678"]);
    assert!(!verified, "another ID must not verify: {text}");
    let (verified, text) = dgst(&["-sha256"]);
    assert!(!verified, "{text}");

    // The chain: the SM2 user CA, SM2-with-SM3, under the default ID (GM/T 0015).
    let (verified, text) = openssl(
        &[
            "verify",
            "-vfyopt",
            "distid:1234567812345678",
            "-CAfile",
            "ca.pem",
            "user.pem",
        ],
        &receipt,
    );
    assert!(verified && text.contains("user.pem: OK"), "{text}");
    let (_, text) = openssl(&["x509", "-in", "user.pem", "-noout", "-text"], &receipt);
    assert!(text.contains("Signature Algorithm: SM2-with-SM3"), "{text}");
    assert!(text.contains("ASN1 OID: SM2"), "{text}");
    assert!(text.contains("URI:urn:yunkey:user:alice"), "{text}");
    let (_, text) = openssl(&["x509", "-in", "ca.pem", "-noout", "-subject"], &receipt);
    assert!(text.contains("yunkey SM2 user CA"), "{text}");
    // The receipt's CA is the cluster's SM2 user CA.
    let pinned = work.path().join("sm2-user-ca.pem");
    ok(&dev.cli(&["status", "--sm2-user-ca-out", pinned.to_str().unwrap()]));
    assert_eq!(
        std::fs::read(&pinned).unwrap(),
        std::fs::read(receipt.join("ca.pem")).unwrap()
    );
    // The CLI's own check, by the cluster and against the certificate.
    let sig_hex = hex::encode(std::fs::read(receipt.join("signature.der")).unwrap());
    let tx_file = receipt.join("transaction.txt");
    let by_cluster = ok(&dev.cli(&[
        "verify",
        "--user",
        "alice",
        "--transaction",
        tx_file.to_str().unwrap(),
        "--signature",
        &sig_hex,
    ]));
    assert!(
        by_cluster.contains("valid signature by user alice"),
        "{by_cluster}"
    );
    let local = |id: &str| {
        dev.cli(&[
            "verify",
            "--certificate",
            receipt.join("user.pem").to_str().unwrap(),
            "--transaction",
            tx_file.to_str().unwrap(),
            "--distinguishing-id",
            id,
            "--signature",
            &sig_hex,
        ])
    };
    let good = ok(&local(id));
    assert!(good.contains("valid signature by CN=alice"), "{good}");
    let other = local("1234567812345678");
    assert!(!other.status.success());
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("signature is not valid"),
        "{other:?}"
    );
    // The receipt's own script runs the same checks.
    let out = Command::new("sh")
        .arg(receipt.join("verify.sh"))
        .output()
        .unwrap();
    ok(&out);
}

/// Signs a fresh transaction for `device`'s user; through a failover the cluster may answer
/// UNAVAILABLE for a moment (a new leader, a chip not yet seen down), so the same request is
/// sent again for up to 10 s.
async fn sign(conn: &Connection, device: &TestDevice, amount: &str) -> SignResponse {
    let req = device.sign_request("", common::transaction(&device.user_id, amount));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let result = conn
            .call(|ch| {
                let req = req.clone();
                async move { key_client(ch).sign(req).await }
            })
            .await;
        match result {
            Ok(signed) => return signed,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("sign for {} again after: {e:?}", device.user_id);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("sign for {}: {e:?}", device.user_id),
        }
    }
}

async fn verify(conn: &Connection, user: &str, req: &SignRequest, signature: &[u8]) -> bool {
    key_client(conn.current_channel())
        .verify(VerifyRequest {
            user_id: user.into(),
            transaction: req.transaction.clone(),
            tx_hash: Vec::new(),
            signature: signature.to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .valid
}

async fn onboard(
    business: &Connection,
    device: &Connection,
    user: &str,
    user_key: Algorithm,
    device_key: Algorithm,
) -> TestDevice {
    let code = common::enroll_code_with(business, user, user_key, "").await;
    common::register_key(device, SigningKey::generate(device_key), user, &code).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sm2_and_p256_do_not_stand_in_for_each_other() {
    let dev = Dev::start();
    let business = dev.business();
    let sm = onboard(
        &business,
        &dev.device(),
        "sm",
        Algorithm::Sm2,
        Algorithm::Sm2,
    )
    .await;
    let pp = onboard(
        &business,
        &dev.device(),
        "pp",
        Algorithm::EcdsaP256,
        Algorithm::EcdsaP256,
    )
    .await;

    let sm_req = sm.sign_request("", common::transaction("sm", "5"));
    let sm_signed = key_client(business.current_channel())
        .sign(sm_req.clone())
        .await
        .unwrap()
        .into_inner();
    let pp_req = pp.sign_request("", common::transaction("pp", "5"));
    let pp_signed = key_client(business.current_channel())
        .sign(pp_req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sm_signed.distinguishing_id, "1234567812345678");
    assert!(pp_signed.distinguishing_id.is_empty());
    assert_ne!(
        sm_signed.certificate_chain[1], pp_signed.certificate_chain[1],
        "each algorithm's users have their own CA"
    );

    // Each verifies as itself, and as nothing of the other (same transaction bytes too).
    assert!(verify(&business, "sm", &sm_req, &sm_signed.signature).await);
    assert!(verify(&business, "pp", &pp_req, &pp_signed.signature).await);
    let pp_with_sm_tx = SignRequest {
        transaction: sm_req.transaction.clone(),
        ..pp_req.clone()
    };
    assert!(!verify(&business, "pp", &pp_with_sm_tx, &sm_signed.signature).await);
    let sm_with_pp_tx = SignRequest {
        transaction: pp_req.transaction.clone(),
        ..sm_req.clone()
    };
    assert!(!verify(&business, "sm", &sm_with_pp_tx, &pp_signed.signature).await);
    // A P-256 key of the SM2 key's own scalar (the same secret on the other curve) does not
    // take its signature either.
    let twin = VerifyingKey::from_spki_der(
        &SigningKey::from_secret_bytes(Algorithm::EcdsaP256, &sm.key.to_secret_bytes())
            .unwrap()
            .public_key()
            .to_spki_der(),
    )
    .unwrap();
    let canonical = yunkey_crypto::tx::encode(sm_req.transaction.as_ref().unwrap()).unwrap();
    assert!(twin
        .verify_message(&canonical, &sm_signed.signature)
        .is_err());
    // An SM2 signature covers the transaction itself: its SHA-256 alone is refused.
    common::expect(
        key_client(business.current_channel())
            .verify(VerifyRequest {
                user_id: "sm".into(),
                transaction: None,
                tx_hash: sm_signed.tx_hash.clone(),
                signature: sm_signed.signature.clone(),
            })
            .await,
        Code::InvalidArgument,
        &["transaction", "SM2"],
    );

    // An authorization in one form sent as the other: refused before anything is consumed,
    // and the same authorization in its own form then signs.
    for (device, wrong_format) in [(&sm, 1), (&pp, 3)] {
        let tx = common::transaction(&device.user_id, "7");
        let mut req = device.sign_request("", tx);
        let right = req.clone();
        req.authorization.as_mut().unwrap().format = wrong_format;
        common::expect(
            key_client(business.current_channel()).sign(req).await,
            Code::InvalidArgument,
            &["authorization.format", "device key is"],
        );
        key_client(business.current_channel())
            .sign(right)
            .await
            .unwrap_or_else(|e| panic!("{}'s own form signs: {e:?}", device.user_id));
    }

    // The SM2 device on the device channel (SM2 certificate, sm2sig_sm3 handshake).
    let signed = terminal_client(dev.device_channel(&sm).current_channel())
        .sign_transaction(sm.sign_request("", common::transaction("sm", "9")))
        .await
        .unwrap()
        .into_inner();
    assert!(!signed.signature.is_empty());
    let user = get_user(&business, "sm").await;
    assert_eq!(user.algorithm, yunkey_proto::v1::Algorithm::Sm2 as i32);
    assert_eq!(user.distinguishing_id, "1234567812345678");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_cluster_fails_over() {
    let mut cluster = Cluster::new();
    let (mut chips, mut nodes) = common::start_three(&mut cluster).await;
    let endpoints: Vec<String> = nodes.values().map(|n| n.endpoint.clone()).collect();
    let eps: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    let business = cluster.business(&eps);
    let device = cluster.device(&eps);

    let users = [
        onboard(
            &business,
            &device,
            "p1",
            Algorithm::EcdsaP256,
            Algorithm::EcdsaP256,
        )
        .await,
        onboard(&business, &device, "s1", Algorithm::Sm2, Algorithm::Sm2).await,
        onboard(
            &business,
            &device,
            "s2",
            Algorithm::Sm2,
            Algorithm::EcdsaP256,
        )
        .await,
        onboard(
            &business,
            &device,
            "p2",
            Algorithm::EcdsaP256,
            Algorithm::Sm2,
        )
        .await,
    ];
    let check = |u: &TestDevice, signed: &SignResponse, amount: &str| {
        // The signature is the user key's, of its algorithm.
        let cert = <x509_cert::Certificate as der::Decode>::from_der(&signed.certificate_chain[0])
            .unwrap();
        let spki = der::Encode::to_der(&cert.tbs_certificate.subject_public_key_info).unwrap();
        let key = VerifyingKey::from_spki_der(&spki).unwrap();
        let sm2 = u.user_id.starts_with('s');
        assert_eq!(key.algorithm() == Algorithm::Sm2, sm2, "{}", u.user_id);
        assert!(!signed.signature.is_empty(), "{amount}");
    };
    for u in &users {
        let signed = sign(&business, u, "1").await;
        check(u, &signed, "1");
    }

    // A coordinator killed: the other two go on for every user.
    nodes.get_mut(&1).unwrap().kill9();
    for u in &users {
        let signed = sign(&business, u, "2").await;
        check(u, &signed, "2");
    }
    // A chip killed: every key has a copy on the other (R = 2).
    chips[0].kill9();
    for u in &users {
        let signed = sign(&business, u, "3").await;
        check(u, &signed, "3");
        assert_eq!(
            signed.chip_id, "chip-2",
            "{} signs on the surviving chip",
            u.user_id
        );
    }
}

async fn get_user(business: &Connection, user: &str) -> yunkey_proto::v1::User {
    key_client(business.current_channel())
        .get_user(GetUserRequest {
            user_id: user.into(),
            consistency: 0,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn holders_of(business: &Connection, user: &str) -> Vec<String> {
    get_user(business, user)
        .await
        .holders
        .into_iter()
        .map(|h| h.chip_id)
        .collect()
}

/// Repair and the sweep for SM2 keys: a holder of an SM2 user killed, the key is copied
/// (wrapped, with its ID) to the spare chip and signs there; the sweep keeps every copy of
/// the SM2 user CA's key, which goes on certifying new SM2 users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sm2_keys_are_repaired_and_the_sm2_ca_survives_the_sweep() {
    let mut cluster = Cluster::new();
    let mut chips: BTreeMap<String, Proc> = BTreeMap::new();
    for i in 1..=3 {
        let id = format!("chip-{i}");
        let chip = cluster.start_chip(&id, &format!("zone-{}", i % 2 + 1));
        chips.insert(id, chip);
    }
    let urls: Vec<String> = chips.values().map(|c| c.endpoint.clone()).collect();
    let mut node = cluster.start_node_with(
        1,
        true,
        &urls,
        &["--chip-down-after", "2", "--sweep-every", "2"],
    );
    node.wait_line("ready", Duration::from_secs(60));
    let business = cluster.business(&[&node.endpoint]);
    let device = cluster.device(&[&node.endpoint]);
    let code = common::enroll_code_with(&business, "wang", Algorithm::Sm2, "wang@bank").await;
    let wang =
        common::register_key(&device, SigningKey::generate(Algorithm::Sm2), "wang", &code).await;
    sign(&business, &wang, "1").await;

    let before = holders_of(&business, "wang").await;
    let victim = before[0].clone();
    chips.get_mut(&victim).unwrap().kill9();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let after = loop {
        let holders = holders_of(&business, "wang").await;
        if holders.len() == 2 && !holders.contains(&victim) {
            break holders;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "wang's SM2 key was not repaired: {holders:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Kill the other original holder too: only the repaired copy is left, and it signs under
    // wang's ID.
    let other = before.iter().find(|c| **c != victim).unwrap().clone();
    let copy = after.iter().find(|c| **c != other).unwrap().clone();
    chips.get_mut(&other).unwrap().kill9();
    let key = VerifyingKey::from_spki_der_as(
        Algorithm::Sm2,
        &get_user(&business, "wang").await.public_key,
        "wang@bank",
    )
    .unwrap();
    let req = wang.sign_request("", common::transaction("wang", "3"));
    let signed = business
        .call(|ch| {
            let req = req.clone();
            async move { key_client(ch).sign(req).await }
        })
        .await
        .unwrap();
    assert_eq!(signed.chip_id, copy, "the repaired copy signs");
    let canonical = yunkey_crypto::tx::encode(req.transaction.as_ref().unwrap()).unwrap();
    key.verify_message(&canonical, &signed.signature)
        .expect("signed under wang's ID");

    // Two sweep rounds later, the SM2 CA still certifies: a new SM2 user enrols.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let code = common::enroll_code_with(&business, "li", Algorithm::Sm2, "").await;
    let li = common::register_key(
        &device,
        SigningKey::generate(Algorithm::EcdsaP256),
        "li",
        &code,
    )
    .await;
    let signed = sign(&business, &li, "4").await;
    assert_eq!(signed.distinguishing_id, "1234567812345678");
}
