//! What the container deployments (deploy/compose, deploy/k8s) rely on, tried on real
//! processes: `pki cluster` keeps what exists, JSON log lines, the plaintext health port,
//! `--node-id auto` with `--bootstrap-file` (only the named node on an empty dir initializes;
//! a restart never initializes again), and `ctl add-node` without `--node-id`.

mod common;

use common::{bin, free_port, yunkey_ok as yunkey, Proc};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn pki(dir: &Path) -> String {
    let d = dir.to_str().unwrap();
    yunkey(&[
        "pki",
        "cluster",
        "--ca-dir",
        &format!("{d}/ca"),
        "--out",
        d,
        "--node=c1=127.0.0.1",
        "--node=c2=127.0.0.1",
        "--node=chip=127.0.0.1,localhost",
        "--operator=ops",
        "--domain-operator-key",
        &format!("{d}/ca/domain-operator-key.pem"),
    ])
}

async fn health(port: u16, service: &str) -> i32 {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[test]
fn pki_cluster_creates_once_and_keeps_after() {
    let dir = tempfile::tempdir().unwrap();
    let first = pki(dir.path());
    assert!(first.contains("created the CA"), "{first}");
    assert!(first.contains("created the domain operator key"), "{first}");
    let cert = std::fs::read(dir.path().join("c1/node.pem")).unwrap();
    let again = pki(dir.path());
    assert!(again.contains("kept the CA"), "{again}");
    assert!(again.contains("kept the node identity c1"), "{again}");
    assert!(again.contains("kept the domain operator key"), "{again}");
    assert_eq!(std::fs::read(dir.path().join("c1/node.pem")).unwrap(), cert);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chip_logs_json_and_serves_plain_health() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let d = dir.path().to_str().unwrap();
    let health_port = free_port();
    let mut child = Command::new(bin())
        .args(["--data", &format!("{d}/chip-data"), "--log-format", "json"])
        .args(["chip", "--id", "chip-x", "--tls-dir", &format!("{d}/chip")])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--health", &format!("127.0.0.1:{health_port}")])
        .env("YUNKEY_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let first = BufReader::new(stderr).lines().next().unwrap().unwrap();
    let log: serde_json::Value = serde_json::from_str(&first).expect("a JSON log line");
    assert_eq!(log["level"], "INFO", "{first}");
    assert_eq!(log["chip"], "chip-x", "{first}");
    assert!(
        log["message"].as_str().unwrap().contains("chip opened"),
        "{first}"
    );
    // Not admitted yet: the identity on one stdout line, as written to identity.json.
    // Read up to `endpoint:`, which the chip prints once its health port is bound too.
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let lines: Vec<String> = stdout
        .lines()
        .map_while(Result::ok)
        .take_while(|l| !l.starts_with("endpoint: "))
        .collect();
    let identity = lines.iter().find(|l| l.starts_with("identity: ")).unwrap();
    let identity: serde_json::Value =
        serde_json::from_str(identity.trim_start_matches("identity: ")).unwrap();
    assert_eq!(identity["chip_id"], "chip-x");
    let mut status = 0;
    for _ in 0..50 {
        if let Ok(s) = tokio::time::timeout(
            Duration::from_secs(2),
            health(health_port, "yunkey.v1.ChipService"),
        )
        .await
        {
            status = s;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, ServingStatus::Serving as i32);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_node_ids_bootstrap_once_and_join_without_an_id() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let d = dir.path().to_str().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let (h1, h2) = (free_port(), free_port());
    let url1 = format!("https://127.0.0.1:{p1}");
    let url2 = format!("https://127.0.0.1:{p2}");
    let bootstrap = dir.path().join("bootstrap");
    std::fs::write(&bootstrap, format!("{url1}\n")).unwrap();
    let args = |name: &str, port: u16, health: u16| -> Vec<String> {
        [
            "--data",
            &format!("{d}/{name}-data"),
            "coordinator",
            "--node-id",
            "auto",
            "--bootstrap-file",
            bootstrap.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--tls-dir",
            &format!("{d}/{name}"),
            "--health",
            &format!("127.0.0.1:{health}"),
            "--election-timeout",
            "300-500",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let mut c1 = Proc::spawn("c1", &args("c1", p1, h1));
    assert!(
        c1.seen
            .iter()
            .any(|l| l.ends_with("initialized a new one-node cluster")),
        "{:?}",
        c1.seen
    );
    let id1: u64 = std::fs::read_to_string(dir.path().join("c1-data/node-id"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let c2 = Proc::spawn("c2", &args("c2", p2, h2));
    assert!(
        c2.seen
            .iter()
            .any(|l| l.contains("not a member of any cluster yet")),
        "the bootstrap file names c1, not c2: {:?}",
        c2.seen
    );
    let id2: u64 = std::fs::read_to_string(dir.path().join("c2-data/node-id"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(id1, id2);
    // Not ready (no chip, no user CA): the public services say so; membership works.
    assert_eq!(
        health(h1, "yunkey.v1.KeyService").await,
        ServingStatus::NotServing as i32
    );
    assert_eq!(
        health(h1, "yunkey.v1.ClusterService").await,
        ServingStatus::Serving as i32
    );

    // c1 restarts on its data: same id, no second initialization.
    c1.kill9();
    let c1 = Proc::spawn("c1", &args("c1", p1, h1));
    assert!(
        !c1.seen.iter().any(|l| l.contains("initialized")),
        "{:?}",
        c1.seen
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("c1-data/node-id"))
            .unwrap()
            .trim(),
        id1.to_string()
    );

    // add-node without --node-id: the node's own id is used.
    let out = yunkey(&[
        "--endpoint",
        &url1,
        "--ca",
        &format!("{d}/ops/ca.pem"),
        "--cert",
        &format!("{d}/ops/operator.pem"),
        "--key",
        &format!("{d}/ops/operator-key.pem"),
        "--timeout",
        "30",
        "--json",
        "ctl",
        "add-node",
        "--address",
        &url2,
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let voters: Vec<u64> = r["voters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(voters.contains(&id1) && voters.contains(&id2), "{out}");
    drop((c1, c2));
}
