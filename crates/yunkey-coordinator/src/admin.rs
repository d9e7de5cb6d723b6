//! Cluster administration done by coordinators: admitting chips to the security domain and
//! creating the user CA inside chips.

use crate::core::Core;
use crate::error::{CoordError, Result};
use crate::placement::{self, Candidate};
use crate::state::{CaRecord, ChipRecord, Command, CommandResult, Op, Rejection};
use std::time::Duration;
use yunkey_crypto::cipher::Cipher;
use yunkey_crypto::ecdsa::PublicKey;
use yunkey_crypto::sig::Algorithm as SigAlgorithm;
use yunkey_crypto::{authz, validate};
use yunkey_proto::v1::{
    ChipAdmission, ExportDomainRequest, ImportDomainRequest, InitDomainRequest, KeyPurpose,
    SetTrustAnchorRequest,
};

/// Checks the operator's admission a chip reports against the domain's operator key (or, for
/// the first chip, against the key it names). The chips check it again themselves; this check
/// only keeps an unadmitted chip out of the registry with a clear message.
fn check_admission(
    info: &yunkey_proto::v1::ChipInfo,
    domain_operator_key: Option<&[u8]>,
) -> Result<()> {
    if info.admission_signature.is_empty() || info.admission_operator_key.is_empty() {
        return Err(CoordError::AdmissionRefused(format!(
            "chip {} has no operator admission; sign one with `yunkey pki admit-chip` and put it \
             in the chip's data directory as admission.json",
            info.chip_id
        )));
    }
    if let Some(domain_key) = domain_operator_key {
        if domain_key != info.admission_operator_key.as_slice() {
            return Err(CoordError::AdmissionRefused(format!(
                "chip {} was admitted by another operator key than this cluster's",
                info.chip_id
            )));
        }
    }
    let operator = PublicKey::from_spki_der(&info.admission_operator_key).map_err(|_| {
        CoordError::AdmissionRefused(format!(
            "chip {} reports an operator key that is not a P-256 public key",
            info.chip_id
        ))
    })?;
    operator
        .verify_message(
            &authz::chip_admission_message(&info.chip_id, &info.transport_public_key),
            &info.admission_signature,
        )
        .map_err(|_| {
            CoordError::AdmissionRefused(format!(
                "chip {}'s admission does not verify for its id and transport key (signed for another chip?)",
                info.chip_id
            ))
        })
}

/// The cipher of the domain a chip reports (`DomainCipher` of its `ChipInfo` or
/// `DomainResponse`), checked against the configured one: a domain's cipher is fixed when it is
/// created, so a coordinator configured for another refuses to admit chips to it rather than
/// run a cluster with a cipher it was not asked for. A chip older than the cipher field reports
/// none: its domain is AES-256.
fn check_domain_cipher(
    configured: Option<Cipher>,
    chip_id: &str,
    domain_id: &str,
    reported: i32,
) -> Result<Cipher> {
    let actual = Cipher::from_proto(reported)
        .map_err(|_| {
            CoordError::Internal(format!(
                "chip {chip_id} reports a domain cipher this coordinator does not know ({reported})"
            ))
        })?
        .unwrap_or_default();
    match configured {
        Some(want) if want != actual => Err(CoordError::FailedPrecondition(format!(
            "the cluster's security domain {domain_id} uses {actual}, not {want} as \
             --domain-cipher asks; a domain's cipher is chosen when it is created and fixed for \
             its life: start the coordinators with --domain-cipher {actual} (or without the \
             flag), or create a new cluster for {want}"
        ))),
        _ => Ok(actual),
    }
}

/// Admits the chip at `endpoint`: checks the operator's admission it reports, joins it to the
/// cluster's security domain (creating the domain, with the operator key and the configured
/// cipher, on the first chip), gives it the user CA as trust anchor, and registers it.
pub async fn admit_chip(core: &Core, actor: &str, endpoint: &str) -> Result<ChipRecord> {
    let client = core.chips.at(endpoint, endpoint)?;
    let info = client
        .get_info(core.chips.config().call_timeout)
        .await
        .map_err(|f| CoordError::Unavailable(format!("cannot reach a chip at {endpoint}: {f}")))?;
    validate::identifier("chip_id", &info.chip_id)?;
    let domain_operator_key = core.view.operator_key()?;
    check_admission(&info, domain_operator_key.as_deref())?;

    let configured = core.config.domain_cipher;
    let (domain_id, cipher) = match (core.view.domain()?, info.domain_id.is_empty()) {
        (None, true) => {
            let created = client
                .init_domain(InitDomainRequest {
                    operator_key: info.admission_operator_key.clone(),
                    admission_signature: info.admission_signature.clone(),
                    cipher: configured.unwrap_or_default().to_proto() as i32,
                })
                .await
                .map_err(CoordError::Chip)?;
            (created.domain_id, created.cipher)
        }
        (None, false) => (info.domain_id.clone(), info.domain_cipher),
        (Some(cluster), false) if cluster == info.domain_id => (cluster, info.domain_cipher),
        (Some(cluster), false) => {
            return Err(CoordError::Unavailable(format!(
                "chip {} belongs to security domain {}, the cluster's is {cluster}; wipe the chip or use the right cluster",
                info.chip_id, info.domain_id
            )))
        }
        (Some(cluster), true) => {
            let (envelope, cipher) = export_from_member(
                core,
                ChipAdmission {
                    chip_id: info.chip_id.clone(),
                    transport_key: info.transport_public_key.clone(),
                    operator_signature: info.admission_signature.clone(),
                },
            )
            .await?;
            // Checked before the chip joins, so that a refused chip stays outside the domain.
            check_domain_cipher(configured, &info.chip_id, &cluster, cipher)?;
            let joined = client
                .import_domain(ImportDomainRequest { envelope })
                .await
                .map_err(CoordError::Chip)?;
            if joined.domain_id != cluster {
                return Err(CoordError::Internal("imported domain id does not match the cluster's".into()));
            }
            (cluster, joined.cipher)
        }
    };
    let cipher = check_domain_cipher(configured, &info.chip_id, &domain_id, cipher)?;
    for algorithm in [SigAlgorithm::EcdsaP256, SigAlgorithm::Sm2] {
        if let Some(ca) = core.view.ca_of(algorithm)? {
            client
                .set_trust_anchor(SetTrustAnchorRequest {
                    certificate: ca.certificate,
                })
                .await
                .map_err(CoordError::Chip)?;
        }
    }
    let record = ChipRecord {
        chip_id: info.chip_id.clone(),
        endpoint: endpoint.to_owned(),
        zone: info.zone.clone(),
        capacity: info.capacity,
        placed: 0,
        transport_key: info.transport_public_key.clone(),
        admitted_at: crate::clock::now(),
        admission_signature: info.admission_signature.clone(),
    };
    core.propose(
        "",
        actor,
        Op::AdmitChip {
            chip: record.clone(),
            domain_id,
            operator_key: info.admission_operator_key.clone(),
        },
    )
    .await?;
    core.chips.learn(&record);
    tracing::info!(target: "yunkey::audit", chip = %record.chip_id, endpoint, actor, %cipher, "chip admitted");
    Ok(core.view.chip(&record.chip_id)?.unwrap_or(record))
}

/// Asks a healthy member chip to encrypt the domain to an admitted chip's transport key;
/// returns the envelope and the domain's cipher (as the member reports it).
async fn export_from_member(core: &Core, recipient: ChipAdmission) -> Result<(Vec<u8>, i32)> {
    let mut last =
        CoordError::Unavailable("no member chip of the domain is reachable to export it".into());
    for member in core.view.chips()? {
        let Ok(chip) = core.chips.at(&member.chip_id, &member.endpoint) else {
            continue;
        };
        match chip
            .export_domain(ExportDomainRequest {
                recipient: Some(recipient.clone()),
            })
            .await
        {
            Ok(resp) => return Ok((resp.envelope, resp.cipher)),
            // A refused admission is refused by every member.
            Err(failure) if !failure.try_another_holder() => return Err(CoordError::Chip(failure)),
            Err(failure) => last = CoordError::Chip(failure),
        }
    }
    Err(last)
}

/// Creates the (ECDSA P-256) user CA if the cluster has none: see [`ensure_ca_of`].
pub async fn ensure_ca(core: &Core, actor: &str) -> Result<CaRecord> {
    ensure_ca_of(core, actor, SigAlgorithm::EcdsaP256).await
}

/// Creates the user CA of `algorithm` if the cluster has none: a CA key generated in a chip,
/// copied to the other replicas, a self-signed certificate, one Raft entry, then every chip
/// gets the certificate as its trust anchor of that algorithm. The P-256 CA is made when the
/// cluster starts; the SM2 CA at the first SM2 enrolment.
pub async fn ensure_ca_of(core: &Core, actor: &str, algorithm: SigAlgorithm) -> Result<CaRecord> {
    if let Some(ca) = core.view.ca_of(algorithm)? {
        return Ok(ca);
    }
    let registry = core.view.chips()?;
    for chip in &registry {
        core.chips
            .wait_up(&chip.chip_id, Duration::from_secs(5))
            .await;
    }
    let candidates: Vec<_> = registry
        .iter()
        .map(|chip| Candidate {
            chip,
            routable: core.placeable(&chip.chip_id),
        })
        .collect();
    let chosen = placement::place(&candidates, core.config.replicas.max(2));
    if chosen.is_empty() {
        return Err(CoordError::Unavailable(
            "the user CA needs at least one healthy chip".into(),
        ));
    }
    let (generated, holders) = crate::replicas::create_key(
        core,
        &chosen,
        algorithm.to_proto(),
        KeyPurpose::Ca,
        "",
        "",
        None,
    )
    .await?;
    let name = match algorithm {
        SigAlgorithm::EcdsaP256 => "yunkey user CA",
        SigAlgorithm::Sm2 => "yunkey SM2 user CA",
    };
    let certificate = core.issuer.self_signed_ca(&holders, name).await?;
    let record = CaRecord {
        certificate,
        wrapped_key: generated.wrapped_key,
        holders,
    };
    let op = match algorithm {
        SigAlgorithm::EcdsaP256 => Op::InitCa(record.clone()),
        SigAlgorithm::Sm2 => Op::InitSm2Ca(record.clone()),
    };
    let committed = core
        .raft
        .write(Command {
            request_id: String::new(),
            actor: actor.to_owned(),
            now: crate::clock::now(),
            op,
        })
        .await?;
    match committed {
        CommandResult::CaInitialized => {}
        // Another coordinator created the CA first; ours is surplus.
        CommandResult::Rejected(Rejection::CaExists) => {
            tracing::info!(%algorithm, "another node created the user CA first; keeping theirs");
            crate::enroll::delete_keys(core, &record.holders).await;
        }
        other => {
            return Err(CoordError::Internal(format!(
                "unexpected result {other:?} creating the CA"
            )))
        }
    }
    let ca = core
        .view
        .ca_of(algorithm)?
        .ok_or_else(|| CoordError::Internal("CA committed but not applied here".into()))?;
    for chip in core.view.chips()? {
        let set = async {
            core.chips
                .at(&chip.chip_id, &chip.endpoint)?
                .set_trust_anchor(SetTrustAnchorRequest {
                    certificate: ca.certificate.clone(),
                })
                .await
                .map_err(CoordError::Chip)
        }
        .await;
        if let Err(e) = set {
            tracing::warn!(chip = %chip.chip_id, error = %e, "could not set the trust anchor");
        }
    }
    tracing::info!(target: "yunkey::audit", actor, %algorithm, "user CA created");
    Ok(ca)
}

/// Commits a no-op [`Op::Probe`] through Raft (forwarded to the leader when needed) and
/// returns once it is applied here: `ClusterService.WriteProbe`. It takes the path of every
/// write, batched with the commands proposed beside it (`batch.rs`), so that it measures what
/// they wait for; its log index is then the batch entry's.
pub async fn write_probe(core: &Core, actor: &str) -> Result<yunkey_proto::v1::WriteProbeResponse> {
    let cmd = Command {
        request_id: String::new(),
        actor: actor.to_owned(),
        now: crate::clock::now(),
        op: Op::Probe,
    };
    let (_, log_index) = core.batcher.write_indexed(&core.raft, cmd).await?;
    Ok(yunkey_proto::v1::WriteProbeResponse {
        node_id: core.node_id,
        log_index,
        leader_id: core.raft.leader().map(|(id, _)| id).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use yunkey_proto::v1::DomainCipher;

    #[test]
    fn the_configured_cipher_must_be_the_domains() {
        let check = |configured, reported: DomainCipher| {
            check_domain_cipher(configured, "chip-1", "d1", reported as i32)
        };
        assert_eq!(check(None, DomainCipher::Sm4).unwrap(), Cipher::Sm4);
        assert_eq!(
            check(Some(Cipher::Sm4), DomainCipher::Sm4).unwrap(),
            Cipher::Sm4
        );
        // A chip older than the field reports none: its domain is AES-256.
        assert_eq!(
            check(None, DomainCipher::Unspecified).unwrap(),
            Cipher::Aes256
        );
        assert_eq!(
            check(Some(Cipher::Aes256), DomainCipher::Unspecified).unwrap(),
            Cipher::Aes256
        );
        let err = check(Some(Cipher::Sm4), DomainCipher::Aes256).unwrap_err();
        assert!(matches!(err, CoordError::FailedPrecondition(_)), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("d1 uses aes256, not sm4") && text.contains("--domain-cipher aes256"),
            "{text}"
        );
        assert!(check_domain_cipher(None, "chip-1", "d1", 7).is_err());
    }
}
