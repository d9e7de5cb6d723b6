//! `yunkey chip`: one chip as its own process, serving ChipService over TLS with the node
//! identity. The operator admits it with the domain operator key (`yunkey pki admit-chip` on
//! its `identity.json`); coordinators then add it with `yunkey coordinator --chip URL` (or
//! AdmitChip).
//!
//! The chip keeps its keys in software (`--backend soft`, the default: `master.key` in the
//! data directory) or in a PKCS#11 token (`--backend pkcs11`); either way the signature
//! activation module runs here, in front of the keys, with its database in the data directory.

use crate::cli::ChipArgs;
use crate::serve::{
    install_metrics, node_tls, serve_opened_chip, serve_plain_health, shutdown_signal,
};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use yunkey_chip::{ActivationModule, ChipBackend, ChipConfig, SoftChip};
use yunkey_chip_pkcs11::{Pin, Pkcs11Chip, Pkcs11Options, TokenSelector};
use yunkey_crypto::cipher::Cipher;

/// Where a chip keeps its keys, as chosen on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChipBackendKind {
    /// The soft custody: a master key file in the data directory, sealing with this cipher
    /// (`None`: the one the chip was created with, AES-256 for a new chip).
    Soft {
        /// `--seal-cipher`.
        seal_cipher: Option<Cipher>,
    },
    /// A PKCS#11 token.
    Pkcs11 {
        /// The module (shared library).
        module: PathBuf,
        /// The token, by slot id or label.
        token: TokenSelector,
        /// The file with the user PIN.
        pin_file: PathBuf,
    },
}

impl ChipBackendKind {
    /// The backend the flags describe; refuses PKCS#11 flags without `--backend pkcs11`.
    pub fn from_args(args: &ChipArgs) -> anyhow::Result<Self> {
        match args.backend.as_str() {
            "soft" => {
                if args.module.is_some()
                    || args.slot.is_some()
                    || args.token_label.is_some()
                    || args.pin_file.is_some()
                {
                    bail!("--module, --slot, --token-label and --pin-file need --backend pkcs11");
                }
                Ok(Self::Soft {
                    seal_cipher: args.seal_cipher,
                })
            }
            "pkcs11" => {
                if args.seal_cipher.is_some() {
                    bail!(
                        "--seal-cipher needs --backend soft: a PKCS#11 chip seals its records \
                         with the token's own AES-256 key"
                    );
                }
                let token = match (args.slot, &args.token_label) {
                    (Some(slot), None) => TokenSelector::Slot(slot),
                    (None, Some(label)) => TokenSelector::Label(label.clone()),
                    _ => bail!("--backend pkcs11 needs the token: --slot N or --token-label L"),
                };
                Ok(Self::Pkcs11 {
                    module: args
                        .module
                        .clone()
                        .context("--backend pkcs11 needs --module")?,
                    token,
                    pin_file: args
                        .pin_file
                        .clone()
                        .context("--backend pkcs11 needs --pin-file")?,
                })
            }
            other => bail!("unknown chip backend {other:?} (soft or pkcs11)"),
        }
    }

    /// Opens the chip whose database is in `dir`.
    pub fn open(&self, dir: &Path, config: ChipConfig) -> anyhow::Result<ActivationModule> {
        let id = config.chip_id.clone();
        match self {
            Self::Soft { seal_cipher } => {
                SoftChip::open_with_seal_cipher(dir, config, *seal_cipher)
                    .with_context(|| format!("opening soft chip {id} in {}", dir.display()))
            }
            Self::Pkcs11 {
                module,
                token,
                pin_file,
            } => {
                let pin = Pin::from_file(pin_file)
                    .with_context(|| format!("reading the PIN file {}", pin_file.display()))?;
                let options = Pkcs11Options::new(module, token.clone(), pin);
                Pkcs11Chip::open(dir, config, options).with_context(|| {
                    format!(
                        "opening PKCS#11 chip {id} ({token} of {}) with its database in {}",
                        module.display(),
                        dir.display()
                    )
                })
            }
        }
    }
}

/// `yunkey chip`.
pub async fn run(args: &ChipArgs) -> anyhow::Result<()> {
    let backend = ChipBackendKind::from_args(args)?;
    let tls = node_tls(&args.tls_dir)?;
    let metrics = install_metrics(&args.metrics)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let config = ChipConfig {
        chip_id: args.id.clone(),
        capacity: args.capacity,
        zone: args.zone.clone(),
    };
    let data = args.data.clone();
    let chip = tokio::task::spawn_blocking(move || backend.open(&data, config)).await??;
    let custody = chip.info().map(|i| i.custody).unwrap_or_default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let admission = args
        .admission
        .clone()
        .unwrap_or_else(|| args.data.join(crate::admission::ADMISSION_FILE));
    let (endpoint, task) = serve_opened_chip(
        &args.data,
        &admission,
        Arc::new(chip),
        args.id.clone(),
        &tls,
        listener,
        stop_rx.clone(),
    )?;
    println!(
        "yunkey chip {}: zone {}, capacity {}, keys in {custody}, data in {}",
        args.id,
        args.zone,
        args.capacity,
        args.data.display()
    );
    if !admission.exists() {
        let identity = args.data.join(crate::admission::IDENTITY_FILE);
        println!(
            "not admitted yet: sign {} with `yunkey pki admit-chip` and put the result at {}",
            identity.display(),
            admission.display()
        );
        // The identity on one line, for hosts where the file is hard to reach (a container
        // without a shell): `yunkey chip ... | grep '^identity: '`.
        let (parsed, _) = crate::admission::read_identity(&identity)?;
        println!("identity: {}", serde_json::to_string(&parsed)?);
    }
    let reporter = tonic_health::server::HealthReporter::new();
    reporter
        .set_service_status(
            "yunkey.v1.ChipService",
            tonic_health::ServingStatus::Serving,
        )
        .await;
    let health = tonic_health::server::HealthService::from_health_reporter(reporter);
    let health = tonic_health::pb::health_server::HealthServer::new(health);
    if let Some(h) = serve_plain_health(&args.health, health, stop_rx.clone()).await? {
        println!("health: {h} (grpc.health.v1, plaintext)");
    }
    if let Some(m) = metrics {
        println!("metrics: http://{m}/metrics");
    }
    println!("endpoint: {endpoint}");
    shutdown_signal().await;
    eprintln!("stopping");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn chip_args(extra: &[&str]) -> Result<ChipArgs, clap::Error> {
        let mut argv = vec!["yunkey", "chip", "--id", "c1", "--listen", "127.0.0.1:1"];
        argv.extend_from_slice(&["--tls-dir", "/tls"]);
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv)?.command {
            Command::Chip(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn backend_flags() {
        let kind = |extra: &[&str]| ChipBackendKind::from_args(&chip_args(extra).unwrap());
        assert_eq!(
            kind(&[]).unwrap(),
            ChipBackendKind::Soft { seal_cipher: None }
        );
        assert_eq!(
            kind(&["--seal-cipher", "sm4"]).unwrap(),
            ChipBackendKind::Soft {
                seal_cipher: Some(Cipher::Sm4)
            }
        );
        assert!(chip_args(&["--seal-cipher", "des"]).is_err());
        let pkcs11 = [
            "--backend",
            "pkcs11",
            "--module",
            "/m.so",
            "--pin-file",
            "/pin",
        ];
        assert_eq!(
            kind(&[&pkcs11[..], &["--slot", "7"]].concat()).unwrap(),
            ChipBackendKind::Pkcs11 {
                module: "/m.so".into(),
                token: TokenSelector::Slot(7),
                pin_file: "/pin".into(),
            }
        );
        assert!(matches!(
            kind(&[&pkcs11[..], &["--token-label", "t"]].concat()).unwrap(),
            ChipBackendKind::Pkcs11 { token: TokenSelector::Label(l), .. } if l == "t"
        ));
        // The token is required, once; the PKCS#11 flags need the PKCS#11 backend.
        assert!(kind(&pkcs11).is_err());
        assert!(
            kind(&[&pkcs11[..], &["--slot", "7", "--seal-cipher", "aes256"]].concat()).is_err()
        );
        assert!(
            chip_args(&[&pkcs11[..], &["--slot", "1", "--token-label", "t"]].concat()).is_err()
        );
        assert!(chip_args(&["--backend", "pkcs11", "--slot", "1"]).is_err());
        assert!(kind(&["--slot", "3"]).is_err());
        assert!(chip_args(&["--backend", "hsm"]).is_err());
    }
}
