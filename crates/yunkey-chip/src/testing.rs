//! Fixtures for tests and the [`crate::conformance`] suite: an operator who admits chips, a
//! user CA made inside a chip, devices that bind with an activation code and authorize
//! transactions, and canonical transactions. Not for production use: keys here are throwaway.

use crate::binding::PendingActivation;
use crate::{
    BindDevice, CertificateSubject, ChipAdmission, ChipBackend, ChipError, GenerateKey,
    GeneratedKey, IssueCertificate, KeyPurpose,
};
use yunkey_crypto::cipher::Cipher;
use yunkey_crypto::ecdsa::PrivateKey;
use yunkey_crypto::sig::{Algorithm, SigningKey};
use yunkey_crypto::{authz, names, tx, Digest};
use yunkey_proto::v1::Transaction;

/// Current Unix time in seconds.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The holder of a domain's operator key.
#[derive(Debug)]
pub struct Operator {
    /// The operator's private key.
    pub key: PrivateKey,
}

impl Default for Operator {
    fn default() -> Self {
        Self::new()
    }
}

impl Operator {
    /// A fresh operator key.
    pub fn new() -> Self {
        Self {
            key: PrivateKey::generate(),
        }
    }

    /// The operator key's SubjectPublicKeyInfo DER.
    pub fn public_spki(&self) -> Vec<u8> {
        self.key.public_key().to_spki_der()
    }

    /// The operator's admission of `chip`.
    pub fn admit(&self, chip: &dyn ChipBackend) -> ChipAdmission {
        let info = chip.info().expect("chip info");
        let message = authz::chip_admission_message(&info.chip_id, &info.transport_public_key);
        ChipAdmission {
            chip_id: info.chip_id,
            transport_public_key: info.transport_public_key,
            operator_signature: self.key.sign_message(&message),
        }
    }

    /// Creates an AES-256 domain in `chip` with this operator's key; returns its id.
    pub fn init_domain(&self, chip: &dyn ChipBackend) -> String {
        self.init_domain_with(chip, Cipher::Aes256)
            .expect("init_domain")
    }

    /// Creates a domain of `cipher` in `chip` with this operator's key; returns its id.
    pub fn init_domain_with(
        &self,
        chip: &dyn ChipBackend,
        cipher: Cipher,
    ) -> Result<String, ChipError> {
        let admission = self.admit(chip);
        chip.init_domain(&self.public_spki(), &admission.operator_signature, cipher)
    }

    /// Joins `to` to the domain of `from`.
    pub fn join(&self, from: &dyn ChipBackend, to: &dyn ChipBackend) -> String {
        let export = from.export_domain(&self.admit(to)).expect("export_domain");
        to.import_domain(&export.envelope).expect("import_domain")
    }
}

/// A CA key made in a chip and its self-signed certificate, set as the chip's trust anchor.
#[derive(Debug, Clone)]
pub struct ChipCa {
    /// The CA key as generated.
    pub key: GeneratedKey,
    /// The CA certificate (DER).
    pub cert_der: Vec<u8>,
}

impl ChipCa {
    /// Makes the P-256 CA in `chip` (which must be in a domain) and sets it as its trust
    /// anchor.
    pub fn create(chip: &dyn ChipBackend, name: &str) -> Self {
        Self::create_with(chip, name, Algorithm::EcdsaP256)
    }

    /// Makes a CA of `algorithm` in `chip` and sets it as that algorithm's trust anchor.
    pub fn create_with(chip: &dyn ChipBackend, name: &str, algorithm: Algorithm) -> Self {
        let key = chip
            .generate_key(&GenerateKey {
                algorithm,
                distid: String::new(),
                purpose: KeyPurpose::Ca,
                user_id: String::new(),
                activation: None,
            })
            .expect("CA key");
        let cert_der = chip
            .issue_certificate(&IssueCertificate {
                ca_key_handle: key.handle.clone(),
                subject: CertificateSubject::Ca {
                    common_name: name.into(),
                },
            })
            .expect("CA certificate");
        chip.set_trust_anchor(&cert_der).expect("trust anchor");
        Self { key, cert_der }
    }
}

/// A fresh activation code and its pending activation (valid for an hour).
pub fn activation() -> (String, PendingActivation) {
    let code = format!("CODE-{}", hex::encode(yunkey_crypto::random_bytes::<6>()));
    let pending = PendingActivation {
        code_sha256: yunkey_crypto::sha256(code.as_bytes()),
        expires_at: now_unix() + 3600,
    };
    (code, pending)
}

/// Generates a user key for `user_id` in `chip` with a fresh activation; returns the key and
/// the activation code.
pub fn enrol(chip: &dyn ChipBackend, user_id: &str) -> (GeneratedKey, String) {
    enrol_with(chip, user_id, Algorithm::EcdsaP256, "")
}

/// [`enrol`] with a key of `algorithm` and, for SM2, a distinguishing ID (empty: default).
pub fn enrol_with(
    chip: &dyn ChipBackend,
    user_id: &str,
    algorithm: Algorithm,
    distid: &str,
) -> (GeneratedKey, String) {
    let (code, pending) = activation();
    let key = chip
        .generate_key(&GenerateKey {
            algorithm,
            distid: distid.into(),
            purpose: KeyPurpose::User,
            user_id: user_id.into(),
            activation: Some(pending),
        })
        .expect("user key");
    (key, code)
}

/// A user's device: its key and the id derived from it.
#[derive(Debug)]
pub struct Device {
    /// The user it belongs to.
    pub user_id: String,
    /// Its id ([`names::device_id`] of its key).
    pub device_id: String,
    /// Its private key.
    pub key: SigningKey,
}

impl Device {
    /// A new device of `user_id` with a P-256 key.
    pub fn new(user_id: &str) -> Self {
        Self::new_with(user_id, Algorithm::EcdsaP256)
    }

    /// A new device of `user_id` with a key of `algorithm`.
    pub fn new_with(user_id: &str, algorithm: Algorithm) -> Self {
        let key = SigningKey::generate(algorithm);
        Self {
            user_id: user_id.to_owned(),
            device_id: names::device_id(&key.public_key().to_spki_der()),
            key,
        }
    }

    /// The request binding this device to `key_handle` with `activation_code`.
    pub fn bind_request(&self, key_handle: &str, activation_code: &str) -> BindDevice {
        let spki = self.key.public_key().to_spki_der();
        BindDevice {
            key_handle: key_handle.to_owned(),
            user_id: self.user_id.clone(),
            activation_code: activation_code.to_owned(),
            proof: self.key.sign_message(&authz::registration_message(
                &self.user_id,
                activation_code,
                &spki,
            )),
            device_public_key: spki,
        }
    }

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
            device_id: self.device_id.clone(),
            authorization_signature: self.authorize(canonical_transaction),
            authorization_format: yunkey_crypto::authz::AuthorizationFormat::for_key(
                self.key.algorithm(),
            ),
            binding_seq: 0,
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
