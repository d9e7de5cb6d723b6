//! The chip-local replay guard: defence in depth behind the coordinators' Raft ledger.
//!
//! Rule: the chip remembers `tx_hash -> (key handle, signature)` until the authorization
//! expires. A repeat of the same transaction with the same key (a coordinator retrying
//! after a lost reply) gets the *same signature bytes* back instead of a second signature
//! (the soft chip's P-256 signatures are randomized), so a retry is harmless and nothing new
//! is signed. The same transaction hash with a *different* key is refused. The guard is
//! bounded: expired entries are dropped first, then the entries closest to expiry.

use crate::ChipError;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use yunkey_crypto::Digest;

#[derive(Debug)]
struct Seen {
    key_handle: String,
    signature: Vec<u8>,
}

#[derive(Debug, Default)]
struct Inner {
    by_hash: HashMap<Digest, Seen>,
    by_expiry: BTreeSet<(i64, Digest)>,
}

impl Inner {
    fn purge(&mut self, now: i64) {
        while let Some(&(exp, hash)) = self.by_expiry.first() {
            if exp > now {
                break;
            }
            self.by_expiry.pop_first();
            self.by_hash.remove(&hash);
        }
    }
}

/// Remembers signed transaction hashes until they expire.
#[derive(Debug)]
pub struct ReplayGuard {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl ReplayGuard {
    /// A guard remembering at most `capacity` hashes.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    /// `Ok(Some(signature))` for a repeat with the same key, `Ok(None)` for a new hash,
    /// [`ChipError::Replay`] for the same hash with a different key.
    pub fn check(
        &self,
        tx_hash: &Digest,
        key_handle: &str,
        now: i64,
    ) -> Result<Option<Vec<u8>>, ChipError> {
        let mut inner = self.lock();
        inner.purge(now);
        match inner.by_hash.get(tx_hash) {
            None => Ok(None),
            Some(seen) if seen.key_handle == key_handle => Ok(Some(seen.signature.clone())),
            Some(_) => Err(ChipError::Replay),
        }
    }

    /// Records a signature made for `tx_hash`, kept until `expires_at`.
    pub fn record(
        &self,
        tx_hash: Digest,
        key_handle: &str,
        signature: &[u8],
        expires_at: i64,
        now: i64,
    ) {
        let mut inner = self.lock();
        inner.purge(now);
        if inner.by_hash.contains_key(&tx_hash) {
            return;
        }
        while inner.by_hash.len() >= self.capacity {
            let Some((_, hash)) = inner.by_expiry.pop_first() else {
                break;
            };
            inner.by_hash.remove(&hash);
        }
        inner.by_expiry.insert((expires_at, tx_hash));
        inner.by_hash.insert(
            tx_hash,
            Seen {
                key_handle: key_handle.to_owned(),
                signature: signature.to_vec(),
            },
        );
    }

    /// How many hashes are remembered.
    pub fn len(&self) -> usize {
        self.lock().by_hash.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_same_key_returns_same_signature_other_key_refused() {
        let g = ReplayGuard::new(2);
        let h = [1u8; 32];
        assert_eq!(g.check(&h, "k1", 100).unwrap(), None);
        g.record(h, "k1", b"sig", 200, 100);
        assert_eq!(g.check(&h, "k1", 150).unwrap(), Some(b"sig".to_vec()));
        assert_eq!(g.check(&h, "k2", 150), Err(ChipError::Replay));
        // Expired entries are dropped.
        assert_eq!(g.check(&h, "k2", 200).unwrap(), None);
        assert!(g.is_empty());
    }

    #[test]
    fn bounded() {
        let g = ReplayGuard::new(2);
        for i in 0..5u8 {
            g.record([i; 32], "k", b"s", 1000 + i64::from(i), 0);
        }
        assert_eq!(g.len(), 2);
        // The latest-expiring entries are kept.
        assert!(g.check(&[4u8; 32], "k", 0).unwrap().is_some());
        assert!(g.check(&[0u8; 32], "k", 0).unwrap().is_none());
    }
}
