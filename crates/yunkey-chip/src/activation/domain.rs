//! The security domain: created once with the operator's key, handed only to chips that key
//! admitted, and the write-once trust anchor.
//!
//! The domain's cipher ([`Cipher`]: AES-256 or SM4) is chosen when it is created, stored with
//! the secret, carried in the envelope, and fixed for the domain's life: a chip never changes
//! it, and a custody that cannot wrap under it never joins ([`ChipError::CipherUnsupported`]).
//!
//! The domain envelope, encrypted to the recipient's transport key with
//! [`yunkey_crypto::envelope`]:
//! - format 3, written, under context [`DOMAIN_ENVELOPE_CONTEXT`]: `cipher (1) || secret (lp,
//!   32 bytes) || operator key SPKI (lp) || trust anchor DER (lp, may be empty)`.
//! - format 2, from chips of earlier versions, read under context `yunkey-domain/2`: the same
//!   without the cipher byte, for an AES-256 domain.

use super::store::{META_ANCHOR, META_DOMAIN, META_DOMAIN_CIPHER, META_OPERATOR, META_SM2_ANCHOR};
use super::ActivationModule;
use crate::anchor::TrustAnchor;
use crate::wrapped::{put_lp, take_lp, DomainKeys};
use crate::{ChipAdmission, ChipError, ExportedDomain};
use std::sync::Arc;
use yunkey_crypto::authz::chip_admission_message;
use yunkey_crypto::cipher::Cipher;
use yunkey_crypto::ecdsa::PublicKey;
use yunkey_crypto::envelope;
use yunkey_crypto::seal::SealKey;
use yunkey_crypto::sig::Algorithm;
use yunkey_crypto::validate::{self, InvalidField};
use zeroize::Zeroizing;

/// Context of the domain envelope (format 3).
pub const DOMAIN_ENVELOPE_CONTEXT: &[u8] = b"yunkey-domain/3";
/// Context of the format 2 envelope, before domains had a cipher (AES-256).
const DOMAIN_ENVELOPE_CONTEXT_V2: &[u8] = b"yunkey-domain/2";

fn unseal_envelope() -> ChipError {
    ChipError::Unseal {
        what: "domain envelope",
    }
}

fn operator_key(spki: &[u8]) -> Result<PublicKey, ChipError> {
    PublicKey::from_spki_der(spki).map_err(|_| {
        InvalidField::new("operator_key", "must be a P-256 SubjectPublicKeyInfo (DER)").into()
    })
}

/// Checks an operator's admission of `chip_id` with `transport_spki`.
fn check_admission(
    operator: &PublicKey,
    chip_id: &str,
    transport_spki: &[u8],
    signature: &[u8],
) -> Result<(), ChipError> {
    validate::identifier("chip_id", chip_id)?;
    operator
        .verify_message(&chip_admission_message(chip_id, transport_spki), signature)
        .map_err(|_| ChipError::AdmissionRefused {
            reason: "the operator signature does not verify with the domain's operator key for \
                     this chip id and transport key",
        })
}

impl ActivationModule {
    /// Refuses a domain cipher the custody cannot wrap under.
    fn check_custody_wraps(&self, cipher: Cipher) -> Result<(), ChipError> {
        if self.custody.wraps_under(cipher) {
            Ok(())
        } else {
            Err(ChipError::CipherUnsupported {
                custody: self.custody.describe(),
                cipher,
            })
        }
    }

    /// Opens a domain envelope made for this chip: its cipher and the plain fields after it.
    fn open_envelope(&self, bytes: &[u8]) -> Result<(Cipher, Zeroizing<Vec<u8>>), ChipError> {
        let Ok(plain) = envelope::open_with(&self.transport, DOMAIN_ENVELOPE_CONTEXT, bytes) else {
            let plain = envelope::open_with(&self.transport, DOMAIN_ENVELOPE_CONTEXT_V2, bytes)
                .map_err(|_| unseal_envelope())?;
            return Ok((Cipher::Aes256, plain));
        };
        let (&cipher, rest) = plain.split_first().ok_or_else(unseal_envelope)?;
        let cipher = Cipher::from_byte(cipher).ok_or_else(|| {
            InvalidField::new(
                "envelope",
                "names a domain cipher this yunkey does not know (made by a newer version?)",
            )
        })?;
        Ok((cipher, Zeroizing::new(rest.to_vec())))
    }

    pub(super) fn init_domain_checked(
        &self,
        operator_spki: &[u8],
        admission: &[u8],
        cipher: Cipher,
    ) -> Result<String, ChipError> {
        let operator = operator_key(operator_spki)?;
        check_admission(
            &operator,
            &self.config.chip_id,
            &self.transport.public_key().to_spki_der(),
            admission,
        )?;
        let mut state = self.write_state();
        if let Some(d) = &state.secret {
            return Err(ChipError::AlreadyInDomain {
                domain_id: d.fingerprint(),
            });
        }
        self.check_custody_wraps(cipher)?;
        let secret = SealKey::generate();
        self.store.put_meta(
            &*self.custody,
            &[
                (META_DOMAIN, secret.expose()),
                (META_DOMAIN_CIPHER, &[cipher.to_byte()]),
                (META_OPERATOR, operator_spki),
            ],
        )?;
        let id = secret.fingerprint();
        state.keys = Some(DomainKeys::derive_with(&secret, cipher));
        state.secret = Some(secret);
        state.operator = Some((operator, operator_spki.to_vec()));
        Ok(id)
    }

    pub(super) fn export_domain_checked(
        &self,
        recipient: &ChipAdmission,
    ) -> Result<ExportedDomain, ChipError> {
        let transport =
            PublicKey::from_spki_der(&recipient.transport_public_key).map_err(|_| {
                InvalidField::new(
                    "recipient.transport_key",
                    "must be a P-256 SubjectPublicKeyInfo (DER)",
                )
            })?;
        let state = self.read_state();
        let secret = state.secret.as_ref().ok_or(ChipError::NotInDomain)?;
        let keys = state.keys.as_ref().ok_or(ChipError::NotInDomain)?;
        let (operator, operator_der) = state.operator.as_ref().ok_or(ChipError::NotInDomain)?;
        check_admission(
            operator,
            &recipient.chip_id,
            &recipient.transport_public_key,
            &recipient.operator_signature,
        )?;
        let mut plain = Zeroizing::new(vec![keys.cipher().to_byte()]);
        put_lp(&mut plain, secret.expose());
        put_lp(&mut plain, operator_der);
        put_lp(
            &mut plain,
            state.anchor.as_ref().map(|a| a.der()).unwrap_or(&[]),
        );
        Ok(ExportedDomain {
            envelope: envelope::seal_to(&transport, DOMAIN_ENVELOPE_CONTEXT, &plain),
            domain_id: secret.fingerprint(),
            cipher: keys.cipher(),
        })
    }

    pub(super) fn import_domain_checked(&self, envelope_bytes: &[u8]) -> Result<String, ChipError> {
        let unseal = unseal_envelope;
        let (cipher, plain) = self.open_envelope(envelope_bytes)?;
        let (secret, rest) = take_lp(&plain).ok_or_else(unseal)?;
        let (operator_der, rest) = take_lp(rest).ok_or_else(unseal)?;
        let (anchor_der, rest) = take_lp(rest).ok_or_else(unseal)?;
        if !rest.is_empty() {
            return Err(unseal());
        }
        let secret = SealKey::from_bytes(secret).map_err(|_| unseal())?;
        let operator = operator_key(operator_der)?;
        let anchor = if anchor_der.is_empty() {
            None
        } else {
            let anchor = TrustAnchor::parse(anchor_der)?;
            // The envelope carries the P-256 user CA's anchor only.
            if anchor.algorithm() != Algorithm::EcdsaP256 {
                return Err(unseal());
            }
            Some(Arc::new(anchor))
        };
        let id = secret.fingerprint();
        let mut state = self.write_state();
        if let (Some(d), Some(keys)) = (&state.secret, &state.keys) {
            // The same secret with another cipher is another domain: a chip never changes it.
            if d.fingerprint() != id || keys.cipher() != cipher {
                return Err(ChipError::AlreadyInDomain {
                    domain_id: d.fingerprint(),
                });
            }
        }
        if let (Some(have), Some(new)) = (&state.anchor, &anchor) {
            if have.der() != new.der() {
                return Err(ChipError::TrustAnchorAlreadySet);
            }
        }
        let mut records: Vec<(&str, &[u8])> = Vec::new();
        let new_domain = state.secret.is_none();
        let cipher_byte = [cipher.to_byte()];
        if new_domain {
            self.check_custody_wraps(cipher)?;
            records.push((META_DOMAIN, secret.expose()));
            records.push((META_DOMAIN_CIPHER, &cipher_byte));
            records.push((META_OPERATOR, operator_der));
        }
        let new_anchor = state.anchor.is_none() && anchor.is_some();
        if new_anchor {
            records.push((META_ANCHOR, anchor_der));
        }
        if !records.is_empty() {
            self.store.put_meta(&*self.custody, &records)?;
        }
        if new_domain {
            state.keys = Some(DomainKeys::derive_with(&secret, cipher));
            state.secret = Some(secret);
            state.operator = Some((operator, operator_der.to_vec()));
        }
        if new_anchor {
            state.anchor = anchor;
        }
        Ok(id)
    }

    pub(super) fn set_trust_anchor_checked(&self, cert_der: &[u8]) -> Result<(), ChipError> {
        let anchor = TrustAnchor::parse(cert_der)?;
        let algorithm = anchor.algorithm();
        let mut state = self.write_state();
        if let Some(have) = state.anchor(algorithm) {
            return if have.der() == cert_der {
                Ok(())
            } else {
                Err(ChipError::TrustAnchorAlreadySet)
            };
        }
        let name = match algorithm {
            Algorithm::EcdsaP256 => META_ANCHOR,
            Algorithm::Sm2 => META_SM2_ANCHOR,
        };
        // Durability point (in put_meta): the anchor is write-once, so it is on disk first.
        self.store.put_meta(&*self.custody, &[(name, cert_der)])?;
        match algorithm {
            Algorithm::EcdsaP256 => state.anchor = Some(Arc::new(anchor)),
            Algorithm::Sm2 => state.sm2_anchor = Some(Arc::new(anchor)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::tests::config;
    use crate::testing::{self, Operator};
    use crate::{ChipBackend, KeyPurpose, SoftChip};

    #[test]
    fn the_envelope_carries_the_cipher_and_a_restart_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let operator = Operator::new();
        let a = SoftChip::open(dir.path().join("a"), config("a")).unwrap();
        let id = operator.init_domain_with(&a, Cipher::Sm4).unwrap();
        let (key, _) = testing::enrol(&a, "alice");
        let b = SoftChip::open(dir.path().join("b"), config("b")).unwrap();
        let envelope = a.export_domain(&operator.admit(&b)).unwrap().envelope;
        // Format 3: the first plain byte is the cipher.
        let plain = envelope::open_with(&b.transport, DOMAIN_ENVELOPE_CONTEXT, &envelope).unwrap();
        assert_eq!(plain[0], Cipher::Sm4.to_byte());
        assert!(envelope::open_with(&b.transport, DOMAIN_ENVELOPE_CONTEXT_V2, &envelope).is_err());
        assert_eq!(b.import_domain(&envelope).unwrap(), id);
        assert_eq!(b.info().unwrap().domain_cipher, Some(Cipher::Sm4));
        drop(b);
        // After a restart the chip still derives SM4 domain keys: A's key opens on it.
        let b = SoftChip::open(dir.path().join("b"), config("b")).unwrap();
        assert_eq!(b.info().unwrap().domain_cipher, Some(Cipher::Sm4));
        b.unwrap_key(&key.wrapped_key, KeyPurpose::User, "alice")
            .unwrap();
        // The same secret offered as an AES-256 domain is another domain.
        let mut as_aes = Zeroizing::new(vec![Cipher::Aes256.to_byte()]);
        as_aes.extend_from_slice(&plain[1..]);
        let forged = envelope::seal_to(&b.transport.public_key(), DOMAIN_ENVELOPE_CONTEXT, &as_aes);
        assert!(matches!(
            b.import_domain(&forged),
            Err(ChipError::AlreadyInDomain { .. })
        ));
        let mut unknown = plain.clone();
        unknown[0] = 9;
        let unknown =
            envelope::seal_to(&b.transport.public_key(), DOMAIN_ENVELOPE_CONTEXT, &unknown);
        assert!(matches!(
            b.import_domain(&unknown),
            Err(ChipError::Invalid(_))
        ));
    }

    #[test]
    fn a_format_2_envelope_joins_an_aes256_domain() {
        let dir = tempfile::tempdir().unwrap();
        let operator = Operator::new();
        let a = SoftChip::open(dir.path().join("a"), config("a")).unwrap();
        let id = operator.init_domain(&a);
        assert_eq!(a.info().unwrap().domain_cipher, Some(Cipher::Aes256));
        let (key, _) = testing::enrol(&a, "alice");
        let b = SoftChip::open(dir.path().join("b"), config("b")).unwrap();
        // What a chip of the previous version exports: format 2, no cipher byte.
        let envelope = a.export_domain(&operator.admit(&b)).unwrap().envelope;
        let plain = envelope::open_with(&b.transport, DOMAIN_ENVELOPE_CONTEXT, &envelope).unwrap();
        assert_eq!(plain[0], Cipher::Aes256.to_byte());
        let v2 = envelope::seal_to(
            &b.transport.public_key(),
            DOMAIN_ENVELOPE_CONTEXT_V2,
            &plain[1..],
        );
        assert_eq!(b.import_domain(&v2).unwrap(), id);
        assert_eq!(b.info().unwrap().domain_cipher, Some(Cipher::Aes256));
        b.unwrap_key(&key.wrapped_key, KeyPurpose::User, "alice")
            .unwrap();
    }
}
