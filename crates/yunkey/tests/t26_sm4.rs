//! SM4 instead of AES-256 (docs/security.md, "SM4: sealing and domain wrapping"), through the
//! real binary: a dev cluster whose security domain wraps keys with SM4 and whose soft chips
//! seal with SM4-GCM enrols, registers and pays, keeps its ciphers across a restart and refuses
//! to be restarted with the other; coordinators refuse to admit chips to a domain of another
//! cipher than the one they are configured for, before the chip joins.

mod common;

use common::{enroll_on, json, onboard, pay_output, Cluster, Dev, READY};
use std::path::Path;
use std::time::{Duration, Instant};
use yunkey_proto::v1 as pb;
use yunkey_proto::v1::chip_service_client::ChipServiceClient;
use yunkey_proto::v1::cluster_service_client::ClusterServiceClient;
use yunkey_proto::v1::key_service_client::KeyServiceClient;

fn pay(dev: &Dev, user: &str, keystore: &Path, amount: &str) {
    let paid = json(&pay_output(dev, user, keystore, amount));
    assert!(
        !paid["signature"].as_str().unwrap_or_default().is_empty(),
        "{paid}"
    );
}

/// Every chip of the dev cluster's `GetInfo`, asked with the node identity.
async fn chip_infos(dev: &Dev) -> Vec<pb::ChipInfo> {
    let chips = ClusterServiceClient::new(dev.as_node().current_channel())
        .list_chips(pb::ListChipsRequest {})
        .await
        .unwrap()
        .into_inner()
        .chips;
    let mut out = Vec::new();
    for chip in chips {
        let mut client = ChipServiceClient::new(dev.chip_as_node(&chip.endpoint).current_channel());
        out.push(
            client
                .get_info(pb::GetInfoRequest {})
                .await
                .unwrap()
                .into_inner(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sm4_dev_cluster_pays_and_keeps_its_ciphers() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cluster");
    let keystore = tmp.path().join("keystore");
    let mut dev = Dev::start_in_args(&data, &["--domain-cipher", "sm4"]);
    onboard(&dev, "alice", &keystore);
    pay(&dev, "alice", &keystore, "3.50");
    // Alice's key lives on two chips: it went from one to the other wrapped under SM4.
    let alice = KeyServiceClient::new(dev.business().current_channel())
        .get_user(pb::GetUserRequest {
            user_id: "alice".into(),
            consistency: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(alice.holders.len(), 2, "{alice:?}");
    let infos = chip_infos(&dev).await;
    assert_eq!(infos.len(), 3);
    let domain = infos[0].domain_id.clone();
    for info in &infos {
        assert_eq!(info.domain_id, domain);
        assert_eq!(
            info.domain_cipher,
            pb::DomainCipher::Sm4 as i32,
            "{}",
            info.chip_id
        );
        assert_eq!(info.custody, "soft (sealed with sm4)", "{}", info.chip_id);
    }
    dev.stop();

    // The ciphers are fixed: asking for AES-256 now is refused, naming both.
    let refused = Dev::start_refused(&data, &["--domain-cipher", "aes256"]);
    assert!(
        refused.contains("seals its records with sm4") && refused.contains("not aes256"),
        "{refused}"
    );

    // Without the flag the cluster starts as it was made, and alice still pays.
    let dev = Dev::start_in(&data);
    pay(&dev, "alice", &keystore, "4");
    for info in chip_infos(&dev).await {
        assert_eq!(info.domain_cipher, pb::DomainCipher::Sm4 as i32);
        assert_eq!(info.custody, "soft (sealed with sm4)");
    }
}

/// A chip's `GetInfo`, asked with coordinator 1's node identity.
async fn chip_info(cluster: &Cluster, endpoint: &str) -> pb::ChipInfo {
    ChipServiceClient::new(cluster.chip_as_node(1, endpoint).current_channel())
        .get_info(pb::GetInfoRequest {})
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinators_refuse_chips_to_a_domain_of_another_cipher() {
    let mut cluster = Cluster::new();
    // AES-sealed soft chips hold an SM4 domain as well: the two choices are independent.
    let chip1 = cluster.start_chip("chip-1", "zone-1");
    let chip2 = cluster.start_chip("chip-2", "zone-2");
    let mut n1 = cluster.start_node_with(
        1,
        true,
        std::slice::from_ref(&chip1.endpoint),
        &["--domain-cipher", "sm4"],
    );
    n1.wait_line("ready", READY);
    let first = chip_info(&cluster, &chip1.endpoint).await;
    assert_eq!(first.domain_cipher, pb::DomainCipher::Sm4 as i32);
    assert_eq!(first.custody, "soft");
    n1.stop();

    // Restarted for AES-256, the coordinator refuses to admit chip-2, which stays outside.
    let mut n1 = cluster.start_node_with(1, false, &[], &["--domain-cipher", "aes256"]);
    n1.wait_line("ready", READY);
    let add = ["ctl", "chip", "add", "--address", chip2.endpoint.as_str()];
    let (out, _) = cluster.operator_cli(&[&n1.endpoint], &add);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{} uses sm4, not aes256", first.domain_id)),
        "{stderr}"
    );
    let second = chip_info(&cluster, &chip2.endpoint).await;
    assert!(second.domain_id.is_empty(), "{second:?}");
    n1.stop();

    // Without the flag it admits chip-2 into the SM4 domain.
    let mut n1 = cluster.start_node_with(1, false, &[], &[]);
    n1.wait_line("ready", READY);
    let (out, _) = cluster.operator_cli(&[&n1.endpoint], &add);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = chip_info(&cluster, &chip2.endpoint).await;
    assert_eq!(second.domain_id, first.domain_id);
    assert_eq!(second.domain_cipher, pb::DomainCipher::Sm4 as i32);
    // Once both chips answer heartbeats, a user key is placed on both, moved from one to the
    // other under SM4.
    let operator = ClusterServiceClient::new(cluster.operator(&[&n1.endpoint]).current_channel());
    let deadline = Instant::now() + READY;
    loop {
        let chips = operator
            .clone()
            .list_chips(pb::ListChipsRequest {})
            .await
            .unwrap()
            .into_inner()
            .chips;
        if chips.len() == 2 && chips.iter().all(|c| c.state == pb::ChipState::Up as i32) {
            break;
        }
        assert!(Instant::now() < deadline, "chips not up: {chips:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let business = cluster.business(&[&n1.endpoint]);
    enroll_on(&business, &cluster.device(&[&n1.endpoint]), "bob").await;
    let bob = KeyServiceClient::new(business.current_channel())
        .get_user(pb::GetUserRequest {
            user_id: "bob".into(),
            consistency: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bob.holders.len(), 2, "{:?}", bob.holders);
}
