//! Command-line arguments: the commands and their own flags. Which flags every command takes,
//! and the client commands' flags, are in [`client`].

mod client;

pub use client::{ClientArgs, ClientCommand, Global, GlobalArgs, Inherited, LogFormat, OutputArgs};

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use yunkey_coordinator::service::source_limit::SourceRate;
use yunkey_crypto::cipher::Cipher;

/// yunkey: a cloud key service. Users' keys live in a cluster of crypto chips; a user's own
/// device approves each exact transaction before a chip signs it.
#[derive(Debug, Parser)]
#[command(name = "yunkey", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The client commands' flags given before the subcommand (`yunkey --endpoint URL ctl
    /// status`); the same flags after it land in the subcommand's own [`ClientArgs`].
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a whole cluster in one process: one coordinator and three soft chips.
    Dev(DevArgs),
    /// Manage users (business backend).
    User(ClientCommand<UserCommand>),
    /// Play the user's phone: register a device, approve payments.
    Terminal(ClientCommand<TerminalCommand>),
    /// Check a signature against a user's certificate.
    Verify(VerifyArgs),
    /// Show the cluster's status, as the node asked sees it, and its user CA certificate.
    Status(StatusArgs),
    /// Benchmark authorized signatures against a running cluster.
    Bench(BenchArgs),
    /// Run one chip as its own process (soft, or in front of a PKCS#11 token).
    Chip(ChipArgs),
    /// Run one coordinator of a multi-node cluster.
    Coordinator(CoordinatorArgs),
    /// Operate a coordinator cluster: membership, status and chips.
    Ctl(ClientCommand<CtlCommand>),
    /// Signed releases of the terminal software: sign, revoke, the release policy (operator).
    Release(ClientCommand<ReleaseCommand>),
    /// The cluster's TLS certificates: a CA, and one identity per node, business backend and
    /// operator; the domain operator key and chip admissions.
    Pki(PkiArgs),
    /// The reference risk service (the business transaction module): serve it, check a rules
    /// file, create a face-template key.
    Risk(crate::risk::RiskArgs),
    /// A coordinator's audit log (`audit/` in its data directory): check its hash chain.
    AuditLog(AuditLogArgs),
}

/// `yunkey audit-log`.
#[derive(Debug, Args)]
pub struct AuditLogArgs {
    #[command(flatten)]
    pub output: Inherited<OutputArgs>,
    #[command(subcommand)]
    pub command: AuditLogCommand,
}

#[derive(Debug, Subcommand)]
pub enum AuditLogCommand {
    /// Check every file of an audit log directory (for example `yunkey-data/coordinator/audit`):
    /// each line's hash, each line chained to the one before from the oldest file kept, seqs
    /// rising. Prints the lines, the seqs and any gaps (lines this node does not hold because
    /// it installed a snapshot); fails naming the first broken line.
    Verify {
        /// The audit log directory.
        dir: PathBuf,
    },
}

impl Command {
    /// The client flags given after this command's name, if it is a client command.
    pub fn client(&self) -> Option<&ClientArgs> {
        match self {
            Command::User(c) => Some(&c.client.0),
            Command::Terminal(c) => Some(&c.client.0),
            Command::Ctl(c) => Some(&c.client.0),
            Command::Release(c) => Some(&c.client.0),
            Command::Verify(a) => Some(&a.client.0),
            Command::Status(a) => Some(&a.client.0),
            Command::Bench(a) => Some(&a.client.0),
            Command::Dev(_)
            | Command::Chip(_)
            | Command::Coordinator(_)
            | Command::Pki(_)
            | Command::Risk(_)
            | Command::AuditLog(_) => None,
        }
    }

    /// The command's name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Dev(_) => "dev",
            Command::User(_) => "user",
            Command::Terminal(_) => "terminal",
            Command::Verify(_) => "verify",
            Command::Status(_) => "status",
            Command::Bench(_) => "bench",
            Command::Chip(_) => "chip",
            Command::Coordinator(_) => "coordinator",
            Command::Ctl(_) => "ctl",
            Command::Release(_) => "release",
            Command::Pki(_) => "pki",
            Command::Risk(_) => "risk",
            Command::AuditLog(_) => "audit-log",
        }
    }
}

/// `yunkey status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: Inherited<ClientArgs>,
    /// Also write the user CA certificate (PEM) to FILE: the trust anchor businesses pin to
    /// check user certificates. Refused while the cluster has none yet.
    #[arg(long, value_name = "FILE")]
    pub user_ca_out: Option<PathBuf>,
    /// Also write the SM2 user CA certificate (PEM) to FILE: the trust anchor of SM2 users'
    /// certificates. Refused while the cluster has none yet (it is made at the first SM2
    /// enrolment).
    #[arg(long, value_name = "FILE")]
    pub sm2_user_ca_out: Option<PathBuf>,
}

/// `yunkey pki`.
#[derive(Debug, Args)]
pub struct PkiArgs {
    #[command(flatten)]
    pub output: Inherited<OutputArgs>,
    #[command(subcommand)]
    pub command: PkiCommand,
}

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create the cluster's TLS CA (`ca.pem`, `ca-key.pem`) in a new directory.
    Init {
        /// Directory for the CA; keep it offline, only `ca.pem` goes to the nodes.
        #[arg(long)]
        ca_dir: PathBuf,
    },
    /// Issue a certificate into a directory laid out for `--tls-dir`.
    Issue {
        /// The CA directory made by `yunkey pki init`.
        #[arg(long)]
        ca_dir: PathBuf,
        /// `node` for coordinators and chips, `client` for business backends, `operator` for
        /// the people and tools that change membership and admit chips (`yunkey ctl`), `risk`
        /// for the business transaction module (`yunkey risk`, `yunkey-face`).
        #[arg(long, value_parser = ["node", "client", "operator", "risk"])]
        role: String,
        /// The holder's name (certificate common name, shown in audit records).
        #[arg(long)]
        name: String,
        /// A DNS name or IP address the holder is dialed at (repeatable; nodes need one).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Output directory: gets `ca.pem` and `node.pem`/`node-key.pem`,
        /// `client.pem`/`client-key.pem`, `operator.pem`/`operator-key.pem` or
        /// `risk.pem`/`risk-key.pem`.
        #[arg(long)]
        out: PathBuf,
    },
    /// Create the security domain's operator key (PKCS#8 PEM, mode 0600). It admits chips to
    /// the domain and is fixed when the first chip creates the domain: keep it offline. (It is
    /// not the TLS identity of `--role operator`.)
    DomainOperatorKey {
        /// Where to write it; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Make a whole test cluster's TLS material in one step, keeping whatever already exists:
    /// the CA in `--ca-dir` if missing, one directory `OUT/NAME` per identity, and the domain
    /// operator key. For Compose and test clusters; in production keep the CA offline and use
    /// `init` and `issue`.
    Cluster {
        /// Directory of the CA (created with a new CA unless it holds one).
        #[arg(long)]
        ca_dir: PathBuf,
        /// Parent directory: each identity goes into `OUT/NAME`, laid out for `--tls-dir`.
        #[arg(long)]
        out: PathBuf,
        /// A node identity (coordinator or chip), `NAME=HOST[,HOST...]` (repeatable).
        #[arg(long = "node", value_name = "NAME=HOSTS")]
        nodes: Vec<String>,
        /// A business-backend identity `NAME` (repeatable).
        #[arg(long = "client", value_name = "NAME")]
        clients: Vec<String>,
        /// An operator identity `NAME` (repeatable).
        #[arg(long = "operator", value_name = "NAME")]
        operators: Vec<String>,
        /// Also create the domain operator key at this path, unless it exists.
        #[arg(long)]
        domain_operator_key: Option<PathBuf>,
    },
    /// Admit a chip: sign its `identity.json` with the operator key. Put the result into the
    /// chip's data directory as `admission.json`; coordinators can then admit the chip.
    AdmitChip {
        /// The domain operator key made by `yunkey pki domain-operator-key`.
        #[arg(long)]
        domain_operator_key: PathBuf,
        /// The chip's `identity.json` (from its data directory). Compare its
        /// `transport_key_sha256` with the fingerprint the chip logged at start-up.
        #[arg(long)]
        identity: PathBuf,
        /// Where to write the admission [default: `admission.json` beside the identity].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct ChipArgs {
    /// The chip's data directory: `store/` (its sealed database), `master.key` (soft
    /// backend), `identity.json` (written at each start) and `admission.json` (put there by
    /// the operator). One chip id per directory, for life.
    #[arg(long, env = "YUNKEY_DATA", default_value = "yunkey-data")]
    pub data: PathBuf,
    /// The chip's id; stored in its data directory on first start and checked later.
    #[arg(long)]
    pub id: String,
    /// Address the chip listens on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Keys the chip can hold.
    #[arg(long, default_value_t = 1_000_000)]
    pub capacity: u64,
    /// Failure zone, used by placement.
    #[arg(long, default_value = "zone-1")]
    pub zone: String,
    /// Directory with `ca.pem`, `node.pem` and `node-key.pem` (the node TLS identity).
    #[arg(long)]
    pub tls_dir: PathBuf,
    /// Where the chip keeps its keys: `soft` (a master key file in `--data`) or `pkcs11` (a
    /// PKCS#11 token: needs --module, --slot or --token-label, and --pin-file).
    #[arg(long, value_parser = ["soft", "pkcs11"], default_value = "soft")]
    pub backend: String,
    /// The PKCS#11 module (shared library), e.g. /usr/lib/softhsm/libsofthsm2.so.
    #[arg(long, required_if_eq("backend", "pkcs11"))]
    pub module: Option<PathBuf>,
    /// The token's PKCS#11 slot id, as `softhsm2-util --show-slots` or `pkcs11-tool -L` print it.
    #[arg(long, conflicts_with = "token_label")]
    pub slot: Option<u64>,
    /// The token's label, instead of --slot.
    #[arg(long)]
    pub token_label: Option<String>,
    /// A file holding the token's user PIN on its first line (keep it mode 0600).
    #[arg(long, required_if_eq("backend", "pkcs11"))]
    pub pin_file: Option<PathBuf>,
    /// Address of the Prometheus metrics endpoint (`/metrics`); `off` disables it.
    #[arg(long, env = "YUNKEY_METRICS", default_value = "off")]
    pub metrics: String,
    /// Address of a plaintext `grpc.health.v1` endpoint (for the kubelet's gRPC probes);
    /// `off` disables it. It reports `yunkey.v1.ChipService` SERVING while the chip serves.
    #[arg(long, default_value = "off")]
    pub health: String,
    /// The operator's admission of this chip, read on every `GetInfo` (so it can arrive
    /// later, for example from a mounted Secret) [default: DATA/admission.json].
    #[arg(long, value_name = "FILE")]
    pub admission: Option<PathBuf>,
    /// Soft backend: the cipher that seals the chip's records under `master.key`, `aes256`
    /// (AES-256-GCM) or `sm4` (SM4-GCM). Chosen when the chip's data directory is created and
    /// fixed for its life: a later start with the other value is refused [default: what the
    /// chip was created with; aes256 for a new chip].
    #[arg(long, value_name = "aes256|sm4")]
    pub seal_cipher: Option<Cipher>,
}

#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    /// The coordinator's data directory: `node-id`, `raft/` (its sled database: Raft log,
    /// vote, state machine) and `snapshots/`. One node id per directory, for life.
    #[arg(long, env = "YUNKEY_DATA", default_value = "yunkey-data")]
    pub data: PathBuf,
    /// Raft node id, or `auto`. Never reuse an id, not even for a node rebuilt on a wiped
    /// disk. `auto` takes the id recorded in `DATA/node-id`, or, on an empty data dir, a new
    /// random one (recorded there): a pod that comes back on a new volume gets a new id.
    #[arg(long, value_parser = parse_node_id)]
    pub node_id: NodeId,
    /// Address the coordinator listens on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// `https://host:port` that other nodes and clients reach this node at
    /// [default: from --listen].
    #[arg(long)]
    pub advertise: Option<String>,
    /// Directory with `ca.pem`, `node.pem` and `node-key.pem` (the node TLS identity).
    #[arg(long)]
    pub tls_dir: PathBuf,
    /// Initialize a new one-node cluster (only on an empty data directory).
    #[arg(long, conflicts_with = "bootstrap_file")]
    pub init: bool,
    /// Initialize a new one-node cluster if the data directory is empty and FILE exists and
    /// holds this node's advertised URL; otherwise start as usual (so the same command serves
    /// every restart). Remove FILE once the cluster has formed, so that a node that comes back
    /// on an empty volume waits to be added instead of starting a second cluster.
    #[arg(long, value_name = "FILE")]
    pub bootstrap_file: Option<PathBuf>,
    /// A chip's `https://host:port`, admitted by the leader once it is up (repeatable).
    #[arg(long = "chip")]
    pub chips: Vec<String>,
    /// Address of the Prometheus metrics endpoint (`/metrics`); `off` disables it.
    #[arg(long, env = "YUNKEY_METRICS", default_value = "off")]
    pub metrics: String,
    /// Address of a plaintext `grpc.health.v1` endpoint (for the kubelet's gRPC probes);
    /// `off` disables it. Same statuses as on the TLS port: `yunkey.v1.KeyService` turns
    /// SERVING once the node is ready.
    #[arg(long, default_value = "off")]
    pub health: String,
    /// Chips holding each user key.
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
    /// Raft election timeout range in milliseconds, `MIN-MAX` [default: 300-500]. openraft
    /// also has followers refuse votes for MAX ms after the last heartbeat (its leader lease),
    /// so a dead leader is replaced about MAX + [MIN, MAX) ms after it stopped. Keep MIN well
    /// above the 100 ms heartbeat and the disk's flush latency; use the same on every node.
    #[arg(long, value_name = "MIN-MAX")]
    pub election_timeout: Option<String>,
    /// Seconds without a heartbeat after which a chip is down: its keys are then copied to
    /// other chips from the wrapped copies (repair), and its holders dropped.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub chip_down_after: u64,
    /// Most users the reconciler moves per second (repair, restore and drain), so that
    /// moving keys never starves signing.
    #[arg(long, default_value_t = 200, value_name = "USERS_PER_SECOND")]
    pub repair_rate: u32,
    /// Seconds between sweeps of key copies that no placement lists any more (a chip that came
    /// back after it was replaced); a copy is deleted when two sweeps in a row find it unlisted.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub sweep_every: u64,
    /// How far (in % of the fleet mean) a chip's utilization may stray before the reconciler
    /// moves keys to even the fleet out (when a chip joins or a capacity changes); `off`
    /// turns rebalancing off. Moves share the --repair-rate budget, repair first.
    #[arg(long, default_value = "10", value_name = "PERCENT|off", value_parser = parse_tolerance)]
    pub rebalance_tolerance: RebalanceTolerance,
    /// Rate limit on the calls anyone may make without a certificate (RegisterDevice,
    /// GetTime), per source address (an IPv6 address by its /64): a token bucket refilling at
    /// RATE requests per second and holding BURST; past it, RESOURCE_EXHAUSTED with the wait.
    /// `off` removes the limit (for example behind a proxy that hides the callers' addresses
    /// and limits them itself).
    #[arg(long, default_value_t = UnauthenticatedRate::default(), value_name = "RATE/BURST|off", value_parser = parse_unauthenticated_rate)]
    pub unauthenticated_rate: UnauthenticatedRate,
    #[command(flatten)]
    pub devices: DevicePolicyArgs,
    #[command(flatten)]
    pub risk: RiskCheckArgs,
    #[command(flatten)]
    pub domain: DomainCipherArgs,
    #[command(flatten)]
    pub prune: PruneArgs,
    #[command(flatten)]
    pub chip_calls: ChipCallArgs,
}

/// How a coordinator calls its chips on the sign path (`yunkey coordinator` and `yunkey dev`).
#[derive(Debug, Clone, Args)]
pub struct ChipCallArgs {
    /// Most signatures sent to one chip in one `SignAuthorizedBatch`, gathered while that
    /// chip's earlier calls are out; 1 sends each signature on its own (`SignAuthorized`).
    #[arg(long, default_value_t = yunkey_coordinator::chip_batch::MAX_SIGN_BATCH as u16, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub chip_batch: u16,
}

impl ChipCallArgs {
    /// Sets these in a coordinator's chip configuration.
    pub fn apply(&self, chips: &mut yunkey_coordinator::chips::ChipsConfig) {
        chips.sign_batching.max_batch = usize::from(self.chip_batch);
    }
}

/// When the leader prunes the ledger of consumed authorizations (`yunkey coordinator` and
/// `yunkey dev`).
#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    /// Seconds after an authorization's expiry (by the leader's clock) that its ledger entry
    /// and its request's stored result are kept; from then on the cluster refuses it as
    /// expired even on a coordinator whose clock lags. Set it above the clock skew between
    /// coordinators.
    #[arg(long, default_value_t = yunkey_coordinator::prune::GRACE_SECS, value_name = "SECONDS", value_parser = clap::value_parser!(i64).range(0..=30 * 86_400))]
    pub prune_grace: i64,
    /// Seconds between the leader's prunes.
    #[arg(long, default_value_t = yunkey_coordinator::prune::PRUNE_EVERY.as_secs(), value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub prune_every: u64,
    /// Seconds the audit trail's lines stay in the coordinators' memory, where GetUserAudit
    /// reads them; then they move to every coordinator's audit log (`audit/` in its data
    /// directory: hash-chained, rotated files; `yunkey audit-log verify DIR` checks them).
    #[arg(long, default_value_t = yunkey_coordinator::prune::AUDIT_KEEP_SECS, value_name = "SECONDS", value_parser = clap::value_parser!(i64).range(0..=366 * 86_400))]
    pub audit_keep: i64,
}

impl PruneArgs {
    /// Sets these in a coordinator's configuration.
    pub fn apply(&self, config: &mut yunkey_coordinator::core::CoordinatorConfig) {
        config.prune.grace_secs = self.prune_grace;
        config.prune.every = std::time::Duration::from_secs(self.prune_every);
        config.prune.audit_keep_secs = self.audit_keep;
    }
}

/// The security domain's cipher (`yunkey coordinator` and `yunkey dev`).
#[derive(Debug, Clone, Args)]
pub struct DomainCipherArgs {
    /// Cipher of the security domain, `aes256` or `sm4` (keys wrapped with SM4-KWP and tagged
    /// with HMAC-SM3; soft chips only, PKCS#11 chips refuse it), used when the first chip
    /// admitted creates the domain and fixed for the domain's life. If the domain exists with
    /// the other cipher, chip admissions are refused. `yunkey dev` also seals its soft chips'
    /// records with it [default: aes256 for a new domain; an existing one keeps its own].
    #[arg(long, value_name = "aes256|sm4")]
    pub domain_cipher: Option<Cipher>,
}

impl DomainCipherArgs {
    /// Sets the domain cipher in a coordinator's configuration.
    pub fn apply(&self, config: &mut yunkey_coordinator::core::CoordinatorConfig) {
        config.domain_cipher = self.domain_cipher;
    }
}

/// The business's risk service, asked before every signature (docs/risk.md)
/// (`yunkey coordinator` and `yunkey dev`).
#[derive(Debug, Clone, Args)]
pub struct RiskCheckArgs {
    /// `https://host:port` of the risk service (`yunkey risk serve`, or the business's own
    /// RiskService). Without it signatures are not risk-checked (a warning at start).
    #[arg(long, value_name = "URL")]
    pub risk_endpoint: Option<String>,
    /// CA certificate (PEM) the risk service's certificate must chain to [default: the
    /// cluster's TLS CA, `ca.pem` of the TLS directory].
    #[arg(long, value_name = "FILE", requires = "risk_endpoint")]
    pub risk_ca: Option<PathBuf>,
    /// Deadline of each call to the risk service, in milliseconds.
    #[arg(long, default_value_t = 2000, value_name = "MS", value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub risk_timeout_ms: u64,
    /// Sign when the risk service gives no usable answer to the assessment (unreachable,
    /// late, malformed), recording "failed open" in the audit trail. Default: refuse (fail
    /// closed). A step-up that cannot be completed is refused either way.
    #[arg(long, requires = "risk_endpoint")]
    pub risk_fail_open: bool,
}

impl RiskCheckArgs {
    /// Sets the risk service in a coordinator's configuration; `node_tls` is the node's own
    /// identity (presented to the risk service) and the cluster CA.
    pub fn apply(
        &self,
        config: &mut yunkey_coordinator::core::CoordinatorConfig,
        node_tls: &yunkey_net::tls::TlsMaterial,
    ) -> anyhow::Result<()> {
        let Some(endpoint) = &self.risk_endpoint else {
            return Ok(());
        };
        let tls = match &self.risk_ca {
            None => node_tls.clone(),
            Some(path) => {
                let ca = std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("--risk-ca {}: {e}", path.display()))?;
                let (cert, key) = node_tls
                    .identity_pem()
                    .ok_or_else(|| anyhow::anyhow!("the node has no TLS identity"))?;
                yunkey_net::tls::TlsMaterial::from_pem(ca, Some((cert.to_vec(), key.to_vec())))
            }
        };
        config.risk = Some(yunkey_coordinator::risk::RiskConfig {
            endpoint: endpoint.clone(),
            tls,
            timeout: std::time::Duration::from_millis(self.risk_timeout_ms),
            fail_open: self.risk_fail_open,
        });
        Ok(())
    }
}

/// How the cluster treats devices: activation attempts, how many devices, certificate
/// validity (`yunkey coordinator` and `yunkey dev`).
#[derive(Debug, Clone, Args)]
pub struct DevicePolicyArgs {
    /// Wrong activation codes for one user after which the pending code is burnt (counted in
    /// Raft, so across coordinators and leader changes); `yunkey user reactivate` issues a
    /// new one.
    #[arg(long, default_value_t = yunkey_coordinator::core::DEFAULT_ACTIVATION_ATTEMPTS, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub activation_attempts: u32,
    /// Active devices one user may have (at most 16: a key's binding lists at most 16
    /// devices, revoked and removed ones included).
    #[arg(long, default_value_t = yunkey_coordinator::core::DEFAULT_MAX_DEVICES, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=16))]
    pub max_devices: usize,
    /// Validity of device certificates, in seconds (at least 10; at most 730 days). Devices
    /// renew before expiry with `yunkey terminal renew`.
    #[arg(long, default_value_t = yunkey_coordinator::core::DEFAULT_DEVICE_CERT_VALIDITY_SECS, value_name = "SECONDS", value_parser = clap::value_parser!(i64).range(10..=730 * 86_400))]
    pub device_cert_validity: i64,
}

impl DevicePolicyArgs {
    /// Sets these in a coordinator's configuration.
    pub fn apply(&self, config: &mut yunkey_coordinator::core::CoordinatorConfig) {
        config.activation_attempts = self.activation_attempts;
        config.max_devices = self.max_devices;
        config.device_cert_validity_secs = self.device_cert_validity;
    }
}

/// `--paced-at`: a fraction of the peak rate, above 0 and at most 1.
fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!(
            "{text:?} is not a fraction of the peak: give a number above 0 and at most 1, such as 0.5"
        )),
    }
}

/// `--unauthenticated-rate`: requests per second and burst per source address, or `None` for
/// off.
#[derive(Debug, Clone, Copy)]
pub struct UnauthenticatedRate(pub Option<SourceRate>);

impl Default for UnauthenticatedRate {
    fn default() -> Self {
        Self(Some(SourceRate::default()))
    }
}

impl std::fmt::Display for UnauthenticatedRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(r) => write!(f, "{}/{}", r.per_second, r.burst),
            None => f.write_str("off"),
        }
    }
}

fn parse_location(text: &str) -> Result<yunkey_proto::v1::Geolocation, String> {
    let bad = || format!("{text:?}: expected LATITUDE,LONGITUDE in degrees, e.g. 48.8566,2.3522");
    let (lat, lon) = text.split_once(',').ok_or_else(bad)?;
    let latitude: f64 = lat.trim().parse().map_err(|_| bad())?;
    let longitude: f64 = lon.trim().parse().map_err(|_| bad())?;
    if !(-90.0..=90.0).contains(&latitude) || !(-180.0..=180.0).contains(&longitude) {
        return Err(format!(
            "{text:?}: latitude must be -90..=90 and longitude -180..=180"
        ));
    }
    Ok(yunkey_proto::v1::Geolocation {
        latitude,
        longitude,
    })
}

fn parse_unauthenticated_rate(text: &str) -> Result<UnauthenticatedRate, String> {
    if text == "off" {
        return Ok(UnauthenticatedRate(None));
    }
    let bad = || {
        format!("{text:?}: expected RATE/BURST (requests per second and burst per address, both at least 1, e.g. 20/40), or off")
    };
    let (rate, burst) = text.split_once('/').ok_or_else(bad)?;
    let per_second = rate.parse().map_err(|_| bad())?;
    let burst = burst.parse().map_err(|_| bad())?;
    Ok(UnauthenticatedRate(Some(SourceRate { per_second, burst })))
}

/// `--node-id`: a number, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeId {
    /// This id.
    Fixed(u64),
    /// The id recorded in the data directory, or a new random one.
    Auto,
}

fn parse_node_id(text: &str) -> Result<NodeId, String> {
    if text == "auto" {
        return Ok(NodeId::Auto);
    }
    match text.parse::<u64>() {
        Ok(0) | Err(_) => Err(format!(
            "{text:?}: expected a node id of at least 1, or auto"
        )),
        Ok(id) => Ok(NodeId::Fixed(id)),
    }
}

/// `--rebalance-tolerance`: a percentage, or `None` for off.
#[derive(Debug, Clone, Copy)]
pub struct RebalanceTolerance(pub Option<u32>);

fn parse_tolerance(text: &str) -> Result<RebalanceTolerance, String> {
    if text == "off" {
        return Ok(RebalanceTolerance(None));
    }
    match text.parse::<u32>() {
        Ok(p) if (1..=100).contains(&p) => Ok(RebalanceTolerance(Some(p))),
        _ => Err(format!(
            "{text:?}: expected a percentage from 1 to 100, or off"
        )),
    }
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Add a coordinator: as a learner until it has caught up, then as a voter.
    AddNode {
        /// A node id never used before in this cluster [default: the id the node at
        /// `--address` reports].
        #[arg(long)]
        node_id: Option<u64>,
        /// Its `https://host:port`.
        #[arg(long)]
        address: String,
    },
    /// Remove a coordinator from the cluster (its id can never be used again).
    RemoveNode {
        #[arg(long)]
        node_id: u64,
    },
    /// Every coordinator's role, term, log, applied index and replication lag.
    Status,
    /// Commit one no-op write through Raft (a write-health probe) and show how long it took.
    Probe,
    /// The chips: add one, list them, drain one, remove a drained one.
    #[command(subcommand)]
    Chip(ChipCommand),
    /// Where a user's key lives and why: each holder's chip, zone and health, and what the
    /// reconciler will do about them.
    Placement {
        /// The user id.
        user_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ChipCommand {
    /// Register a chip with the cluster (AdmitChip): the leader checks the chip's operator
    /// admission, hands it the security domain and adds it to the chip registry. Needed for
    /// chips that no coordinator names with `--chip`; admitting a registered chip again
    /// refreshes its endpoint.
    Add {
        /// The chip's `https://host:port`.
        #[arg(long)]
        address: String,
    },
    /// Every registered chip: state (as the serving node sees it), zone, keys placed, capacity.
    List,
    /// Move every key off a chip (add before remove, at the repair rate); new keys avoid it.
    Drain {
        chip_id: String,
        /// Stop draining instead.
        #[arg(long)]
        cancel: bool,
    },
    /// Take a chip out of the registry; refused while any key still lists it.
    Remove { chip_id: String },
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// The dev cluster's data directory: its TLS files, `coordinator/`, `chips/`,
    /// `user-ca.pem`, and `endpoint` while it runs (the client commands find it there).
    #[arg(long, env = "YUNKEY_DATA", default_value = "yunkey-data")]
    pub data: PathBuf,
    /// Address the coordinator listens on.
    #[arg(long, env = "YUNKEY_LISTEN", default_value = "127.0.0.1:7443")]
    pub listen: SocketAddr,
    /// Address of the Prometheus metrics endpoint (`/metrics`); `off` disables it.
    #[arg(long, env = "YUNKEY_METRICS", default_value = "127.0.0.1:9464")]
    pub metrics: String,
    /// Number of soft chips.
    #[arg(long, default_value_t = 3)]
    pub chips: usize,
    /// Keys each soft chip can hold.
    #[arg(long, default_value_t = 1_000_000)]
    pub chip_capacity: u64,
    /// Chips holding each user key.
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
    #[command(flatten)]
    pub devices: DevicePolicyArgs,
    #[command(flatten)]
    pub risk: RiskCheckArgs,
    #[command(flatten)]
    pub domain: DomainCipherArgs,
    #[command(flatten)]
    pub prune: PruneArgs,
    #[command(flatten)]
    pub chip_calls: ChipCallArgs,
}

/// A signature algorithm as the CLI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyAlgorithm {
    /// ECDSA over NIST P-256 with SHA-256.
    P256,
    /// SM2 with SM3 (GB/T 32918).
    Sm2,
}

impl From<KeyAlgorithm> for yunkey_crypto::sig::Algorithm {
    fn from(a: KeyAlgorithm) -> Self {
        match a {
            KeyAlgorithm::P256 => yunkey_crypto::sig::Algorithm::EcdsaP256,
            KeyAlgorithm::Sm2 => yunkey_crypto::sig::Algorithm::Sm2,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Enrol a user: a key in a chip, a certificate, and an activation code for their phone.
    Enroll {
        user_id: String,
        /// The user's key: ECDSA P-256, or SM2 with SM3 (certified by the SM2 user CA).
        #[arg(long, value_enum, default_value_t = KeyAlgorithm::P256)]
        algorithm: KeyAlgorithm,
        /// SM2 only: the distinguishing ID the key signs under (default 1234567812345678).
        #[arg(long, value_name = "ID")]
        distinguishing_id: Option<String>,
        /// Name for the certificate's subject.
        #[arg(long, default_value = "")]
        display_name: String,
        /// Idempotency key; retrying with the same id returns the first result.
        #[arg(long, default_value = "")]
        request_id: String,
        /// Print only the activation code (for scripts).
        #[arg(long, short)]
        quiet: bool,
    },
    /// Show a user.
    Show {
        user_id: String,
        /// Accept this node's possibly slightly stale state.
        #[arg(long)]
        stale: bool,
    },
    /// Revoke a user: nothing is signed with their key any more.
    Revoke {
        user_id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Revoke one of a user's devices (compromised): its approvals are refused from now on,
    /// by the coordinators and by every chip holding the key.
    RevokeDevice {
        user_id: String,
        /// The device id (`dev-...`, as `user device list` lists it).
        #[arg(long)]
        device: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Issue a new one-time activation code: for one more device (up to the cluster's
    /// --max-devices), or to replace a lost or locked one. The previous code is void.
    Reactivate {
        user_id: String,
        /// Print only the activation code (for scripts).
        #[arg(long, short)]
        quiet: bool,
    },
    /// A user's devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// A user's audit trail, oldest first: enrolment, devices, every signature and every
    /// refusal by the risk checks, with the risk decision ids.
    Audit {
        user_id: String,
        /// The newest N lines (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Store a user's face template at the risk service, made from a photo with exactly one
    /// face (JPEG or PNG, at most 4 MiB); the photo itself is not kept. Replaces an earlier
    /// template.
    FaceEnroll { user_id: String, photo: PathBuf },
    /// Delete a user's face template at the risk service.
    FaceDelete { user_id: String },
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// List a user's devices: active, removed and revoked, with their certificates' expiry.
    List { user_id: String },
    /// Remove a device the user no longer uses (replaced or lost): ended like a revocation,
    /// recorded as removed.
    Remove {
        user_id: String,
        /// The device id (`dev-...`).
        device_id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Args)]
pub struct TerminalOpts {
    /// Directory of the device keystore [default: ~/.yunkey/keystore].
    #[arg(long, env = "YUNKEY_KEYSTORE")]
    pub keystore: Option<PathBuf>,
    /// File holding the PIN (else YUNKEY_PIN, else a prompt when on a terminal). A new
    /// device key needs a PIN of at least 8 characters.
    #[arg(long)]
    pub pin_file: Option<PathBuf>,
    /// Wrong PINs in a row after which the keystore destroys the device key; the device must
    /// then be re-activated and registered again.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_pin_failures: u32,
    /// The release manifest this executable is checked against before it runs
    /// [default: `<executable>.release.json`, if it exists].
    #[arg(long, env = "YUNKEY_RELEASE_MANIFEST", value_name = "FILE")]
    pub release_manifest: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Sign a release of the terminal software: the cluster's code-signing key (in chips)
    /// signs the version and the file's SHA-256 (the file itself is not sent), and the
    /// manifest is written beside the file.
    Sign {
        /// MAJOR.MINOR.PATCH.
        #[arg(long)]
        version: String,
        /// Where to write the manifest [default: FILE.release.json].
        #[arg(long, value_name = "MANIFEST")]
        out: Option<PathBuf>,
        /// The released executable.
        file: PathBuf,
    },
    /// Revoke a release: devices presenting its id are refused from now on.
    Revoke {
        /// The release id (`rel-...`, as `release list` shows it).
        release_id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Show or change the release policy: a minimum version, and whether devices must
    /// present a signed release at all.
    Policy {
        /// Refuse releases below this version (`none` removes the minimum).
        #[arg(long)]
        min_version: Option<String>,
        /// Refuse device requests that present no release.
        #[arg(long, conflicts_with = "no_require")]
        require: bool,
        /// Accept device requests that present no release (the default).
        #[arg(long)]
        no_require: bool,
    },
    /// The signed releases and the policy.
    List,
}

impl TerminalCommand {
    /// The terminal options of the command.
    pub fn opts(&self) -> &TerminalOpts {
        match self {
            TerminalCommand::Register { opts, .. }
            | TerminalCommand::Pay { opts, .. }
            | TerminalCommand::Renew { opts, .. } => opts,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TerminalCommand {
    /// Register this device for a user with their activation code.
    Register {
        #[arg(long)]
        user: String,
        #[arg(long)]
        activation_code: String,
        /// The device key: ECDSA P-256, or SM2 with SM3.
        #[arg(long, value_enum, default_value_t = KeyAlgorithm::P256)]
        algorithm: KeyAlgorithm,
        /// Label for the device.
        #[arg(long, default_value = "cli")]
        name: String,
        #[command(flatten)]
        opts: TerminalOpts,
    },
    /// Approve a payment on this device and get it signed by the user's key.
    Pay {
        #[arg(long)]
        user: String,
        /// Defaults to the user id.
        #[arg(long)]
        payer: Option<String>,
        #[arg(long)]
        payee: String,
        /// Decimal amount, for example 12.50.
        #[arg(long)]
        amount: String,
        /// Currency code, for example EUR.
        #[arg(long)]
        currency: String,
        /// Seconds the approval stays valid (at most 600).
        #[arg(long, default_value_t = 120)]
        ttl: i64,
        /// Also write the receipt into this directory: transaction.txt (the canonical bytes
        /// that were signed), signature.der, user.pem, user-pub.pem, ca.pem, chain.pem, and
        /// verify.sh with the OpenSSL commands that check them (for SM2, with the user's
        /// distinguishing ID).
        #[arg(long)]
        save: Option<PathBuf>,
        /// Sign without asking for confirmation at a terminal (the transaction is still shown
        /// on standard error). Without a terminal on standard input it never asks.
        #[arg(long)]
        yes: bool,
        /// A photo of the user's face (JPEG or PNG), sent only if the risk service asks for a
        /// step-up. Without it a step-up ends the payment with a message that asks for it.
        #[arg(long, value_name = "PHOTO")]
        face: Option<PathBuf>,
        /// Where the device is, `LATITUDE,LONGITUDE` in degrees (for the risk service).
        #[arg(long, value_name = "LAT,LON", value_parser = parse_location, allow_hyphen_values = true)]
        location: Option<yunkey_proto::v1::Geolocation>,
        #[command(flatten)]
        opts: TerminalOpts,
    },
    /// Renew this device's certificate before it expires (over the device channel, with the
    /// current certificate); the old one is refused from then on.
    Renew {
        #[arg(long)]
        user: String,
        #[command(flatten)]
        opts: TerminalOpts,
    },
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub client: Inherited<ClientArgs>,
    /// The user whose key signed (the cluster checks against its certificate).
    #[arg(long)]
    pub user: Option<String>,
    /// Check locally against this certificate (PEM or DER) instead of asking the cluster.
    #[arg(long)]
    pub certificate: Option<PathBuf>,
    /// SHA-256 of the canonical transaction, hex (enough for an ECDSA P-256 signature).
    #[arg(
        long,
        required_unless_present = "transaction",
        conflicts_with = "transaction"
    )]
    pub tx_hash: Option<String>,
    /// The canonical transaction bytes (for example a receipt's transaction.txt): what an
    /// SM2 signature needs, and fine for P-256 too.
    #[arg(long, value_name = "FILE")]
    pub transaction: Option<PathBuf>,
    /// With --certificate of an SM2 key: the user's distinguishing ID (default
    /// 1234567812345678).
    #[arg(long, value_name = "ID")]
    pub distinguishing_id: Option<String>,
    /// DER signature, hex.
    #[arg(long)]
    pub signature: String,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(flatten)]
    pub client: Inherited<ClientArgs>,
    /// Another benchmark than the default (authorized signatures).
    #[command(subcommand)]
    pub mode: Option<BenchMode>,
    /// Users to enrol for the run.
    #[arg(long, default_value_t = 64)]
    pub users: usize,
    /// Concurrency levels to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    pub concurrency: Vec<usize>,
    /// Seconds per level.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Client connections the load is spread over.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// After the concurrency levels, open-loop levels at these fractions of the best rate
    /// they reached (0.5 = half the peak), --seconds each: calls leave on a fixed schedule
    /// whether or not earlier ones have returned, and each call's latency counts from the
    /// time it was due.
    #[arg(long, value_delimiter = ',', value_parser = parse_fraction)]
    pub paced_at: Vec<f64>,
    /// Signatures per call: 1 sends KeyService.Sign; more sends KeyService.SignBatch with
    /// that many items (1 to 256), as a gateway relaying many phones would. The rate counts
    /// signatures; the latencies are of the calls.
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=yunkey_coordinator::signing::MAX_BATCH_ITEMS as i64))]
    pub batch: u16,
    /// The users' and their devices' keys: ECDSA P-256 or SM2 (the crypto ceiling is
    /// measured for the same algorithm).
    #[arg(long, value_enum, default_value_t = KeyAlgorithm::P256)]
    pub algorithm: KeyAlgorithm,
    /// The cluster's replicas per key (its `--replicas`), for the enrolment crypto ceiling:
    /// one key generated, R imports, one certificate signature.
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
}

#[derive(Debug, Subcommand)]
pub enum BenchMode {
    /// A coordinator cluster: enrolments/s and committed Raft writes/s (WriteProbe) at each
    /// concurrency level, spread over every member, then leader kill -9 -> first
    /// acknowledged write.
    Cluster(ClusterBenchArgs),
    /// The chip fleet, on a cluster of real processes this command starts itself: chip
    /// SIGKILLed under a signing load -> time until each of its users signs again; repair
    /// rate (users/s) at each --repair-rates; wall time to drain a chip of --drain-keys keys.
    Fleet(FleetBenchArgs),
    /// The device channel against the business path, on a running cluster: authorized
    /// signatures each over a new mutual-TLS session (full TLS 1.3 handshake with the device
    /// certificate), over a kept device-channel connection, and through KeyService.Sign.
    DeviceChannel(DeviceChannelBenchArgs),
}

#[derive(Debug, Args)]
pub struct DeviceChannelBenchArgs {
    /// Users (each with a registered device) the signatures rotate over.
    #[arg(long, default_value_t = 20)]
    pub users: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Calls in flight per measurement (comma-separated levels).
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub concurrency: Vec<usize>,
}

#[derive(Debug, Args)]
pub struct FleetBenchArgs {
    /// Chip processes in each cluster (at least 6).
    #[arg(long, default_value_t = 6)]
    pub chips: usize,
    /// Coordinator processes in each cluster.
    #[arg(long, default_value_t = 3)]
    pub coordinators: u64,
    /// Users enrolled for the kill rounds (0 skips them).
    #[arg(long, default_value_t = 6000)]
    pub users: usize,
    /// One kill round per rate: the coordinators' --repair-rate (users/s) in that round.
    #[arg(long, value_delimiter = ',', default_value = "200,100000")]
    pub repair_rates: Vec<u32>,
    /// Users of the killed chip that get a device and sign in a loop during a round.
    #[arg(long, default_value_t = 100)]
    pub sign_users: usize,
    /// Pause between one signing user's requests (the kill sends one at once).
    #[arg(long, default_value_t = 500)]
    pub sign_interval_ms: u64,
    /// The coordinators' --chip-down-after (seconds): when repair of a killed chip starts.
    #[arg(long, default_value_t = 2)]
    pub down_after: u64,
    /// Longest wait for a repair, in seconds.
    #[arg(long, default_value_t = 1800)]
    pub repair_timeout: u64,
    /// Keys on the chip that is drained (that many users; 0 skips the drain).
    #[arg(long, default_value_t = 100_000)]
    pub drain_keys: usize,
    /// The coordinators' --repair-rate during the drain.
    #[arg(long, default_value_t = 200)]
    pub drain_repair_rate: u32,
    /// Longest wait for the drain, in seconds.
    #[arg(long, default_value_t = 7200)]
    pub drain_timeout: u64,
    /// Enrolments in flight while the users are made.
    #[arg(long, default_value_t = 64)]
    pub enroll_concurrency: usize,
    /// Work directory for the clusters' data and logs (empty or new) [default: a new one in
    /// the system's temporary directory].
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Keep the work directory (it is always kept when the run fails).
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Args)]
pub struct ClusterBenchArgs {
    /// Concurrency levels to measure (requests in flight).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub concurrency: Vec<usize>,
    /// Seconds per level and kind of operation.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// HTTP/2 connections opened to each member.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Skip the enrolment levels.
    #[arg(long)]
    pub no_enroll: bool,
    /// Leader kills to time (needs --kill-cmd and --restart-cmd; 0 skips failover).
    #[arg(long, default_value_t = 3)]
    pub failover_rounds: usize,
    /// Shell command that kill -9s coordinator `{id}` (replaced by the leader's node id) and
    /// returns once it is dead.
    #[arg(long)]
    pub kill_cmd: Option<String>,
    /// Shell command that starts coordinator `{id}` again on its data (in the background).
    #[arg(long)]
    pub restart_cmd: Option<String>,
    /// Writers looping WriteProbe during a failover round (each starts at another member).
    #[arg(long, default_value_t = 4)]
    pub failover_writers: usize,
}
