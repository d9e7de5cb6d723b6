//! The contract every chip keeps, whatever keeps its keys, as one runnable suite. The soft
//! chip's tests run it; the PKCS#11 backend must pass it unchanged.
//!
//! `make` must return a *fresh* chip each call: not in a domain, no trust anchor, no keys,
//! a capacity between 6 and 64 (the suite fills one chip up), independent of other chips.
//! The suite panics with a description on the first broken rule.
//!
//! [`sm2::run`] is the part for chips that hold SM2 keys (the soft chip); a chip that does not
//! must refuse them with [`ChipError::AlgorithmUnsupported`], which [`run`] checks.

pub mod sm2;

use crate::testing::{self, ChipCa, Device, Operator};
use crate::{
    CertificateSubject, ChipAdmission, ChipBackend, ChipError, GenerateKey, IssueCertificate,
    KeyPurpose, Revoke, SetActivation, SignAuthorized, SignManifest,
};
use der::Decode;

mod cipher;
pub use cipher::domain_cipher;
use yunkey_crypto::cipher::Cipher;
use yunkey_crypto::ecdsa::PublicKey;
use yunkey_crypto::tx::ExpiryError;

pub(crate) fn expect_err<T: std::fmt::Debug>(
    what: &str,
    r: Result<T, ChipError>,
    ok: impl Fn(&ChipError) -> bool,
) {
    match r {
        Err(e) if ok(&e) => {}
        other => panic!("{what}: unexpected result {other:?}"),
    }
}

pub(crate) type Make<'a> = &'a dyn Fn() -> Box<dyn ChipBackend>;

/// Runs every check of the suite against chips made by `make`.
pub fn run(make: Make<'_>) {
    fresh_chip_and_domain(make);
    binding_and_signing(make);
    revocation(make);
    reactivation(make);
    certificates(make);
    domain_transfer_and_wrapping(make);
    delete_and_capacity(make);
    code_signing(make);
    domain_cipher(make);
}

fn ca_key_request() -> GenerateKey {
    GenerateKey {
        algorithm: yunkey_crypto::sig::Algorithm::EcdsaP256,
        distid: String::new(),
        purpose: KeyPurpose::Ca,
        user_id: String::new(),
        activation: None,
    }
}

/// A fresh chip: empty, not in a domain; a domain only with the operator's admission, once;
/// the trust anchor write-once.
pub fn fresh_chip_and_domain(make: Make<'_>) {
    let chip = make();
    let info = chip.info().unwrap();
    assert_eq!(info.used, 0, "fresh chip holds no keys");
    assert!(info.domain_id.is_none(), "fresh chip is in no domain");
    assert!(
        info.trust_anchor.is_none(),
        "fresh chip has no trust anchor"
    );
    assert!(
        info.operator_key.is_none(),
        "fresh chip has no operator key"
    );
    assert!(
        (6..=64).contains(&info.capacity),
        "conformance chips have capacity 6..=64"
    );
    PublicKey::from_spki_der(&info.transport_public_key).expect("transport key is P-256 SPKI");

    expect_err(
        "generate before domain",
        chip.generate_key(&ca_key_request()),
        |e| *e == ChipError::NotInDomain,
    );
    let operator = Operator::new();
    expect_err(
        "export before domain",
        chip.export_domain(&operator.admit(&*chip)),
        |e| *e == ChipError::NotInDomain,
    );
    // The admission must be the operator key's signature over this chip.
    let stranger = Operator::new();
    expect_err(
        "init_domain with another key's admission",
        chip.init_domain(
            &operator.public_spki(),
            &stranger.admit(&*chip).operator_signature,
            Cipher::Aes256,
        ),
        |e| matches!(e, ChipError::AdmissionRefused { .. }),
    );
    expect_err(
        "init_domain with a garbage operator key",
        chip.init_domain(b"not a key", b"sig", Cipher::Aes256),
        |e| matches!(e, ChipError::Invalid(_)),
    );
    let id = operator.init_domain(&*chip);
    assert!(!id.is_empty());
    let info = chip.info().unwrap();
    assert_eq!(info.domain_id.as_deref(), Some(id.as_str()));
    assert_eq!(info.operator_key, Some(operator.public_spki()));
    expect_err(
        "second init_domain",
        chip.init_domain(
            &operator.public_spki(),
            &operator.admit(&*chip).operator_signature,
            Cipher::Aes256,
        ),
        |e| matches!(e, ChipError::AlreadyInDomain { domain_id } if *domain_id == id),
    );

    expect_err(
        "garbage trust anchor",
        chip.set_trust_anchor(b"not a certificate"),
        |e| matches!(e, ChipError::Invalid(_)),
    );
    let ca = ChipCa::create(&*chip, "conformance user CA");
    chip.set_trust_anchor(&ca.cert_der)
        .expect("same anchor again is accepted");
    let other = chip.generate_key(&ca_key_request()).unwrap();
    let other_cert = chip
        .issue_certificate(&IssueCertificate {
            ca_key_handle: other.handle,
            subject: CertificateSubject::Ca {
                common_name: "other".into(),
            },
        })
        .unwrap();
    expect_err(
        "different trust anchor",
        chip.set_trust_anchor(&other_cert),
        |e| *e == ChipError::TrustAnchorAlreadySet,
    );
    assert_eq!(
        chip.info().unwrap().trust_anchor.as_deref(),
        Some(ca.cert_der.as_slice())
    );
}

/// Binding a device with the activation code, and every check of `sign_authorized`.
pub fn binding_and_signing(make: Make<'_>) {
    let chip = make();
    Operator::new().init_domain(&*chip);
    let (key, code) = testing::enrol(&*chip, "alice");
    assert_eq!(key.binding_seq, 0);
    let phone = Device::new("alice");
    let (tx, tx_hash) = testing::canonical_tx("12.5", 120);

    // Nothing is bound yet: the key signs nothing.
    expect_err(
        "sign before any device is bound",
        chip.sign_authorized(&phone.request(&key.handle, &tx)),
        |e| matches!(e, ChipError::DeviceNotBound { .. }),
    );
    // Binding needs the code and a proof by the device key.
    expect_err(
        "bind with a wrong code",
        chip.bind_device(&phone.bind_request(&key.handle, "WRONG-CODE")),
        |e| *e == ChipError::ActivationInvalid,
    );
    let mut forged = phone.bind_request(&key.handle, &code);
    forged.proof = Device::new("alice").bind_request(&key.handle, &code).proof;
    expect_err(
        "bind with another key's proof",
        chip.bind_device(&forged),
        |e| *e == ChipError::BadRegistrationProof,
    );
    let mut bob_asks = phone.bind_request(&key.handle, &code);
    bob_asks.user_id = "bob".into();
    expect_err(
        "bind naming another user",
        chip.bind_device(&bob_asks),
        |e| *e == ChipError::UserMismatch,
    );
    let bound = chip
        .bind_device(&phone.bind_request(&key.handle, &code))
        .unwrap();
    assert_eq!(bound.binding_seq, 1);
    assert_eq!(bound.device_id.as_deref(), Some(phone.device_id.as_str()));
    let again = chip
        .bind_device(&phone.bind_request(&key.handle, &code))
        .unwrap();
    assert_eq!(again.binding_seq, 1, "a retried bind changes nothing");
    expect_err(
        "a second device with the used code",
        chip.bind_device(&Device::new("alice").bind_request(&key.handle, &code)),
        |e| *e == ChipError::ActivationInvalid,
    );
    // An expired activation binds nothing.
    let (expired_code, mut pending) = testing::activation();
    pending.expires_at = testing::now_unix() - 1;
    let late = chip
        .generate_key(&GenerateKey {
            algorithm: yunkey_crypto::sig::Algorithm::EcdsaP256,
            distid: String::new(),
            purpose: KeyPurpose::User,
            user_id: "carol".into(),
            activation: Some(pending),
        })
        .unwrap();
    expect_err(
        "bind with an expired code",
        chip.bind_device(&Device::new("carol").bind_request(&late.handle, &expired_code)),
        |e| *e == ChipError::ActivationInvalid,
    );

    // Happy path: the signature verifies over the hash of the exact transaction bytes.
    let public = PublicKey::from_spki_der(&key.public_key_spki).unwrap();
    let signed = chip
        .sign_authorized(&phone.request(&key.handle, &tx))
        .unwrap();
    assert_eq!(
        signed.digest, tx_hash,
        "the chip signs sha256(canonical_transaction)"
    );
    public
        .verify_digest(&tx_hash, &signed.signature_der)
        .expect("signature verifies");
    let again = chip
        .sign_authorized(&phone.request(&key.handle, &tx))
        .unwrap();
    assert_eq!(again, signed, "a repeated request gets the same signature");

    let fresh = || testing::canonical_tx("12.5", 120).0;
    // A device that is not bound, even one naming the right user.
    let stranger = Device::new("alice");
    expect_err(
        "an unbound device",
        chip.sign_authorized(&stranger.request(&key.handle, &fresh())),
        |e| matches!(e, ChipError::DeviceNotBound { .. }),
    );
    // The bound device's id with another key's signature.
    let mut req = phone.request(&key.handle, &fresh());
    req.authorization_signature = stranger.authorize_for("alice", &req.canonical_transaction);
    expect_err(
        "signature by another key",
        chip.sign_authorized(&req),
        |e| *e == ChipError::BadAuthorization,
    );
    // A valid ECDSA authorization labelled as the reserved WebAuthn format: refused as a
    // format this chip does not verify yet, not signed.
    let mut req = phone.request(&key.handle, &fresh());
    req.authorization_format = yunkey_crypto::authz::AuthorizationFormat::WebAuthn;
    expect_err(
        "the reserved WebAuthn format",
        chip.sign_authorized(&req),
        |e| matches!(e, ChipError::Invalid(f) if f.field == "authorization.format"),
    );
    // A real authorization, with the amount changed afterwards.
    let (orig, _) = testing::canonical_tx("10", 120);
    let mut req = phone.request(&key.handle, &orig);
    let mut t = yunkey_crypto::tx::decode(&orig).unwrap();
    t.amount = "9999.99".into();
    req.canonical_transaction = yunkey_crypto::tx::encode(&t).unwrap();
    expect_err("altered amount", chip.sign_authorized(&req), |e| {
        *e == ChipError::BadAuthorization
    });
    // A real authorization replayed against another user's key.
    let (bob_key, bob_code) = testing::enrol(&*chip, "bob");
    let bob_phone = Device::new("bob");
    chip.bind_device(&bob_phone.bind_request(&bob_key.handle, &bob_code))
        .unwrap();
    let alice_req = phone.request(&key.handle, &fresh());
    let mut on_bob = alice_req.clone();
    on_bob.key_handle = bob_key.handle.clone();
    expect_err(
        "alice's authorization on bob's key",
        chip.sign_authorized(&on_bob),
        |e| *e == ChipError::UserMismatch,
    );
    on_bob.user_id = "bob".into();
    expect_err(
        "alice's authorization on bob's key, naming bob",
        chip.sign_authorized(&on_bob),
        |e| matches!(e, ChipError::DeviceNotBound { .. }),
    );
    // Expired, and too far ahead.
    let (old, _) = testing::canonical_tx_at("1", testing::now_unix() - 5);
    expect_err(
        "expired",
        chip.sign_authorized(&phone.request(&key.handle, &old)),
        |e| matches!(e, ChipError::Expiry(ExpiryError::Expired { .. })),
    );
    let (far, _) = testing::canonical_tx("1", 3600);
    expect_err(
        "too far ahead",
        chip.sign_authorized(&phone.request(&key.handle, &far)),
        |e| matches!(e, ChipError::Expiry(ExpiryError::TooFar { .. })),
    );
    expect_err(
        "not canonical",
        chip.sign_authorized(&phone.request(&key.handle, b"hello")),
        |e| matches!(e, ChipError::Invalid(_)),
    );
    // The coordinators know a newer binding than this chip.
    let mut ahead = phone.request(&key.handle, &fresh());
    ahead.binding_seq = 2;
    expect_err("binding behind", chip.sign_authorized(&ahead), |e| {
        *e == ChipError::BindingBehind { have: 1, need: 2 }
    });
    // The same transaction with another key of the same user: the replay guard.
    let (key2, code2) = testing::enrol(&*chip, "alice");
    chip.bind_device(&phone.bind_request(&key2.handle, &code2))
        .unwrap();
    expect_err(
        "same tx hash with another key",
        chip.sign_authorized(&phone.request(&key2.handle, &tx)),
        |e| *e == ChipError::Replay,
    );
    // A CA key does not sign transactions.
    let ca = chip.generate_key(&ca_key_request()).unwrap();
    let on_ca = phone.request(&ca.handle, &fresh());
    expect_err("CA key", chip.sign_authorized(&on_ca), |e| {
        *e == ChipError::NotAUserKey
    });
    expect_err(
        "unknown handle",
        chip.sign_authorized(&SignAuthorized {
            key_handle: "00ff".into(),
            ..phone.request(&key.handle, &fresh())
        }),
        |e| matches!(e, ChipError::UnknownKey { .. }),
    );
}

/// Revoking a device and a user, on the chip that decides it and on a replica that learns it.
pub fn revocation(make: Make<'_>) {
    let a = make();
    let b = make();
    let operator = Operator::new();
    operator.init_domain(&*a);
    operator.join(&*a, &*b);
    let (key, code) = testing::enrol(&*a, "alice");
    let phone = Device::new("alice");
    let tablet = Device::new("alice");
    let bound = a
        .bind_device(&phone.bind_request(&key.handle, &code))
        .unwrap();
    // B holds a replica with the binding as it was after the phone bound.
    let replica = b
        .unwrap_key(&bound.wrapped_key, KeyPurpose::User, "alice")
        .unwrap();
    assert_eq!(replica.binding_seq, 1, "a replica carries the binding");
    let tx = || testing::canonical_tx("5", 120).0;
    b.sign_authorized(&phone.request(&replica.handle, &tx()))
        .expect("the replica serves the bound device");

    expect_err(
        "revoke a device that is not bound",
        a.revoke(&Revoke {
            key_handle: key.handle.clone(),
            user_id: "alice".into(),
            device_id: Some(tablet.device_id.clone()),
        }),
        |e| matches!(e, ChipError::DeviceNotBound { .. }),
    );
    let revoked = a
        .revoke(&Revoke {
            key_handle: key.handle.clone(),
            user_id: "alice".into(),
            device_id: Some(phone.device_id.clone()),
        })
        .unwrap();
    assert_eq!(revoked.binding_seq, 2);
    expect_err(
        "a revoked device",
        a.sign_authorized(&phone.request(&key.handle, &tx())),
        |e| matches!(e, ChipError::DeviceRevoked { .. }),
    );
    // B has not seen it; the coordinators' seq makes it refuse until it has.
    let mut req = phone.request(&replica.handle, &tx());
    req.binding_seq = revoked.binding_seq;
    expect_err("replica behind", b.sign_authorized(&req), |e| {
        matches!(e, ChipError::BindingBehind { have: 1, need: 2 })
    });
    let updated = b
        .update_binding(&replica.handle, &revoked.wrapped_key)
        .unwrap();
    assert_eq!(updated.binding_seq, 2);
    expect_err(
        "the replica refuses once the revocation reached it",
        b.sign_authorized(&phone.request(&replica.handle, &tx())),
        |e| matches!(e, ChipError::DeviceRevoked { .. }),
    );
    // An older wrapped key does not undo it, nor does a binding forked elsewhere.
    b.update_binding(&replica.handle, &bound.wrapped_key)
        .unwrap();
    expect_err(
        "after replaying the older binding",
        b.sign_authorized(&phone.request(&replica.handle, &tx())),
        |e| matches!(e, ChipError::DeviceRevoked { .. }),
    );
    expect_err(
        "a revoked device cannot bind again",
        a.bind_device(&phone.bind_request(&key.handle, &code)),
        |e| matches!(e, ChipError::DeviceRevoked { .. }),
    );
    // Another key's wrapped form is not an update of this one.
    let (other, _) = testing::enrol(&*a, "alice");
    expect_err(
        "update with another key",
        b.update_binding(&replica.handle, &other.wrapped_key),
        |e| *e == ChipError::KeyMismatch,
    );

    // Revoking the user.
    let (key2, code2) = testing::enrol(&*a, "dave");
    let dave = Device::new("dave");
    a.bind_device(&dave.bind_request(&key2.handle, &code2))
        .unwrap();
    let gone = a
        .revoke(&Revoke {
            key_handle: key2.handle.clone(),
            user_id: "dave".into(),
            device_id: None,
        })
        .unwrap();
    let again = a
        .revoke(&Revoke {
            key_handle: key2.handle.clone(),
            user_id: "dave".into(),
            device_id: None,
        })
        .unwrap();
    assert_eq!(
        again.binding_seq, gone.binding_seq,
        "revoking twice is a no-op"
    );
    expect_err(
        "a revoked user",
        a.sign_authorized(&dave.request(&key2.handle, &testing::canonical_tx("1", 60).0)),
        |e| *e == ChipError::UserRevoked,
    );
    let restored = b
        .unwrap_key(&gone.wrapped_key, KeyPurpose::User, "dave")
        .unwrap();
    expect_err(
        "a key restored from the revoked wrapped form",
        b.sign_authorized(&dave.request(&restored.handle, &testing::canonical_tx("1", 60).0)),
        |e| *e == ChipError::UserRevoked,
    );
}

/// A re-activation: a new code lets one more device bind, supersedes the old code on every
/// holder it reaches, and never comes back through an older binding.
pub fn reactivation(make: Make<'_>) {
    let a = make();
    let b = make();
    let operator = Operator::new();
    operator.init_domain(&*a);
    operator.join(&*a, &*b);
    let (key, first_code) = testing::enrol(&*a, "alice");
    let phone = Device::new("alice");
    let bound = a
        .bind_device(&phone.bind_request(&key.handle, &first_code))
        .unwrap();
    let replica = b
        .unwrap_key(&bound.wrapped_key, KeyPurpose::User, "alice")
        .unwrap();
    let (code, pending) = testing::activation();
    let set = |handle: &str, user: &str, expires_at: i64| SetActivation {
        key_handle: handle.into(),
        user_id: user.into(),
        code_sha256: pending.code_sha256,
        expires_at,
    };
    expect_err(
        "a re-activation that is already expired",
        a.set_activation(&set(&key.handle, "alice", testing::now_unix() - 1)),
        |e| matches!(e, ChipError::Invalid(_)),
    );
    expect_err(
        "a re-activation naming another user",
        a.set_activation(&set(&key.handle, "bob", pending.expires_at)),
        |e| *e == ChipError::UserMismatch,
    );
    let reopened = a
        .set_activation(&set(&key.handle, "alice", pending.expires_at))
        .unwrap();
    assert_eq!(reopened.binding_seq, bound.binding_seq + 1);
    let tablet = Device::new("alice");
    expect_err(
        "the enrolment's code after a re-activation",
        a.bind_device(&tablet.bind_request(&key.handle, &first_code)),
        |e| *e == ChipError::ActivationInvalid,
    );
    // The replica learns the new code from the coordinators' push, and an older binding
    // does not take it back.
    b.update_binding(&replica.handle, &reopened.wrapped_key)
        .unwrap();
    b.update_binding(&replica.handle, &bound.wrapped_key)
        .unwrap();
    let on_b = b
        .bind_device(&tablet.bind_request(&replica.handle, &code))
        .unwrap();
    assert_eq!(on_b.device_id.as_deref(), Some(tablet.device_id.as_str()));
    // Both devices sign on B; the code is used up there, and A takes B's binding.
    let tx = || testing::canonical_tx("5", 120).0;
    b.sign_authorized(&phone.request(&replica.handle, &tx()))
        .expect("the first device still signs");
    b.sign_authorized(&tablet.request(&replica.handle, &tx()))
        .expect("the second device signs");
    expect_err(
        "a third device with the used code",
        b.bind_device(&Device::new("alice").bind_request(&replica.handle, &code)),
        |e| *e == ChipError::ActivationInvalid,
    );
    let merged = a.update_binding(&key.handle, &on_b.wrapped_key).unwrap();
    assert!(merged.binding_seq >= on_b.binding_seq);
    a.sign_authorized(&tablet.request(&key.handle, &tx()))
        .expect("A serves the second device after the merge");
    expect_err(
        "A after the merge: the code is used",
        a.bind_device(&Device::new("alice").bind_request(&key.handle, &code)),
        |e| *e == ChipError::ActivationInvalid,
    );
    // A revoked user is not re-activated.
    a.revoke(&Revoke {
        key_handle: key.handle.clone(),
        user_id: "alice".into(),
        device_id: None,
    })
    .unwrap();
    expect_err(
        "re-activating a revoked user",
        a.set_activation(&set(&key.handle, "alice", pending.expires_at)),
        |e| *e == ChipError::UserRevoked,
    );
}

/// Certificates are built by the chip from checked input, only with a CA key.
pub fn certificates(make: Make<'_>) {
    let chip = make();
    let operator = Operator::new();
    operator.init_domain(&*chip);
    let (key, code) = testing::enrol(&*chip, "alice");
    let phone = Device::new("alice");
    let bound = chip
        .bind_device(&phone.bind_request(&key.handle, &code))
        .unwrap();
    let issue = |ca: &str, subject: CertificateSubject| {
        chip.issue_certificate(&IssueCertificate {
            ca_key_handle: ca.into(),
            subject,
        })
    };
    let ca_key = chip.generate_key(&ca_key_request()).unwrap();
    let user_subject = || CertificateSubject::User {
        wrapped_user_key: bound.wrapped_key.clone(),
        display_name: "Alice".into(),
    };
    expect_err(
        "a user certificate before the anchor",
        issue(&ca_key.handle, user_subject()),
        |e| *e == ChipError::TrustAnchorNotSet,
    );
    let ca = ChipCa::create(&*chip, "conformance user CA");
    expect_err(
        "a CA key whose certificate is not the anchor",
        issue(&ca_key.handle, user_subject()),
        |e| *e == ChipError::AnchorKeyMismatch,
    );
    expect_err(
        "a user key as CA",
        issue(&key.handle, user_subject()),
        |e| *e == ChipError::NotACaKey,
    );

    let ca_public = PublicKey::from_spki_der(&ca.key.public_key_spki).unwrap();
    let check = |der: &[u8], subject_spki: &[u8]| {
        let cert = x509_cert::Certificate::from_der(der).expect("a DER certificate");
        let tbs = der::Encode::to_der(&cert.tbs_certificate).unwrap();
        ca_public
            .verify_message(&tbs, cert.signature.raw_bytes())
            .expect("signed by the CA key");
        let spki = der::Encode::to_der(&cert.tbs_certificate.subject_public_key_info).unwrap();
        assert_eq!(spki, subject_spki, "certifies the right key");
        cert
    };
    let user_cert = issue(&ca.key.handle, user_subject()).unwrap();
    let cert = check(&user_cert, &key.public_key_spki);
    assert!(cert
        .tbs_certificate
        .subject
        .to_string()
        .contains("CN=alice"));
    let device_cert = issue(
        &ca.key.handle,
        CertificateSubject::Device {
            validity_secs: None,
            wrapped_user_key: bound.wrapped_key.clone(),
            device_id: phone.device_id.clone(),
        },
    )
    .unwrap();
    check(&device_cert, &phone.key.public_key().to_spki_der());

    // A device certificate only for a bound device, from the wrapped form that binds it.
    expect_err(
        "a device not in the binding",
        issue(
            &ca.key.handle,
            CertificateSubject::Device {
                validity_secs: None,
                wrapped_user_key: bound.wrapped_key.clone(),
                device_id: Device::new("alice").device_id,
            },
        ),
        |e| matches!(e, ChipError::DeviceNotBound { .. }),
    );
    expect_err(
        "the wrapped form from before the device bound",
        issue(
            &ca.key.handle,
            CertificateSubject::Device {
                validity_secs: None,
                wrapped_user_key: key.wrapped_key.clone(),
                device_id: phone.device_id.clone(),
            },
        ),
        |e| matches!(e, ChipError::DeviceNotBound { .. }),
    );
    let mut altered = bound.wrapped_key.clone();
    let n = altered.len();
    altered[n / 2] ^= 1;
    expect_err(
        "an altered wrapped key",
        issue(
            &ca.key.handle,
            CertificateSubject::User {
                wrapped_user_key: altered,
                display_name: String::new(),
            },
        ),
        |e| matches!(e, ChipError::Unseal { .. } | ChipError::Invalid(_)),
    );
    let foreign = make();
    Operator::new().init_domain(&*foreign);
    let (foreign_key, _) = testing::enrol(&*foreign, "alice");
    expect_err(
        "a key of another domain",
        issue(
            &ca.key.handle,
            CertificateSubject::User {
                wrapped_user_key: foreign_key.wrapped_key,
                display_name: String::new(),
            },
        ),
        |e| matches!(e, ChipError::Unseal { .. }),
    );
    let revoked = chip
        .revoke(&Revoke {
            key_handle: key.handle.clone(),
            user_id: "alice".into(),
            device_id: Some(phone.device_id.clone()),
        })
        .unwrap();
    expect_err(
        "a revoked device",
        issue(
            &ca.key.handle,
            CertificateSubject::Device {
                validity_secs: None,
                wrapped_user_key: revoked.wrapped_key,
                device_id: phone.device_id.clone(),
            },
        ),
        |e| matches!(e, ChipError::DeviceRevoked { .. }),
    );
}

/// The domain goes only to admitted chips; wrapped keys open only inside the domain.
pub fn domain_transfer_and_wrapping(make: Make<'_>) {
    let a = make();
    let b = make();
    let c = make();
    let operator = Operator::new();
    let id = operator.init_domain(&*a);
    let ca = ChipCa::create(&*a, "conformance user CA");
    let (key_a, code) = testing::enrol(&*a, "alice");
    let phone = Device::new("alice");
    let bound = a
        .bind_device(&phone.bind_request(&key_a.handle, &code))
        .unwrap();
    assert_eq!(
        a.wrap_key(&key_a.handle).unwrap().len(),
        bound.wrapped_key.len()
    );

    // Export needs the operator's admission of exactly the recipient.
    let b_info = b.info().unwrap();
    let unsigned = ChipAdmission {
        chip_id: b_info.chip_id.clone(),
        transport_public_key: b_info.transport_public_key.clone(),
        operator_signature: vec![0x30, 0x00],
    };
    expect_err(
        "export without admission",
        a.export_domain(&unsigned),
        |e| matches!(e, ChipError::AdmissionRefused { .. }),
    );
    expect_err(
        "export admitted by another key",
        a.export_domain(&Operator::new().admit(&*b)),
        |e| matches!(e, ChipError::AdmissionRefused { .. }),
    );
    let mut swapped = operator.admit(&*b);
    swapped.transport_public_key = c.info().unwrap().transport_public_key;
    expect_err(
        "an admission moved to another transport key",
        a.export_domain(&swapped),
        |e| matches!(e, ChipError::AdmissionRefused { .. }),
    );
    let export = a.export_domain(&operator.admit(&*b)).unwrap();
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
    let b_info = b.info().unwrap();
    assert_eq!(b_info.trust_anchor.as_deref(), Some(ca.cert_der.as_slice()));
    assert_eq!(b_info.operator_key, Some(operator.public_spki()));

    expect_err(
        "unwrap as another user",
        b.unwrap_key(&bound.wrapped_key, KeyPurpose::User, "bob"),
        |e| *e == ChipError::WrappedKeyMismatch,
    );
    expect_err(
        "unwrap as a CA key",
        b.unwrap_key(&bound.wrapped_key, KeyPurpose::Ca, ""),
        |e| *e == ChipError::WrappedKeyMismatch,
    );
    let key_b = b
        .unwrap_key(&bound.wrapped_key, KeyPurpose::User, "alice")
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
    // B's own wrap of the replica opens on A (one format across chips).
    let rewrapped = b.wrap_key(&key_b.handle).unwrap();
    a.unwrap_key(&rewrapped, KeyPurpose::User, "alice")
        .expect("a replica's wrapped form imports back");

    // C in its own domain: A's wrapped keys do not open there, and it cannot join A's.
    let other = Operator::new().init_domain(&*c);
    assert_ne!(other, id);
    expect_err(
        "unwrap in another domain",
        c.unwrap_key(&bound.wrapped_key, KeyPurpose::User, "alice"),
        |e| matches!(e, ChipError::Unseal { .. }),
    );
    let to_c = a.export_domain(&operator.admit(&*c)).unwrap();
    expect_err(
        "import into a chip of another domain",
        c.import_domain(&to_c.envelope),
        |e| matches!(e, ChipError::AlreadyInDomain { .. }),
    );
    expect_err(
        "garbage wrapped key",
        b.unwrap_key(b"\x02", KeyPurpose::User, "alice"),
        |e| matches!(e, ChipError::Invalid(_)),
    );
}

/// Deleting keys, and the capacity limit.
pub fn delete_and_capacity(make: Make<'_>) {
    let chip = make();
    Operator::new().init_domain(&*chip);
    let capacity = chip.info().unwrap().capacity;
    let k = chip.generate_key(&ca_key_request()).unwrap();
    assert!(chip.delete_key(&k.handle).unwrap());
    assert!(
        !chip.delete_key(&k.handle).unwrap(),
        "second delete reports no key"
    );
    expect_err(
        "issue with a deleted key",
        chip.issue_certificate(&IssueCertificate {
            ca_key_handle: k.handle.clone(),
            subject: CertificateSubject::Ca {
                common_name: "x".into(),
            },
        }),
        |e| matches!(e, ChipError::UnknownKey { .. }),
    );
    expect_err("wrap a deleted key", chip.wrap_key(&k.handle), |e| {
        matches!(e, ChipError::UnknownKey { .. })
    });
    assert_eq!(chip.info().unwrap().used, 0);

    let mut keys = Vec::new();
    for i in 0..capacity {
        keys.push(testing::enrol(&*chip, &format!("user-{i}")).0);
    }
    assert_eq!(chip.info().unwrap().used, capacity);
    expect_err(
        "generate beyond capacity",
        chip.generate_key(&ca_key_request()),
        |e| matches!(e, ChipError::Full { .. }),
    );
    expect_err(
        "unwrap beyond capacity",
        chip.unwrap_key(&keys[0].wrapped_key, KeyPurpose::User, "user-0"),
        |e| matches!(e, ChipError::Full { .. }),
    );
    // Listing pages through every key in handle order, with owner and purpose.
    let mut listed = Vec::new();
    let mut after = String::new();
    loop {
        let page = chip.list_keys(&after, 4).unwrap();
        let Some(last) = page.last() else { break };
        after = last.handle.clone();
        listed.extend(page);
    }
    assert_eq!(listed.len() as u64, capacity);
    assert!(listed.windows(2).all(|w| w[0].handle < w[1].handle));
    for k in &keys {
        let entry = listed
            .iter()
            .find(|l| l.handle == k.handle)
            .expect("listed");
        assert_eq!(entry.purpose, KeyPurpose::User);
        assert!(entry.user_id.starts_with("user-"));
    }
    assert!(chip.delete_key(&keys[0].handle).unwrap());
    chip.unwrap_key(&keys[0].wrapped_key, KeyPurpose::User, "user-0")
        .expect("room again after a delete");
}

/// A code-signing key signs release manifests (the message built in the chip) and nothing
/// else; no other key signs one; its certificate comes from the CA key; it travels wrapped
/// with its purpose like any key.
pub fn code_signing(make: Make<'_>) {
    use yunkey_crypto::release::{manifest_message, Version};
    let chip = make();
    testing::Operator::new().init_domain(&*chip);
    let ca = ChipCa::create(&*chip, "CA");
    let key = chip
        .generate_key(&GenerateKey {
            algorithm: yunkey_crypto::sig::Algorithm::EcdsaP256,
            distid: String::new(),
            purpose: KeyPurpose::CodeSigning,
            user_id: String::new(),
            activation: None,
        })
        .unwrap();
    let version = Version::parse("version", "2.0.1").unwrap();
    let request = |handle: &str| SignManifest {
        key_handle: handle.into(),
        version,
        file_sha256: [3; 32],
    };
    let signed = chip.sign_manifest(&request(&key.handle)).unwrap();
    PublicKey::from_spki_der(&key.public_key_spki)
        .unwrap()
        .verify_message(&manifest_message(&version, &[3; 32]), &signed.signature_der)
        .expect("the manifest signature verifies");
    expect_err(
        "the CA key signs a manifest",
        chip.sign_manifest(&request(&ca.key.handle)),
        |e| *e == ChipError::NotACodeSigningKey,
    );
    expect_err(
        "the code-signing key issues a certificate",
        chip.issue_certificate(&IssueCertificate {
            ca_key_handle: key.handle.clone(),
            subject: CertificateSubject::Ca {
                common_name: "x".into(),
            },
        }),
        |e| *e == ChipError::NotACaKey,
    );
    let cert = chip
        .issue_certificate(&IssueCertificate {
            ca_key_handle: ca.key.handle.clone(),
            subject: CertificateSubject::CodeSigning {
                wrapped_key: key.wrapped_key.clone(),
            },
        })
        .expect("the CA key certifies the code-signing key");
    let cert = x509_cert::Certificate::from_der(&cert).unwrap();
    assert_eq!(
        der::Encode::to_der(&cert.tbs_certificate.subject_public_key_info).unwrap(),
        key.public_key_spki,
        "the certificate is for the code-signing key"
    );
    expect_err(
        "a code-signing key unwrapped as a CA key",
        chip.unwrap_key(&key.wrapped_key, KeyPurpose::Ca, ""),
        |e| *e == ChipError::WrappedKeyMismatch,
    );
    let copy = chip
        .unwrap_key(&key.wrapped_key, KeyPurpose::CodeSigning, "")
        .expect("a copy of the code-signing key");
    let again = chip.sign_manifest(&request(&copy.handle)).unwrap();
    PublicKey::from_spki_der(&copy.public_key_spki)
        .unwrap()
        .verify_message(&manifest_message(&version, &[3; 32]), &again.signature_der)
        .expect("the copy signs manifests too");
}
