//! Commands: the only way the replicated state changes. The proposing node fills in `now`
//! and everything random (keys, codes, ids) before proposing, so applying is deterministic.

use super::model::{
    CaRecord, ChipRecord, DeviceRecord, HolderRecord, KeyOwner, NodeIdRecord, Rebinding, UserRecord,
};
use super::model_release::{CodeSigningRecord, ReleasePolicy, ReleaseRecord};
use super::model_risk::{RiskCheck, UserEvent};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One state change, with the request id that makes it idempotent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Command {
    /// Idempotency key. A command whose id was already applied returns the first result
    /// and changes nothing. Empty: not deduplicated.
    pub request_id: String,
    /// Who asked, for the audit trail.
    pub actor: String,
    /// The proposer's clock, Unix seconds.
    pub now: i64,
    /// The change.
    pub op: Op,
}

/// The state changes.
#[derive(Clone, Serialize, Deserialize)]
pub enum Op {
    /// Admit a chip to the security domain (or update its endpoint).
    AdmitChip {
        /// The chip.
        chip: ChipRecord,
        /// The domain it joined; the first admission sets the cluster's domain.
        domain_id: String,
        /// The domain's operator key (SPKI DER); the first admission records it.
        #[serde(with = "serde_bytes")]
        operator_key: Vec<u8>,
    },
    /// Record the user CA (once).
    InitCa(CaRecord),
    /// Create a user.
    EnrollUser {
        /// The new user.
        user: UserRecord,
        /// Always empty: the code is never written to the log or the state, only its hash
        /// (in `user.activation`). Entries written before format 3 carried the code here;
        /// applying them drops it.
        activation_code: String,
    },
    /// Register a device of a user, consuming the pending activation code.
    RegisterDevice {
        /// The user.
        user_id: String,
        /// SHA-256 of the code the device presented.
        code_sha256: [u8; 32],
        /// The device.
        device: DeviceRecord,
        /// The key's binding with the device bound, decided by a chip.
        rebinding: Rebinding,
    },
    /// Revoke a user.
    RevokeUser {
        /// The user.
        user_id: String,
        /// Why.
        reason: String,
        /// The key's binding with the user revoked, if a holder could be reached.
        rebinding: Option<Rebinding>,
    },
    /// Revoke one device of a user.
    RevokeDevice {
        /// The user.
        user_id: String,
        /// The device.
        device_id: String,
        /// Why.
        reason: String,
        /// The key's binding with the device revoked, if a holder could be reached.
        rebinding: Option<Rebinding>,
    },
    /// Consume a device authorization before its transaction is signed.
    ConsumeAuthorization {
        /// Whose key.
        user_id: String,
        /// Which device.
        device_id: String,
        /// SHA-256 of the canonical transaction.
        tx_hash: [u8; 32],
        /// The transaction's expiry.
        expires_at: i64,
    },
    /// Add a holder of a key (repair, restore, drain, rebalance): the chip imported the
    /// wrapped key before this commits.
    AddHolder {
        /// Whose key.
        owner: KeyOwner,
        /// The new holder.
        holder: HolderRecord,
    },
    /// Drop a holder of a key, only if at least `keep` other holders remain (add before
    /// remove: never below what the move started with, and never below one).
    RemoveHolder {
        /// Whose key.
        owner: KeyOwner,
        /// The chip to drop.
        chip_id: String,
        /// Holders that must remain after the removal.
        keep: u32,
    },
    /// Start (or stop) draining a chip: no new keys go to it, and the reconciler moves its
    /// keys off.
    SetDraining {
        /// The chip.
        chip_id: String,
        /// Draining or not.
        draining: bool,
    },
    /// Remove a chip from the registry; refused while any key lists it.
    RemoveChip {
        /// The chip.
        chip_id: String,
    },
    /// Record a coordinator node id as used, forever (before it joins the membership), so
    /// that no later node is ever added under it.
    RecordNodeId(NodeIdRecord),
    /// A no-op that only goes through Raft: a write-health probe (`ClusterService.WriteProbe`).
    /// Applying it changes no state and writes no audit record.
    Probe,
    // New variants go last: log entries name variants by position.
    /// Issue a new activation code (by its hash): one more device may register with it. A
    /// chip holding the key opened it in the binding first.
    Reactivate {
        /// The user.
        user_id: String,
        /// SHA-256 of the new code.
        code_sha256: [u8; 32],
        /// Unix seconds after which it is void.
        expires_at: i64,
        /// The key's binding with the new activation, decided by a chip.
        rebinding: Rebinding,
    },
    /// Check a presented activation code against the user's pending one, before a device is
    /// registered with it: a wrong code is counted, and at `limit` wrong codes the pending
    /// code is burnt. Checked here, in log order, so that concurrent guesses on several
    /// coordinators cannot together try more than `limit` codes.
    ActivationAttempt {
        /// The user.
        user_id: String,
        /// SHA-256 of the presented code.
        code_sha256: [u8; 32],
        /// Wrong codes that burn the pending one (the proposer's configuration).
        limit: u32,
    },
    /// Replace a device's certificate with a renewed one.
    RenewDevice {
        /// The user.
        user_id: String,
        /// The device.
        device_id: String,
        /// The new certificate (DER).
        #[serde(with = "serde_bytes")]
        certificate: Vec<u8>,
    },
    /// Record the code-signing key of terminal releases (once).
    InitCodeSigning(CodeSigningRecord),
    /// Record a release signed by the code-signing key (the same release again changes
    /// nothing).
    RecordRelease(ReleaseRecord),
    /// Revoke a release: devices presenting it are refused from then on.
    RevokeRelease {
        /// The release.
        release_id: String,
        /// Why.
        reason: String,
    },
    /// Replace the release policy.
    SetReleasePolicy(ReleasePolicy),
    /// Consume a device authorization after the risk checks let it through, recording what
    /// they decided. (`ConsumeAuthorization`, from before the risk checks, applies the same
    /// way without a record.)
    ConsumeChecked {
        /// Whose key.
        user_id: String,
        /// Which device.
        device_id: String,
        /// SHA-256 of the canonical transaction.
        tx_hash: [u8; 32],
        /// The transaction's expiry.
        expires_at: i64,
        /// What the risk checks decided (`None`: the coordinators have no risk service).
        risk: Option<RiskCheck>,
    },
    /// Record something about a user for the audit trail only; changes no state.
    RecordUserEvent {
        /// The user.
        user_id: String,
        /// What happened.
        event: UserEvent,
    },
    /// Record the SM2 user CA (once), made at the first SM2 enrolment.
    InitSm2Ca(CaRecord),
    /// Create an SM2 user whose key signs under a distinguishing ID of its own: as
    /// [`Op::EnrollUser`], and the ID (table `k/`).
    EnrollUserWithId {
        /// The new user.
        user: UserRecord,
        /// Always empty (see [`Op::EnrollUser`]).
        activation_code: String,
        /// The distinguishing ID (not the default one).
        distid: String,
    },
    /// Several commands in one log entry (group commit, command format
    /// [`COMMAND_FORMAT_BATCH`]): applied in order, each exactly as if it were an entry of
    /// its own (its own request id, audit records and result); the entry's result is
    /// [`CommandResult::Batch`], one result per command. The wrapper itself has no request id
    /// and leaves no record. A batch inside a batch is rejected. Proposed only once every
    /// member applies this format (`crate::batch`).
    Batch(Vec<Command>),
    /// Housekeeping (command format [`COMMAND_FORMAT_PRUNE`]): raise the prune horizon to
    /// `horizon` (never lowered) and forget up to a batch of consumed authorizations
    /// expiring at or before it, with their requests' stored results; from then on the state
    /// machine refuses an authorization expiring at or before the horizon. No request id,
    /// no audit record. Proposed by the leader (`crate::prune`) once every member applies
    /// this format.
    Prune {
        /// Unix seconds (the proposer's clock less [`crate::prune::PruneConfig::grace_secs`]).
        horizon: i64,
        /// Audit trail lines recorded before this (Unix seconds, the proposer's clock less
        /// [`crate::prune::PruneConfig::audit_keep_secs`]) leave the state for every
        /// coordinator's audit log (`crate::audit_log`).
        audit_before: i64,
    },
}

/// The newest Raft command format this build applies, reported in `Status` as
/// `command_format`. 1: one command per entry; 2 ([`COMMAND_FORMAT_BATCH`]): also
/// [`Op::Batch`]; 3 ([`COMMAND_FORMAT_PRUNE`]): also [`Op::Prune`].
pub const COMMAND_FORMAT: u32 = 3;

/// The command format that brought [`Op::Batch`]: a node proposes batches only when every
/// member reports at least this one, since an older node cannot read such an entry.
pub const COMMAND_FORMAT_BATCH: u32 = 2;

/// The command format that brought [`Op::Prune`]: the leader prunes only when every member
/// reports at least this one.
pub const COMMAND_FORMAT_PRUNE: u32 = 3;

impl Op {
    /// Short name for logs, metrics and the audit trail.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::AdmitChip { .. } => "admit_chip",
            Op::InitCa(_) => "init_ca",
            Op::InitSm2Ca(_) => "init_sm2_ca",
            Op::EnrollUser { .. } | Op::EnrollUserWithId { .. } => "enroll",
            Op::RegisterDevice { .. } => "register_device",
            Op::RevokeUser { .. } => "revoke",
            Op::RevokeDevice { .. } => "revoke_device",
            Op::ConsumeAuthorization { .. } => "sign",
            Op::RecordNodeId(_) => "record_node_id",
            Op::AddHolder { .. } => "add_holder",
            Op::RemoveHolder { .. } => "remove_holder",
            Op::SetDraining { .. } => "set_draining",
            Op::RemoveChip { .. } => "remove_chip",
            Op::Probe => "probe",
            Op::Reactivate { .. } => "reactivate",
            Op::ActivationAttempt { .. } => "activation_attempt",
            Op::RenewDevice { .. } => "renew_device",
            Op::InitCodeSigning(_) => "init_code_signing",
            Op::RecordRelease(_) => "record_release",
            Op::RevokeRelease { .. } => "revoke_release",
            Op::SetReleasePolicy(_) => "set_release_policy",
            Op::ConsumeChecked { .. } => "sign",
            Op::Batch(_) => "batch",
            Op::Prune { .. } => "prune",
            Op::RecordUserEvent { event, .. } => match event {
                UserEvent::SignRefused { .. } => "sign_refused",
                UserEvent::FaceEnrolled => "face_enroll",
                UserEvent::FaceDeleted { .. } => "face_delete",
            },
        }
    }

    /// The user this command is about, for the user's audit trail.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Op::EnrollUser { user, .. } | Op::EnrollUserWithId { user, .. } => Some(&user.user_id),
            Op::RegisterDevice { user_id, .. }
            | Op::RevokeUser { user_id, .. }
            | Op::RevokeDevice { user_id, .. }
            | Op::ConsumeAuthorization { user_id, .. }
            | Op::ConsumeChecked { user_id, .. }
            | Op::Reactivate { user_id, .. }
            | Op::ActivationAttempt { user_id, .. }
            | Op::RenewDevice { user_id, .. }
            | Op::RecordUserEvent { user_id, .. } => Some(user_id),
            Op::AddHolder { owner, .. } | Op::RemoveHolder { owner, .. } => owner.user_id(),
            Op::AdmitChip { .. }
            | Op::InitCa(_)
            | Op::InitSm2Ca(_)
            | Op::SetDraining { .. }
            | Op::RemoveChip { .. }
            | Op::RecordNodeId(_)
            | Op::Probe
            | Op::InitCodeSigning(_)
            | Op::RecordRelease(_)
            | Op::RevokeRelease { .. }
            | Op::SetReleasePolicy(_)
            | Op::Batch(_)
            | Op::Prune { .. } => None,
        }
    }

    /// The transaction this command is about, for the user's audit trail.
    pub fn tx_hash(&self) -> Option<[u8; 32]> {
        match self {
            Op::ConsumeAuthorization { tx_hash, .. } | Op::ConsumeChecked { tx_hash, .. } => {
                Some(*tx_hash)
            }
            Op::RecordUserEvent {
                event: UserEvent::SignRefused { tx_hash, .. },
                ..
            } => Some(*tx_hash),
            _ => None,
        }
    }

    /// The risk checks this command records.
    pub fn risk(&self) -> Option<&RiskCheck> {
        match self {
            Op::ConsumeChecked { risk, .. } => risk.as_ref(),
            Op::RecordUserEvent {
                event: UserEvent::SignRefused { risk, .. },
                ..
            } => Some(risk),
            _ => None,
        }
    }

    /// What the request is about, so that a request id reused for a different request is
    /// refused instead of answered with the first request's result.
    pub fn fingerprint(&self) -> [u8; 32] {
        match self {
            Op::AdmitChip { chip, .. } => fingerprint(self.kind(), &[chip.chip_id.as_bytes()]),
            Op::InitCa(_) | Op::InitSm2Ca(_) => fingerprint(self.kind(), &[]),
            Op::EnrollUser { user, .. } | Op::EnrollUserWithId { user, .. } => {
                fingerprint(self.kind(), &[user.user_id.as_bytes()])
            }
            Op::RegisterDevice {
                user_id, device, ..
            } => fingerprint(
                self.kind(),
                &[user_id.as_bytes(), device.device_id.as_bytes()],
            ),
            Op::RevokeUser { user_id, .. } => fingerprint(self.kind(), &[user_id.as_bytes()]),
            Op::RevokeDevice {
                user_id, device_id, ..
            } => fingerprint(self.kind(), &[user_id.as_bytes(), device_id.as_bytes()]),
            Op::ConsumeAuthorization {
                user_id, tx_hash, ..
            }
            | Op::ConsumeChecked {
                user_id, tx_hash, ..
            } => fingerprint(self.kind(), &[user_id.as_bytes(), tx_hash]),
            Op::RecordUserEvent { user_id, .. } => fingerprint(self.kind(), &[user_id.as_bytes()]),
            Op::RecordNodeId(r) => fingerprint(self.kind(), &[&r.node_id.to_be_bytes()]),
            Op::AddHolder { owner, holder } => fingerprint(
                self.kind(),
                &[owner.to_string().as_bytes(), holder.chip_id.as_bytes()],
            ),
            Op::RemoveHolder { owner, chip_id, .. } => fingerprint(
                self.kind(),
                &[owner.to_string().as_bytes(), chip_id.as_bytes()],
            ),
            Op::SetDraining { chip_id, draining } => {
                fingerprint(self.kind(), &[chip_id.as_bytes(), &[u8::from(*draining)]])
            }
            Op::RemoveChip { chip_id } => fingerprint(self.kind(), &[chip_id.as_bytes()]),
            Op::Probe => fingerprint(self.kind(), &[]),
            Op::Reactivate {
                user_id,
                code_sha256,
                ..
            } => fingerprint(self.kind(), &[user_id.as_bytes(), code_sha256]),
            Op::ActivationAttempt {
                user_id,
                code_sha256,
                ..
            } => fingerprint(self.kind(), &[user_id.as_bytes(), code_sha256]),
            Op::RenewDevice {
                user_id,
                device_id,
                certificate,
            } => fingerprint(
                self.kind(),
                &[
                    user_id.as_bytes(),
                    device_id.as_bytes(),
                    &yunkey_crypto::sha256(certificate),
                ],
            ),
            Op::InitCodeSigning(_) | Op::SetReleasePolicy(_) | Op::Batch(_) | Op::Prune { .. } => {
                fingerprint(self.kind(), &[])
            }
            Op::RecordRelease(r) => fingerprint(self.kind(), &[r.release_id.as_bytes()]),
            Op::RevokeRelease { release_id, .. } => {
                fingerprint(self.kind(), &[release_id.as_bytes()])
            }
        }
    }
}

/// The fingerprint of a request of `kind` about `subject` (see [`Op::fingerprint`]).
pub fn fingerprint(kind: &str, subject: &[&[u8]]) -> [u8; 32] {
    let mut data = Vec::new();
    for part in std::iter::once(kind.as_bytes()).chain(subject.iter().copied()) {
        data.extend_from_slice(&(part.len() as u32).to_be_bytes());
        data.extend_from_slice(part);
    }
    yunkey_crypto::sha256(&data)
}

/// The stored outcome of an applied request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PriorRequest {
    /// Its kind.
    pub kind: String,
    /// Its fingerprint.
    pub fingerprint: [u8; 32],
    /// Its result.
    pub result: CommandResult,
}

// Hand-written so that activation codes never reach a log.
impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::AdmitChip { chip, .. } => write!(f, "AdmitChip({})", chip.chip_id),
            Op::InitCa(_) => f.write_str("InitCa"),
            Op::InitSm2Ca(_) => f.write_str("InitSm2Ca"),
            Op::EnrollUser { user, .. } => write!(f, "EnrollUser({})", user.user_id),
            Op::EnrollUserWithId { user, distid, .. } => {
                write!(f, "EnrollUserWithId({}, {distid})", user.user_id)
            }
            Op::RegisterDevice {
                user_id, device, ..
            } => {
                write!(f, "RegisterDevice({user_id}, {})", device.device_id)
            }
            Op::RevokeUser { user_id, .. } => write!(f, "RevokeUser({user_id})"),
            Op::RevokeDevice {
                user_id, device_id, ..
            } => write!(f, "RevokeDevice({user_id}, {device_id})"),
            Op::ConsumeAuthorization {
                user_id, tx_hash, ..
            } => {
                write!(f, "ConsumeAuthorization({user_id}, {})", Hex32(tx_hash))
            }
            Op::ConsumeChecked {
                user_id,
                tx_hash,
                risk,
                ..
            } => {
                write!(f, "ConsumeChecked({user_id}, {}", Hex32(tx_hash))?;
                match risk {
                    Some(r) => write!(f, ", {})", RiskSummary(r)),
                    None => f.write_str(", no risk service)"),
                }
            }
            Op::RecordUserEvent { user_id, event } => match event {
                UserEvent::SignRefused {
                    device_id,
                    tx_hash,
                    risk,
                    refusal,
                } => write!(
                    f,
                    "SignRefused({user_id}, {device_id}, {}, {}, {refusal:?})",
                    Hex32(tx_hash),
                    RiskSummary(risk)
                ),
                UserEvent::FaceEnrolled => write!(f, "FaceEnrolled({user_id})"),
                UserEvent::FaceDeleted { deleted } => {
                    write!(f, "FaceDeleted({user_id}, was there: {deleted})")
                }
            },
            Op::RecordNodeId(r) => write!(f, "RecordNodeId({}, {})", r.node_id, r.address),
            Op::AddHolder { owner, holder } => {
                write!(f, "AddHolder({owner}, {})", holder.chip_id)
            }
            Op::RemoveHolder { owner, chip_id, .. } => {
                write!(f, "RemoveHolder({owner}, {chip_id})")
            }
            Op::SetDraining { chip_id, draining } => {
                write!(f, "SetDraining({chip_id}, {draining})")
            }
            Op::RemoveChip { chip_id } => write!(f, "RemoveChip({chip_id})"),
            Op::Reactivate {
                user_id,
                expires_at,
                ..
            } => write!(f, "Reactivate({user_id}, until {expires_at})"),
            Op::ActivationAttempt { user_id, limit, .. } => {
                write!(f, "ActivationAttempt({user_id}, limit {limit})")
            }
            Op::RenewDevice {
                user_id, device_id, ..
            } => write!(f, "RenewDevice({user_id}, {device_id})"),
            Op::Probe => f.write_str("Probe"),
            Op::Batch(commands) => write!(f, "Batch({} commands)", commands.len()),
            Op::Prune {
                horizon,
                audit_before,
            } => write!(f, "Prune(until {horizon}, audit before {audit_before})"),
            Op::InitCodeSigning(_) => f.write_str("InitCodeSigning"),
            Op::RecordRelease(r) => write!(
                f,
                "RecordRelease({}, {}.{}.{}, sha256 {})",
                r.release_id,
                r.version.0,
                r.version.1,
                r.version.2,
                Hex32(&r.file_sha256)
            ),
            Op::RevokeRelease { release_id, reason } => {
                write!(f, "RevokeRelease({release_id}, {reason:?})")
            }
            Op::SetReleasePolicy(p) => match p.min_version {
                Some((a, b, c)) => write!(
                    f,
                    "SetReleasePolicy(min {a}.{b}.{c}, require {})",
                    p.require_release
                ),
                None => write!(f, "SetReleasePolicy(no min, require {})", p.require_release),
            },
        }
    }
}

/// A 32-byte hash in lowercase hex, written without a `String` of its own (the audit trail
/// names a transaction hash in every signature's line).
struct Hex32<'a>(&'a [u8; 32]);

impl fmt::Display for Hex32<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 64];
        hex::encode_to_slice(self.0, &mut out).map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

/// A risk check in one line for the cluster-wide audit trail: decision ids, verdict, rules.
struct RiskSummary<'a>(&'a RiskCheck);

impl fmt::Display for RiskSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        write!(f, "risk {:?} {:?}", r.assessment_ids, r.verdict)?;
        if !r.reasons.is_empty() {
            let rules: Vec<&str> = r.reasons.iter().map(|x| x.rule.as_str()).collect();
            write!(f, " rules {rules:?}")?;
        }
        if !r.authentication_id.is_empty() {
            write!(
                f,
                " auth {} matched {}",
                r.authentication_id, r.authentication_matched
            )?;
        }
        if r.failed_open {
            write!(f, " FAILED OPEN ({})", r.failure)?;
        } else if !r.failure.is_empty() {
            write!(f, " failure ({})", r.failure)?;
        }
        Ok(())
    }
}

/// What applying a command did. `Empty` is the result of Raft's own entries.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum CommandResult {
    /// A blank or membership entry.
    #[default]
    Empty,
    /// The chip is in the registry.
    ChipAdmitted,
    /// The CA is recorded.
    CaInitialized,
    /// The user exists.
    Enrolled {
        /// The user.
        user_id: String,
        /// Always empty since format 3 (the code is never stored); results stored before
        /// kept the code until it was used.
        activation_code: String,
    },
    /// The device is registered.
    DeviceRegistered {
        /// The user.
        user_id: String,
        /// The device.
        device_id: String,
    },
    /// The user is revoked.
    Revoked,
    /// The device is revoked.
    DeviceRevoked,
    /// The authorization is consumed: the transaction may be signed.
    Consumed,
    /// The node id is recorded as used.
    NodeIdRecorded,
    /// A probe went through Raft.
    Probed,
    /// The holder set of a key changed (or already was as asked).
    HoldersChanged,
    /// The chip's draining state is set.
    DrainingSet,
    /// The chip is out of the registry.
    ChipRemoved,
    /// Nothing changed, because of this.
    Rejected(Rejection),
    // New variants go last: stored results name variants by position.
    /// A new activation code is pending.
    Reactivated,
    /// The presented activation code is the pending one.
    ActivationAccepted,
    /// A wrong activation code is counted; `burnt`: the pending code is void now.
    ActivationFailureCounted {
        /// Failures so far against this code.
        failures: u32,
        /// The limit was reached and the code is burnt.
        burnt: bool,
    },
    /// The device has its renewed certificate.
    DeviceRenewed,
    /// The code-signing key is recorded.
    CodeSigningInitialized,
    /// The release is recorded (or already was).
    ReleaseRecorded {
        /// Its id.
        release_id: String,
    },
    /// The release is revoked (or already was).
    ReleaseRevoked,
    /// The release policy is set.
    ReleasePolicySet,
    /// A user event is in the audit trail.
    Recorded,
    /// The results of an [`Op::Batch`]'s commands, in order.
    Batch(Vec<CommandResult>),
    /// An [`Op::Prune`] applied.
    Pruned {
        /// The horizon now (the one asked, or a later one already in force).
        horizon: i64,
        /// Ledger entries forgotten.
        ledger: u64,
        /// Stored request results forgotten with them.
        requests: u64,
        /// Audit trail lines moved to the audit log.
        audit: u64,
        /// More is left to forget now: propose another prune.
        more: bool,
    },
}

impl fmt::Debug for CommandResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandResult::Enrolled { user_id, .. } => write!(f, "Enrolled({user_id})"),
            CommandResult::Empty => f.write_str("Empty"),
            CommandResult::ChipAdmitted => f.write_str("ChipAdmitted"),
            CommandResult::CaInitialized => f.write_str("CaInitialized"),
            CommandResult::DeviceRegistered { device_id, .. } => {
                write!(f, "DeviceRegistered({device_id})")
            }
            CommandResult::Revoked => f.write_str("Revoked"),
            CommandResult::DeviceRevoked => f.write_str("DeviceRevoked"),
            CommandResult::Consumed => f.write_str("Consumed"),
            CommandResult::NodeIdRecorded => f.write_str("NodeIdRecorded"),
            CommandResult::Probed => f.write_str("Probed"),
            CommandResult::HoldersChanged => f.write_str("HoldersChanged"),
            CommandResult::DrainingSet => f.write_str("DrainingSet"),
            CommandResult::ChipRemoved => f.write_str("ChipRemoved"),
            CommandResult::CodeSigningInitialized => f.write_str("CodeSigningInitialized"),
            CommandResult::ReleaseRecorded { release_id } => {
                write!(f, "ReleaseRecorded({release_id})")
            }
            CommandResult::ReleaseRevoked => f.write_str("ReleaseRevoked"),
            CommandResult::ReleasePolicySet => f.write_str("ReleasePolicySet"),
            CommandResult::Recorded => f.write_str("Recorded"),
            CommandResult::Rejected(r) => write!(f, "Rejected({r:?})"),
            CommandResult::Reactivated => f.write_str("Reactivated"),
            CommandResult::ActivationAccepted => f.write_str("ActivationAccepted"),
            CommandResult::ActivationFailureCounted { failures, burnt } => {
                write!(f, "ActivationFailureCounted({failures}, burnt: {burnt})")
            }
            CommandResult::DeviceRenewed => f.write_str("DeviceRenewed"),
            CommandResult::Batch(results) => f.debug_list().entries(results).finish(),
            CommandResult::Pruned {
                horizon,
                ledger,
                requests,
                audit,
                more,
            } => write!(
                f,
                "Pruned(until {horizon}: {ledger} ledger entries, {requests} results, {audit} audit lines, more: {more})"
            ),
        }
    }
}

/// Why a command changed nothing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Rejection {
    /// The request id was used before for a different request.
    RequestIdReused {
        /// The kind it was first used for.
        first_kind: String,
    },
    /// A user with this id exists.
    UserExists(String),
    /// No such user.
    UnknownUser(String),
    /// The user is revoked.
    UserRevoked(String),
    /// The device key is registered already (to this or another user).
    DeviceTaken(String),
    /// The activation code is wrong, used or expired.
    ActivationInvalid,
    /// The authorization was consumed before.
    AuthorizationUsed {
        /// When.
        consumed_at: i64,
    },
    /// The device is not registered to the user.
    UnknownDevice,
    /// The CA already exists.
    CaExists,
    /// The node id was used before (by a node added at `first_address`).
    NodeIdUsed {
        /// The id.
        node_id: u64,
        /// The address it was first added with.
        first_address: String,
    },
    /// The binding offered is older than the one committed (another change came first).
    StaleBinding {
        /// The committed seq.
        committed: u64,
    },
    /// The key has a holder on that chip already (under another handle).
    HolderExists {
        /// The chip.
        chip_id: String,
    },
    /// Removing the holder would leave fewer than asked.
    TooFewHolders {
        /// Holders there are now.
        have: u32,
    },
    /// No chip with this id is registered.
    UnknownChip(String),
    /// The chip still holds keys.
    ChipNotEmpty {
        /// How many keys list it.
        keys: u64,
    },
    /// The chip belongs to another security domain than the cluster's.
    WrongDomain {
        /// The cluster's domain.
        cluster: String,
    },
    // New variants go last: stored results name variants by position.
    /// The device is revoked or removed.
    DeviceRevoked(String),
    /// The code-signing key already exists.
    CodeSigningExists,
    /// No release with this id.
    UnknownRelease(String),
    /// An [`Op::Batch`] inside a batch.
    NestedBatch,
    /// The authorization expires at or before the prune horizon: its ledger entry may be
    /// gone, so it is refused as expired.
    AuthorizationExpired {
        /// Its expiry.
        expires_at: i64,
        /// The horizon.
        horizon: i64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_lines_name_hashes_as_before() {
        let tx_hash: [u8; 32] = std::array::from_fn(|i| (i * 37 + 5) as u8);
        let op = Op::ConsumeChecked {
            user_id: "alice".into(),
            device_id: "phone".into(),
            tx_hash,
            expires_at: 9,
            risk: None,
        };
        // The cluster-wide audit trail stores this line: it keeps its exact wording.
        let want = format!(
            "ConsumeChecked(alice, {}, no risk service)",
            hex::encode(tx_hash)
        );
        assert_eq!(format!("{op:?}"), want);
    }
}
