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
    }
    Ok(())
}
