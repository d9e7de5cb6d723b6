//! Key wrapping for the security domain's wrapped keys: AES-256 key wrap with padding
//! (RFC 5649, `CKM_AES_KEY_WRAP_PAD` in PKCS#11) of a PKCS#8 private key, and HMAC-SHA256 to
//! authenticate what travels beside it. Both are what a PKCS#11 token can do itself
//! (`C_WrapKey`/`C_UnwrapKey` and `CKM_SHA256_HMAC`), so soft chips and tokens share one
//! wrapped-key format.

use crate::CryptoError;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Wraps `plaintext` (a PKCS#8 DER private key) under `kek` with AES-256-KWP (RFC 5649).
pub fn wrap_kwp(kek: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    aes_kw::KekAes256::from(*kek)
        .wrap_with_padding_vec(plaintext)
        .expect("RFC 5649 wraps any non-empty input shorter than 2^32 bytes")
}

/// Unwraps what [`wrap_kwp`] produced; fails if the key is wrong or the data was altered.
pub fn unwrap_kwp(kek: &[u8; 32], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    aes_kw::KekAes256::from(*kek)
        .unwrap_with_padding_vec(wrapped)
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Unseal)
}

/// HMAC-SHA256 of the concatenation of `parts` under `key`.
pub fn hmac_sha256(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Checks an HMAC-SHA256 tag in constant time.
pub fn verify_hmac_sha256(key: &[u8; 32], parts: &[&[u8]], tag: &[u8]) -> Result<(), CryptoError> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.verify_slice(tag).map_err(|_| CryptoError::Unseal)
}

/// HKDF-SHA256 of `secret` to a 32-byte key for `info`.
pub fn derive_key(secret: &[u8], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<Sha256>::new(None, secret)
        .expand(info, &mut out[..])
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5649_vector() {
        // RFC 5649 section 6, second example (KEK truncated to AES-192 there); checked here with
        // an AES-256 round trip and a tamper check instead, plus the RFC 3394 AES-256 vector
        // for the unpadded core (RFC 3394 4.6: 256-bit data with a 256-bit KEK).
        let kek: [u8; 32] =
            hex::decode("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")
                .unwrap()
                .try_into()
                .unwrap();
        let data = hex::decode("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
            .unwrap();
        let wrapped = aes_kw::KekAes256::from(kek).wrap_vec(&data).unwrap();
        assert_eq!(
            hex::encode_upper(&wrapped),
            "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21"
        );
        let w = wrap_kwp(&kek, b"a PKCS#8 document of odd length");
        assert_eq!(
            &unwrap_kwp(&kek, &w).unwrap()[..],
            b"a PKCS#8 document of odd length"
        );
        let mut bad = w.clone();
        bad[3] ^= 1;
        assert_eq!(unwrap_kwp(&kek, &bad).unwrap_err(), CryptoError::Unseal);
        assert!(unwrap_kwp(&[9u8; 32], &w).is_err());
    }

    #[test]
    fn hmac_rfc4231_case_2() {
        // RFC 4231 test case 2 uses a 4-byte key; HMAC pads keys, so the same tag results
        // from the key zero-padded to 32 bytes.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let tag = hmac_sha256(&key, &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        verify_hmac_sha256(&key, &[b"what do ya want for nothing?"], &tag).unwrap();
        assert!(verify_hmac_sha256(&key, &[b"what do ya want for nothing!"], &tag).is_err());
    }
}
