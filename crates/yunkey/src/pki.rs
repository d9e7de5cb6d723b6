//! `yunkey pki`: the cluster's TLS CA and the certificates issued from it.

use crate::cli::{Global, PkiCommand};
use crate::output;
use std::path::Path;
use yunkey_net::pki::{files, ClusterCa, Subject};
use yunkey_net::Role;

/// Runs a `yunkey pki` command.
pub fn run(g: &Global, cmd: &PkiCommand) -> anyhow::Result<()> {
    match cmd {
        PkiCommand::Init { ca_dir } => {
            ClusterCa::init(ca_dir)?;
            output::print(g.json, serde_json::json!({ "ca_dir": ca_dir }), || {
                format!("created the cluster TLS CA in {}", ca_dir.display())
            });
        }
        PkiCommand::Issue {
            ca_dir,
            role,
            name,
            hosts,
            out,
        } => {
            let role = Role::from_name(role).ok_or_else(|| {
                anyhow::anyhow!("--role {role:?}: expected node, client or operator")
            })?;
            let subject = Subject {
                role,
                name: name.clone(),
                hosts: hosts.clone(),
            };
            let files = ClusterCa::open(ca_dir)?.issue(&subject, out)?;
            let cert = files.cert.unwrap_or_default();
            output::print(
                g.json,
                serde_json::json!({ "role": role.as_str(), "name": name, "certificate": cert }),
                || format!("issued a {role} certificate for {name}: {}", cert.display()),
            );
        }
        PkiCommand::Cluster {
            ca_dir,
            out,
            nodes,
            clients,
            operators,
            domain_operator_key,
        } => {
            let mut wanted = Vec::new();
            for spec in nodes {
                let (name, hosts) = spec.split_once('=').ok_or_else(|| {
                    anyhow::anyhow!("--node {spec:?}: expected NAME=HOST[,HOST...]")
                })?;
                let hosts = hosts.split(',').map(str::to_owned).collect();
                wanted.push((Role::Node, name.to_owned(), hosts));
            }
            wanted.extend(
                clients
                    .iter()
                    .map(|n| (Role::Client, n.clone(), Vec::new())),
            );
            wanted.extend(
                operators
                    .iter()
                    .map(|n| (Role::Operator, n.clone(), Vec::new())),
            );
            let report = cluster(ca_dir, out, &wanted, domain_operator_key.as_deref())?;
            output::print(g.json, serde_json::json!(report), || report.join("\n"));
        }
        PkiCommand::DomainOperatorKey { out } => {
            let key = crate::admission::create_operator_key(out)?;
            let fingerprint = key.public_key().fingerprint();
            output::print(
                g.json,
                serde_json::json!({ "domain_operator_key": out, "public_key_sha256": fingerprint }),
                || {
                    format!(
                        "created the domain operator key {} (public key SHA-256 {fingerprint}); keep it offline",
                        out.display()
                    )
                },
            );
        }
        PkiCommand::AdmitChip {
            domain_operator_key,
            identity,
            out,
        } => {
            let operator = crate::admission::load_operator_key(domain_operator_key)?;
            let (chip, transport) = crate::admission::read_identity(identity)?;
            let signed = crate::admission::sign(&operator, &chip.chip_id, &transport)?;
            let out = out.clone().unwrap_or_else(|| {
                identity
                    .parent()
                    .unwrap_or(std::path::Path::new("."))
                    .join(crate::admission::ADMISSION_FILE)
            });
            crate::admission::write_admission(&out, &signed)?;
            output::print(
                g.json,
                serde_json::json!({
                    "chip_id": chip.chip_id,
                    "transport_key_sha256": chip.transport_key_sha256,
                    "admission": out,
                }),
                || {
                    format!(
                        "admitted chip {} (transport key SHA-256 {}): {}",
                        chip.chip_id,
                        chip.transport_key_sha256,
                        out.display()
                    )
                },
            );
        }
    }
    Ok(())
}

/// `yunkey pki cluster`: creates what is missing of a test cluster's TLS material and says,
/// line by line, what it created and what it kept.
fn cluster(
    ca_dir: &Path,
    out: &Path,
    wanted: &[(Role, String, Vec<String>)],
    domain_operator_key: Option<&Path>,
) -> anyhow::Result<Vec<String>> {
    let mut report = Vec::new();
    if ca_dir.join(files::CA).exists() && ca_dir.join(files::CA_KEY).exists() {
        report.push(format!("kept the CA in {}", ca_dir.display()));
    } else {
        ClusterCa::init(ca_dir)?;
        report.push(format!("created the CA in {}", ca_dir.display()));
    }
    let ca = ClusterCa::open(ca_dir)?;
    for (role, name, hosts) in wanted {
        let dir = out.join(name);
        let (cert, key) = files::identity(*role);
        if dir.join(cert).exists() && dir.join(key).exists() {
            report.push(format!(
                "kept the {role} identity {name} in {}",
                dir.display()
            ));
            continue;
        }
        let subject = Subject {
            role: *role,
            name: name.clone(),
            hosts: hosts.clone(),
        };
        ca.issue(&subject, &dir)?;
        report.push(format!(
            "issued the {role} identity of {name} in {}",
            dir.display()
        ));
    }
    if let Some(path) = domain_operator_key {
        if path.exists() {
            report.push(format!("kept the domain operator key {}", path.display()));
        } else {
            let key = crate::admission::create_operator_key(path)?;
            report.push(format!(
                "created the domain operator key {} (public key SHA-256 {})",
                path.display(),
                key.public_key().fingerprint()
            ));
        }
    }
    Ok(report)
}
