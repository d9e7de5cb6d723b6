//! The user CA. Its private key lives in chips (purpose CA); certificates are built with
//! rcgen and their to-be-signed bytes are hashed here and signed by a chip (`SignDigest`).
//!
//! User certificates: subject CN = user id (plus the display name as O if given), URI SAN
//! `urn:yunkey:user:<id>`, key usage digitalSignature + nonRepudiation. Device
//! certificates: CN = device id, URI SANs for user and device, key usage digitalSignature.

use crate::chips::{chip_err, Chips};
use crate::error::{CoordError, Result};
use crate::state::{CaRecord, HolderRecord};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyUsagePurpose,
    PublicKeyData, SanType, SerialNumber, SignatureAlgorithm, SigningKey, PKCS_ECDSA_P256_SHA256,
};
use yunkey_crypto::ecdsa::PublicKey;
use yunkey_proto::v1::SignDigestRequest;

/// Validity of user and device certificates, in days.
pub const LEAF_VALIDITY_DAYS: i64 = 730;
/// Validity of the user CA certificate, in days.
pub const CA_VALIDITY_DAYS: i64 = 3650;

/// A P-256 public key as rcgen wants it.
struct SubjectKey {
    sec1: Vec<u8>,
}

impl SubjectKey {
    fn from_spki(spki: &[u8]) -> Result<Self> {
        let key =
            PublicKey::from_spki_der(spki).map_err(|e| CoordError::Internal(e.to_string()))?;
        Ok(Self {
            sec1: key.to_sec1(),
        })
    }
}

impl PublicKeyData for SubjectKey {
    fn der_bytes(&self) -> &[u8] {
        &self.sec1
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

/// Signs with a CA key held by a chip. rcgen's signing is synchronous, so this must run on a
/// blocking thread (it blocks on the async chip call).
struct ChipSigner {
    chips: Chips,
    holders: Vec<HolderRecord>,
    public: SubjectKey,
    runtime: tokio::runtime::Handle,
}

impl PublicKeyData for ChipSigner {
    fn der_bytes(&self) -> &[u8] {
        self.public.der_bytes()
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

impl SigningKey for ChipSigner {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        let digest = yunkey_crypto::sha256(msg);
        self.runtime
            .block_on(sign_digest(&self.chips, &self.holders, digest))
            .map_err(|e| {
                tracing::warn!(error = %e, "CA signing in a chip failed");
                rcgen::Error::RemoteKeyError
            })
    }
}

/// Signs a digest with the CA key on the first holder that answers.
async fn sign_digest(chips: &Chips, holders: &[HolderRecord], digest: [u8; 32]) -> Result<Vec<u8>> {
    let mut last = CoordError::Unavailable("the user CA key has no holder".into());
    for holder in chips.order_holders(holders) {
        let Some(endpoint) = chips.endpoint_of(&holder.chip_id) else {
            continue;
        };
        let mut client = chips.client(&endpoint)?;
        let req = chips.request(SignDigestRequest {
            key_handle: holder.key_handle.clone(),
            digest: digest.to_vec(),
        });
        match client.sign_digest(req).await {
            Ok(resp) => return Ok(resp.into_inner().signature),
            Err(status) => last = chip_err(&holder.chip_id)(status),
        }
    }
    Err(last)
}

fn leaf_params(
    common_name: &str,
    sans: Vec<String>,
    usages: Vec<KeyUsagePurpose>,
) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    for uri in sans {
        params
            .subject_alt_names
            .push(SanType::URI(uri.try_into().map_err(
                |e: rcgen::Error| CoordError::Internal(e.to_string()),
            )?));
    }
    params.key_usages = usages;
    params.serial_number = Some(SerialNumber::from_slice(&serial()));
    validity(&mut params, LEAF_VALIDITY_DAYS);
    Ok(params)
}

fn serial() -> [u8; 16] {
    let mut s: [u8; 16] = yunkey_crypto::random_bytes();
    s[0] &= 0x7f; // positive
    s[0] |= 0x01; // no leading zero byte
    s
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(days);
}

/// Issues certificates with the CA key in chips.
#[derive(Clone, Debug)]
pub struct CertIssuer {
    chips: Chips,
}

impl CertIssuer {
    /// An issuer using `chips` for CA signatures.
    pub fn new(chips: Chips) -> Self {
        Self { chips }
    }

    async fn build(
        &self,
        ca_public_spki: Vec<u8>,
        holders: Vec<HolderRecord>,
        make: impl FnOnce(ChipSigner) -> Result<Vec<u8>> + Send + 'static,
    ) -> Result<Vec<u8>> {
        let signer = ChipSigner {
            chips: self.chips.clone(),
            holders,
            public: SubjectKey::from_spki(&ca_public_spki)?,
            runtime: tokio::runtime::Handle::current(),
        };
        tokio::task::spawn_blocking(move || make(signer))
            .await
            .map_err(|e| CoordError::Internal(format!("certificate task failed: {e}")))?
    }

    /// The self-signed user CA certificate for a CA key (SPKI) held by `holders`.
    pub async fn self_signed_ca(
        &self,
        ca_spki: Vec<u8>,
        holders: Vec<HolderRecord>,
        name: &str,
    ) -> Result<Vec<u8>> {
        let name = name.to_owned();
        self.build(ca_spki, holders, move |signer| {
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::OrganizationName, "yunkey");
            dn.push(DnType::CommonName, name);
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.serial_number = Some(SerialNumber::from_slice(&serial()));
            validity(&mut params, CA_VALIDITY_DAYS);
            let cert = params.self_signed(&signer).map_err(cert_err)?;
            Ok(cert.der().to_vec())
        })
        .await
    }

    /// A user certificate for `user_spki`.
    pub async fn user_certificate(
        &self,
        ca: &CaRecord,
        ca_spki: Vec<u8>,
        user_id: &str,
        display_name: &str,
        user_spki: &[u8],
    ) -> Result<Vec<u8>> {
        let subject = SubjectKey::from_spki(user_spki)?;
        let mut params = leaf_params(
            user_id,
            vec![yunkey_crypto::names::user_uri(user_id)],
            vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::ContentCommitment,
            ],
        )?;
        if !display_name.is_empty() {
            params
                .distinguished_name
                .push(DnType::OrganizationName, display_name);
        }
        self.sign_leaf(ca, ca_spki, params, subject).await
    }

    /// A device certificate binding `device_spki` to `user_id`.
    pub async fn device_certificate(
        &self,
        ca: &CaRecord,
        ca_spki: Vec<u8>,
        user_id: &str,
        device_id: &str,
        device_spki: &[u8],
    ) -> Result<Vec<u8>> {
        let subject = SubjectKey::from_spki(device_spki)?;
        let params = leaf_params(
            device_id,
            vec![
                yunkey_crypto::names::user_uri(user_id),
                yunkey_crypto::names::device_uri(device_id),
            ],
            vec![KeyUsagePurpose::DigitalSignature],
        )?;
        self.sign_leaf(ca, ca_spki, params, subject).await
    }
}

impl CertIssuer {
    /// Signs a leaf certificate for `subject` with the user CA key held in chips.
    async fn sign_leaf(
        &self,
        ca: &CaRecord,
        ca_spki: Vec<u8>,
        params: CertificateParams,
        subject: SubjectKey,
    ) -> Result<Vec<u8>> {
        let ca_der = ca.certificate.clone();
        self.build(ca_spki, ca.holders.clone(), move |signer| {
            let issuer = Issuer::from_ca_cert_der(&ca_der.into(), signer).map_err(cert_err)?;
            Ok(params
                .signed_by(&subject, &issuer)
                .map_err(cert_err)?
                .der()
                .to_vec())
        })
        .await
    }
}

fn cert_err(e: rcgen::Error) -> CoordError {
    CoordError::Internal(format!("certificate generation failed: {e}"))
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
