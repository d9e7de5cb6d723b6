//! The development PKI of `yunkey dev`: one CA, a node identity (coordinators and chips) and
//! a client identity (business backends). Production deployments bring their own CA and
//! issue certificates with the same role SANs (see docs/security.md).

use crate::{NetError, Role};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};

/// File names inside a dev data directory.
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
            let (ca_pem, ca_key_pem) = new_ca()?;
            write(&pki.path(files::CA_KEY), ca_key_pem.as_bytes(), true)?;
            write(&pki.path(files::CA), ca_pem.as_bytes(), false)?;
        }
        let ca_key_pem = read_string(&pki.path(files::CA_KEY))?;
        let ca_pem = read_string(&pki.path(files::CA))?;
        for (role, cert, key) in [
            (Role::Node, files::NODE, files::NODE_KEY),
            (Role::Client, files::CLIENT, files::CLIENT_KEY),
        ] {
            if !pki.path(cert).exists() || !pki.path(key).exists() {
                let (c, k) = issue(&ca_pem, &ca_key_pem, role)?;
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
    pub fn tls_files(&self, role: Role) -> crate::TlsFiles {
        let (cert, key) = match role {
            Role::Node => (files::NODE, files::NODE_KEY),
            Role::Client => (files::CLIENT, files::CLIENT_KEY),
        };
        crate::TlsFiles {
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

fn new_ca() -> Result<(String, String), NetError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "yunkey dev");
    dn.push(DnType::CommonName, "yunkey dev TLS CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, 3650);
    let cert = params.self_signed(&key).map_err(cert_err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn issue(ca_pem: &str, ca_key_pem: &str, role: Role) -> Result<(String, String), NetError> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(cert_err)?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key).map_err(cert_err)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "yunkey dev");
    dn.push(DnType::CommonName, format!("yunkey dev {role}"));
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(role.uri().try_into().map_err(cert_err)?)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if role == Role::Node {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
        params.subject_alt_names.extend([
            SanType::DnsName("localhost".try_into().map_err(cert_err)?),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ]);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut params, 825);
    let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
    Ok((cert.pem(), key.serialize_pem()))
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
        for (role, file) in [(Role::Node, files::NODE), (Role::Client, files::CLIENT)] {
            let pem = std::fs::read_to_string(pki.path(file)).unwrap();
            let der = pem_to_der(&pem);
            assert_eq!(crate::role::role_of_certificate(&der), Some(role));
        }
        let ca_der = pem_to_der(&String::from_utf8(ca_before.clone()).unwrap());
        assert_eq!(crate::role::role_of_certificate(&ca_der), None);
        DevPki::ensure(dir.path()).unwrap();
        assert_eq!(std::fs::read(pki.path(files::CA)).unwrap(), ca_before);
    }

    fn pem_to_der(pem: &str) -> Vec<u8> {
        use der::DecodePem;
        let cert = x509_cert::Certificate::from_pem(pem.as_bytes()).unwrap();
        der::Encode::to_der(&cert).unwrap()
    }
}
