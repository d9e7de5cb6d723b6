//! The coordinator's shared core: the Raft handle, the local view of the state, the chips,
//! and the CA issuer. Operations (`enroll`, `devices`, `signing`, `admin`) are functions
//! over it; gRPC services are thin adapters over those.

use crate::ca::CertIssuer;
use crate::chips::Chips;
use crate::error::{CoordError, Result};
use crate::raft::RaftHandle;
use crate::state::{fingerprint, CaRecord, Command, CommandResult, Op, StateView};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Tunables of a coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// How many chips hold each user key (R).
    pub replicas: usize,
    /// How long an activation code stays valid, in seconds.
    pub activation_ttl_secs: i64,
    /// How long a write may wait for a leader and commit.
    pub write_timeout: Duration,
    /// How the reconciler paces repair, restore and drain.
    pub repair: crate::repair::RepairConfig,
    /// When the leader prunes expired authorizations.
    pub prune: crate::prune::PruneConfig,
    /// The rate limit per source address on unauthenticated calls (`RegisterDevice`,
    /// `GetTime`); `None`: no limit.
    pub unauthenticated_rate: Option<crate::service::source_limit::SourceRate>,
    /// Wrong activation codes for one user after which the pending code is burnt.
    pub activation_attempts: u32,
    /// Active (not revoked) devices one user may have.
    pub max_devices: usize,
    /// Validity of device certificates, in seconds.
    pub device_cert_validity_secs: i64,
    /// The business's risk service, asked before every signature (`None`: signatures are not
    /// risk-checked; the coordinator warns at start).
    pub risk: Option<crate::risk::RiskConfig>,
    /// The security domain's cipher. Used when the first chip admitted creates the domain
    /// (`None`: AES-256); once the domain exists, a `Some` that differs from the domain's
    /// cipher refuses every chip admission, since a domain's cipher never changes.
    pub domain_cipher: Option<yunkey_crypto::cipher::Cipher>,
}

/// Default of [`CoordinatorConfig::activation_attempts`].
pub const DEFAULT_ACTIVATION_ATTEMPTS: u32 = 5;
/// Default of [`CoordinatorConfig::max_devices`].
pub const DEFAULT_MAX_DEVICES: usize = 3;
/// Default of [`CoordinatorConfig::device_cert_validity_secs`]: 365 days.
pub const DEFAULT_DEVICE_CERT_VALIDITY_SECS: i64 = 365 * 86_400;

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            replicas: 2,
            activation_ttl_secs: 7 * 24 * 3600,
            write_timeout: Duration::from_secs(10),
            repair: crate::repair::RepairConfig::default(),
            prune: crate::prune::PruneConfig::default(),
            unauthenticated_rate: Some(Default::default()),
            activation_attempts: DEFAULT_ACTIVATION_ATTEMPTS,
            max_devices: DEFAULT_MAX_DEVICES,
            device_cert_validity_secs: DEFAULT_DEVICE_CERT_VALIDITY_SECS,
            risk: None,
            domain_cipher: None,
        }
    }
}

/// Everything an operation needs.
#[derive(Debug)]
pub struct Core {
    /// This node's Raft id.
    pub node_id: u64,
    /// Raft.
    pub raft: RaftHandle,
    /// Group commit of this node's proposals ([`Core::propose`]).
    pub batcher: crate::batch::Batcher,
    /// Applied state on this node.
    pub view: StateView,
    /// Chip connections and health.
    pub chips: Chips,
    /// Certificate issuance.
    pub issuer: CertIssuer,
    /// Tunables.
    pub config: CoordinatorConfig,
    /// Users the reconciler found needing a move and has not moved yet (its last pass).
    pub repair_pending: std::sync::atomic::AtomicU64,
    /// Rebalance moves planned and not yet carried out (on the leader).
    pub rebalance_pending: std::sync::atomic::AtomicU64,
    /// Serializes membership changes on this node (the leader is their one controller).
    pub membership_lock: tokio::sync::Mutex<()>,
    /// The business's risk service, if the coordinators have one.
    pub risk: Option<crate::risk::RiskGate>,
    /// Keys this node is placing and the registry does not count yet.
    pub placing: crate::placement::InFlight,
    ca_spki: OnceLock<Vec<u8>>,
    /// The user CAs' certificates (P-256, SM2), each read from the state once it exists.
    ca_certificates: [OnceLock<Arc<[u8]>>; 2],
}

impl Core {
    /// Assembles a core and starts its batching task (so it runs on a Tokio runtime). Fails
    /// only on a malformed risk service endpoint.
    pub fn new(
        node_id: u64,
        raft: RaftHandle,
        view: StateView,
        chips: Chips,
        config: CoordinatorConfig,
    ) -> Result<Self> {
        let risk = match &config.risk {
            Some(risk) => Some(
                crate::risk::RiskGate::new(risk)
                    .map_err(|e| CoordError::FailedPrecondition(format!("--risk-endpoint: {e}")))?,
            ),
            None => None,
        };
        Ok(Self {
            node_id,
            batcher: crate::batch::Batcher::start(raft.clone(), node_id),
            raft,
            view,
            issuer: CertIssuer::new(chips.clone()),
            chips,
            config,
            repair_pending: Default::default(),
            rebalance_pending: Default::default(),
            membership_lock: tokio::sync::Mutex::new(()),
            risk,
            placing: Default::default(),
            ca_spki: OnceLock::new(),
            ca_certificates: Default::default(),
        })
    }

    /// Whether new keys may go to a chip: it is up and not draining.
    pub fn placeable(&self, chip_id: &str) -> bool {
        self.chips.routable(chip_id) && matches!(self.view.draining_since(chip_id), Ok(None))
    }

    /// A chip's state as operators see it: DRAINING while an operator drains it, else its
    /// health on this node.
    pub fn chip_state(&self, chip_id: &str) -> yunkey_proto::v1::ChipState {
        match self.view.draining_since(chip_id) {
            Ok(Some(_)) => yunkey_proto::v1::ChipState::Draining,
            _ => self.chips.state(chip_id),
        }
    }

    /// Commits `op` through Raft (in one log entry with other commands proposed here at the
    /// same time: [`crate::batch`]) and returns its result; a rejection becomes an error.
    pub async fn propose(&self, request_id: &str, actor: &str, op: Op) -> Result<CommandResult> {
        let cmd = Command {
            request_id: request_id.to_owned(),
            actor: actor.to_owned(),
            now: crate::clock::now(),
            op,
        };
        match self.batcher.write(&self.raft, cmd).await? {
            CommandResult::Rejected(r) => Err(r.into()),
            other => Ok(other),
        }
    }

    /// The first result of `request_id` if it was applied, checking it was the same request
    /// (`kind` about `subject`, as [`Op::fingerprint`] defines); a different request under
    /// the same id is refused.
    pub fn prior(
        &self,
        request_id: &str,
        kind: &str,
        subject: &[&[u8]],
    ) -> Result<Option<CommandResult>> {
        match self.view.request(request_id)? {
            None => Ok(None),
            Some(prior)
                if prior.kind == kind && prior.fingerprint == fingerprint(kind, subject) =>
            {
                Ok(Some(prior.result))
            }
            Some(prior) => Err(CoordError::RequestIdReused {
                first_kind: prior.kind,
            }),
        }
    }

    /// The user CA as applied here and its public key (SPKI DER). The certificate is
    /// write-once, so its key is parsed once; the record is read each time, since its holders
    /// change with repair and drain.
    pub fn ca(&self) -> Result<(Arc<CaRecord>, Vec<u8>)> {
        let record = self.view.ca()?.ok_or_else(|| {
            CoordError::Unavailable(
                "the user CA is not initialized yet; the cluster is still starting".into(),
            )
        })?;
        let spki = match self.ca_spki.get() {
            Some(spki) => spki.clone(),
            None => {
                let spki = crate::ca::certificate_spki(&record.certificate)?;
                self.ca_spki.get_or_init(|| spki).clone()
            }
        };
        Ok((Arc::new(record), spki))
    }

    /// The user CA of `algorithm`'s users, as applied here.
    pub fn ca_of(&self, algorithm: yunkey_crypto::sig::Algorithm) -> Result<CaRecord> {
        self.view.ca_of(algorithm)?.ok_or_else(|| {
            CoordError::Unavailable(format!(
                "the {algorithm} user CA is not initialized yet; the cluster is still starting"
            ))
        })
    }

    /// The certificate of `algorithm`'s user CA, which every signature's chain ends with.
    /// Write-once like the CA's key, so it is read from the state once.
    pub fn ca_certificate(&self, algorithm: yunkey_crypto::sig::Algorithm) -> Result<Arc<[u8]>> {
        let slot = &self.ca_certificates[match algorithm {
            yunkey_crypto::sig::Algorithm::EcdsaP256 => 0,
            yunkey_crypto::sig::Algorithm::Sm2 => 1,
        }];
        if let Some(certificate) = slot.get() {
            return Ok(certificate.clone());
        }
        let certificate: Arc<[u8]> = self.ca_of(algorithm)?.certificate.into();
        Ok(slot.get_or_init(|| certificate).clone())
    }

    /// The CA that certifies `user`'s key (the one of its algorithm).
    pub fn ca_of_user(&self, user: &crate::state::UserRecord) -> Result<CaRecord> {
        self.ca_of(user_algorithm(&user.user_id, user.algorithm)?)
    }
}

/// A stored user's algorithm; an unknown number is an internal error that names the user.
pub fn user_algorithm(user_id: &str, algorithm: i32) -> Result<yunkey_crypto::sig::Algorithm> {
    yunkey_crypto::sig::Algorithm::from_proto(algorithm).ok_or_else(|| {
        CoordError::Internal(format!(
            "user {user_id} has an unknown algorithm {algorithm}"
        ))
    })
}
