//! The risk service as a process would run it: a real TLS listener on 127.0.0.1:0 with the
//! dev PKI, the access table in front (a `node` may call, a `client` may not), the endpoint
//! file, rules reloaded from disk, and the biometric unit reached over mutual TLS.

mod common;

use common::*;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status};
use yunkey_net::pki::DevPki;
use yunkey_net::tls::TlsMaterial;
use yunkey_net::Role;
use yunkey_proto::v1::face_service_server::{FaceService, FaceServiceServer};
use yunkey_proto::v1::risk_service_client::RiskServiceClient;
use yunkey_proto::v1::{
    AuthenticateUserRequest, BiometricEvidence, EmbedRequest, EmbedResponse, EnrollFaceRequest,
    RiskVerdict,
};
use yunkey_risk::clock::SystemClock;
use yunkey_risk::server::{self, FaceUnit, Running, ServeConfig};

const RULES: &str = r#"
format = 1
[[amount_limit]]
name = "amount.EUR.per_transaction"
action = "deny"
weight = 60
currency = "EUR"
period = "transaction"
above = 1000
"#;

fn tls(pki: &DevPki, role: Role) -> TlsMaterial {
    pki.tls_files(role).load().unwrap()
}

fn now() -> i64 {
    use yunkey_risk::clock::Clock;
    SystemClock.now()
}

struct Started {
    running: Running,
    stop: watch::Sender<bool>,
    pki: DevPki,
    rules: std::path::PathBuf,
    data: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn start(face: Option<FaceUnit>) -> Started {
    yunkey_net::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::ensure(dir.path()).unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES).unwrap();
    let data = dir.path().join("data");
    let mut config = ServeConfig::new(rules.clone(), data.clone(), tls(&pki, Role::Risk));
    config.face = face;
    config.watch_every = Duration::from_millis(50);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let running = server::serve(config, listener, stop_rx).await.unwrap();
    Started {
        running,
        stop,
        pki,
        rules,
        data,
        _dir: dir,
    }
}

fn client(s: &Started, role: Role) -> RiskServiceClient<Channel> {
    let ch = yunkey_net::pool::connect_lazy(&s.running.endpoint, &tls(&s.pki, role), None).unwrap();
    RiskServiceClient::new(ch)
}

#[tokio::test]
async fn a_node_may_assess_and_a_client_may_not() {
    let s = start(None).await;
    assert_eq!(
        std::fs::read_to_string(s.data.join("endpoint"))
            .unwrap()
            .trim(),
        s.running.endpoint
    );
    assert!(s.running.endpoint.starts_with("https://127.0.0.1:"));

    let tx = tx("10", "EUR", "shop", now());
    let d = client(&s, Role::Node)
        .assess_risk(assess_req("alice", &tx))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verdict(&d), RiskVerdict::Allow);
    assert_eq!(d.tx_hash, hash(&tx));

    let e = client(&s, Role::Client)
        .assess_risk(assess_req("alice", &tx))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("requires role node"), "{e:?}");
    let e = client(&s, Role::Risk)
        .assess_risk(assess_req("alice", &tx))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Without a client certificate: UNAUTHENTICATED.
    let anon = tls(&s.pki, Role::Node).without_identity();
    let ch = yunkey_net::pool::connect_lazy(&s.running.endpoint, &anon, None).unwrap();
    let e = RiskServiceClient::new(ch)
        .assess_risk(assess_req("alice", &tx))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // Bad input over the wire: INVALID_ARGUMENT.
    let mut bad = assess_req("alice", &tx);
    bad.tx_hash = vec![1; 5];
    let e = client(&s, Role::Node).assess_risk(bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    s.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), s.running.task)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
}

async fn wait_for_version(s: &Started, not: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = s.running.rules.get().version.clone();
        if v != not {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "rules not reloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn write_rules(path: &Path, text: &str) {
    // As an operator should: beside, then renamed over.
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn rules_reload_without_restart_and_a_bad_file_keeps_the_old() {
    let s = start(None).await;
    let node = client(&s, Role::Node);
    let assess = |amount: &str| {
        let mut node = node.clone();
        let tx = tx(amount, "EUR", "shop", now());
        async move {
            verdict(
                &node
                    .assess_risk(assess_req("alice", &tx))
                    .await
                    .unwrap()
                    .into_inner(),
            )
        }
    };
    assert_eq!(assess("2000").await, RiskVerdict::Deny);
    let first = s.running.rules.get().version.clone();

    // A bad file: refused, the old rules stay.
    write_rules(
        &s.rules,
        &RULES.replace("above = 1000", "above = 1000\nbelow = 5"),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.running.rules.get().version, first);
    assert_eq!(assess("2000").await, RiskVerdict::Deny);

    // A good one: in force for the next assessment.
    write_rules(&s.rules, &RULES.replace("above = 1000", "above = 5000"));
    wait_for_version(&s, &first).await;
    assert_eq!(assess("2000").await, RiskVerdict::Allow);
    assert_eq!(assess("5001").await, RiskVerdict::Deny);
    s.stop.send(true).unwrap();
}

/// A biometric unit double: `face:<x>` embeds to `[x, 0]`, `slow` never answers in time,
/// anything else has no face.
struct FakeUnit;

#[tonic::async_trait]
impl FaceService for FakeUnit {
    async fn embed(&self, req: Request<EmbedRequest>) -> Result<Response<EmbedResponse>, Status> {
        let image = req.into_inner().image;
        let text = String::from_utf8_lossy(&image).to_string();
        if text == "slow" {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        match text
            .strip_prefix("face:")
            .and_then(|x| x.parse::<f32>().ok())
        {
            Some(x) => Ok(Response::new(EmbedResponse {
                embedding: vec![x, 0.0],
                model: "fake-unit".into(),
            })),
            None => Err(Status::invalid_argument("no face found in the image")),
        }
    }
}

async fn start_face_unit(pki: &DevPki) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = server::endpoint_of(&listener).unwrap();
    let router = Server::builder()
        .tls_config(tls(pki, Role::Risk).server().unwrap())
        .unwrap()
        .layer(yunkey_net::AccessLayer)
        .add_service(FaceServiceServer::new(FakeUnit));
    tokio::spawn(router.serve_with_incoming(yunkey_net::incoming(listener)));
    endpoint
}

#[tokio::test]
async fn faces_go_to_the_biometric_unit_over_mutual_tls() {
    yunkey_net::install_crypto_provider();
    // The unit must exist before the risk service is configured with it; both share the PKI.
    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::ensure(dir.path()).unwrap();
    let unit = start_face_unit(&pki).await;
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES).unwrap();
    let data = dir.path().join("data");
    let mut config = ServeConfig::new(rules, data.clone(), tls(&pki, Role::Risk));
    config.face = Some(FaceUnit {
        endpoint: unit,
        timeout: Duration::from_millis(500),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let running = server::serve_with(config, listener, stop_rx, Arc::new(SystemClock), None)
        .await
        .unwrap();
    assert!(
        data.join("template.key").is_file(),
        "template key created on first start"
    );
    let ch =
        yunkey_net::pool::connect_lazy(&running.endpoint, &tls(&pki, Role::Node), None).unwrap();
    let mut node = RiskServiceClient::new(ch);

    let enroll = |image: &str| EnrollFaceRequest {
        user_id: "alice".into(),
        face_image: image.as_bytes().to_vec(),
    };
    node.enroll_face(enroll("face:1")).await.unwrap();
    let e = node.enroll_face(enroll("a cat")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "no face found in the image");
    let e = node.enroll_face(enroll("slow")).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(
        e.message().contains("did not answer within 500 ms"),
        "{e:?}"
    );

    let tx = tx("10", "EUR", "shop", now());
    let auth = |image: &str| AuthenticateUserRequest {
        user_id: "alice".into(),
        tx_hash: hash(&tx),
        evidence: Some(BiometricEvidence {
            face_image: image.as_bytes().to_vec(),
        }),
    };
    let r = node
        .authenticate_user(auth("face:1.1"))
        .await
        .unwrap()
        .into_inner();
    assert!(r.matched);
    assert!((r.score - 0.1).abs() < 1e-6);
    let r = node
        .authenticate_user(auth("face:2"))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.matched);
    stop.send(true).unwrap();
}

#[tokio::test]
async fn an_unreachable_biometric_unit_is_unavailable() {
    let s = start(Some(FaceUnit {
        endpoint: "https://127.0.0.1:1".into(),
        timeout: Duration::from_secs(2),
    }))
    .await;
    let e = client(&s, Role::Node)
        .enroll_face(EnrollFaceRequest {
            user_id: "alice".into(),
            face_image: b"face:1".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("biometric unit https://127.0.0.1:1"),
        "{e:?}"
    );
    s.stop.send(true).unwrap();
}
