//! The calls anyone may make without a certificate (`RegisterDevice`, `GetTime`), tried as an
//! anonymous caller would: a refused registration does not tell whether the user exists or
//! is revoked, one address is rate limited, and refusals do not fill the log.

mod common;

use common::{Cluster, Dev};
use std::time::{Duration, Instant};
use tonic::Code;
use yunkey_client::{key_client, terminal_client};
use yunkey_coordinator::error::ACTIVATION_REFUSED;
use yunkey_coordinator::service::refusal_log::{LOGGED_PER_WINDOW, WINDOW};
use yunkey_coordinator::service::source_limit::{DEFAULT_BURST, DEFAULT_PER_SECOND};
use yunkey_crypto::authz;
use yunkey_crypto::ecdsa::PrivateKey;
use yunkey_proto::v1::{
    EnrollUserRequest, GetTimeRequest, RegisterDeviceRequest, RegisterDeviceResponse,
    RevokeUserRequest,
};

/// A registration for `user_id` with `code`, with a valid proof by a fresh device key.
fn registration(user_id: &str, code: &str) -> RegisterDeviceRequest {
    let key = PrivateKey::generate();
    let spki = key.public_key().to_spki_der();
    RegisterDeviceRequest {
        request_id: String::new(),
        user_id: user_id.into(),
        activation_code: code.into(),
        proof: key.sign_message(&authz::registration_message(user_id, code, &spki)),
        device_public_key: spki,
        device_name: String::new(),
        release_id: String::new(),
    }
}

async fn register(
    dev: &Dev,
    req: RegisterDeviceRequest,
) -> Result<tonic::Response<RegisterDeviceResponse>, tonic::Status> {
    terminal_client(dev.device().current_channel())
        .register_device(req)
        .await
}

async fn enroll(dev: &Dev, user_id: &str) -> String {
    key_client(dev.business().current_channel())
        .enroll_user(EnrollUserRequest {
            request_id: format!("enroll-{user_id}"),
            user_id: user_id.into(),
            algorithm: 0,
            display_name: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .activation_code
}

/// `text` without ANSI colour sequences (`ESC [ ... m`).
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_do_not_tell_users_apart() {
    let dev = Dev::start();
    // alice: enrolled, code pending. rita: enrolled, then revoked. dora: enrolled, her code
    // used. ghost: never enrolled.
    let alice_code = enroll(&dev, "alice").await;
    let rita_code = enroll(&dev, "rita").await;
    key_client(dev.business().current_channel())
        .revoke_user(RevokeUserRequest {
            request_id: String::new(),
            user_id: "rita".into(),
            reason: "test".into(),
        })
        .await
        .unwrap();
    let dora_code = enroll(&dev, "dora").await;
    register(&dev, registration("dora", &dora_code))
        .await
        .unwrap();

    let mut probe_enroll_id = registration("ghost", "AAAA-BBBB-CCCC");
    probe_enroll_id.request_id = "enroll-alice".into();
    let mut probe_revoke_id = registration("ghost", "AAAA-BBBB-CCCC");
    probe_revoke_id.request_id = "revoke-rita".into();
    let attempts = [
        ("unknown user", registration("ghost", "AAAA-BBBB-CCCC")),
        ("wrong code", registration("alice", "AAAA-BBBB-CCCC")),
        (
            "revoked user, wrong code",
            registration("rita", "AAAA-BBBB-CCCC"),
        ),
        ("revoked user, right code", registration("rita", &rita_code)),
        ("code used", registration("dora", &dora_code)),
        ("request id of an enrolment", probe_enroll_id),
        ("request id of a revocation", probe_revoke_id),
    ];
    for (what, req) in attempts {
        let status = register(&dev, req).await.expect_err(what);
        assert_eq!(
            (status.code(), status.message()),
            (Code::PermissionDenied, ACTIVATION_REFUSED),
            "{what}"
        );
    }

    // Malformed input is named, for any user: it tells nothing about users.
    let mut junk_key = registration("ghost", "AAAA-BBBB-CCCC");
    junk_key.device_public_key = b"junk".to_vec();
    let status = register(&dev, junk_key).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("device_public_key"), "{status:?}");
    let mut no_proof = registration("alice", "AAAA-BBBB-CCCC");
    no_proof.proof.clear();
    let status = register(&dev, no_proof).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("proof"), "{status:?}");
    let status = register(&dev, registration("", "AAAA-BBBB-CCCC"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("user_id"), "{status:?}");

    // After all that, alice's right code still works.
    register(&dev, registration("alice", &alice_code))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_is_rate_limited_and_refusals_are_logged_in_bounded_amounts() {
    let (dev, log) = Dev::start_logging("yunkey::audit=info,warn");
    let code = enroll(&dev, "alice").await;

    // Hammer: far more wrong codes than the burst, as fast as one connection goes.
    let mut terminal = terminal_client(dev.device().current_channel());
    let started = Instant::now();
    let (mut refused, mut limited) = (0, 0);
    let mut retry_after = None;
    let guesses = 400;
    for _ in 0..guesses {
        let status = terminal
            .register_device(registration("alice", "AAAA-BBBB-CCCC"))
            .await
            .unwrap_err();
        match status.code() {
            Code::PermissionDenied => refused += 1,
            Code::ResourceExhausted => {
                limited += 1;
                let message = status.message().to_owned();
                assert!(
                    message.starts_with(
                        "too many unauthenticated requests from this address; retry after "
                    ) && message.ends_with(" ms"),
                    "{message}"
                );
                retry_after = Some(message);
            }
            other => panic!("unexpected {other:?}: {status:?}"),
        }
    }
    let took = started.elapsed();
    // At most the burst plus what refilled meanwhile got through to a code check.
    let budget = DEFAULT_BURST as f64 + DEFAULT_PER_SECOND as f64 * took.as_secs_f64() + 1.0;
    assert!(
        (refused as f64) <= budget,
        "{refused} checked in {took:?} (budget {budget})"
    );
    assert!(limited > 0, "no request was limited in {took:?}");
    eprintln!("{refused} checked, {limited} limited in {took:?}; last: {retry_after:?}");
    // GetTime shares the address's bucket.
    let status = terminal.get_time(GetTimeRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // Once the bucket has refilled, the right code works.
    tokio::time::sleep(Duration::from_secs(
        u64::from(DEFAULT_BURST.div_ceil(DEFAULT_PER_SECOND)) + 1,
    ))
    .await;
    terminal
        .register_device(registration("alice", &code))
        .await
        .expect("the right code after the bucket refilled");
    terminal.get_time(GetTimeRequest {}).await.unwrap();

    // The log: at most LOGGED_PER_WINDOW refusals per window in full, then one summary
    // line per window that suppressed any.
    let windows = took.as_secs() / WINDOW.as_secs() + 2;
    let deadline = Instant::now() + WINDOW * 2;
    let text = loop {
        let text = without_colours(&std::fs::read_to_string(&log).unwrap());
        if text.contains("refusals of unauthenticated calls suppressed") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no summary line within {:?}:\n{text}",
            WINDOW * 2
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let full = text
        .lines()
        .filter(|l| l.contains("request refused"))
        .count();
    let summaries = text
        .lines()
        .filter(|l| l.contains("refusals of unauthenticated calls suppressed"))
        .count();
    assert!(
        (1..=LOGGED_PER_WINDOW as usize * windows as usize).contains(&full),
        "{full} refusal lines for {guesses} refusals:\n{text}"
    );
    assert!(
        summaries as u64 <= windows,
        "{summaries} summaries:\n{text}"
    );
    assert!(
        text.len() < 500 * (full + summaries + 20),
        "{} bytes of log:\n{text}",
        text.len()
    );
    // The operator still sees the distinct reason and the source address.
    assert!(text.contains("activation code is wrong"), "{text}");
    assert!(text.contains("source=127.0.0.1"), "{text}");
    eprintln!(
        "{guesses} refusals: {full} full lines, {summaries} summary lines, {} bytes of log",
        text.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_flag_sets_the_limit() {
    // GetTime needs no chips, so one bare coordinator serves it.
    let mut cluster = Cluster::new();
    let node = cluster.start_node_with(1, true, &[], &["--unauthenticated-rate", "1/3"]);
    let mut terminal = terminal_client(cluster.device(&[&node.endpoint]).current_channel());
    for _ in 0..3 {
        terminal.get_time(GetTimeRequest {}).await.unwrap();
    }
    let status = terminal.get_time(GetTimeRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let ms: u64 = status
        .message()
        .strip_prefix("too many unauthenticated requests from this address; retry after ")
        .and_then(|rest| rest.strip_suffix(" ms"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{status:?}"));
    assert!((1..=1000).contains(&ms), "{ms} ms at 1 request per second");
    tokio::time::sleep(Duration::from_millis(ms)).await;
    terminal.get_time(GetTimeRequest {}).await.unwrap();
}
