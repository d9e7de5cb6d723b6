//! Typed reads of the replicated state on this node.

use super::codec::decode;
use super::command::PriorRequest;
use super::keys;
use super::model::{AuditRecord, CaRecord, ChipRecord, LedgerEntry, NodeIdRecord, UserRecord};
use super::model_ref::UserRef;
use super::model_release::{CodeSigningRecord, ReleasePolicy, ReleaseRecord};
use super::model_risk::UserAuditRecord;
use serde::de::DeserializeOwned;
use yunkey_crypto::sig::Algorithm;
use yunkey_store::{StoreError, Tree};

/// Read access to the state as applied on this node.
#[derive(Clone, Debug)]
pub struct StateView {
    tree: Tree,
}

impl StateView {
    /// A view of the state tree.
    pub fn new(tree: Tree) -> Self {
        Self { tree }
    }

    /// A record, decoded where the tree keeps it (no copy of the stored bytes first).
    pub(super) fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.tree.get_with(key, |v| decode(key, v))?.transpose()
    }

    fn counter(&self, key: &[u8]) -> Result<u64, StoreError> {
        Ok(self
            .tree
            .get_with(key, |v| <[u8; 8]>::try_from(v).ok())?
            .flatten()
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    /// A user.
    pub fn user(&self, user_id: &str) -> Result<Option<UserRecord>, StoreError> {
        self.get(&keys::user(user_id))
    }

    /// A user record read in place, without copying its strings and bytes (`model_ref`):
    /// `f` sees it under the tree's read lock, so it must not read the state again (a
    /// writer waiting between the two reads would stop both).
    pub fn with_user<R>(
        &self,
        user_id: &str,
        f: impl FnOnce(&UserRef<'_>) -> R,
    ) -> Result<Option<R>, StoreError> {
        let key = keys::user(user_id);
        self.tree
            .get_with(&key, |v| {
                decode::<UserRef<'_>>(&key, v).map(|user| f(&user))
            })?
            .transpose()
    }

    /// Failed activation attempts against the user's pending code.
    pub fn activation_failures(&self, user_id: &str) -> Result<u32, StoreError> {
        Ok(self.get(&keys::activation_failures(user_id))?.unwrap_or(0))
    }

    /// Why a device was revoked or removed, if it was.
    pub fn device_revocation(&self, device_id: &str) -> Result<Option<String>, StoreError> {
        self.get(&keys::device_revocation(device_id))
    }

    /// The user CA (ECDSA P-256).
    pub fn ca(&self) -> Result<Option<CaRecord>, StoreError> {
        self.get(keys::CA)
    }

    /// The user CA of `algorithm`'s users.
    pub fn ca_of(&self, algorithm: Algorithm) -> Result<Option<CaRecord>, StoreError> {
        match algorithm {
            Algorithm::EcdsaP256 => self.get(keys::CA),
            Algorithm::Sm2 => self.get(keys::SM2_CA),
        }
    }

    /// An SM2 user's distinguishing ID: the one given at enrolment, else the default. Empty
    /// for a P-256 user.
    pub fn user_distid(&self, user: &UserRecord) -> Result<String, StoreError> {
        match Algorithm::from_proto(user.algorithm) {
            Some(algorithm) => self.distid(algorithm, &user.user_id),
            None => Ok(String::new()),
        }
    }

    /// [`Self::user_distid`] of the user `user_id`, whose key is of `algorithm`.
    pub fn distid(&self, algorithm: Algorithm, user_id: &str) -> Result<String, StoreError> {
        if algorithm != Algorithm::Sm2 {
            return Ok(String::new());
        }
        Ok(self
            .get::<String>(&keys::user_distid(user_id))?
            .unwrap_or_else(|| yunkey_crypto::sm2::DEFAULT_DISTID.to_owned()))
    }

    /// The code-signing key, once the first release was signed.
    pub fn code_signing(&self) -> Result<Option<CodeSigningRecord>, StoreError> {
        self.get(keys::CODE_SIGNING)
    }

    /// A release.
    pub fn release(&self, release_id: &str) -> Result<Option<ReleaseRecord>, StoreError> {
        self.get(&keys::release(release_id))
    }

    /// Every release, by id.
    pub fn releases(&self) -> Result<Vec<ReleaseRecord>, StoreError> {
        self.tree
            .scan_prefix(keys::RELEASE_PREFIX)
            .map(|e| e.and_then(|(k, v)| decode(&k, &v)))
            .collect()
    }

    /// The release policy (the default, which accepts requests without a release id, until an
    /// operator sets one).
    pub fn release_policy(&self) -> Result<ReleasePolicy, StoreError> {
        Ok(self.get(keys::RELEASE_POLICY)?.unwrap_or_default())
    }

    /// The cluster's security domain id, once the first chip is admitted.
    pub fn domain(&self) -> Result<Option<String>, StoreError> {
        self.get(keys::DOMAIN)
    }

    /// The domain's operator key (SPKI DER), once the first chip is admitted.
    pub fn operator_key(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(keys::OPERATOR_KEY)
    }

    /// A chip.
    pub fn chip(&self, chip_id: &str) -> Result<Option<ChipRecord>, StoreError> {
        self.get(&keys::chip(chip_id))
    }

    /// Every chip, by id.
    pub fn chips(&self) -> Result<Vec<ChipRecord>, StoreError> {
        self.tree
            .scan_prefix(keys::CHIP_PREFIX)
            .map(|e| e.and_then(|(k, v)| decode(&k, &v)))
            .collect()
    }

    /// Since when a chip is draining (Unix seconds), if it is.
    pub fn draining_since(&self, chip_id: &str) -> Result<Option<i64>, StoreError> {
        self.get(&keys::draining(chip_id))
    }

    /// Up to `limit` users with ids after `after` (all from the start when empty), in id order:
    /// one page of a scan that resumes where the last page ended.
    pub fn users_after(&self, after: &str, limit: usize) -> Result<Vec<UserRecord>, StoreError> {
        let from = if after.is_empty() {
            keys::USER_PREFIX.to_vec()
        } else {
            let mut k = keys::user(after);
            k.push(0);
            k
        };
        let end = b"u0".to_vec(); // the byte after '/'
        self.tree
            .range(&from, Some(&end))
            .take(limit)
            .map(|e| e.and_then(|(k, v)| decode(&k, &v)))
            .collect()
    }

    /// The record of a coordinator node id, if it was ever added.
    pub fn node_id(&self, node_id: u64) -> Result<Option<NodeIdRecord>, StoreError> {
        self.get(&keys::node_id(node_id))
    }

    /// Every coordinator node id ever added, by id.
    pub fn node_ids(&self) -> Result<Vec<NodeIdRecord>, StoreError> {
        self.tree
            .scan_prefix(keys::NODE_ID_PREFIX)
            .map(|e| e.and_then(|(k, v)| decode(&k, &v)))
            .collect()
    }

    /// The ledger entry of a consumed authorization.
    pub fn ledger(&self, tx_hash: &[u8; 32]) -> Result<Option<LedgerEntry>, StoreError> {
        self.get(&keys::ledger(tx_hash))
    }

    /// The prune horizon: ledger entries of authorizations expiring at or before it may be
    /// gone, and the state machine refuses such an authorization as expired (`None`: the
    /// cluster never pruned; see `apply_prune`).
    pub fn pruned_until(&self) -> Result<Option<i64>, StoreError> {
        self.get(keys::PRUNED_UNTIL)
    }

    /// Number of entries in the ledger of consumed authorizations (a walk: for tests and
    /// tools, not for a request path).
    pub fn ledger_len(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        for entry in self.tree.scan_prefix(keys::LEDGER_PREFIX) {
            entry?;
            n += 1;
        }
        Ok(n)
    }

    /// The stored outcome of an applied request.
    pub fn request(&self, request_id: &str) -> Result<Option<PriorRequest>, StoreError> {
        self.get(&keys::request(request_id))
    }

    /// The last `limit` audit records, oldest first.
    pub fn audit_tail(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let next = self.counter(keys::AUDIT_SEQ)?;
        let from = next.saturating_sub(limit as u64);
        self.tree
            .range(&keys::audit(from), Some(&keys::audit(next)))
            .map(|e| e.and_then(|(k, v)| decode(&k, &v)))
            .collect()
    }

    /// The last `limit` lines of a user's audit trail, oldest first.
    pub fn user_audit(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<UserAuditRecord>, StoreError> {
        let mut tail = std::collections::VecDeque::with_capacity(limit);
        for entry in self.tree.scan_prefix(&keys::user_audit_prefix(user_id)) {
            let (k, v) = entry?;
            if tail.len() == limit {
                tail.pop_front();
            }
            tail.push_back(decode(&k, &v)?);
        }
        Ok(tail.into())
    }

    /// Number of users.
    pub fn user_count(&self) -> Result<u64, StoreError> {
        self.counter(keys::COUNT_USERS)
    }

    /// Number of devices.
    pub fn device_count(&self) -> Result<u64, StoreError> {
        self.counter(keys::COUNT_DEVICES)
    }

    /// Number of consumed authorizations.
    pub fn signature_count(&self) -> Result<u64, StoreError> {
        self.counter(keys::COUNT_SIGNATURES)
    }

    /// Whether `prefix` has any user (cheap emptiness check for tests and status).
    pub fn has_users(&self) -> bool {
        self.tree.scan_prefix(keys::USER_PREFIX).next().is_some()
    }
}
