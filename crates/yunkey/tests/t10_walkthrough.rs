//! The README walkthrough through the real binary, checked with OpenSSL: enrol, register a
//! device, pay, verify; then a restart on the same data keeps everything.

mod common;

use common::{json, onboard, openssl, pay_output, Dev};
use std::path::Path;
use std::process::Command;

fn pay(dev: &Dev, user: &str, keystore: &Path, amount: &str) -> serde_json::Value {
    let out = pay_output(dev, user, keystore, amount);
    let paid = json(&out);
    // What you see is what you sign: the exact canonical bytes were shown before signing.
    let shown = String::from_utf8_lossy(&out.stderr);
    let canonical = paid["canonical_transaction"].as_str().unwrap();
    assert!(
        shown.contains("about to authorize exactly this transaction:"),
        "{shown}"
    );
    for line in canonical.lines() {
        assert!(
            shown.contains(&format!("  {line}")),
            "{line:?} not shown: {shown}"
        );
    }
    paid
}

#[test]
fn walkthrough_verified_by_openssl() {
    let dev = Dev::start();
    let work = tempfile::tempdir().unwrap();
    let ks = work.path().join("keystore");
    onboard(&dev, "alice", &ks);
    let paid = pay(&dev, "alice", &ks, "12.50");

    let canonical = paid["canonical_transaction"].as_str().unwrap();
    assert!(canonical.contains("amount:12.5\n") && canonical.contains("currency:EUR\n"));
    std::fs::write(work.path().join("tx.txt"), canonical).unwrap();
    std::fs::write(
        work.path().join("sig.der"),
        hex::decode(paid["signature"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let chain = paid["certificate_chain"].as_str().unwrap();
    let end =
        chain.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----\n".len();
    std::fs::write(work.path().join("user.pem"), &chain[..end]).unwrap();
    std::fs::write(work.path().join("chain.pem"), chain).unwrap();

    // The signature is over SHA-256 of the canonical bytes, and tx_hash is that hash.
    let (ok, out) = openssl(
        &[
            "x509", "-in", "user.pem", "-pubkey", "-noout", "-out", "pub.pem",
        ],
        work.path(),
    );
    assert!(ok, "{out}");
    let (ok, out) = openssl(
        &[
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "sig.der",
            "tx.txt",
        ],
        work.path(),
    );
    assert!(ok && out.contains("Verified OK"), "{out}");
    let (ok, out) = openssl(&["dgst", "-sha256", "-r", "tx.txt"], work.path());
    assert!(
        ok && out.starts_with(paid["tx_hash"].as_str().unwrap()),
        "{out}"
    );

    // The user's certificate chains to the user CA that `yunkey dev` wrote.
    let ca = dev.data.join("user-ca.pem");
    let (ok, out) = openssl(
        &["verify", "-CAfile", ca.to_str().unwrap(), "user.pem"],
        work.path(),
    );
    assert!(ok && out.contains("user.pem: OK"), "{out}");
    let (ok, out) = openssl(&["x509", "-in", "user.pem", "-noout", "-text"], work.path());
    assert!(
        ok && out.contains("URI:urn:yunkey:user:alice") && out.contains("Non Repudiation"),
        "{out}"
    );

    // A tampered transaction does not verify.
    std::fs::write(
        work.path().join("tx2.txt"),
        canonical.replace("12.5", "99.5"),
    )
    .unwrap();
    let (ok, _) = openssl(
        &[
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "sig.der",
            "tx2.txt",
        ],
        work.path(),
    );
    assert!(!ok, "a changed amount must not verify");

    // `yunkey verify`, by the cluster and locally against the certificate.
    let (h, s) = (
        paid["tx_hash"].as_str().unwrap(),
        paid["signature"].as_str().unwrap(),
    );
    let v = json(&dev.cli(&[
        "--json",
        "verify",
        "--user",
        "alice",
        "--tx-hash",
        h,
        "--signature",
        s,
    ]));
    assert_eq!(v["valid"], true);
    let cert = work.path().join("user.pem");
    let v = json(&dev.cli(&[
        "--json",
        "verify",
        "--certificate",
        cert.to_str().unwrap(),
        "--tx-hash",
        h,
        "--signature",
        s,
    ]));
    assert_eq!(v["valid"], true);
    let mut bad = hex::decode(h).unwrap();
    bad[0] ^= 1;
    let out = dev.cli(&[
        "verify",
        "--user",
        "alice",
        "--tx-hash",
        &hex::encode(bad),
        "--signature",
        s,
    ]);
    assert!(!out.status.success(), "an invalid signature exits non-zero");
}

#[test]
fn restart_keeps_users_and_devices() {
    let data = tempfile::tempdir().unwrap();
    let ks = data.path().join("keystore");
    let mut dev = Dev::start_in(&data.path().join("cluster"));
    onboard(&dev, "bob", &ks);
    let first = pay(&dev, "bob", &ks, "1");
    dev.stop();

    let dev = Dev::start_in(&data.path().join("cluster"));
    let shown = json(&dev.cli(&["--json", "user", "show", "bob"]));
    assert_eq!(shown["status"], "USER_STATUS_ACTIVE");
    assert_eq!(shown["devices"].as_array().unwrap().len(), 1);
    assert_eq!(shown["activation_pending"], false);
    let second = pay(&dev, "bob", &ks, "2");
    assert_eq!(
        first["certificate_chain"], second["certificate_chain"],
        "same user certificate and CA"
    );
    let status = json(&dev.cli(&["--json", "status"]));
    assert_eq!(status["users"], 1);
    assert_eq!(status["chips"].as_array().unwrap().len(), 3);
    // The user CA in Status is the one `yunkey dev` wrote to DATA/user-ca.pem.
    let written = std::fs::read_to_string(dev.data.join("user-ca.pem")).unwrap();
    assert_eq!(status["user_ca_pem"].as_str(), Some(written.as_str()));
}

#[test]
fn cli_failures_are_clear_and_non_zero() {
    let dev = Dev::start();
    let out = dev.cli(&["user", "show", "nobody"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NOT_FOUND") && err.contains("nobody"), "{err}");

    let out = dev.cli(&["--json", "user", "enroll", "bad/id"]);
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "INVALID_ARGUMENT");
    assert!(v["error"]["message"].as_str().unwrap().contains("user_id"));

    // No PIN and no terminal: a clear error, never a prompt that hangs.
    let ks = tempfile::tempdir().unwrap();
    let out = dev.cli_env(
        &[
            "terminal",
            "register",
            "--user",
            "x",
            "--activation-code",
            "AAAA-AAAA-AAAA",
            "--keystore",
            ks.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("YUNKEY_PIN"));

    // A wrong activation code is refused by the cluster.
    json(&dev.cli(&["--json", "user", "enroll", "carol"]));
    let out = dev.cli(&[
        "terminal",
        "register",
        "--user",
        "carol",
        "--activation-code",
        "AAAA-AAAA-AAAA",
        "--keystore",
        ks.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PERMISSION_DENIED"));

    // Without a running cluster: a message that says what to do.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(common::bin())
        .args(["--data", empty.path().to_str().unwrap(), "status"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("yunkey dev"));
}
