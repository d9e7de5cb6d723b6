//! Certificates, built here and signed with a CA key: the only use of a CA key there is.
//!
//! - The CA's self-signed certificate: CN given, O = yunkey, CA with path length 0, key usage
//!   keyCertSign + cRLSign, valid [`CA_VALIDITY_DAYS`].
//! - A user certificate for a key of the domain: the owner and public key come from the
//!   wrapped key's authenticated metadata, never from the caller. CN = user id (and the display
//!   name as O if given), URI SAN `urn:yunkey:user:<id>`, key usage digitalSignature +
//!   nonRepudiation, valid [`LEAF_VALIDITY_DAYS`].
//! - A device certificate for a device bound in a wrapped key's binding (and not revoked):
//!   CN = device id, URI SANs for user and device, key usage digitalSignature.
//!
//! - A code-signing certificate for the domain's CODE_SIGNING key: CN = yunkey code signing,
//!   O = yunkey, URI SAN [`CODE_SIGNING_URI`], key usage digitalSignature, extended key usage
//!   codeSigning, not a CA, valid [`CODE_SIGNING_VALIDITY_DAYS`].
//!
//! User, device and code-signing certificates need the trust anchor of the CA key's algorithm
//! to be this CA key's certificate. A CA key of either algorithm may exist: the P-256 CA
//! certifies P-256 user keys (and the code-signing key), the SM2 CA SM2 user keys (with
//! `SM2-with-SM3`); a device certificate comes from the CA of its user, whatever the device
//! key's algorithm. The encoding is in [`super::x509`].

use super::x509::{self, CertSpec, KeyUsages, EKU_CLIENT_AUTH, EKU_CODE_SIGNING};
use super::ActivationModule;
use crate::wrapped::WrappedKey;
use crate::{CertificateSubject, ChipError, IssueCertificate, KeyPurpose};
use yunkey_crypto::names;
use yunkey_crypto::sig::Algorithm;
use yunkey_crypto::validate::{self, InvalidField};

/// Validity of user and device certificates, in days.
pub const LEAF_VALIDITY_DAYS: i64 = 730;
/// Shortest validity a device certificate may be given, in seconds.
pub const MIN_DEVICE_VALIDITY_SECS: i64 = 10;
/// Validity of the user CA certificate, in days.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// Validity of the code-signing certificate, in days (a day less than the CA's, so it never
/// outlives its issuer).
pub const CODE_SIGNING_VALIDITY_DAYS: i64 = CA_VALIDITY_DAYS - 1;
/// The URI name of the code-signing certificate.
pub const CODE_SIGNING_URI: &str = "urn:yunkey:code-signing";

/// A short label of what is being certified, for the audit log.
pub(super) fn subject_label(subject: &CertificateSubject) -> &'static str {
    match subject {
        CertificateSubject::Ca { .. } => "ca",
        CertificateSubject::User { .. } => "user",
        CertificateSubject::Device { .. } => "device",
        CertificateSubject::CodeSigning { .. } => "code_signing",
    }
}

fn leaf(common_name: &str, uris: Vec<String>, key_usage: flagset::FlagSet<KeyUsages>) -> CertSpec {
    CertSpec {
        organization: None,
        common_name: common_name.to_owned(),
        uris,
        ca: false,
        key_usage,
        extended_key_usage: Vec::new(),
        validity_secs: LEAF_VALIDITY_DAYS * 86_400,
    }
}

impl ActivationModule {
    pub(super) fn issue_certificate_checked(
        &self,
        req: &IssueCertificate,
    ) -> Result<Vec<u8>, ChipError> {
        validate::identifier("ca_key_handle", &req.ca_key_handle)?;
        let ca = self.store.load(&*self.custody, &req.ca_key_handle)?;
        if ca.purpose != KeyPurpose::Ca {
            return Err(ChipError::NotACaKey);
        }
        let (spec, subject_spki) = match &req.subject {
            CertificateSubject::Ca { common_name } => {
                validate::text("common_name", common_name, 64, false)?;
                let spec = CertSpec {
                    organization: Some("yunkey".into()),
                    common_name: common_name.clone(),
                    uris: Vec::new(),
                    ca: true,
                    key_usage: KeyUsages::KeyCertSign | KeyUsages::CRLSign,
                    extended_key_usage: Vec::new(),
                    validity_secs: CA_VALIDITY_DAYS * 86_400,
                };
                let issuer = x509::Issuer {
                    custody: &*self.custody,
                    key: &ca.key_ref,
                    public_key: ca.public_key()?,
                    name_der: None,
                };
                return x509::issue(&spec, &ca.public_key_spki, &issuer);
            }
            CertificateSubject::User {
                wrapped_user_key,
                display_name,
            } => {
                validate::text("display_name", display_name, 128, true)?;
                let user = self.user_key_of(wrapped_user_key)?;
                let mut spec = leaf(
                    &user.user_id,
                    vec![names::user_uri(&user.user_id)],
                    KeyUsages::DigitalSignature | KeyUsages::NonRepudiation,
                );
                if !display_name.is_empty() {
                    spec.organization = Some(display_name.clone());
                }
                // A user's certificate comes from the CA of the user key's own algorithm.
                if user.algorithm != ca.algorithm() {
                    return Err(ChipError::CaAlgorithmMismatch {
                        ca: ca.algorithm(),
                        subject: user.algorithm,
                    });
                }
                (spec, user.public_key_spki)
            }
            CertificateSubject::Device {
                wrapped_user_key,
                device_id,
                validity_secs: validity,
            } => {
                validate::identifier("device_id", device_id)?;
                let max = LEAF_VALIDITY_DAYS * 86_400;
                if let Some(v) = validity {
                    if !(MIN_DEVICE_VALIDITY_SECS..=max).contains(v) {
                        return Err(InvalidField::new(
                            "validity_seconds",
                            format!("must be between {MIN_DEVICE_VALIDITY_SECS} and {max}"),
                        )
                        .into());
                    }
                }
                let user = self.user_key_of(wrapped_user_key)?;
                if user.binding.revoked {
                    return Err(ChipError::UserRevoked);
                }
                let device =
                    user.binding
                        .device(device_id)
                        .ok_or_else(|| ChipError::DeviceNotBound {
                            device_id: device_id.clone(),
                        })?;
                if device.revoked {
                    return Err(ChipError::DeviceRevoked {
                        device_id: device_id.clone(),
                    });
                }
                let mut spec = leaf(
                    device_id,
                    vec![names::user_uri(&user.user_id), names::device_uri(device_id)],
                    KeyUsages::DigitalSignature.into(),
                );
                if let Some(v) = validity {
                    spec.validity_secs = *v;
                }
                // The device certificate is also its TLS client certificate.
                spec.extended_key_usage = vec![EKU_CLIENT_AUTH];
                (spec, device.public_key_spki.clone())
            }
            CertificateSubject::CodeSigning { wrapped_key } => {
                let w = WrappedKey::open(&self.domain_keys()?, wrapped_key)?;
                if w.purpose != KeyPurpose::CodeSigning {
                    return Err(ChipError::NotACodeSigningKey);
                }
                if ca.algorithm() != Algorithm::EcdsaP256 {
                    return Err(ChipError::CaAlgorithmMismatch {
                        ca: ca.algorithm(),
                        subject: w.algorithm,
                    });
                }
                let mut spec = leaf(
                    "yunkey code signing",
                    vec![CODE_SIGNING_URI.to_owned()],
                    KeyUsages::DigitalSignature.into(),
                );
                spec.organization = Some("yunkey".into());
                spec.extended_key_usage = vec![EKU_CODE_SIGNING];
                spec.validity_secs = CODE_SIGNING_VALIDITY_DAYS * 86_400;
                (spec, w.public_key_spki)
            }
        };
        let anchor = self
            .read_state()
            .anchor(ca.algorithm())
            .ok_or(ChipError::TrustAnchorNotSet)?;
        if anchor.public_key().to_spki_der() != ca.public_key_spki {
            return Err(ChipError::AnchorKeyMismatch);
        }
        let issuer = x509::Issuer {
            custody: &*self.custody,
            key: &ca.key_ref,
            public_key: ca.public_key()?,
            name_der: Some(anchor.subject_der()),
        };
        x509::issue(&spec, &subject_spki, &issuer)
    }

    /// Opens a wrapped user key's authenticated metadata (the key itself stays wrapped).
    fn user_key_of(&self, wrapped: &[u8]) -> Result<WrappedKey, ChipError> {
        let w = WrappedKey::open(&self.domain_keys()?, wrapped)?;
        if w.purpose != KeyPurpose::User {
            return Err(ChipError::NotAUserKey);
        }
        Ok(w)
    }
}
