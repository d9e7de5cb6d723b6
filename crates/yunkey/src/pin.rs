//! The CLI's user verification: a PIN from `--pin-file`, else `YUNKEY_PIN`, else a prompt, but
//! only when standard input is a terminal; a script never hangs on a prompt.

use anyhow::{bail, Context};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use yunkey_client::keystore::UserVerifier;
use yunkey_client::ClientError;
use zeroize::Zeroizing;

/// A PIN, wiped from memory when dropped.
pub type Secret = Zeroizing<String>;

/// The CLI's [`UserVerifier`]: asks for the PIN each time the keystore verifies the user.
#[derive(Debug, Clone)]
pub struct PinVerifier {
    pin_file: Option<PathBuf>,
}

impl PinVerifier {
    /// Reads the PIN from `pin_file` when given.
    pub fn new(pin_file: Option<&Path>) -> Self {
        Self {
            pin_file: pin_file.map(Path::to_owned),
        }
    }
}

impl UserVerifier for PinVerifier {
    fn verify(&self, prompt: &str) -> Result<Zeroizing<String>, ClientError> {
        read(self.pin_file.as_deref(), prompt)
            .map_err(|e| ClientError::Unverified(format!("{e:#}")))
    }
}

/// The user's PIN; `prompt` is shown when it is asked for at a terminal.
pub fn read(pin_file: Option<&Path>, prompt: &str) -> anyhow::Result<Secret> {
    if let Some(path) = pin_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading PIN file {}", path.display()))?;
        return non_empty(text.trim_end_matches(['\n', '\r']).to_owned());
    }
    if let Ok(pin) = std::env::var("YUNKEY_PIN") {
        return non_empty(pin);
    }
    if std::io::stdin().is_terminal() {
        return non_empty(
            rpassword::prompt_password(format!("{prompt}: ")).context("reading the PIN")?,
        );
    }
    bail!("a PIN is needed: set YUNKEY_PIN or pass --pin-file (standard input is not a terminal)")
}

fn non_empty(pin: String) -> anyhow::Result<Secret> {
    if pin.is_empty() {
        bail!("the PIN is empty");
    }
    Ok(Zeroizing::new(pin))
}
