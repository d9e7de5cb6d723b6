//! The device's side: registering with an activation code, the device channel (mutual TLS
//! with the device certificate), authorizing one exact transaction, and renewing the device
//! certificate.

use crate::keystore::{DeviceInfo, DeviceKey, Keystore, UserVerifier};
use crate::{ClientError, Connection};
use std::sync::Arc;
use yunkey_crypto::sig::Algorithm;
use yunkey_crypto::{authz, tx};
use yunkey_net::device_tls::{DeviceIdentity, HandshakeSigner};
use yunkey_net::reason::Reason;
use yunkey_proto::v1::{
    Authorization, BiometricEvidence, Geolocation, GetTimeRequest, RegisterDeviceRequest,
    RegisterDeviceResponse, RenewDeviceRequest, SignRequest, SignResponse, Transaction,
};

/// Creates a device key (the user chooses its PIN through `verifier`), proves possession with
/// the activation code, and records the device id and certificate in the keystore. A key left
/// unregistered by an interrupted attempt is reused (unlocked through `verifier`); a key
/// destroyed by a lockout is replaced.
pub async fn register(
    conn: &Connection,
    keystore: &dyn Keystore,
    user_id: &str,
    activation_code: &str,
    verifier: &dyn UserVerifier,
    device_name: &str,
    algorithm: Algorithm,
) -> Result<RegisterDeviceResponse, ClientError> {
    let key = match keystore.device(user_id) {
        // A key made by an earlier, interrupted attempt.
        Ok(None) if keystore.public_key(user_id)?.is_some() => {
            keystore.unlock(user_id, verifier)?
        }
        // No key yet, or one destroyed by a lockout (the device was re-activated); a
        // registered, usable key makes `create_key` refuse.
        Ok(_) | Err(ClientError::Locked { .. }) => {
            keystore.create_key_of(user_id, algorithm, verifier)?
        }
        Err(e) => return Err(e),
    };
    let spki = key.public_key_spki();
    let proof = key.sign(&authz::registration_message(
        user_id,
        activation_code,
        &spki,
    ))?;
    let req = RegisterDeviceRequest {
        request_id: String::new(),
        user_id: user_id.to_owned(),
        activation_code: activation_code.to_owned(),
        device_public_key: spki,
        proof,
        device_name: device_name.to_owned(),
        release_id: conn.release_id().to_owned(),
    };
    let resp = conn
        .call(|ch| {
            let req = req.clone();
            async move {
                crate::connection::terminal_client(ch)
                    .register_device(req)
                    .await
            }
        })
        .await?;
    record_device(keystore, user_id, &resp)?;
    Ok(resp)
}

/// A new transaction with a random nonce and transaction id, expiring `ttl_secs` after
/// `now` (use the server's clock from [`server_time`]).
pub fn new_transaction(
    payer: &str,
    payee: &str,
    amount: &str,
    currency: &str,
    now: i64,
    ttl_secs: i64,
) -> Result<Transaction, ClientError> {
    let tx = Transaction {
        payer: payer.to_owned(),
        payee: payee.to_owned(),
        amount: tx::canonical_amount(amount)?,
        currency: currency.to_ascii_uppercase(),
        transaction_id: format!("tx-{}", hex::encode(yunkey_crypto::random_bytes::<8>())),
        nonce: yunkey_crypto::random_bytes::<16>().to_vec(),
        expires_at: now + ttl_secs,
    };
    tx::validate(&tx)?;
    Ok(tx)
}

/// Records the device and certificate of a registration or renewal reply in the keystore.
fn record_device(
    keystore: &dyn Keystore,
    user_id: &str,
    resp: &RegisterDeviceResponse,
) -> Result<(), ClientError> {
    let device = resp
        .device
        .as_ref()
        .ok_or_else(|| ClientError::Invalid("server returned no device".into()))?;
    keystore.set_device(
        user_id,
        &DeviceInfo {
            device_id: device.device_id.clone(),
            certificate: device.certificate.clone(),
        },
    )
}

/// The server's clock, Unix seconds.
pub async fn server_time(conn: &Connection) -> Result<i64, ClientError> {
    let resp = conn
        .call(|ch| async move {
            crate::connection::terminal_client(ch)
                .get_time(GetTimeRequest {})
                .await
        })
        .await?;
    Ok(resp.unix_seconds)
}

/// The device's authorization of exactly `tx` (format
/// [`authz::AuthorizationFormat::EcdsaP256Sha256`] or [`authz::AuthorizationFormat::Sm2Sm3`], as the
/// device key is), after the keystore verified the user.
pub fn authorize(
    keystore: &dyn Keystore,
    user_id: &str,
    key: &dyn DeviceKey,
    tx: &Transaction,
) -> Result<Authorization, ClientError> {
    let device = keystore.device(user_id)?.ok_or_else(|| {
        ClientError::Invalid(format!(
            "no registered device for {user_id}; run `yunkey terminal register`"
        ))
    })?;
    let (_, tx_hash) = tx::encode_and_hash(tx)?;
    let message = authz::authorization_message(user_id, &device.device_id, &tx_hash);
    Ok(Authorization {
        device_id: device.device_id,
        signature: key.sign(&message)?,
        format: authz::AuthorizationFormat::for_key(key.algorithm()).to_wire(),
    })
}

/// Signs TLS handshakes with a device key opened in its keystore.
struct KeyHandshake(Arc<dyn DeviceKey>);

impl std::fmt::Debug for KeyHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyHandshake").finish_non_exhaustive()
    }
}

impl HandshakeSigner for KeyHandshake {
    fn scheme(&self) -> yunkey_net::device_tls::SignatureScheme {
        match self.0.algorithm() {
            Algorithm::EcdsaP256 => yunkey_net::device_tls::SignatureScheme::ECDSA_NISTP256_SHA256,
            Algorithm::Sm2 => yunkey_net::sm2_tls::SM2SIG_SM3,
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        self.0.sign_handshake(message).map_err(|e| e.to_string())
    }
}

/// The device's identity on the device channel: its current certificate from the keystore,
/// and a signer that makes the TLS handshake's signature with the device key, inside the
/// keystore. Refuses, saying so, when there is no registered device or its certificate has
/// expired (a device whose certificate expired must be re-activated).
pub fn device_identity(
    keystore: &dyn Keystore,
    user_id: &str,
    key: Arc<dyn DeviceKey>,
) -> Result<DeviceIdentity, ClientError> {
    let device = keystore.device(user_id)?.ok_or_else(|| {
        ClientError::Invalid(format!(
            "no registered device for {user_id}; run `yunkey terminal register` first"
        ))
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    match yunkey_net::role::certificate_not_after(&device.certificate) {
        Some(not_after) if not_after <= now => {
            return Err(ClientError::Invalid(format!(
                "the certificate of device {} expired at Unix time {not_after}; renew before                  expiry (`yunkey terminal renew`); after it, ask for a new activation code                  (`yunkey user reactivate {user_id}`) and register again",
                device.device_id
            )))
        }
        Some(_) => {}
        None => {
            return Err(ClientError::Invalid(
                "the keystore's device certificate does not parse".into(),
            ))
        }
    }
    Ok(identity(device.certificate, key))
}

/// The identity on the device channel of a device with `certificate` (DER) whose key `key`
/// signs the handshake.
pub fn identity(certificate: Vec<u8>, key: Arc<dyn DeviceKey>) -> DeviceIdentity {
    DeviceIdentity {
        certificate,
        signer: Arc::new(KeyHandshake(key)),
    }
}

/// Renews the device certificate over the device channel `conn`, and records the new one in
/// the keystore.
pub async fn renew(
    conn: &Connection,
    keystore: &dyn Keystore,
    user_id: &str,
) -> Result<RegisterDeviceResponse, ClientError> {
    let device = keystore.device(user_id)?.ok_or_else(|| {
        ClientError::Invalid(format!(
            "no registered device for {user_id}; run `yunkey terminal register` first"
        ))
    })?;
    let req = RenewDeviceRequest {
        request_id: format!("renew-{}", hex::encode(yunkey_crypto::random_bytes::<12>())),
        user_id: user_id.to_owned(),
        device_id: device.device_id.clone(),
    };
    let resp = conn
        .call(|ch| {
            let req = req.clone();
            async move {
                crate::connection::terminal_client(ch)
                    .renew_device(req)
                    .await
            }
        })
        .await?;
    record_device(keystore, user_id, &resp)?;
    Ok(resp)
}

/// What a payment may carry besides the transaction and its authorization (docs/risk.md).
#[derive(Default, Clone)]
pub struct PayOptions {
    /// A photo of the user's face (JPEG or PNG), sent only when the risk service asks for a
    /// step-up.
    pub face: Option<Vec<u8>>,
    /// Where the device is, passed to the risk service.
    pub location: Option<Geolocation>,
}

// Hand-written: a face photo is personal data and never goes to a log.
impl std::fmt::Debug for PayOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayOptions")
            .field(
                "face",
                &self.face.as_ref().map(|p| format!("{} bytes", p.len())),
            )
            .field("location", &self.location)
            .finish()
    }
}

/// Authorizes `tx` on this device and submits it over the device channel `conn`
/// ([`Connection::device`] with [`device_identity`]); returns the signature and chain.
///
/// When the risk service asks for a step-up and `options.face` holds a photo, the same
/// authorized request is sent again with it (a refused attempt consumes nothing). Without a
/// photo the refusal is returned: its [`ClientError::reason`] is
/// `Reason::StepUpRequired`.
pub async fn pay(
    conn: &Connection,
    keystore: &dyn Keystore,
    user_id: &str,
    key: &dyn DeviceKey,
    tx: Transaction,
    options: &PayOptions,
) -> Result<SignResponse, ClientError> {
    let authorization = authorize(keystore, user_id, key, &tx)?;
    let mut req = SignRequest {
        request_id: format!("pay-{}", hex::encode(yunkey_crypto::random_bytes::<12>())),
        user_id: user_id.to_owned(),
        transaction: Some(tx),
        authorization: Some(authorization),
        release_id: conn.release_id().to_owned(),
        evidence: None,
        location: options.location,
    };
    match submit(conn, &req).await {
        Err(e) if e.reason() == Some(Reason::StepUpRequired) && options.face.is_some() => {
            req.evidence = Some(BiometricEvidence {
                face_image: options.face.clone().unwrap_or_default(),
            });
            submit(conn, &req).await
        }
        other => other,
    }
}

async fn submit(conn: &Connection, req: &SignRequest) -> Result<SignResponse, ClientError> {
    conn.call(|ch| {
        let req = req.clone();
        async move {
            crate::connection::terminal_client(ch)
                .sign_transaction(req)
                .await
        }
    })
    .await
}
