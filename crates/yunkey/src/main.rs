//! `yunkey`: one binary for every process and command of a yunkey cluster.
//!
//! - `yunkey dev`: a whole cluster in one process (one coordinator, three soft chips).
//! - `yunkey user ...`, `yunkey verify`, `yunkey status`: the business backend's and the
//!   operator's commands.
//! - `yunkey terminal ...`: plays the phone: registers a device, authorizes payments.
//! - `yunkey chip`, `yunkey coordinator`: one chip or one coordinator of a multi-process
//!   cluster; `yunkey ctl ...`: its membership and status; `yunkey pki ...`: its TLS
//!   certificates; `yunkey release ...`: signed releases of the terminal software.
//! - `yunkey risk serve`: the reference risk service; `yunkey risk check-rules FILE`.
//! - `yunkey bench`: the signing benchmark against a running cluster; `yunkey bench cluster`:
//!   enrolments, Raft writes and leader failover of a coordinator cluster.
//!
//! This crate wires the library crates together; it holds no business logic of its own.

mod admission;
mod bench;
mod bench_cluster;
mod bench_device;
mod bench_fleet;
mod chip;
mod cli;
mod connect;
mod coordinator;
mod ctl;
mod ctl_status;
mod dev;
mod fleet_procs;
mod load;
mod output;
mod pin;
mod pki;
mod release;
mod risk;
mod self_check;
mod serve;
mod terminal;
mod user;
mod user_risk;

use std::process::ExitCode;

/// mimalloc instead of the C library's malloc for every process this binary runs: the sign
/// path's allocations (requests, records, Raft entries; freed on other threads than they were
/// made on) cost the leader a seventh and each follower a fifth of its CPU in glibc's malloc
/// (docs/performance.md, item 30). Key material is zeroized before it is freed, whichever
/// allocator frees it. Transparent huge pages are off for the process (see `main`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // mimalloc asks for transparent huge pages for its arenas; a Raft follower then spent
    // 28 % of its CPU in the kernel zeroing 2 MB pages for buffers that live a moment
    // (docs/performance.md, item 30). Off for this process and what it starts, as TiKV and
    // most databases advise; a kernel without the flag keeps its own setting (logged).
    let thp = rustix::thread::disable_transparent_huge_pages(true);
    let cli = cli::Cli::parse_checked();
    let g = cli.resolve();
    init_tracing(&cli, &g);
    if let Err(e) = thp {
        tracing::debug!(error = %e, "cannot turn transparent huge pages off for this process");
    }
    yunkey_net::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = g.json;
    match runtime.block_on(run(&g, &cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::error(json, &e);
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(cli: &cli::Cli, g: &cli::Global) {
    let default = if matches!(
        cli.command,
        cli::Command::Dev(_)
            | cli::Command::Chip(_)
            | cli::Command::Coordinator(_)
            | cli::Command::Risk(_)
    ) {
        "info,openraft=warn"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("YUNKEY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match g.log_format {
        cli::LogFormat::Text => builder.init(),
        cli::LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn run(g: &cli::Global, command: &cli::Command) -> anyhow::Result<()> {
    match command {
        cli::Command::Dev(args) => dev::run(args).await,
        cli::Command::User(cmd) => user::run(g, &cmd.command).await,
        cli::Command::Terminal(cmd) => terminal::run(g, &cmd.command).await,
        cli::Command::Verify(args) => user::verify(g, args).await,
        cli::Command::Status(args) => user::status(g, args).await,
        cli::Command::Bench(args) => bench::run(g, args).await,
        cli::Command::Chip(args) => chip::run(args).await,
        cli::Command::Coordinator(args) => coordinator::run(args).await,
        cli::Command::Ctl(cmd) => ctl::run(g, &cmd.command).await,
        cli::Command::Release(cmd) => release::run(g, &cmd.command).await,
        cli::Command::Pki(args) => pki::run(g, &args.command),
        cli::Command::Risk(args) => risk::run(args).await,
        cli::Command::AuditLog(args) => audit_log(g, &args.command),
    }
}

/// `yunkey audit-log`.
fn audit_log(g: &cli::Global, cmd: &cli::AuditLogCommand) -> anyhow::Result<()> {
    let cli::AuditLogCommand::Verify { dir } = cmd;
    let report = yunkey_coordinator::audit_log::verify(dir)?;
    anyhow::ensure!(
        report.files > 0,
        "{} holds no audit log file (audit-*.jsonl); give a coordinator's audit/ directory",
        dir.display()
    );
    output::print(
        g.json,
        serde_json::json!({
            "files": report.files,
            "lines": report.lines,
            "first_seq": report.first_seq,
            "last_seq": report.last_seq,
            "gaps": report.gaps,
        }),
        || {
            let mut text = format!(
                "audit log intact: {} lines in {} files, seq {} to {}",
                report.lines,
                report.files,
                report.first_seq.unwrap_or_default(),
                report.last_seq.unwrap_or_default()
            );
            for (first, last) in &report.gaps {
                text.push_str(&format!(
                    "\ngap: seq {first} to {last} are not in this node's log (another coordinator's holds them)"
                ));
            }
            text
        },
    );
    Ok(())
}
