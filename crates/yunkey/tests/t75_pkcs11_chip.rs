//! A mixed fleet as processes: one soft `yunkey chip` and one `yunkey chip --backend pkcs11`
//! on a SoftHSM2 token, under a coordinator. A user enrolled with R = 2 has a key on each; it
//! signs through either chip, and keeps signing when either one is killed.
//!
//! Needs SoftHSM2 (`softhsm2-util` and its module): the test fails, saying to install it, when
//! it is missing; `.ci/run` installs it.

mod common;

use common::{pki_cli, transaction, Cluster, Proc, TestDevice, READY};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use yunkey_client::{key_client, terminal_client, Connection, ConnectionOptions};
use yunkey_crypto::authz;
use yunkey_crypto::ecdsa::{PrivateKey, PublicKey};
use yunkey_net::pki::files;
use yunkey_net::TlsFiles;
use yunkey_proto::v1::{EnrollUserRequest, RegisterDeviceRequest};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "chip-hsm-user-pin";

/// A SoftHSM2 configuration with one token, `chip-hsm`, in `dir`; returns the config file.
fn softhsm_token(dir: &Path) -> PathBuf {
    let missing = |what: &str| -> ! {
        panic!(
            "this test needs SoftHSM2 and {what}: install it (Debian/Ubuntu: \
             `apt-get install -y softhsm2`; .ci/run does this)"
        )
    };
    if !Path::new(MODULE).exists() {
        missing(&format!("{MODULE} is missing"));
    }
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
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "chip-hsm"])
        .args(["--so-pin", "chip-hsm-so-pin", "--pin", PIN])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap_or_else(|e| missing(&format!("softhsm2-util could not run ({e})")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    conf
}

/// Runs `yunkey chip --id ID` on `listen` with the `backend` flags (none for soft).
fn spawn_chip(cluster: &Cluster, id: &str, zone: &str, listen: &str, backend: &[String]) -> Proc {
    let data = cluster.dir.path().join(id);
    let mut args: Vec<String> = [
        "--data",
        data.to_str().unwrap(),
        "chip",
        "--id",
        id,
        "--zone",
        zone,
        "--listen",
        listen,
        "--tls-dir",
        cluster.node_tls(id).to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend_from_slice(backend);
    Proc::spawn(id, &args)
}

/// The flags of a chip on the `chip-hsm` token.
fn pkcs11_flags(pin_file: &Path) -> Vec<String> {
    [
        "--backend",
        "pkcs11",
        "--module",
        MODULE,
        "--token-label",
        "chip-hsm",
        "--pin-file",
        pin_file.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The operator admits chip `id` (signs the `identity.json` it wrote).
fn admit(cluster: &Cluster, id: &str) {
    pki_cli(&[
        "admit-chip",
        "--domain-operator-key",
        cluster.operator_key().to_str().unwrap(),
        "--identity",
        cluster
            .dir
            .path()
            .join(id)
            .join("identity.json")
            .to_str()
            .unwrap(),
    ]);
}

/// A DER certificate as PEM.
fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// OpenSSL checks `signature` over `message` with the key of the certificate `cert_pem`.
fn openssl_verifies(cert_pem: &str, message: &[u8], signature: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("user.pem"), cert_pem).unwrap();
    std::fs::write(dir.path().join("tx.txt"), message).unwrap();
    std::fs::write(dir.path().join("sig.der"), signature).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("openssl is installed");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, out) = run(&[
        "x509", "-in", "user.pem", "-pubkey", "-noout", "-out", "pub.pem",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = run(&[
        "dgst",
        "-sha256",
        "-verify",
        "pub.pem",
        "-signature",
        "sig.der",
        "tx.txt",
    ]);
    assert!(ok && out.contains("Verified OK"), "OpenSSL: {out}");
}

fn connect(endpoint: &str, tls: yunkey_net::tls::TlsMaterial) -> Connection {
    Connection::new(&ConnectionOptions {
        endpoints: vec![endpoint.to_owned()],
        tls,
        domain: None,
        deadline: Duration::from_secs(10),
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_and_a_pkcs11_chip_hold_one_user_and_fail_over() {
    let mut cluster = Cluster::new();
    // The chip processes inherit it: SoftHSM2 reads its configuration from SOFTHSM2_CONF.
    std::env::set_var(
        "SOFTHSM2_CONF",
        softhsm_token(&cluster.dir.path().join("softhsm")),
    );
    let pin_file = cluster.dir.path().join("chip-hsm.pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    let listen = |_| format!("127.0.0.1:{}", common::free_port());
    let addrs: [String; 2] = [listen(0), listen(1)];
    let flags = [Vec::new(), pkcs11_flags(&pin_file)];
    let ids = ["chip-soft", "chip-hsm"];
    let start = |cluster: &Cluster, i: usize| {
        spawn_chip(cluster, ids[i], &format!("zone-{i}"), &addrs[i], &flags[i])
    };
    let mut chips: Vec<Proc> = (0..2).map(|i| start(&cluster, i)).collect();
    assert!(
        chips[1]
            .seen
            .iter()
            .any(|l| l.contains("keys in pkcs11:chip-hsm")),
        "{:?}",
        chips[1].seen
    );
    for id in ids {
        admit(&cluster, id);
    }
    let urls: Vec<String> = chips.iter().map(|c| c.endpoint.clone()).collect();
    let mut node = cluster.start_node(1, true, &urls);
    node.wait_line("ready", READY);

    let business = cluster.business(&[&node.endpoint]);
    let device_tls = TlsFiles {
        ca: cluster.pki.join(files::CA),
        cert: None,
        key: None,
    }
    .load()
    .unwrap();
    let device = connect(&node.endpoint, device_tls);

    // Enrol: R = 2 puts the key on both chips (one generates it, the other imports the copy).
    let enrolled = key_client(business.current_channel())
        .enroll_user(EnrollUserRequest {
            request_id: "enroll-alice".into(),
            user_id: "alice".into(),
            algorithm: 0,
            display_name: String::new(),
            distinguishing_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let user = enrolled.user.unwrap();
    let mut holders: Vec<&str> = user.holders.iter().map(|h| h.chip_id.as_str()).collect();
    holders.sort();
    assert_eq!(holders, ["chip-hsm", "chip-soft"]);
    let public = PublicKey::from_spki_der(&user.public_key).unwrap();
    let user_certificate = enrolled.certificate_chain[0].clone();

    let key = PrivateKey::generate();
    let spki = key.public_key().to_spki_der();
    let registered = terminal_client(device.current_channel())
        .register_device(RegisterDeviceRequest {
            request_id: String::new(),
            user_id: "alice".into(),
            proof: key.sign_message(&authz::registration_message(
                "alice",
                &enrolled.activation_code,
                &spki,
            )),
            activation_code: enrolled.activation_code,
            device_public_key: spki,
            device_name: "test phone".into(),
            release_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let registered = registered.device.unwrap();
    let phone = TestDevice {
        user_id: "alice".into(),
        device_id: registered.device_id,
        key: key.into(),
        certificate: registered.certificate,
    };

    let user_pem = pem_certificate(&user_certificate);
    let sign = |amount: String| {
        let business = business.clone();
        let public = public.clone();
        let user_pem = user_pem.clone();
        let tx = transaction("acct-alice", &amount);
        let canonical = yunkey_crypto::tx::encode(&tx).unwrap();
        let request = phone.sign_request("", tx);
        async move {
            let signed = key_client(business.current_channel())
                .sign(request)
                .await
                .unwrap_or_else(|e| panic!("signing {amount}: {e:?}"))
                .into_inner();
            let digest: [u8; 32] = signed.tx_hash.as_slice().try_into().unwrap();
            public
                .verify_digest(&digest, &signed.signature)
                .expect("the signature verifies under alice's key");
            openssl_verifies(&user_pem, &canonical, &signed.signature);
            signed.chip_id
        }
    };
    let first = sign("10".into()).await;
    let first = ids
        .iter()
        .position(|id| *id == first)
        .expect("a chip of the fleet signed");

    // Kill the chip that signed: the other one, of the other backend, signs. Then bring it
    // back on its data (and token), kill the other, and it signs again.
    chips[first].kill9();
    let other = 1 - first;
    assert_eq!(sign("11".into()).await, ids[other]);
    chips[first] = start(&cluster, first);
    chips[other].kill9();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut n = 12;
    loop {
        let request = phone.sign_request("", transaction("acct-alice", &n.to_string()));
        match key_client(business.current_channel()).sign(request).await {
            Ok(signed) => {
                assert_eq!(signed.into_inner().chip_id, ids[first]);
                break;
            }
            Err(e) if std::time::Instant::now() < deadline => {
                // Until the coordinator sees the restarted chip healthy again.
                assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
                n += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("the restarted {} never signed: {e:?}", ids[first]),
        }
    }
}
