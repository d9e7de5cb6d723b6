//! Signed, self-checking terminal software, with real processes over real TLS: a copy of the
//! `yunkey` binary signed with `yunkey release sign` runs and its release id is accepted; the
//! same copy with one byte flipped refuses to start; a revoked release, one below the minimum
//! version, an unknown one, and (once required) none at all are refused by the cluster with
//! FAILED_PRECONDITION naming the reason.

mod common;

use common::{bin, Dev};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use tonic::Code;
use yunkey_client::terminal_client;
use yunkey_crypto::authz;
use yunkey_crypto::ecdsa::PrivateKey;
use yunkey_proto::v1::RegisterDeviceRequest;

/// Runs the executable `exe` (a copy of yunkey) against `dev`, as a terminal would.
fn run_copy(exe: &Path, dev: &Dev, args: &[&str]) -> Output {
    Command::new(exe)
        .arg("--data")
        .arg(&dev.data)
        .args(args)
        .env("YUNKEY_PIN", "43214321")
        .env_remove("YUNKEY_RELEASE_MANIFEST")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn refused(out: Output, what: &str) -> String {
    assert!(
        !out.status.success(),
        "{what} should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// A copy of the yunkey binary at `dir/yunkey-terminal`.
fn copy_binary(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let exe = dir.join("yunkey-terminal");
    std::fs::copy(bin(), &exe).unwrap();
    exe
}

/// Flips one byte that the program never reads: the one just before the ELF section header
/// table (the end of the section-name table, or padding), which the loader does not map.
fn flip_a_byte(exe: &Path) {
    let mut bytes = std::fs::read(exe).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF");
    let shoff = u64::from_le_bytes(bytes[0x28..0x30].try_into().unwrap()) as usize;
    bytes[shoff - 2] ^= 0x01;
    std::fs::write(exe, bytes).unwrap();
}

fn release_id_of(manifest: &Path) -> String {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(manifest).unwrap()).unwrap();
    m["release_id"].as_str().unwrap().to_owned()
}

/// A registration for a fresh user presenting `release_id`: the release check comes before
/// anything about the user, so the user need not exist.
async fn register_with(dev: &Dev, release_id: &str) -> tonic::Status {
    let key = PrivateKey::generate();
    let spki = key.public_key().to_spki_der();
    let req = RegisterDeviceRequest {
        request_id: String::new(),
        user_id: "nobody".into(),
        activation_code: "CODE".into(),
        proof: key.sign_message(&authz::registration_message("nobody", "CODE", &spki)),
        device_public_key: spki,
        device_name: String::new(),
        release_id: release_id.into(),
    };
    terminal_client(dev.device().current_channel())
        .register_device(req)
        .await
        .unwrap_err()
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_releases_tampering_and_the_release_policy() {
    let dev = Dev::start();
    let tmp = tempfile::tempdir().unwrap();

    // Sign a copy of the binary; the manifest lands beside it.
    let exe = copy_binary(&tmp.path().join("signed"));
    let out = ok(
        dev.cli(&[
            "release",
            "sign",
            "--version",
            "1.0.0",
            exe.to_str().unwrap(),
        ]),
        "release sign",
    );
    let manifest = PathBuf::from(format!("{}.release.json", exe.display()));
    assert!(out.contains("signed release rel-"), "{out}");
    let release = release_id_of(&manifest);

    // The signed copy runs: it registers a device and pays, presenting its release id.
    let code = ok(dev.cli(&["user", "enroll", "alice", "-q"]), "enroll");
    let keystore = tmp.path().join("keystore");
    let ks = keystore.to_str().unwrap();
    ok(
        run_copy(
            &exe,
            &dev,
            &[
                "terminal",
                "register",
                "--user",
                "alice",
                "--activation-code",
                code.trim(),
                "--keystore",
                ks,
            ],
        ),
        "signed copy registers",
    );
    let pay = [
        "terminal",
        "pay",
        "--user",
        "alice",
        "--payee",
        "Shop",
        "--amount",
        "1",
        "--currency",
        "EUR",
        "--yes",
        "--keystore",
        ks,
    ];
    ok(run_copy(&exe, &dev, &pay), "signed copy pays");
    let audit = std::fs::read_to_string(&manifest).unwrap();
    assert!(audit.contains("\"certificate_chain\""), "{audit}");

    // The same copy with one byte flipped refuses to start, before it talks to anyone.
    let tampered = copy_binary(&tmp.path().join("tampered"));
    std::fs::copy(&manifest, format!("{}.release.json", tampered.display())).unwrap();
    flip_a_byte(&tampered);
    let err = refused(run_copy(&tampered, &dev, &pay), "tampered copy");
    assert!(err.contains("refusing to run"), "{err}");
    assert!(err.contains("not the signed release"), "{err}");
    // And with the manifest named explicitly.
    let err = refused(
        run_copy(
            &tampered,
            &dev,
            &[
                &pay[..],
                &["--release-manifest", manifest.to_str().unwrap()],
            ]
            .concat(),
        ),
        "tampered copy, explicit manifest",
    );
    assert!(err.contains("not the signed release"), "{err}");
    // A manifest whose version was edited does not match its own release id.
    let edited = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("\"1.0.0\"", "\"9.0.0\"");
    let edited_path = tmp.path().join("edited.json");
    std::fs::write(&edited_path, edited).unwrap();
    let err = refused(
        run_copy(
            &exe,
            &dev,
            &[
                &pay[..],
                &["--release-manifest", edited_path.to_str().unwrap()],
            ]
            .concat(),
        ),
        "edited manifest",
    );
    assert!(err.contains("refusing to run"), "{err}");

    // Bad versions are refused with what to fix.
    let err = refused(
        dev.cli(&["release", "sign", "--version", "1.2", exe.to_str().unwrap()]),
        "bad version",
    );
    assert!(err.contains("MAJOR.MINOR.PATCH"), "{err}");

    // Unknown release ids are refused by the cluster.
    let s = register_with(&dev, "rel-00000000000000000000").await;
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(s.message().contains("unknown"), "{s:?}");

    // A minimum version: release 1.0.0 is below 1.1.0.
    ok(
        dev.cli(&["release", "policy", "--min-version", "1.1.0"]),
        "policy",
    );
    let s = register_with(&dev, &release).await;
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(
        s.message().contains("below the minimum version 1.1.0"),
        "{s:?}"
    );
    let err = refused(run_copy(&exe, &dev, &pay), "pay below the minimum");
    assert!(err.contains("below the minimum"), "{err}");
    ok(
        dev.cli(&["release", "policy", "--min-version", "none"]),
        "policy",
    );
    ok(run_copy(&exe, &dev, &pay), "pay once the minimum is gone");

    // Required: a terminal without a manifest (the plain binary) is refused; not required
    // (the default), it is accepted.
    ok(dev.cli(&["release", "policy", "--require"]), "policy");
    let plain_pay = dev.cli(&pay);
    let err = refused(plain_pay, "pay without a release");
    assert!(
        err.contains("accepts only signed terminal releases"),
        "{err}"
    );
    ok(dev.cli(&["release", "policy", "--no-require"]), "policy");
    ok(dev.cli(&pay), "pay without a release, not required");

    // Revoked: the signed copy is refused by the cluster, with a status that says so.
    ok(
        dev.cli(&["release", "revoke", &release, "--reason", "test"]),
        "revoke",
    );
    let s = register_with(&dev, &release).await;
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(s.message().contains("revoked"), "{s:?}");
    let err = refused(run_copy(&exe, &dev, &pay), "pay with a revoked release");
    assert!(err.contains("revoked"), "{err}");
    // Signing it again does not reinstate it.
    let err = refused(
        dev.cli(&[
            "release",
            "sign",
            "--version",
            "1.0.0",
            exe.to_str().unwrap(),
        ]),
        "sign a revoked release",
    );
    assert!(err.contains("revoked"), "{err}");

    let list = ok(dev.cli(&["--json", "release", "list"]), "list");
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["releases"][0]["release_id"], release.as_str());
    assert_eq!(list["releases"][0]["revoked"], true);
}
