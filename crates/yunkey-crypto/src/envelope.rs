//! Encryption to a chip's transport key: ephemeral-static ECDH on P-256, HKDF-SHA256, then
//! AES-256-GCM. This is how the security domain travels from a member chip to a new one.
//!
//! Layout: `ephemeral public key, SEC1 uncompressed (65) || sealed (see [`crate::seal`])`.

use crate::ecdsa::{PrivateKey, PublicKey};
use crate::seal::SealKey;
use crate::CryptoError;
use hkdf::Hkdf;
use p256::ecdh::diffie_hellman;
use zeroize::Zeroizing;

const INFO: &[u8] = b"yunkey-envelope/1";

fn derive(shared: &[u8], eph_sec1: &[u8], recipient_sec1: &[u8]) -> SealKey {
    let mut salt = eph_sec1.to_vec();
    salt.extend_from_slice(recipient_sec1);
    let hk = Hkdf::<sha2::Sha256>::new(Some(&salt), shared);
    let mut okm = Zeroizing::new([0u8; 32]);
    hk.expand(INFO, &mut okm[..])
        .expect("32 bytes is a valid HKDF length");
    SealKey::from_bytes(&okm[..]).expect("32 bytes")
}

/// Encrypts `plaintext` so that only the holder of `recipient`'s private key can open it.
pub fn seal_to(recipient: &PublicKey, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let eph = PrivateKey::generate();
    let eph_sec1 = eph.public_key().to_sec1();
    let shared = diffie_hellman(
        eph.inner().as_nonzero_scalar(),
        recipient.inner().as_affine(),
    );
    let key = derive(shared.raw_secret_bytes(), &eph_sec1, &recipient.to_sec1());
    let mut out = eph_sec1;
    out.extend_from_slice(&key.seal(context, plaintext));
    out
}

/// Opens what [`seal_to`] made for `recipient`'s public key.
pub fn open_with(
    recipient: &PrivateKey,
    context: &[u8],
    envelope: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if envelope.len() < 65 {
        return Err(CryptoError::Unseal);
    }
    let (eph_sec1, sealed) = envelope.split_at(65);
    let eph = p256::PublicKey::from_sec1_bytes(eph_sec1).map_err(|_| CryptoError::Unseal)?;
    let shared = diffie_hellman(recipient.inner().as_nonzero_scalar(), eph.as_affine());
    let key = derive(
        shared.raw_secret_bytes(),
        eph_sec1,
        &recipient.public_key().to_sec1(),
    );
    key.open(context, sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_recipient_opens() {
        let chip = PrivateKey::generate();
        let env = seal_to(&chip.public_key(), b"domain", b"wrapping key");
        assert_eq!(
            &open_with(&chip, b"domain", &env).unwrap()[..],
            b"wrapping key"
        );
        assert!(open_with(&PrivateKey::generate(), b"domain", &env).is_err());
        assert!(open_with(&chip, b"other", &env).is_err());
        assert!(open_with(&chip, b"domain", &env[..10]).is_err());
    }
}
