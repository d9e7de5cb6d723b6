//! Where each flag applies. `--data` and `--log-format` are global: every command takes them,
//! before or after its name. The client flags (`--endpoint`, `--ca`, `--cert`, `--key`,
//! `--json`, `--timeout`) belong to the client commands only: accepted before the command's name
//! (on [`Cli`] itself) or anywhere after it (on the command, global below it, see
//! [`Inherited`]); a server command (`dev`, `chip`, `coordinator`) neither lists nor accepts
//! them. [`Cli::resolve`] merges both places into the [`Global`] the commands read.

use super::{Cli, Command};
use clap::{ArgMatches, Args, FromArgMatches, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Options every command takes, before or after its name.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Data directory. `dev`, `chip` and `coordinator` keep their state in it (see their
    /// `--help`); the client commands read a dev cluster's `endpoint` and TLS files from it.
    #[arg(
        long,
        global = true,
        env = "YUNKEY_DATA",
        default_value = "yunkey-data"
    )]
    pub data: PathBuf,
    /// Log line format on stderr: `text` for people, `json` (one object per line) for log
    /// shippers.
    #[arg(
        long,
        global = true,
        env = "YUNKEY_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
}

/// How a client command finds the cluster and prints its answer. Only the client commands
/// (`user`, `terminal`, `verify`, `status`, `bench`, `ctl`) take these; they go before the
/// command's name or anywhere after it.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Client options")]
pub struct ClientArgs {
    /// Coordinator endpoint(s), `https://host:port`, comma-separated (default: a dev
    /// cluster's, from `DATA/endpoint`).
    #[arg(long, env = "YUNKEY_ENDPOINT", value_delimiter = ',')]
    pub endpoint: Vec<String>,
    /// TLS trust root (PEM) [default: DATA/ca.pem].
    #[arg(long, env = "YUNKEY_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) [default: DATA/client.pem; for `ctl` and `status`,
    /// DATA/operator.pem].
    #[arg(long, env = "YUNKEY_CERT")]
    pub cert: Option<PathBuf>,
    /// Client key (PEM) [default: DATA/client-key.pem; for `ctl` and `status`,
    /// DATA/operator-key.pem].
    #[arg(long, env = "YUNKEY_KEY")]
    pub key: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
    /// How long to keep retrying an unavailable cluster, in seconds [default: 10].
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
}

/// `--json` alone, for `pki` (which talks to no cluster).
#[derive(Debug, Clone, Default, Args)]
pub struct OutputArgs {
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

/// The flags of `T`, made global within the subcommand that flattens them, so that they are
/// accepted after its own subcommands too (`yunkey ctl chip list --json`), and only there:
/// `yunkey coordinator --help` does not list the client flags.
#[derive(Debug, Clone, Default)]
pub struct Inherited<T>(pub T);

impl<T: FromArgMatches> FromArgMatches for Inherited<T> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(m).map(Inherited)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(m)
    }
}

impl<T: Args> Args for Inherited<T> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        globalize(cmd, T::augment_args)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        globalize(cmd, T::augment_args_for_update)
    }
}

/// Adds the arguments `augment` adds to `cmd`, each marked global.
fn globalize(
    cmd: clap::Command,
    augment: impl FnOnce(clap::Command) -> clap::Command,
) -> clap::Command {
    let before: Vec<clap::Id> = cmd.get_arguments().map(|a| a.get_id().clone()).collect();
    let cmd = augment(cmd);
    let added: Vec<clap::Id> = cmd
        .get_arguments()
        .map(|a| a.get_id().clone())
        .filter(|id| !before.contains(id))
        .collect();
    added
        .into_iter()
        .fold(cmd, |cmd, id| cmd.mut_arg(id, |a| a.global(true)))
}

/// A client command with subcommands of its own (`user`, `terminal`, `ctl`).
#[derive(Debug, Args)]
pub struct ClientCommand<C: Subcommand> {
    #[command(flatten)]
    pub client: Inherited<ClientArgs>,
    #[command(subcommand)]
    pub command: C,
}

/// What the commands' code reads: the global flags and the client flags, wherever on the
/// command line they were given.
#[derive(Debug, Clone)]
pub struct Global {
    /// `--data`.
    pub data: PathBuf,
    /// `--endpoint` (empty: the dev cluster's `DATA/endpoint`).
    pub endpoint: Vec<String>,
    /// `--ca`.
    pub ca: Option<PathBuf>,
    /// `--cert`.
    pub cert: Option<PathBuf>,
    /// `--key`.
    pub key: Option<PathBuf>,
    /// `--json`.
    pub json: bool,
    /// `--timeout`, in seconds.
    pub timeout: u64,
    /// `--log-format`.
    pub log_format: LogFormat,
}

/// `--timeout` when not given.
const DEFAULT_TIMEOUT_SECS: u64 = 10;

impl Cli {
    /// Parses the command line; exits with clap's message on an error, and refuses client
    /// flags given before a command that takes none (`yunkey --endpoint URL coordinator`).
    pub fn parse_checked() -> Self {
        Self::try_parse_checked_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// [`Cli::parse_checked`] of `argv`, returning the error.
    pub fn try_parse_checked_from<I, T>(argv: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = <Self as clap::CommandFactory>::command().try_get_matches_from(argv)?;
        let cli = Self::from_arg_matches(&matches)?;
        cli.check_client_flags(&matches)?;
        Ok(cli)
    }

    fn check_client_flags(&self, matches: &ArgMatches) -> Result<(), clap::Error> {
        if self.command.client().is_some() {
            return Ok(());
        }
        for id in ["endpoint", "ca", "cert", "key", "json", "timeout"] {
            if matches.value_source(id) != Some(clap::parser::ValueSource::CommandLine) {
                continue;
            }
            if id == "json" && matches!(self.command, Command::Pki(_) | Command::AuditLog(_)) {
                continue;
            }
            let mut cmd = <Self as clap::CommandFactory>::command();
            return Err(cmd.error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "--{id} is a flag of the client commands (user, terminal, verify, status, \
                     bench, ctl); `yunkey {}` does not take it",
                    self.command.name()
                ),
            ));
        }
        Ok(())
    }

    /// The flags as the commands read them. A client flag given after the subcommand wins
    /// over the same flag given before it.
    pub fn resolve(&self) -> Global {
        let top = &self.client;
        let sub = self.command.client();
        let pick = |f: fn(&ClientArgs) -> Option<PathBuf>| sub.and_then(f).or_else(|| f(top));
        let endpoint = match sub {
            Some(s) if !s.endpoint.is_empty() => s.endpoint.clone(),
            _ => top.endpoint.clone(),
        };
        let json = top.json
            || sub.is_some_and(|s| s.json)
            || matches!(&self.command, Command::Pki(p) if p.output.0.json)
            || matches!(&self.command, Command::AuditLog(a) if a.output.0.json);
        Global {
            data: self.global.data.clone(),
            endpoint,
            ca: pick(|c| c.ca.clone()),
            cert: pick(|c| c.cert.clone()),
            key: pick(|c| c.key.clone()),
            json,
            timeout: sub
                .and_then(|s| s.timeout)
                .or(top.timeout)
                .unwrap_or(DEFAULT_TIMEOUT_SECS),
            log_format: self.global.log_format,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, the event's fields at the top level.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(argv: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_checked_from(std::iter::once("yunkey").chain(argv.iter().copied()))
    }

    const CHIP: [&str; 7] = [
        "chip",
        "--id",
        "c1",
        "--listen",
        "127.0.0.1:1",
        "--tls-dir",
        "/tls",
    ];

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn client_flags_go_before_or_after_the_command() {
        let g = parse(&["--endpoint", "https://a:1", "--json", "ctl", "status"])
            .unwrap()
            .resolve();
        assert_eq!(
            (g.endpoint, g.json, g.timeout),
            (vec!["https://a:1".into()], true, 10)
        );
        let g = parse(&[
            "ctl",
            "chip",
            "list",
            "--endpoint",
            "https://b:1,https://c:1",
        ])
        .unwrap()
        .resolve();
        assert_eq!(g.endpoint, vec!["https://b:1", "https://c:1"]);
        assert!(!g.json);
        let g = parse(&["--timeout", "3", "--ca", "/top", "status", "--ca", "/sub"])
            .unwrap()
            .resolve();
        assert_eq!((g.timeout, g.ca), (3, Some("/sub".into())));
        let g = parse(&["bench", "cluster", "--json", "--cert", "/c"])
            .unwrap()
            .resolve();
        assert!(g.json && g.cert == Some("/c".into()));
        assert!(
            parse(&["pki", "init", "--ca-dir", "/x", "--json"])
                .unwrap()
                .resolve()
                .json
        );
    }

    #[test]
    fn server_commands_take_no_client_flags() {
        let after = parse(&[&CHIP[..], &["--endpoint", "https://a:1"]].concat()).unwrap_err();
        assert_eq!(after.kind(), clap::error::ErrorKind::UnknownArgument);
        let before = parse(&[&["--endpoint", "https://a:1"][..], &CHIP[..]].concat()).unwrap_err();
        assert!(
            before
                .to_string()
                .contains("`yunkey chip` does not take it"),
            "{before}"
        );
        assert!(parse(&[&["--json"][..], &CHIP[..]].concat()).is_err());
        assert!(parse(&[&["--timeout", "3"][..], &CHIP[..]].concat()).is_err());
    }

    #[test]
    fn data_goes_before_or_after_a_server_command() {
        for argv in [
            [&["--data", "/d"][..], &CHIP[..]].concat(),
            [&CHIP[..], &["--data", "/d"][..]].concat(),
        ] {
            let cli = parse(&argv).unwrap();
            let Command::Chip(args) = &cli.command else {
                panic!("{cli:?}")
            };
            assert_eq!(args.data, PathBuf::from("/d"), "{argv:?}");
            assert_eq!(cli.resolve().data, PathBuf::from("/d"), "{argv:?}");
        }
    }
}
