//! The business transaction module end to end, with real processes over real TLS: the
//! reference risk service (`yunkey risk serve`) with a rule file, the biometric unit
//! (`yunkey-face serve`: dlib's ResNet face model, real photographs), and a dev cluster
//! whose coordinator asks them before any chip signs.
//!
//! - a small payment signs without a step-up; a large one asks for a face: the user's own
//!   face gets it signed, another person's terminates it;
//! - a blocked payee and a velocity burst are denied;
//! - the risk service paused past the deadline, or killed, fails closed (nothing consumed:
//!   the same authorization signs once it is back, and its state survived the restart);
//!   a deployment that fails open signs and records that it did;
//! - a rule file changed while running takes effect;
//! - every decision is in the user's audit trail (`yunkey user audit`);
//! - the risk service and the biometric unit refuse every role their rows do not list.

mod common;

use common::{bin, enroll_with_device, raw_call, transaction, Dev, Proc, TestDevice};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::Code;
use yunkey_client::terminal_client;
use yunkey_net::access::{ServedBy, RPC_ROLES};
use yunkey_net::reason::Reason;
use yunkey_net::Role;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The biometric unit's binary, built beside `yunkey` by `cargo test --workspace`.
fn face_binary() -> PathBuf {
    let path = Path::new(bin()).with_file_name("yunkey-face");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p yunkey-face` (cargo test --workspace does)",
        path.display()
    );
    path
}

fn models() -> PathBuf {
    let dir = std::env::var_os("YUNKEY_FACE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/face-models"));
    assert!(
        dir.join("dlib_face_recognition_resnet_model_v1.dat")
            .exists(),
        "no face models in {}: run scripts/face-models.sh",
        dir.display()
    );
    dir
}

fn photo(name: &str) -> String {
    root()
        .join("tests/data/faces")
        .join(name)
        .to_str()
        .unwrap()
        .to_owned()
}

const RULES: &str = r#"
format = 1

[[amount_limit]]
name = "amount.EUR.step_up"
action = "step_up"
weight = 30
currency = "EUR"
period = "transaction"
above = 1000

[[amount_limit]]
name = "amount.EUR.deny"
action = "deny"
weight = 100
currency = "EUR"
period = "transaction"
above = 10000

[[velocity]]
name = "velocity.per_minute"
action = "deny"
weight = 40
max = 6
window_seconds = 60

[[payee_block]]
name = "payee.blocked"
action = "deny"
weight = 100
payees = ["Mallory Ltd"]
"#;

/// The business module of a test: the biometric unit and the risk service, with the dev
/// cluster's TLS material (role `risk`).
struct Module {
    face: Proc,
    risk: Proc,
    rules: PathBuf,
    risk_args: Vec<String>,
}

impl Module {
    fn start(tmp: &Path, tls: &Path) -> Module {
        let face = Proc::spawn_program(
            &face_binary(),
            "face",
            &[
                "serve".into(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--tls-dir".into(),
                tls.to_str().unwrap().into(),
                "--models".into(),
                models().to_str().unwrap().into(),
            ],
        );
        let rules = tmp.join("rules.toml");
        std::fs::write(&rules, RULES).unwrap();
        let risk_args: Vec<String> = [
            "risk",
            "serve",
            "--rules",
            rules.to_str().unwrap(),
            "--data",
            tmp.join("risk").to_str().unwrap(),
            "--tls-dir",
            tls.to_str().unwrap(),
            "--face",
            &face.endpoint,
            "--template-key",
            tmp.join("template.key").to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut args = risk_args.clone();
        args.extend(["--listen".into(), "127.0.0.1:0".into()]);
        let risk = Proc::spawn("risk", &args);
        Module {
            face,
            risk,
            rules,
            risk_args,
        }
    }

    /// Starts the risk service again on the address it had.
    fn restart_risk(&mut self) {
        self.risk.stop();
        let mut args = self.risk_args.clone();
        args.extend([
            "--listen".into(),
            self.risk.endpoint.trim_start_matches("https://").to_owned(),
        ]);
        self.risk = Proc::spawn("risk", &args);
    }
}

/// `yunkey terminal pay` for `user`; (success, stdout, stderr).
fn pay(
    dev: &Dev,
    user: &str,
    keystore: &Path,
    payee: &str,
    amount: &str,
    extra: &[&str],
) -> (bool, String, String) {
    let mut args = vec![
        "terminal",
        "pay",
        "--user",
        user,
        "--payee",
        payee,
        "--amount",
        amount,
        "--currency",
        "EUR",
        "--keystore",
        keystore.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = dev.cli(&args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cli_ok(dev: &Dev, args: &[&str]) -> String {
    let out = dev.cli(args);
    assert!(
        out.status.success(),
        "yunkey {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A signature over the device channel; the status when refused.
async fn sign(
    dev: &Dev,
    device: &TestDevice,
    payee: &str,
    amount: &str,
) -> Result<(), tonic::Status> {
    let mut tx = transaction(&device.user_id, amount);
    tx.payee = payee.into();
    terminal_client(dev.device_channel(device).current_channel())
        .sign_transaction(device.sign_request("", tx))
        .await
        .map(|_| ())
}

fn refused(result: Result<(), tonic::Status>, code: Code, reason: Reason, words: &[&str]) {
    let status = result.expect_err("the risk checks should refuse");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(Reason::of(&status), Some(reason), "{status:?}");
    for w in words {
        assert!(
            status.message().contains(w),
            "{:?} lacks {w:?}",
            status.message()
        );
    }
}

fn audit(dev: &Dev, user: &str) -> Vec<serde_json::Value> {
    let out = cli_ok(dev, &["--json", "user", "audit", user]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["entries"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn risk_and_face_checks_come_before_every_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev");
    // The dev cluster's TLS material, made first so the business module can use it.
    std::fs::create_dir_all(&data).unwrap();
    yunkey_net::pki::DevPki::ensure(&data).unwrap();
    let mut module = Module::start(tmp.path(), &data);
    let dev = Dev::start_in_args(
        &data,
        &[
            "--risk-endpoint",
            &module.risk.endpoint,
            "--risk-timeout-ms",
            "1000",
        ],
    );

    // The risk service and the biometric unit refuse every role their rows do not list.
    for row in RPC_ROLES {
        let endpoint = match row.served_by {
            ServedBy::Risk => &module.risk.endpoint,
            ServedBy::Face => &module.face.endpoint,
            _ => continue,
        };
        for role in Role::ALL.into_iter().filter(|r| !row.admits(Some(*r))) {
            let (code, message) = raw_call(
                dev.connection_to(endpoint, Some(role)).current_channel(),
                &row.path(),
            )
            .await;
            assert_eq!(
                code,
                Code::PermissionDenied,
                "{} as {role}: {message}",
                row.path()
            );
        }
    }

    // Alice: a phone with a PIN-sealed keystore, and her face enrolled from one photo.
    let code = cli_ok(&dev, &["user", "enroll", "alice", "--quiet"]);
    let phone = tmp.path().join("alice-phone");
    cli_ok(
        &dev,
        &[
            "terminal",
            "register",
            "--user",
            "alice",
            "--activation-code",
            code.trim(),
            "--keystore",
            phone.to_str().unwrap(),
        ],
    );
    // A file that is no image is refused with a message that says so.
    let junk = tmp.path().join("junk.jpg");
    std::fs::write(&junk, b"not a photograph").unwrap();
    let out = dev.cli(&["user", "face-enroll", "alice", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("unreadable"),
        "{err}"
    );
    cli_ok(&dev, &["user", "face-enroll", "alice", &photo("obama.jpg")]);

    // A small payment signs without a step-up.
    let (ok, _, err) = pay(
        &dev,
        "alice",
        &phone,
        "Corner Shop",
        "12.50",
        &["--face", &photo("obama2.jpg")],
    );
    assert!(ok, "{err}");
    // A large one asks for a face, and says so.
    let (ok, _, err) = pay(&dev, "alice", &phone, "Car Dealer", "5000", &[]);
    assert!(!ok);
    assert!(
        err.contains("FAILED_PRECONDITION") && err.contains("--face"),
        "{err}"
    );
    // Her own face (another photo) gets it signed.
    let (ok, out, err) = pay(
        &dev,
        "alice",
        &phone,
        "Car Dealer",
        "5000",
        &["--face", &photo("obama2.jpg")],
    );
    assert!(ok, "{err}");
    assert!(out.contains("paid 5000 EUR"), "{out}");
    // Another person's face terminates it.
    let (ok, _, err) = pay(
        &dev,
        "alice",
        &phone,
        "Car Dealer",
        "5000",
        &["--face", &photo("biden.jpg")],
    );
    assert!(!ok);
    assert!(
        err.contains("PERMISSION_DENIED") && err.contains("does not match"),
        "{err}"
    );
    // A blocked payee is denied, with the rule that fired.
    let (ok, _, err) = pay(&dev, "alice", &phone, "Mallory Ltd", "3", &[]);
    assert!(!ok);
    assert!(
        err.contains("PERMISSION_DENIED") && err.contains("Mallory"),
        "{err}"
    );

    // Every decision is in her audit trail.
    let trail = audit(&dev, "alice");
    let signs: Vec<&serde_json::Value> = trail.iter().filter(|e| e["action"] == "sign").collect();
    let refusals: Vec<&serde_json::Value> = trail
        .iter()
        .filter(|e| e["action"] == "sign_refused")
        .collect();
    assert_eq!(signs.len(), 2, "{trail:#?}");
    // Refused: the step-up asked of the payment without a face, the step-up that made each
    // `pay --face` send the photo (twice), the face that did not match, the blocked payee.
    assert_eq!(refusals.len(), 5, "{trail:#?}");
    for e in signs.iter().chain(&refusals) {
        let ids = e["risk"]["assessment_ids"].as_array().unwrap();
        assert!(
            !ids.is_empty() && ids.iter().all(|id| !id.as_str().unwrap().is_empty()),
            "{e:#}"
        );
    }
    assert_eq!(signs[0]["risk"]["verdict"], "ALLOW");
    // The step-up: two assessments around a matched face.
    assert_eq!(
        signs[1]["risk"]["assessment_ids"].as_array().unwrap().len(),
        2
    );
    assert_eq!(signs[1]["risk"]["authentication_matched"], true);
    let verdicts: Vec<&str> = refusals
        .iter()
        .map(|e| e["risk"]["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(
        verdicts,
        ["STEP_UP", "STEP_UP", "STEP_UP", "STEP_UP", "DENY"]
    );
    assert_eq!(refusals[3]["risk"]["authentication_matched"], false);
    assert!(refusals[3]["risk"]["authentication_id"].is_string());
    assert_eq!(refusals[4]["risk"]["reasons"][0]["rule"], "payee.blocked");
    let text = cli_ok(&dev, &["user", "audit", "alice"]);
    assert!(
        text.contains("sign_refused") && text.contains("face matched"),
        "{text}"
    );

    // A velocity burst is denied: six a minute, the seventh refused.
    let carol = enroll_with_device(&dev, "carol").await;
    for _ in 0..6 {
        sign(&dev, &carol, "Corner Shop", "1").await.unwrap();
    }
    refused(
        sign(&dev, &carol, "Corner Shop", "1").await,
        Code::PermissionDenied,
        Reason::RiskDenied,
        &["velocity"],
    );

    // A rule file changed while running takes effect, without a restart.
    let bob = enroll_with_device(&dev, "bob").await;
    sign(&dev, &bob, "Corner Shop", "2").await.unwrap();
    let changed = RULES.replace(
        r#"payees = ["Mallory Ltd"]"#,
        r#"payees = ["Mallory Ltd", "Corner Shop"]"#,
    );
    assert_ne!(changed, RULES);
    std::fs::write(&module.rules, changed).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sign(&dev, &bob, "Corner Shop", "2").await {
            Ok(()) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(300)).await
            }
            Ok(()) => panic!("the new rule file did not take effect within 10 s"),
            Err(status) => {
                refused(
                    Err(status),
                    Code::PermissionDenied,
                    Reason::RiskDenied,
                    &["Corner Shop"],
                );
                break;
            }
        }
    }

    // Paused past the deadline: fails closed, after about the deadline, and nothing is
    // consumed: the same authorization signs once the risk service is back.
    let erin = enroll_with_device(&dev, "erin").await;
    let mut tx = transaction("erin", "4");
    tx.payee = "Shop".into();
    let request = erin.sign_request("", tx);
    module.risk.signal("STOP");
    let started = Instant::now();
    let result = terminal_client(dev.device_channel(&erin).current_channel())
        .sign_transaction(request.clone())
        .await
        .map(|_| ());
    module.risk.signal("CONT");
    refused(
        result,
        Code::Unavailable,
        Reason::RiskUnavailable,
        &["fails closed"],
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    terminal_client(dev.device_channel(&erin).current_channel())
        .sign_transaction(request)
        .await
        .expect("the refused authorization was not consumed");

    // Killed: fails closed too. Restarted on the same address, with its state: carol's burst
    // still counts.
    module.risk.kill9();
    refused(
        sign(&dev, &erin, "Shop", "1").await,
        Code::Unavailable,
        Reason::RiskUnavailable,
        &[],
    );
    module.restart_risk();
    refused(
        sign(&dev, &carol, "Shop", "1").await,
        Code::PermissionDenied,
        Reason::RiskDenied,
        &["velocity"],
    );
    sign(&dev, &erin, "Shop", "1").await.unwrap();

    // Face templates are deletable; a step-up without one says what to do.
    let out = cli_ok(&dev, &["user", "face-delete", "alice"]);
    assert!(out.contains("deleted"), "{out}");
    let (ok, _, err) = pay(
        &dev,
        "alice",
        &phone,
        "Car Dealer",
        "5000",
        &["--face", &photo("obama2.jpg")],
    );
    assert!(!ok);
    assert!(err.contains("face template"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_that_fails_open_signs_and_records_it() {
    // Nothing listens on this port: every assessment fails.
    let dead = format!("https://127.0.0.1:{}", common::free_port());
    let dev = Dev::start_args(&[
        "--risk-endpoint",
        &dead,
        "--risk-timeout-ms",
        "500",
        "--risk-fail-open",
    ]);
    let dave = enroll_with_device(&dev, "dave").await;
    sign(&dev, &dave, "Corner Shop", "7")
        .await
        .expect("fail-open signs");
    let trail = audit(&dev, "dave");
    let sign_entry = trail
        .iter()
        .find(|e| e["action"] == "sign")
        .expect("a sign entry");
    assert_eq!(sign_entry["risk"]["failed_open"], true, "{sign_entry:#}");
    assert!(
        sign_entry["risk"]["failure"]
            .as_str()
            .unwrap()
            .contains("AssessRisk"),
        "{sign_entry:#}"
    );
}
