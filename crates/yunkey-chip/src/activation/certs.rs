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
//! User, device and code-signing certificates need the trust anchor to be this CA key's
//! certificate.

use super::ActivationModule;
use crate::custody::{CheckedDigest, KeyCustody, KeyRef};
use crate::wrapped::WrappedKey;
use crate::{CertificateSubject, ChipError, IssueCertificate, KeyPurpose};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm, SigningKey,
    PKCS_ECDSA_P256_SHA256,
};
use yunkey_crypto::ecdsa::PublicKey;
use yunkey_crypto::names;
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

/// A P-256 public key as rcgen wants it.
struct SubjectKey(Vec<u8>);

impl SubjectKey {
    fn from_spki(spki: &[u8]) -> Result<Self, ChipError> {
        let key = PublicKey::from_spki_der(spki)
            .map_err(|_| ChipError::storage("issuing a certificate", "a stored key is corrupt"))?;
        Ok(Self(key.to_sec1()))
    }
}

impl PublicKeyData for SubjectKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

/// Signs rcgen's to-be-signed bytes with the CA key in the custody.
struct CustodySigner<'a> {
    custody: &'a dyn KeyCustody,
    key: &'a KeyRef,
    public: SubjectKey,
}

impl PublicKeyData for CustodySigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.public.der_bytes()
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

impl SigningKey for CustodySigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        // The to-be-signed bytes were built in this module from checked input.
        let digest = CheckedDigest::new(yunkey_crypto::sha256(msg));
        self.custody.sign(self.key, &digest).map_err(|e| {
            tracing::warn!(error = %e, "CA signing in the custody failed");
            rcgen::Error::RemoteKeyError
        })
    }
}

fn serial() -> SerialNumber {
    let mut s: [u8; 16] = yunkey_crypto::random_bytes();
    s[0] &= 0x7f; // positive
    s[0] |= 0x01; // no leading zero byte
    SerialNumber::from_slice(&s)
}

fn validity(params: &mut CertificateParams, days: i64) {
    validity_secs(params, days * 86_400);
}

fn validity_secs(params: &mut CertificateParams, secs: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::seconds(secs);
}

fn leaf_params(
    common_name: &str,
    sans: Vec<String>,
    usages: Vec<KeyUsagePurpose>,
) -> Result<CertificateParams, ChipError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    for uri in sans {
        params
            .subject_alt_names
            .push(SanType::URI(uri.try_into().map_err(|_| {
                InvalidField::new("subject", "does not make a valid URI name")
            })?));
    }
    params.key_usages = usages;
    params.serial_number = Some(serial());
    validity(&mut params, LEAF_VALIDITY_DAYS);
    Ok(params)
}

fn cert_err(e: rcgen::Error) -> ChipError {
    ChipError::storage(
        "issuing a certificate",
        format!("certificate generation failed: {e}"),
    )
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
        let signer = CustodySigner {
            custody: &*self.custody,
            key: &ca.key_ref,
            public: SubjectKey::from_spki(&ca.public_key_spki)?,
        };
        let (params, subject_spki) = match &req.subject {
            CertificateSubject::Ca { common_name } => {
                validate::text("common_name", common_name, 64, false)?;
                let mut params = CertificateParams::default();
                let mut dn = DistinguishedName::new();
                dn.push(DnType::OrganizationName, "yunkey");
                dn.push(DnType::CommonName, common_name.as_str());
                params.distinguished_name = dn;
                params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
                params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
                params.serial_number = Some(serial());
                validity(&mut params, CA_VALIDITY_DAYS);
                let cert = params.self_signed(&signer).map_err(cert_err)?;
                return Ok(cert.der().to_vec());
            }
            CertificateSubject::User {
                wrapped_user_key,
                display_name,
            } => {
                validate::text("display_name", display_name, 128, true)?;
                let user = self.user_key_of(wrapped_user_key)?;
                let mut params = leaf_params(
                    &user.user_id,
                    vec![names::user_uri(&user.user_id)],
                    vec![
                        KeyUsagePurpose::DigitalSignature,
                        KeyUsagePurpose::ContentCommitment,
                    ],
                )?;
                if !display_name.is_empty() {
                    params
                        .distinguished_name
                        .push(DnType::OrganizationName, display_name.as_str());
                }
                (params, user.public_key_spki)
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
                let mut params = leaf_params(
                    device_id,
                    vec![names::user_uri(&user.user_id), names::device_uri(device_id)],
                    vec![KeyUsagePurpose::DigitalSignature],
                )?;
                if let Some(v) = validity {
                    validity_secs(&mut params, *v);
                }
                // The device certificate is also its TLS client certificate.
                params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
                (params, device.public_key_spki.clone())
            }
            CertificateSubject::CodeSigning { wrapped_key } => {
                let w = WrappedKey::open(&self.domain_keys()?, wrapped_key)?;
                if w.purpose != KeyPurpose::CodeSigning {
                    return Err(ChipError::NotACodeSigningKey);
                }
                let mut params = leaf_params(
                    "yunkey code signing",
                    vec![CODE_SIGNING_URI.to_owned()],
                    vec![KeyUsagePurpose::DigitalSignature],
                )?;
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, "yunkey");
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
                validity(&mut params, CODE_SIGNING_VALIDITY_DAYS);
                (params, w.public_key_spki)
            }
        };
        let anchor = self
            .read_state()
            .anchor
            .clone()
            .ok_or(ChipError::TrustAnchorNotSet)?;
        if anchor.public_key().to_spki_der() != ca.public_key_spki {
            return Err(ChipError::AnchorKeyMismatch);
        }
        let subject = SubjectKey::from_spki(&subject_spki)?;
        let issuer =
            Issuer::from_ca_cert_der(&anchor.der().to_vec().into(), signer).map_err(cert_err)?;
        Ok(params
            .signed_by(&subject, &issuer)
            .map_err(cert_err)?
            .der()
            .to_vec())
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
