//! The contract every [`ChipBackend`] must keep, as one runnable suite. The soft chip's tests
//! run it; a PKCS#11 token must pass it unchanged.
//!
//! `make` must return a *fresh* chip each call: not in a domain, no trust anchor, no keys,
//! a capacity between 4 and 64 (the suite fills one chip up), independent of other chips.
//! The suite panics with a description on the first broken rule.

use crate::testing::{self, UserCa};
use crate::{ChipBackend, ChipError, KeyPurpose};
use yunkey_crypto::ecdsa::PublicKey;
use yunkey_crypto::tx::ExpiryError;

fn expect_err<T: std::fmt::Debug>(
    what: &str,
    r: Result<T, ChipError>,
    ok: impl Fn(&ChipError) -> bool,
) {
    match r {
        Err(e) if ok(&e) => {}
        other => panic!("{what}: unexpected result {other:?}"),
    }
}

/// Runs every check of the suite against chips made by `make`.
pub fn run(make: &dyn Fn() -> Box<dyn ChipBackend>) {
    fresh_chip_and_domain(make);
    authorized_signing(make);
    domain_transfer_and_wrapping(make);
    delete_and_capacity(make);
}

/// A fresh chip: empty, not in a domain; init_domain once; trust anchor write-once.
pub fn fresh_chip_and_domain(make: &dyn Fn() -> Box<dyn ChipBackend>) {
    let chip = make();
    let info = chip.info().unwrap();
    assert_eq!(info.used, 0, "fresh chip holds no keys");
    assert!(info.domain_id.is_none(), "fresh chip is in no domain");
    assert!(
        info.trust_anchor.is_none(),
        "fresh chip has no trust anchor"
    );
    assert!(
        (4..=64).contains(&info.capacity),
        "conformance chips have capacity 4..=64"
    );
    PublicKey::from_spki_der(&info.transport_public_key).expect("transport key is P-256 SPKI");

    expect_err(
        "generate before domain",
        chip.generate_key(KeyPurpose::User, "alice"),
        |e| *e == ChipError::NotInDomain,
    );
    expect_err(
        "export before domain",
        chip.export_domain(&info.transport_public_key),
        |e| *e == ChipError::NotInDomain,
    );
    let id = chip.init_domain().unwrap();
    assert!(!id.is_empty());
    assert_eq!(chip.info().unwrap().domain_id.as_deref(), Some(id.as_str()));
    expect_err(
        "second init_domain",
        chip.init_domain(),
        |e| matches!(e, ChipError::AlreadyInDomain { domain_id } if *domain_id == id),
    );

    let ca = UserCa::new("conformance user CA");
    expect_err(
        "garbage trust anchor",
        chip.set_trust_anchor(b"not a certificate"),
        |e| matches!(e, ChipError::Invalid(_)),
    );
    chip.set_trust_anchor(&ca.cert_der).unwrap();
    chip.set_trust_anchor(&ca.cert_der)
        .expect("same anchor again is accepted");
    expect_err(
        "different trust anchor",
        chip.set_trust_anchor(&UserCa::new("other").cert_der),
        |e| *e == ChipError::TrustAnchorAlreadySet,
    );
    assert_eq!(
        chip.info().unwrap().trust_anchor.as_deref(),
        Some(ca.cert_der.as_slice())
    );

    expect_err(
        "user key without user id",
        chip.generate_key(KeyPurpose::User, ""),
        |e| matches!(e, ChipError::Invalid(_)),
    );
    expect_err(
        "CA key with a user id",
        chip.generate_key(KeyPurpose::Ca, "alice"),
        |e| matches!(e, ChipError::Invalid(_)),
    );
}

/// The signature activation rules of `sign_authorized` and `sign_digest`.
pub fn authorized_signing(make: &dyn Fn() -> Box<dyn ChipBackend>) {
    let chip = make();
    chip.init_domain().unwrap();
    let ca = UserCa::new("conformance user CA");
    let alice_phone = ca.issue_device("alice", "alice-phone");
    let (tx, tx_hash) = testing::canonical_tx("12.5", 120);

    let key = chip.generate_key(KeyPurpose::User, "alice").unwrap();
    expect_err(
        "sign before trust anchor",
        chip.sign_authorized(&alice_phone.request(&key.handle, &tx)),
        |e| *e == ChipError::TrustAnchorNotSet,
    );
    chip.set_trust_anchor(&ca.cert_der).unwrap();

    // Happy path: the signature verifies over the hash of the exact transaction bytes.
    let public = PublicKey::from_spki_der(&key.public_key_spki).unwrap();
    let signed = chip
        .sign_authorized(&alice_phone.request(&key.handle, &tx))
        .unwrap();
    assert_eq!(
        signed.digest, tx_hash,
        "the chip signs sha256(canonical_transaction)"
    );
    public
        .verify_digest(&tx_hash, &signed.signature_der)
        .expect("signature verifies");
    // A retry of the same request returns the same signature.
    let again = chip
        .sign_authorized(&alice_phone.request(&key.handle, &tx))
        .unwrap();
    assert_eq!(again, signed, "a repeated request gets the same signature");

    // Same transaction with another key of the same user: refused by the replay guard.
    let key2 = chip.generate_key(KeyPurpose::User, "alice").unwrap();
    expect_err(
        "same tx hash with another key",
        chip.sign_authorized(&alice_phone.request(&key2.handle, &tx)),
        |e| *e == ChipError::Replay,
    );

    let fresh = || testing::canonical_tx("12.5", 120).0;

    // Unknown handle.
    expect_err(
        "unknown handle",
        chip.sign_authorized(&alice_phone.request("0123abcd", &fresh())),
        |e| matches!(e, ChipError::UnknownKey { .. }),
    );
    // Wrong user: bob's valid device asks to use alice's key.
    let bob_phone = ca.issue_device("bob", "bob-phone");
    expect_err(
        "wrong user",
        chip.sign_authorized(&bob_phone.request(&key.handle, &fresh())),
        |e| *e == ChipError::UserMismatch,
    );
    // Device certificate from another CA.
    let rogue = UserCa::new("conformance user CA").issue_device("alice", "alice-phone");
    expect_err(
        "device cert from another CA",
        chip.sign_authorized(&rogue.request(&key.handle, &fresh())),
        |e| matches!(e, ChipError::UntrustedDeviceCertificate { .. }),
    );
    // Device certificate naming another user, presented for alice.
    let t = fresh();
    let mut req = bob_phone.request(&key.handle, &t);
    req.user_id = "alice".into();
    req.authorization_signature = bob_phone.authorize_for("alice", &t);
    expect_err(
        "device cert naming another user",
        chip.sign_authorized(&req),
        |e| matches!(e, ChipError::DeviceCertificateNames { .. }),
    );
    // Device id not named by the certificate.
    let mut req = alice_phone.request(&key.handle, &fresh());
    req.device_id = "alice-laptop".into();
    expect_err(
        "device cert naming another device",
        chip.sign_authorized(&req),
        |e| matches!(e, ChipError::DeviceCertificateNames { .. }),
    );
    // Device certificate outside its validity period.
    let now = testing::now_unix();
    let old = ca.issue_device_with("alice", "alice-old", now - 7200, now - 3600);
    expect_err(
        "expired device cert",
        chip.sign_authorized(&old.request(&key.handle, &fresh())),
        |e| *e == ChipError::DeviceCertificateNotValidNow,
    );
    // Tampered transaction: amount changed after the device signed.
    let t = fresh();
    let mut req = alice_phone.request(&key.handle, &t);
    let text = String::from_utf8(t)
        .unwrap()
        .replace("amount:12.5", "amount:125");
    req.canonical_transaction = text.into_bytes();
    expect_err("changed amount", chip.sign_authorized(&req), |e| {
        *e == ChipError::BadAuthorization
    });
    // Non-canonical transaction bytes (signed by the device, still refused).
    let t = fresh();
    let text = String::from_utf8(t)
        .unwrap()
        .replace("amount:12.5", "amount:12.50");
    let req = alice_phone.request(&key.handle, text.as_bytes());
    expect_err(
        "non-canonical transaction",
        chip.sign_authorized(&req),
        |e| matches!(e, ChipError::Invalid(_)),
    );
    // Expired, and too far in the future.
    let (t, _) = testing::canonical_tx_at("12.5", now - 1);
    expect_err(
        "expired",
        chip.sign_authorized(&alice_phone.request(&key.handle, &t)),
        |e| matches!(e, ChipError::Expiry(ExpiryError::Expired { .. })),
    );
    let (t, _) = testing::canonical_tx("12.5", 3600);
    expect_err(
        "too far ahead",
        chip.sign_authorized(&alice_phone.request(&key.handle, &t)),
        |e| matches!(e, ChipError::Expiry(ExpiryError::TooFar { .. })),
    );
    // Authorization signed by another key, and garbage.
    let t = fresh();
    let mut req = alice_phone.request(&key.handle, &t);
    req.authorization_signature = bob_phone.authorize_for("alice", &t);
    expect_err(
        "authorization by another key",
        chip.sign_authorized(&req),
        |e| *e == ChipError::BadAuthorization,
    );
    req.authorization_signature = vec![0x30, 0x00];
    expect_err("malformed authorization", chip.sign_authorized(&req), |e| {
        *e == ChipError::BadAuthorization
    });
    // Authorization for another user id than the request.
    let t = fresh();
    let mut req = alice_phone.request(&key.handle, &t);
    req.authorization_signature = alice_phone.authorize_for("bob", &t);
    expect_err(
        "authorization for another user",
        chip.sign_authorized(&req),
        |e| *e == ChipError::BadAuthorization,
    );

    // CA keys: sign digests, refuse authorized signing; user keys refuse digests.
    let ca_key = chip.generate_key(KeyPurpose::Ca, "").unwrap();
    let digest = yunkey_crypto::sha256(b"certificate body");
    let s = chip.sign_digest(&ca_key.handle, &digest).unwrap();
    assert_eq!(s.digest, digest);
    PublicKey::from_spki_der(&ca_key.public_key_spki)
        .unwrap()
        .verify_digest(&digest, &s.signature_der)
        .expect("CA signature verifies");
    expect_err(
        "CA key via sign_authorized",
        chip.sign_authorized(&alice_phone.request(&ca_key.handle, &fresh())),
        |e| *e == ChipError::NotAUserKey,
    );
    expect_err(
        "user key via sign_digest",
        chip.sign_digest(&key.handle, &digest),
        |e| *e == ChipError::UserKeyNeedsAuthorization,
    );
    expect_err(
        "unknown handle via sign_digest",
        chip.sign_digest("feedface", &digest),
        |e| matches!(e, ChipError::UnknownKey { .. }),
    );
}

/// Domain export/import between chips; wrapped keys open on every member and nowhere else.
pub fn domain_transfer_and_wrapping(make: &dyn Fn() -> Box<dyn ChipBackend>) {
    let a = make();
    let b = make();
    let c = make();
    let id = a.init_domain().unwrap();
    let ca = UserCa::new("conformance user CA");
    a.set_trust_anchor(&ca.cert_der).unwrap();
    let phone = ca.issue_device("alice", "alice-phone");
    let key_a = a.generate_key(KeyPurpose::User, "alice").unwrap();
    assert_eq!(
        a.wrap_key(&key_a.handle).unwrap().len(),
        key_a.wrapped_key.len()
    );

    // B joins A's domain (and learns the trust anchor with it).
    let b_transport = b.info().unwrap().transport_public_key;
    let export = a.export_domain(&b_transport).unwrap();
    assert_eq!(export.domain_id, id);
    expect_err(
        "envelope for another chip",
        c.import_domain(&export.envelope),
        |e| matches!(e, ChipError::Unseal { .. }),
    );
    assert_eq!(b.import_domain(&export.envelope).unwrap(), id);
    assert_eq!(
        b.import_domain(&export.envelope).unwrap(),
        id,
        "import is idempotent"
    );
    assert_eq!(
        b.info().unwrap().trust_anchor.as_deref(),
        Some(ca.cert_der.as_slice())
    );

    // Wrong purpose or user for the wrapped key.
    expect_err(
        "unwrap as another user",
        b.unwrap_key(&key_a.wrapped_key, KeyPurpose::User, "bob"),
        |e| *e == ChipError::WrappedKeyMismatch,
    );
    expect_err(
        "unwrap as a CA key",
        b.unwrap_key(&key_a.wrapped_key, KeyPurpose::Ca, ""),
        |e| *e == ChipError::WrappedKeyMismatch,
    );
    let key_b = b
        .unwrap_key(&key_a.wrapped_key, KeyPurpose::User, "alice")
        .unwrap();
    assert_eq!(
        key_b.public_key_spki, key_a.public_key_spki,
        "same key on both chips"
    );
    let public = PublicKey::from_spki_der(&key_a.public_key_spki).unwrap();
    for (chip, handle) in [(&a, &key_a.handle), (&b, &key_b.handle)] {
        let (tx, hash) = testing::canonical_tx("1000", 60);
        let s = chip.sign_authorized(&phone.request(handle, &tx)).unwrap();
        public
            .verify_digest(&hash, &s.signature_der)
            .expect("replica signature verifies");
    }

    // C in its own domain: A's wrapped keys do not open there, and it cannot join A's.
    let other = c.init_domain().unwrap();
    assert_ne!(other, id);
    expect_err(
        "unwrap in another domain",
        c.unwrap_key(&key_a.wrapped_key, KeyPurpose::User, "alice"),
        |e| matches!(e, ChipError::Unseal { .. }),
    );
    let to_c = a
        .export_domain(&c.info().unwrap().transport_public_key)
        .unwrap();
    expect_err(
        "import into a chip of another domain",
        c.import_domain(&to_c.envelope),
        |e| matches!(e, ChipError::AlreadyInDomain { .. }),
    );
    expect_err(
        "garbage wrapped key",
        b.unwrap_key(b"\x01", KeyPurpose::User, "alice"),
        |e| matches!(e, ChipError::Invalid(_)),
    );
}

/// Deleting keys, and the capacity limit.
pub fn delete_and_capacity(make: &dyn Fn() -> Box<dyn ChipBackend>) {
    let chip = make();
    chip.init_domain().unwrap();
    let capacity = chip.info().unwrap().capacity;
    let k = chip.generate_key(KeyPurpose::Ca, "").unwrap();
    assert!(chip.delete_key(&k.handle).unwrap());
    assert!(
        !chip.delete_key(&k.handle).unwrap(),
        "second delete reports no key"
    );
    expect_err(
        "sign with a deleted key",
        chip.sign_digest(&k.handle, &[0u8; 32]),
        |e| matches!(e, ChipError::UnknownKey { .. }),
    );
    expect_err("wrap a deleted key", chip.wrap_key(&k.handle), |e| {
        matches!(e, ChipError::UnknownKey { .. })
    });
    assert_eq!(chip.info().unwrap().used, 0);

    let mut handles = Vec::new();
    for i in 0..capacity {
        handles.push(
            chip.generate_key(KeyPurpose::User, &format!("user-{i}"))
                .unwrap(),
        );
    }
    assert_eq!(chip.info().unwrap().used, capacity);
    expect_err(
        "generate beyond capacity",
        chip.generate_key(KeyPurpose::User, "one-more"),
        |e| matches!(e, ChipError::Full { .. }),
    );
    expect_err(
        "unwrap beyond capacity",
        chip.unwrap_key(&handles[0].wrapped_key, KeyPurpose::User, "user-0"),
        |e| matches!(e, ChipError::Full { .. }),
    );
    assert!(chip.delete_key(&handles[0].handle).unwrap());
    chip.unwrap_key(&handles[0].wrapped_key, KeyPurpose::User, "user-0")
        .expect("room again after a delete");
}
