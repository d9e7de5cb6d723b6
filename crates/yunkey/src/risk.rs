//! `yunkey risk`: the reference risk service (`yunkey-risk`) as a process, and its tools:
//! `serve`, `check-rules FILE`, `init-key FILE`.

use anyhow::Context;
use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use yunkey_net::pki::files;
use yunkey_net::TlsFiles;
use yunkey_risk::server::{FaceUnit, ServeConfig};
use yunkey_risk::template::TemplateKey;
use yunkey_risk::Rules;

/// `yunkey risk`.
#[derive(Debug, Args)]
pub struct RiskArgs {
    #[command(subcommand)]
    pub command: RiskCommand,
}

#[derive(Debug, Subcommand)]
pub enum RiskCommand {
    /// Serve RiskService (AssessRisk, AuthenticateUser, EnrollFace, DeleteFace) to the
    /// coordinators. Prints `endpoint: https://...` when ready and writes it to DATA/endpoint;
    /// SIGTERM or Ctrl-C stops it. The rules file is reloaded when it changes (looked at every
    /// second) or on SIGHUP; a file that is not valid is refused and the rules in force stay.
    Serve(RiskServeArgs),
    /// Check a rules file: exit 0 and print its version if it is valid, otherwise print what
    /// is wrong and exit non-zero.
    CheckRules {
        /// The rules file (TOML; see deploy/risk/rules.example.toml).
        file: PathBuf,
    },
    /// Create a face-template key (32 random bytes as hex, mode 0600). Refuses to overwrite
    /// a file. `serve` also creates its key on first start when the file is missing.
    InitKey {
        /// Where to write it.
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct RiskServeArgs {
    /// The rules file (TOML; see deploy/risk/rules.example.toml).
    #[arg(long, value_name = "FILE")]
    pub rules: PathBuf,
    /// The data directory: `store/` (counters, counted transactions, authentication results,
    /// sealed face templates), `endpoint`, and `template.key` unless --template-key is given.
    #[arg(long, env = "YUNKEY_RISK_DATA", default_value = "yunkey-risk-data")]
    pub data: PathBuf,
    /// Directory with `ca.pem`, `risk.pem` and `risk-key.pem` (the risk identity, role `risk`,
    /// from `yunkey pki issue --role risk`). Callers' certificates must chain to `ca.pem`.
    #[arg(long)]
    pub tls_dir: PathBuf,
    /// Address to listen on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// The biometric unit (`yunkey-face`), `https://host:port`. Without it, EnrollFace and
    /// AuthenticateUser are refused with FAILED_PRECONDITION.
    #[arg(long, value_name = "URL")]
    pub face: Option<String>,
    /// Deadline of each call to the biometric unit, in milliseconds.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub face_timeout_ms: u64,
    /// The face-template key file [default: DATA/template.key]; created (mode 0600) if it does
    /// not exist. Without it the stored templates cannot be read: back it up.
    #[arg(long, value_name = "FILE")]
    pub template_key: Option<PathBuf>,
    /// Address of the Prometheus metrics endpoint (`/metrics`); `off` disables it.
    #[arg(long, env = "YUNKEY_RISK_METRICS", default_value = "off")]
    pub metrics: String,
}

/// Runs `yunkey risk ...`.
pub async fn run(args: &RiskArgs) -> anyhow::Result<()> {
    match &args.command {
        RiskCommand::Serve(a) => serve(a).await,
        RiskCommand::CheckRules { file } => {
            let rules = Rules::load(file)?;
            println!(
                "{}: valid; version {}, {} rules, decisions valid {} s, face threshold {}",
                file.display(),
                rules.version,
                rules.all().count(),
                rules.decision_validity_secs,
                rules.face_threshold
            );
            Ok(())
        }
        RiskCommand::InitKey { file } => {
            TemplateKey::create(file)?;
            println!(
                "{}: new face-template key (mode 0600); back it up apart from the data directory",
                file.display()
            );
            Ok(())
        }
    }
}

async fn serve(args: &RiskServeArgs) -> anyhow::Result<()> {
    let (cert, key) = files::identity(yunkey_net::Role::Risk);
    let tls = TlsFiles {
        ca: args.tls_dir.join(files::CA),
        cert: Some(args.tls_dir.join(cert)),
        key: Some(args.tls_dir.join(key)),
    }
    .load()
    .with_context(|| {
        format!(
            "loading the risk TLS identity from {}",
            args.tls_dir.display()
        )
    })?;
    let metrics = crate::serve::install_metrics(&args.metrics)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let mut config = ServeConfig::new(args.rules.clone(), args.data.clone(), tls);
    config.template_key = args.template_key.clone();
    config.face = args.face.as_ref().map(|endpoint| FaceUnit {
        endpoint: endpoint.clone(),
        timeout: Duration::from_millis(args.face_timeout_ms),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let running = yunkey_risk::serve(config, listener, stop_rx).await?;
    println!(
        "yunkey risk: rules {} (version {}), data in {}",
        args.rules.display(),
        running.rules.get().version,
        args.data.display()
    );
    if let Some(m) = metrics {
        println!("metrics: http://{m}/metrics");
    }
    println!("endpoint: {}", running.endpoint);
    let mut task = running.task;
    tokio::select! {
        _ = crate::serve::shutdown_signal() => eprintln!("stopping"),
        r = &mut task => {
            return r.context("risk server task")?.context("risk server");
        }
    }
    let _ = stop_tx.send(true);
    // The server stops accepting and answers the calls in flight.
    match tokio::time::timeout(Duration::from_secs(5), task).await {
        Ok(r) => r.context("risk server task")?.context("risk server"),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(argv: &[&str]) -> Result<RiskCommand, clap::Error> {
        let mut all = vec!["yunkey", "risk"];
        all.extend_from_slice(argv);
        match Cli::try_parse_from(all)?.command {
            Command::Risk(a) => Ok(a.command),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn serve_takes_its_flags() {
        let argv = [
            "serve",
            "--rules",
            "r.toml",
            "--data",
            "d",
            "--tls-dir",
            "t",
            "--listen",
            "127.0.0.1:0",
            "--face",
            "https://face:7443",
            "--template-key",
            "k",
        ];
        let RiskCommand::Serve(a) = parse(&argv).unwrap() else {
            panic!("not serve")
        };
        assert_eq!(a.rules, PathBuf::from("r.toml"));
        assert_eq!(a.data, PathBuf::from("d"));
        assert_eq!(a.face.as_deref(), Some("https://face:7443"));
        assert_eq!(a.template_key, Some(PathBuf::from("k")));
        assert_eq!(a.face_timeout_ms, 10_000);
        assert!(parse(&["serve", "--rules", "r", "--tls-dir", "t"]).is_err());
        assert!(matches!(
            parse(&["check-rules", "f.toml"]).unwrap(),
            RiskCommand::CheckRules { .. }
        ));
        assert!(matches!(
            parse(&["init-key", "k"]).unwrap(),
            RiskCommand::InitKey { .. }
        ));
    }
}
