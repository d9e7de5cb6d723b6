//! The real `yunkey-face serve` over mutual TLS, with certificates from `yunkey_net::pki`:
//! a caller of role `risk` gets embeddings (and clear INVALID_ARGUMENT refusals), any other
//! caller is refused; the endpoint is printed and written; SIGTERM stops it cleanly.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::Code;
use yunkey_face::{distance, Embedding, MAX_IMAGE_BYTES, MODEL_NAME};
use yunkey_net::pki::DevPki;
use yunkey_net::Role;
use yunkey_proto::v1::face_service_client::FaceServiceClient;
use yunkey_proto::v1::EmbedRequest;

/// The server process; killed if a test fails before stopping it.
struct Server {
    child: Option<Child>,
    endpoint: String,
}

impl Server {
    fn start(pki: &Path, endpoint_file: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_yunkey-face"))
            .args(["serve", "--listen", "127.0.0.1:0", "--workers", "2"])
            .arg("--tls-dir")
            .arg(pki)
            .arg("--models")
            .arg(models_dir())
            .arg("--endpoint-file")
            .arg(endpoint_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn yunkey-face serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(ep) = line.strip_prefix("endpoint: ") {
                    let _ = tx.send(ep.to_owned());
                }
            }
        });
        let endpoint = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("yunkey-face serve did not print its endpoint within 60 s");
        Server {
            child: Some(child),
            endpoint,
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    fn terminate(&mut self) {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "yunkey-face exited with {status} on SIGTERM"
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "yunkey-face did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn client(endpoint: &str, pki: &DevPki, role: Option<Role>) -> FaceServiceClient<Channel> {
    let mut files = pki.tls_files(Role::Risk);
    if role.is_none() {
        files.cert = None;
        files.key = None;
    } else if let Some(role) = role {
        files = pki.tls_files(role);
    }
    let tls = files.load().unwrap().client("localhost");
    let channel = Channel::from_shared(endpoint.to_owned())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    FaceServiceClient::new(channel).max_encoding_message_size(2 * MAX_IMAGE_BYTES)
}

fn request(image: Vec<u8>) -> EmbedRequest {
    EmbedRequest { image }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_role_risk_over_tls_and_refuses_others() {
    yunkey_net::install_crypto_provider();
    let tmp = tempfile::tempdir().unwrap();
    let pki_dir = tmp.path().join("pki");
    std::fs::create_dir(&pki_dir).unwrap();
    let pki = DevPki::ensure(&pki_dir).unwrap();
    let endpoint_file = tmp.path().join("face.endpoint");
    let mut server = Server::start(&pki_dir, &endpoint_file);
    assert!(
        server.endpoint.starts_with("https://127.0.0.1:"),
        "{}",
        server.endpoint
    );
    assert_eq!(
        std::fs::read_to_string(&endpoint_file).unwrap().trim(),
        server.endpoint
    );

    // The risk service's identity: an embedding, the same as the library's.
    let mut risk = client(&server.endpoint, &pki, Some(Role::Risk)).await;
    let reply = risk
        .embed(request(photo("obama.jpg")))
        .await
        .expect("Embed as role risk")
        .into_inner();
    assert_eq!(reply.model, MODEL_NAME);
    assert_eq!(reply.embedding.len(), 128);
    let served = Embedding::from_slice(&reply.embedding).unwrap();
    let local = recognizer().embed(&photo("obama.jpg")).unwrap();
    assert!(distance(&served, &local) < 1e-5);

    // Concurrent calls, more than the workers: all answered.
    let calls = ["obama2.jpg", "obama3.jpg", "biden.jpg", "obama.jpg"].map(|name| {
        let mut c = risk.clone();
        tokio::spawn(async move { c.embed(request(photo(name))).await })
    });
    for call in calls {
        assert_eq!(
            call.await.unwrap().unwrap().into_inner().embedding.len(),
            128
        );
    }

    // Bad images: INVALID_ARGUMENT, with a message that says what to fix.
    let mut big = photo("obama.jpg");
    big.resize(MAX_IMAGE_BYTES + 1, 0);
    for (image, message) in [
        (blank_png(), "no face found in the image".to_owned()),
        (
            group_photo(&["obama.jpg", "biden.jpg"]),
            "2 faces found; the photo must show exactly one".to_owned(),
        ),
        (
            big,
            format!(
                "image is {} bytes; the limit is 4194304",
                MAX_IMAGE_BYTES + 1
            ),
        ),
    ] {
        let status = risk.embed(request(image)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(status.message(), message);
    }
    let status = risk.embed(request(b"garbage".to_vec())).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("unreadable image: "),
        "{status:?}"
    );

    // Any other role, or no certificate: refused before the image is looked at.
    for role in [Role::Node, Role::Client, Role::Operator] {
        let mut other = client(&server.endpoint, &pki, Some(role)).await;
        let status = other.embed(request(photo("obama.jpg"))).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "role {role}: {status:?}"
        );
    }
    let mut anonymous = client(&server.endpoint, &pki, None).await;
    let status = anonymous
        .embed(request(photo("obama.jpg")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    server.terminate();
}

#[test]
fn refuses_to_start_without_models() {
    let tmp = tempfile::tempdir().unwrap();
    let pki_dir = tmp.path().join("pki");
    std::fs::create_dir(&pki_dir).unwrap();
    DevPki::ensure(&pki_dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_yunkey-face"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--tls-dir")
        .arg(&pki_dir)
        .arg("--models")
        .arg(tmp.path().join("no-models"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no-models") && stderr.contains("scripts/face-models.sh"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "printed an endpoint without models");
}
