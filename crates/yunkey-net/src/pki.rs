//! Certificates for the cluster's TLS: a CA, and identities issued from it with a role SAN.
//!
//! - [`ClusterCa`]: the operator's node CA (`yunkey pki init` / `yunkey pki issue`): one
//!   certificate per coordinator, chip and business backend, each with its own key, its name
//!   in the subject and the hosts it is reached at.
//! - [`DevPki`]: what `yunkey dev` generates for itself: a CA, one shared node identity, one
//!   business-client identity and one operator identity.
//!
//! Production deployments may also bring their own CA and issue certificates with the same
//! role SANs (see docs/security.md).

use crate::{NetError, Role, TlsFiles};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// File names inside a PKI or TLS directory.
pub mod files {
    /// TLS trust root.
    pub const CA: &str = "ca.pem";
    /// TLS CA key (dev only; production keeps it offline).
    pub const CA_KEY: &str = "ca-key.pem";
    /// Node certificate (coordinators and chips).
    pub const NODE: &str = "node.pem";
    /// Node key.
    pub const NODE_KEY: &str = "node-key.pem";
    /// Business-client certificate.
    pub const CLIENT: &str = "client.pem";
    /// Business-client key.
    pub const CLIENT_KEY: &str = "client-key.pem";
    /// Operator certificate (membership, chip admission, status).
    pub const OPERATOR: &str = "operator.pem";
    /// Operator key.
    pub const OPERATOR_KEY: &str = "operator-key.pem";

    /// Risk-service / biometric-unit certificate (the business transaction module).
    pub const RISK: &str = "risk.pem";
    /// Risk-service key.
    pub const RISK_KEY: &str = "risk-key.pem";

    /// The certificate and key file names of a role's identity.
    pub fn identity(role: crate::Role) -> (&'static str, &'static str) {
        match role {
            crate::Role::Node => (NODE, NODE_KEY),
            crate::Role::Client => (CLIENT, CLIENT_KEY),
            crate::Role::Operator => (OPERATOR, OPERATOR_KEY),
            crate::Role::Risk => (RISK, RISK_KEY),
        }
    }
}

/// Who a certificate is issued to.
#[derive(Debug, Clone)]
pub struct Subject {
    /// What the holder may do.
    pub role: Role,
    /// Its name: the certificate's common name, shown in audit records
    /// (`[A-Za-z0-9._-]`, 1 to 64 characters).
    pub name: String,
    /// DNS names or IP addresses peers dial it at (required for nodes, which are servers).
    pub hosts: Vec<String>,
}

/// The cluster's TLS CA in a directory (`ca.pem`, `ca-key.pem`). Keep the directory offline;
/// only `ca.pem` goes to the nodes.
#[derive(Debug, Clone)]
pub struct ClusterCa {
    dir: PathBuf,
}

impl ClusterCa {
    /// Creates a new CA in `dir` (created if missing). Refuses to overwrite an existing CA.
    pub fn init(dir: &Path) -> Result<Self, NetError> {
        let ca = Self {
            dir: dir.to_owned(),
        };
        for name in [files::CA, files::CA_KEY] {
            if ca.dir.join(name).exists() {
                return Err(NetError::Certificate(format!(
                    "{} already exists; a CA is never overwritten (use another directory)",
                    ca.dir.join(name).display()
                )));
            }
        }
        create_dir(&ca.dir)?;
        let (ca_pem, ca_key_pem) = new_ca("yunkey cluster TLS CA")?;
        write(&ca.dir.join(files::CA_KEY), ca_key_pem.as_bytes(), true)?;
        write(&ca.dir.join(files::CA), ca_pem.as_bytes(), false)?;
        Ok(ca)
    }

    /// The CA in `dir`, which must hold both files.
    pub fn open(dir: &Path) -> Result<Self, NetError> {
        for name in [files::CA, files::CA_KEY] {
            if !dir.join(name).is_file() {
                return Err(NetError::Certificate(format!(
                    "{} is missing: not a CA directory (create one with `yunkey pki init`)",
                    dir.join(name).display()
                )));
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// Issues a certificate for `subject` into `out` (created if missing): a copy of
    /// `ca.pem`, and `node.pem`/`node-key.pem`, `client.pem`/`client-key.pem` or
    /// `operator.pem`/`operator-key.pem` (see [`files::identity`]), the layout `--tls-dir`
    /// expects. Refuses to overwrite an existing certificate or key.
    pub fn issue(&self, subject: &Subject, out: &Path) -> Result<TlsFiles, NetError> {
        let (cert_name, key_name) = files::identity(subject.role);
        for name in [cert_name, key_name] {
            if out.join(name).exists() {
                return Err(NetError::Certificate(format!(
                    "{} already exists; issue into an empty directory",
                    out.join(name).display()
                )));
            }
        }
        let ca_pem = read_string(&self.dir.join(files::CA))?;
        let ca_key_pem = read_string(&self.dir.join(files::CA_KEY))?;
        let (cert, key) = issue(&ca_pem, &ca_key_pem, subject)?;
        create_dir(out)?;
        write(&out.join(key_name), key.as_bytes(), true)?;
        write(&out.join(cert_name), cert.as_bytes(), false)?;
        write(&out.join(files::CA), ca_pem.as_bytes(), false)?;
        Ok(TlsFiles {
            ca: out.join(files::CA),
            cert: Some(out.join(cert_name)),
            key: Some(out.join(key_name)),
        })
    }
}

/// Paths of the dev PKI in a directory.
#[derive(Debug, Clone)]
pub struct DevPki {
    dir: PathBuf,
}

impl DevPki {
    /// The PKI in `dir`; creates any missing part. Existing files are kept, so restarting
    /// `yunkey dev` keeps clients' trust.
    pub fn ensure(dir: &Path) -> Result<Self, NetError> {
        let pki = Self {
            dir: dir.to_owned(),
        };
        if !pki.path(files::CA).exists() || !pki.path(files::CA_KEY).exists() {
            let (ca_pem, ca_key_pem) = new_ca("yunkey dev TLS CA")?;
            write(&pki.path(files::CA_KEY), ca_key_pem.as_bytes(), true)?;
            write(&pki.path(files::CA), ca_pem.as_bytes(), false)?;
        }
        let ca_key_pem = read_string(&pki.path(files::CA_KEY))?;
        let ca_pem = read_string(&pki.path(files::CA))?;
        for role in Role::ALL {
            let (cert, key) = files::identity(role);
            if !pki.path(cert).exists() || !pki.path(key).exists() {
                let subject = Subject {
                    role,
                    name: format!("dev-{role}"),
                    hosts: vec!["localhost".into(), "127.0.0.1".into()],
                };
                let (c, k) = issue(&ca_pem, &ca_key_pem, &subject)?;
                write(&pki.path(key), k.as_bytes(), true)?;
                write(&pki.path(cert), c.as_bytes(), false)?;
            }
        }
        Ok(pki)
    }

    /// `dir/name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// TLS files of a role's identity.
    pub fn tls_files(&self, role: Role) -> TlsFiles {
        let (cert, key) = files::identity(role);
        TlsFiles {
            ca: self.path(files::CA),
            cert: Some(self.path(cert)),
            key: Some(self.path(key)),
        }
    }
}

fn cert_err(e: rcgen::Error) -> NetError {
    NetError::Certificate(e.to_string())
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

fn new_ca(common_name: &str) -> Result<(String, String), NetError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "yunkey");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, 3650);
    let cert = params.self_signed(&key).map_err(cert_err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn check_subject(subject: &Subject) -> Result<(), NetError> {
    let name_ok = !subject.name.is_empty()
        && subject.name.len() <= 64
        && subject
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !name_ok {
        return Err(NetError::Certificate(format!(
            "name {:?} is invalid: use 1 to 64 of A-Z a-z 0-9 . _ -",
            subject.name
        )));
    }
    if subject.role == Role::Node && subject.hosts.is_empty() {
        return Err(NetError::Certificate(
            "a node certificate needs at least one host: the DNS name or IP address peers \
             dial it at"
                .into(),
        ));
    }
    Ok(())
}

fn host_san(host: &str) -> Result<SanType, NetError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !valid {
        return Err(NetError::Certificate(format!(
            "host {host:?} is neither an IP address nor a DNS name"
        )));
    }
    Ok(SanType::DnsName(host.try_into().map_err(cert_err)?))
}

fn issue(ca_pem: &str, ca_key_pem: &str, subject: &Subject) -> Result<(String, String), NetError> {
    check_subject(subject)?;
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(cert_err)?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key).map_err(cert_err)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "yunkey");
    dn.push(DnType::OrganizationalUnitName, subject.role.as_str());
    dn.push(DnType::CommonName, subject.name.as_str());
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(
        subject.role.uri().try_into().map_err(cert_err)?,
    )];
    for host in &subject.hosts {
        params.subject_alt_names.push(host_san(host)?);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    // Nodes and the business transaction module (the risk service, the biometric unit) are
    // servers as well as clients.
    if matches!(subject.role, Role::Node | Role::Risk) {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut params, 825);
    let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn create_dir(dir: &Path) -> Result<(), NetError> {
    std::fs::create_dir_all(dir).map_err(|source| NetError::Write {
        path: dir.display().to_string(),
        source,
    })
}

fn read_string(path: &Path) -> Result<String, NetError> {
    std::fs::read_to_string(path).map_err(|source| NetError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Writes a file; private ones are created with mode 0600. The file is synced, then the
/// directory, so a crash never leaves a half-written key behind a complete name.
fn write(path: &Path, data: &[u8], private: bool) -> Result<(), NetError> {
    use std::io::Write;
    let err = |source| NetError::Write {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(&tmp).map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_pki_roles_and_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::ensure(dir.path()).unwrap();
        let ca_before = std::fs::read(pki.path(files::CA)).unwrap();
        for (role, file) in [
            (Role::Node, files::NODE),
            (Role::Client, files::CLIENT),
            (Role::Operator, files::OPERATOR),
        ] {
            let pem = std::fs::read_to_string(pki.path(file)).unwrap();
            let der = pem_to_der(&pem);
            assert_eq!(crate::role::role_of_certificate(&der), Some(role));
        }
        let ca_der = pem_to_der(&String::from_utf8(ca_before.clone()).unwrap());
        assert_eq!(crate::role::role_of_certificate(&ca_der), None);
        DevPki::ensure(dir.path()).unwrap();
        assert_eq!(std::fs::read(pki.path(files::CA)).unwrap(), ca_before);
    }

    #[test]
    fn cluster_ca_issues_distinct_named_identities() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::init(&dir.path().join("ca")).unwrap();
        assert!(ClusterCa::init(&dir.path().join("ca"))
            .unwrap_err()
            .to_string()
            .contains("never overwritten"));
        let subject = |name: &str| Subject {
            role: Role::Node,
            name: name.into(),
            hosts: vec!["127.0.0.1".into(), "coord-1.example".into()],
        };
        let a = ca
            .issue(&subject("coord-1"), &dir.path().join("a"))
            .unwrap();
        let b = ca
            .issue(&subject("coord-2"), &dir.path().join("b"))
            .unwrap();
        let key = |f: &TlsFiles| std::fs::read(f.key.as_ref().unwrap()).unwrap();
        assert_ne!(key(&a), key(&b));
        let pem = std::fs::read_to_string(a.cert.as_ref().unwrap()).unwrap();
        let der = pem_to_der(&pem);
        assert_eq!(crate::role::role_of_certificate(&der), Some(Role::Node));
        let cert = <x509_cert::Certificate as der::Decode>::from_der(&der).unwrap();
        assert!(cert
            .tbs_certificate
            .subject
            .to_string()
            .contains("CN=coord-1"));
        // An operator identity: its own file names, role operator, no host needed.
        let ops = Subject {
            role: Role::Operator,
            name: "ops-alice".into(),
            hosts: vec![],
        };
        let o = ca.issue(&ops, &dir.path().join("ops")).unwrap();
        let cert = o.cert.as_ref().unwrap();
        assert!(cert.ends_with(files::OPERATOR), "{}", cert.display());
        assert!(o.key.as_ref().unwrap().ends_with(files::OPERATOR_KEY));
        let der = pem_to_der(&std::fs::read_to_string(cert).unwrap());
        assert_eq!(crate::role::role_of_certificate(&der), Some(Role::Operator));
        // Never overwritten; bad names and hosts refused with the reason.
        let again = ca.issue(&subject("coord-1"), &dir.path().join("a"));
        assert!(again.unwrap_err().to_string().contains("already exists"));
        let bad = ca.issue(&subject("co ord"), &dir.path().join("c"));
        assert!(bad.unwrap_err().to_string().contains("is invalid"));
        let mut no_host = subject("coord-3");
        no_host.hosts.clear();
        let err = ca.issue(&no_host, &dir.path().join("d")).unwrap_err();
        assert!(err.to_string().contains("at least one host"));
        no_host.hosts = vec!["bad host!".into()];
        let err = ca.issue(&no_host, &dir.path().join("d")).unwrap_err();
        assert!(err.to_string().contains("neither an IP"));
        assert!(ClusterCa::open(&dir.path().join("a"))
            .unwrap_err()
            .to_string()
            .contains("yunkey pki init"));
    }

    fn pem_to_der(pem: &str) -> Vec<u8> {
        use der::DecodePem;
        let cert = x509_cert::Certificate::from_pem(pem.as_bytes()).unwrap();
        der::Encode::to_der(&cert).unwrap()
    }
}
