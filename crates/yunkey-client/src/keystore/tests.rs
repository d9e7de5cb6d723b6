//! The file keystore's promises: the PIN opens the key, wrong PINs lock it for good, the
//! counter survives a crash, old files migrate.

use super::*;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::path::Path;
use yunkey_crypto::ecdsa::PrivateKey;
use yunkey_crypto::ecdsa::PublicKey;

const PIN: &str = "24681357";

fn options(max_failures: u32) -> FileKeystoreOptions {
    FileKeystoreOptions {
        max_failures,
        kdf: KdfParams::INSECURE_TEST_ONLY,
    }
}

fn pin(p: &str) -> StaticSecret {
    StaticSecret::new(p)
}

fn read_json(dir: &Path, user: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(format!("{user}.json"))).unwrap()).unwrap()
}

fn write_json(dir: &Path, user: &str, v: &serde_json::Value) {
    std::fs::write(
        dir.join(format!("{user}.json")),
        serde_json::to_vec_pretty(v).unwrap(),
    )
    .unwrap();
}

fn register(ks: &FileKeystore, user: &str) {
    ks.set_device(
        user,
        &DeviceInfo {
            device_id: "dev-1".into(),
            certificate: vec![1, 2],
        },
    )
    .unwrap();
}

#[test]
fn pin_protects_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ks = FileKeystore::open_with(dir.path(), options(5)).unwrap();
    let created = ks.create_key("alice", &pin(PIN)).unwrap();
    let spki = created.public_key_spki();
    assert_eq!(ks.public_key("alice").unwrap().unwrap(), spki);
    let key = ks.unlock("alice", &pin(PIN)).unwrap();
    assert_eq!(key.public_key_spki(), spki);
    let sig = key.sign(b"msg").unwrap();
    PublicKey::from_spki_der(&spki)
        .unwrap()
        .verify_message(b"msg", &sig)
        .unwrap();
    assert!(matches!(
        ks.unlock("alice", &pin("99999999")),
        Err(ClientError::WrongPin { attempts_left: 4 })
    ));
    assert!(ks.unlock("bob", &pin(PIN)).is_err());
    let raw = std::fs::read_to_string(dir.path().join("alice.json")).unwrap();
    assert!(!raw.contains(PIN));
    assert_eq!(read_json(dir.path(), "alice")["format"], 2);
    register(&ks, "alice");
    assert_eq!(ks.device("alice").unwrap().unwrap().device_id, "dev-1");
    assert!(
        ks.create_key("alice", &pin(PIN)).is_err(),
        "a registered key is not replaced"
    );
    // Neither the opened key nor the verifier prints a secret.
    let shown = format!(
        "{:?} {:?}",
        SoftDeviceKey::new(PrivateKey::generate()),
        pin(PIN)
    );
    assert!(
        !shown.contains(PIN) && shown.contains("redacted"),
        "{shown}"
    );
}

#[test]
fn wrong_pins_lock_the_keystore_until_a_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let ks = FileKeystore::open_with(dir.path(), options(3)).unwrap();
    let old_spki = ks.create_key("alice", &pin(PIN)).unwrap().public_key_spki();
    register(&ks, "alice");
    let sealed = read_json(dir.path(), "alice")["sealed"]["sealed_key"]
        .as_str()
        .unwrap()
        .to_owned();
    for left in [2, 1] {
        match ks.unlock("alice", &pin("00000000")) {
            Err(ClientError::WrongPin { attempts_left }) => assert_eq!(attempts_left, left),
            other => panic!("{:?}", other.err()),
        }
    }
    match ks.unlock("alice", &pin("00000000")) {
        Err(ClientError::Locked { user_id, failures }) => {
            assert_eq!((user_id.as_str(), failures), ("alice", 3));
        }
        other => panic!("{:?}", other.err()),
    }
    // The sealed key is gone from the file; the record says why.
    let raw = std::fs::read_to_string(dir.path().join("alice.json")).unwrap();
    assert!(
        !raw.contains(&sealed),
        "the sealed key is still in the file"
    );
    let file = read_json(dir.path(), "alice");
    assert!(file["sealed"].is_null(), "{file}");
    assert_eq!(file["locked"]["failures"], 3);
    // The right PIN no longer helps, and every use says Locked.
    let err = ks.unlock("alice", &pin(PIN)).err().unwrap();
    assert!(matches!(err, ClientError::Locked { .. }), "{err}");
    assert!(
        err.to_string().contains("yunkey user reactivate alice"),
        "{err}"
    );
    assert!(matches!(
        ks.device("alice"),
        Err(ClientError::Locked { .. })
    ));
    assert!(ks.public_key("alice").unwrap().is_none());
    // Another keystore on the same directory, with a higher threshold, is locked as well.
    let other = FileKeystore::open_with(dir.path(), options(10)).unwrap();
    assert!(matches!(
        other.unlock("alice", &pin(PIN)),
        Err(ClientError::Locked { .. })
    ));
    // Re-registration makes a fresh key, with a fresh counter.
    let new_spki = ks
        .create_key("alice", &pin("13572468"))
        .unwrap()
        .public_key_spki();
    assert_ne!(new_spki, old_spki);
    let file = read_json(dir.path(), "alice");
    assert!(file["locked"].is_null() && file["failures"] == 0, "{file}");
    assert_eq!(
        ks.unlock("alice", &pin("13572468"))
            .unwrap()
            .public_key_spki(),
        new_spki
    );
}

#[test]
fn success_resets_the_counter() {
    let dir = tempfile::tempdir().unwrap();
    let ks = FileKeystore::open_with(dir.path(), options(3)).unwrap();
    ks.create_key("alice", &pin(PIN)).unwrap();
    for _ in 0..2 {
        assert!(ks.unlock("alice", &pin("00000000")).is_err());
    }
    assert_eq!(read_json(dir.path(), "alice")["failures"], 2);
    ks.unlock("alice", &pin(PIN)).unwrap();
    assert_eq!(read_json(dir.path(), "alice")["failures"], 0);
    for left in [2, 1] {
        assert!(matches!(
            ks.unlock("alice", &pin("00000000")),
            Err(ClientError::WrongPin { attempts_left }) if attempts_left == left
        ));
    }
    ks.unlock("alice", &pin(PIN)).unwrap();
}

#[test]
fn a_guess_is_counted_before_the_key_derivation_runs() {
    let dir = tempfile::tempdir().unwrap();
    let ks = FileKeystore::open_with(dir.path(), options(3)).unwrap();
    ks.create_key("alice", &pin(PIN)).unwrap();
    // Make the derivation fail (as if the process died in it): the attempt is already on disk.
    let mut file = read_json(dir.path(), "alice");
    let good = file.clone();
    file["sealed"]["passes"] = 0.into();
    write_json(dir.path(), "alice", &file);
    assert!(matches!(
        ks.unlock("alice", &pin(PIN)),
        Err(ClientError::Keystore(_))
    ));
    assert_eq!(read_json(dir.path(), "alice")["failures"], 1);

    // A process killed after counting the last allowed guess: the next use locks, even with
    // the right PIN, and destroys the key.
    let mut file = good;
    file["failures"] = 3.into();
    write_json(dir.path(), "alice", &file);
    assert!(matches!(
        ks.unlock("alice", &pin(PIN)),
        Err(ClientError::Locked { failures: 3, .. })
    ));
    assert!(read_json(dir.path(), "alice")["sealed"].is_null());
}

#[test]
fn verifier_errors_are_not_guesses() {
    struct Cancelled;
    impl UserVerifier for Cancelled {
        fn verify(&self, prompt: &str) -> Result<zeroize::Zeroizing<String>, ClientError> {
            assert!(prompt.contains("alice"), "{prompt}");
            Err(ClientError::Unverified("cancelled".into()))
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let ks = FileKeystore::open_with(dir.path(), options(1)).unwrap();
    ks.create_key("alice", &pin(PIN)).unwrap();
    for _ in 0..3 {
        assert!(matches!(
            ks.unlock("alice", &Cancelled),
            Err(ClientError::Unverified(_))
        ));
    }
    assert_eq!(read_json(dir.path(), "alice")["failures"], 0);
    ks.unlock("alice", &pin(PIN)).unwrap();
}

#[test]
fn concurrent_guesses_are_all_counted() {
    let dir = tempfile::tempdir().unwrap();
    FileKeystore::open_with(dir.path(), options(50))
        .unwrap()
        .create_key("alice", &pin(PIN))
        .unwrap();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let dir = dir.path().to_owned();
            std::thread::spawn(move || {
                let ks = FileKeystore::open_with(&dir, options(50)).unwrap();
                for _ in 0..3 {
                    assert!(ks.unlock("alice", &pin("00000000")).is_err());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(read_json(dir.path(), "alice")["failures"], 24);
}

#[test]
fn new_keys_need_the_minimum_pin_length() {
    let dir = tempfile::tempdir().unwrap();
    let ks = FileKeystore::open_with(dir.path(), options(5)).unwrap();
    let short = "1".repeat(MIN_SECRET_LEN - 1);
    match ks.create_key("alice", &pin(&short)) {
        Err(ClientError::Invalid(msg)) => {
            assert!(msg.contains(&format!("at least {MIN_SECRET_LEN}")), "{msg}")
        }
        other => panic!("{:?}", other.err()),
    }
    assert!(ks.public_key("alice").unwrap().is_none(), "nothing stored");
    ks.create_key("alice", &pin(&"1".repeat(MIN_SECRET_LEN)))
        .unwrap();
    assert!(FileKeystore::open_with(dir.path(), options(0)).is_err());
}

/// A key file as format 1 wrote it: Argon2 defaults, no counter.
fn format_1_file(dir: &Path, user: &str, pin: &str) -> (PrivateKey, serde_json::Value) {
    let key = PrivateKey::generate();
    let salt = [9u8; 16];
    let sealed = KdfParams::FORMAT_1
        .derive(pin.as_bytes(), &salt)
        .unwrap()
        .seal(
            format!("yunkey-device-key/1\n{user}").as_bytes(),
            &key.to_secret_bytes(),
        );
    let v = serde_json::json!({
        "format": 1,
        "user_id": user,
        "public_key": B64.encode(key.public_key().to_spki_der()),
        "salt": B64.encode(salt),
        "sealed_key": B64.encode(sealed),
        "device_id": "dev-old",
        "certificate": B64.encode([1, 2, 3]),
    });
    write_json(dir, user, &v);
    (key, v)
}

#[test]
fn format_1_files_migrate() {
    let dir = tempfile::tempdir().unwrap();
    // Slightly more work than format 1, so that the migration re-seals, yet fast.
    let stronger = KdfParams {
        passes: KdfParams::FORMAT_1.passes + 1,
        ..KdfParams::FORMAT_1
    };
    let ks = FileKeystore::open_with(
        dir.path(),
        FileKeystoreOptions {
            max_failures: 5,
            kdf: stronger,
        },
    )
    .unwrap();
    // A short PIN from before the minimum still opens its old key.
    let (key, v1) = format_1_file(dir.path(), "alice", "1234");
    assert_eq!(ks.device("alice").unwrap().unwrap().device_id, "dev-old");
    // A wrong guess is counted, in a file rewritten as format 2 with the old parameters.
    assert!(matches!(
        ks.unlock("alice", &pin("4321")),
        Err(ClientError::WrongPin { attempts_left: 4 })
    ));
    let mid = read_json(dir.path(), "alice");
    assert_eq!(mid["format"], 2);
    assert_eq!(mid["failures"], 1);
    assert_eq!(mid["sealed"]["memory_kib"], KdfParams::FORMAT_1.memory_kib);
    assert_eq!(mid["sealed"]["passes"], KdfParams::FORMAT_1.passes);
    assert_eq!(mid["sealed"]["sealed_key"], v1["sealed_key"]);
    // The right PIN opens the same key and re-seals it with the keystore's parameters.
    let opened = ks.unlock("alice", &pin("1234")).unwrap();
    assert_eq!(opened.public_key_spki(), key.public_key().to_spki_der());
    let v2 = read_json(dir.path(), "alice");
    assert_eq!(v2["failures"], 0);
    assert_eq!(v2["sealed"]["passes"], stronger.passes);
    assert_ne!(v2["sealed"]["sealed_key"], v1["sealed_key"]);
    assert_ne!(v2["sealed"]["salt"], v1["salt"]);
    assert_eq!(v2["device_id"], "dev-old");
    // And keeps opening, now without re-sealing.
    ks.unlock("alice", &pin("1234")).unwrap();
    assert_eq!(read_json(dir.path(), "alice")["sealed"], v2["sealed"]);
    // An unknown format is refused, not guessed at.
    let mut v9 = v2.clone();
    v9["format"] = 9.into();
    write_json(dir.path(), "alice", &v9);
    let err = ks.unlock("alice", &pin("1234")).err().unwrap();
    assert!(err.to_string().contains("format 9"), "{err}");
}
