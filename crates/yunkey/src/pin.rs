//! Where the PIN comes from: `--pin-file`, else `YUNKEY_PIN`, else a prompt, but only when
//! standard input is a terminal; a script never hangs on a prompt.

use anyhow::{bail, Context};
use std::io::IsTerminal;
use std::path::Path;
use zeroize::Zeroizing;

/// A PIN, wiped from memory when dropped.
pub type Secret = Zeroizing<String>;

/// The user's PIN.
pub fn read(pin_file: Option<&Path>) -> anyhow::Result<Secret> {
    if let Some(path) = pin_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading PIN file {}", path.display()))?;
        return non_empty(text.trim_end_matches(['\n', '\r']).to_owned());
    }
    if let Ok(pin) = std::env::var("YUNKEY_PIN") {
        return non_empty(pin);
    }
    if std::io::stdin().is_terminal() {
        return non_empty(rpassword::prompt_password("PIN: ").context("reading the PIN")?);
    }
    bail!("a PIN is needed: set YUNKEY_PIN or pass --pin-file (standard input is not a terminal)")
}

fn non_empty(pin: String) -> anyhow::Result<Secret> {
    if pin.is_empty() {
        bail!("the PIN is empty");
    }
    Ok(Zeroizing::new(pin))
}
