//! Test harness: runs the real `yunkey` binary (`yunkey dev`) on ephemeral ports and talks
//! to it over real TLS, as a business backend, a device or the CLI would.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use yunkey_client::{Connection, ConnectionOptions};
use yunkey_crypto::ecdsa::PrivateKey;
use yunkey_crypto::{authz, tx};
use yunkey_net::{pki::files, TlsFiles};
use yunkey_proto::v1::{
    Authorization, EnrollUserRequest, RegisterDeviceRequest, SignRequest, Transaction,
};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_yunkey")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `yunkey dev`.
pub struct Dev {
    child: Option<Child>,
    pub data: PathBuf,
    pub endpoint: String,
    pub metrics: String,
    _tmp: Option<tempfile::TempDir>,
}

impl Dev {
    /// Starts a dev cluster in a fresh temporary directory.
    pub fn start() -> Dev {
        let tmp = tempfile::tempdir().unwrap();
        let mut dev = Dev::start_in(tmp.path());
        dev._tmp = Some(tmp);
        dev
    }

    /// Starts a dev cluster on `data` (which may hold an earlier cluster).
    pub fn start_in(data: &Path) -> Dev {
        yunkey_net::install_crypto_provider();
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(bin())
            .args([
                "--data",
                data.to_str().unwrap(),
                "dev",
                "--listen",
                "127.0.0.1:0",
                "--metrics",
                &metrics,
            ])
            .env("YUNKEY_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn yunkey dev");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(ep) = line.strip_prefix("endpoint: ") {
                    let _ = tx.send(ep.to_owned());
                }
            }
        });
        let endpoint = rx
            .recv_timeout(Duration::from_secs(90))
            .expect("yunkey dev did not print its endpoint within 90 s");
        Dev {
            child: Some(child),
            data: data.to_owned(),
            endpoint,
            metrics,
            _tmp: None,
        }
    }

    /// Stops the cluster with SIGINT (Ctrl-C) and waits for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(status.success(), "yunkey dev exited with {status}");
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "yunkey dev did not stop on SIGINT"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Kills the cluster with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Runs the CLI against this cluster.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_env(args, &[("YUNKEY_PIN", "4321")])
    }

    /// Runs the CLI with extra environment.
    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(bin());
        cmd.arg("--data")
            .arg(&self.data)
            .args(args)
            .stdin(Stdio::null());
        cmd.env_remove("YUNKEY_PIN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn tls(&self, cert: Option<&str>, key: Option<&str>) -> yunkey_net::tls::TlsMaterial {
        TlsFiles {
            ca: self.data.join(files::CA),
            cert: cert.map(|c| self.data.join(c)),
            key: key.map(|k| self.data.join(k)),
        }
        .load()
        .unwrap()
    }

    fn connection(&self, tls: yunkey_net::tls::TlsMaterial) -> Connection {
        Connection::new(&ConnectionOptions {
            endpoints: vec![self.endpoint.clone()],
            tls,
            domain: None,
            deadline: Duration::from_secs(10),
        })
        .unwrap()
    }

    /// A business backend's connection (client role).
    pub fn business(&self) -> Connection {
        self.connection(self.tls(Some(files::CLIENT), Some(files::CLIENT_KEY)))
    }

    /// A device's connection (no client certificate).
    pub fn device(&self) -> Connection {
        self.connection(self.tls(None, None))
    }

    /// A connection presenting the node certificate.
    pub fn as_node(&self) -> Connection {
        self.connection(self.tls(Some(files::NODE), Some(files::NODE_KEY)))
    }

    /// A connection with a client certificate from a CA the cluster does not trust.
    pub fn untrusted(&self) -> Connection {
        let other = tempfile::tempdir().unwrap();
        yunkey_net::pki::DevPki::ensure(other.path()).unwrap();
        let ca = std::fs::read(self.data.join(files::CA)).unwrap();
        let cert = std::fs::read(other.path().join(files::CLIENT)).unwrap();
        let key = std::fs::read(other.path().join(files::CLIENT_KEY)).unwrap();
        self.connection(yunkey_net::tls::TlsMaterial::from_pem(
            ca,
            Some((cert, key)),
        ))
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A registered device held in memory.
pub struct TestDevice {
    pub user_id: String,
    pub device_id: String,
    pub key: PrivateKey,
}

impl TestDevice {
    /// The device's authorization of `tx` for its user.
    pub fn authorize(&self, tx: &Transaction) -> Authorization {
        let (_, hash) = tx::encode_and_hash(tx).unwrap();
        Authorization {
            device_id: self.device_id.clone(),
            signature: self.key.sign_message(&authz::authorization_message(
                &self.user_id,
                &self.device_id,
                &hash,
            )),
        }
    }

    /// A sign request for `tx` authorized by this device.
    pub fn sign_request(&self, request_id: &str, tx: Transaction) -> SignRequest {
        SignRequest {
            request_id: request_id.to_owned(),
            user_id: self.user_id.clone(),
            authorization: Some(self.authorize(&tx)),
            transaction: Some(tx),
        }
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A valid transaction from `payer`.
pub fn transaction(payer: &str, amount: &str) -> Transaction {
    Transaction {
        payer: payer.to_owned(),
        payee: "Corner Shop".to_owned(),
        amount: amount.to_owned(),
        currency: "EUR".to_owned(),
        transaction_id: format!("tx-{}", hex::encode(yunkey_crypto::random_bytes::<6>())),
        nonce: yunkey_crypto::random_bytes::<16>().to_vec(),
        expires_at: now() + 120,
    }
}

/// Enrols `user_id` and registers an in-memory device for them.
pub async fn enroll_with_device(dev: &Dev, user_id: &str) -> TestDevice {
    let enrolled = yunkey_client::key_client(dev.business().current_channel())
        .enroll_user(EnrollUserRequest {
            request_id: format!("enroll-{user_id}"),
            user_id: user_id.to_owned(),
            algorithm: 0,
            display_name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let key = PrivateKey::generate();
    let spki = key.public_key().to_spki_der();
    let proof = key.sign_message(&authz::registration_message(
        user_id,
        &enrolled.activation_code,
        &spki,
    ));
    let registered = yunkey_client::terminal_client(dev.device().current_channel())
        .register_device(RegisterDeviceRequest {
            request_id: String::new(),
            user_id: user_id.to_owned(),
            activation_code: enrolled.activation_code,
            device_public_key: spki,
            proof,
            device_name: "test phone".into(),
        })
        .await
        .unwrap()
        .into_inner();
    TestDevice {
        user_id: user_id.to_owned(),
        device_id: registered.device.unwrap().device_id,
        key,
    }
}

/// A process of a multi-process cluster (`yunkey chip` or `yunkey coordinator`), whose
/// stdout lines the harness reads.
pub struct Proc {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    /// Every stdout line read so far.
    pub seen: Vec<String>,
    pub name: String,
    pub endpoint: String,
}

impl Proc {
    /// Runs `yunkey ARGS` and waits (at most 60 s) for its `endpoint:` line.
    pub fn spawn(name: &str, args: &[String]) -> Proc {
        let mut child = Command::new(bin())
            .args(args)
            // openraft logs every unreachable peer at ERROR: expected when the test kills one.
            .env("YUNKEY_LOG", "warn,openraft=off")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn yunkey");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut p = Proc {
            child: Some(child),
            lines,
            seen: Vec::new(),
            name: name.to_owned(),
            endpoint: String::new(),
        };
        let line = p.wait_line("endpoint: ", Duration::from_secs(60));
        p.endpoint = line.trim_start_matches("endpoint: ").to_owned();
        p
    }

    /// Waits for a stdout line starting with `prefix` and returns it.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(e) => panic!("{}: no line {prefix:?} within {timeout:?}: {e}", self.name),
            }
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...) with `kill`.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("process is running").id();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// Kills the process with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A multi-process cluster in a temporary directory: a dev PKI, `yunkey chip` processes and
/// `yunkey coordinator` processes, each on its own ephemeral port.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub pki: PathBuf,
    /// Listen port of each coordinator id (kept for restarts: the address is in the membership).
    pub ports: std::collections::BTreeMap<u64, u16>,
}

impl Cluster {
    /// A fresh directory with a dev PKI.
    pub fn new() -> Cluster {
        yunkey_net::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        std::fs::create_dir_all(&pki).unwrap();
        yunkey_net::pki::DevPki::ensure(&pki).unwrap();
        Cluster {
            dir,
            pki,
            ports: Default::default(),
        }
    }

    /// Starts `yunkey chip --id ID`.
    pub fn start_chip(&self, id: &str, zone: &str) -> Proc {
        let data = self.dir.path().join(id);
        Proc::spawn(
            id,
            &[
                "--data".into(),
                data.display().to_string(),
                "chip".into(),
                "--id".into(),
                id.into(),
                "--zone".into(),
                zone.into(),
                "--listen".into(),
                format!("127.0.0.1:{}", free_port()),
                "--tls-dir".into(),
                self.pki.display().to_string(),
            ],
        )
    }

    /// The data directory of coordinator `id`.
    pub fn node_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    /// Runs `yunkey coordinator` with `args` and returns the finished process's output (for
    /// refusals at start-up).
    pub fn coordinator_output(&self, id: u64, data: &Path, extra: &[&str]) -> Output {
        Command::new(bin())
            .args(["--data", data.to_str().unwrap(), "coordinator"])
            .args(["--node-id", &id.to_string()])
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--tls-dir", self.pki.to_str().unwrap()])
            .args(extra)
            .env("YUNKEY_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Starts coordinator `id` on its data directory (and its port, if it ran before).
    pub fn start_node(&mut self, id: u64, init: bool, chips: &[String]) -> Proc {
        let port = *self.ports.entry(id).or_insert_with(free_port);
        let mut args: Vec<String> = vec![
            "--data".into(),
            self.node_dir(id).display().to_string(),
            "coordinator".into(),
            "--node-id".into(),
            id.to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--tls-dir".into(),
            self.pki.display().to_string(),
        ];
        if init {
            args.push("--init".into());
        }
        for chip in chips {
            args.push("--chip".into());
            args.push(chip.clone());
        }
        Proc::spawn(&format!("node-{id}"), &args)
    }

    fn tls(&self, cert: &str, key: &str) -> yunkey_net::tls::TlsMaterial {
        TlsFiles {
            ca: self.pki.join(files::CA),
            cert: Some(self.pki.join(cert)),
            key: Some(self.pki.join(key)),
        }
        .load()
        .unwrap()
    }

    /// A business backend's connection to `endpoints` (retries UNAVAILABLE on the next one).
    pub fn business(&self, endpoints: &[&str]) -> Connection {
        Connection::new(&ConnectionOptions {
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            tls: self.tls(files::CLIENT, files::CLIENT_KEY),
            domain: None,
            deadline: Duration::from_secs(10),
        })
        .unwrap()
    }
}
