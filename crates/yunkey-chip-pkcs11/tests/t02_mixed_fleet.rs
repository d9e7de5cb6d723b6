//! A soft chip and a PKCS#11 chip in one security domain: a key generated on either moves to
//! the other through the shared wrapped format, and both sign for the same bound device.

mod common;

use yunkey_chip::testing::{self, Device, Operator};
use yunkey_chip::{ActivationModule, ChipBackend, ChipError, KeyPurpose, SoftChip};
use yunkey_crypto::cipher::Cipher;
use yunkey_crypto::ecdsa::PublicKey;

fn sign_and_verify(chip: &ActivationModule, device: &Device, handle: &str, spki: &[u8]) {
    let (tx, hash) = testing::canonical_tx("12.5", 60);
    let signed = chip
        .sign_authorized(&device.request(handle, &tx))
        .unwrap_or_else(|e| panic!("{} signs: {e}", chip.chip_id()));
    PublicKey::from_spki_der(spki)
        .unwrap()
        .verify_digest(&hash, &signed.signature_der)
        .unwrap_or_else(|e| panic!("{}'s signature verifies: {e}", chip.chip_id()));
}

#[test]
fn soft_and_pkcs11_chips_share_keys_both_ways() {
    let hsm = common::softhsm();
    let soft_dir = tempfile::tempdir().unwrap();
    let soft = SoftChip::open(soft_dir.path(), common::config("soft-1")).unwrap();
    let token = common::fresh_chip("mixed-token-1");
    let operator = Operator::new();
    let domain = operator.init_domain(&soft);
    assert_eq!(operator.join(&soft, &token), domain);
    assert!(token.info().unwrap().custody.starts_with("pkcs11:"));
    let _ = hsm;

    for (from, to) in [(&soft, &token), (&token, &soft)] {
        let user = format!("user-of-{}", from.chip_id());
        let (key, code) = testing::enrol(from, &user);
        let phone = Device::new(&user);
        from.bind_device(&phone.bind_request(&key.handle, &code))
            .unwrap();
        // The replica carries the binding made on the first chip.
        let wrapped = from.wrap_key(&key.handle).unwrap();
        let copy = to
            .unwrap_key(&wrapped, KeyPurpose::User, &user)
            .unwrap_or_else(|e| panic!("{} imports {}'s key: {e}", to.chip_id(), from.chip_id()));
        assert_eq!(copy.public_key_spki, key.public_key_spki);
        sign_and_verify(from, &phone, &key.handle, &key.public_key_spki);
        sign_and_verify(to, &phone, &copy.handle, &key.public_key_spki);
        // And back again: the copy's wrap imports on the first chip too.
        let back = from
            .unwrap_key(&to.wrap_key(&copy.handle).unwrap(), KeyPurpose::User, &user)
            .unwrap();
        sign_and_verify(from, &phone, &back.handle, &key.public_key_spki);
        // A stranger's device is refused on both.
        let stranger = Device::new(&user);
        let (tx, _) = testing::canonical_tx("1", 60);
        assert!(to
            .sign_authorized(&stranger.request(&copy.handle, &tx))
            .is_err());
    }
}

#[test]
fn a_pkcs11_chip_neither_creates_nor_joins_an_sm4_domain() {
    let soft_dir = tempfile::tempdir().unwrap();
    let soft = SoftChip::open(soft_dir.path(), common::config("soft-sm4")).unwrap();
    let token = common::fresh_chip("sm4-token-1");
    let operator = Operator::new();
    let unsupported = |r: Result<String, ChipError>| {
        matches!(
            r,
            Err(ChipError::CipherUnsupported {
                cipher: Cipher::Sm4,
                ..
            })
        ) || panic!("{r:?}")
    };
    assert!(unsupported(operator.init_domain_with(&token, Cipher::Sm4)));
    operator.init_domain_with(&soft, Cipher::Sm4).unwrap();
    let envelope = soft
        .export_domain(&operator.admit(&token))
        .unwrap()
        .envelope;
    assert!(unsupported(token.import_domain(&envelope)));
    let info = token.info().unwrap();
    assert_eq!((info.domain_id, info.domain_cipher), (None, None));
    // It still joins an AES-256 domain.
    let aes_dir = tempfile::tempdir().unwrap();
    let aes = SoftChip::open(aes_dir.path(), common::config("soft-aes")).unwrap();
    let domain = operator.init_domain(&aes);
    assert_eq!(operator.join(&aes, &token), domain);
    assert_eq!(token.info().unwrap().domain_cipher, Some(Cipher::Aes256));
}
