//! P-256 glue between PKCS#11 encodings and yunkey's: `CKA_EC_PARAMS`, `CKA_EC_POINT`, raw
//! `r || s` signatures, and recovering the public key of an unwrapped private key.

use ecdsa::RecoveryId;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::EncodePublicKey;
use yunkey_crypto::ecdsa::PublicKey;

/// `CKA_EC_PARAMS` of P-256: the DER OID 1.2.840.10045.3.1.7 (prime256v1).
pub(crate) const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn from_verifying_key(key: &VerifyingKey) -> Option<PublicKey> {
    let der = key.to_public_key_der().ok()?;
    PublicKey::from_spki_der(der.as_bytes()).ok()
}

/// The public key in a `CKA_EC_POINT`: a DER OCTET STRING around the uncompressed point (what
/// PKCS#11 specifies), or the bare point (what some tokens return).
pub(crate) fn public_key_from_ec_point(ec_point: &[u8]) -> Option<PublicKey> {
    let point = match ec_point {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
        bare => bare,
    };
    from_verifying_key(&VerifyingKey::from_sec1_bytes(point).ok()?)
}

/// `CKA_EC_POINT` for `key`: the DER OCTET STRING around its uncompressed point.
pub(crate) fn ec_point(key: &PublicKey) -> Vec<u8> {
    let sec1 = key.to_sec1();
    let mut out = vec![0x04, sec1.len() as u8];
    out.extend_from_slice(&sec1);
    out
}

/// A token's raw `r || s` `CKM_ECDSA` signature as DER, with S normalised to the low half.
pub(crate) fn der_low_s(raw: &[u8]) -> Option<Vec<u8>> {
    let sig = Signature::from_slice(raw).ok()?;
    let sig = sig.normalize_s().unwrap_or(sig);
    Some(sig.to_der().as_bytes().to_vec())
}

/// The public key that made two raw signatures over two different digests: the candidates
/// recovered from the first that verify the second. `None` unless exactly one does.
pub(crate) fn recover_public_key(
    first: (&[u8; 32], &[u8]),
    second: (&[u8; 32], &[u8]),
) -> Option<PublicKey> {
    let sig1 = Signature::from_slice(first.1).ok()?;
    let sig2 = Signature::from_slice(second.1).ok()?;
    let mut found: Vec<VerifyingKey> = Vec::new();
    for id in 0..=3u8 {
        let Some(id) = RecoveryId::from_byte(id) else {
            continue;
        };
        let Ok(key) = VerifyingKey::recover_from_prehash(first.0, &sig1, id) else {
            continue;
        };
        if key.verify_prehash(second.0, &sig2).is_ok() && !found.contains(&key) {
            found.push(key);
        }
    }
    match found.as_slice() {
        [key] => from_verifying_key(key),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    use p256::ecdsa::SigningKey;

    fn raw_sign(key: &SigningKey, digest: &[u8; 32]) -> Vec<u8> {
        let sig: Signature = key.sign_prehash(digest).unwrap();
        sig.to_bytes().to_vec()
    }

    #[test]
    fn recovers_the_signing_key_and_only_it() {
        for _ in 0..8 {
            let key = SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
            let d1 = yunkey_crypto::random_bytes::<32>();
            let d2 = yunkey_crypto::random_bytes::<32>();
            let (s1, s2) = (raw_sign(&key, &d1), raw_sign(&key, &d2));
            let public = recover_public_key((&d1, &s1), (&d2, &s2)).unwrap();
            assert_eq!(
                Some(public.clone()),
                from_verifying_key(key.verifying_key())
            );
            // Another key's second signature matches no candidate.
            let other = SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
            assert!(recover_public_key((&d1, &s1), (&d2, &raw_sign(&other, &d2))).is_none());
            // The CKA_EC_POINT round trip, wrapped and bare.
            let point = ec_point(&public);
            assert_eq!(public_key_from_ec_point(&point), Some(public.clone()));
            assert_eq!(public_key_from_ec_point(&point[2..]), Some(public));
        }
    }

    #[test]
    fn high_s_is_normalised() {
        let key = SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let digest = yunkey_crypto::random_bytes::<32>();
        let sig: Signature = key.sign_prehash(&digest).unwrap();
        let low = sig.normalize_s().unwrap_or(sig);
        // Make the high-S twin: (r, n - s).
        let (r, s) = low.split_scalars();
        let high = Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).unwrap();
        assert!(high.normalize_s().is_some(), "the twin is high-S");
        let der = der_low_s(&high.to_bytes()).unwrap();
        assert_eq!(der, low.to_der().as_bytes());
        let public = from_verifying_key(key.verifying_key()).unwrap();
        public.verify_digest(&digest, &der).unwrap();
        assert!(der_low_s(&[0u8; 10]).is_none());
    }
}
