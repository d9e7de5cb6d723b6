//! The device's side: registering with an activation code, and authorizing one exact
//! transaction.

use crate::keystore::{DeviceInfo, Keystore, UserVerifier};
use crate::{ClientError, Connection};
use yunkey_crypto::{authz, tx};
use yunkey_proto::v1::{
    Authorization, AuthorizationFormat, GetTimeRequest, RegisterDeviceRequest,
    RegisterDeviceResponse, SignRequest, SignResponse, Transaction,
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
) -> Result<RegisterDeviceResponse, ClientError> {
    let key = match keystore.device(user_id) {
        // A key made by an earlier, interrupted attempt.
        Ok(None) if keystore.public_key(user_id)?.is_some() => {
            keystore.unlock(user_id, verifier)?
        }
        // No key yet, or one destroyed by a lockout (the device was re-activated); a
        // registered, usable key makes `create_key` refuse.
        Ok(_) | Err(ClientError::Locked { .. }) => keystore.create_key(user_id, verifier)?,
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
    )?;
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
/// [`AuthorizationFormat::EcdsaP256Sha256`]), after the keystore verified the user.
pub fn authorize(
    keystore: &dyn Keystore,
    user_id: &str,
    verifier: &dyn UserVerifier,
    tx: &Transaction,
) -> Result<Authorization, ClientError> {
    let device = keystore.device(user_id)?.ok_or_else(|| {
        ClientError::Invalid(format!(
            "no registered device for {user_id}; run `yunkey terminal register`"
        ))
    })?;
    let (_, tx_hash) = tx::encode_and_hash(tx)?;
    let message = authz::authorization_message(user_id, &device.device_id, &tx_hash);
    let key = keystore.unlock(user_id, verifier)?;
    Ok(Authorization {
        device_id: device.device_id,
        signature: key.sign(&message)?,
        format: AuthorizationFormat::EcdsaP256Sha256 as i32,
    })
}

/// Authorizes `tx` on this device and submits it; returns the signature and chain.
pub async fn pay(
    conn: &Connection,
    keystore: &dyn Keystore,
    user_id: &str,
    verifier: &dyn UserVerifier,
    tx: Transaction,
) -> Result<SignResponse, ClientError> {
    let authorization = authorize(keystore, user_id, verifier, &tx)?;
    let req = SignRequest {
        request_id: format!("pay-{}", hex::encode(yunkey_crypto::random_bytes::<12>())),
        user_id: user_id.to_owned(),
        transaction: Some(tx),
        authorization: Some(authorization),
    };
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
