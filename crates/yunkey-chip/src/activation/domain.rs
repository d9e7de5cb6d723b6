//! The security domain: created once with the operator's key, handed only to chips that key
//! admitted, and the write-once trust anchor.
//!
//! The domain envelope (format 2), encrypted to the recipient's transport key with
//! [`yunkey_crypto::envelope`] under context [`DOMAIN_ENVELOPE_CONTEXT`]:
//! `secret (lp, 32 bytes) || operator key SPKI (lp) || trust anchor DER (lp, may be empty)`.

use super::store::{META_ANCHOR, META_DOMAIN, META_OPERATOR, META_SM2_ANCHOR};
use super::ActivationModule;
use crate::anchor::TrustAnchor;
use crate::wrapped::{put_lp, take_lp, DomainKeys};
use crate::{ChipAdmission, ChipError, ExportedDomain};
use std::sync::Arc;
use yunkey_crypto::authz::chip_admission_message;
use yunkey_crypto::ecdsa::PublicKey;
use yunkey_crypto::envelope;
use yunkey_crypto::seal::SealKey;
use yunkey_crypto::sig::Algorithm;
use yunkey_crypto::validate::{self, InvalidField};
use zeroize::Zeroizing;

/// Context of the domain envelope.
pub const DOMAIN_ENVELOPE_CONTEXT: &[u8] = b"yunkey-domain/2";

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
    pub(super) fn init_domain_checked(
        &self,
        operator_spki: &[u8],
        admission: &[u8],
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
        let secret = SealKey::generate();
        self.store.put_meta(
            &*self.custody,
            &[
                (META_DOMAIN, secret.expose()),
                (META_OPERATOR, operator_spki),
            ],
        )?;
        let id = secret.fingerprint();
        state.keys = Some(DomainKeys::derive(&secret));
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
        let (operator, operator_der) = state.operator.as_ref().ok_or(ChipError::NotInDomain)?;
        check_admission(
            operator,
            &recipient.chip_id,
            &recipient.transport_public_key,
            &recipient.operator_signature,
        )?;
        let mut plain = Zeroizing::new(Vec::new());
        put_lp(&mut plain, secret.expose());
        put_lp(&mut plain, operator_der);
        put_lp(
            &mut plain,
            state.anchor.as_ref().map(|a| a.der()).unwrap_or(&[]),
        );
        Ok(ExportedDomain {
            envelope: envelope::seal_to(&transport, DOMAIN_ENVELOPE_CONTEXT, &plain),
            domain_id: secret.fingerprint(),
        })
    }

    pub(super) fn import_domain_checked(&self, envelope_bytes: &[u8]) -> Result<String, ChipError> {
        let unseal = || ChipError::Unseal {
            what: "domain envelope",
        };
        let plain = envelope::open_with(&self.transport, DOMAIN_ENVELOPE_CONTEXT, envelope_bytes)
            .map_err(|_| unseal())?;
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
            Some(Arc::new(TrustAnchor::parse(anchor_der)?))
        };
        let id = secret.fingerprint();
        let mut state = self.write_state();
        if let Some(d) = &state.secret {
            if d.fingerprint() != id {
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
        if new_domain {
            records.push((META_DOMAIN, secret.expose()));
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
            state.keys = Some(DomainKeys::derive(&secret));
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
