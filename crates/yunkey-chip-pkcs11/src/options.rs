//! How to reach a token: the module, the token, the user PIN.

use cryptoki::types::AuthPin;
use std::fmt;
use std::path::{Path, PathBuf};
use yunkey_chip::ChipError;
use zeroize::Zeroizing;

/// Which token of the module to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    /// The PKCS#11 slot id, as `softhsm2-util --show-slots` or `pkcs11-tool -L` print it.
    Slot(u64),
    /// The token label (`softhsm2-util --init-token --label ...`).
    Label(String),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSelector::Slot(id) => write!(f, "slot {id}"),
            TokenSelector::Label(label) => write!(f, "token label {label:?}"),
        }
    }
}

/// The token's user PIN. Wiped on drop, never printed.
pub struct Pin(AuthPin);

impl Pin {
    /// A PIN from a string (tests; production reads it from a file).
    pub fn new(pin: impl Into<String>) -> Self {
        Self(AuthPin::from(pin.into()))
    }

    /// Reads the PIN from `path`: the file's first line, without its line end. Warns if the
    /// file is readable by group or others (it should be mode 0600).
    pub fn from_file(path: &Path) -> Result<Self, ChipError> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| ChipError::storage("reading the PKCS#11 PIN file", e))?,
        );
        let line = text.lines().next().unwrap_or("");
        if line.is_empty() {
            return Err(ChipError::storage(
                "reading the PKCS#11 PIN file",
                format!("{} is empty", path.display()),
            ));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        "the PKCS#11 PIN file is readable by group or others; make it mode 0600"
                    );
                }
            }
        }
        Ok(Self::new(line.to_owned()))
    }

    pub(crate) fn auth(&self) -> &AuthPin {
        &self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

/// Everything [`crate::Pkcs11Custody::open`] needs.
#[derive(Debug)]
pub struct Pkcs11Options {
    /// The PKCS#11 module (shared library), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token.
    pub token: TokenSelector,
    /// The user PIN.
    pub pin: Pin,
    /// How many idle sessions to keep open for reuse (more may be open while busy).
    pub idle_sessions: usize,
}

impl Pkcs11Options {
    /// Options with the default session pool.
    pub fn new(module: impl Into<PathBuf>, token: TokenSelector, pin: Pin) -> Self {
        Self {
            module: module.into(),
            token,
            pin,
            idle_sessions: 8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_file_first_line_and_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "s3cret-pin\n").unwrap();
        let pin = Pin::from_file(&path).unwrap();
        assert!(!format!("{pin:?}").contains("s3cret"));
        std::fs::write(&path, "\n").unwrap();
        assert!(Pin::from_file(&path).is_err());
        assert!(Pin::from_file(&dir.path().join("missing")).is_err());
    }
}
