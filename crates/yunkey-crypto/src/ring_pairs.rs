//! Opened P-256 key pairs of the keys that sign, kept: [`SigningPairs`].
//!
//! ring opens a key pair only after deriving its public key from the scalar and comparing
//! it with the one given: a fixed-base scalar multiplication, as costly as the signature.
//! Opened for each signature and wiped after it ([`crate::ecdsa::PrivateKey::sign_message_with_secret`]),
//! a signature costs three multiplications; with its pair kept open, one. Each pair kept here
//! is wiped in place (overwritten with the pair of 1·G) when it leaves: evicted to make room,
//! removed with [`SigningPairs::remove`], or when the cache is dropped.
//!
//! A pair is found by its public key. The scalar of a P-256 public key is unique, and ring
//! checked the two belong together when it opened the pair, so a pair found for a key is
//! that key's own.

use crate::ecdsa::{open_ring_pair, ring_sign_low_s, wipe_ring_pair, PublicKey};
use crate::CryptoError;
use ring::rand::SystemRandom;
use ring::signature::EcdsaKeyPair;
use std::collections::HashMap;
use std::sync::Mutex;

/// Shards of the cache: a signature holds its shard's lock while it signs.
const SHARDS: usize = 16;

/// A bounded cache of opened ring key pairs, keyed by public key.
pub struct SigningPairs {
    shards: Vec<Mutex<HashMap<Vec<u8>, Box<EcdsaKeyPair>>>>,
    per_shard: usize,
    rng: SystemRandom,
}

impl std::fmt::Debug for SigningPairs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningPairs")
            .field("open", &self.len())
            .field("capacity", &(self.per_shard * SHARDS))
            .finish()
    }
}

impl SigningPairs {
    /// A cache that keeps about `capacity` pairs open (at least one per shard).
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            rng: SystemRandom::new(),
        }
    }

    fn shard(&self, public: &PublicKey) -> &Mutex<HashMap<Vec<u8>, Box<EcdsaKeyPair>>> {
        // The last byte of x: uniform enough for a key that is a random point.
        let sec1 = public.sec1();
        &self.shards[usize::from(sec1[32]) % SHARDS]
    }

    /// Signs `message` (a DER signature, low-S) with the key whose scalar is `secret` and
    /// whose public key is `public`, opening its pair on first use; the same bytes as
    /// [`crate::ecdsa::PrivateKey::sign_message_with_secret`] would verify against.
    pub fn sign_message(
        &self,
        secret: &[u8],
        public: &PublicKey,
        message: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut shard = self.shard(public).lock().expect("poisoned");
        if let Some(pair) = shard.get(public.sec1()) {
            return ring_sign_low_s(pair, &self.rng, message);
        }
        let pair = Box::new(open_ring_pair(secret, public, &self.rng)?);
        let signature = ring_sign_low_s(&pair, &self.rng, message);
        if shard.len() >= self.per_shard {
            // Room for it: any other pair goes (the cache holds the keys that sign; one that
            // signs again soon is opened again).
            if let Some(old) = shard.keys().next().cloned() {
                if let Some(mut evicted) = shard.remove(&old) {
                    wipe_ring_pair(&mut evicted, &self.rng);
                }
            }
        }
        shard.insert(public.sec1().to_vec(), pair);
        signature
    }

    /// Wipes and forgets the pair of `public`, if open (its key was deleted).
    pub fn remove(&self, public: &PublicKey) {
        let mut shard = self.shard(public).lock().expect("poisoned");
        if let Some(mut pair) = shard.remove(public.sec1()) {
            wipe_ring_pair(&mut pair, &self.rng);
        }
    }

    /// Pairs open now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("poisoned").len())
            .sum()
    }

    /// Whether no pair is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for SigningPairs {
    fn drop(&mut self) {
        for shard in &self.shards {
            let mut shard = match shard.lock() {
                Ok(s) => s,
                Err(poisoned) => poisoned.into_inner(),
            };
            for pair in shard.values_mut() {
                wipe_ring_pair(pair, &self.rng);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecdsa::PrivateKey;

    #[test]
    fn kept_pairs_sign_for_their_own_key_and_stay_bounded() {
        let pairs = SigningPairs::new(SHARDS);
        let keys: Vec<PrivateKey> = (0..40).map(|_| PrivateKey::generate()).collect();
        for round in 0..2 {
            for (i, key) in keys.iter().enumerate() {
                let message = format!("round {round} key {i}");
                let secret = key.to_secret_bytes();
                let public = key.public_key();
                let der = pairs
                    .sign_message(&secret, &public, message.as_bytes())
                    .unwrap();
                public.verify_message(message.as_bytes(), &der).unwrap();
                // Low-S, as every signature of ours.
                let sig = p256::ecdsa::Signature::from_der(&der).unwrap();
                assert!(sig.normalize_s().is_none(), "high S from a kept pair");
            }
        }
        // One per shard at most: 16, whatever the 40 keys' spread.
        assert!(pairs.len() <= SHARDS, "{pairs:?}");
        assert!(!pairs.is_empty());
        // The last key signed last: its pair is open, and removing it closes that one only.
        let open = pairs.len();
        let last = keys.last().unwrap();
        pairs.remove(&last.public_key());
        assert_eq!(pairs.len(), open - 1);
        pairs.remove(&last.public_key());
        assert_eq!(pairs.len(), open - 1);
    }

    #[test]
    fn a_scalar_that_is_not_the_keys_is_refused_and_not_kept() {
        let pairs = SigningPairs::new(64);
        let key = PrivateKey::generate();
        let other = PrivateKey::generate();
        let err = pairs
            .sign_message(&other.to_secret_bytes(), &key.public_key(), b"m")
            .unwrap_err();
        assert!(err.to_string().contains("not the private key"), "{err}");
        assert!(pairs.is_empty());
    }
}
