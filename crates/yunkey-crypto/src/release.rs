//! Releases of the terminal software: the message a code-signing key signs, the release id
//! derived from it, and the version numbers a release policy compares.
//!
//! ```text
//! yunkey-release/1\nversion:<MAJOR.MINOR.PATCH>\nsha256:<64 lower-case hex>\n
//! ```
//! The code-signing key (purpose CODE_SIGNING, in chips) signs ECDSA P-256 over the SHA-256 of
//! these bytes, and signs nothing else; the release id is `rel-` followed by the first 20 hex
//! digits of that same SHA-256, so one version of one file has exactly one id.

use crate::validate::InvalidField;
use crate::Digest;
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// First line of a release manifest message.
pub const RELEASE_HEADER: &str = "yunkey-release/1";

/// A release version, `MAJOR.MINOR.PATCH`, compared numerically part by part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl Version {
    /// Parses `MAJOR.MINOR.PATCH` (decimal, no sign, no leading zeros, each below 2^32);
    /// `field` names the request field in the error.
    pub fn parse(field: &'static str, text: &str) -> Result<Self, InvalidField> {
        let bad = |why: &str| {
            InvalidField::new(
                field,
                format!("{text:?} {why}; give MAJOR.MINOR.PATCH, for example 1.4.0"),
            )
        };
        let parts: Vec<&str> = text.split('.').collect();
        if parts.len() != 3 {
            return Err(bad("does not have three dot-separated numbers"));
        }
        let mut n = [0u32; 3];
        for (i, p) in parts.iter().enumerate() {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("has a part that is not a decimal number"));
            }
            if p.len() > 1 && p.starts_with('0') {
                return Err(bad("has a part with a leading zero"));
            }
            n[i] = p.parse().map_err(|_| bad("has a part above 4294967295"))?;
        }
        Ok(Self {
            major: n[0],
            minor: n[1],
            patch: n[2],
        })
    }

    /// Compares two versions numerically.
    pub fn compare(&self, other: &Self) -> Ordering {
        self.cmp(other)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for Version {
    type Err = InvalidField;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse("version", s)
    }
}

/// The bytes a code-signing key signs for a release of the file whose SHA-256 is
/// `file_sha256`.
pub fn manifest_message(version: &Version, file_sha256: &Digest) -> Vec<u8> {
    format!(
        "{RELEASE_HEADER}\nversion:{version}\nsha256:{}\n",
        hex::encode(file_sha256)
    )
    .into_bytes()
}

/// The release id of a manifest message: `rel-` and the first 20 hex digits of its SHA-256.
pub fn release_id(message: &[u8]) -> String {
    format!("rel-{}", &hex::encode(crate::sha256(message))[..20])
}

/// Parses a manifest message back into its version and file hash; `None` unless `message` is
/// exactly what [`manifest_message`] makes (so a chip signs only this form).
pub fn parse_manifest_message(message: &[u8]) -> Option<(Version, Digest)> {
    let text = std::str::from_utf8(message).ok()?;
    let rest = text.strip_prefix(RELEASE_HEADER)?.strip_prefix('\n')?;
    let rest = rest.strip_prefix("version:")?;
    let (version, rest) = rest.split_once('\n')?;
    let hash = rest.strip_prefix("sha256:")?.strip_suffix('\n')?;
    let version = Version::parse("version", version).ok()?;
    if hash.len() != 64
        || hash
            .bytes()
            .any(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let digest: Digest = hex::decode(hash).ok()?.try_into().ok()?;
    (manifest_message(&version, &digest) == message).then_some((version, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        let v = |s: &str| Version::parse("v", s).unwrap();
        assert!(v("1.10.0") > v("1.9.9"));
        assert!(v("2.0.0") > v("1.99.99"));
        assert!(v("0.1.2") < v("0.1.10"));
        assert_eq!(v("3.0.1").to_string(), "3.0.1");
        for bad in [
            "1.2",
            "1.2.3.4",
            "1.02.3",
            "a.b.c",
            "1..3",
            "-1.2.3",
            "1.2.3 ",
            "",
            "99999999999.0.0",
            "+1.2.3",
        ] {
            let e = Version::parse("version", bad).unwrap_err();
            assert!(e.to_string().contains("MAJOR.MINOR.PATCH"), "{bad}: {e}");
        }
    }

    #[test]
    fn message_and_id_are_stable() {
        let m = manifest_message(&Version::parse("v", "1.2.3").unwrap(), &[7u8; 32]);
        assert_eq!(
            String::from_utf8(m.clone()).unwrap(),
            format!(
                "yunkey-release/1\nversion:1.2.3\nsha256:{}\n",
                "07".repeat(32)
            )
        );
        let id = release_id(&m);
        assert_eq!(id.len(), 24);
        assert!(id.starts_with("rel-"));
        assert_eq!(
            parse_manifest_message(&m),
            Some((Version::parse("v", "1.2.3").unwrap(), [7u8; 32]))
        );
        // Anything but that exact form is not a manifest message.
        let mut other = m.clone();
        other.push(b'\n');
        assert_eq!(parse_manifest_message(&other), None);
        assert_eq!(parse_manifest_message(b"yunkey-authz/1\nuser_id:a\n"), None);
        let upper = String::from_utf8(m).unwrap().replace("07", "0A");
        assert_eq!(parse_manifest_message(upper.as_bytes()), None);
    }
}
