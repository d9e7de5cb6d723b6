//! Least privilege per RPC, against a real `yunkey dev` over TLS:
//! - every RPC of every service served has a row in the access table
//!   (`yunkey_net::access::RPC_ROLES`), and every row names a real RPC;
//! - every row refuses every caller it does not list: a real certificate of each other role
//!   (PERMISSION_DENIED) and no certificate (UNAUTHENTICATED); a path with no row is refused;
//! - membership and admission (`AddNode`, `RemoveNode`, `AdmitChip`) refuse `client` and `node`
//!   certificates and serve an `operator`;
//! - `AddNode` of an unreachable address fails with UNAVAILABLE, leaves the membership as it
//!   was, and writes still commit; the one-node cluster restarts afterwards.

mod common;

use common::{raw_call, Dev};
use std::collections::BTreeSet;
use std::time::Duration;
use tonic::Code;
use yunkey_client::cluster_client;
use yunkey_net::access::{Allowed, ServedBy, CHIP_SERVICE, RPC_ROLES};
use yunkey_net::Role;
use yunkey_proto::v1::{
    AddNodeRequest, AdmitChipRequest, ListChipsRequest, RemoveNodeRequest, StatusRequest,
    WriteProbeRequest,
};

fn label(role: Option<Role>) -> String {
    role.map_or("no certificate".to_owned(), |r| format!("role {r}"))
}

#[test]
fn every_served_rpc_has_exactly_one_row() {
    let mut served = BTreeSet::new();
    for set in [
        yunkey_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    ] {
        served.extend(yunkey_proto::rpc_methods(set).unwrap());
    }
    let table: BTreeSet<(String, String)> = RPC_ROLES
        .iter()
        .map(|r| (r.service.to_owned(), r.method.to_owned()))
        .collect();
    assert_eq!(table.len(), RPC_ROLES.len(), "a row is listed twice");
    let missing: Vec<_> = served.difference(&table).collect();
    assert!(
        missing.is_empty(),
        "RPCs without a row in yunkey_net::access::RPC_ROLES (every call to them is refused): \
         {missing:?}. Add a row (for ChipService: `chip(\"Name\")`) and regenerate docs/api.md"
    );
    let stale: Vec<_> = table.difference(&served).collect();
    assert!(
        stale.is_empty(),
        "rows in RPC_ROLES that name no RPC in the protos: {stale:?}; remove them"
    );
}

/// One test iterating the whole table: each row is called, over TLS, by each caller it does
/// not admit. Chip rows go to a chip of the dev cluster, the others to the coordinator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_refuses_every_role_it_does_not_list() {
    let dev = Dev::start();
    let chips = cluster_client(dev.operator().current_channel())
        .list_chips(ListChipsRequest {})
        .await
        .unwrap()
        .into_inner()
        .chips;
    let chip = chips
        .first()
        .expect("the dev cluster has chips")
        .endpoint
        .clone();
    let callers: Vec<Option<Role>> = std::iter::once(None)
        .chain(Role::ALL.into_iter().map(Some))
        .collect();
    let mut checked = 0;
    for row in RPC_ROLES {
        let endpoint = match row.served_by {
            ServedBy::Coordinator => dev.endpoint.clone(),
            ServedBy::Chip => chip.clone(),
            // Served by the business module's processes, not by the dev cluster: t24_risk
            // checks those rows against a running `yunkey risk` and `yunkey-face`.
            ServedBy::Risk | ServedBy::Face => continue,
        };
        if let Allowed::Anyone = row.allowed {
            // Nobody is refused: a call without any certificate gets past the table.
            let (code, message) = raw_call(
                dev.connection_to(&endpoint, None).current_channel(),
                &row.path(),
            )
            .await;
            assert!(
                !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
                "{} refused a caller without a certificate: {code:?} {message}",
                row.path()
            );
            continue;
        }
        for caller in &callers {
            if row.admits(*caller) {
                continue;
            }
            let conn = dev.connection_to(&endpoint, *caller);
            let (code, message) = raw_call(conn.current_channel(), &row.path()).await;
            let want = if caller.is_some() {
                Code::PermissionDenied
            } else {
                Code::Unauthenticated
            };
            assert_eq!(
                code,
                want,
                "{} called with {}: {message}",
                row.path(),
                label(*caller)
            );
            match (caller, row.allowed) {
                // A role is not a device: the device channel wants the device's certificate.
                (Some(_), Allowed::Device) => assert!(
                    message.contains("requires a device certificate"),
                    "{}: {message}",
                    row.path()
                ),
                (Some(role), _) => assert!(
                    message.contains(&format!("has role {role}")),
                    "{}: {message}",
                    row.path()
                ),
                (None, _) => assert!(message.contains("client certificate"), "{message}"),
            }
            checked += 1;
        }
    }
    eprintln!("{checked} refusals checked over {} rows", RPC_ROLES.len());
    assert!(checked >= RPC_ROLES.len(), "{checked}");

    // A path with no row is refused, whoever calls it (default deny).
    for (endpoint, path) in [
        (&dev.endpoint, "/yunkey.v1.ClusterService/Drain"),
        (&chip, &format!("/{CHIP_SERVICE}/ExportEverything")),
    ] {
        for caller in &callers {
            let conn = dev.connection_to(endpoint, *caller);
            let (code, message) = raw_call(conn.current_channel(), path).await;
            assert_eq!(code, Code::PermissionDenied, "{path}: {message}");
            assert!(message.contains("access table"), "{message}");
        }
    }
}

/// The report: a business certificate could change membership, and one AddNode of an
/// unreachable address made it a voter, which stalled every write and kept a one-node
/// `yunkey dev` from restarting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_and_admission_need_an_operator() {
    let mut dev = Dev::start();
    let unreachable = "https://127.0.0.1:1".to_owned();
    let add = || AddNodeRequest {
        node_id: 7,
        address: unreachable.clone(),
    };
    let chip = cluster_client(dev.operator().current_channel())
        .list_chips(ListChipsRequest {})
        .await
        .unwrap()
        .into_inner()
        .chips[0]
        .endpoint
        .clone();

    // A business backend's and a node's certificate: refused before anything runs.
    for (who, conn) in [("client", dev.business()), ("node", dev.as_node())] {
        let mut cluster = cluster_client(conn.current_channel());
        let refusals = [
            ("AddNode", cluster.add_node(add()).await.err()),
            (
                "RemoveNode",
                cluster
                    .remove_node(RemoveNodeRequest { node_id: 1 })
                    .await
                    .err(),
            ),
            (
                "AdmitChip",
                cluster
                    .admit_chip(AdmitChipRequest {
                        endpoint: chip.clone(),
                    })
                    .await
                    .err(),
            ),
        ];
        for (rpc, err) in refusals {
            let err = err.unwrap_or_else(|| panic!("{rpc} accepted a {who} certificate"));
            assert_eq!(
                err.code(),
                Code::PermissionDenied,
                "{rpc} as {who}: {err:?}"
            );
            assert!(
                err.message().contains(&format!(
                    "has role {who}; yunkey.v1.ClusterService/{rpc} requires role operator"
                )),
                "{err:?}"
            );
        }
    }

    // The operator may call each of them.
    let mut ops = cluster_client(dev.operator().current_channel());
    let admitted = ops
        .admit_chip(AdmitChipRequest {
            endpoint: chip.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(admitted.endpoint, chip);
    let err = ops
        .remove_node(RemoveNodeRequest { node_id: 1 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("last voter"), "{err:?}");
    let err = ops
        .remove_node(RemoveNodeRequest { node_id: 9 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // AddNode of an address nobody answers at: UNAVAILABLE, and nothing changes.
    let started = std::time::Instant::now();
    let err = ops.add_node(add()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message()
            .contains("cannot reach node 7 at https://127.0.0.1:1")
            && err.message().contains("Nothing was changed"),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // The CLI says the same and exits non-zero.
    let out = dev.cli(&[
        "--timeout",
        "1",
        "ctl",
        "add-node",
        "--node-id",
        "7",
        "--address",
        &unreachable,
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach node 7"), "{stderr}");
    let status = ops.status(StatusRequest {}).await.unwrap().into_inner();
    let members: Vec<(u64, bool)> = status.nodes.iter().map(|n| (n.node_id, n.voter)).collect();
    assert_eq!(members, vec![(1, true)], "{status:?}");
    // Writes still commit (through the business identity, as a health check would).
    let probe = cluster_client(dev.business().current_channel())
        .write_probe(WriteProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(probe.log_index > 0);
    let enrolled = common::enroll_with_device(&dev, "after-addnode").await;
    assert_eq!(enrolled.user_id, "after-addnode");

    // And the one-node cluster restarts on its data.
    dev.stop();
    let data = dev.data.clone();
    let again = Dev::start_in(&data);
    let status = cluster_client(again.operator().current_channel())
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.leader_id, 1, "{status:?}");
    assert!(status.users >= 1, "{status:?}");
    let out = again.cli(&["ctl", "probe"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(again);
    drop(dev);
}
