//! The device channel and the device lifecycle, with real processes over real TLS:
//! `SignTransaction` needs the device's own, current certificate as the TLS client
//! certificate (TLS 1.3 only); wrong activation codes burn the code; a user re-activates to
//! add or replace a device, up to the limit; devices are removed or revoked with a status
//! that says which; certificates renew before expiry and are refused after it; no activation
//! code is stored in plaintext.

mod common;

use common::{expect, register_key, registration, transaction, Dev, TestDevice};
use std::process::{Command, Stdio};
use std::time::Duration;
use tonic::Code;
use yunkey_client::{key_client, terminal_client, Connection};
use yunkey_crypto::ecdsa::PrivateKey;
use yunkey_proto::v1::{
    GetUserRequest, ReactivateUserRequest, RenewDeviceRequest, RevokeDeviceRequest, User,
};

async fn sign_on(channel: &Connection, device: &TestDevice) -> Result<(), tonic::Status> {
    terminal_client(channel.current_channel())
        .sign_transaction(device.sign_request("", transaction(&device.user_id, "3.5")))
        .await
        .map(|_| ())
}

async fn reactivate(dev: &Dev, user_id: &str) -> Result<String, tonic::Status> {
    key_client(dev.business().current_channel())
        .reactivate_user(ReactivateUserRequest {
            user_id: user_id.into(),
        })
        .await
        .map(|r| r.into_inner().activation_code)
}

async fn user(dev: &Dev, user_id: &str) -> User {
    key_client(dev.business().current_channel())
        .get_user(GetUserRequest {
            user_id: user_id.into(),
            consistency: 0,
        })
        .await
        .unwrap()
        .into_inner()
}

/// `openssl s_client` against the coordinator with extra flags; its output.
fn s_client(dev: &Dev, flags: &[&str]) -> (bool, String) {
    let addr = dev.endpoint.trim_start_matches("https://");
    let out = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-brief", "-CAfile"])
        .arg(dev.data.join(yunkey_net::pki::files::CA))
        .args(flags)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text.contains("CONNECTION ESTABLISHED"), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_devices_own_certificate_opens_the_device_channel() {
    let dev = Dev::start();
    let alice = common::enroll_with_device(&dev, "alice").await;
    let bob = common::enroll_with_device(&dev, "bob").await;

    // No client certificate: refused before the request is read.
    expect(
        terminal_client(dev.device().current_channel())
            .sign_transaction(alice.sign_request("", transaction("alice", "1")))
            .await,
        Code::Unauthenticated,
        &["device certificate"],
    );
    // A business client's certificate is not a device certificate.
    expect(
        terminal_client(dev.business().current_channel())
            .sign_transaction(alice.sign_request("", transaction("alice", "1")))
            .await,
        Code::PermissionDenied,
        &["not one"],
    );
    // Alice's device, on its own channel, pays.
    sign_on(&dev.device_channel(&alice), &alice).await.unwrap();
    // Bob's device certificate does not carry alice's authorization.
    expect(
        terminal_client(dev.device_channel(&bob).current_channel())
            .sign_transaction(alice.sign_request("", transaction("alice", "2")))
            .await,
        Code::PermissionDenied,
        &["of user bob", "a device acts only for its own user"],
    );
    // Alice's certificate with a key that is not hers fails the TLS handshake itself.
    let mut thief = TestDevice {
        key: PrivateKey::generate().into(),
        ..alice.clone_identity()
    };
    thief.certificate = alice.certificate.clone();
    let stolen = dev.device_channel(&thief);
    assert!(
        sign_on(&stolen, &alice).await.is_err(),
        "a certificate without its key"
    );

    // TLS 1.3 only, with a fresh ephemeral key exchange per session.
    let (ok, text) = s_client(&dev, &[]);
    assert!(ok && text.contains("TLSv1.3"), "{text}");
    let (ok, text) = s_client(&dev, &["-tls1_2"]);
    assert!(!ok, "TLS 1.2 must be refused:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_burns_the_code_and_devices_come_and_go() {
    let dev = Dev::start_args(&["--activation-attempts", "3", "--max-devices", "2"]);
    let code = common::enroll_code(&dev.business(), "carol").await;
    let terminal = || terminal_client(dev.device().current_channel());
    for _ in 0..3 {
        expect(
            terminal()
                .register_device(registration("carol", "AAAA-BBBB-CCCC"))
                .await,
            Code::PermissionDenied,
            &["activation refused"],
        );
    }
    // The third wrong code burnt it: the right one is refused now.
    expect(
        terminal()
            .register_device(registration("carol", &code))
            .await,
        Code::PermissionDenied,
        &["activation refused"],
    );
    assert!(!user(&dev, "carol").await.activation_pending);

    // A new code from the business; the device registers with it.
    let code = reactivate(&dev, "carol").await.unwrap();
    assert!(user(&dev, "carol").await.activation_pending);
    let phone = register_key(&dev.device(), PrivateKey::generate(), "carol", &code).await;
    // A second device, with a second code; each pays over its own channel.
    let code = reactivate(&dev, "carol").await.unwrap();
    let tablet = register_key(&dev.device(), PrivateKey::generate(), "carol", &code).await;
    sign_on(&dev.device_channel(&phone), &phone).await.unwrap();
    sign_on(&dev.device_channel(&tablet), &tablet)
        .await
        .unwrap();
    // --max-devices 2: no third.
    let status = reactivate(&dev, "carol").await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("--max-devices 2"), "{status:?}");

    // The phone is removed (lost), the tablet revoked (stolen); each refusal says which.
    let mut key = key_client(dev.business().current_channel());
    for (device, remove, reason) in [(&phone, true, "lost"), (&tablet, false, "stolen")] {
        key.revoke_device(RevokeDeviceRequest {
            request_id: String::new(),
            user_id: "carol".into(),
            device_id: device.device_id.clone(),
            reason: reason.into(),
            remove,
        })
        .await
        .unwrap();
    }
    let status = sign_on(&dev.device_channel(&phone), &phone)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("was removed: lost"), "{status:?}");
    let status = sign_on(&dev.device_channel(&tablet), &tablet)
        .await
        .unwrap_err();
    assert!(
        status.message().contains("was revoked: stolen"),
        "{status:?}"
    );
    // The business path refuses them alike.
    let status = key
        .sign(phone.sign_request("", transaction("carol", "1")))
        .await
        .unwrap_err();
    assert!(status.message().contains("was removed"), "{status:?}");

    // The CLI lists them, and a new device can be added again.
    let out = dev.cli(&["user", "device", "list", "carol"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("removed: lost") && text.contains("revoked: stolen"),
        "{text}"
    );
    let out = dev.cli(&["user", "reactivate", "carol", "--quiet"]);
    assert!(out.status.success(), "{out:?}");
    let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    register_key(&dev.device(), PrivateKey::generate(), "carol", &code).await;

    // No activation code was ever stored in plaintext: not in the Raft log, not in the
    // state, not in any file of the data directory.
    let mut found = Vec::new();
    for entry in walk(&dev.data) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        if bytes.windows(code.len()).any(|w| w == code.as_bytes()) {
            found.push(entry);
        }
    }
    assert!(found.is_empty(), "the activation code is in {found:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_renew_before_expiry_and_are_refused_after() {
    let validity = 20;
    let dev = Dev::start_args(&["--device-cert-validity", &validity.to_string()]);
    let mut erin = common::enroll_with_device(&dev, "erin").await;
    let first = erin.certificate.clone();
    let first_expiry = yunkey_net::role::certificate_not_after(&first).unwrap();
    assert!(
        (first_expiry - common::now() - validity).abs() <= 5,
        "{first_expiry}"
    );

    // Renewal, over the device channel with the current certificate.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let renewed = terminal_client(dev.device_channel(&erin).current_channel())
        .renew_device(RenewDeviceRequest {
            request_id: String::new(),
            user_id: "erin".into(),
            device_id: erin.device_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .device
        .unwrap();
    assert!(renewed.certificate_expires_at > first_expiry);
    erin.certificate = renewed.certificate.clone();
    sign_on(&dev.device_channel(&erin), &erin).await.unwrap();
    // The replaced certificate is refused at once, saying why.
    let old = TestDevice {
        certificate: first,
        ..erin.clone_identity()
    };
    let status = sign_on(&dev.device_channel(&old), &erin).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("replaced by a renewal"),
        "{status:?}"
    );

    // Past its expiry, the certificate is refused, with a status that says so; it cannot
    // renew itself either.
    let wait = renewed.certificate_expires_at - common::now() + 2;
    tokio::time::sleep(Duration::from_secs(wait.max(0) as u64)).await;
    let status = sign_on(&dev.device_channel(&erin), &erin)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("expired at Unix time"),
        "{status:?}"
    );
    let status = terminal_client(dev.device_channel(&erin).current_channel())
        .renew_device(RenewDeviceRequest {
            request_id: String::new(),
            user_id: "erin".into(),
            device_id: erin.device_id.clone(),
        })
        .await
        .unwrap_err();
    assert!(status.message().contains("expired"), "{status:?}");
}
