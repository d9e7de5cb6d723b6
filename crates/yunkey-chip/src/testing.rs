//! Fixtures for tests and the [`crate::conformance`] suite: a user CA, device certificates
//! (made with rcgen, like the coordinator's user CA makes them), device authorizations and
//! canonical transactions. Not for production use: keys here are throwaway.

use p256::pkcs8::EncodePrivateKey;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use yunkey_crypto::ecdsa::PrivateKey;
use yunkey_crypto::{authz, names, tx, Digest};
use yunkey_proto::v1::Transaction;

/// Current Unix time in seconds.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An rcgen key pair holding the same P-256 scalar as `key`.
fn rcgen_key(key: &PrivateKey) -> KeyPair {
    let secret = key.to_secret_bytes();
    let sk = p256::SecretKey::from_slice(&secret).expect("valid scalar");
    let der = sk.to_pkcs8_der().expect("PKCS#8 encoding");
    KeyPair::try_from(der.as_bytes()).expect("rcgen reads P-256 PKCS#8")
}

/// A user CA (ECDSA P-256) that issues device certificates.
pub struct UserCa {
    key: KeyPair,
    params: CertificateParams,
    /// The CA certificate (DER): the chips' trust anchor.
    pub cert_der: Vec<u8>,
}

impl std::fmt::Debug for UserCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCa").finish_non_exhaustive()
    }
}

impl UserCa {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(365);
        let cert = params.self_signed(&key).expect("self-signed CA");
        Self {
            cert_der: cert.der().to_vec(),
            key,
            params,
        }
    }

    /// A device certificate for `device_id` of `user_id`, valid from an hour ago for a year.
    pub fn issue_device(&self, user_id: &str, device_id: &str) -> Device {
        let now = now_unix();
        self.issue_device_with(user_id, device_id, now - 3600, now + 365 * 86400)
    }

    /// A device certificate with explicit validity (Unix seconds).
    pub fn issue_device_with(
        &self,
        user_id: &str,
        device_id: &str,
        not_before: i64,
        not_after: i64,
    ) -> Device {
        let key = PrivateKey::generate();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, device_id);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![
            SanType::URI(names::user_uri(user_id).try_into().expect("URI")),
            SanType::URI(names::device_uri(device_id).try_into().expect("URI")),
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).expect("time");
        params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).expect("time");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params
            .signed_by(&rcgen_key(&key), &issuer)
            .expect("device certificate");
        Device {
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            cert_der: cert.der().to_vec(),
            key,
        }
    }
}

/// A user's device: its id, certificate and key.
#[derive(Debug)]
pub struct Device {
    /// The user it belongs to.
    pub user_id: String,
    /// Its id.
    pub device_id: String,
    /// Its certificate (DER).
    pub cert_der: Vec<u8>,
    /// Its private key.
    pub key: PrivateKey,
}

impl Device {
    /// The device's signature approving `canonical_transaction` for `user_id`.
    pub fn authorize_for(&self, user_id: &str, canonical_transaction: &[u8]) -> Vec<u8> {
        let tx_hash = yunkey_crypto::sha256(canonical_transaction);
        self.key.sign_message(&authz::authorization_message(
            user_id,
            &self.device_id,
            &tx_hash,
        ))
    }

    /// The device's signature approving `canonical_transaction` for its own user.
    pub fn authorize(&self, canonical_transaction: &[u8]) -> Vec<u8> {
        self.authorize_for(&self.user_id, canonical_transaction)
    }

    /// A complete sign request for `key_handle` over `canonical_transaction`.
    pub fn request(&self, key_handle: &str, canonical_transaction: &[u8]) -> crate::SignAuthorized {
        crate::SignAuthorized {
            key_handle: key_handle.to_owned(),
            user_id: self.user_id.clone(),
            canonical_transaction: canonical_transaction.to_vec(),
            device_certificate: self.cert_der.clone(),
            device_id: self.device_id.clone(),
            authorization_signature: self.authorize(canonical_transaction),
        }
    }
}

/// A valid transaction of `amount` expiring at `expires_at`, with a fresh random nonce.
pub fn transaction(amount: &str, expires_at: i64) -> Transaction {
    Transaction {
        payer: "acct-alice".into(),
        payee: "shop-42".into(),
        amount: amount.into(),
        currency: "CNY".into(),
        transaction_id: format!("tx-{}", hex::encode(yunkey_crypto::random_bytes::<8>())),
        nonce: yunkey_crypto::random_bytes::<16>().to_vec(),
        expires_at,
    }
}

/// Canonical bytes and hash of a fresh transaction expiring in `secs` seconds.
pub fn canonical_tx(amount: &str, expires_in_secs: i64) -> (Vec<u8>, Digest) {
    canonical_tx_at(amount, now_unix() + expires_in_secs)
}

/// Canonical bytes and hash of a fresh transaction expiring at `expires_at` (not
/// validated against the clock, so it can make expired ones).
pub fn canonical_tx_at(amount: &str, expires_at: i64) -> (Vec<u8>, Digest) {
    tx::encode_and_hash(&transaction(amount, expires_at)).expect("valid transaction")
}
