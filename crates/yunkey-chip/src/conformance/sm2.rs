//! The SM2 part of the conformance suite, for chips whose custody holds SM2 keys: SM2 user
//! keys with their distinguishing ID, signed over `SM3(Z_A || transaction)`; SM2 and P-256
//! devices on either kind of user key; the SM2 user CA beside the P-256 one; SM2 keys copied
//! between chips of the domain.

use super::{expect_err, Make};
use crate::testing::{self, ChipCa, Device, Operator};
use crate::{CertificateSubject, ChipError, IssueCertificate, KeyPurpose};
use der::{Decode, Encode};
use yunkey_crypto::authz::AuthorizationFormat;
use yunkey_crypto::sig::{Algorithm, VerifyingKey};

/// Runs the SM2 checks against chips made by `make`.
pub fn run(make: Make<'_>) {
    sign_with_sm2_keys_and_devices(make);
    sm2_certificates(make);
    sm2_keys_travel(make);
}

/// An SM2 user key signs `SM3(Z_A || transaction)` under its own ID, for an SM2 or a P-256
/// device bound to it; the device's format must match its key.
pub fn sign_with_sm2_keys_and_devices(make: Make<'_>) {
    let chip = make();
    Operator::new().init_domain(&*chip);
    let distid = "alice@bank.example";
    let (key, code) = testing::enrol_with(&*chip, "alice", Algorithm::Sm2, distid);
    assert_eq!(key.algorithm, Algorithm::Sm2);
    assert_eq!(key.distid, distid);
    let public = VerifyingKey::from_spki_der_as(Algorithm::Sm2, &key.public_key_spki, distid)
        .expect("an SM2 SubjectPublicKeyInfo");
    let sm2_phone = Device::new_with("alice", Algorithm::Sm2);
    chip.bind_device(&sm2_phone.bind_request(&key.handle, &code))
        .expect("an SM2 device binds with its proof");
    let (tx, tx_hash) = testing::canonical_tx("12.5", 60);
    let signed = chip
        .sign_authorized(&sm2_phone.request(&key.handle, &tx))
        .expect("an SM2 device's authorization signs");
    assert_eq!(
        signed.digest,
        public.digest(&tx),
        "the chip signs e = SM3(Z_A || M)"
    );
    assert_ne!(signed.digest, tx_hash);
    public
        .verify_message(&tx, &signed.signature_der)
        .expect("the signature verifies under the user's ID");
    let default_id = VerifyingKey::from_spki_der(&key.public_key_spki).unwrap();
    assert!(
        default_id
            .verify_message(&tx, &signed.signature_der)
            .is_err(),
        "and not under the default ID"
    );
    // The same authorization again gets the same signature (the replay guard's answer).
    let again = chip
        .sign_authorized(&sm2_phone.request(&key.handle, &tx))
        .unwrap();
    assert_eq!(again, signed);

    // The device's format must name its key's algorithm.
    let (tx2, _) = testing::canonical_tx("3", 60);
    let mut wrong = sm2_phone.request(&key.handle, &tx2);
    wrong.authorization_format = AuthorizationFormat::EcdsaP256Sha256;
    expect_err(
        "an SM2 authorization sent as ECDSA P-256",
        chip.sign_authorized(&wrong),
        |e| matches!(e, ChipError::Invalid(f) if f.field == "authorization.format"),
    );

    // A P-256 device on an SM2 user key, and an SM2 device on a P-256 user key.
    let (p256_key, p256_code) = testing::enrol(&*chip, "bob");
    let bob_sm2 = Device::new_with("bob", Algorithm::Sm2);
    chip.bind_device(&bob_sm2.bind_request(&p256_key.handle, &p256_code))
        .unwrap();
    let signed = chip
        .sign_authorized(&bob_sm2.request(&p256_key.handle, &tx2))
        .expect("an SM2 device authorizes a P-256 user key");
    yunkey_crypto::ecdsa::PublicKey::from_spki_der(&p256_key.public_key_spki)
        .unwrap()
        .verify_message(&tx2, &signed.signature_der)
        .expect("the P-256 key's signature");
    let (carol, carol_code) = testing::enrol_with(&*chip, "carol", Algorithm::Sm2, "");
    assert_eq!(carol.distid, yunkey_crypto::sm2::DEFAULT_DISTID);
    let carol_phone = Device::new_with("carol", Algorithm::EcdsaP256);
    chip.bind_device(&carol_phone.bind_request(&carol.handle, &carol_code))
        .unwrap();
    let (tx3, _) = testing::canonical_tx("4", 60);
    let signed = chip
        .sign_authorized(&carol_phone.request(&carol.handle, &tx3))
        .unwrap();
    VerifyingKey::from_spki_der(&carol.public_key_spki)
        .unwrap()
        .verify_message(&tx3, &signed.signature_der)
        .expect("the default ID's signature");

    // Bad IDs, and IDs where none belongs.
    for (algorithm, purpose, distid) in [
        (Algorithm::Sm2, KeyPurpose::User, "has space"),
        (Algorithm::Sm2, KeyPurpose::User, &"x".repeat(65)[..]),
        (Algorithm::EcdsaP256, KeyPurpose::User, "alice"),
        (Algorithm::Sm2, KeyPurpose::Ca, "alice"),
    ] {
        expect_err(
            "a bad distinguishing ID",
            chip.generate_key(&crate::GenerateKey {
                algorithm,
                distid: distid.into(),
                purpose,
                user_id: if purpose == KeyPurpose::User {
                    "dave".into()
                } else {
                    String::new()
                },
                activation: None,
            }),
            |e| matches!(e, ChipError::Invalid(f) if f.field == "distinguishing_id"),
        );
    }
    expect_err(
        "an SM2 code-signing key",
        chip.generate_key(&crate::GenerateKey {
            algorithm: Algorithm::Sm2,
            distid: String::new(),
            purpose: KeyPurpose::CodeSigning,
            user_id: String::new(),
            activation: None,
        }),
        |e| matches!(e, ChipError::AlgorithmUnsupported { .. }),
    );
}

/// The SM2 user CA: a self-signed SM2-with-SM3 certificate as the SM2 anchor beside the P-256
/// one; each CA certifies only its algorithm's user keys; device certificates of either
/// device algorithm come from the user's CA.
pub fn sm2_certificates(make: Make<'_>) {
    let chip = make();
    Operator::new().init_domain(&*chip);
    let p256_ca = ChipCa::create(&*chip, "user CA");
    let sm2_ca = ChipCa::create_with(&*chip, "SM2 user CA", Algorithm::Sm2);
    let info = chip.info().unwrap();
    assert_eq!(info.trust_anchor.as_deref(), Some(&p256_ca.cert_der[..]));
    assert_eq!(info.sm2_trust_anchor.as_deref(), Some(&sm2_ca.cert_der[..]));
    expect_err(
        "another SM2 anchor (write-once)",
        chip.set_trust_anchor(
            &ChipCa::create_with(&*make_domain_chip(make), "x", Algorithm::Sm2).cert_der,
        ),
        |e| *e == ChipError::TrustAnchorAlreadySet,
    );

    let (key, code) = testing::enrol_with(&*chip, "alice", Algorithm::Sm2, "alice@bank.example");
    let phone = Device::new_with("alice", Algorithm::Sm2);
    let bound = chip
        .bind_device(&phone.bind_request(&key.handle, &code))
        .unwrap();
    let issue = |ca: &str, subject: CertificateSubject| {
        chip.issue_certificate(&IssueCertificate {
            ca_key_handle: ca.into(),
            subject,
        })
    };
    let user = || CertificateSubject::User {
        wrapped_user_key: bound.wrapped_key.clone(),
        display_name: "Alice".into(),
    };
    let sm2_ca_key = VerifyingKey::from_spki_der(&sm2_ca.key.public_key_spki).unwrap();
    let check = |der: &[u8], subject_spki: &[u8]| {
        let cert = x509_cert::Certificate::from_der(der).expect("a DER certificate");
        assert_eq!(
            cert.signature_algorithm.oid.to_string(),
            "1.2.156.10197.1.501",
            "SM2-with-SM3"
        );
        let tbs = cert.tbs_certificate.to_der().unwrap();
        sm2_ca_key
            .verify_message(&tbs, cert.signature.raw_bytes())
            .expect("signed by the SM2 CA key under the default ID");
        assert_eq!(
            cert.tbs_certificate
                .subject_public_key_info
                .to_der()
                .unwrap(),
            subject_spki
        );
    };
    check(&sm2_ca.cert_der, &sm2_ca.key.public_key_spki);
    check(
        &issue(&sm2_ca.key.handle, user()).unwrap(),
        &key.public_key_spki,
    );
    check(
        &issue(
            &sm2_ca.key.handle,
            CertificateSubject::Device {
                wrapped_user_key: bound.wrapped_key.clone(),
                device_id: phone.device_id.clone(),
                validity_secs: None,
            },
        )
        .unwrap(),
        &phone.key.public_key().to_spki_der(),
    );
    expect_err(
        "the P-256 CA certifying an SM2 user key",
        issue(&p256_ca.key.handle, user()),
        |e| matches!(e, ChipError::CaAlgorithmMismatch { .. }),
    );
    let (p256_user, _) = testing::enrol(&*chip, "bob");
    expect_err(
        "the SM2 CA certifying a P-256 user key",
        issue(
            &sm2_ca.key.handle,
            CertificateSubject::User {
                wrapped_user_key: p256_user.wrapped_key,
                display_name: String::new(),
            },
        ),
        |e| matches!(e, ChipError::CaAlgorithmMismatch { .. }),
    );
}

fn make_domain_chip(make: Make<'_>) -> Box<dyn crate::ChipBackend> {
    let chip = make();
    Operator::new().init_domain(&*chip);
    chip
}

/// An SM2 key wraps with its ID and imports on another chip of the domain, which signs the
/// same way; the wrapped key's metadata cannot be relabelled as P-256.
pub fn sm2_keys_travel(make: Make<'_>) {
    let a = make();
    let b = make();
    let operator = Operator::new();
    operator.init_domain(&*a);
    operator.join(&*a, &*b);
    let distid = "alice@bank.example";
    let (key, code) = testing::enrol_with(&*a, "alice", Algorithm::Sm2, distid);
    let phone = Device::new_with("alice", Algorithm::Sm2);
    let bound = a
        .bind_device(&phone.bind_request(&key.handle, &code))
        .unwrap();
    let copy = b
        .unwrap_key(&bound.wrapped_key, KeyPurpose::User, "alice")
        .expect("the SM2 key imports on a chip of the domain");
    assert_eq!(copy.algorithm, Algorithm::Sm2);
    assert_eq!(copy.distid, distid);
    assert_eq!(copy.public_key_spki, key.public_key_spki);
    let (tx, _) = testing::canonical_tx("9", 60);
    let signed = b
        .sign_authorized(&phone.request(&copy.handle, &tx))
        .unwrap();
    VerifyingKey::from_spki_der_as(Algorithm::Sm2, &key.public_key_spki, distid)
        .unwrap()
        .verify_message(&tx, &signed.signature_der)
        .expect("the copy signs under the same ID");
    // The algorithm byte and the ID are under the domain's tag.
    for at in [1usize, 40] {
        let mut forged = bound.wrapped_key.clone();
        forged[at] ^= 0x03;
        assert!(
            b.unwrap_key(&forged, KeyPurpose::User, "alice").is_err(),
            "an altered wrapped SM2 key (byte {at}) does not import"
        );
    }
}
