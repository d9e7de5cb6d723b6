//! Terminal releases: the code-signing key (generated in chips the first time an operator
//! signs a release, replicated and repaired like the user CA key), signing and revoking
//! releases, the release policy, and the check every device request passes
//! ([`check`]) before anything is consumed.
//!
//! The code-signing key signs only release manifests: the chip builds the message
//! (`yunkey_crypto::release::manifest_message`) from the version and the file's hash, so the
//! coordinator cannot have it sign anything else. Its certificate is issued by the user CA
//! (the CA key signs certificates only; the code-signing key is no CA).

use crate::core::Core;
use crate::error::{CoordError, Result};
use crate::placement::{self, Candidate};
use crate::state::{
    CodeSigningRecord, Command, CommandResult, Op, Rejection, ReleasePolicy, ReleaseRecord,
};
use yunkey_crypto::ecdsa::PublicKey;
use yunkey_crypto::release::{self, Version};
use yunkey_crypto::validate::{self, InvalidField};
use yunkey_proto::v1 as pb;

fn version_of(v: (u32, u32, u32)) -> Version {
    Version {
        major: v.0,
        minor: v.1,
        patch: v.2,
    }
}

fn tuple(v: Version) -> (u32, u32, u32) {
    (v.major, v.minor, v.patch)
}

/// Whether a device request presenting `release_id` (empty: none) is allowed by the cluster's
/// release policy, as applied on this node. Refusals are FAILED_PRECONDITION
/// ([`CoordError::ReleaseRefused`]) naming the reason: none given while one is required, an
/// unknown release, a revoked one, or one below the minimum version.
pub fn check(core: &Core, release_id: &str) -> Result<()> {
    let policy = core.view.release_policy()?;
    if release_id.is_empty() {
        if policy.require_release {
            return Err(CoordError::ReleaseRefused(
                "this cluster accepts only signed terminal releases and the request names none; \
                 install a release signed with `yunkey release sign`, with its manifest beside \
                 the executable"
                    .into(),
            ));
        }
        return Ok(());
    }
    validate::identifier("release_id", release_id)?;
    let Some(r) = core.view.release(release_id)? else {
        return Err(CoordError::ReleaseRefused(format!(
            "release {release_id} is unknown to this cluster; install a release this cluster signed"
        )));
    };
    let version = version_of(r.version);
    if let Some(at) = r.revoked_at {
        let why = if r.revoked_reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.revoked_reason)
        };
        return Err(CoordError::ReleaseRefused(format!(
            "release {release_id} (version {version}) was revoked at Unix time {at}{why}; \
             install a newer release"
        )));
    }
    if let Some(min) = policy.min_version.map(version_of) {
        if version < min {
            return Err(CoordError::ReleaseRefused(format!(
                "release {release_id} has version {version}, below the minimum version {min} \
                 this cluster accepts; install a newer release"
            )));
        }
    }
    Ok(())
}

/// The code-signing key, created if the cluster has none: generated in a chip, copied to the
/// other replicas, certified by the user CA, one Raft entry.
pub async fn ensure_code_signing(core: &Core, actor: &str) -> Result<CodeSigningRecord> {
    if let Some(record) = core.view.code_signing()? {
        return Ok(record);
    }
    let (ca, _) = core.ca()?;
    let registry = core.view.chips()?;
    let candidates: Vec<_> = registry
        .iter()
        .map(|chip| Candidate {
            chip,
            routable: core.placeable(&chip.chip_id),
        })
        .collect();
    let chosen = placement::place(&candidates, core.config.replicas.max(2));
    let (generated, holders) = crate::replicas::create_key(
        core,
        &chosen,
        pb::Algorithm::EcdsaP256,
        pb::KeyPurpose::CodeSigning,
        "",
        "",
        None,
    )
    .await?;
    let certificate = core
        .issuer
        .code_signing_certificate(&ca, &generated.wrapped_key)
        .await?;
    let record = CodeSigningRecord {
        certificate,
        wrapped_key: generated.wrapped_key,
        holders,
    };
    let committed = core
        .raft
        .write(Command {
            request_id: String::new(),
            actor: actor.to_owned(),
            now: crate::clock::now(),
            op: Op::InitCodeSigning(record),
        })
        .await?;
    match committed {
        CommandResult::CodeSigningInitialized => {
            tracing::info!(target: "yunkey::audit", actor, "code-signing key created");
        }
        // Another node created it first; our copies are surplus and the sweep deletes them.
        CommandResult::Rejected(Rejection::CodeSigningExists) => {
            tracing::info!("another node created the code-signing key first; keeping theirs");
        }
        other => {
            return Err(CoordError::Internal(format!(
                "unexpected result {other:?} creating the code-signing key"
            )))
        }
    }
    core.view.code_signing()?.ok_or_else(|| {
        CoordError::Internal("code-signing key committed but not applied here".into())
    })
}

/// The code-signing certificate chain: the code-signing certificate, then the user CA.
fn chain(core: &Core) -> Result<Vec<Vec<u8>>> {
    let mut chain = Vec::new();
    if let Some(cs) = core.view.code_signing()? {
        chain.push(cs.certificate);
        if let Some(ca) = core.view.ca()? {
            chain.push(ca.certificate);
        }
    }
    Ok(chain)
}

fn to_proto(r: ReleaseRecord, chain: Vec<Vec<u8>>) -> pb::Release {
    pb::Release {
        release_id: r.release_id,
        version: version_of(r.version).to_string(),
        file_sha256: r.file_sha256.to_vec(),
        signature: r.signature,
        certificate_chain: chain,
        signed_at: r.signed_at,
        revoked: r.revoked_at.is_some(),
        revoked_at: r.revoked_at.unwrap_or_default(),
        revoked_reason: r.revoked_reason,
    }
}

/// `ClusterService.SignRelease`.
pub async fn sign(core: &Core, actor: &str, req: pb::SignReleaseRequest) -> Result<pb::Release> {
    let version = Version::parse("version", &req.version)?;
    let file_sha256: [u8; 32] = req.file_sha256.as_slice().try_into().map_err(|_| {
        InvalidField::new(
            "file_sha256",
            format!(
                "is {} bytes; send the 32-byte SHA-256 of the file",
                req.file_sha256.len()
            ),
        )
    })?;
    let message = release::manifest_message(&version, &file_sha256);
    let release_id = release::release_id(&message);
    if let Some(existing) = core.view.release(&release_id)? {
        if existing.revoked_at.is_some() {
            return Err(CoordError::FailedPrecondition(format!(
                "release {release_id} (version {version} of this file) was revoked; a revoked \
                 release is never reinstated: build and sign a new version"
            )));
        }
        return Ok(to_proto(existing, chain(core)?));
    }
    let cs = ensure_code_signing(core, actor).await?;
    let (_, signed) = core
        .chips
        .first_answer(&cs.holders, "the code-signing key", |chip, holder| {
            let request = pb::SignManifestRequest {
                key_handle: holder.key_handle,
                version: version.to_string(),
                file_sha256: file_sha256.to_vec(),
            };
            async move { chip.sign_manifest(request).await }
        })
        .await?;
    // A chip's answer is checked before it is published.
    let spki = crate::ca::certificate_spki(&cs.certificate)?;
    PublicKey::from_spki_der(&spki)
        .and_then(|k| k.verify_message(&message, &signed.signature))
        .map_err(|e| {
            CoordError::Internal(format!(
                "the chip's manifest signature does not verify with the code-signing certificate: {e}"
            ))
        })?;
    let record = ReleaseRecord {
        release_id: release_id.clone(),
        version: tuple(version),
        file_sha256,
        signature: signed.signature,
        signed_at: crate::clock::now(),
        signed_by: actor.to_owned(),
        revoked_at: None,
        revoked_reason: String::new(),
    };
    core.propose(
        &format!("release-{release_id}"),
        actor,
        Op::RecordRelease(record),
    )
    .await?;
    let stored = core
        .view
        .release(&release_id)?
        .ok_or_else(|| CoordError::Internal("release committed but not applied here".into()))?;
    tracing::info!(target: "yunkey::audit", actor, release = %release_id, %version, "release signed");
    Ok(to_proto(stored, chain(core)?))
}

/// `ClusterService.RevokeRelease`.
pub async fn revoke(
    core: &Core,
    actor: &str,
    req: pb::RevokeReleaseRequest,
) -> Result<pb::Release> {
    validate::identifier("release_id", &req.release_id)?;
    validate::text("reason", &req.reason, 256, true)?;
    core.propose(
        "",
        actor,
        Op::RevokeRelease {
            release_id: req.release_id.clone(),
            reason: req.reason.clone(),
        },
    )
    .await?;
    let stored = core
        .view
        .release(&req.release_id)?
        .ok_or_else(|| CoordError::ReleaseNotFound(req.release_id.clone()))?;
    tracing::info!(target: "yunkey::audit", actor, release = %req.release_id, "release revoked");
    Ok(to_proto(stored, chain(core)?))
}

fn policy_proto(p: &ReleasePolicy) -> pb::ReleasePolicy {
    pb::ReleasePolicy {
        min_version: p
            .min_version
            .map(|v| version_of(v).to_string())
            .unwrap_or_default(),
        require_release: p.require_release,
    }
}

/// `ClusterService.SetReleasePolicy`.
pub async fn set_policy(
    core: &Core,
    actor: &str,
    req: pb::SetReleasePolicyRequest,
) -> Result<pb::ReleasePolicy> {
    let mut policy = core.view.release_policy()?;
    match req.min_version.as_deref() {
        None => {}
        Some("") => policy.min_version = None,
        Some(v) => policy.min_version = Some(tuple(Version::parse("min_version", v)?)),
    }
    if let Some(require) = req.require_release {
        policy.require_release = require;
    }
    core.propose("", actor, Op::SetReleasePolicy(policy.clone()))
        .await?;
    tracing::info!(target: "yunkey::audit", actor, ?policy, "release policy set");
    Ok(policy_proto(&core.view.release_policy()?))
}

/// `ClusterService.ListReleases`.
pub fn list(core: &Core) -> Result<pb::ListReleasesResponse> {
    let chain = chain(core)?;
    let mut releases: Vec<pb::Release> = core
        .view
        .releases()?
        .into_iter()
        .map(|r| to_proto(r, chain.clone()))
        .collect();
    releases.sort_by(|a, b| (a.signed_at, &a.release_id).cmp(&(b.signed_at, &b.release_id)));
    Ok(pb::ListReleasesResponse {
        releases,
        policy: Some(policy_proto(&core.view.release_policy()?)),
        code_signing_chain: chain,
    })
}
