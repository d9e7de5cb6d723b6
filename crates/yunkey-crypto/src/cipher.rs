//! The symmetric suites a deployment chooses between, for sealing key material at rest and for
//! the security domain's key wrapping:
//!
//! | [`Cipher`]  | sealing ([`crate::seal`]) | key wrap ([`crate::keywrap`]) | MAC         | derivation  |
//! |-------------|---------------------------|-------------------------------|-------------|-------------|
//! | `aes256`    | AES-256-GCM               | AES-256-KWP (RFC 5649)        | HMAC-SHA256 | HKDF-SHA256 |
//! | `sm4`       | SM4-GCM (RFC 8998)        | SM4-KWP                       | HMAC-SM3    | HKDF-SM3    |
//!
//! AES-256 is the default and what every store and domain made before this choice existed
//! uses. The choice of a domain or of a soft chip's sealing is made once, when it is created,
//! and fixed for its life.

use crate::CryptoError;
use std::fmt;
use std::str::FromStr;
use yunkey_proto::v1::DomainCipher;

/// A symmetric suite: a block cipher with the hash that goes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Cipher {
    /// AES-256 with SHA-256.
    #[default]
    Aes256,
    /// SM4 (GB/T 32907) with SM3 (GB/T 32905).
    Sm4,
}

impl Cipher {
    /// Every suite, in the order operators see them.
    pub const ALL: [Cipher; 2] = [Cipher::Aes256, Cipher::Sm4];

    /// One byte, for stored formats and envelopes.
    pub fn to_byte(self) -> u8 {
        match self {
            Cipher::Aes256 => 1,
            Cipher::Sm4 => 2,
        }
    }

    /// The inverse of [`Cipher::to_byte`].
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Cipher::Aes256),
            2 => Some(Cipher::Sm4),
            _ => None,
        }
    }

    /// The name operators type and read: `aes256` or `sm4`.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes256 => "aes256",
            Cipher::Sm4 => "sm4",
        }
    }

    /// Length of the block cipher's key in bytes (32 for AES-256, 16 for SM4).
    pub fn key_len(self) -> usize {
        match self {
            Cipher::Aes256 => 32,
            Cipher::Sm4 => 16,
        }
    }

    /// The protocol's `DomainCipher` value.
    pub fn to_proto(self) -> DomainCipher {
        match self {
            Cipher::Aes256 => DomainCipher::Aes256,
            Cipher::Sm4 => DomainCipher::Sm4,
        }
    }

    /// Reads the protocol's `DomainCipher`: unset is `None` (the reader decides what it means:
    /// AES-256 in a request, "no domain" in a chip's reply); an unknown value is an error.
    pub fn from_proto(value: i32) -> Result<Option<Self>, CryptoError> {
        match DomainCipher::try_from(value) {
            Ok(DomainCipher::Unspecified) => Ok(None),
            Ok(DomainCipher::Aes256) => Ok(Some(Cipher::Aes256)),
            Ok(DomainCipher::Sm4) => Ok(Some(Cipher::Sm4)),
            Err(_) => Err(CryptoError::Malformed("unknown DomainCipher value")),
        }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Cipher {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Cipher::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("{s:?}: expected aes256 or sm4"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_bytes_and_proto_round_trip() {
        for c in Cipher::ALL {
            assert_eq!(Cipher::from_byte(c.to_byte()), Some(c));
            assert_eq!(c.name().parse::<Cipher>(), Ok(c));
            assert_eq!(Cipher::from_proto(c.to_proto() as i32), Ok(Some(c)));
        }
        assert_eq!(Cipher::default(), Cipher::Aes256);
        assert_eq!(Cipher::from_byte(0), None);
        assert_eq!(Cipher::from_byte(3), None);
        assert!("AES"
            .parse::<Cipher>()
            .unwrap_err()
            .contains("aes256 or sm4"));
        assert_eq!(Cipher::from_proto(0), Ok(None));
        assert!(Cipher::from_proto(9).is_err());
    }
}
