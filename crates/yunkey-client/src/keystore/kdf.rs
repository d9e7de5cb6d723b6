//! The key-derivation cost: what one guess of a PIN costs someone who copied the key file.
//!
//! A copied file can be attacked offline, where no lockout applies: each guess is one Argon2id
//! derivation and one AES-GCM open, so only the derivation's cost and the number of possible
//! PINs bound the attack. The budget this keystore is built to:
//!
//! > an attacker with a copied key file and 8 CPU cores needs at least 30 days, on average, to
//! > find the weakest PIN the keystore accepts (all digits, [`MIN_SECRET_LEN`] long).
//!
//! 8 cores × 30 days = 20.7 million core-seconds. The average search covers half the space,
//! so a PIN of `n` digits needs `10^n / 2 × t` core-seconds for `t` seconds per guess:
//! - 6 digits: 500,000 guesses, so `t` ≥ 41 s per guess: no one waits that long to pay;
//! - 8 digits: 50 million guesses, so `t` ≥ 0.415 s per guess.
//!
//! Hence [`MIN_SECRET_LEN`] = 8 and [`KdfParams::RECOMMENDED`], 256 MiB and 3 passes: about
//! 0.5 s a guess extrapolated to a quiet core of the reference machine, 0.62 s at best under load
//! (`cargo run -p yunkey-client --example kdf_cost`; figures in docs/security.md). 128 MiB
//! and 3 passes measured 0.27 s at best: too cheap. The memory (256 MiB a guess) also caps
//! how many guesses a GPU runs at once. Letters widen the space: 8 characters from 62 make
//! 2×10^14, far beyond the budget.

use crate::ClientError;
use serde::{Deserialize, Serialize};
use yunkey_crypto::seal::SealKey;
use zeroize::Zeroizing;

/// The shortest PIN (or passphrase) a new key accepts, from the budget above.
pub const MIN_SECRET_LEN: usize = 8;

/// Argon2id (version 0x13) parameters, stored in each key file so that a file keeps opening
/// after the defaults change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory, KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub passes: u32,
    /// Lanes (the derivation runs them on one thread here; an attacker may use more).
    pub lanes: u32,
}

/// Bounds a stored parameter set must satisfy: a file cannot make the device allocate more
/// than 1 GiB or spin for minutes.
const MAX_MEMORY_KIB: u32 = 1024 * 1024;
const MAX_PASSES: u32 = 32;
const MAX_LANES: u32 = 8;

impl KdfParams {
    /// What new keys get: at least 0.415 s a guess on one core (module doc).
    pub const RECOMMENDED: KdfParams = KdfParams {
        memory_kib: 256 * 1024,
        passes: 3,
        lanes: 1,
    };

    /// What format-1 key files used (the argon2 crate's defaults, about 70 ms a guess); such
    /// files are re-sealed with [`KdfParams::RECOMMENDED`] at their next successful unlock.
    pub const FORMAT_1: KdfParams = KdfParams {
        memory_kib: 19 * 1024,
        passes: 2,
        lanes: 1,
    };

    /// Cheap parameters for tests only: a guess costs well under a millisecond. Nothing picks
    /// them implicitly; a test passes them in [`super::FileKeystoreOptions`].
    pub const INSECURE_TEST_ONLY: KdfParams = KdfParams {
        memory_kib: 64,
        passes: 1,
        lanes: 1,
    };

    /// Memory × passes: the work one guess takes, to compare parameter sets.
    pub fn work(&self) -> u64 {
        u64::from(self.memory_kib) * u64::from(self.passes)
    }

    fn argon2(&self) -> Result<argon2::Argon2<'static>, ClientError> {
        if self.memory_kib > MAX_MEMORY_KIB
            || self.passes == 0
            || self.passes > MAX_PASSES
            || self.lanes == 0
            || self.lanes > MAX_LANES
        {
            return Err(ClientError::Keystore(format!(
                "key-derivation parameters out of bounds: {self:?} (at most {MAX_MEMORY_KIB} KiB, \
                 1 to {MAX_PASSES} passes, 1 to {MAX_LANES} lanes)"
            )));
        }
        let params = argon2::Params::new(self.memory_kib, self.passes, self.lanes, Some(32))
            .map_err(|e| {
                ClientError::Keystore(format!("key-derivation parameters {self:?}: {e}"))
            })?;
        Ok(argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        ))
    }

    /// Derives the key that seals the device key from `secret` and `salt`: one guess.
    pub fn derive(&self, secret: &[u8], salt: &[u8]) -> Result<SealKey, ClientError> {
        let mut out = Zeroizing::new([0u8; 32]);
        self.argon2()?
            .hash_password_into(secret, salt, &mut out[..])
            .map_err(|e| ClientError::Keystore(format!("key derivation: {e}")))?;
        SealKey::from_bytes(&out[..]).map_err(|e| ClientError::Keystore(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_1_params_are_the_argon2_defaults() {
        // Format-1 files were sealed with `Argon2::default()`: the migration must derive the
        // same key from them.
        let mut old = [0u8; 32];
        argon2::Argon2::default()
            .hash_password_into(b"1234", b"saltsaltsaltsalt", &mut old)
            .unwrap();
        let new = KdfParams::FORMAT_1
            .derive(b"1234", b"saltsaltsaltsalt")
            .unwrap();
        assert_eq!(new.expose(), &old);
    }

    #[test]
    fn stored_params_are_bounded() {
        let huge = KdfParams {
            memory_kib: 4 * 1024 * 1024,
            ..KdfParams::RECOMMENDED
        };
        assert!(huge.derive(b"x", b"saltsaltsaltsalt").is_err());
        let zero = KdfParams {
            passes: 0,
            ..KdfParams::INSECURE_TEST_ONLY
        };
        assert!(zero.derive(b"x", b"saltsaltsaltsalt").is_err());
    }

    #[test]
    fn budget_arithmetic_holds() {
        // The module doc's claim: an all-digit PIN of MIN_SECRET_LEN at 0.415 s a guess takes
        // 8 cores at least 30 days on average.
        let guesses = 10f64.powi(MIN_SECRET_LEN as i32) / 2.0;
        let days = guesses * 0.415 / 8.0 / 86_400.0;
        assert!(days >= 30.0, "{days} days");
    }
}
