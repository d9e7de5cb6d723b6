//! `yunkey release ...`: the operator signs and revokes terminal releases and sets the
//! release policy (role `operator`). Signing sends the version and the file's SHA-256, never
//! the file; the manifest is written beside it.

use crate::cli::{Global, ReleaseCommand};
use crate::connect;
use crate::output::print;
use anyhow::Context;
use serde_json::json;
use yunkey_client::cluster_client;
use yunkey_client::release::{default_manifest_path, file_sha256, Manifest};
use yunkey_proto::v1::{
    ListReleasesRequest, Release, ReleasePolicy, RevokeReleaseRequest, SetReleasePolicyRequest,
    SignReleaseRequest,
};

fn release_json(r: &Release) -> serde_json::Value {
    json!({
        "release_id": r.release_id,
        "version": r.version,
        "sha256": hex::encode(&r.file_sha256),
        "signed_at": r.signed_at,
        "revoked": r.revoked,
        "revoked_at": r.revoked_at,
        "revoked_reason": r.revoked_reason,
    })
}

fn policy_text(p: &ReleasePolicy) -> String {
    format!(
        "minimum version: {}\nrequests without a release: {}",
        if p.min_version.is_empty() {
            "none"
        } else {
            &p.min_version
        },
        if p.require_release {
            "refused"
        } else {
            "accepted"
        }
    )
}

/// `yunkey release ...`.
pub async fn run(g: &Global, cmd: &ReleaseCommand) -> anyhow::Result<()> {
    let conn = connect::operator(g)?;
    match cmd {
        ReleaseCommand::Sign { version, out, file } => {
            let sha = file_sha256(file).with_context(|| format!("reading {}", file.display()))?;
            let req = SignReleaseRequest {
                version: version.clone(),
                file_sha256: sha.to_vec(),
            };
            let r = conn
                .call(|ch| {
                    let req = req.clone();
                    async move { cluster_client(ch).sign_release(req).await }
                })
                .await?;
            let manifest = Manifest::from_release(&r);
            // The cluster's answer is checked like a terminal will check it.
            manifest
                .verify(&file.display().to_string(), &sha)
                .context("the cluster's signature does not check out")?;
            let path = out.clone().unwrap_or_else(|| default_manifest_path(file));
            std::fs::write(&path, manifest.to_json())
                .with_context(|| format!("writing {}", path.display()))?;
            let mut value = release_json(&r);
            value["manifest"] = json!(path.display().to_string());
            print(g.json, value, || {
                format!(
                    "signed release {} (version {}, sha256 {})\nmanifest: {}",
                    r.release_id,
                    r.version,
                    hex::encode(&r.file_sha256),
                    path.display()
                )
            });
        }
        ReleaseCommand::Revoke { release_id, reason } => {
            let req = RevokeReleaseRequest {
                release_id: release_id.clone(),
                reason: reason.clone(),
            };
            let r = conn
                .call(|ch| {
                    let req = req.clone();
                    async move { cluster_client(ch).revoke_release(req).await }
                })
                .await?;
            print(g.json, release_json(&r), || {
                format!("revoked release {} (version {})", r.release_id, r.version)
            });
        }
        ReleaseCommand::Policy {
            min_version,
            require,
            no_require,
        } => {
            let policy = if min_version.is_none() && !require && !no_require {
                conn.call(|ch| async move {
                    cluster_client(ch)
                        .list_releases(ListReleasesRequest {})
                        .await
                })
                .await?
                .policy
                .unwrap_or_default()
            } else {
                let req = SetReleasePolicyRequest {
                    min_version: min_version.as_ref().map(|v| {
                        if v == "none" {
                            String::new()
                        } else {
                            v.clone()
                        }
                    }),
                    require_release: match (require, no_require) {
                        (true, _) => Some(true),
                        (_, true) => Some(false),
                        _ => None,
                    },
                };
                conn.call(|ch| {
                    let req = req.clone();
                    async move { cluster_client(ch).set_release_policy(req).await }
                })
                .await?
            };
            print(
                g.json,
                json!({
                    "min_version": policy.min_version,
                    "require_release": policy.require_release,
                }),
                || policy_text(&policy),
            );
        }
        ReleaseCommand::List => {
            let resp = conn
                .call(|ch| async move {
                    cluster_client(ch)
                        .list_releases(ListReleasesRequest {})
                        .await
                })
                .await?;
            let policy = resp.policy.clone().unwrap_or_default();
            print(
                g.json,
                json!({
                    "releases": resp.releases.iter().map(release_json).collect::<Vec<_>>(),
                    "policy": {
                        "min_version": policy.min_version,
                        "require_release": policy.require_release,
                    },
                }),
                || {
                    let mut text = String::new();
                    for r in &resp.releases {
                        text.push_str(&format!(
                            "{}  {:<12} {}  {}\n",
                            r.release_id,
                            r.version,
                            &hex::encode(&r.file_sha256)[..16],
                            if r.revoked { "revoked" } else { "ok" }
                        ));
                    }
                    if resp.releases.is_empty() {
                        text.push_str("no releases signed\n");
                    }
                    text.push_str(&policy_text(&policy));
                    text
                },
            );
        }
    }
    Ok(())
}
