//! Key wrapping for the security domain's wrapped keys: key wrap with padding (RFC 5649) of a
//! PKCS#8 private key, and an HMAC to authenticate what travels beside it, with the domain's
//! [`Cipher`]:
//! - AES-256: AES-256-KWP (`CKM_AES_KEY_WRAP_PAD` in PKCS#11) and HMAC-SHA256, what a PKCS#11
//!   token can do itself (`C_WrapKey`/`C_UnwrapKey`, `CKM_SHA256_HMAC`), so soft chips and
//!   tokens share one wrapped-key format.
//! - SM4: SM4-KWP and HMAC-SM3. SM4-KWP is the same RFC 5649 construction (NIST SP 800-38F
//!   defines KW/KWP over any 128-bit block cipher) with SM4 as the block cipher, chosen over
//!   SM4-GCM so that both suites share one wrapped-key format and one custody interface: a
//!   deterministic wrap with its own integrity check and no nonce to manage, the metadata
//!   authenticated by the HMAC beside it. No PKCS#11 token yunkey supports offers it
//!   (SoftHSM2 has no SM4), so an SM4 domain's keys are wrapped in software.
//!
//! Keys are derived from the domain secret with HKDF over the suite's hash ([`derive`]).

use crate::cipher::Cipher;
use crate::CryptoError;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sm3::Sm3;
use zeroize::Zeroizing;

/// Wraps `plaintext` (a PKCS#8 DER private key) under `kek` with AES-256-KWP (RFC 5649).
pub fn wrap_kwp(kek: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    wrap(Cipher::Aes256, kek, plaintext)
        .expect("RFC 5649 wraps any non-empty input shorter than 2^32 bytes")
}

/// Unwraps what [`wrap_kwp`] produced; fails if the key is wrong or the data was altered.
pub fn unwrap_kwp(kek: &[u8; 32], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    unwrap(Cipher::Aes256, kek, wrapped)
}

fn bad_kek() -> CryptoError {
    CryptoError::Malformed("a key-encryption key is 32 bytes for AES-256, 16 for SM4")
}

/// Wraps `plaintext` under `kek` ([`Cipher::key_len`] bytes) with `cipher`'s KWP (RFC 5649).
/// Fails only for a key of the wrong length (or an input of 4 GiB or more).
pub fn wrap(cipher: Cipher, kek: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let wrapped = match cipher {
        Cipher::Aes256 => aes_kw::KekAes256::try_from(kek)
            .map_err(|_| bad_kek())?
            .wrap_with_padding_vec(plaintext),
        Cipher::Sm4 => aes_kw::Kek::<sm4::Sm4>::try_from(kek)
            .map_err(|_| bad_kek())?
            .wrap_with_padding_vec(plaintext),
    };
    wrapped.map_err(|_| CryptoError::Malformed("key wrap input must be shorter than 2^32 bytes"))
}

/// Unwraps what [`wrap`] produced with the same cipher; fails if the key is wrong or the data
/// was altered.
pub fn unwrap(
    cipher: Cipher,
    kek: &[u8],
    wrapped: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let plain = match cipher {
        Cipher::Aes256 => aes_kw::KekAes256::try_from(kek)
            .map_err(|_| bad_kek())?
            .unwrap_with_padding_vec(wrapped),
        Cipher::Sm4 => aes_kw::Kek::<sm4::Sm4>::try_from(kek)
            .map_err(|_| bad_kek())?
            .unwrap_with_padding_vec(wrapped),
    };
    plain.map(Zeroizing::new).map_err(|_| CryptoError::Unseal)
}

fn keyed<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> M {
    let mut mac = <M as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac
}

/// HMAC-SHA256 of the concatenation of `parts` under `key`.
pub fn hmac_sha256(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    hmac(Cipher::Aes256, key, parts)
}

/// Checks an HMAC-SHA256 tag in constant time.
pub fn verify_hmac_sha256(key: &[u8; 32], parts: &[&[u8]], tag: &[u8]) -> Result<(), CryptoError> {
    verify_hmac(Cipher::Aes256, key, parts, tag)
}

/// The suite's HMAC (HMAC-SHA256 or HMAC-SM3, both 32 bytes) of the concatenation of `parts`.
pub fn hmac(cipher: Cipher, key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    match cipher {
        Cipher::Aes256 => keyed::<Hmac<Sha256>>(key, parts)
            .finalize()
            .into_bytes()
            .into(),
        Cipher::Sm4 => keyed::<Hmac<Sm3>>(key, parts)
            .finalize()
            .into_bytes()
            .into(),
    }
}

/// Checks a tag made by [`hmac`] with the same suite, in constant time.
pub fn verify_hmac(
    cipher: Cipher,
    key: &[u8],
    parts: &[&[u8]],
    tag: &[u8],
) -> Result<(), CryptoError> {
    let checked = match cipher {
        Cipher::Aes256 => keyed::<Hmac<Sha256>>(key, parts).verify_slice(tag),
        Cipher::Sm4 => keyed::<Hmac<Sm3>>(key, parts).verify_slice(tag),
    };
    checked.map_err(|_| CryptoError::Unseal)
}

/// HKDF-SHA256 of `secret` to a 32-byte key for `info`.
pub fn derive_key(secret: &[u8], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&derive(Cipher::Aes256, secret, info, 32));
    out
}

/// The suite's HKDF (HKDF-SHA256 or HKDF-SM3, no salt) of `secret` to `len` bytes for `info`.
///
/// # Panics
/// If `len` is more than 255 × 32 bytes (HKDF's limit); callers ask for 16 or 32.
pub fn derive(cipher: Cipher, secret: &[u8], info: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(vec![0u8; len]);
    let expanded = match cipher {
        Cipher::Aes256 => hkdf::Hkdf::<Sha256>::new(None, secret).expand(info, &mut out),
        Cipher::Sm4 => hkdf::Hkdf::<Sm3>::new(None, secret).expand(info, &mut out),
    };
    expanded.expect("HKDF output of at most 255 hash lengths");
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

    /// Runs `openssl ARGS` with `stdin`, the second implementation the SM3/SM4 tests check
    /// against; its standard output.
    fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new("openssl")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "the SM3/SM4 tests cross-check with the openssl command (OpenSSL 3.0 or \
                     later), which could not be run ({e}): install it (Debian/Ubuntu: \
                     apt-get install -y openssl)"
                )
            });
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?} failed (OpenSSL 3.0 or later with SM3/SM4 is needed): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// openssl's hex output (upper case, maybe with colons) as lower-case hex.
    fn openssl_hex(out: &[u8]) -> String {
        String::from_utf8_lossy(out)
            .trim()
            .replace(':', "")
            .to_lowercase()
    }

    #[test]
    fn sm4_block_gbt32907_vector() {
        use sm4::cipher::{BlockEncrypt, KeyInit};
        // GB/T 32907-2016, appendix A, example 1: key = plaintext.
        let key = hex::decode("0123456789abcdeffedcba9876543210").unwrap();
        let mut block =
            sm4::cipher::Block::<sm4::Sm4>::from(<[u8; 16]>::try_from(&key[..]).unwrap());
        sm4::Sm4::new_from_slice(&key)
            .unwrap()
            .encrypt_block(&mut block);
        assert_eq!(hex::encode(block), "681edf34d206965e86b3e94f536e4246");
    }

    #[test]
    fn sm4_kwp_round_trip_tamper_wrong_key() {
        let kek = [0x42u8; 16];
        let pkcs8 = b"a PKCS#8 document of odd length";
        let w = wrap(Cipher::Sm4, &kek, pkcs8).unwrap();
        assert_eq!(
            w.len(),
            40,
            "31 bytes padded to 32, plus the 8-byte integrity block"
        );
        assert_eq!(&unwrap(Cipher::Sm4, &kek, &w).unwrap()[..], pkcs8);
        for i in 0..w.len() {
            let mut bad = w.clone();
            bad[i] ^= 1;
            assert_eq!(unwrap(Cipher::Sm4, &kek, &bad), Err(CryptoError::Unseal));
        }
        assert_eq!(
            unwrap(Cipher::Sm4, &[0x43u8; 16], &w),
            Err(CryptoError::Unseal)
        );
        // SM4 and AES wraps are not interchangeable, and each takes only its key length.
        assert_ne!(w, wrap(Cipher::Aes256, &[0x42u8; 32], pkcs8).unwrap());
        assert!(matches!(
            wrap(Cipher::Sm4, &[0u8; 32], pkcs8),
            Err(CryptoError::Malformed(_))
        ));
        assert!(matches!(
            unwrap(Cipher::Aes256, &kek, &w),
            Err(CryptoError::Malformed(_))
        ));
    }

    #[test]
    fn sm4_kwp_is_rfc5649_over_sm4() {
        // RFC 5649 section 4.1: a plaintext of at most 8 bytes is wrapped as one block,
        // ENC(K, 0xA65959A6 || MLI (32-bit) || P zero-padded to 8 bytes); checked against
        // openssl's SM4 in ECB mode.
        let kek = hex::decode("0123456789abcdeffedcba9876543210").unwrap();
        let w = wrap(Cipher::Sm4, &kek, b"yunkey").unwrap();
        let block = hex::decode(format!("a65959a600000006{}0000", hex::encode("yunkey"))).unwrap();
        let expected = openssl(
            &["enc", "-sm4-ecb", "-K", &hex::encode(&kek), "-nopad"],
            &block,
        );
        assert_eq!(w, expected);
    }

    #[test]
    fn hmac_sm3_against_openssl() {
        let key = hex::decode("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
            .unwrap();
        let tag = hmac(Cipher::Sm4, &key, &[b"what do ya want ", b"for nothing?"]);
        let expected = openssl(
            &[
                "mac",
                "-digest",
                "SM3",
                "-macopt",
                &format!("hexkey:{}", hex::encode(&key)),
                "HMAC",
            ],
            b"what do ya want for nothing?",
        );
        assert_eq!(hex::encode(tag), openssl_hex(&expected));
        assert_ne!(
            tag,
            hmac(Cipher::Aes256, &key, &[b"what do ya want for nothing?"])
        );
        verify_hmac(Cipher::Sm4, &key, &[b"what do ya want for nothing?"], &tag).unwrap();
        assert!(verify_hmac(Cipher::Sm4, &key, &[b"what do ya want for nothing!"], &tag).is_err());
        assert!(verify_hmac(
            Cipher::Aes256,
            &key,
            &[b"what do ya want for nothing?"],
            &tag
        )
        .is_err());
        assert!(verify_hmac(
            Cipher::Sm4,
            &key,
            &[b"what do ya want for nothing?"],
            &tag[..31]
        )
        .is_err());
    }

    #[test]
    fn hkdf_sm3_against_openssl() {
        let secret = [7u8; 32];
        for len in [16, 32] {
            let ours = derive(Cipher::Sm4, &secret, b"yunkey-domain-kek/2", len);
            let expected = openssl(
                &[
                    "kdf",
                    "-keylen",
                    &len.to_string(),
                    "-kdfopt",
                    "digest:SM3",
                    "-kdfopt",
                    &format!("hexkey:{}", hex::encode(secret)),
                    "-kdfopt",
                    &format!("hexinfo:{}", hex::encode(b"yunkey-domain-kek/2")),
                    "HKDF",
                ],
                b"",
            );
            assert_eq!(hex::encode(&ours[..]), openssl_hex(&expected), "{len}");
        }
        // Another info, another hash: other keys.
        assert_ne!(
            derive(Cipher::Sm4, &secret, b"a", 32),
            derive(Cipher::Sm4, &secret, b"b", 32)
        );
        assert_ne!(
            derive(Cipher::Sm4, &secret, b"a", 32),
            derive(Cipher::Aes256, &secret, b"a", 32)
        );
        assert_eq!(
            &derive(Cipher::Aes256, &secret, b"a", 32)[..],
            &derive_key(&secret, b"a")[..]
        );
    }
}
