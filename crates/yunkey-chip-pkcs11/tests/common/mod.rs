//! SoftHSM2 for the tests: one token directory per test binary, with a stock of fresh tokens
//! made by `softhsm2-util` before the module is loaded (SoftHSM2 reads its token directory
//! once, at `C_Initialize`, so tokens made later are not seen by this process).
//!
//! Without SoftHSM2 the tests fail, saying to install it: CI installs it (`.ci/run`).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use yunkey_chip::{ActivationModule, ChipConfig};
use yunkey_chip_pkcs11::{Pin, Pkcs11Chip, Pkcs11Options, TokenSelector};

/// Tokens made per test binary; each `fresh_token` takes one.
const TOKENS: usize = 32;
/// The user PIN of every test token.
pub const PIN: &str = "4711-test-pin";
const SO_PIN: &str = "so-test-pin";

/// Where Debian and others put the module; `YUNKEY_PKCS11_MODULE` overrides.
const MODULE_PATHS: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

/// The test SoftHSM2 of this process.
pub struct SoftHsm {
    /// The module's path.
    pub module: PathBuf,
    /// Scratch space for chip directories.
    pub dir: PathBuf,
    next: AtomicUsize,
}

fn missing(what: &str) -> ! {
    panic!(
        "SoftHSM2 is needed by the PKCS#11 chip tests and {what}: install it \
         (Debian/Ubuntu: `apt-get install -y softhsm2`; .ci/run does this), or set \
         YUNKEY_PKCS11_MODULE to the path of libsofthsm2.so"
    )
}

/// The process's SoftHSM2, set up on first use.
pub fn softhsm() -> &'static SoftHsm {
    static HSM: OnceLock<SoftHsm> = OnceLock::new();
    HSM.get_or_init(|| {
        let module = match std::env::var_os("YUNKEY_PKCS11_MODULE") {
            Some(path) => PathBuf::from(path),
            None => MODULE_PATHS
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
                .unwrap_or_else(|| missing("its module libsofthsm2.so was not found")),
        };
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_stem().unwrap().to_string_lossy().into_owned();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("softhsm-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tokens")).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.join("tokens").display()
            ),
        )
        .unwrap();
        // Before any PKCS#11 module is loaded in this process: SoftHSM2 reads it then.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        for i in 0..TOKENS {
            let out = Command::new("softhsm2-util")
                .args(["--init-token", "--free", "--label", &format!("yk-test-{i}")])
                .args(["--so-pin", SO_PIN, "--pin", PIN])
                .env("SOFTHSM2_CONF", &conf)
                .output()
                .unwrap_or_else(|e| missing(&format!("softhsm2-util could not run ({e})")));
            assert!(
                out.status.success(),
                "softhsm2-util --init-token failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        SoftHsm {
            module,
            dir,
            next: AtomicUsize::new(0),
        }
    })
}

impl SoftHsm {
    /// Options for a token no other test used, by label.
    pub fn fresh_token(&self) -> Pkcs11Options {
        let i = self.next.fetch_add(1, Ordering::SeqCst);
        assert!(
            i < TOKENS,
            "the test SoftHSM2 has only {TOKENS} tokens; raise TOKENS"
        );
        self.options(TokenSelector::Label(format!("yk-test-{i}")))
    }

    /// Options for the token `token`.
    pub fn options(&self, token: TokenSelector) -> Pkcs11Options {
        Pkcs11Options::new(&self.module, token, Pin::new(PIN))
    }

    /// A fresh directory for a chip.
    pub fn chip_dir(&self, name: &str) -> PathBuf {
        let dir = self.dir.join("chips").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

/// A chip config for tests.
pub fn config(chip_id: &str) -> ChipConfig {
    ChipConfig {
        chip_id: chip_id.into(),
        capacity: 8,
        zone: "zone-a".into(),
    }
}

/// A fresh PKCS#11 chip on a fresh token, in a fresh directory.
pub fn fresh_chip(name: &str) -> ActivationModule {
    let hsm = softhsm();
    Pkcs11Chip::open(hsm.chip_dir(name), config(name), hsm.fresh_token()).expect("PKCS#11 chip")
}
