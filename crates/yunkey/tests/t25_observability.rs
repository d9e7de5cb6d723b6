//! What operators and generic gRPC tools see: Prometheus metrics per RPC and outcome and
//! per chip, and server reflection listing yunkey's services.

mod common;

use common::{enroll_with_device, free_port, transaction, Cluster, Dev, READY};
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use yunkey_client::{cluster_client, key_client};
use yunkey_proto::v1::AddNodeRequest;

fn scrape(addr: &str) -> String {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).unwrap();
    body
}

/// The value of the sample `series` (its name and labels exactly) in a scrape, 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// A follower counts the Raft `AppendEntries` calls it serves, those with log entries and
/// those with none (heartbeats, commit-index updates), and the entries they carried; all of
/// them come on the leader's `AppendEntriesStream`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_counts_the_append_entries_it_serves() {
    let mut cluster = Cluster::new();
    let chip = cluster.start_chip("chip-1", "zone-1");
    let mut n1 = cluster.start_node(1, true, std::slice::from_ref(&chip.endpoint));
    n1.wait_line("ready", READY);
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut n2 = cluster.start_node_with(2, false, &[], &["--metrics", &metrics]);
    let req = AddNodeRequest {
        node_id: 2,
        address: n2.endpoint.clone(),
    };
    cluster
        .operator(&[&n1.endpoint])
        .call(|ch| {
            let req = req.clone();
            async move { cluster_client(ch).add_node(req).await }
        })
        .await
        .expect("AddNode 2");
    n2.wait_line("ready", READY);

    // The leader sends them on its AppendEntriesStream (through TLS and the access table).
    let with = r#"yunkey_raft_append_entries_received_total{carries="entries",via="stream"}"#;
    let without = r#"yunkey_raft_append_entries_received_total{carries="nothing",via="stream"}"#;
    let unary = "yunkey_raft_append_entries_received_total{carries=\"";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(&metrics);
        let (calls, empty) = (sample(&text, with), sample(&text, without));
        let entries = sample(&text, "yunkey_raft_entries_received_total");
        // Joining replicates the log to the follower; the leader's heartbeat (100 ms) is a
        // call without entries.
        if calls >= 1.0 && empty >= 1.0 {
            assert!(
                entries >= calls,
                "{calls} calls with entries carried {entries}"
            );
            assert!(
                !text
                    .lines()
                    .any(|l| l.starts_with(unary) && l.contains(r#"via="unary""#)),
                "a leader of this build sent unary AppendEntries:\n{text}"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the follower did not count its AppendEntries calls:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every yunkey process turns transparent huge pages off for itself (`main`; with mimalloc
/// they cost a follower a quarter of its CPU zeroing pages: docs/performance.md, item 30).
#[test]
fn a_running_cluster_has_transparent_huge_pages_off() {
    let dev = Dev::start();
    let status = std::fs::read_to_string(format!("/proc/{}/status", dev.pid())).unwrap();
    let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) else {
        eprintln!("this kernel does not report THP_enabled in /proc/PID/status; not checked");
        return;
    };
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_reflection() {
    let dev = Dev::start();
    let alice = enroll_with_device(&dev, "alice").await;
    let mut key = key_client(dev.business().current_channel());
    key.sign(alice.sign_request("", transaction("alice", "1")))
        .await
        .unwrap();
    let mut bad = alice.sign_request("", transaction("alice", "2"));
    bad.user_id = "ghost".into();
    assert!(key.sign(bad).await.is_err());

    let text = scrape(&dev.metrics);
    assert!(text.contains("200 OK"), "{text}");
    for needle in [
        r#"yunkey_rpc_requests_total{rpc="Sign",code="OK"}"#,
        r#"yunkey_rpc_requests_total{rpc="Sign",code="NOT_FOUND"} 1"#,
        r#"yunkey_rpc_requests_total{rpc="EnrollUser",code="OK"} 1"#,
        r#"yunkey_rpc_duration_seconds{rpc="Sign""#,
        "yunkey_chip_signatures_total{",
        "yunkey_raft_write_seconds{",
        "yunkey_raft_is_leader 1",
        "yunkey_raft_applied_index ",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }

    let mut reflection = ServerReflectionClient::new(dev.device().current_channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let reply = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply {reply:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for service in [
        "yunkey.v1.KeyService",
        "yunkey.v1.TerminalService",
        "yunkey.v1.ClusterService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.contains(&service),
            "reflection lacks {service}: {names:?}"
        );
    }
}

/// The leader forgets a consumed authorization once it expired (here with no grace and a
/// prune every second), and says so in `yunkey_pruned_total`; the audit trail's lines move
/// to the coordinator's audit log, whose chain `yunkey audit-log verify` checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_authorizations_are_pruned_by_the_leader() {
    let dev = Dev::start_args(&[
        "--prune-grace",
        "0",
        "--prune-every",
        "1",
        "--audit-keep",
        "0",
    ]);
    let alice = enroll_with_device(&dev, "alice").await;
    let mut key = key_client(dev.business().current_channel());
    // One signature under a request id of the caller's (its result is stored), one without
    // (its ledger entry is its only record).
    for (request_id, n) in [("pay-1", "1"), ("", "2")] {
        let mut tx = transaction("alice", n);
        tx.expires_at = common::now() + 2;
        key.sign(alice.sign_request(request_id, tx)).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = scrape(&dev.metrics);
        if text.contains(r#"yunkey_pruned_total{what="ledger"} 2"#) {
            assert!(
                text.contains(r#"yunkey_pruned_total{what="requests"} 1"#),
                "the stored result of the signature with a request id goes with its ledger \
                 entry, and the other has none:\n{text}"
            );
            assert!(
                text.contains(r#"yunkey_pruned_total{what="audit"}"#),
                "{text}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the ledger entries were not pruned within 30 s:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    // Enrolment, device registration and the signatures: in the log, chained.
    let dir = dev.data.join("coordinator").join("audit");
    let report = common::yunkey_ok(&["audit-log", "verify", dir.to_str().unwrap()]);
    assert!(report.contains("audit log intact"), "{report}");
    let json = common::yunkey_ok(&["--json", "audit-log", "verify", dir.to_str().unwrap()]);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(value["lines"].as_u64().unwrap() >= 3, "{json}");
    assert_eq!(value["gaps"], serde_json::json!([]), "{json}");
    let logged: String = std::fs::read_dir(&dir)
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect();
    assert!(logged.contains(r#""action":"sign""#), "{logged}");
    // A changed line is found.
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replacen("alice", "alicf", 1)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_yunkey"))
        .args(["audit-log", "verify", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("was changed"), "{stderr}");
}

/// Bad input to the audit log's verifier, the prune flags, `--chip-batch` and the bench's
/// `--paced-at` gets a message naming what to fix.
#[test]
fn audit_log_verify_prune_and_chip_batch_flags_refuse_bad_input() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_yunkey"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let empty = tempfile::tempdir().unwrap();
    let err = run(&["audit-log", "verify", empty.path().to_str().unwrap()]);
    assert!(err.contains("holds no audit log file"), "{err}");
    let missing = empty.path().join("nope");
    let err = run(&["audit-log", "verify", missing.to_str().unwrap()]);
    assert!(
        err.contains("nope") && err.contains("No such file"),
        "{err}"
    );
    let err = run(&["dev", "--prune-grace=-5"]);
    assert!(err.contains("--prune-grace"), "{err}");
    let err = run(&["dev", "--prune-every", "0"]);
    assert!(err.contains("--prune-every"), "{err}");
    let err = run(&["coordinator", "--audit-keep", "forever"]);
    assert!(err.contains("--audit-keep"), "{err}");
    for n in ["0", "257"] {
        let err = run(&["dev", "--chip-batch", n]);
        assert!(
            err.contains("--chip-batch") && err.contains("1..=256"),
            "{err}"
        );
    }
    for f in ["0", "1.5", "-0.5", "half"] {
        let err = run(&["bench", &format!("--paced-at={f}")]);
        assert!(
            err.contains("--paced-at") && err.contains("at most 1, such as 0.5"),
            "{err}"
        );
    }
}

/// `yunkey bench` reports its rates beside the three ceilings of the same run (ours, the ring
/// reference, the enrolment ceiling) and the fractions that performance.md quotes.
#[test]
fn bench_reports_rates_beside_its_ceilings() {
    let dev = Dev::start();
    let out = dev.cli(&[
        "--json",
        "bench",
        "--users",
        "3",
        "--concurrency",
        "1,2",
        "--seconds",
        "1",
        "--connections",
        "1",
        "--paced-at",
        "0.5",
    ]);
    let v = common::json(&out);
    let num = |k: &str| {
        v[k].as_f64()
            .unwrap_or_else(|| panic!("bench --json has no number {k}: {v}"))
    };
    for k in [
        "crypto_ceiling_per_second",
        "ring_ceiling_per_second",
        "enrolment_ceiling_per_second",
        "enrollments_per_second",
        "best_signatures_per_second",
    ] {
        assert!(num(k) > 0.0, "{k} must be positive: {v}");
    }
    let levels = v["levels"].as_array().expect("levels");
    assert_eq!(levels.len(), 2, "one entry per concurrency level: {v}");
    for level in levels {
        assert_eq!(level["errors"], 0, "no failed signature: {level}");
        assert!(level["signatures_per_second"].as_f64().unwrap() > 0.0);
    }
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    // The open-loop level asks for half the best closed-loop rate, in calls of one signature.
    let paced = v["paced"].as_array().expect("paced levels");
    assert_eq!(paced.len(), 1, "one entry per --paced-at fraction: {v}");
    let p = &paced[0];
    assert_eq!(p["fraction_of_best"], 0.5);
    assert!(close(
        p["target_calls_per_second"].as_f64().unwrap(),
        0.5 * num("best_signatures_per_second")
    ));
    assert_eq!(p["errors"], 0, "no failed signature: {p}");
    assert!(p["ok"].as_u64().unwrap() > 0 && p["max_in_flight"].as_u64().unwrap() >= 1);
    assert!(p["p99_ms"].as_f64().unwrap() >= p["p50_ms"].as_f64().unwrap());
    assert!(close(
        num("best_fraction_of_ring_ceiling"),
        num("best_signatures_per_second") / num("ring_ceiling_per_second")
    ));
    assert!(close(
        num("enrolment_fraction_of_ceiling"),
        num("enrollments_per_second") / num("enrolment_ceiling_per_second")
    ));
    assert_eq!(v["replicas"], 2);
}
