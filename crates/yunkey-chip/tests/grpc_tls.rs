//! ChipService over mutual TLS: node callers are served, client-role callers are refused,
//! callers without a certificate are unauthenticated.

use std::sync::Arc;
use tonic::transport::{Channel, Server};
use tonic::Code;
use yunkey_chip::testing::{self, Device, Operator};
use yunkey_chip::{ChipBackend, ChipConfig, ChipGrpc, SoftChip};
use yunkey_crypto::ecdsa::PublicKey;
use yunkey_net::pki::DevPki;
use yunkey_net::tls::TlsMaterial;
use yunkey_net::Role;
use yunkey_proto::v1 as pb;
use yunkey_proto::v1::chip_service_client::ChipServiceClient;

async fn client(port: u16, tls: &TlsMaterial) -> ChipServiceClient<Channel> {
    let channel = Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls.client("localhost"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    ChipServiceClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chip_service_over_tls_checks_roles() {
    yunkey_net::install_crypto_provider();
    let pki_dir = tempfile::tempdir().unwrap();
    let chip_dir = tempfile::tempdir().unwrap();
    let pki = DevPki::ensure(pki_dir.path()).unwrap();
    let node_tls = pki.tls_files(Role::Node).load().unwrap();
    let client_tls = pki.tls_files(Role::Client).load().unwrap();

    let chip = SoftChip::open(
        chip_dir.path(),
        ChipConfig {
            chip_id: "chip-grpc".into(),
            capacity: 4,
            zone: "z".into(),
        },
    )
    .unwrap();
    let chip: Arc<dyn ChipBackend> = Arc::new(chip);
    let operator = Operator::new();
    let admission = operator.admit(&*chip);
    let service = ChipGrpc::new(chip).into_server();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(
        Server::builder()
            .tls_config(node_tls.server().unwrap())
            .unwrap()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    // Node role: served.
    let mut node = client(port, &node_tls).await;
    let info = node
        .get_info(pb::GetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.chip_id, "chip-grpc");
    assert_eq!(info.capacity, 4);
    assert!(info.domain_id.is_empty());
    assert_eq!(info.domain_cipher, pb::DomainCipher::Unspecified as i32);
    let user_key_request = |code: &str| pb::GenerateKeyRequest {
        algorithm: pb::Algorithm::Unspecified as i32,
        purpose: pb::KeyPurpose::User as i32,
        user_id: "alice".into(),
        activation_code_sha256: yunkey_crypto::sha256(code.as_bytes()).to_vec(),
        activation_expires_at: testing::now_unix() + 600,
        distinguishing_id: String::new(),
    };
    let status = node
        .generate_key(user_key_request("CODE"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        yunkey_chip::status::error_kind(&status),
        Some("not_in_domain")
    );
    let status = node
        .init_domain(pb::InitDomainRequest {
            operator_key: operator.public_spki(),
            admission_signature: vec![0x30, 0x00],
            cipher: pb::DomainCipher::Unspecified as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = node
        .init_domain(pb::InitDomainRequest {
            operator_key: operator.public_spki(),
            admission_signature: admission.operator_signature.clone(),
            cipher: 9,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("cipher"), "{status:?}");
    let domain = node
        .init_domain(pb::InitDomainRequest {
            operator_key: operator.public_spki(),
            admission_signature: admission.operator_signature.clone(),
            cipher: pb::DomainCipher::Unspecified as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!domain.domain_id.is_empty());
    // Unspecified is AES-256, and the reply and GetInfo say so.
    assert_eq!(domain.cipher, pb::DomainCipher::Aes256 as i32);
    let ca_key = node
        .generate_key(pb::GenerateKeyRequest {
            algorithm: pb::Algorithm::EcdsaP256 as i32,
            purpose: pb::KeyPurpose::Ca as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ca_cert = node
        .issue_certificate(pb::IssueCertificateRequest {
            ca_key_handle: ca_key.key_handle.clone(),
            subject: Some(pb::issue_certificate_request::Subject::CaCommonName(
                "user CA".into(),
            )),
        })
        .await
        .unwrap()
        .into_inner()
        .certificate;
    let anchored = node
        .set_trust_anchor(pb::SetTrustAnchorRequest {
            certificate: ca_cert,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(anchored.domain_id, domain.domain_id);
    assert_eq!(anchored.cipher, pb::DomainCipher::Aes256 as i32);
    let info = node
        .get_info(pb::GetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.domain_cipher, pb::DomainCipher::Aes256 as i32);
    let key = node
        .generate_key(user_key_request("CODE-1234"))
        .await
        .unwrap()
        .into_inner();
    let phone = Device::new("alice");
    let bind = phone.bind_request(&key.key_handle, "CODE-1234");
    let bound = node
        .bind_device(pb::BindDeviceRequest {
            key_handle: bind.key_handle,
            user_id: bind.user_id,
            activation_code: bind.activation_code,
            device_public_key: bind.device_public_key,
            proof: bind.proof,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bound.binding_seq, 1);
    assert_eq!(bound.device_id, phone.device_id);
    let (tx, hash) = testing::canonical_tx("99.99", 60);
    let sign_request = |binding_seq| pb::SignAuthorizedRequest {
        key_handle: key.key_handle.clone(),
        user_id: "alice".into(),
        canonical_transaction: tx.clone(),
        authorization: Some(pb::Authorization {
            device_id: phone.device_id.clone(),
            signature: phone.authorize(&tx),
            // Unset: the plain ECDSA form, as before the field existed.
            format: pb::AuthorizationFormat::Unspecified as i32,
        }),
        binding_seq,
    };
    let status = node.sign_authorized(sign_request(5)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        yunkey_chip::status::error_kind(&status),
        Some("binding_behind")
    );
    let signed = node
        .sign_authorized(sign_request(1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(signed.digest, hash.to_vec());
    PublicKey::from_spki_der(&key.public_key)
        .unwrap()
        .verify_digest(&hash, &signed.signature)
        .unwrap();
    // A batch: each item is checked as the single call checks it and answered in its place.
    let (tx2, hash2) = testing::canonical_tx("10", 60);
    let (tx3, hash3) = testing::canonical_tx("11", 60);
    let item = |tx: &[u8], binding_seq| pb::SignAuthorizedRequest {
        key_handle: key.key_handle.clone(),
        user_id: "alice".into(),
        canonical_transaction: tx.to_vec(),
        authorization: Some(pb::Authorization {
            device_id: phone.device_id.clone(),
            signature: phone.authorize(tx),
            format: pb::AuthorizationFormat::Unspecified as i32,
        }),
        binding_seq,
    };
    let batch = node
        .sign_authorized_batch(pb::SignAuthorizedBatchRequest {
            items: vec![
                item(&tx2, 1),
                item(&tx3, 5),
                pb::SignAuthorizedRequest {
                    canonical_transaction: Vec::new(),
                    ..item(&tx3, 1)
                },
                item(&tx3, 1),
                // The transaction signed above: the chip's replay guard answers the same bytes.
                item(&tx, 1),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    use pb::sign_authorized_result::Result as Item;
    let results: Vec<_> = batch.results.into_iter().map(|r| r.result).collect();
    assert_eq!(results.len(), 5, "{results:?}");
    let user_key = PublicKey::from_spki_der(&key.public_key).unwrap();
    for (i, want) in [(0, hash2), (3, hash3)] {
        let Some(Item::Signed(s)) = &results[i] else {
            panic!("item {i} not signed: {:?}", results[i]);
        };
        assert_eq!(s.digest, want.to_vec(), "item {i}");
        user_key.verify_digest(&want, &s.signature).unwrap();
    }
    let Some(Item::Error(behind)) = &results[1] else {
        panic!(
            "item 1 signed with a binding from the future: {:?}",
            results[1]
        );
    };
    assert_eq!(behind.code, Code::FailedPrecondition as i32, "{behind:?}");
    assert_eq!(behind.kind, "binding_behind");
    let Some(Item::Error(empty)) = &results[2] else {
        panic!("item 2 signed an empty transaction: {:?}", results[2]);
    };
    assert_eq!(empty.code, Code::InvalidArgument as i32, "{empty:?}");
    assert!(empty.message.contains("canonical_transaction"), "{empty:?}");
    let Some(Item::Signed(again)) = &results[4] else {
        panic!("item 4: {:?}", results[4]);
    };
    assert_eq!(again.signature, signed.signature);
    // The batch above had 4 valid items, signed on the server's own thread (a soft chip signs
    // in memory); more than `INLINE_SIGNATURES` go to blocking threads, answered the same way.
    let n = yunkey_chip::grpc::INLINE_SIGNATURES + 2;
    let many = node
        .sign_authorized_batch(pb::SignAuthorizedBatchRequest {
            items: vec![item(&tx, 1); n],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(many.results.len(), n);
    for (i, r) in many.results.into_iter().enumerate() {
        let Some(Item::Signed(s)) = r.result else {
            panic!("item {i} of {n}: {:?}", r.result);
        };
        assert_eq!(s.signature, signed.signature, "item {i} of {n}");
    }
    for n in [0, yunkey_chip::grpc::MAX_SIGN_BATCH + 1] {
        let status = node
            .sign_authorized_batch(pb::SignAuthorizedBatchRequest {
                items: vec![item(&tx2, 1); n],
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("items") && status.message().contains("1 to 256"),
            "{status:?}"
        );
    }
    // Field validation and error mapping.
    let status = node
        .issue_certificate(pb::IssueCertificateRequest {
            ca_key_handle: key.key_handle.clone(),
            subject: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let status = node
        .issue_certificate(pb::IssueCertificateRequest {
            ca_key_handle: key.key_handle.clone(),
            subject: Some(pb::issue_certificate_request::Subject::CaCommonName(
                "mine".into(),
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = node
        .wrap_key(pb::KeyHandleRequest {
            key_handle: "deadbeef".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    // An SM2 user key, with its own distinguishing ID; an unknown algorithm, or an ID for a
    // P-256 key, is refused naming the field.
    let sm2 = node
        .generate_key(pb::GenerateKeyRequest {
            algorithm: pb::Algorithm::Sm2 as i32,
            distinguishing_id: "alice@bank.example".into(),
            ..user_key_request("CODE")
        })
        .await
        .unwrap()
        .into_inner();
    let public = yunkey_crypto::sig::VerifyingKey::from_spki_der(&sm2.public_key).unwrap();
    assert_eq!(public.algorithm(), yunkey_crypto::sig::Algorithm::Sm2);
    for (algorithm, distid, field) in [
        (7, "", "algorithm"),
        (
            pb::Algorithm::EcdsaP256 as i32,
            "alice",
            "distinguishing_id",
        ),
        (pb::Algorithm::Sm2 as i32, "has space", "distinguishing_id"),
    ] {
        let status = node
            .generate_key(pb::GenerateKeyRequest {
                algorithm,
                distinguishing_id: distid.into(),
                ..user_key_request("CODE")
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{status:?}");
    }
    let deleted = node
        .delete_key(pb::KeyHandleRequest {
            key_handle: key.key_handle.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.deleted);

    // Client role: refused.
    let mut business = client(port, &client_tls).await;
    let status = business.get_info(pb::GetInfoRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // No certificate: unauthenticated.
    let mut anonymous = client(port, &node_tls.without_identity()).await;
    let status = anonymous.get_info(pb::GetInfoRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    server.abort();
}
