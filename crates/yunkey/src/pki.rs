//! `yunkey pki`: the cluster's TLS CA and the certificates issued from it.

use crate::cli::{Global, PkiCommand};
use crate::output;
use yunkey_net::pki::{ClusterCa, Subject};
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
