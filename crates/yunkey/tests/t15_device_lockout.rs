//! User verification on the device through the real binary: a new key needs a long enough
//! PIN, and wrong PINs in a row destroy the device key, after which even the right PIN is
//! refused with a message that says the device must be re-activated.

mod common;

use common::Dev;
use std::path::Path;

fn pay(dev: &Dev, keystore: &Path, pin: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        "terminal",
        "pay",
        "--user",
        "dave",
        "--payee",
        "Corner Shop",
        "--amount",
        "3",
        "--currency",
        "EUR",
        "--keystore",
        keystore.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = dev.cli_env(&args, &[("YUNKEY_PIN", pin)]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn wrong_pins_lock_the_device() {
    let dev = Dev::start();
    let ks = tempfile::tempdir().unwrap();
    let enrolled = dev.cli(&["--json", "user", "enroll", "dave"]);
    assert!(enrolled.status.success());
    let code = serde_json::from_slice::<serde_json::Value>(&enrolled.stdout).unwrap()
        ["activation_code"]
        .as_str()
        .unwrap()
        .to_owned();
    let register = |pin: &str| {
        dev.cli_env(
            &[
                "terminal",
                "register",
                "--user",
                "dave",
                "--activation-code",
                &code,
                "--keystore",
                ks.path().to_str().unwrap(),
            ],
            &[("YUNKEY_PIN", pin)],
        )
    };

    // Too short for a new key: refused before anything is stored or sent.
    let out = register("1234567");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 8"), "{err}");
    assert!(register("24681357").status.success());
    let (ok, err) = pay(&dev, ks.path(), "24681357", &[]);
    assert!(ok, "{err}");

    // Two wrong PINs with a threshold of two: the second destroys the key.
    let (ok, err) = pay(&dev, ks.path(), "00000000", &["--max-pin-failures", "2"]);
    assert!(
        !ok && err.contains("wrong PIN") && err.contains("1 more"),
        "{err}"
    );
    let (ok, err) = pay(&dev, ks.path(), "00000000", &["--max-pin-failures", "2"]);
    assert!(
        !ok && err.contains("destroyed") && err.contains("re-activated"),
        "{err}"
    );
    let file = std::fs::read_to_string(ks.path().join("dave.json")).unwrap();
    assert!(file.contains("\"sealed\": null"), "{file}");

    // The right PIN no longer opens anything, whatever the threshold.
    let (ok, err) = pay(&dev, ks.path(), "24681357", &[]);
    assert!(!ok && err.contains("destroyed"), "{err}");

    // Re-activation: the business issues a new code, the device registers a new key with it,
    // and pays again; the locked key's device is then removed.
    let out = dev.cli(&["user", "reactivate", "dave", "--quiet"]);
    assert!(out.status.success(), "{out:?}");
    let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let out = dev.cli_env(
        &[
            "terminal",
            "register",
            "--user",
            "dave",
            "--activation-code",
            &code,
            "--keystore",
            ks.path().to_str().unwrap(),
        ],
        &[("YUNKEY_PIN", "97531864")],
    );
    assert!(out.status.success(), "{out:?}");
    let (ok, err) = pay(&dev, ks.path(), "97531864", &[]);
    assert!(ok, "{err}");
    let out = dev.cli(&["--json", "user", "device", "list", "dave"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["devices"].as_array().unwrap().len(), 2, "{listed}");
}
