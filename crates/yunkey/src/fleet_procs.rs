//! The processes of `yunkey bench fleet`: a whole cluster on this machine, made of real
//! `yunkey chip` and `yunkey coordinator` processes (this same binary) on loopback, with TLS
//! from a PKI made by `yunkey pki`, in a work directory. Every process logs into
//! `<work>/log/<name>.<n>.log` (one file per start).
//!
//! Processes are the bench's children, in its process group: Ctrl-C in the terminal stops
//! them with it, and dropping the [`Fleet`] kills whatever is left.

use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use yunkey_client::{cluster_client, Connection, ConnectionOptions};
use yunkey_net::{pki::files, TlsFiles};
use yunkey_proto::v1::AddNodeRequest;

/// One chip of the fleet.
#[derive(Debug, Clone)]
pub struct ChipSpec {
    /// `--id`.
    pub id: String,
    /// `--zone`.
    pub zone: String,
    /// `--capacity`.
    pub capacity: u64,
}

struct Running {
    child: Option<Child>,
    args: Vec<String>,
    starts: u32,
}

/// A cluster of child processes in a work directory.
pub struct Fleet {
    exe: PathBuf,
    work: PathBuf,
    pki: PathBuf,
    procs: BTreeMap<String, Running>,
    /// Each chip's `https://` endpoint, by id.
    pub chips: BTreeMap<String, String>,
    /// Each coordinator's `https://` endpoint, by node id.
    pub nodes: BTreeMap<u64, String>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for p in self.procs.values_mut() {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Fleet {
    /// A PKI in `work` (a cluster CA; one node identity for every process, a business
    /// client's and an operator's; the domain operator key), no process yet.
    pub fn new(work: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(work.join("log"))?;
        let fleet = Self {
            exe: std::env::current_exe().context("finding this executable")?,
            work: work.to_owned(),
            pki: work.join("pki"),
            procs: BTreeMap::new(),
            chips: BTreeMap::new(),
            nodes: BTreeMap::new(),
        };
        let ca = work.join("ca");
        let (ca, pki) = (
            ca.to_str().unwrap_or_default(),
            fleet.pki.to_str().unwrap_or_default(),
        );
        fleet.run(&["pki", "init", "--ca-dir", ca])?;
        for (role, name) in [
            ("node", "bench-node"),
            ("client", "bench-client"),
            ("operator", "bench-operator"),
        ] {
            let mut args = vec![
                "pki", "issue", "--ca-dir", ca, "--role", role, "--name", name,
            ];
            if role == "node" {
                args.extend(["--host", "127.0.0.1", "--host", "localhost"]);
            }
            args.extend(["--out", pki]);
            fleet.run(&args)?;
        }
        let key = fleet.operator_key();
        fleet.run(&[
            "pki",
            "domain-operator-key",
            "--out",
            key.to_str().unwrap_or_default(),
        ])?;
        Ok(fleet)
    }

    fn operator_key(&self) -> PathBuf {
        self.work.join("domain-operator-key.pem")
    }

    /// Runs `yunkey ARGS` to completion; it must succeed.
    fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = Command::new(&self.exe)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running yunkey {args:?}"))?;
        if !out.status.success() {
            bail!(
                "yunkey {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Starts process `name` with `args` (again, if it ran before), logging to a new file;
    /// returns that file.
    fn spawn(&mut self, name: &str, args: Vec<String>) -> anyhow::Result<PathBuf> {
        let entry = self.procs.entry(name.to_owned()).or_insert(Running {
            child: None,
            args: args.clone(),
            starts: 0,
        });
        entry.args = args;
        entry.starts += 1;
        let log = self
            .work
            .join("log")
            .join(format!("{name}.{}.log", entry.starts));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(&self.exe)
            .args(&entry.args)
            .env("YUNKEY_LOG", "warn,openraft=off")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        entry.child = Some(child);
        Ok(log)
    }

    /// Waits until `log` has a line starting with `prefix`; returns the line.
    fn wait_line(
        &mut self,
        name: &str,
        log: &Path,
        prefix: &str,
        limit: Duration,
    ) -> anyhow::Result<String> {
        let end = Instant::now() + limit;
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.starts_with(prefix)) {
                return Ok(line.to_owned());
            }
            let exited = match self.procs.get_mut(name).and_then(|p| p.child.as_mut()) {
                Some(c) => c.try_wait()?.is_some(),
                None => true,
            };
            if exited || Instant::now() > end {
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                bail!(
                    "{name} {} no {prefix:?} line within {limit:?}; its log ({}) ends: {tail:?}",
                    if exited { "exited with" } else { "printed" },
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts each chip and admits it to the security domain (`yunkey pki admit-chip` on its
    /// `identity.json`).
    pub fn start_chips(&mut self, chips: &[ChipSpec]) -> anyhow::Result<()> {
        let mut logs = Vec::new();
        for c in chips {
            let data = self.work.join(&c.id);
            let args = vec![
                "--data".into(),
                data.display().to_string(),
                "chip".into(),
                "--id".into(),
                c.id.clone(),
                "--zone".into(),
                c.zone.clone(),
                "--capacity".into(),
                c.capacity.to_string(),
                "--listen".into(),
                format!("127.0.0.1:{}", free_port()?),
                "--tls-dir".into(),
                self.pki.display().to_string(),
            ];
            logs.push((c.id.clone(), self.spawn(&c.id, args)?));
        }
        for (id, log) in logs {
            let line = self.wait_line(&id, &log, "endpoint: ", Duration::from_secs(60))?;
            self.chips
                .insert(id.clone(), line.trim_start_matches("endpoint: ").to_owned());
            let identity = self.work.join(&id).join("identity.json");
            self.run(&[
                "pki",
                "admit-chip",
                "--domain-operator-key",
                self.operator_key().to_str().unwrap_or_default(),
                "--identity",
                identity.to_str().unwrap_or_default(),
            ])?;
        }
        Ok(())
    }

    fn node_args(&self, id: u64, port: u16, extra: &[String]) -> Vec<String> {
        let mut args = vec![
            "--data".into(),
            self.work.join(format!("node-{id}")).display().to_string(),
            "coordinator".into(),
            "--node-id".into(),
            id.to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--tls-dir".into(),
            self.pki.display().to_string(),
        ];
        args.extend(extra.iter().cloned());
        args
    }

    /// Starts `n` coordinators with `flags` (node 1 initializes the cluster with every chip;
    /// the others are added through it) and waits until each is ready.
    pub async fn start_coordinators(&mut self, n: u64, flags: &[String]) -> anyhow::Result<()> {
        let port = free_port()?;
        let mut first = flags.to_vec();
        first.push("--init".into());
        for url in self.chips.values() {
            first.extend(["--chip".into(), url.clone()]);
        }
        let log = self.spawn("node-1", self.node_args(1, port, &first))?;
        self.wait_line("node-1", &log, "ready", Duration::from_secs(120))?;
        // Restarts must not carry --init or the chips.
        self.procs.get_mut("node-1").expect("started").args = self.node_args(1, port, flags);
        self.nodes.insert(1, format!("https://127.0.0.1:{port}"));
        let admin = self.operator()?;
        for id in 2..=n {
            let port = free_port()?;
            let name = format!("node-{id}");
            let log = self.spawn(&name, self.node_args(id, port, flags))?;
            let line = self.wait_line(&name, &log, "endpoint: ", Duration::from_secs(60))?;
            let address = line.trim_start_matches("endpoint: ").to_owned();
            let req = AddNodeRequest {
                node_id: id,
                address: address.clone(),
            };
            admin
                .call(|ch| {
                    let req = req.clone();
                    async move { cluster_client(ch).add_node(req).await }
                })
                .await
                .with_context(|| format!("adding node {id}"))?;
            self.wait_line(&name, &log, "ready", Duration::from_secs(120))?;
            self.nodes.insert(id, address);
        }
        Ok(())
    }

    /// Stops every coordinator (SIGTERM) and starts it again on its data with `flags`
    /// instead of the ones it had; waits until each is ready.
    pub fn restart_coordinators(&mut self, flags: &[String]) -> anyhow::Result<()> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in &ids {
            self.stop(&format!("node-{id}"))?;
        }
        let mut logs = Vec::new();
        for id in ids {
            let name = format!("node-{id}");
            let port: u16 = self.nodes[&id]
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .context("a coordinator's port")?;
            let log = self.spawn(&name, self.node_args(id, port, flags))?;
            logs.push((name, log));
        }
        for (name, log) in logs {
            self.wait_line(&name, &log, "ready", Duration::from_secs(120))?;
        }
        Ok(())
    }

    /// SIGTERM, then waits up to 20 s for the exit (SIGKILL after that).
    pub fn stop(&mut self, name: &str) -> anyhow::Result<()> {
        let Some(mut child) = self.procs.get_mut(name).and_then(|p| p.child.take()) else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(20);
        while child.try_wait()?.is_none() {
            if Instant::now() > end {
                child.kill()?;
                child.wait()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// SIGKILL; returns once the process is dead (reaped).
    pub fn kill9(&mut self, name: &str) -> anyhow::Result<()> {
        let mut child = self
            .procs
            .get_mut(name)
            .and_then(|p| p.child.take())
            .with_context(|| format!("{name} is not running"))?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    fn connect(&self, identity: Option<(&str, &str)>) -> anyhow::Result<Connection> {
        let tls = TlsFiles {
            ca: self.pki.join(files::CA),
            cert: identity.map(|(c, _)| self.pki.join(c)),
            key: identity.map(|(_, k)| self.pki.join(k)),
        }
        .load()?;
        Ok(Connection::new(&ConnectionOptions {
            endpoints: self.nodes.values().cloned().collect(),
            tls,
            domain: None,
            deadline: Duration::from_secs(30),
        })?)
    }

    /// A business backend's connection to every coordinator (the SDK's retry).
    pub fn business(&self) -> anyhow::Result<Connection> {
        self.connect(Some((files::CLIENT, files::CLIENT_KEY)))
    }

    /// An operator's connection to every coordinator.
    pub fn operator(&self) -> anyhow::Result<Connection> {
        self.connect(Some((files::OPERATOR, files::OPERATOR_KEY)))
    }

    /// A device's connection to every coordinator (server-authenticated TLS only).
    pub fn device(&self) -> anyhow::Result<Connection> {
        self.connect(None)
    }
}
