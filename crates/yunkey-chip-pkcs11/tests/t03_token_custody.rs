//! The PKCS#11 custody against SoftHSM2, below the activation module: what it leaves in the
//! token (and with which attributes), sealing, destroying, restarts, threads, and refusals.

mod common;

use common::softhsm;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use std::sync::Arc;
use yunkey_chip::custody::{CustodyKey, KeyRef};
use yunkey_chip::testing::{self, Device, Operator};
use yunkey_chip::wrapped::DomainKeys;
use yunkey_chip::{ChipBackend, ChipError, KeyCustody};
use yunkey_chip_pkcs11::{Pin, Pkcs11Chip, Pkcs11Custody, Pkcs11Options, TokenSelector};
use yunkey_crypto::cipher::Cipher;
use yunkey_crypto::ecdsa::PrivateKey;
use yunkey_crypto::keywrap;
use yunkey_crypto::seal::SealKey;
use yunkey_crypto::sig::Algorithm;

/// A second, independent view of the token, as an auditor with the user PIN would have it.
fn inspect(label: &str) -> Session {
    let ctx = Pkcs11::new(&softhsm().module).unwrap();
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("{e}"),
    }
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == label)
        .unwrap();
    let session = ctx.open_ro_session(slot).unwrap();
    match session.login(UserType::User, Some(&common::PIN.to_owned().into())) {
        Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("{e}"),
    }
    session
}

fn objects(session: &Session, id: &[u8]) -> Vec<ObjectHandle> {
    session.find_objects(&[Attribute::Id(id.to_vec())]).unwrap()
}

fn flag(session: &Session, object: ObjectHandle, which: AttributeType) -> bool {
    match session.get_attributes(object, &[which]).unwrap().as_slice() {
        [Attribute::Sensitive(b)]
        | [Attribute::Extractable(b)]
        | [Attribute::Token(b)]
        | [Attribute::Private(b)]
        | [Attribute::AlwaysSensitive(b)]
        | [Attribute::Sign(b)]
        | [Attribute::Derive(b)] => *b,
        other => panic!("{which:?}: {other:?}"),
    }
}

fn fresh(label_index: &mut Option<String>) -> Pkcs11Options {
    let options = softhsm().fresh_token();
    if let TokenSelector::Label(l) = &options.token {
        *label_index = Some(l.clone());
    }
    options
}

fn kek() -> DomainKeys {
    DomainKeys::derive(&SealKey::generate())
}

#[test]
fn keys_live_in_the_token_sensitive_and_only_wrappable() {
    let mut label = None;
    let custody = Pkcs11Custody::open(fresh(&mut label)).unwrap();
    let label = label.unwrap();
    assert_eq!(custody.describe(), format!("pkcs11:{label}"));
    let key = custody.generate(Algorithm::EcdsaP256).unwrap();
    let id = key.key_ref.as_bytes().to_vec();
    assert_eq!(id.len(), 16);

    let view = inspect(&label);
    let found = objects(&view, &id);
    assert_eq!(
        found.len(),
        2,
        "a private and a public object with the key's CKA_ID"
    );
    let private = view
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(id.clone()),
        ])
        .unwrap()[0];
    for (attribute, want) in [
        (AttributeType::Token, true),
        (AttributeType::Private, true),
        (AttributeType::Sensitive, true),
        (AttributeType::AlwaysSensitive, true),
        (AttributeType::Extractable, true),
        (AttributeType::Sign, true),
        (AttributeType::Derive, false),
    ] {
        assert_eq!(flag(&view, private, attribute), want, "{attribute:?}");
    }
    // Its value is not readable, with the user PIN or otherwise.
    let value = view
        .get_attributes(private, &[AttributeType::Value])
        .unwrap();
    assert!(
        value.is_empty(),
        "CKA_VALUE of the private key is readable: {value:?}"
    );

    // The sealing key: a token object, sensitive, never extractable.
    let master = view
        .find_objects(&[Attribute::Label(b"yunkey-master".to_vec())])
        .unwrap();
    assert_eq!(master.len(), 1);
    assert!(flag(&view, master[0], AttributeType::Token));
    assert!(flag(&view, master[0], AttributeType::Sensitive));
    assert!(!flag(&view, master[0], AttributeType::Extractable));

    // Nothing in Debug output but the token label.
    let debug = format!("{custody:?} {key:?}");
    assert!(!debug.contains(&hex::encode(&id)), "{debug}");

    // Destroy removes both objects; the key no longer exports.
    custody.destroy(&key.key_ref).unwrap();
    assert!(objects(&view, &id).is_empty());
    let keys = kek();
    assert!(custody
        .export_wrapped(&key.key_ref, &key.public_key, keys.kek())
        .is_err());
    custody
        .destroy(&key.key_ref)
        .expect("destroying twice is a no-op");
}

#[test]
fn seal_and_open_bind_the_associated_data() {
    let custody = Pkcs11Custody::open(softhsm().fresh_token()).unwrap();
    let sealed = custody.seal(b"record-1", b"the plaintext").unwrap();
    assert_eq!(sealed[0], 1, "version byte");
    assert_eq!(sealed.len(), 1 + 12 + 13 + 16);
    assert!(!sealed.windows(13).any(|w| w == b"the plaintext"));
    assert_eq!(
        &custody.open(b"record-1", &sealed).unwrap()[..],
        b"the plaintext"
    );
    let storage = |r: Result<_, ChipError>| matches!(r, Err(ChipError::Storage { .. }));
    assert!(storage(custody.open(b"record-2", &sealed)));
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x40;
        assert!(storage(custody.open(b"record-1", &bad)), "byte {i}");
    }
    assert!(storage(custody.open(b"record-1", &sealed[..20])));
    // Two seals of the same record differ (fresh IVs).
    assert_ne!(sealed, custody.seal(b"record-1", b"the plaintext").unwrap());
}

#[test]
fn restart_keeps_the_sealing_key_and_the_chip() {
    let hsm = softhsm();
    let mut label = None;
    let first = Pkcs11Custody::open(fresh(&mut label)).unwrap();
    let label = label.unwrap();
    let sealed = first.seal(b"aad", b"kept").unwrap();
    let key = first.generate(Algorithm::EcdsaP256).unwrap();
    let again = Pkcs11Custody::open(hsm.options(TokenSelector::Label(label.clone()))).unwrap();
    assert_eq!(&again.open(b"aad", &sealed).unwrap()[..], b"kept");
    let keys = kek();
    let w1 = first
        .export_wrapped(&key.key_ref, &key.public_key, keys.kek())
        .unwrap();
    let w2 = again
        .export_wrapped(&key.key_ref, &key.public_key, keys.kek())
        .unwrap();
    // Wraps are deterministic (RFC 5649), and both instances reach the same key object.
    assert_eq!(w1, w2);

    // A whole chip: stop it and open it again on the same directory and token.
    let dir = hsm.chip_dir("restart");
    let token = hsm.fresh_token();
    let TokenSelector::Label(token_label) = token.token.clone() else {
        unreachable!()
    };
    let phone = Device::new("alice");
    let (key, domain) = {
        let chip = Pkcs11Chip::open(&dir, common::config("restart"), token).unwrap();
        let domain = Operator::new().init_domain(&chip);
        let (key, code) = testing::enrol(&chip, "alice");
        chip.bind_device(&phone.bind_request(&key.handle, &code))
            .unwrap();
        (key, domain)
    };
    let chip = Pkcs11Chip::open(
        &dir,
        common::config("restart"),
        hsm.options(TokenSelector::Label(token_label)),
    )
    .unwrap();
    assert_eq!(chip.info().unwrap().domain_id, Some(domain));
    let (tx, hash) = testing::canonical_tx("3", 60);
    let signed = chip
        .sign_authorized(&phone.request(&key.handle, &tx))
        .unwrap();
    yunkey_crypto::ecdsa::PublicKey::from_spki_der(&key.public_key_spki)
        .unwrap()
        .verify_digest(&hash, &signed.signature_der)
        .unwrap();
    // The directory is bound to its token: another token cannot open its records.
    drop(chip);
    let err = Pkcs11Chip::open(&dir, common::config("restart"), hsm.fresh_token()).unwrap_err();
    assert!(matches!(err, ChipError::Storage { .. }), "{err}");
}

#[test]
fn import_refuses_what_does_not_unwrap() {
    let custody = Pkcs11Custody::open(softhsm().fresh_token()).unwrap();
    let keys = kek();
    let soft = PrivateKey::generate();
    let wrap = |pkcs8: &[u8]| keywrap::wrap(Cipher::Aes256, keys.kek().expose(), pkcs8).unwrap();
    let good = wrap(&soft.to_pkcs8_der());
    let unseal = |r: Result<CustodyKey, ChipError>| {
        matches!(r, Err(ChipError::Unseal { .. })) || panic!("{r:?}")
    };
    // Under another domain's key, altered, or not a key at all.
    assert!(unseal(custody.import_wrapped(
        &good,
        Algorithm::EcdsaP256,
        kek().kek()
    )));
    let mut altered = good.clone();
    altered[10] ^= 1;
    assert!(unseal(custody.import_wrapped(
        &altered,
        Algorithm::EcdsaP256,
        keys.kek()
    )));
    let junk = wrap(&[0x30, 0x03, 1, 2, 3]);
    assert!(unseal(custody.import_wrapped(
        &junk,
        Algorithm::EcdsaP256,
        keys.kek()
    )));
    // The good one imports, with the right public key.
    let imported = custody
        .import_wrapped(&good, Algorithm::EcdsaP256, keys.kek())
        .unwrap();
    assert_eq!(imported.public_key, soft.public_key().into());
    // A key reference that is not a token id is refused, not looked up.
    assert!(custody
        .destroy(&KeyRef::new(Algorithm::EcdsaP256, vec![1; 32]))
        .is_err());
    // SM2 keys are refused with a reason, neither generated nor imported.
    for r in [
        custody.generate(Algorithm::Sm2),
        custody.import_wrapped(&good, Algorithm::Sm2, keys.kek()),
    ] {
        match r {
            Err(ChipError::AlgorithmUnsupported { reason, .. }) => {
                assert!(reason.contains("P-256"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn sm4_key_wrapping_is_refused_with_the_reason() {
    let custody = Pkcs11Custody::open(softhsm().fresh_token()).unwrap();
    assert!(custody.wraps_under(Cipher::Aes256));
    assert!(!custody.wraps_under(Cipher::Sm4));
    let sm4 = DomainKeys::derive_with(&SealKey::generate(), Cipher::Sm4);
    let key = custody.generate(Algorithm::EcdsaP256).unwrap();
    let refused = |r: Result<(), ChipError>| match r {
        Err(ChipError::CipherUnsupported {
            custody: c,
            cipher: Cipher::Sm4,
        }) => assert!(c.starts_with("pkcs11:"), "{c}"),
        other => panic!("{other:?}"),
    };
    refused(
        custody
            .export_wrapped(&key.key_ref, &key.public_key, sm4.kek())
            .map(drop),
    );
    let soft = PrivateKey::generate();
    let wrapped = keywrap::wrap(Cipher::Sm4, sm4.kek().expose(), &soft.to_pkcs8_der()).unwrap();
    refused(
        custody
            .import_wrapped(&wrapped, Algorithm::EcdsaP256, sm4.kek())
            .map(drop),
    );
    let text = ChipError::CipherUnsupported {
        custody: custody.describe(),
        cipher: Cipher::Sm4,
    }
    .to_string();
    assert!(
        text.contains("sm4") && text.contains("soft chips"),
        "{text}"
    );
    // The AES-256 key of the same custody still wraps.
    let aes = DomainKeys::derive(&SealKey::generate());
    custody
        .export_wrapped(&key.key_ref, &key.public_key, aes.kek())
        .unwrap();
}

#[test]
fn signs_from_many_threads() {
    let custody = Arc::new(Pkcs11Custody::open(softhsm().fresh_token()).unwrap());
    let chip_dir = softhsm().chip_dir("threads");
    // Through the module, so that each signature is a checked digest.
    let chip = Arc::new(
        yunkey_chip::ActivationModule::open(
            yunkey_store::Db::open_sled(chip_dir.join("store")).unwrap(),
            custody,
            common::config("threads"),
        )
        .unwrap(),
    );
    Operator::new().init_domain(&*chip);
    let (key, code) = testing::enrol(&*chip, "bob");
    let phone = Arc::new(Device::new("bob"));
    chip.bind_device(&phone.bind_request(&key.handle, &code))
        .unwrap();
    let public = yunkey_crypto::ecdsa::PublicKey::from_spki_der(&key.public_key_spki).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (chip, phone, key, public) = (&chip, &phone, &key, &public);
            s.spawn(move || {
                for i in 0..25 {
                    let (tx, hash) = testing::canonical_tx(&(t * 100 + i + 1).to_string(), 60);
                    let signed = chip
                        .sign_authorized(&phone.request(&key.handle, &tx))
                        .unwrap();
                    public.verify_digest(&hash, &signed.signature_der).unwrap();
                }
            });
        }
    });
}

#[test]
fn open_fails_clearly() {
    let hsm = softhsm();
    let mut options = hsm.fresh_token();
    options.pin = Pin::new("wrong");
    let err = Pkcs11Custody::open(options).unwrap_err().to_string();
    assert!(err.contains("PIN is incorrect"), "{err}");
    assert!(!err.contains("wrong"), "the PIN is not in the error: {err}");
    let err = Pkcs11Custody::open(hsm.options(TokenSelector::Label("no-such-token".into())))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no token label \"no-such-token\""), "{err}");
    assert!(
        err.contains("yk-test-"),
        "lists the tokens there are: {err}"
    );
    let err = Pkcs11Custody::open(Pkcs11Options::new(
        "/nonexistent/libpkcs11.so",
        TokenSelector::Slot(0),
        Pin::new(common::PIN),
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("loading the PKCS#11 module"), "{err}");
}

#[test]
fn a_lost_login_is_restored_and_the_call_retried() {
    let mut label = None;
    let custody = Arc::new(Pkcs11Custody::open(fresh(&mut label)).unwrap());
    let dir = softhsm().chip_dir("relogin");
    let chip = yunkey_chip::ActivationModule::open(
        yunkey_store::Db::open_sled(dir.join("store")).unwrap(),
        custody.clone(),
        common::config("relogin"),
    )
    .unwrap();
    Operator::new().init_domain(&chip);
    let (key, code) = testing::enrol(&chip, "carol");
    let phone = Device::new("carol");
    chip.bind_device(&phone.bind_request(&key.handle, &code))
        .unwrap();
    let wrapped = chip.wrap_key(&key.handle).unwrap();
    let public = yunkey_crypto::ecdsa::PublicKey::from_spki_der(&key.public_key_spki).unwrap();

    // Someone logs the process out of the token (as a token reset would): every session of
    // the process loses the login, and the domain key's session object with the anchor.
    for round in 0..2 {
        inspect(label.as_deref().unwrap()).logout().unwrap();
        let (tx, hash) = testing::canonical_tx(&(round + 1).to_string(), 60);
        let signed = chip
            .sign_authorized(&phone.request(&key.handle, &tx))
            .expect("signs after logging in again");
        public.verify_digest(&hash, &signed.signature_der).unwrap();
        assert_eq!(chip.wrap_key(&key.handle).unwrap(), wrapped);
    }
    // A key this instance has not looked up yet: logged out, the token hides it, so the
    // lookup fails; the custody logs in again and finds it.
    let fresh_key = custody.generate(Algorithm::EcdsaP256).unwrap();
    let other =
        Pkcs11Custody::open(softhsm().options(TokenSelector::Label(label.unwrap()))).unwrap();
    let keys = kek();
    let expected = custody
        .export_wrapped(&fresh_key.key_ref, &fresh_key.public_key, keys.kek())
        .unwrap();
    inspect(&other.describe()["pkcs11:".len()..])
        .logout()
        .unwrap();
    assert_eq!(
        other
            .export_wrapped(&fresh_key.key_ref, &fresh_key.public_key, keys.kek())
            .unwrap(),
        expected
    );
}
