//! ChipService over mutual TLS: node callers are served, client-role callers are refused,
//! callers without a certificate are unauthenticated.

use std::sync::Arc;
use tonic::transport::{Channel, Server};
use tonic::Code;
use yunkey_chip::testing::{self, UserCa};
use yunkey_chip::{ChipGrpc, SoftChip, SoftChipConfig};
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
        SoftChipConfig {
            chip_id: "chip-grpc".into(),
            capacity: 4,
            zone: "z".into(),
        },
    )
    .unwrap();
    let service = ChipGrpc::new(Arc::new(chip)).into_server();
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
    let status = node
        .generate_key(pb::GenerateKeyRequest {
            algorithm: pb::Algorithm::EcdsaP256 as i32,
            purpose: pb::KeyPurpose::User as i32,
            user_id: "alice".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let domain = node
        .init_domain(pb::InitDomainRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!domain.domain_id.is_empty());
    let ca = UserCa::new("user CA");
    node.set_trust_anchor(pb::SetTrustAnchorRequest {
        certificate: ca.cert_der.clone(),
    })
    .await
    .unwrap();
    let key = node
        .generate_key(pb::GenerateKeyRequest {
            algorithm: pb::Algorithm::Unspecified as i32,
            purpose: pb::KeyPurpose::User as i32,
            user_id: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let phone = ca.issue_device("alice", "alice-phone");
    let (tx, hash) = testing::canonical_tx("99.99", 60);
    let signed = node
        .sign_authorized(pb::SignAuthorizedRequest {
            key_handle: key.key_handle.clone(),
            user_id: "alice".into(),
            canonical_transaction: tx.clone(),
            device_certificate: phone.cert_der.clone(),
            authorization: Some(pb::Authorization {
                device_id: "alice-phone".into(),
                signature: phone.authorize(&tx),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(signed.digest, hash.to_vec());
    PublicKey::from_spki_der(&key.public_key)
        .unwrap()
        .verify_digest(&hash, &signed.signature)
        .unwrap();
    // Field validation and error mapping.
    let status = node
        .sign_digest(pb::SignDigestRequest {
            key_handle: key.key_handle.clone(),
            digest: vec![0; 31],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let status = node
        .sign_digest(pb::SignDigestRequest {
            key_handle: key.key_handle.clone(),
            digest: vec![0; 32],
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
    let status = node
        .generate_key(pb::GenerateKeyRequest {
            algorithm: pb::Algorithm::Sm2 as i32,
            purpose: pb::KeyPurpose::User as i32,
            user_id: "alice".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
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
