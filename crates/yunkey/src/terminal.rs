//! `yunkey terminal ...`: the CLI plays the user's phone.

use crate::cli::{Global, TerminalCommand, TerminalOpts};
use crate::connect;
use crate::output::{cert_pem, pem, print};
use crate::pin::PinVerifier;
use anyhow::Context;
use serde_json::json;
use std::io::IsTerminal;
use std::path::PathBuf;
use yunkey_client::keystore::{FileKeystore, FileKeystoreOptions, Keystore as _};
use yunkey_client::terminal;

fn keystore(opts: &TerminalOpts) -> anyhow::Result<FileKeystore> {
    let dir = match &opts.keystore {
        Some(d) => d.clone(),
        None => {
            let home = std::env::var_os("HOME").context("HOME is not set; pass --keystore DIR")?;
            PathBuf::from(home).join(".yunkey").join("keystore")
        }
    };
    Ok(FileKeystore::open_with(
        &dir,
        FileKeystoreOptions {
            max_failures: opts.max_pin_failures,
            ..FileKeystoreOptions::default()
        },
    )?)
}

/// `yunkey terminal ...`.
pub async fn run(g: &Global, cmd: &TerminalCommand) -> anyhow::Result<()> {
    // The executable is checked against its release manifest before anything else.
    let release = crate::self_check::check(cmd.opts().release_manifest.as_deref())?;
    let mut conn = connect::device(g)?;
    if let Some(r) = &release {
        conn = conn.with_release_id(r.release_id.clone());
    }
    match cmd {
        TerminalCommand::Register {
            user,
            activation_code,
            algorithm,
            name,
            opts,
        } => {
            let ks = keystore(opts)?;
            let verifier = PinVerifier::new(opts.pin_file.as_deref());
            let resp = terminal::register(
                &conn,
                &ks,
                user,
                activation_code.trim(),
                &verifier,
                name,
                (*algorithm).into(),
            )
            .await?;
            let device = resp.device.context("server returned no device")?;
            print(
                g.json,
                json!({
                    "user_id": user,
                    "device_id": device.device_id,
                    "device_certificate": cert_pem(&device.certificate),
                }),
                || format!("registered device {} for {user}", device.device_id),
            );
        }
        TerminalCommand::Pay {
            user,
            payer,
            payee,
            amount,
            currency,
            ttl,
            save,
            yes,
            face,
            location,
            opts,
        } => {
            let ks = keystore(opts)?;
            if let (Some(r), Some(device)) = (&release, ks.device(user)?) {
                crate::self_check::check_device(r, &device.certificate)?;
            }
            let now = terminal::server_time(&conn).await?;
            let tx = terminal::new_transaction(
                payer.as_deref().unwrap_or(user),
                payee,
                amount,
                currency,
                now,
                *ttl,
            )?;
            let canonical = yunkey_crypto::tx::encode(&tx).map_err(|e| anyhow::anyhow!("{e}"))?;
            // What you see is what you sign: the exact bytes the authorization binds are shown
            // before the user is verified, and confirmed when a person is at the terminal.
            show_and_confirm(&canonical, now, *yes)?;
            let verifier = PinVerifier::new(opts.pin_file.as_deref());
            let key = ks.unlock(user, &verifier)?;
            let channel =
                connect::device_channel(g, terminal::device_identity(&ks, user, key.clone())?)?
                    .with_release_id(conn.release_id());
            let options = terminal::PayOptions {
                face: face
                    .as_deref()
                    .map(|p| {
                        std::fs::read(p)
                            .with_context(|| format!("reading the face photo {}", p.display()))
                    })
                    .transpose()?,
                location: *location,
            };
            let resp = terminal::pay(&channel, &ks, user, &*key, tx.clone(), &options).await?;
            let chain: String = resp.certificate_chain.iter().map(|c| cert_pem(c)).collect();
            if let Some(dir) = save {
                save_receipt(dir, &canonical, &resp)?;
            }
            print(
                g.json,
                json!({
                    "user_id": user,
                    "transaction_id": tx.transaction_id,
                    "canonical_transaction": String::from_utf8_lossy(&canonical),
                    "tx_hash": hex::encode(&resp.tx_hash),
                    "signature": hex::encode(&resp.signature),
                    "certificate_chain": chain,
                    "chip_id": resp.chip_id,
                }),
                || {
                    format!(
                        "paid {} {} to {payee} ({})\ntx_hash:   {}\nsignature: {}\nsigned by chip {}",
                        tx.amount,
                        tx.currency,
                        tx.transaction_id,
                        hex::encode(&resp.tx_hash),
                        hex::encode(&resp.signature),
                        resp.chip_id
                    )
                },
            );
        }
        TerminalCommand::Renew { user, opts } => {
            let ks = keystore(opts)?;
            let key = ks.unlock(user, &PinVerifier::new(opts.pin_file.as_deref()))?;
            let channel = connect::device_channel(g, terminal::device_identity(&ks, user, key)?)?
                .with_release_id(conn.release_id());
            let resp = terminal::renew(&channel, &ks, user).await?;
            let device = resp.device.context("server returned no device")?;
            print(
                g.json,
                json!({
                    "user_id": user,
                    "device_id": device.device_id,
                    "device_certificate": cert_pem(&device.certificate),
                    "certificate_expires_at": device.certificate_expires_at,
                }),
                || {
                    format!(
                        "renewed the certificate of device {} for {user}; valid until Unix time {}",
                        device.device_id, device.certificate_expires_at
                    )
                },
            );
        }
    }
    Ok(())
}

/// Shows the canonical transaction (the bytes whose SHA-256 the device authorizes) on standard
/// error, and, when standard input is a terminal and `yes` is not given, asks for a yes before
/// anything is signed.
fn show_and_confirm(canonical: &[u8], now: i64, yes: bool) -> anyhow::Result<()> {
    let text = String::from_utf8_lossy(canonical);
    let mut shown = String::from("about to authorize exactly this transaction:\n");
    for line in text.lines() {
        shown.push_str("  ");
        shown.push_str(line);
        if let Some(at) = line
            .strip_prefix("expires_at:")
            .and_then(|t| t.parse::<i64>().ok())
        {
            shown.push_str(&format!("  (in {} s by the server's clock)", at - now));
        }
        shown.push('\n');
    }
    eprint!("{shown}");
    if !yes && std::io::stdin().is_terminal() {
        eprint!("sign it? [y/N] ");
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .context("reading the confirmation")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            anyhow::bail!("not signed: the transaction was not confirmed");
        }
    }
    Ok(())
}

/// Writes what a business needs to check a payment with OpenSSL, and `verify.sh` with the
/// commands (run in the directory).
fn save_receipt(
    dir: &std::path::Path,
    canonical: &[u8],
    resp: &yunkey_proto::v1::SignResponse,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |name: &str, data: &[u8]| {
        std::fs::write(dir.join(name), data)
            .with_context(|| format!("writing {}", dir.join(name).display()))
    };
    write("transaction.txt", canonical)?;
    write("signature.der", &resp.signature)?;
    let (user, ca) = match resp.certificate_chain.as_slice() {
        [user, ca, ..] => (user, ca),
        _ => anyhow::bail!("the server returned no certificate chain (user and CA)"),
    };
    write("user.pem", cert_pem(user).as_bytes())?;
    write("ca.pem", cert_pem(ca).as_bytes())?;
    let chain: String = resp.certificate_chain.iter().map(|c| cert_pem(c)).collect();
    write("chain.pem", chain.as_bytes())?;
    let cert = <x509_cert::Certificate as der::Decode>::from_der(user)
        .context("the user certificate does not parse")?;
    let spki = der::Encode::to_der(&cert.tbs_certificate.subject_public_key_info)?;
    write("user-pub.pem", pem("PUBLIC KEY", &spki).as_bytes())?;
    // SM2: the payment is signed under the user's distinguishing ID; certificates under the
    // default one (GM/T 0015), which OpenSSL 3.0 needs spelled out (it defaults to an empty
    // ID; 4.0 to the default).
    let (digest, chain_opt) = if resp.distinguishing_id.is_empty() {
        ("-sha256".to_owned(), String::new())
    } else {
        (
            format!("-sm3 -sigopt distid:{}", resp.distinguishing_id),
            format!("-vfyopt distid:{} ", yunkey_crypto::sm2::DEFAULT_DISTID),
        )
    };
    let script = format!(
        "#!/bin/sh\n# Checks this payment's signature and the user's certificate with OpenSSL.\n\
         # Compare ca.pem with the cluster's user CA (yunkey status) before trusting it.\n\
         set -e\ncd \"$(dirname \"$0\")\"\n\
         openssl dgst {digest} -verify user-pub.pem -signature signature.der transaction.txt\n\
         openssl verify {chain_opt}-CAfile ca.pem user.pem\n"
    );
    write("verify.sh", script.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("verify.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .with_context(|| format!("making {} executable", dir.join("verify.sh").display()))?;
    }
    Ok(())
}
