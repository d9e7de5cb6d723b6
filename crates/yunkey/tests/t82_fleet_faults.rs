//! Faults in the middle of the fleet's work, with real processes, real signals and real TLS:
//! - a chip SIGKILLed under a concurrent signing load: no sign request fails (the client SDK's
//!   retry included), and every user it held is back to R = 2 holders, none on the dead chip;
//! - the leader coordinator SIGKILLed in the middle of a slow repair: the new leader finishes
//!   it, with every user at exactly R holders, no chip twice, none dead, and every user signs.
//!
//! At the end of each scenario every data directory (coordinators' and chips') and every log
//! the test captured (each process logs at DEBUG into files) is searched for the private
//! scalars of every key made in the test, raw and in hex, base64 and Debug form: 0 hits. The
//! scalars are learned from the stopped chips' directories through `yunkey-chip`'s test-only
//! `test-key-scalars` feature, which the release binary does not contain; the search is
//! shown to work by finding a scalar planted in the searched tree.

mod common;

use aho_corasick::AhoCorasick;
use base64::Engine as _;
use common::{enroll_on, transaction, Cluster, Proc, TestDevice, READY};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use yunkey_chip::activation::test_scalars::{soft_chip_scalars, KeyScalar};
use yunkey_client::{cluster_client, key_client, Connection};
use yunkey_crypto::ecdsa::PublicKey;
use yunkey_proto::v1 as pb;

/// What every process logs into its files: DEBUG, except the transport's frame-level noise.
const LOG_FILTER: &str =
    "debug,h2=info,hyper=info,hyper_util=info,tower=info,tonic=info,rustls=info,openraft=info";

/// The scenarios run one at a time: each runs up to 7 processes on a small machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Fleet {
    cluster: Cluster,
    chips: BTreeMap<String, Proc>,
    nodes: BTreeMap<u64, Proc>,
}

/// `coordinators` coordinators (all with `flags`) and `chips` admitted chips in two zones,
/// every process logging at DEBUG into the cluster's `logs` directory.
async fn fleet(chips: usize, coordinators: u64, flags: &[&str]) -> Fleet {
    let mut cluster = Cluster::new();
    cluster.capture_logs(LOG_FILTER);
    let mut procs = BTreeMap::new();
    for i in 1..=chips {
        let id = format!("chip-{i}");
        let chip = cluster.start_chip(&id, &format!("zone-{}", i % 2 + 1));
        procs.insert(id, chip);
    }
    let urls: Vec<String> = procs.values().map(|c| c.endpoint.clone()).collect();
    let mut nodes = BTreeMap::new();
    let mut first = cluster.start_node_with(1, true, &urls, flags);
    first.wait_line("ready", READY);
    let admin = cluster.operator(&[&first.endpoint]);
    nodes.insert(1, first);
    for id in 2..=coordinators {
        let mut node = cluster.start_node_with(id, false, &[], flags);
        common::add_node(&admin, id, &node.endpoint).await;
        node.wait_line("ready", READY);
        nodes.insert(id, node);
    }
    Fleet {
        cluster,
        chips: procs,
        nodes,
    }
}

impl Fleet {
    /// The endpoints of the coordinators still running.
    fn endpoints(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.running())
            .map(|n| n.endpoint.clone())
            .collect()
    }

    /// A business backend's connection to every running coordinator (the SDK's retry moves
    /// to the next one on UNAVAILABLE).
    fn business(&self) -> Connection {
        let eps = self.endpoints();
        self.cluster
            .business(&eps.iter().map(String::as_str).collect::<Vec<_>>())
    }

    async fn user(
        &self,
        conn: &Connection,
        user_id: &str,
        consistency: pb::ReadConsistency,
    ) -> pb::User {
        let req = pb::GetUserRequest {
            user_id: user_id.into(),
            consistency: consistency as i32,
        };
        conn.call(|ch| {
            let req = req.clone();
            async move { key_client(ch).get_user(req).await }
        })
        .await
        .unwrap_or_else(|e| panic!("GetUser {user_id}: {e:?}"))
    }

    async fn status(&self, conn: &Connection) -> pb::StatusResponse {
        conn.call(|ch| async move { cluster_client(ch).status(pb::StatusRequest {}).await })
            .await
            .unwrap()
    }

    async fn enrol(&self, n: usize) -> Vec<Arc<TestDevice>> {
        let node = &self.nodes[&1].endpoint;
        let business = self.cluster.business(&[node]);
        let device = self.cluster.device(&[node]);
        let mut out = Vec::new();
        for i in 0..n {
            out.push(Arc::new(
                enroll_on(&business, &device, &format!("user-{i}")).await,
            ));
        }
        out
    }

    /// Stops every process still running (SIGTERM, then waits), so that their data
    /// directories can be opened and their logs are complete.
    fn stop_all(&mut self) {
        for p in self.nodes.values_mut().chain(self.chips.values_mut()) {
            p.stop();
        }
    }
}

fn holders(u: &pb::User) -> Vec<String> {
    u.holders.iter().map(|h| h.chip_id.clone()).collect()
}

/// Signs for `phone`'s user through `conn` with the SDK's retry, and checks the signature
/// under `public_key`; returns the chip that signed.
async fn sign(conn: &Connection, phone: &TestDevice, public_key: &[u8]) -> Result<String, String> {
    let req = phone.sign_request("", transaction(&phone.user_id, "3.5"));
    let signed = conn
        .call(|ch| {
            let req = req.clone();
            async move { key_client(ch).sign(req).await }
        })
        .await
        .map_err(|e| format!("{} cannot sign: {e:?}", phone.user_id))?;
    let digest: [u8; 32] = signed.tx_hash.as_slice().try_into().unwrap();
    PublicKey::from_spki_der(public_key)
        .unwrap()
        .verify_digest(&digest, &signed.signature)
        .map_err(|e| format!("{}'s signature does not verify: {e}", phone.user_id))?;
    Ok(signed.chip_id)
}

/// One sign request of the load: when it was sent and answered, and which chip signed.
struct Outcome {
    user: String,
    sent: Instant,
    done: Instant,
    result: Result<String, String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chip_killed_under_a_signing_load_fails_no_request_and_its_users_get_r_holders_again() {
    let _one_at_a_time = SERIAL.lock().await;
    let mut f = fleet(4, 1, &["--chip-down-after", "2", "--sweep-every", "2"]).await;
    let phones = f.enrol(12).await;
    let conn = f.business();
    let mut users = BTreeMap::new();
    for p in &phones {
        users.insert(
            p.user_id.clone(),
            f.user(&conn, &p.user_id, pb::ReadConsistency::Linearizable)
                .await,
        );
    }
    // The victim: the chip holding the most users.
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for u in users.values() {
        for c in holders(u) {
            *count.entry(c).or_default() += 1;
        }
    }
    let victim = count.iter().max_by_key(|(_, n)| **n).unwrap().0.clone();
    let affected: BTreeSet<String> = users
        .values()
        .filter(|u| holders(u).contains(&victim))
        .map(|u| u.user_id.clone())
        .collect();
    assert!(affected.len() >= 3, "{victim} holds {affected:?}");

    // The load: one task per user, each signing in a loop with the SDK's retry.
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = phones
        .iter()
        .map(|phone| {
            let (phone, conn, outcomes, stop) =
                (phone.clone(), conn.clone(), outcomes.clone(), stop.clone());
            let public_key = users[&phone.user_id].public_key.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let result = sign(&conn, &phone, &public_key).await;
                    outcomes.lock().unwrap().push(Outcome {
                        user: phone.user_id.clone(),
                        sent,
                        done: Instant::now(),
                        result,
                    });
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    f.chips.get_mut(&victim).unwrap().kill9();
    let killed_at = Instant::now();

    // Repair under the load: every user back to 2 holders, none of them the dead chip.
    let deadline = killed_at + Duration::from_secs(90);
    loop {
        let mut done = true;
        for u in users.keys() {
            let now = f.user(&conn, u, pb::ReadConsistency::Stale).await;
            let h = holders(&now);
            assert!(!h.is_empty(), "{u} has no holder");
            done &= h.len() == 2 && !h.contains(&victim);
        }
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "repair not done within 90 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let repaired = killed_at.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    let failed: Vec<&String> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().err())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} sign requests failed, first: {}",
        failed.len(),
        outcomes.len(),
        failed[0]
    );
    let signed_by = |o: &Outcome| o.result.as_ref().unwrap().clone();
    assert!(
        outcomes
            .iter()
            .any(|o| o.done < killed_at && signed_by(o) == victim),
        "the victim served signatures before it was killed"
    );
    let in_flight = outcomes
        .iter()
        .filter(|o| o.sent < killed_at && o.done > killed_at)
        .count();
    let mut first_after = Vec::new();
    for user in &affected {
        let after: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| &o.user == user && o.sent >= killed_at)
            .collect();
        assert!(!after.is_empty(), "{user} signed after the kill");
        assert!(after.iter().all(|o| signed_by(o) != victim));
        first_after.push(after.iter().map(|o| o.done - killed_at).min().unwrap());
    }
    eprintln!(
        "{} signatures, 0 failed; {in_flight} in flight at the kill of {victim} ({} users); \
         slowest first signature after it {:?}; repair done {repaired:?} after the kill",
        outcomes.len(),
        affected.len(),
        first_after.iter().max().unwrap()
    );

    let public_keys = final_public_keys(&f, &phones).await;
    f.stop_all();
    assert_no_plaintext_scalars(&f.cluster, &public_keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_in_the_middle_of_a_repair_is_replaced_by_one_that_finishes_it() {
    let _one_at_a_time = SERIAL.lock().await;
    // A slow repair: 2 users per second, so moving about ten users takes several seconds.
    let flags = [
        "--chip-down-after",
        "2",
        "--repair-rate",
        "2",
        "--sweep-every",
        "2",
    ];
    let mut f = fleet(4, 3, &flags).await;
    let phones = f.enrol(20).await;
    let conn = f.business();
    let mut on: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &phones {
        let u = f
            .user(&conn, &p.user_id, pb::ReadConsistency::Linearizable)
            .await;
        on.insert(p.user_id.clone(), holders(&u));
    }
    let mut count: BTreeMap<&String, usize> = BTreeMap::new();
    for h in on.values().flatten() {
        *count.entry(h).or_default() += 1;
    }
    let victim = count.iter().max_by_key(|(_, n)| **n).unwrap().0.to_string();
    let affected: Vec<String> = on
        .iter()
        .filter(|(_, h)| h.contains(&victim))
        .map(|(u, _)| u.clone())
        .collect();
    assert!(affected.len() >= 6, "{victim} holds {affected:?}");

    // Every observation, from the kill of the chip to the end: no user without a holder, none
    // with a chip twice, none above R + 1 (add before remove).
    let observe = |u: &pb::User| {
        let h = holders(u);
        let distinct: BTreeSet<&String> = h.iter().collect();
        assert!(!h.is_empty(), "{} has no holder", u.user_id);
        assert_eq!(
            distinct.len(),
            h.len(),
            "{} lists a chip twice: {h:?}",
            u.user_id
        );
        assert!(h.len() <= 3, "{} has {h:?}", u.user_id);
        h.contains(&victim)
    };

    f.chips.get_mut(&victim).unwrap().kill9();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (moved, pending) = loop {
        let mut pending = 0;
        for u in &affected {
            pending += usize::from(observe(&f.user(&conn, u, pb::ReadConsistency::Stale).await));
        }
        let moved = affected.len() - pending;
        if moved >= 2 && pending >= 3 {
            break (moved, pending);
        }
        assert!(
            pending > 0,
            "the repair ended before the leader could be killed"
        );
        assert!(
            Instant::now() < deadline,
            "the repair did not start within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let leader = f.status(&conn).await.leader_id;
    f.nodes.get_mut(&leader).unwrap().kill9();
    let killed_at = Instant::now();
    eprintln!("leader {leader} killed with {moved} users moved and {pending} pending");

    // The new leader finishes: every user at exactly 2 holders, distinct, none the dead chip.
    let conn = f.business();
    let deadline = killed_at + Duration::from_secs(90);
    loop {
        let mut done = true;
        for u in on.keys() {
            let now = f.user(&conn, u, pb::ReadConsistency::Stale).await;
            done &= !observe(&now) && now.holders.len() == 2;
        }
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new leader did not finish within 90 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let new_leader = f.status(&conn).await.leader_id;
    assert_ne!(new_leader, leader);
    eprintln!(
        "repair finished by node {new_leader} {:?} after the leader kill",
        killed_at.elapsed()
    );
    for p in &phones {
        let u = f
            .user(&conn, &p.user_id, pb::ReadConsistency::Linearizable)
            .await;
        let h = holders(&u);
        assert_eq!(h.len(), 2, "{}: {h:?}", u.user_id);
        assert!(!observe(&u));
        let chip = sign(&conn, p, &u.public_key).await.unwrap();
        assert!(
            h.contains(&chip),
            "{} signed on {chip}, not a holder",
            u.user_id
        );
    }
    // The reconciler's own view agrees once its next scan is through.
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader_conn = f.cluster.business(&[&f.nodes[&new_leader].endpoint]);
    while f.status(&leader_conn).await.repair_pending_users != 0 {
        assert!(
            Instant::now() < deadline,
            "repair_pending_users stays above 0"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let public_keys = final_public_keys(&f, &phones).await;
    f.stop_all();
    // Both leaders moved keys: the old one before it died, the new one after.
    let added = |node: u64| {
        let log = f
            .cluster
            .dir
            .path()
            .join(format!("logs/node-{node}.stderr.log"));
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter(|l| l.contains("holder added"))
            .count()
    };
    assert!(added(leader) >= moved, "node {leader} logged its moves");
    assert!(
        added(new_leader) >= 1,
        "node {new_leader} moved keys after the kill"
    );
    assert_no_plaintext_scalars(&f.cluster, &public_keys);
}

/// The public keys of the test's users, from the cluster.
async fn final_public_keys(f: &Fleet, phones: &[Arc<TestDevice>]) -> BTreeMap<String, Vec<u8>> {
    let conn = f.business();
    let mut out = BTreeMap::new();
    for p in phones {
        let u = f
            .user(&conn, &p.user_id, pb::ReadConsistency::Linearizable)
            .await;
        out.insert(p.user_id.clone(), u.public_key);
    }
    out
}

// ------------------------------------------------------------------ the search for scalars

/// What the search looks for: one encoding of one key's scalar.
struct Needle {
    key: String,
    encoding: String,
    bytes: Vec<u8>,
}

/// Base64 of `scalar` as it appears inside a longer encoded text, for each of the three
/// alignments it can have there: only the characters made of the scalar's bits alone.
fn base64_needles(
    scalar: &[u8; 32],
    engine: &base64::engine::GeneralPurpose,
    name: &str,
) -> Vec<(String, Vec<u8>)> {
    (0..3usize)
        .map(|shift| {
            let mut input = vec![0u8; shift];
            input.extend_from_slice(scalar);
            let text = engine.encode(&input);
            let (first, end) = ((8 * shift).div_ceil(6), (8 * shift + 256) / 6);
            (
                format!("{name}@{shift}"),
                text.as_bytes()[first..end].to_vec(),
            )
        })
        .collect()
}

fn needles_of(key: &str, scalar: &[u8; 32]) -> Vec<Needle> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut forms = vec![
        ("raw".to_owned(), scalar.to_vec()),
        ("hex".to_owned(), hex::encode(scalar).into_bytes()),
        ("HEX".to_owned(), hex::encode_upper(scalar).into_bytes()),
        (
            "debug".to_owned(),
            format!("{:?}", &scalar[..]).into_bytes(),
        ),
    ];
    forms.extend(base64_needles(scalar, &STANDARD_NO_PAD, "base64"));
    forms.extend(base64_needles(scalar, &URL_SAFE_NO_PAD, "base64url"));
    forms
        .into_iter()
        .map(|(encoding, bytes)| Needle {
            key: key.to_owned(),
            encoding,
            bytes,
        })
        .collect()
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            files_under(&entry.path(), out);
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
}

/// Every (file, key, encoding) where a needle occurs in a file under `root`; also the number
/// of files and bytes read.
fn search(root: &Path, needles: &[Needle]) -> (Vec<(PathBuf, String, String)>, usize, u64) {
    let ac = AhoCorasick::new(needles.iter().map(|n| &n.bytes)).unwrap();
    let mut files = Vec::new();
    files_under(root, &mut files);
    let (mut hits, mut bytes) = (Vec::new(), 0u64);
    for file in &files {
        let data = std::fs::read(file).unwrap();
        bytes += data.len() as u64;
        for m in ac.find_overlapping_iter(&data) {
            let n = &needles[m.pattern().as_usize()];
            hits.push((file.clone(), n.key.clone(), n.encoding.clone()));
        }
    }
    (hits, files.len(), bytes)
}

/// Learns every key's scalar from the (stopped) chips' directories, checks that each user of
/// `public_keys` is among them, proves the search finds a planted scalar in every encoding,
/// then searches the whole cluster directory (data of every coordinator and chip, and every
/// captured log) and expects nothing.
fn assert_no_plaintext_scalars(cluster: &Cluster, public_keys: &BTreeMap<String, Vec<u8>>) {
    let root = cluster.dir.path();
    let mut keys: Vec<KeyScalar> = Vec::new();
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        let is_chip = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("chip-"));
        if is_chip {
            keys.extend(
                soft_chip_scalars(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            );
        }
    }
    for (user, spki) in public_keys {
        assert!(
            keys.iter()
                .any(|k| &k.user_id == user && &k.public_key_spki == spki),
            "no chip directory holds {user}'s key"
        );
    }
    // A key held by two chips is one scalar.
    let mut seen = BTreeSet::new();
    keys.retain(|k| seen.insert(k.public_key_spki.clone()));
    let mut needles = Vec::new();
    for k in &keys {
        let name = if k.user_id.is_empty() {
            "the user CA".to_owned()
        } else {
            k.user_id.clone()
        };
        needles.extend(needles_of(&name, k.expose_scalar()));
    }

    // The logs were captured, at DEBUG.
    let logs = root.join("logs");
    let mut log_files = Vec::new();
    files_under(&logs, &mut log_files);
    let debug_logs = log_files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .filter(|text| text.contains("DEBUG"))
        .count();
    assert!(
        debug_logs > 0,
        "no log file in {} has DEBUG lines",
        logs.display()
    );

    // Positive control: one scalar planted in every encoding, at every base64 alignment, among
    // random bytes, in a directory under the searched root.
    let planted = root.join("positive-control");
    std::fs::create_dir_all(&planted).unwrap();
    let scalar = keys[0].expose_scalar();
    let junk = |n: usize| yunkey_crypto::random_bytes::<64>()[..n].to_vec();
    let mut forms: Vec<(String, Vec<u8>)> = vec![
        ("raw".into(), [junk(17), scalar.to_vec(), junk(9)].concat()),
        (
            "hex".into(),
            format!("key={} ", hex::encode(scalar)).into_bytes(),
        ),
        (
            "HEX".into(),
            format!("KEY:{}\n", hex::encode_upper(scalar)).into_bytes(),
        ),
        (
            "debug".into(),
            format!("KeyRef({:?})", &scalar[..]).into_bytes(),
        ),
    ];
    for shift in 0..3 {
        let blob = [junk(shift), scalar.to_vec(), junk(5)].concat();
        forms.push((
            format!("base64@{shift}"),
            base64::engine::general_purpose::STANDARD
                .encode(&blob)
                .into_bytes(),
        ));
        forms.push((
            format!("base64url@{shift}"),
            base64::engine::general_purpose::URL_SAFE
                .encode(&blob)
                .into_bytes(),
        ));
    }
    for (i, (_, bytes)) in forms.iter().enumerate() {
        std::fs::write(planted.join(format!("plant-{i}")), bytes).unwrap();
    }
    let (hits, _, _) = search(root, &needles);
    let found: BTreeSet<&str> = hits
        .iter()
        .filter(|(file, key, _)| file.starts_with(&planted) && key == &needles[0].key)
        .map(|(_, _, encoding)| encoding.as_str())
        .collect();
    let expected: BTreeSet<&str> = forms.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        found, expected,
        "the search finds a planted scalar in every encoding"
    );
    std::fs::remove_dir_all(&planted).unwrap();

    let (hits, files, bytes) = search(root, &needles);
    eprintln!(
        "searched {files} files ({bytes} bytes: data of every coordinator and chip, {} log \
         files) for {} needles of {} keys: {} hits",
        log_files.len(),
        needles.len(),
        keys.len(),
        hits.len()
    );
    assert!(
        hits.is_empty(),
        "a private scalar in plaintext: {:?}",
        &hits[..hits.len().min(5)]
    );
}
