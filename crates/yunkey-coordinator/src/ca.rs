//! The user CA. Its key lives in chips (purpose CA), and the chips build and sign every
//! certificate themselves (`ChipService.IssueCertificate`): the coordinator asks for a
//! user certificate by handing over the user's wrapped key, and for a device certificate by
//! handing over a wrapped key whose binding lists the device. It cannot have the CA key sign
//! anything else. The certificate profiles are in `yunkey_chip::activation` (`certs`).

use crate::chips::Chips;
use crate::error::{CoordError, Result};
use crate::state::{CaRecord, HolderRecord};
use yunkey_proto::v1::issue_certificate_request::Subject;
use yunkey_proto::v1::{
    CodeSigningCertificateSubject, DeviceCertificateSubject, IssueCertificateRequest,
    UserCertificateSubject,
};

/// Issues certificates with the CA key in chips.
#[derive(Clone, Debug)]
pub struct CertIssuer {
    chips: Chips,
}

impl CertIssuer {
    /// An issuer using `chips`.
    pub fn new(chips: Chips) -> Self {
        Self { chips }
    }

    /// Asks the CA key's holders, in routing order, until one issues.
    async fn issue(&self, holders: &[HolderRecord], subject: Subject) -> Result<Vec<u8>> {
        let (_, certificate) = self
            .chips
            .first_answer(holders, "the user CA key", |chip, holder| {
                let request = IssueCertificateRequest {
                    ca_key_handle: holder.key_handle,
                    subject: Some(subject.clone()),
                };
                async move { Ok(chip.issue_certificate(request).await?.certificate) }
            })
            .await?;
        Ok(certificate)
    }

    /// The self-signed user CA certificate, made by the CA key held by `holders`.
    pub async fn self_signed_ca(&self, holders: &[HolderRecord], name: &str) -> Result<Vec<u8>> {
        self.issue(holders, Subject::CaCommonName(name.to_owned()))
            .await
    }

    /// A user certificate for the key in `wrapped_user_key`.
    pub async fn user_certificate(
        &self,
        ca: &CaRecord,
        wrapped_user_key: &[u8],
        display_name: &str,
    ) -> Result<Vec<u8>> {
        self.issue(
            &ca.holders,
            Subject::User(UserCertificateSubject {
                wrapped_user_key: wrapped_user_key.to_vec(),
                display_name: display_name.to_owned(),
            }),
        )
        .await
    }

    /// A device certificate for `device_id`, bound in `wrapped_user_key`'s binding.
    pub async fn device_certificate(
        &self,
        ca: &CaRecord,
        wrapped_user_key: &[u8],
        device_id: &str,
        validity_secs: i64,
    ) -> Result<Vec<u8>> {
        self.issue(
            &ca.holders,
            Subject::Device(DeviceCertificateSubject {
                wrapped_user_key: wrapped_user_key.to_vec(),
                device_id: device_id.to_owned(),
                validity_seconds: validity_secs,
            }),
        )
        .await
    }

    /// The code-signing certificate for the CODE_SIGNING key in `wrapped_key`.
    pub async fn code_signing_certificate(
        &self,
        ca: &CaRecord,
        wrapped_key: &[u8],
    ) -> Result<Vec<u8>> {
        self.issue(
            &ca.holders,
            Subject::CodeSigning(CodeSigningCertificateSubject {
                wrapped_code_signing_key: wrapped_key.to_vec(),
            }),
        )
        .await
    }
}

/// The SubjectPublicKeyInfo DER inside a certificate.
pub fn certificate_spki(cert_der: &[u8]) -> Result<Vec<u8>> {
    use der::{Decode, Encode};
    let cert = x509_cert::Certificate::from_der(cert_der)
        .map_err(|e| CoordError::Internal(format!("stored certificate does not parse: {e}")))?;
    cert.tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| CoordError::Internal(e.to_string()))
}
