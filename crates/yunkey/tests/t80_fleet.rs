//! The chip fleet heals itself, with real processes and real signals: a chip killed with
//! SIGKILL is replaced (every affected user back to R = 2 holders), a user whose every holder
//! died is restored from the wrapped copy in Raft state and signs again under the same
//! certificate, a drained chip ends with no keys and can then be removed, and a chip that
//! joins gets its share of the keys (rebalance) without any key losing a zone.

mod common;

use common::{enroll_on, transaction, Cluster, Proc, TestDevice, READY};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use yunkey_client::{key_client, Connection};
use yunkey_crypto::ecdsa::PublicKey;
use yunkey_proto::v1 as pb;
use yunkey_proto::v1::cluster_service_client::ClusterServiceClient;

struct Fleet {
    cluster: Cluster,
    chips: BTreeMap<String, Proc>,
    node: Proc,
}

/// One coordinator (chips down after 2 s, rebalancing off: a chip that comes back must end
/// empty) and `n` admitted chips in two zones.
fn fleet(n: usize) -> Fleet {
    fleet_with(n, &["--rebalance-tolerance", "off"])
}

/// [`fleet`] with more coordinator flags.
fn fleet_with(n: usize, flags: &[&str]) -> Fleet {
    let mut cluster = Cluster::new();
    let mut chips = BTreeMap::new();
    for i in 1..=n {
        let id = format!("chip-{i}");
        let chip = cluster.start_chip(&id, &format!("zone-{}", i % 2 + 1));
        chips.insert(id, chip);
    }
    let urls: Vec<String> = chips.values().map(|c| c.endpoint.clone()).collect();
    let mut args = vec!["--chip-down-after", "2", "--sweep-every", "2"];
    args.extend_from_slice(flags);
    let mut node = cluster.start_node_with(1, true, &urls, &args);
    node.wait_line("ready", READY);
    Fleet {
        cluster,
        chips,
        node,
    }
}

impl Fleet {
    fn business(&self) -> Connection {
        self.cluster.business(&[&self.node.endpoint])
    }

    async fn user(&self, user_id: &str) -> pb::User {
        key_client(self.business().current_channel())
            .get_user(pb::GetUserRequest {
                user_id: user_id.into(),
                consistency: 0,
            })
            .await
            .unwrap()
            .into_inner()
    }

    async fn enrol(&self, n: usize) -> Vec<TestDevice> {
        let business = self.business();
        let device = self.cluster.device(&[&self.node.endpoint]);
        let mut out = Vec::new();
        for i in 0..n {
            out.push(enroll_on(&business, &device, &format!("user-{i}")).await);
        }
        out
    }

    /// Signs for `phone`'s user and checks the signature under the user's enrolled key.
    async fn sign(&self, phone: &TestDevice, amount: &str) -> String {
        let user = self.user(&phone.user_id).await;
        let signed = key_client(self.business().current_channel())
            .sign(phone.sign_request("", transaction(&phone.user_id, amount)))
            .await
            .unwrap_or_else(|e| panic!("{} cannot sign: {e:?}", phone.user_id))
            .into_inner();
        let digest: [u8; 32] = signed.tx_hash.as_slice().try_into().unwrap();
        PublicKey::from_spki_der(&user.public_key)
            .unwrap()
            .verify_digest(&digest, &signed.signature)
            .expect("the signature verifies under the user's enrolled key");
        assert_eq!(
            signed.certificate_chain[0], user.certificate,
            "the same certificate"
        );
        signed.chip_id
    }

    /// Waits until `done` holds for every user, or panics after `limit`.
    async fn wait_users(
        &self,
        phones: &[TestDevice],
        limit: Duration,
        what: &str,
        done: impl Fn(&pb::User) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        loop {
            let mut all = true;
            for p in phones {
                all &= done(&self.user(&p.user_id).await);
            }
            if all {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn chips_listed(&self) -> Vec<pb::Chip> {
        ClusterServiceClient::new(
            self.cluster
                .operator(&[&self.node.endpoint])
                .current_channel(),
        )
        .list_chips(pb::ListChipsRequest {})
        .await
        .unwrap()
        .into_inner()
        .chips
    }
}

fn holders(u: &pb::User) -> Vec<String> {
    u.holders.iter().map(|h| h.chip_id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_chip_is_replaced_and_a_user_with_no_live_holder_is_restored() {
    let mut f = fleet(4);
    let phones = f.enrol(12).await;

    // Kill the chip holding user-0's key: signing goes on at once on the other holder.
    let victim = holders(&f.user("user-0").await)[0].clone();
    f.chips.get_mut(&victim).unwrap().kill9();
    let started = Instant::now();
    assert_ne!(f.sign(&phones[0], "1").await, victim);
    // After the down threshold, every user is back to 2 holders, none of them the dead chip.
    f.wait_users(&phones, Duration::from_secs(60), "repair", |u| {
        u.holders.len() == 2 && !holders(u).contains(&victim)
    })
    .await;
    eprintln!("repair done {:?} after the kill", started.elapsed());
    for p in &phones {
        f.sign(p, "2").await;
    }

    // The replaced chip comes back on its data: its copies, which no placement lists any more
    // (and whose bindings may be stale), are swept away.
    let zone = f
        .chips_listed()
        .await
        .into_iter()
        .find(|c| c.chip_id == victim)
        .unwrap()
        .zone;
    let back = f.cluster.spawn_chip(&victim, &zone);
    ClusterServiceClient::new(f.cluster.operator(&[&f.node.endpoint]).current_channel())
        .admit_chip(pb::AdmitChipRequest {
            endpoint: back.endpoint.clone(),
        })
        .await
        .unwrap();
    let tls = yunkey_net::TlsFiles {
        ca: f.cluster.node_tls(&victim).join("ca.pem"),
        cert: Some(f.cluster.node_tls(&victim).join("node.pem")),
        key: Some(f.cluster.node_tls(&victim).join("node-key.pem")),
    }
    .load()
    .unwrap();
    let as_node = Connection::new(&yunkey_client::ConnectionOptions {
        endpoints: vec![back.endpoint.clone()],
        tls,
        domain: None,
        deadline: Duration::from_secs(10),
    })
    .unwrap();
    let mut chip =
        yunkey_proto::v1::chip_service_client::ChipServiceClient::new(as_node.current_channel());
    let count = |keys: Vec<pb::KeyEntry>| keys.len();
    let before = count(
        chip.list_keys(pb::ListKeysRequest::default())
            .await
            .unwrap()
            .into_inner()
            .keys,
    );
    assert!(
        before > 0,
        "the replaced chip came back with its old copies"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = count(
            chip.list_keys(pb::ListKeysRequest::default())
                .await
                .unwrap()
                .into_inner()
                .keys,
        );
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} stale copies left");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    f.chips.insert(victim.clone(), back);

    // Kill both holders of user-1: its key is restored from the wrapped copy onto the two
    // chips left (one of them the swept one), and it signs again under the same certificate.
    let both = holders(&f.user("user-1").await);
    for chip in &both {
        f.chips.get_mut(chip).unwrap().kill9();
    }
    let alive: Vec<String> = f
        .chips
        .keys()
        .filter(|c| !both.contains(c))
        .cloned()
        .collect();
    assert_eq!(alive.len(), 2);
    f.wait_users(&phones, Duration::from_secs(60), "restore", |u| {
        let h = holders(u);
        h.len() == 2 && h.iter().all(|c| alive.contains(c))
    })
    .await;
    for p in &phones {
        assert!(alive.contains(&f.sign(p, "3").await));
    }
}

/// `yunkey ctl ARGS` as the operator against the fleet's coordinator: (success, output).
fn ctl(f: &Fleet, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(common::bin())
        .args(["--endpoint", &f.node.endpoint])
        .args(["--ca", f.cluster.ops.join("ca.pem").to_str().unwrap()])
        .args([
            "--cert",
            f.cluster.ops.join("operator.pem").to_str().unwrap(),
        ])
        .args([
            "--key",
            f.cluster.ops.join("operator-key.pem").to_str().unwrap(),
        ])
        .arg("ctl")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_chip_ends_empty_and_is_removed() {
    let f = fleet(3);
    let phones = f.enrol(10).await;
    let ctl = |args: &[&str]| ctl(&f, args);
    let keys_on = |chips: &[pb::Chip], id: &str| {
        chips
            .iter()
            .find(|c| c.chip_id == id)
            .map(|c| c.used)
            .unwrap_or(0)
    };
    assert!(keys_on(&f.chips_listed().await, "chip-1") > 0);
    let (ok, out) = ctl(&["chip", "remove", "chip-1"]);
    assert!(!ok && out.contains("still holds"), "{out}");
    let (ok, out) = ctl(&["chip", "drain", "chip-1"]);
    assert!(ok, "{out}");
    let (ok, out) = ctl(&["chip", "list"]);
    assert!(ok && out.contains("draining"), "{out}");
    // `ctl status` shows the drain (until the chip is removed) and the reconciler's backlog.
    let (ok, out) = ctl(&["status"]);
    assert!(ok && out.contains("draining: chip-1 ("), "{out}");
    assert!(
        out.contains("repair pending") && out.contains("rebalance pending"),
        "{out}"
    );

    // Signing goes on while the keys move; then chip-1 holds none and nobody lists it.
    for p in &phones {
        f.sign(p, "4").await;
    }
    f.wait_users(&phones, Duration::from_secs(60), "drain", |u| {
        u.holders.len() == 2 && !holders(u).contains(&"chip-1".to_owned())
    })
    .await;
    assert_eq!(keys_on(&f.chips_listed().await, "chip-1"), 0);
    for p in &phones {
        assert_ne!(f.sign(p, "5").await, "chip-1");
    }
    let (ok, out) = ctl(&["chip", "remove", "chip-1"]);
    assert!(ok, "{out}");
    assert!(f.chips_listed().await.iter().all(|c| c.chip_id != "chip-1"));
    // A new enrolment avoids it too (it is gone).
    let more = enroll_on(
        &f.business(),
        &f.cluster.device(&[&f.node.endpoint]),
        "late-user",
    )
    .await;
    assert!(!holders(&f.user(&more.user_id).await).contains(&"chip-1".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chip_that_joins_gets_its_share_without_a_key_losing_a_zone() {
    // Chips 1 and 3 are in zone-2, chip-2 in zone-1: every key has its zone-1 copy on chip-2,
    // which holds twice the mean, and no move can fix that without a key losing a zone.
    let mut f = fleet_with(3, &["--rebalance-tolerance", "10"]);
    let phones = f.enrol(12).await;
    let used = |chips: &[pb::Chip], id: &str| {
        chips
            .iter()
            .find(|c| c.chip_id == id)
            .map(|c| c.used)
            .unwrap()
    };
    let before = f.chips_listed().await;
    assert_eq!(used(&before, "chip-2"), 12, "{before:?}");

    // `ctl placement` explains a user's holders.
    let (ok, out) = ctl(&f, &["placement", "user-0"]);
    assert!(
        ok && out.contains("chip-2") && out.contains("zone-1"),
        "{out}"
    );
    assert!(out.contains("nothing to do"), "{out}");
    let (ok, out) = ctl(&f, &["--json", "placement", "user-0"]);
    assert!(ok, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["zones"], 2, "{json}");
    assert_eq!(json["holders"].as_array().unwrap().len(), 2, "{json}");
    let (ok, out) = ctl(&f, &["placement", "nobody"]);
    assert!(!ok && out.contains("NOT_FOUND"), "{out}");

    // chip-4 joins zone-1: the reconciler moves chip-2's copies to it until both are within
    // the tolerance of their share.
    let chip4 = f.cluster.start_chip("chip-4", "zone-1");
    ClusterServiceClient::new(f.cluster.operator(&[&f.node.endpoint]).current_channel())
        .admit_chip(pb::AdmitChipRequest {
            endpoint: chip4.endpoint.clone(),
        })
        .await
        .unwrap();
    f.chips.insert("chip-4".into(), chip4);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let chips = f.chips_listed().await;
        let counts: Vec<u64> = ["chip-1", "chip-2", "chip-3", "chip-4"]
            .iter()
            .map(|id| used(&chips, id))
            .collect();
        // Mean 6 per chip; the tolerance is 10 % of it or one key.
        if counts.iter().all(|&n| n.abs_diff(6) <= 1) {
            break;
        }
        assert!(Instant::now() < deadline, "not balanced: {counts:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Every key still has two holders in two zones, and signs.
    let zone_of = |c: &str| if c == "chip-2" || c == "chip-4" { 1 } else { 2 };
    for p in &phones {
        let h = holders(&f.user(&p.user_id).await);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_ne!(zone_of(&h[0]), zone_of(&h[1]), "{h:?}");
        f.sign(p, "6").await;
    }
    let status =
        ClusterServiceClient::new(f.cluster.operator(&[&f.node.endpoint]).current_channel())
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
    assert_eq!(status.rebalance_pending_moves, 0);
}
