//! The risk service's durable state, in one tree of a [`yunkey_store::Db`] (sled on disk,
//! memory in tests). Layout and formats: [`crate::records`].
//!
//! Every method blocks on disk: call them from a blocking thread. Writes are not durable
//! until [`RiskStore::flush`]; callers flush before they answer.

use crate::records::{
    self, auth_key, counted_key, face_key, prune_key, user_key, AuthRecord, CountedRecord,
    FaceRecord, UserRecord, PRUNE_PREFIX,
};
use std::path::Path;
use yunkey_store::{Batch, Db, StoreError, Tree};

/// Name of the one tree.
const TREE: &str = "risk";

/// The risk service's records.
#[derive(Clone, Debug)]
pub struct RiskStore {
    db: Db,
    tree: Tree,
}

impl RiskStore {
    /// Opens (or creates) the store in directory `dir` (sled).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::on(Db::open_sled(dir)?)
    }

    /// A store in memory (tests).
    pub fn memory() -> Self {
        // The in-memory engine cannot fail to open a tree.
        Self::on(Db::memory()).unwrap_or_else(|_| unreachable!("memory tree"))
    }

    fn on(db: Db) -> Result<Self, StoreError> {
        let tree = db.tree(TREE)?;
        Ok(Self { db, tree })
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.tree
            .get(key)?
            .map(|v| records::decode(key, &v))
            .transpose()
    }

    /// A user's counters (empty for a user never counted).
    pub fn user(&self, user: &str) -> Result<UserRecord, StoreError> {
        Ok(self.get(&user_key(user))?.unwrap_or_default())
    }

    /// The record of a counted transaction.
    pub fn counted(
        &self,
        user: &str,
        tx_hash: &[u8; 32],
    ) -> Result<Option<CountedRecord>, StoreError> {
        self.get(&counted_key(user, tx_hash))
    }

    /// Counts a transaction: the user's new counters and the transaction's record, in one
    /// atomic batch. The record is pruned after `prune_at`.
    pub fn count(
        &self,
        user: &str,
        tx_hash: &[u8; 32],
        counters: &UserRecord,
        counted: &CountedRecord,
        prune_at: i64,
    ) -> Result<(), StoreError> {
        let key = counted_key(user, tx_hash);
        let mut b = Batch::new();
        b.insert(user_key(user), records::encode(counters));
        b.insert(prune_key(prune_at, &key), vec![records::VERSION]);
        b.insert(key, records::encode(counted));
        self.tree.apply(b)
    }

    /// Keeps an authentication result until it expires.
    pub fn put_auth(&self, id: &str, rec: &AuthRecord) -> Result<(), StoreError> {
        let key = auth_key(id);
        let mut b = Batch::new();
        b.insert(prune_key(rec.expires_at, &key), vec![records::VERSION]);
        b.insert(key, records::encode(rec));
        self.tree.apply(b)
    }

    /// An authentication result, if it is still kept.
    pub fn auth(&self, id: &str) -> Result<Option<AuthRecord>, StoreError> {
        self.get(&auth_key(id))
    }

    /// Stores (or replaces) a user's face template.
    pub fn put_face(&self, user: &str, rec: &FaceRecord) -> Result<(), StoreError> {
        self.tree.insert(&face_key(user), &records::encode(rec))
    }

    /// A user's face template.
    pub fn face(&self, user: &str) -> Result<Option<FaceRecord>, StoreError> {
        self.get(&face_key(user))
    }

    /// Deletes a user's face template; whether there was one.
    pub fn delete_face(&self, user: &str) -> Result<bool, StoreError> {
        let key = face_key(user);
        let had = self.tree.get(&key)?.is_some();
        if had {
            self.tree.remove(&key)?;
        }
        Ok(had)
    }

    /// Deletes every record whose prune time is before `now`; how many.
    pub fn prune(&self, now: i64) -> Result<usize, StoreError> {
        let end = [PRUNE_PREFIX, &records::prune_stamp(now)].concat();
        let mut b = Batch::new();
        let mut n = 0;
        for entry in self.tree.range(PRUNE_PREFIX, Some(&end)) {
            let (index, _) = entry?;
            if let Some(key) = records::pruned_key(&index) {
                b.remove(key.to_vec());
                n += 1;
            }
            b.remove(index);
            if b.len() >= 1000 {
                self.tree.apply(std::mem::take(&mut b))?;
            }
        }
        if !b.is_empty() {
            self.tree.apply(b)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(expires_at: i64) -> AuthRecord {
        AuthRecord {
            user_id: "alice".into(),
            tx_hash: [1; 32],
            matched: true,
            expires_at,
        }
    }

    #[test]
    fn prune_removes_what_is_due_and_keeps_the_rest() {
        let s = RiskStore::memory();
        s.put_auth("auth-old", &auth(100)).unwrap();
        s.put_auth("auth-new", &auth(200)).unwrap();
        let counted = CountedRecord {
            at: 50,
            currency: "EUR".into(),
            units: 1,
            day: 0,
            previous_location: None,
        };
        s.count("alice", &[2; 32], &UserRecord::default(), &counted, 150)
            .unwrap();
        assert_eq!(
            s.prune(100).unwrap(),
            0,
            "due at 100 is kept until after 100"
        );
        assert_eq!(s.prune(101).unwrap(), 1);
        assert!(s.auth("auth-old").unwrap().is_none());
        assert!(s.auth("auth-new").unwrap().is_some());
        assert_eq!(s.prune(1000).unwrap(), 2);
        assert!(s.counted("alice", &[2; 32]).unwrap().is_none());
        assert!(s.auth("auth-new").unwrap().is_none());
        assert_eq!(s.tree.len(), 1, "only the user's counters are left");
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RiskStore::open(dir.path()).unwrap();
            s.put_face(
                "bob",
                &FaceRecord {
                    enrolled_at: 5,
                    sealed: vec![1, 2, 3],
                },
            )
            .unwrap();
            s.flush().unwrap();
        }
        let s = RiskStore::open(dir.path()).unwrap();
        assert_eq!(s.face("bob").unwrap().unwrap().enrolled_at, 5);
        assert!(s.delete_face("bob").unwrap());
        assert!(!s.delete_face("bob").unwrap());
    }
}
