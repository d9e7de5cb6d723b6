//! The terminal's check of its own executable before it runs: against its release manifest
//! (`--release-manifest FILE`, else `<executable>.release.json` if that exists), with
//! [`yunkey_client::release::Manifest::verify`]. A mismatch refuses to start; no manifest
//! means no release id is sent, and the cluster's release policy decides.
//!
//! A binary that checks itself proves little against someone who can change it: a patched
//! binary skips its own check. The enforcement is the cluster's release policy; see
//! `docs/security.md` ("Signed terminal software").

use anyhow::{anyhow, Context};
use std::path::{Path, PathBuf};
use yunkey_client::release::{default_manifest_path, file_sha256, Manifest};

/// A verified release: its id and manifest.
pub struct CheckedRelease {
    /// The release id, sent with device requests.
    pub release_id: String,
    /// The manifest (its CA is checked against the device certificate once there is one).
    pub manifest: Manifest,
}

/// Checks the running executable against its manifest; `None` when there is none (and none
/// was asked for).
pub fn check(manifest_flag: Option<&Path>) -> anyhow::Result<Option<CheckedRelease>> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let (path, explicit): (PathBuf, bool) = match manifest_flag {
        Some(p) => (p.to_owned(), true),
        None => (default_manifest_path(&exe), false),
    };
    if !explicit && !path.exists() {
        tracing::debug!(manifest = %path.display(), "no release manifest; running without a release id");
        return Ok(None);
    }
    let refuse = |e: &dyn std::fmt::Display| {
        anyhow!("refusing to run: this executable does not pass its release check: {e}")
    };
    let manifest = Manifest::read(&path).map_err(|e| refuse(&e))?;
    let sha = file_sha256(&exe).map_err(|e| refuse(&format!("reading {}: {e}", exe.display())))?;
    let verified = manifest
        .verify(&exe.display().to_string(), &sha)
        .map_err(|e| refuse(&e))?;
    tracing::debug!(release = %verified.release_id, version = %verified.version, "release check passed");
    Ok(Some(CheckedRelease {
        release_id: verified.release_id,
        manifest,
    }))
}

/// For a registered device: the manifest's CA must be the one that issued the device
/// certificate (a manifest of another cluster is refused).
pub fn check_device(release: &CheckedRelease, device_certificate: &[u8]) -> anyhow::Result<()> {
    release
        .manifest
        .check_issuer_of(device_certificate)
        .map_err(|e| anyhow!("refusing to run: {e}"))
}
