//! SM2 on the device channel, which rustls and webpki do not know.
//!
//! - Device certificates of SM2 users are issued by the SM2 user CA with `SM2-with-SM3`
//!   (1.2.156.10197.1.501) under the default distinguishing ID. [`Sm2Ca::verify`] checks such
//!   a certificate: issued by the SM2 user CA (name and signature), within its validity, a
//!   leaf for TLS clients (not a CA; extended key usage clientAuth).
//! - An SM2 device key signs the TLS 1.3 handshake with the `sm2sig_sm3` scheme (0x0708,
//!   RFC 8998), under the distinguishing ID RFC 8998 fixes, [`TLS13_SM2_ID`]
//!   ([`verify_handshake`]).
//!
//! Everything else (the chain of P-256 certificates, ECDSA handshake signatures) stays with
//! webpki.

use der::{Decode, Encode};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use x509_cert::Certificate;

/// `sm2sig_sm3` (RFC 8998 §3.2.1).
pub const SM2SIG_SM3: SignatureScheme = SignatureScheme::Unknown(0x0708);
/// The distinguishing ID of SM2 signatures in TLS 1.3 (RFC 8998 §3.2.1).
pub const TLS13_SM2_ID: &str = "TLSv1.3+GM+Cipher+Suite";
const SM2_WITH_SM3: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.2.156.10197.1.501");
const EXTENDED_KEY_USAGE: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("2.5.29.37");
const BASIC_CONSTRAINTS: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("2.5.29.19");
const CLIENT_AUTH: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");

fn bad(reason: &str) -> rustls::Error {
    rustls::Error::General(format!("SM2 device certificate: {reason}"))
}

fn bad_encoding() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
}

/// Whether a certificate is signed with `SM2-with-SM3` (so webpki cannot check it).
pub fn signed_with_sm2(der: &[u8]) -> bool {
    Certificate::from_der(der).is_ok_and(|c| c.signature_algorithm.oid == SM2_WITH_SM3)
}

/// The SM2 user CA, as the device channel trusts it.
#[derive(Debug, Clone)]
pub struct Sm2Ca {
    der: Vec<u8>,
    subject_der: Vec<u8>,
    key: yunkey_crypto::sm2::PublicKey,
}

impl Sm2Ca {
    /// Reads the SM2 user CA certificate (DER).
    pub fn parse(der: &[u8]) -> Result<Self, crate::NetError> {
        let bad = |what: &str| crate::NetError::Tls(format!("SM2 user CA certificate: {what}"));
        let cert = Certificate::from_der(der).map_err(|_| bad("not a DER certificate"))?;
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|_| bad("unencodable key"))?;
        Ok(Self {
            der: der.to_vec(),
            subject_der: cert
                .tbs_certificate
                .subject
                .to_der()
                .map_err(|_| bad("unencodable subject"))?,
            key: yunkey_crypto::sm2::PublicKey::from_spki_der(&spki)
                .map_err(|_| bad("its key is not SM2"))?,
        })
    }

    /// The CA certificate's DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Checks a device certificate signed with SM2-with-SM3 at `now` (Unix seconds).
    pub fn verify(&self, end_entity: &[u8], now: u64) -> Result<(), rustls::Error> {
        let cert = Certificate::from_der(end_entity).map_err(|_| bad_encoding())?;
        let tbs = &cert.tbs_certificate;
        if cert.signature_algorithm.oid != SM2_WITH_SM3 || tbs.signature.oid != SM2_WITH_SM3 {
            return Err(bad("not signed with SM2-with-SM3"));
        }
        if tbs.issuer.to_der().map_err(|_| bad_encoding())? != self.subject_der {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ));
        }
        let tbs_der = tbs.to_der().map_err(|_| bad_encoding())?;
        let signature = cert.signature.as_bytes().ok_or_else(bad_encoding)?;
        self.key
            .verify_message(&tbs_der, signature)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadSignature))?;
        let not_before = tbs.validity.not_before.to_unix_duration().as_secs();
        let not_after = tbs.validity.not_after.to_unix_duration().as_secs();
        if now < not_before {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidYet,
            ));
        }
        if now > not_after {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
        }
        let extensions = tbs.extensions.as_deref().unwrap_or_default();
        for ext in extensions {
            if ext.extn_id == BASIC_CONSTRAINTS {
                let bc =
                    x509_cert::ext::pkix::BasicConstraints::from_der(ext.extn_value.as_bytes())
                        .map_err(|_| bad_encoding())?;
                if bc.ca {
                    return Err(bad("is a CA certificate"));
                }
            }
        }
        let client_auth = extensions
            .iter()
            .filter(|e| e.extn_id == EXTENDED_KEY_USAGE)
            .filter_map(|e| {
                x509_cert::ext::pkix::ExtendedKeyUsage::from_der(e.extn_value.as_bytes()).ok()
            })
            .any(|eku| eku.0.contains(&CLIENT_AUTH));
        if !client_auth {
            return Err(bad("does not allow TLS client authentication"));
        }
        Ok(())
    }
}

/// Verifies a TLS 1.3 `sm2sig_sm3` handshake signature by the SM2 key in `cert`.
pub fn verify_handshake(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let cert = Certificate::from_der(cert.as_ref()).map_err(|_| bad_encoding())?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|_| bad_encoding())?;
    let key = yunkey_crypto::sm2::PublicKey::from_spki_der(&spki)
        .and_then(|k| k.with_distid(TLS13_SM2_ID))
        .map_err(|_| {
            rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            )
        })?;
    key.verify_message(message, dss.signature())
        .map(|()| HandshakeSignatureValid::assertion())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadSignature))
}
