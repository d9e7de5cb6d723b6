//! Business-backend and operator commands: users, verification, status.

use crate::cli::{DeviceCommand, Global, StatusArgs, UserCommand, VerifyArgs};
use crate::connect;
use crate::output::{cert_pem, print};
use anyhow::{bail, Context};
use serde_json::json;
use yunkey_client::ClientError;
use yunkey_proto::v1::{
    Device, EnrollUserRequest, GetUserRequest, ReactivateUserRequest, ReadConsistency,
    RevokeDeviceRequest, RevokeUserRequest, StatusRequest, User, UserStatus, VerifyRequest,
};

fn user_json(u: &User) -> serde_json::Value {
    json!({
        "user_id": u.user_id,
        "status": UserStatus::try_from(u.status).map(|s| s.as_str_name()).unwrap_or("UNKNOWN"),
        "algorithm": algorithm_name(u.algorithm),
        "distinguishing_id": (!u.distinguishing_id.is_empty()).then_some(&u.distinguishing_id),
        "public_key": hex::encode(&u.public_key),
        "certificate": cert_pem(&u.certificate),
        "created_at": u.created_at,
        "activation_pending": u.activation_pending,
        "devices": u.devices.iter().map(device_json).collect::<Vec<_>>(),
        "holders": u.holders.iter().map(|h| h.chip_id.clone()).collect::<Vec<_>>(),
    })
}

fn device_json(d: &Device) -> serde_json::Value {
    json!({
        "device_id": d.device_id, "name": d.name, "registered_at": d.registered_at,
        "revoked_at": (d.revoked_at != 0).then_some(d.revoked_at),
        "revoked_reason": (!d.revoked_reason.is_empty()).then_some(&d.revoked_reason),
        "certificate_expires_at": d.certificate_expires_at,
    })
}

/// One line per device: id, name, state, certificate expiry.
fn devices_text(u: &User) -> String {
    if u.devices.is_empty() {
        return format!("{} has no devices", u.user_id);
    }
    let mut out = format!(
        "{:<40} {:<12} {:<24} {}",
        "DEVICE", "NAME", "STATE", "CERT EXPIRES (UNIX)"
    );
    for d in &u.devices {
        let state = if d.revoked_at != 0 {
            d.revoked_reason.clone()
        } else {
            "active".to_owned()
        };
        out.push_str(&format!(
            "\n{:<40} {:<12} {:<24} {}",
            d.device_id, d.name, state, d.certificate_expires_at
        ));
    }
    out
}

/// `p256` or `sm2` (the names `--algorithm` takes).
fn algorithm_name(value: i32) -> &'static str {
    yunkey_crypto::sig::Algorithm::from_proto(value)
        .map(|a| a.name())
        .unwrap_or("unknown")
}

fn user_text(u: &User) -> String {
    let key = match u.distinguishing_id.as_str() {
        "" => algorithm_name(u.algorithm).to_owned(),
        id => format!("{} (distinguishing ID {id})", algorithm_name(u.algorithm)),
    };
    format!(
        "user:        {}\nkey:         {key}\nstatus:      {}\ndevices:     {}\nchips:       {}\nactivation:  {}",
        u.user_id,
        UserStatus::try_from(u.status)
            .map(|s| s.as_str_name())
            .unwrap_or("UNKNOWN"),
        if u.devices.is_empty() {
            "none".to_owned()
        } else {
            u.devices
                .iter()
                .map(|d| {
                    if d.revoked_at != 0 {
                        format!("{} ({})", d.device_id, d.revoked_reason)
                    } else {
                        d.device_id.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        },
        u.holders
            .iter()
            .map(|h| h.chip_id.clone())
            .collect::<Vec<_>>()
            .join(", "),
        if u.activation_pending {
            "pending"
        } else {
            "none pending"
        },
    )
}

/// `yunkey user ...`.
pub async fn run(g: &Global, cmd: &UserCommand) -> anyhow::Result<()> {
    let conn = connect::business(g)?;
    match cmd {
        UserCommand::Enroll {
            user_id,
            algorithm,
            distinguishing_id,
            display_name,
            request_id,
            quiet,
        } => {
            let req = EnrollUserRequest {
                request_id: request_id.clone(),
                user_id: user_id.clone(),
                algorithm: yunkey_crypto::sig::Algorithm::from(*algorithm).to_proto() as i32,
                display_name: display_name.clone(),
                distinguishing_id: distinguishing_id.clone().unwrap_or_default(),
            };
            let resp = conn
                .call(|ch| {
                    let req = req.clone();
                    async move { yunkey_client::key_client(ch).enroll_user(req).await }
                })
                .await?;
            let user = resp.user.context("server returned no user")?;
            if *quiet && !g.json {
                println!("{}", resp.activation_code);
                return Ok(());
            }
            print(
                g.json,
                json!({
                    "user": user_json(&user),
                    "activation_code": resp.activation_code,
                    "certificate_chain": resp.certificate_chain.iter().map(|c| cert_pem(c)).collect::<String>(),
                }),
                || {
                    format!(
                        "enrolled {}\nactivation code: {}\n(give it to the user's phone: yunkey terminal register --user {} --activation-code {})",
                        user.user_id, resp.activation_code, user.user_id, resp.activation_code
                    )
                },
            );
        }
        UserCommand::Audit { user_id, limit } => {
            crate::user_risk::audit(g, &conn, user_id, *limit).await?
        }
        UserCommand::FaceEnroll { user_id, photo } => {
            crate::user_risk::face_enroll(g, &conn, user_id, photo).await?
        }
        UserCommand::FaceDelete { user_id } => {
            crate::user_risk::face_delete(g, &conn, user_id).await?
        }
        UserCommand::Show { user_id, stale } => {
            let req = GetUserRequest {
                user_id: user_id.clone(),
                consistency: if *stale {
                    ReadConsistency::Stale as i32
                } else {
                    ReadConsistency::Linearizable as i32
                },
            };
            let user = conn
                .call(|ch| {
                    let req = req.clone();
                    async move { yunkey_client::key_client(ch).get_user(req).await }
                })
                .await?;
            print(g.json, user_json(&user), || user_text(&user));
        }
        UserCommand::Revoke { user_id, reason } => {
            let req = RevokeUserRequest {
                request_id: String::new(),
                user_id: user_id.clone(),
                reason: reason.clone(),
            };
            let user = conn
                .call(|ch| {
                    let req = req.clone();
                    async move { yunkey_client::key_client(ch).revoke_user(req).await }
                })
                .await?;
            print(g.json, user_json(&user), || {
                format!("revoked {}", user.user_id)
            });
        }
        UserCommand::RevokeDevice {
            user_id,
            device,
            reason,
        } => {
            let req = RevokeDeviceRequest {
                request_id: String::new(),
                user_id: user_id.clone(),
                device_id: device.clone(),
                reason: reason.clone(),
                remove: false,
            };
            let user = conn
                .call(|ch| {
                    let req = req.clone();
                    async move { yunkey_client::key_client(ch).revoke_device(req).await }
                })
                .await?;
            print(g.json, user_json(&user), || {
                format!("revoked device {device} of {}", user.user_id)
            });
        }
        UserCommand::Reactivate { user_id, quiet } => {
            let req = ReactivateUserRequest {
                user_id: user_id.clone(),
            };
            let resp = conn
                .call(|ch| {
                    let req = req.clone();
                    async move { yunkey_client::key_client(ch).reactivate_user(req).await }
                })
                .await?;
            if *quiet && !g.json {
                println!("{}", resp.activation_code);
                return Ok(());
            }
            print(
                g.json,
                json!({
                    "user_id": user_id,
                    "activation_code": resp.activation_code,
                    "expires_at": resp.expires_at,
                }),
                || {
                    format!(
                        "new activation code for {user_id}: {}\n(valid until Unix time {}; any earlier code is void; the device registers with: yunkey terminal register --user {user_id} --activation-code {})",
                        resp.activation_code, resp.expires_at, resp.activation_code
                    )
                },
            );
        }
        UserCommand::Device(DeviceCommand::List { user_id }) => {
            let req = GetUserRequest {
                user_id: user_id.clone(),
                consistency: ReadConsistency::Linearizable as i32,
            };
            let user = conn
                .call(|ch| {
                    let req = req.clone();
                    async move { yunkey_client::key_client(ch).get_user(req).await }
                })
                .await?;
            print(
                g.json,
                json!({
                    "user_id": user.user_id,
                    "devices": user.devices.iter().map(device_json).collect::<Vec<_>>(),
                }),
                || devices_text(&user),
            );
        }
        UserCommand::Device(DeviceCommand::Remove {
            user_id,
            device_id,
            reason,
        }) => {
            let req = RevokeDeviceRequest {
                request_id: String::new(),
                user_id: user_id.clone(),
                device_id: device_id.clone(),
                reason: reason.clone(),
                remove: true,
            };
            let user = conn
                .call(|ch| {
                    let req = req.clone();
                    async move { yunkey_client::key_client(ch).revoke_device(req).await }
                })
                .await?;
            print(g.json, user_json(&user), || {
                format!("removed device {device_id} of {}", user.user_id)
            });
        }
    }
    Ok(())
}

fn decode_hex(field: &str, value: &str) -> anyhow::Result<Vec<u8>> {
    hex::decode(value.trim()).with_context(|| format!("--{field} is not hex"))
}

/// `yunkey verify`: locally against a certificate, or by the cluster against the user's.
pub async fn verify(g: &Global, args: &VerifyArgs) -> anyhow::Result<()> {
    use yunkey_crypto::sig::VerifyingKey;
    let signature = decode_hex("signature", &args.signature)?;
    // The transaction (canonical bytes, checked) or only its SHA-256.
    let transaction = match &args.transaction {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading the transaction {}", path.display()))?;
            let tx = yunkey_crypto::tx::decode(&bytes).map_err(|e| {
                anyhow::anyhow!("{} is not a canonical transaction: {e}", path.display())
            })?;
            Some((bytes, tx))
        }
        None => None,
    };
    let tx_hash: [u8; 32] = match (&transaction, &args.tx_hash) {
        (Some((bytes, _)), _) => yunkey_crypto::sha256(bytes),
        (None, Some(hex)) => decode_hex("tx-hash", hex)?
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("--tx-hash must be 32 bytes (64 hex digits)"))?,
        (None, None) => bail!("give --tx-hash HEX or --transaction FILE"),
    };
    let (valid, reason, subject) = match (&args.certificate, &args.user) {
        (Some(path), _) => {
            let cert = read_certificate(path)?;
            let spki = der::Encode::to_der(&cert.tbs_certificate.subject_public_key_info)?;
            let key = VerifyingKey::from_spki_der(&spki)
                .map_err(|e| anyhow::anyhow!("certificate key: {e}"))?;
            let r = match (&key, &transaction) {
                (VerifyingKey::Sm2(k), Some((bytes, _))) => {
                    let id = args
                        .distinguishing_id
                        .as_deref()
                        .unwrap_or(yunkey_crypto::sm2::DEFAULT_DISTID);
                    k.with_distid(id)
                        .map_err(|e| anyhow::anyhow!("--distinguishing-id: {e}"))?
                        .verify_message(bytes, &signature)
                }
                (VerifyingKey::Sm2(_), None) => bail!(
                    "the certificate's key is SM2, whose signature covers the transaction itself: \
                     give --transaction FILE (and --distinguishing-id ID if not the default)"
                ),
                (VerifyingKey::P256(k), _) => k.verify_digest(&tx_hash, &signature),
            };
            (
                r.is_ok(),
                r.err().map(|e| e.to_string()).unwrap_or_default(),
                cert.tbs_certificate.subject.to_string(),
            )
        }
        (None, Some(user)) => {
            let conn = connect::business(g)?;
            let req = VerifyRequest {
                user_id: user.clone(),
                tx_hash: match &transaction {
                    Some(_) => Vec::new(),
                    None => tx_hash.to_vec(),
                },
                transaction: transaction.as_ref().map(|(_, tx)| tx.clone()),
                signature: signature.clone(),
            };
            let resp = conn
                .call(|ch| {
                    let req = req.clone();
                    async move { yunkey_client::key_client(ch).verify(req).await }
                })
                .await?;
            (resp.valid, resp.reason, format!("user {user}"))
        }
        (None, None) => bail!(
            "give --user USER_ID (checked by the cluster) or --certificate FILE (checked here)"
        ),
    };
    print(
        g.json,
        json!({ "valid": valid, "reason": reason, "signer": subject }),
        || {
            if valid {
                format!("valid signature by {subject}")
            } else {
                format!("INVALID signature: {reason}")
            }
        },
    );
    if !valid {
        return Err(anyhow::Error::new(ClientError::Invalid(format!(
            "signature is not valid: {reason}"
        ))));
    }
    Ok(())
}

fn read_certificate(path: &std::path::Path) -> anyhow::Result<x509_cert::Certificate> {
    use der::{Decode, DecodePem};
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.starts_with(b"-----BEGIN") {
        // The first certificate of a PEM chain is the signer's.
        let text = String::from_utf8_lossy(&bytes);
        let end = text
            .find("-----END CERTIFICATE-----")
            .context("no complete PEM certificate")?
            + "-----END CERTIFICATE-----".len();
        Ok(x509_cert::Certificate::from_pem(text[..end].as_bytes())?)
    } else {
        Ok(x509_cert::Certificate::from_der(&bytes)?)
    }
}

/// `yunkey status`: as the operator (the chip list is for operators). With `--user-ca-out
/// FILE`, also writes the user CA certificate there (PEM).
pub async fn status(g: &Global, args: &StatusArgs) -> anyhow::Result<()> {
    let conn = connect::operator(g)?;
    let s = conn
        .call(|ch| async move {
            yunkey_client::cluster_client(ch)
                .status(StatusRequest {})
                .await
        })
        .await?;
    let chips = conn
        .call(|ch| async move {
            yunkey_client::cluster_client(ch)
                .list_chips(yunkey_proto::v1::ListChipsRequest {})
                .await
        })
        .await?;
    let user_ca = (!s.user_ca_certificate.is_empty()).then(|| {
        (
            cert_pem(&s.user_ca_certificate),
            hex::encode(yunkey_crypto::sha256(&s.user_ca_certificate)),
        )
    });
    if let Some(path) = &args.user_ca_out {
        let Some((pem, _)) = &user_ca else {
            bail!(
                "node {} has no user CA certificate yet: the leader creates it once a chip is \
                 admitted; retry when `yunkey status` shows it",
                s.node_id
            );
        };
        crate::serve::write_file_synced(path, pem.as_bytes())?;
    }
    let sm2_user_ca = (!s.sm2_user_ca_certificate.is_empty()).then(|| {
        (
            cert_pem(&s.sm2_user_ca_certificate),
            hex::encode(yunkey_crypto::sha256(&s.sm2_user_ca_certificate)),
        )
    });
    if let Some(path) = &args.sm2_user_ca_out {
        let Some((pem, _)) = &sm2_user_ca else {
            bail!(
                "node {} has no SM2 user CA certificate yet: it is made at the first SM2 \
                 enrolment (yunkey user enroll ID --algorithm sm2)",
                s.node_id
            );
        };
        crate::serve::write_file_synced(path, pem.as_bytes())?;
    }
    let chip_state = |c: &yunkey_proto::v1::Chip| {
        yunkey_proto::v1::ChipState::try_from(c.state)
            .map(|s| s.as_str_name())
            .unwrap_or("UNKNOWN")
    };
    print(
        g.json,
        json!({
            "node_id": s.node_id, "leader_id": s.leader_id, "term": s.term,
            "last_log_index": s.last_log_index, "applied_index": s.applied_index,
            "users": s.users, "devices": s.devices, "version": s.version,
            "user_ca_pem": user_ca.as_ref().map(|(pem, _)| pem),
            "user_ca_sha256": user_ca.as_ref().map(|(_, sha)| sha),
            "sm2_user_ca_pem": sm2_user_ca.as_ref().map(|(pem, _)| pem),
            "sm2_user_ca_sha256": sm2_user_ca.as_ref().map(|(_, sha)| sha),
            "nodes": s.nodes.iter().map(|n| json!({
                "node_id": n.node_id, "address": n.address, "role": n.role, "voter": n.voter,
                "matched_index": n.matched_index,
            })).collect::<Vec<_>>(),
            "chips": chips.chips.iter().map(|c| json!({
                "chip_id": c.chip_id, "endpoint": c.endpoint, "zone": c.zone, "capacity": c.capacity,
                "used": c.used, "state": chip_state(c),
            })).collect::<Vec<_>>(),
        }),
        || {
            let mut out = format!(
                "node {} (leader {}), term {}, log {}, applied {}\nusers {}, devices {}\n",
                s.node_id,
                s.leader_id,
                s.term,
                s.last_log_index,
                s.applied_index,
                s.users,
                s.devices
            );
            match &user_ca {
                Some((_, sha)) => out.push_str(&format!("user CA: SHA-256 {sha}\n")),
                None => out.push_str("user CA: not created yet\n"),
            }
            if let Some((_, sha)) = &sm2_user_ca {
                out.push_str(&format!("SM2 user CA: SHA-256 {sha}\n"));
            }
            for c in &chips.chips {
                out.push_str(&format!(
                    "chip {:<10} {:<12} {:<8} {}/{} keys  {}\n",
                    c.chip_id,
                    chip_state(c),
                    c.zone,
                    c.used,
                    c.capacity,
                    c.endpoint
                ));
            }
            out.trim_end().to_owned()
        },
    );
    Ok(())
}
