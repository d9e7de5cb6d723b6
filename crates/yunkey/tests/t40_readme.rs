//! The README's walkthrough, run as printed (with the freshly built binary instead of
//! `cargo build --release`, and ephemeral ports through `YUNKEY_LISTEN`/`YUNKEY_METRICS`).

use std::path::Path;
use std::process::Command;

fn walkthrough() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let start = readme
        .find("<!-- walkthrough -->")
        .expect("README has a walkthrough block");
    let end = readme
        .find("<!-- /walkthrough -->")
        .expect("README walkthrough ends");
    let block = &readme[start..end];
    let code = block
        .split("```sh\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    assert!(
        code.starts_with("cargo build --release\nexport PATH="),
        "the walkthrough builds first"
    );
    code.lines().skip(2).collect::<Vec<_>>().join("\n")
}

#[test]
fn readme_walkthrough_works_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_yunkey")).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let script = format!("set -euo pipefail\n{}\nwait\n", walkthrough());
    let out = Command::new("bash")
        .args(["-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("HOME", dir.path())
        .env("YUNKEY_LISTEN", "127.0.0.1:0")
        .env("YUNKEY_METRICS", "off")
        .env("YUNKEY_LOG", "warn")
        .env_remove("YUNKEY_PIN")
        .env_remove("YUNKEY_DATA")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "walkthrough failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("Verified OK"), "{stdout}\n{stderr}");
    assert!(stdout.contains("receipt/user.pem: OK"), "{stdout}");
    assert!(stdout.contains("receipt-sm2/user.pem: OK"), "{stdout}");
    assert_eq!(stdout.matches("Verified OK").count(), 2, "{stdout}");
    assert!(stdout.contains("registered device dev-"), "{stdout}");
    assert!(stdout.contains("USER_STATUS_ACTIVE"), "{stdout}");
}
