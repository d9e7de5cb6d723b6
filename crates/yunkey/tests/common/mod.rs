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
use yunkey_crypto::sig::{Algorithm, SigningKey};
use yunkey_crypto::{authz, tx};
use yunkey_net::{pki::files, TlsFiles};
use yunkey_proto::v1::{
    Authorization, EnrollUserRequest, RegisterDeviceRequest, SignRequest, Transaction,
};

/// How long a test waits for a process or a cluster to become ready (a node to print
/// `ready`, a leader to be elected, a chip to answer): generous, for a loaded CI machine.
pub const READY: Duration = Duration::from_secs(60);

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

/// Runs `yunkey ARGS` (stdin closed, no `YUNKEY_ENDPOINT`/`YUNKEY_DATA` from the caller's
/// environment), which must succeed; returns its standard output.
pub fn yunkey_ok(args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(args)
        .env_remove("YUNKEY_ENDPOINT")
        .env_remove("YUNKEY_DATA")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "yunkey {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `yunkey pki ARGS`, which must succeed.
pub fn pki_cli(args: &[&str]) {
    let mut all = vec!["pki"];
    all.extend_from_slice(args);
    yunkey_ok(&all);
}

/// The subject of the certificate the TLS server at `addr` (`host:port`) presents, as
/// `openssl s_client` prints it after verifying the chain against `ca` (panics if it does not
/// verify).
pub fn openssl_peer_subject(addr: &str, ca: &Path) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            addr,
            "-CAfile",
            ca.to_str().unwrap(),
        ])
        .args(["-verify_return_error", "-brief"])
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        text.contains("Verification: OK"),
        "openssl s_client {addr}: {text}"
    );
    text.lines()
        .find(|l| l.starts_with("Peer certificate:"))
        .unwrap_or_else(|| panic!("no peer certificate line: {text}"))
        .replace(' ', "")
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
        Dev::start_with(data, "warn", Stdio::inherit())
    }

    /// Starts a dev cluster in a fresh temporary directory that logs at `filter`
    /// (`YUNKEY_LOG`) to the file it returns.
    pub fn start_logging(filter: &str) -> (Dev, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("dev.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut dev = Dev::start_with(tmp.path(), filter, Stdio::from(file));
        dev._tmp = Some(tmp);
        (dev, log)
    }

    /// Starts a dev cluster on `data` with more `yunkey dev` flags.
    pub fn start_in_args(data: &Path, extra: &[&str]) -> Dev {
        Dev::start_full(data, "warn", Stdio::inherit(), extra)
    }

    /// Starts a dev cluster in a fresh temporary directory with more `yunkey dev` flags.
    pub fn start_args(extra: &[&str]) -> Dev {
        let tmp = tempfile::tempdir().unwrap();
        let mut dev = Dev::start_full(tmp.path(), "warn", Stdio::inherit(), extra);
        dev._tmp = Some(tmp);
        dev
    }

    fn start_with(data: &Path, filter: &str, stderr: Stdio) -> Dev {
        Dev::start_full(data, filter, stderr, &[])
    }

    /// `yunkey --data DATA dev` on ephemeral ports, with `extra` flags.
    fn command(data: &Path, metrics: &str, filter: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args([
            "--data",
            data.to_str().unwrap(),
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            metrics,
        ])
        .args(extra)
        .env("YUNKEY_LOG", filter);
        cmd
    }

    /// Runs `yunkey dev` on `data` with `extra` flags, which must refuse to start (within a
    /// minute); returns what it wrote to standard error.
    pub fn start_refused(data: &Path, extra: &[&str]) -> String {
        let mut child = Dev::command(data, "off", "warn", extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn yunkey dev");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("yunkey dev {extra:?} kept running; it should have refused to start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "yunkey dev {extra:?} exited 0");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn start_full(data: &Path, filter: &str, stderr: Stdio, extra: &[&str]) -> Dev {
        yunkey_net::install_crypto_provider();
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut child = Dev::command(data, &metrics, filter, extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
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

    /// The process id of the running cluster.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the cluster is running").id()
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
        self.cli_env(args, &[("YUNKEY_PIN", "43214321")])
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

    /// `device`'s connection over the device channel (its certificate, TLS 1.3).
    pub fn device_channel(&self, device: &TestDevice) -> Connection {
        Connection::device(
            &ConnectionOptions {
                endpoints: vec![self.endpoint.clone()],
                tls: self.tls(None, None),
                domain: None,
                deadline: Duration::from_secs(10),
            },
            device.identity(),
        )
        .unwrap()
    }

    /// An operator's connection (operator role: membership, chip admission).
    pub fn operator(&self) -> Connection {
        self.connection(self.tls(Some(files::OPERATOR), Some(files::OPERATOR_KEY)))
    }

    /// A connection to `endpoint` (a chip, say) as `role`, or without a certificate.
    pub fn connection_to(&self, endpoint: &str, role: Option<yunkey_net::Role>) -> Connection {
        let tls = match role {
            Some(role) => {
                let (cert, key) = files::identity(role);
                self.tls(Some(cert), Some(key))
            }
            None => self.tls(None, None),
        };
        Connection::new(&ConnectionOptions {
            endpoints: vec![endpoint.to_owned()],
            tls,
            domain: None,
            deadline: Duration::from_secs(10),
        })
        .unwrap()
    }

    /// A connection presenting the node certificate.
    pub fn as_node(&self) -> Connection {
        self.connection(self.tls(Some(files::NODE), Some(files::NODE_KEY)))
    }

    /// A connection to a chip's ChipService presenting the node certificate: what an attacker
    /// holding a coordinator's identity can do.
    pub fn chip_as_node(&self, chip_endpoint: &str) -> Connection {
        Connection::new(&ConnectionOptions {
            endpoints: vec![chip_endpoint.to_owned()],
            tls: self.tls(Some(files::NODE), Some(files::NODE_KEY)),
            domain: None,
            deadline: Duration::from_secs(10),
        })
        .unwrap()
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

/// A key that signs and names its public key: a P-256 `PrivateKey` or a `SigningKey`.
pub trait KeyLike {
    fn spki(&self) -> Vec<u8>;
    fn sign(&self, message: &[u8]) -> Vec<u8>;
}

impl KeyLike for PrivateKey {
    fn spki(&self) -> Vec<u8> {
        self.public_key().to_spki_der()
    }
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.sign_message(message)
    }
}

impl KeyLike for SigningKey {
    fn spki(&self) -> Vec<u8> {
        self.public_key().to_spki_der()
    }
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.sign_message(message)
    }
}

/// The JSON a successful `--json` command printed; panics with its output otherwise.
pub fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

/// Enrols `user`, registers the CLI's device in `keystore`.
pub fn onboard(dev: &Dev, user: &str, keystore: &Path) {
    let enrolled = json(&dev.cli(&["--json", "user", "enroll", user]));
    let code = enrolled["activation_code"].as_str().unwrap();
    assert_eq!(code.len(), 14);
    let ks = keystore.to_str().unwrap();
    let registered = json(&dev.cli(&[
        "--json",
        "terminal",
        "register",
        "--user",
        user,
        "--activation-code",
        code,
        "--keystore",
        ks,
    ]));
    assert!(registered["device_id"]
        .as_str()
        .unwrap()
        .starts_with("dev-"));
}

/// `yunkey terminal pay` of `amount` EUR from `user` to Corner Shop, with the device in
/// `keystore`.
pub fn pay_output(dev: &Dev, user: &str, keystore: &Path, amount: &str) -> std::process::Output {
    dev.cli(&[
        "--json",
        "terminal",
        "pay",
        "--user",
        user,
        "--payee",
        "Corner Shop",
        "--amount",
        amount,
        "--currency",
        "eur",
        "--keystore",
        keystore.to_str().unwrap(),
    ])
}

/// A registered device held in memory.
pub struct TestDevice {
    pub user_id: String,
    pub device_id: String,
    /// Its key: ECDSA P-256 or SM2.
    pub key: SigningKey,
    /// The device certificate registration gave it.
    pub certificate: Vec<u8>,
}

/// Signs TLS handshakes with an in-memory device key (tests only).
#[derive(Debug)]
pub struct MemorySigner(pub SigningKey);

impl yunkey_net::device_tls::HandshakeSigner for MemorySigner {
    fn scheme(&self) -> yunkey_net::device_tls::SignatureScheme {
        match &self.0 {
            SigningKey::P256(_) => yunkey_net::device_tls::SignatureScheme::ECDSA_NISTP256_SHA256,
            SigningKey::Sm2(_) => yunkey_net::sm2_tls::SM2SIG_SM3,
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        Ok(match &self.0 {
            SigningKey::P256(k) => k.sign_message(message),
            SigningKey::Sm2(k) => k
                .with_distid(yunkey_net::sm2_tls::TLS13_SM2_ID)
                .unwrap()
                .sign_message(message),
        })
    }
}

impl TestDevice {
    /// A copy (the same user, device, key and certificate).
    pub fn clone_identity(&self) -> TestDevice {
        TestDevice {
            user_id: self.user_id.clone(),
            device_id: self.device_id.clone(),
            key: self.key.clone(),
            certificate: self.certificate.clone(),
        }
    }

    /// Its identity on the device channel, with `certificate` (its own, or another to try).
    pub fn identity_with(&self, certificate: Vec<u8>) -> yunkey_net::device_tls::DeviceIdentity {
        yunkey_net::device_tls::DeviceIdentity {
            certificate,
            signer: std::sync::Arc::new(MemorySigner(self.key.clone())),
        }
    }

    /// Its identity on the device channel.
    pub fn identity(&self) -> yunkey_net::device_tls::DeviceIdentity {
        self.identity_with(self.certificate.clone())
    }

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
            format: authz::AuthorizationFormat::for_key(self.key.algorithm()).to_wire(),
        }
    }

    /// A sign request for `tx` authorized by this device.
    pub fn sign_request(&self, request_id: &str, tx: Transaction) -> SignRequest {
        SignRequest {
            request_id: request_id.to_owned(),
            release_id: String::new(),
            evidence: None,
            location: None,
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

/// Asserts that `result` failed with `code` and a message holding every one of `words`.
pub fn expect(
    result: Result<tonic::Response<impl std::fmt::Debug>, tonic::Status>,
    code: tonic::Code,
    words: &[&str],
) {
    let status = result.expect_err("request should fail");
    assert_eq!(status.code(), code, "{status:?}");
    for w in words {
        assert!(
            status.message().contains(w),
            "message {:?} lacks {w:?}",
            status.message()
        );
    }
}

/// A registration for `user_id` with `code`, with a valid proof by a fresh device key.
pub fn registration(user_id: &str, code: &str) -> RegisterDeviceRequest {
    registration_with(&PrivateKey::generate(), user_id, code)
}

/// A registration for `user_id` with `code`, proved by `key` (P-256 or SM2).
pub fn registration_with(
    key: &(impl KeyLike + ?Sized),
    user_id: &str,
    code: &str,
) -> RegisterDeviceRequest {
    let spki = key.spki();
    RegisterDeviceRequest {
        request_id: String::new(),
        user_id: user_id.into(),
        activation_code: code.into(),
        proof: key.sign(&authz::registration_message(user_id, code, &spki)),
        device_public_key: spki,
        device_name: String::new(),
        release_id: String::new(),
    }
}

/// Registers `key` as a device of `user_id` with `code` through `device` (a connection
/// without a client certificate); panics if refused.
pub async fn register_key(
    device: &Connection,
    key: impl Into<SigningKey>,
    user_id: &str,
    code: &str,
) -> TestDevice {
    let key: SigningKey = key.into();
    let registered = yunkey_client::terminal_client(device.current_channel())
        .register_device(registration_with(&key, user_id, code))
        .await
        .unwrap_or_else(|e| panic!("register a device of {user_id}: {e:?}"))
        .into_inner()
        .device
        .unwrap();
    TestDevice {
        user_id: user_id.to_owned(),
        device_id: registered.device_id,
        key,
        certificate: registered.certificate,
    }
}

/// Enrols `user_id` through `business` (request id `enroll-<user_id>`); returns the code.
pub async fn enroll_code(business: &Connection, user_id: &str) -> String {
    enroll_code_with(business, user_id, Algorithm::EcdsaP256, "").await
}

/// [`enroll_code`] with a key of `algorithm` (SM2: under `distid`, empty for the default).
pub async fn enroll_code_with(
    business: &Connection,
    user_id: &str,
    algorithm: Algorithm,
    distid: &str,
) -> String {
    yunkey_client::key_client(business.current_channel())
        .enroll_user(EnrollUserRequest {
            request_id: format!("enroll-{user_id}"),
            user_id: user_id.into(),
            algorithm: algorithm.to_proto() as i32,
            display_name: String::new(),
            distinguishing_id: distid.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .activation_code
}

/// Enrols `user_id` and registers an in-memory device for them.
pub async fn enroll_with_device(dev: &Dev, user_id: &str) -> TestDevice {
    enroll_on(&dev.business(), &dev.device(), user_id).await
}

/// Enrols `user_id` through `business` and registers an in-memory device through `device`.
/// Adds coordinator `node_id`, serving at `address`, to the cluster through `admin` (an operator
/// connection); panics if the leader refuses.
pub async fn add_node(admin: &Connection, node_id: u64, address: &str) {
    let req = yunkey_proto::v1::AddNodeRequest {
        node_id,
        address: address.to_owned(),
    };
    admin
        .call(|ch| {
            let req = req.clone();
            async move { yunkey_client::cluster_client(ch).add_node(req).await }
        })
        .await
        .unwrap_or_else(|e| panic!("AddNode {node_id}: {e:?}"));
}

pub async fn enroll_on(business: &Connection, device: &Connection, user_id: &str) -> TestDevice {
    let code = enroll_code(business, user_id).await;
    register_key(device, PrivateKey::generate(), user_id, &code).await
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
        Proc::spawn_in(None, name, args)
    }

    /// [`Proc::spawn`] inside network namespace `netns` (`ip netns exec` execs the binary, so
    /// signals still reach yunkey itself).
    pub fn spawn_in(netns: Option<&str>, name: &str, args: &[String]) -> Proc {
        Proc::spawn_with(netns, name, args, None)
    }

    /// [`Proc::spawn_in`], keeping the process's output in files when `capture` is given.
    pub fn spawn_with(
        netns: Option<&str>,
        name: &str,
        args: &[String],
        capture: Option<&Capture>,
    ) -> Proc {
        let command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, bin()]);
                c
            }
            None => Command::new(bin()),
        };
        Proc::spawn_command(command, name, args, capture)
    }

    /// Runs another program than `yunkey` (`yunkey-face`) as [`Proc::spawn`] does.
    pub fn spawn_program(program: &Path, name: &str, args: &[String]) -> Proc {
        Proc::spawn_command(Command::new(program), name, args, None)
    }

    fn spawn_command(
        mut command: Command,
        name: &str,
        args: &[String],
        capture: Option<&Capture>,
    ) -> Proc {
        command
            .args(args)
            // openraft logs every unreachable peer at ERROR: expected when the test kills one.
            .env(
                "YUNKEY_LOG",
                capture.map_or("warn,openraft=off", |c| c.filter.as_str()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut stdout_log = None;
        match capture {
            Some(c) => {
                std::fs::create_dir_all(&c.dir).unwrap();
                command.stderr(c.open(&format!("{name}.stderr.log")));
                stdout_log = Some(c.open(&format!("{name}.stdout.log")));
            }
            None => {
                command.stderr(Stdio::inherit());
            }
        }
        let mut child = command.spawn().expect("spawn yunkey");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(log) = stdout_log.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(log, "{line}");
                }
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
        let line = p.wait_line("endpoint: ", READY);
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

    /// Stops the process with SIGTERM and waits for it to exit (SIGKILL after 20 s).
    pub fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        let mut child = self.child.take().unwrap();
        // It may have exited already: then `kill` fails and there is nothing to wait for.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running (not killed or stopped by the test).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

/// Where processes of a [`Cluster`] keep their output besides the harness: in `dir`,
/// `<name>.stdout.log` (every stdout line) and `<name>.stderr.log` (the logs), appended across
/// restarts, with `filter` as `YUNKEY_LOG`.
pub struct Capture {
    pub dir: PathBuf,
    pub filter: String,
}

impl Capture {
    fn open(&self, file: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(file))
            .unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A multi-process cluster in a temporary directory: a cluster CA made with `yunkey pki init`,
/// `yunkey chip` and `yunkey coordinator` processes each with its own certificate issued by
/// `yunkey pki issue`, each on its own ephemeral port.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// The CA directory (`ca.pem`, `ca-key.pem`).
    pub ca: PathBuf,
    /// The business backend's TLS directory (`ca.pem`, `client.pem`, `client-key.pem`).
    pub pki: PathBuf,
    /// The operator's TLS directory (`ca.pem`, `operator.pem`, `operator-key.pem`).
    pub ops: PathBuf,
    /// Listen port of each coordinator id (kept for restarts: the address is in the membership).
    pub ports: std::collections::BTreeMap<u64, u16>,
    /// When set, coordinators run in their own network namespaces (see [`NetLab`]).
    pub lab: Option<NetLab>,
    /// When set, chips and coordinators started from now on keep their output in files.
    pub capture: Option<Capture>,
}

impl Cluster {
    /// A fresh directory with a cluster CA, a business backend's certificate and an
    /// operator's.
    pub fn new() -> Cluster {
        yunkey_net::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        let pki = dir.path().join("pki");
        let ops = dir.path().join("ops");
        pki_cli(&["init", "--ca-dir", ca.to_str().unwrap()]);
        pki_cli(&[
            "domain-operator-key",
            "--out",
            dir.path().join("domain-operator-key.pem").to_str().unwrap(),
        ]);
        pki_cli(&[
            "issue",
            "--ca-dir",
            ca.to_str().unwrap(),
            "--role",
            "client",
            "--name",
            "backend-1",
            "--out",
            pki.to_str().unwrap(),
        ]);
        pki_cli(&[
            "issue",
            "--ca-dir",
            ca.to_str().unwrap(),
            "--role",
            "operator",
            "--name",
            "ops-1",
            "--out",
            ops.to_str().unwrap(),
        ]);
        Cluster {
            dir,
            ca,
            pki,
            ops,
            ports: Default::default(),
            lab: None,
            capture: None,
        }
    }

    /// Keeps the output of the chips and coordinators started from now on in `<dir>/logs`,
    /// logging with `filter` (`YUNKEY_LOG`).
    pub fn capture_logs(&mut self, filter: &str) -> PathBuf {
        let dir = self.dir.path().join("logs");
        self.capture = Some(Capture {
            dir: dir.clone(),
            filter: filter.to_owned(),
        });
        dir
    }

    /// A fresh cluster whose coordinators 1..=`nodes` each run in their own network namespace
    /// (chips and the test's clients stay in this one, on the lab's bridge).
    pub fn in_netns(nodes: u64) -> Cluster {
        let mut c = Cluster::new();
        c.lab = Some(NetLab::new(nodes));
        c
    }

    /// The address this host's processes (chips) listen on: the lab's bridge, or loopback.
    fn local_ip(&self) -> String {
        match &self.lab {
            Some(lab) => lab.gateway(),
            None => "127.0.0.1".into(),
        }
    }

    /// Coordinator `id`'s listen IP.
    fn node_ip(&self, id: u64) -> String {
        match &self.lab {
            Some(lab) => lab.ip(id),
            None => "127.0.0.1".into(),
        }
    }

    /// The TLS directory of node `name` (a chip or `node-<id>`): its own certificate, issued
    /// on first use for 127.0.0.1 and localhost.
    pub fn node_tls(&self, name: &str) -> PathBuf {
        let out = self.dir.path().join(format!("tls-{name}"));
        if !out.exists() {
            pki_cli(&[
                "issue",
                "--ca-dir",
                self.ca.to_str().unwrap(),
                "--role",
                "node",
                "--name",
                name,
                "--host",
                "127.0.0.1",
                "--host",
                "localhost",
                "--host",
                &self.host_of(name),
                "--out",
                out.to_str().unwrap(),
            ]);
        }
        out
    }

    /// The IP a node named `name` listens on.
    fn host_of(&self, name: &str) -> String {
        match name.strip_prefix("node-").and_then(|id| id.parse().ok()) {
            Some(id) => self.node_ip(id),
            None => self.local_ip(),
        }
    }

    /// The operator key that admits this cluster's chips.
    pub fn operator_key(&self) -> PathBuf {
        self.dir.path().join("domain-operator-key.pem")
    }

    /// Starts `yunkey chip --id ID` and admits it: the operator signs the `identity.json` it
    /// writes, with `yunkey pki admit-chip`, into its data directory.
    pub fn start_chip(&self, id: &str, zone: &str) -> Proc {
        let chip = self.spawn_chip(id, zone);
        let identity = self.dir.path().join(id).join("identity.json");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !identity.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "chip {id} wrote no identity.json"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        pki_cli(&[
            "admit-chip",
            "--domain-operator-key",
            self.operator_key().to_str().unwrap(),
            "--identity",
            identity.to_str().unwrap(),
        ]);
        chip
    }

    /// Starts `yunkey chip --id ID` without admitting it.
    pub fn spawn_chip(&self, id: &str, zone: &str) -> Proc {
        let data = self.dir.path().join(id);
        Proc::spawn_with(
            None,
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
                format!("{}:{}", self.local_ip(), free_port()),
                "--tls-dir".into(),
                self.node_tls(id).display().to_string(),
            ],
            self.capture.as_ref(),
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
            .args([
                "--tls-dir",
                self.node_tls(&format!("node-{id}")).to_str().unwrap(),
            ])
            .args(extra)
            .env("YUNKEY_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Starts coordinator `id` on its data directory (and its port, if it ran before).
    pub fn start_node(&mut self, id: u64, init: bool, chips: &[String]) -> Proc {
        self.start_node_with(id, init, chips, &[])
    }

    /// [`Cluster::start_node`] with more `yunkey coordinator` flags.
    pub fn start_node_with(
        &mut self,
        id: u64,
        init: bool,
        chips: &[String],
        extra: &[&str],
    ) -> Proc {
        let port = *self.ports.entry(id).or_insert_with(free_port);
        let mut args: Vec<String> = vec![
            "--data".into(),
            self.node_dir(id).display().to_string(),
            "coordinator".into(),
            "--node-id".into(),
            id.to_string(),
            "--listen".into(),
            format!("{}:{port}", self.node_ip(id)),
            "--tls-dir".into(),
            self.node_tls(&format!("node-{id}")).display().to_string(),
        ];
        if init {
            args.push("--init".into());
        }
        for chip in chips {
            args.push("--chip".into());
            args.push(chip.clone());
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let netns = self.lab.as_ref().map(|lab| lab.netns(id));
        Proc::spawn_with(
            netns.as_deref(),
            &format!("node-{id}"),
            &args,
            self.capture.as_ref(),
        )
    }

    fn tls(&self, dir: &Path, cert: &str, key: &str) -> yunkey_net::tls::TlsMaterial {
        TlsFiles {
            ca: dir.join(files::CA),
            cert: Some(dir.join(cert)),
            key: Some(dir.join(key)),
        }
        .load()
        .unwrap()
    }

    fn connect(&self, endpoints: &[&str], tls: yunkey_net::tls::TlsMaterial) -> Connection {
        Connection::new(&ConnectionOptions {
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            tls,
            domain: None,
            deadline: Duration::from_secs(10),
        })
        .unwrap()
    }

    /// A connection to a chip's ChipService presenting coordinator `node_id`'s certificate.
    pub fn chip_as_node(&self, node_id: u64, chip_endpoint: &str) -> Connection {
        let dir = self.node_tls(&format!("node-{node_id}"));
        self.connect(
            &[chip_endpoint],
            self.tls(&dir, files::NODE, files::NODE_KEY),
        )
    }

    /// `yunkey ARGS` as the operator: `--endpoint`, `--ca`, `--cert` and `--key` from
    /// [`Cluster::ops`], before ARGS.
    pub fn operator_command(&self, endpoints: &[&str], args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(["--endpoint", &endpoints.join(",")])
            .arg("--ca")
            .arg(self.ops.join(files::CA))
            .arg("--cert")
            .arg(self.ops.join(files::OPERATOR))
            .arg("--key")
            .arg(self.ops.join(files::OPERATOR_KEY))
            .args(args)
            .env("YUNKEY_LOG", "warn")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs [`Cluster::operator_command`]; returns its output and how long it took.
    pub fn operator_cli(&self, endpoints: &[&str], args: &[&str]) -> (Output, Duration) {
        timed_output(self.operator_command(endpoints, args))
    }

    /// A business backend's connection to `endpoints` (retries UNAVAILABLE on the next one).
    pub fn business(&self, endpoints: &[&str]) -> Connection {
        self.connect(
            endpoints,
            self.tls(&self.pki, files::CLIENT, files::CLIENT_KEY),
        )
    }

    /// A device's connection to `endpoints` (server-authenticated TLS only).
    pub fn device(&self, endpoints: &[&str]) -> Connection {
        let tls = TlsFiles {
            ca: self.pki.join(files::CA),
            cert: None,
            key: None,
        }
        .load()
        .unwrap();
        self.connect(endpoints, tls)
    }

    /// An operator's connection to `endpoints` (membership changes; follows the leader hint).
    pub fn operator(&self, endpoints: &[&str]) -> Connection {
        self.connect(
            endpoints,
            self.tls(&self.ops, files::OPERATOR, files::OPERATOR_KEY),
        )
    }
}

/// Runs `cmd` to its end; returns its output and how long it took.
pub fn timed_output(mut cmd: Command) -> (Output, Duration) {
    let started = std::time::Instant::now();
    let out = cmd.output().unwrap();
    (out, started.elapsed())
}

/// Hosts in network namespaces for partition tests. Coordinator N runs in namespace `ykt-nN`
/// with address 10.231.7.(10+N); a veth pair joins every two nodes directly, and one more joins
/// each node to this namespace, where the test and the chips live at 10.231.7.1. No packet is
/// forwarded (so the host's firewall, such as Docker's `FORWARD DROP`, plays no part). Isolating
/// a node takes its links to the other nodes down: established connections go silent, new ones
/// fail, while the test still reaches every node. Removed on drop.
pub struct NetLab {
    nodes: u64,
}

fn ip_cmd(args: &[&str]) -> std::io::Result<Output> {
    Command::new("ip").args(args).stdin(Stdio::null()).output()
}

fn ip_ok(args: &[&str]) {
    let out = ip_cmd(args).expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetLab {
    /// Builds the lab (tearing down one left by a killed run first). Needs root.
    pub fn new(nodes: u64) -> NetLab {
        let lab = NetLab { nodes };
        lab.teardown();
        let gateway = lab.gateway();
        for n in 1..=nodes {
            let ns = lab.netns(n);
            let ip = lab.ip(n);
            let host_side = format!("ykt-v{n}");
            ip_ok(&["netns", "add", &ns]);
            ip_ok(&["-n", &ns, "link", "set", "lo", "up"]);
            ip_ok(&["-n", &ns, "addr", "add", &format!("{ip}/32"), "dev", "lo"]);
            // The link to this namespace.
            ip_ok(&[
                "link", "add", &host_side, "type", "veth", "peer", "name", "host", "netns", &ns,
            ]);
            ip_ok(&["addr", "add", &format!("{gateway}/32"), "dev", &host_side]);
            ip_ok(&["link", "set", &host_side, "up"]);
            ip_ok(&["route", "add", &format!("{ip}/32"), "dev", &host_side]);
            ip_ok(&["-n", &ns, "link", "set", "host", "up"]);
            ip_ok(&[
                "-n",
                &ns,
                "route",
                "add",
                &format!("{gateway}/32"),
                "dev",
                "host",
            ]);
        }
        // A direct link between every two nodes: `pM` in node N's namespace leads to node M.
        for a in 1..=nodes {
            for b in (a + 1)..=nodes {
                let (ns_a, ns_b) = (lab.netns(a), lab.netns(b));
                let (to_b, to_a) = (format!("p{b}"), format!("p{a}"));
                ip_ok(&[
                    "link", "add", &to_b, "netns", &ns_a, "type", "veth", "peer", "name", &to_a,
                    "netns", &ns_b,
                ]);
                for (ns, dev, peer) in [(&ns_a, &to_b, b), (&ns_b, &to_a, a)] {
                    ip_ok(&["-n", ns, "link", "set", dev, "up"]);
                    let dest = format!("{}/32", lab.ip(peer));
                    ip_ok(&["-n", ns, "route", "add", &dest, "dev", dev]);
                }
            }
        }
        lab
    }

    /// Namespace of node `n`.
    pub fn netns(&self, n: u64) -> String {
        format!("ykt-n{n}")
    }

    /// IP of node `n`.
    pub fn ip(&self, n: u64) -> String {
        format!("10.231.7.{}", 10 + n)
    }

    /// The IP of this namespace on every link, where chips and the test live.
    pub fn gateway(&self) -> String {
        "10.231.7.1".into()
    }

    /// Cuts node `n` off from the other nodes (not from the test and the chips).
    pub fn isolate(&self, n: u64) {
        self.links(n, "down");
    }

    /// Undoes [`NetLab::isolate`].
    pub fn heal(&self, n: u64) {
        self.links(n, "up");
        // Bringing a link up does not bring back the routes its going down removed.
        for peer in (1..=self.nodes).filter(|p| *p != n) {
            for (ns, dev, dest) in [
                (self.netns(n), format!("p{peer}"), self.ip(peer)),
                (self.netns(peer), format!("p{n}"), self.ip(n)),
            ] {
                ip_ok(&[
                    "-n",
                    &ns,
                    "route",
                    "replace",
                    &format!("{dest}/32"),
                    "dev",
                    &dev,
                ]);
            }
        }
    }

    fn links(&self, n: u64, state: &str) {
        for peer in (1..=self.nodes).filter(|p| *p != n) {
            ip_ok(&[
                "-n",
                &self.netns(n),
                "link",
                "set",
                &format!("p{peer}"),
                state,
            ]);
        }
    }

    fn teardown(&self) {
        for n in 1..=self.nodes.max(5) {
            let _ = ip_cmd(&["netns", "del", &self.netns(n)]);
            let _ = ip_cmd(&["link", "del", &format!("ykt-v{n}")]);
        }
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Calls `path` with one empty message (valid for every proto3 request type) as a stream, so
/// unary and streaming RPCs alike can be called. Returns the call's final status code (`Ok`
/// when a reply message or clean end arrived) and message: for checking the access table
/// against a running server.
pub async fn raw_call(channel: tonic::transport::Channel, path: &str) -> (tonic::Code, String) {
    let mut grpc = tonic::client::Grpc::new(channel);
    if let Err(e) = grpc.ready().await {
        return (tonic::Code::Unavailable, e.to_string());
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let request = tonic::Request::new(tokio_stream::iter(vec![()]));
    let path = tonic::codegen::http::uri::PathAndQuery::try_from(path).unwrap();
    match grpc.streaming(request, path, codec).await {
        Err(status) => (status.code(), status.message().to_owned()),
        Ok(response) => match response.into_inner().message().await {
            Ok(_) => (tonic::Code::Ok, String::new()),
            Err(status) => (status.code(), status.message().to_owned()),
        },
    }
}

/// Two chips and three coordinators (node 1 initializes, 2 and 3 are added through it).
pub async fn start_three(
    cluster: &mut Cluster,
) -> (Vec<Proc>, std::collections::BTreeMap<u64, Proc>) {
    let chips = vec![
        cluster.start_chip("chip-1", "zone-1"),
        cluster.start_chip("chip-2", "zone-2"),
    ];
    let chip_urls: Vec<String> = chips.iter().map(|c| c.endpoint.clone()).collect();
    let mut nodes = std::collections::BTreeMap::new();
    let mut n1 = cluster.start_node(1, true, &chip_urls);
    n1.wait_line("ready", READY);
    nodes.insert(1, n1);
    for id in [2, 3] {
        let p = cluster.start_node(id, false, &[]);
        nodes.insert(id, p);
    }
    let admin = cluster.operator(&[&nodes[&1].endpoint]);
    for id in [2, 3] {
        add_node(&admin, id, &nodes[&id].endpoint).await;
    }
    for id in [2, 3] {
        nodes.get_mut(&id).unwrap().wait_line("ready", READY);
    }
    (chips, nodes)
}

/// Runs `openssl ARGS` in `dir`; whether it succeeded, and its stdout and stderr.
pub fn openssl(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (apt-get install -y openssl; .ci/run does this)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
