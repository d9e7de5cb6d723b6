//! The domain's cipher, for every custody: a chip creates and joins an SM4 domain and moves its
//! keys under SM4, or, if its custody cannot wrap under SM4 (a PKCS#11 token), refuses with
//! [`ChipError::CipherUnsupported`] and stays outside any domain. Either way a domain keeps its
//! cipher, and its wrapped keys open only in that domain.

use super::{expect_err, Make};
use crate::testing::{self, Device, Operator};
use crate::{ChipError, KeyPurpose};
use yunkey_crypto::cipher::Cipher;
use yunkey_crypto::ecdsa::PublicKey;

/// An SM4 domain: served end to end, or refused cleanly.
pub fn domain_cipher(make: Make<'_>) {
    let a = make();
    let operator = Operator::new();
    let id = match operator.init_domain_with(&*a, Cipher::Sm4) {
        Ok(id) => id,
        Err(ChipError::CipherUnsupported {
            cipher: Cipher::Sm4,
            ..
        }) => {
            let info = a.info().unwrap();
            assert!(
                info.domain_id.is_none() && info.domain_cipher.is_none(),
                "a refused SM4 domain leaves the chip outside any domain"
            );
            operator.init_domain(&*a);
            assert_eq!(a.info().unwrap().domain_cipher, Some(Cipher::Aes256));
            return;
        }
        Err(e) => panic!("init_domain with SM4: unexpected error {e}"),
    };
    assert_eq!(a.info().unwrap().domain_cipher, Some(Cipher::Sm4));

    // The cipher travels with the domain to an admitted chip.
    let b = make();
    let export = a.export_domain(&operator.admit(&*b)).unwrap();
    assert_eq!(
        (export.domain_id.as_str(), export.cipher),
        (id.as_str(), Cipher::Sm4)
    );
    assert_eq!(b.import_domain(&export.envelope).unwrap(), id);
    let b_info = b.info().unwrap();
    assert_eq!(b_info.domain_id.as_deref(), Some(id.as_str()));
    assert_eq!(b_info.domain_cipher, Some(Cipher::Sm4));

    // A key generated on A, wrapped under SM4, works on B.
    let (key_a, code) = testing::enrol(&*a, "alice");
    let key_b = b
        .unwrap_key(&key_a.wrapped_key, KeyPurpose::User, "alice")
        .unwrap();
    assert_eq!(key_b.public_key_spki, key_a.public_key_spki);
    let phone = Device::new("alice");
    let bound = b
        .bind_device(&phone.bind_request(&key_b.handle, &code))
        .unwrap();
    a.update_binding(&key_a.handle, &bound.wrapped_key).unwrap();
    let public = PublicKey::from_spki_der(&key_a.public_key_spki).unwrap();
    for (chip, handle) in [(&a, &key_a.handle), (&b, &key_b.handle)] {
        let (tx, hash) = testing::canonical_tx("12", 60);
        let s = chip.sign_authorized(&phone.request(handle, &tx)).unwrap();
        public.verify_digest(&hash, &s.signature_der).unwrap();
    }

    // An AES-256 domain cannot open the SM4 domain's keys, nor the other way round.
    let c = make();
    Operator::new().init_domain(&*c);
    expect_err(
        "an SM4 domain's key in an AES-256 domain",
        c.unwrap_key(&bound.wrapped_key, KeyPurpose::User, "alice"),
        |e| matches!(e, ChipError::Unseal { .. }),
    );
    let (key_c, _) = testing::enrol(&*c, "carol");
    expect_err(
        "an AES-256 domain's key in an SM4 domain",
        a.unwrap_key(&key_c.wrapped_key, KeyPurpose::User, "carol"),
        |e| matches!(e, ChipError::Unseal { .. }),
    );

    // The cipher is fixed: neither a new domain nor an AES-256 one replaces it.
    expect_err(
        "init_domain again with AES-256",
        operator.init_domain_with(&*a, Cipher::Aes256),
        |e| matches!(e, ChipError::AlreadyInDomain { .. }),
    );
    let d = make();
    let aes_operator = Operator::new();
    aes_operator.init_domain(&*d);
    let envelope = d.export_domain(&aes_operator.admit(&*a)).unwrap().envelope;
    expect_err(
        "import of an AES-256 domain into an SM4 chip",
        a.import_domain(&envelope),
        |e| matches!(e, ChipError::AlreadyInDomain { .. }),
    );
    assert_eq!(a.info().unwrap().domain_cipher, Some(Cipher::Sm4));
}
