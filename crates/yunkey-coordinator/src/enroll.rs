//! Enrolment: a key generated inside a chip chosen by placement, copied (wrapped) to the
//! other replicas, a certificate from the user CA, and one Raft entry that commits it all.

use crate::core::Core;
use crate::error::{CoordError, Result};

use crate::state::{
    Activation, ChipRecord, CommandResult, HolderRecord, Op, UserRecord, UserState,
};
use yunkey_crypto::sig::Algorithm as SigAlgorithm;
use yunkey_crypto::validate::{self, InvalidField};
use yunkey_proto::v1::{EnrollUserRequest, EnrollUserResponse, KeyHandleRequest, KeyPurpose};

/// Checks the algorithm field: unset means ECDSA P-256.
pub fn algorithm(value: i32) -> Result<SigAlgorithm> {
    SigAlgorithm::from_proto(value).ok_or_else(|| {
        InvalidField::new(
            "algorithm",
            format!("{value} is not a known Algorithm; send ECDSA_P256 (1) or SM2 (2)"),
        )
        .into()
    })
}

/// Checks the distinguishing ID against the algorithm; returns the ID to store apart from the
/// user (`None`: none, or the default, which is not stored).
pub fn distid(algorithm: SigAlgorithm, value: &str) -> Result<Option<String>> {
    match algorithm {
        SigAlgorithm::EcdsaP256 if value.is_empty() => Ok(None),
        SigAlgorithm::EcdsaP256 => Err(InvalidField::new(
            "distinguishing_id",
            "is for SM2 keys only; leave it empty for ECDSA_P256",
        )
        .into()),
        SigAlgorithm::Sm2 if value.is_empty() || value == yunkey_crypto::sm2::DEFAULT_DISTID => {
            Ok(None)
        }
        SigAlgorithm::Sm2 => {
            yunkey_crypto::sm2::check_distid(value)
                .map_err(|e| InvalidField::new("distinguishing_id", e.to_string()))?;
            Ok(Some(value.to_owned()))
        }
    }
}

/// A request id: the caller's (validated) or a fresh random one.
pub fn request_id(given: &str, default: impl FnOnce() -> String) -> Result<String> {
    if given.is_empty() {
        Ok(default())
    } else {
        validate::identifier("request_id", given)?;
        Ok(given.to_owned())
    }
}

/// A one-time activation code: 12 characters from an alphabet without look-alikes, shown
/// as `XXXX-XXXX-XXXX` (about 59 bits).
pub fn new_activation_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTVWXYZ23456789";
    let bytes: [u8; 12] = yunkey_crypto::random_bytes();
    let chars: Vec<u8> = bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()])
        .collect();
    let s = String::from_utf8(chars).expect("ASCII");
    format!("{}-{}-{}", &s[0..4], &s[4..8], &s[8..12])
}

/// Enrols a user.
pub async fn enroll(
    core: &Core,
    actor: &str,
    req: EnrollUserRequest,
) -> Result<EnrollUserResponse> {
    validate::identifier("user_id", &req.user_id)?;
    let algorithm = algorithm(req.algorithm)?;
    let distid = distid(algorithm, &req.distinguishing_id)?;
    validate::text("display_name", &req.display_name, 128, true)?;
    // A user id is enrolled at most once, so it is a safe default idempotency key: a blind
    // retry after a lost reply gets the first result (and its activation code).
    let request_id = request_id(&req.request_id, || format!("enroll-{}", req.user_id))?;

    // A retry of an applied request gets the first result, without touching any chip.
    if let Some(result) = core.prior(&request_id, "enroll", &[req.user_id.as_bytes()])? {
        return retried(core, actor, result).await;
    }
    if core.view.user(&req.user_id)?.is_some() {
        return Err(CoordError::UserExists(req.user_id));
    }
    // The P-256 CA exists from the cluster's start; the SM2 CA is made at the first SM2
    // enrolment.
    let ca = crate::admin::ensure_ca_of(core, actor, algorithm).await?;

    // Counted as placed on its chips until this enrolment ends (it commits, and the registry
    // counts it, or it fails): enrolments at the same time spread over the chips.
    let (chosen, _placing) = core.placing.place(
        &core.view.chips()?,
        |chip_id| core.placeable(chip_id),
        core.config.replicas,
    );
    let chosen: Vec<&ChipRecord> = chosen.iter().collect();
    // The chip that generates the key seals the code's hash into the key's binding: only a
    // device that presents this code can ever be bound to the key.
    let code = new_activation_code();
    let now = crate::clock::now();
    let code_sha256 = yunkey_crypto::sha256(code.as_bytes());
    let expires_at = now + core.config.activation_ttl_secs;
    let (generated, first) = crate::replicas::generate(
        core,
        &chosen,
        algorithm.to_proto(),
        KeyPurpose::User,
        &req.user_id,
        distid.as_deref().unwrap_or(""),
        Some((code_sha256, expires_at)),
    )
    .await?;
    // The copies to the replicas and the certificate's signature (by the CA key, in a chip)
    // need only the generated key: they run at the same time.
    let (copies, certificate) = tokio::join!(
        crate::replicas::copy_to(
            core,
            &chosen[1..],
            &generated,
            KeyPurpose::User,
            &req.user_id
        ),
        core.issuer
            .user_certificate(&ca, &generated.wrapped_key, &req.display_name),
    );
    let holders: Vec<_> = std::iter::once(first).chain(copies).collect();

    let outcome = async {
        let certificate = certificate?;
        let user = UserRecord {
            user_id: req.user_id.clone(),
            algorithm: algorithm.to_proto() as i32,
            public_key: generated.public_key.clone(),
            wrapped_key: generated.wrapped_key.clone(),
            binding_seq: generated.binding_seq,
            certificate,
            state: UserState::Active,
            holders: holders.clone(),
            devices: vec![],
            activation: Some(Activation {
                code_sha256,
                expires_at,
                enroll_request_id: request_id.clone(),
            }),
            created_at: now,
            revoked_reason: None,
        };
        // Never the code: only its hash (in `user.activation`) is stored.
        let op = match distid.clone() {
            None => Op::EnrollUser {
                user: user.clone(),
                activation_code: String::new(),
            },
            Some(distid) => Op::EnrollUserWithId {
                user: user.clone(),
                activation_code: String::new(),
                distid,
            },
        };
        let result = core.propose(&request_id, actor, op).await?;
        Ok::<_, CoordError>(result)
    }
    .await;

    // Ours committed if the stored user carries our code's hash.
    let ours = |core: &Core| -> Result<bool> {
        Ok(core
            .view
            .user(&req.user_id)?
            .and_then(|u| u.activation)
            .is_some_and(|a| a.code_sha256 == code_sha256))
    };
    match outcome {
        Ok(CommandResult::Enrolled { .. }) if ours(core)? => response(core, &req.user_id, code),
        Ok(result) => {
            // Another attempt with this request id committed first: ours is surplus.
            delete_keys(core, &holders).await;
            retried(core, actor, result).await
        }
        Err(e) => {
            delete_keys(core, &holders).await;
            Err(e)
        }
    }
}

/// The answer to a retry of a committed enrolment. The first code is not stored anywhere, so
/// a user without a device yet gets a new code (the first one is void from then on); a user
/// with a device already gets no code.
async fn retried(core: &Core, actor: &str, result: CommandResult) -> Result<EnrollUserResponse> {
    match result {
        CommandResult::Enrolled { user_id, .. } => {
            let user = core.view.user(&user_id)?.ok_or_else(|| {
                CoordError::Internal(format!("user {user_id} committed but not applied here"))
            })?;
            if !user.devices.is_empty() || user.state != UserState::Active {
                return response(core, &user_id, String::new());
            }
            let (code, _) = crate::devices::activation::reissue(core, actor, &user).await?;
            response(core, &user_id, code)
        }
        other => Err(CoordError::Internal(format!(
            "enrolment stored an unexpected result {other:?}"
        ))),
    }
}

fn response(core: &Core, user_id: &str, activation_code: String) -> Result<EnrollUserResponse> {
    let user = core.view.user(user_id)?.ok_or_else(|| {
        CoordError::Internal(format!("user {user_id} committed but not applied here"))
    })?;
    let ca = core.ca_of_user(&user)?;
    Ok(EnrollUserResponse {
        certificate_chain: vec![user.certificate.clone(), ca.certificate.clone()],
        user: Some(crate::convert::user(&core.view, &user)?),
        activation_code,
    })
}

/// Best-effort removal of keys that were generated but not committed.
pub(crate) async fn delete_keys(core: &Core, holders: &[HolderRecord]) {
    for h in holders {
        let deleted = async {
            core.chips
                .chip(&h.chip_id)?
                .delete_key(KeyHandleRequest {
                    key_handle: h.key_handle.clone(),
                })
                .await
                .map_err(CoordError::Chip)
        }
        .await;
        if let Err(e) = deleted {
            tracing::warn!(chip = %h.chip_id, error = %e, "could not delete an uncommitted key");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_codes_look_right() {
        let a = new_activation_code();
        assert_eq!(a.len(), 14);
        assert_eq!(a.matches('-').count(), 2);
        assert_ne!(a, new_activation_code());
    }

    #[test]
    fn algorithms_and_ids() {
        assert_eq!(algorithm(0).unwrap(), SigAlgorithm::EcdsaP256);
        assert_eq!(algorithm(2).unwrap(), SigAlgorithm::Sm2);
        assert!(matches!(algorithm(99), Err(CoordError::InvalidArgument(_))));
        assert_eq!(distid(SigAlgorithm::Sm2, "").unwrap(), None);
        assert_eq!(distid(SigAlgorithm::Sm2, "1234567812345678").unwrap(), None);
        assert_eq!(
            distid(SigAlgorithm::Sm2, "alice@bank").unwrap().as_deref(),
            Some("alice@bank")
        );
        assert!(matches!(
            distid(SigAlgorithm::Sm2, "a b"),
            Err(CoordError::InvalidArgument(_))
        ));
        assert!(matches!(
            distid(SigAlgorithm::EcdsaP256, "x"),
            Err(CoordError::InvalidArgument(_))
        ));
    }
}
