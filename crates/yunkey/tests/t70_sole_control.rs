//! Sole control against the operator's own identities. An attacker holds the `node`
//! certificate of a running `yunkey dev` (what a taken-over coordinator has) and calls the chips'
//! `ChipService` directly, trying every route into a signature under a user's key, or into the
//! keys themselves. Every one must be refused by the chips; the user's real device must still
//! work through the coordinators.

mod common;

use common::{enroll_with_device, transaction, Dev, TestDevice};
use tonic::Code;
use yunkey_crypto::ecdsa::PrivateKey;
use yunkey_crypto::{authz, names, tx};
use yunkey_proto::v1 as pb;
use yunkey_proto::v1::chip_service_client::ChipServiceClient;
use yunkey_proto::v1::cluster_service_client::ClusterServiceClient;
use yunkey_proto::v1::key_service_client::KeyServiceClient;

type Chip = ChipServiceClient<tonic::transport::Channel>;

/// Every chip of the dev cluster, as the attacker reaches it.
async fn chips(dev: &Dev) -> Vec<(String, Chip)> {
    let list = ClusterServiceClient::new(dev.as_node().current_channel())
        .list_chips(pb::ListChipsRequest {})
        .await
        .unwrap()
        .into_inner();
    list.chips
        .into_iter()
        .map(|c| {
            let client = ChipServiceClient::new(dev.chip_as_node(&c.endpoint).current_channel());
            (c.chip_id, client)
        })
        .collect()
}

async fn user(dev: &Dev, user_id: &str) -> pb::User {
    KeyServiceClient::new(dev.business().current_channel())
        .get_user(pb::GetUserRequest {
            user_id: user_id.into(),
            consistency: 0,
        })
        .await
        .unwrap()
        .into_inner()
}

/// The attacker's request to `holder`'s chip to sign `t` for `user_id` with `authorization`.
fn sign_request(
    holder: &pb::Holder,
    user_id: &str,
    t: &pb::Transaction,
    authorization: pb::Authorization,
) -> pb::SignAuthorizedRequest {
    pb::SignAuthorizedRequest {
        key_handle: holder.key_handle.clone(),
        user_id: user_id.into(),
        canonical_transaction: tx::encode(t).unwrap(),
        authorization: Some(authorization),
        binding_seq: 0,
    }
}

fn chip_of<'a>(chips: &'a mut [(String, Chip)], holder: &pb::Holder) -> &'a mut Chip {
    &mut chips
        .iter_mut()
        .find(|(id, _)| *id == holder.chip_id)
        .expect("the holder is a chip of the cluster")
        .1
}

fn refused(status: tonic::Status, kind: &str) {
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get("x-yunkey-chip-error")
            .and_then(|v| v.to_str().ok()),
        Some(kind),
        "{status:?}"
    );
}

/// An attacker's own device key, for a user it names.
fn attacker_device(user_id: &str) -> TestDevice {
    let key = PrivateKey::generate();
    TestDevice {
        user_id: user_id.into(),
        device_id: names::device_id(&key.public_key().to_spki_der()),
        key: key.into(),
        certificate: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_identity_cannot_sign_for_a_user() {
    let dev = Dev::start();
    let alice = enroll_with_device(&dev, "alice").await;
    enroll_with_device(&dev, "bob").await;
    let alice_user = user(&dev, "alice").await;
    let bob_user = user(&dev, "bob").await;
    let mut chips = chips(&dev).await;
    let holder = alice_user.holders[0].clone();
    let mallory = attacker_device("alice");

    // 1. No CA key signs a digest any more: the RPC is gone (the access layer refuses a path
    //    it has no row for before the service would answer UNIMPLEMENTED).
    let first_endpoint = ClusterServiceClient::new(dev.as_node().current_channel())
        .list_chips(pb::ListChipsRequest {})
        .await
        .unwrap()
        .into_inner()
        .chips[0]
        .endpoint
        .clone();
    let mut raw = tonic::client::Grpc::new(dev.chip_as_node(&first_endpoint).current_channel());
    raw.ready().await.unwrap();
    let status = raw
        .unary::<pb::KeyHandleRequest, pb::WrappedKeyResponse, _>(
            tonic::Request::new(pb::KeyHandleRequest {
                key_handle: holder.key_handle.clone(),
            }),
            "/yunkey.v1.ChipService/SignDigest".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), Code::PermissionDenied | Code::Unimplemented),
        "{status:?}"
    );

    // 2. A device certificate for the attacker's device, from the CA key in a chip: the chip
    //    certifies only devices bound in the wrapped key it is given.
    let wrapped = chip_of(&mut chips, &holder)
        .wrap_key(pb::KeyHandleRequest {
            key_handle: holder.key_handle.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .wrapped_key;
    let status = ClusterServiceClient::new(dev.as_node().current_channel())
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let ca_holder = status.user_ca_holders[0].clone();
    let issue = |device_id: &str| pb::IssueCertificateRequest {
        ca_key_handle: ca_holder.key_handle.clone(),
        subject: Some(pb::issue_certificate_request::Subject::Device(
            pb::DeviceCertificateSubject {
                wrapped_user_key: wrapped.clone(),
                device_id: device_id.into(),
                validity_seconds: 0,
            },
        )),
    };
    let status = chip_of(&mut chips, &ca_holder)
        .issue_certificate(issue(&mallory.device_id))
        .await
        .unwrap_err();
    refused(status, "device_not_bound");
    // The same call for alice's real, bound device is served: the refusal above is about the
    // device, not the handle.
    chip_of(&mut chips, &ca_holder)
        .issue_certificate(issue(&alice.device_id))
        .await
        .expect("a certificate for the bound device");
    // Nor can a user key be made to issue.
    let status = chip_of(&mut chips, &holder)
        .issue_certificate(pb::IssueCertificateRequest {
            ca_key_handle: holder.key_handle.clone(),
            ..issue(&mallory.device_id)
        })
        .await
        .unwrap_err();
    assert_ne!(status.code(), Code::Ok);

    // 3. The attacker's own device, naming alice: not bound to her key.
    let t = transaction("acct-alice", "9999.99");
    let status = chip_of(&mut chips, &holder)
        .sign_authorized(sign_request(&holder, "alice", &t, mallory.authorize(&t)))
        .await
        .unwrap_err();
    refused(status, "device_not_bound");

    // 4. Alice's real device id with the attacker's signature.
    let mut forged = mallory.authorize(&t);
    forged.device_id = alice.device_id.clone();
    let status = chip_of(&mut chips, &holder)
        .sign_authorized(sign_request(&holder, "alice", &t, forged))
        .await
        .unwrap_err();
    refused(status, "bad_authorization");

    // 5. A real authorization with the amount changed.
    let real = transaction("acct-alice", "12.5");
    let approval = alice.authorize(&real);
    let mut altered = real.clone();
    altered.amount = "9999.99".into();
    let status = chip_of(&mut chips, &holder)
        .sign_authorized(sign_request(&holder, "alice", &altered, approval.clone()))
        .await
        .unwrap_err();
    refused(status, "bad_authorization");

    // 6. Alice's real authorization replayed against bob's key.
    let bob_holder = bob_user.holders[0].clone();
    let status = chip_of(&mut chips, &bob_holder)
        .sign_authorized(sign_request(&bob_holder, "alice", &real, approval.clone()))
        .await
        .unwrap_err();
    refused(status, "user_mismatch");
    let status = chip_of(&mut chips, &bob_holder)
        .sign_authorized(sign_request(&bob_holder, "bob", &real, approval.clone()))
        .await
        .unwrap_err();
    refused(status, "device_not_bound");

    // 7. A second key for alice, made by the attacker with its own activation code: the chip
    //    makes it, but it is not alice's enrolled key, and the cluster says the signature is
    //    not hers.
    let code = "MALLORY-CODE";
    let second = chip_of(&mut chips, &holder)
        .generate_key(pb::GenerateKeyRequest {
            distinguishing_id: String::new(),
            algorithm: 0,
            purpose: pb::KeyPurpose::User as i32,
            user_id: "alice".into(),
            activation_code_sha256: yunkey_crypto::sha256(code.as_bytes()).to_vec(),
            activation_expires_at: common::now() + 600,
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(second.public_key, alice_user.public_key);
    let spki = mallory.key.public_key().to_spki_der();
    chip_of(&mut chips, &holder)
        .bind_device(pb::BindDeviceRequest {
            key_handle: second.key_handle.clone(),
            user_id: "alice".into(),
            activation_code: code.into(),
            proof: mallory
                .key
                .sign_message(&authz::registration_message("alice", code, &spki)),
            device_public_key: spki,
        })
        .await
        .unwrap();
    let fake = chip_of(&mut chips, &holder)
        .sign_authorized(pb::SignAuthorizedRequest {
            key_handle: second.key_handle.clone(),
            ..sign_request(&holder, "alice", &t, mallory.authorize(&t))
        })
        .await
        .unwrap()
        .into_inner();
    let verdict = KeyServiceClient::new(dev.business().current_channel())
        .verify(pb::VerifyRequest {
            user_id: "alice".into(),
            transaction: Some(t.clone()),
            tx_hash: vec![],
            signature: fake.signature,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !verdict.valid,
        "a key alice never enrolled does not sign as alice"
    );

    // The legitimate path still works, through the coordinators.
    let signed = KeyServiceClient::new(dev.business().current_channel())
        .sign(alice.sign_request("", real.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(!signed.signature.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_every_holder_and_hold_against_direct_calls() {
    let dev = Dev::start();
    let carol = enroll_with_device(&dev, "carol").await;
    let dave = enroll_with_device(&dev, "dave").await;
    // Approvals made before the revocations, still unexpired after them.
    let carol_tx = transaction("acct-carol", "20");
    let carol_ok = carol.authorize(&carol_tx);
    let dave_tx = transaction("acct-dave", "30");
    let dave_ok = dave.authorize(&dave_tx);
    let mut keys = KeyServiceClient::new(dev.business().current_channel());

    // The CLI: an unknown device is refused with the reason, then the real one is revoked.
    let out = dev.cli(&["user", "revoke-device", "carol", "--device", "dev-0000"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not registered to user"),
        "{out:?}"
    );
    let out = dev.cli(&[
        "user",
        "revoke-device",
        "carol",
        "--device",
        &carol.device_id,
        "--reason",
        "phone stolen",
    ]);
    assert!(out.status.success(), "{out:?}");
    let shown = dev.cli(&["user", "show", "carol"]);
    assert!(
        String::from_utf8_lossy(&shown.stdout)
            .contains(&format!("{} (revoked: phone stolen)", carol.device_id)),
        "{shown:?}"
    );
    let revoked = user(&dev, "carol").await;
    assert!(revoked.devices[0].revoked_at > 0);
    keys.revoke_user(pb::RevokeUserRequest {
        request_id: String::new(),
        user_id: "dave".into(),
        reason: "account closed".into(),
    })
    .await
    .unwrap();

    // The coordinators refuse...
    let status = keys
        .sign(carol.sign_request("", carol_tx.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = keys
        .sign(dave.sign_request("", dave_tx.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // ... and so does every chip holding the key, asked directly with a node identity.
    let mut chips = chips(&dev).await;
    let carol_user = user(&dev, "carol").await;
    let dave_user = user(&dev, "dave").await;
    assert!(carol_user.holders.len() >= 2 && dave_user.holders.len() >= 2);
    for holder in &carol_user.holders {
        let status = chip_of(&mut chips, holder)
            .sign_authorized(sign_request(holder, "carol", &carol_tx, carol_ok.clone()))
            .await
            .unwrap_err();
        refused(status, "device_revoked");
    }
    for holder in &dave_user.holders {
        let status = chip_of(&mut chips, holder)
            .sign_authorized(sign_request(holder, "dave", &dave_tx, dave_ok.clone()))
            .await
            .unwrap_err();
        refused(status, "user_revoked");
    }
    // A holder cannot be rolled back with the wrapped key from before the revocation.
    let holder = &carol_user.holders[0];
    let before = chip_of(&mut chips, holder)
        .wrap_key(pb::KeyHandleRequest {
            key_handle: holder.key_handle.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let _ = chip_of(&mut chips, holder)
        .update_binding(pb::UpdateBindingRequest {
            key_handle: holder.key_handle.clone(),
            wrapped_key: before.wrapped_key,
        })
        .await;
    let status = chip_of(&mut chips, holder)
        .sign_authorized(sign_request(holder, "carol", &carol_tx, carol_ok))
        .await
        .unwrap_err();
    refused(status, "device_revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_domain_and_admission_need_the_operator() {
    let dev = Dev::start();
    let alice = enroll_with_device(&dev, "alice").await;
    let _ = alice;
    let mut chips = chips(&dev).await;
    let attacker = PrivateKey::generate();
    let transport = PrivateKey::generate().public_key().to_spki_der();

    // ExportDomain to the attacker's own key: with no admission, and with one it signed.
    for signature in [
        vec![0x30, 0x00],
        attacker.sign_message(&authz::chip_admission_message("evil", &transport)),
    ] {
        let status = chips[0]
            .1
            .export_domain(pb::ExportDomainRequest {
                recipient: Some(pb::ChipAdmission {
                    chip_id: "evil".into(),
                    transport_key: transport.clone(),
                    operator_signature: signature,
                }),
            })
            .await
            .unwrap_err();
        refused(status, "admission_refused");
    }
    // A real chip's admission cannot be moved to the attacker's transport key.
    let real = std::fs::read(dev.data.join("chips/chip-2/admission.json")).unwrap();
    let real: serde_json::Value = serde_json::from_slice(&real).unwrap();
    use base64::Engine;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(real["signature"].as_str().unwrap())
        .unwrap();
    let status = chips[0]
        .1
        .export_domain(pb::ExportDomainRequest {
            recipient: Some(pb::ChipAdmission {
                chip_id: "chip-2".into(),
                transport_key: transport.clone(),
                operator_signature: signature,
            }),
        })
        .await
        .unwrap_err();
    refused(status, "admission_refused");

    // A wrapped key is useless outside the domain: a chip of the attacker's own domain.
    let rogue_dir = tempfile::tempdir().unwrap();
    let rogue = yunkey_chip::SoftChip::open(
        rogue_dir.path(),
        yunkey_chip::ChipConfig {
            chip_id: "rogue".into(),
            capacity: 4,
            zone: "z".into(),
        },
    )
    .unwrap();
    yunkey_chip::testing::Operator::new().init_domain(&rogue);
    let alice_user = user(&dev, "alice").await;
    let err = yunkey_chip::ChipBackend::unwrap_key(
        &rogue,
        &alice_user_wrapped(&mut chips, &alice_user).await,
        yunkey_chip::KeyPurpose::User,
        "alice",
    )
    .unwrap_err();
    assert!(
        matches!(err, yunkey_chip::ChipError::Unseal { .. }),
        "{err}"
    );

    // AdmitChip of a chip without an operator admission (a `yunkey chip` served with the
    // dev cluster's node certificate): refused, and not registered.
    let rogue_data = tempfile::tempdir().unwrap();
    let mut rogue_proc = common::Proc::spawn(
        "rogue",
        &[
            "--data".into(),
            rogue_data.path().display().to_string(),
            "chip".into(),
            "--id".into(),
            "rogue-chip".into(),
            "--listen".into(),
            format!("127.0.0.1:{}", common::free_port()),
            "--tls-dir".into(),
            dev.data.display().to_string(),
        ],
    );
    // A coordinator's (node) identity may not call AdmitChip at all; the operator's TLS
    // identity may, but the chip still needs the domain operator key's admission.
    let status = ClusterServiceClient::new(dev.as_node().current_channel())
        .admit_chip(pb::AdmitChipRequest {
            endpoint: rogue_proc.endpoint.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let mut cluster = ClusterServiceClient::new(dev.operator().current_channel());
    let status = cluster
        .admit_chip(pb::AdmitChipRequest {
            endpoint: rogue_proc.endpoint.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("no operator admission"),
        "{status:?}"
    );
    // With an admission signed by another operator key: refused too.
    let forged = std::process::Command::new(common::bin())
        .args(["pki", "domain-operator-key", "--out"])
        .arg(rogue_data.path().join("op.pem"))
        .output()
        .unwrap();
    assert!(forged.status.success());
    let signed = std::process::Command::new(common::bin())
        .args(["pki", "admit-chip", "--domain-operator-key"])
        .arg(rogue_data.path().join("op.pem"))
        .arg("--identity")
        .arg(rogue_data.path().join("identity.json"))
        .output()
        .unwrap();
    assert!(signed.status.success(), "{signed:?}");
    let status = cluster
        .admit_chip(pb::AdmitChipRequest {
            endpoint: rogue_proc.endpoint.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("another operator key"),
        "{status:?}"
    );
    let listed = cluster
        .list_chips(pb::ListChipsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.chips.iter().all(|c| c.chip_id != "rogue-chip"));
    rogue_proc.kill9();
}

async fn alice_user_wrapped(chips: &mut [(String, Chip)], alice: &pb::User) -> Vec<u8> {
    let holder = &alice.holders[0];
    chip_of(chips, holder)
        .wrap_key(pb::KeyHandleRequest {
            key_handle: holder.key_handle.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .wrapped_key
}
