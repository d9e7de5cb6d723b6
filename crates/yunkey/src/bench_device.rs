//! `yunkey bench device-channel`: what the device channel costs beside the business path, on a
//! running cluster. Three ways of getting the same authorized signature, each measured at every
//! `--concurrency` level:
//! - **new session**: every signature over a new connection: TCP, a full TLS 1.3 handshake with
//!   the device certificate (signed by the device key), then `TerminalService.SignTransaction`;
//! - **kept connection**: `SignTransaction` over one device-channel connection per device;
//! - **business path**: `KeyService.Sign` over a kept business connection (the reference).
//!
//! Every signature is the whole path: device authorization, the Raft ledger, the chip's
//! re-check and signature.

use crate::bench::{setup_users, sign_request, BenchUser};
use crate::cli::{DeviceChannelBenchArgs, Global};
use crate::connect;
use crate::load::{self, Level};
use crate::output::print;
use anyhow::bail;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use yunkey_client::keystore::SoftDeviceKey;
use yunkey_client::{key_client, terminal_client, Connection};
use yunkey_net::device_tls::DeviceIdentity;

fn identity(u: &BenchUser) -> anyhow::Result<DeviceIdentity> {
    Ok(yunkey_client::terminal::identity(
        u.certificate.clone(),
        Arc::new(SoftDeviceKey::new(u.key.clone())),
    ))
}

/// `yunkey bench device-channel`.
pub async fn run(g: &Global, args: &DeviceChannelBenchArgs) -> anyhow::Result<()> {
    if args.users == 0 || args.concurrency.is_empty() || args.seconds == 0 {
        bail!("--users, --seconds and --concurrency must be positive");
    }
    let business = connect::business(g)?;
    let (users, _) = setup_users(
        &business,
        &connect::device(g)?,
        args.users,
        yunkey_crypto::sig::Algorithm::EcdsaP256,
    )
    .await?;
    let identities = users
        .iter()
        .map(identity)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let kept = identities
        .iter()
        .map(|id| connect::device_channel(g, id.clone()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let users = Arc::new(users);
    let identities = Arc::new(identities);
    let window = Duration::from_secs(args.seconds);
    // Distinct transactions across workers and modes: worker w's call i signs sequence
    // w * 10^9 + i, offset per mode.
    let seq = |mode: u64, w: usize, i: u64| mode * 1_000_000_000_000 + w as u64 * 1_000_000_000 + i;

    let mut rows: Vec<(&str, Level)> = Vec::new();
    for &c in &args.concurrency {
        let c = c.max(1);
        // New session per signature.
        let level = load::run_level(c, window, |w| {
            let (users, identities, g) = (users.clone(), identities.clone(), g.clone());
            move |i: u64| {
                let n = users.len();
                let k = (w + i as usize * c) % n;
                let req = sign_request(&users[k], seq(1, w, i));
                let conn = connect::device_channel(&g, identities[k].clone());
                async move {
                    let conn: Connection =
                        conn.map_err(|e| tonic::Status::internal(e.to_string()))?;
                    terminal_client(conn.current_channel())
                        .sign_transaction(req)
                        .await
                        .map(|_| 1)
                }
            }
        })
        .await?;
        rows.push(("new session", level));
        // Kept device-channel connection.
        let level = load::run_level(c, window, |w| {
            let (users, kept) = (users.clone(), kept.clone());
            move |i: u64| {
                let k = (w + i as usize * c) % users.len();
                let req = sign_request(&users[k], seq(2, w, i));
                let channel = kept[k].current_channel();
                async move {
                    terminal_client(channel)
                        .sign_transaction(req)
                        .await
                        .map(|_| 1)
                }
            }
        })
        .await?;
        rows.push(("kept connection", level));
        // The business path.
        let level = load::run_level(c, window, |w| {
            let (users, business) = (users.clone(), business.clone());
            move |i: u64| {
                let k = (w + i as usize * c) % users.len();
                let req = sign_request(&users[k], seq(3, w, i));
                let channel = business.current_channel();
                async move { key_client(channel).sign(req).await.map(|_| 1) }
            }
        })
        .await?;
        rows.push(("business path", level));
    }
    for (mode, level) in &rows {
        if let Some(e) = &level.first_error {
            eprintln!(
                "bench: {mode} at concurrency {}: first error: {e}",
                level.concurrency
            );
        }
    }
    print(
        g.json,
        json!({
            "users": args.users,
            "seconds": args.seconds,
            "levels": rows.iter().map(|(mode, l)| {
                let mut v = l.json("signatures_per_second");
                v["mode"] = json!(mode);
                v
            }).collect::<Vec<_>>(),
        }),
        || {
            let mut out = String::from(
                "mode             concurrency  signatures/s  p50 ms  p99 ms  errors\n",
            );
            for (mode, l) in &rows {
                out.push_str(&format!(
                    "{mode:<15}  {:>11}  {:>12.0}  {:>6.2}  {:>6.2}  {:>6}\n",
                    l.concurrency, l.rate, l.p50_ms, l.p99_ms, l.errors
                ));
            }
            out
        },
    );
    Ok(())
}
