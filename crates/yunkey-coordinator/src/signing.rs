//! The sign path. In order: fields, user and device (local state), expiry, the device's
//! signature (checked here), the business's risk checks ([`crate::risk`]), the authorization
//! consumed through Raft with what the risk checks decided (replay defence and audit), then a healthy chip holding the key re-checks everything itself against the key's
//! binding (the devices bound to it inside the chips) and signs the hash it computes from the
//! canonical bytes. A holder whose binding is older than the committed one is sent the
//! committed wrapped key first.

use crate::core::Core;
use crate::error::{CoordError, Result};
use crate::state::{Op, UserRef, UserState};
use yunkey_crypto::authz;
use yunkey_crypto::sig::{Algorithm, VerifyingKey};
use yunkey_crypto::tx::{self, MAX_AUTHORIZATION_LIFETIME_SECS};
use yunkey_crypto::validate::{self, InvalidField};
use yunkey_proto::v1::{
    SignAuthorizedRequest, SignRequest, SignResponse, VerifyRequest, VerifyResponse,
};

/// Most items in one `KeyService.SignBatch` call.
pub const MAX_BATCH_ITEMS: usize = 256;

/// Longest DER signature of a 256-bit curve (ECDSA P-256 or SM2).
const MAX_SIGNATURE_LEN: usize = 72;

fn check_signature_field(field: &'static str, sig: &[u8]) -> Result<()> {
    if sig.len() < 8 || sig.len() > MAX_SIGNATURE_LEN {
        return Err(InvalidField::new(
            field,
            format!(
                "is {} bytes; a DER ECDSA P-256 or SM2 signature is 8 to {MAX_SIGNATURE_LEN} bytes",
                sig.len()
            ),
        )
        .into());
    }
    Ok(())
}

/// Who asks for a signature, and over which API.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// For the audit trail.
    pub actor: &'a str,
    /// `terminal` (the device channel) or `business` (KeyService.Sign).
    pub channel: &'static str,
    /// The caller's address.
    pub source: Option<std::net::SocketAddr>,
}

/// Signs a transaction the user's device authorized.
pub async fn sign(core: &Core, caller: Caller<'_>, req: SignRequest) -> Result<SignResponse> {
    let actor = caller.actor;
    validate::identifier("user_id", &req.user_id)?;
    let tx = req
        .transaction
        .ok_or_else(|| InvalidField::new("transaction", "is required"))?;
    let authorization = req
        .authorization
        .ok_or_else(|| InvalidField::new("authorization", "is required"))?;
    validate::identifier("authorization.device_id", &authorization.device_id)?;
    let format = authz::AuthorizationFormat::from_wire(authorization.format)?;
    check_signature_field("authorization.signature", &authorization.signature)?;
    let (canonical, tx_hash) = tx::encode_and_hash(&tx)?;
    // Without a request id, the transaction itself is the idempotency key: a blind retry of
    // the same authorization gets a signature instead of a replay error (see `Retry`).
    let request_id = crate::enroll::request_id(&req.request_id, String::new)?;

    let signer = match core.view.with_user(&req.user_id, |user| {
        Signer::read(user, &authorization.device_id)
    })? {
        None => return Err(CoordError::UserNotFound(req.user_id)),
        Some(Err(refused)) => {
            return Err(refused.into_error(core, req.user_id, authorization.device_id))
        }
        Some(Ok(signer)) => signer,
    };
    tx::check_expiry(
        tx.expires_at,
        crate::clock::now(),
        MAX_AUTHORIZATION_LIFETIME_SECS,
    )?;
    authz::verify_authorization(
        format,
        &signer.device_key,
        &req.user_id,
        &authorization.device_id,
        &tx_hash,
        &authorization.signature,
    )
    .map_err(|refused| match refused {
        authz::AuthorizationRefused::Invalid(e) => e.into(),
        authz::AuthorizationRefused::BadSignature => CoordError::BadAuthorization(
            "the device's signature does not cover this transaction: it differs from what the device \
             approved, or another key signed"
                .into(),
        ),
    })?;

    crate::risk::check_evidence(req.evidence.as_ref(), req.location.as_ref())?;

    let retry = Retry {
        request_id: &request_id,
        user_id: &req.user_id,
        device_id: &authorization.device_id,
        tx_hash: &tx_hash,
    };
    if !retry.consumed(core)? {
        let mut risk = None;
        if let Some(gate) = &core.risk {
            let subject = crate::risk::Subject {
                user_id: &req.user_id,
                device_id: &authorization.device_id,
                transaction: &tx,
                tx_hash,
                context: crate::risk::context(
                    caller.channel,
                    caller.source,
                    signer.device_registered_at,
                    req.location,
                ),
                evidence: req.evidence.as_ref(),
            };
            // Boxed, as the rare repair of a holder's binding below is: kept out of the size
            // of every signature's future, which a deployment without risk checks would
            // carry for nothing (docs/performance.md, item 33).
            risk = Some(Box::pin(crate::risk::before_signing(core, gate, actor, &subject)).await?);
        }
        let consumed = core
            .propose(
                &request_id,
                actor,
                Op::ConsumeChecked {
                    user_id: req.user_id.clone(),
                    device_id: authorization.device_id.clone(),
                    tx_hash,
                    expires_at: tx.expires_at,
                    risk,
                },
            )
            .await;
        match consumed {
            Ok(_) => {}
            // The same transaction without a request id, consumed by a copy of this call
            // that was proposed at the same time: a retry after all.
            Err(CoordError::AuthorizationUsed { .. })
                if request_id.is_empty() && retry.consumed(core)? => {}
            Err(e) => return Err(e),
        }
    }
    let ca_certificate = core.ca_certificate(signer.algorithm)?;
    let (user_id, binding_seq) = (&req.user_id, signer.binding_seq);
    let (holder, signature) = core
        .chips
        .first_answer(
            &signer.holders,
            &format!("user {:?}'s key", req.user_id),
            |chip, holder| {
                // Built again only for the rare retry, rather than copied for it each time.
                let request = |holder: &crate::state::HolderRecord, binding_seq| {
                    SignAuthorizedRequest {
                        key_handle: holder.key_handle.clone(),
                        user_id: user_id.clone(),
                        canonical_transaction: canonical.clone(),
                        authorization: Some(authorization.clone()),
                        binding_seq,
                    }
                };
                async move {
                    match core
                        .chips
                        .sign_authorized(chip.clone(), request(&holder, binding_seq))
                        .await
                    {
                        // This holder missed a binding change: bring it up to date with the
                        // committed wrapped key, read again here (the path is rare), once.
                        // Boxed, as the risk checks are: a rare path kept out of the size
                        // of every signature's future.
                        Err(failure) if failure.binding_behind() => Box::pin(async {
                            let user = match core.view.user(user_id) {
                                Ok(Some(user)) => user,
                                Ok(None) => return Err(failure),
                                Err(e) => {
                                    tracing::warn!(user = %user_id, error = %e, "cannot read the user to update a holder's binding");
                                    return Err(failure);
                                }
                            };
                            crate::bindings::update_holder(&*chip, &holder, &user.wrapped_key)
                                .await?;
                            let retried = request(&holder, user.binding_seq);
                            Ok(chip.sign_authorized(retried).await?.signature)
                        })
                        .await,
                        other => Ok(other?.signature),
                    }
                }
            },
        )
        .await?;
    let distinguishing_id = core.view.distid(signer.algorithm, &req.user_id)?;
    Ok(SignResponse {
        tx_hash: tx_hash.to_vec(),
        signature,
        certificate_chain: vec![signer.certificate, ca_certificate.to_vec()],
        chip_id: holder.chip_id,
        distinguishing_id,
    })
}

/// Whether a sign request repeats one whose authorization is already consumed: then it is
/// signed again without a second consumption (the chip re-checks the authorization as for the
/// first). With a request id, the request's stored result says so. Without one, the
/// transaction is the key, and the ledger entry of its authorization is the record: that
/// consume is proposed without a request id, so no request record repeats the ledger entry
/// (docs/performance.md, item 34). An entry consumed under a request id of the caller's is
/// not this request's, nor is one of another user or device: a replay, refused as used.
struct Retry<'a> {
    request_id: &'a str,
    user_id: &'a str,
    device_id: &'a str,
    tx_hash: &'a [u8; 32],
}

impl Retry<'_> {
    /// The request id that a sign without one was stored under until 2026-12-05: such
    /// entries, consumed before, are still this request's.
    fn legacy_request_id(&self) -> String {
        format!("sign-{}", hex::encode(self.tx_hash))
    }

    /// `true` if this request's authorization is consumed already (a retry); an error if it
    /// was consumed by another request; `false` if it is not consumed (as far as this node
    /// has applied: the state machine makes the authoritative check).
    fn consumed(&self, core: &Core) -> Result<bool> {
        if !self.request_id.is_empty() {
            let subject: [&[u8]; 2] = [self.user_id.as_bytes(), self.tx_hash];
            if core.prior(self.request_id, "sign", &subject)?.is_some() {
                return Ok(true);
            }
        }
        match core.view.ledger(self.tx_hash)? {
            None => Ok(false),
            Some(entry)
                if self.request_id.is_empty()
                    && entry.user_id == self.user_id
                    && entry.device_id == self.device_id
                    && (entry.request_id.is_empty()
                        || entry.request_id == self.legacy_request_id()) =>
            {
                Ok(true)
            }
            // An obvious replay is refused here without a Raft write.
            Some(entry) => Err(CoordError::AuthorizationUsed {
                consumed_at: entry.consumed_at,
            }),
        }
    }
}

/// Checks a signature against a user's key: a P-256 signature over the transaction's SHA-256
/// (given as the transaction or its `tx_hash`), an SM2 signature over `SM3(Z_A || canonical
/// transaction)` with the user's distinguishing ID (so it needs the transaction itself).
pub fn verify(core: &Core, req: VerifyRequest) -> Result<VerifyResponse> {
    validate::identifier("user_id", &req.user_id)?;
    let canonical = match &req.transaction {
        Some(tx) => Some(tx::encode_and_hash(tx)?),
        None => None,
    };
    let tx_hash = match (&canonical, req.tx_hash.is_empty()) {
        (Some((_, hash)), true) => *hash,
        (None, false) => <[u8; 32]>::try_from(req.tx_hash.as_slice()).map_err(|_| {
            InvalidField::new(
                "tx_hash",
                format!("is {} bytes; a SHA-256 is 32", req.tx_hash.len()),
            )
        })?,
        (Some(_), false) => {
            return Err(InvalidField::new(
                "tx_hash",
                "give either transaction or tx_hash, not both",
            )
            .into())
        }
        (None, true) => {
            return Err(
                InvalidField::new("transaction", "give the transaction or its tx_hash").into(),
            )
        }
    };
    if req.signature.is_empty() {
        return Err(InvalidField::new("signature", "is required").into());
    }
    let user = core
        .view
        .user(&req.user_id)?
        .ok_or_else(|| CoordError::UserNotFound(req.user_id.clone()))?;
    let algorithm = Algorithm::from_proto(user.algorithm)
        .ok_or_else(|| CoordError::Internal(format!("stored algorithm {}", user.algorithm)))?;
    let key =
        VerifyingKey::from_spki_der_as(algorithm, &user.public_key, &core.view.user_distid(&user)?)
            .map_err(|e| CoordError::Internal(format!("stored user key: {e}")))?;
    let result =
        match (&key, &canonical) {
            (VerifyingKey::P256(_), _) => key.verify_digest(&tx_hash, &req.signature),
            (VerifyingKey::Sm2(_), Some((bytes, _))) => key.verify_message(bytes, &req.signature),
            (VerifyingKey::Sm2(_), None) => return Err(InvalidField::new(
                "transaction",
                "is required for an SM2 user: an SM2 signature covers SM3(Z_A || the canonical \
                 transaction), which its SHA-256 tx_hash does not give",
            )
            .into()),
        };
    let (valid, reason) = match result {
        Ok(()) => (true, String::new()),
        Err(e) => (false, format!("{e} (the user's key is {algorithm})")),
    };
    Ok(VerifyResponse {
        valid,
        reason,
        tx_hash: tx_hash.to_vec(),
    })
}

/// What the sign path needs of the user and the authorizing device, read from the user
/// record in place (`StateView::with_user`): the record is about 2 KB, and each signature
/// needs these few fields of it.
struct Signer {
    algorithm: Algorithm,
    binding_seq: u64,
    certificate: Vec<u8>,
    holders: Vec<crate::state::HolderRecord>,
    device_key: VerifyingKey,
    device_registered_at: i64,
}

/// Why a user's record refuses a signature before any cryptography.
enum Refused {
    UserRevoked,
    UnknownDevice,
    DeviceRevoked,
    /// A stored field that does not parse.
    Internal(CoordError),
}

impl Refused {
    /// The caller's error; reads the state (so only once the record's read is over).
    fn into_error(self, core: &Core, user_id: String, device_id: String) -> CoordError {
        match self {
            Refused::UserRevoked => CoordError::UserRevoked(user_id),
            Refused::UnknownDevice => CoordError::UnknownDevice { user_id, device_id },
            Refused::DeviceRevoked => crate::devices::revoked(core, &user_id, &device_id),
            Refused::Internal(e) => e,
        }
    }
}

impl Signer {
    /// Checks the user's state and device, and keeps what the signature needs. It runs under
    /// the tree's read lock, so it reads nothing else.
    fn read(user: &UserRef<'_>, device_id: &str) -> std::result::Result<Self, Refused> {
        if user.state != UserState::Active {
            return Err(Refused::UserRevoked);
        }
        let device = user
            .devices
            .iter()
            .find(|d| d.device_id == device_id)
            .ok_or(Refused::UnknownDevice)?;
        if device.revoked_at.is_some() {
            return Err(Refused::DeviceRevoked);
        }
        let algorithm =
            crate::core::user_algorithm(user.user_id, user.algorithm).map_err(Refused::Internal)?;
        Ok(Self {
            algorithm,
            binding_seq: user.binding_seq,
            certificate: user.certificate.to_vec(),
            holders: user.holders.iter().map(|h| h.to_record()).collect(),
            device_key: VerifyingKey::from_spki_der(device.public_key).map_err(|e| {
                Refused::Internal(CoordError::Internal(format!("stored device key: {e}")))
            })?,
            device_registered_at: device.registered_at,
        })
    }
}
