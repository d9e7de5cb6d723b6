//! One lock per user (striped): an assessment reads a user's counters, decides and writes
//! them back under the user's lock, so that concurrent assessments from several coordinators
//! count exactly. Users that share a stripe only wait for each other.

use std::hash::BuildHasher;
use tokio::sync::{Mutex, MutexGuard};

/// Number of stripes.
const STRIPES: usize = 256;

/// Striped per-user locks.
#[derive(Debug)]
pub struct UserLocks {
    hasher: std::collections::hash_map::RandomState,
    stripes: Vec<Mutex<()>>,
}

impl Default for UserLocks {
    fn default() -> Self {
        Self {
            hasher: Default::default(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }
}

impl UserLocks {
    /// Waits for `user`'s lock.
    pub async fn lock(&self, user: &str) -> MutexGuard<'_, ()> {
        let i = (self.hasher.hash_one(user) as usize) % STRIPES;
        self.stripes[i].lock().await
    }
}
