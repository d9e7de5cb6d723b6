//! Peer roles. A yunkey certificate names its holder's role with a URI subject alternative
//! name `urn:yunkey:role:<role>`; the TLS layer has already verified the chain, so the role
//! read here is trustworthy.

use der::Decode;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};
use tonic::{Request, Status};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

/// URI prefix of a role SAN.
pub const ROLE_URI_PREFIX: &str = "urn:yunkey:role:";

/// Who a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A coordinator or chip process of the cluster.
    Node,
    /// A business backend: enrols users and asks for signatures (`KeyService`).
    Client,
    /// A person or tool that runs the cluster: membership, chip admission, and status.
    Operator,
    /// The business transaction module: the risk service (`yunkey risk`) and the biometric
    /// unit (`yunkey-face`). Serves `RiskService`/`FaceService`; calls `FaceService`.
    Risk,
}

impl Role {
    /// Every role, in the order the docs list them.
    pub const ALL: [Role; 4] = [Role::Client, Role::Operator, Role::Node, Role::Risk];

    /// The role named `name` (`node`, `client` or `operator`).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::from_uri(&format!("{ROLE_URI_PREFIX}{name}"))
    }

    /// The role's name in certificates.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Client => "client",
            Role::Operator => "operator",
            Role::Risk => "risk",
        }
    }

    /// The SAN URI that grants this role.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.as_str())
    }

    fn from_uri(uri: &str) -> Option<Self> {
        match uri.strip_prefix(ROLE_URI_PREFIX)? {
            "node" => Some(Role::Node),
            "client" => Some(Role::Client),
            "operator" => Some(Role::Operator),
            "risk" => Some(Role::Risk),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a certificate says about its holder, read once per distinct certificate
/// ([`identity_of_certificate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    /// The role its URI SANs name, if any.
    role: Option<Role>,
    /// The user and device its URI SANs name, if exactly one of each.
    device: Option<(String, String)>,
    /// Its subject, printed (`None` if it does not parse).
    subject: Option<String>,
}

/// Distinct certificates remembered by [`identity_of_certificate`]; the cache is emptied when
/// it is full. A cluster has a handful of node, client and operator certificates; device
/// certificates come and go.
const IDENTITY_CACHE_ENTRIES: usize = 4096;

/// The cache of [`identity_of_certificate`], by the certificate's DER bytes.
static IDENTITIES: LazyLock<Mutex<HashMap<Vec<u8>, Arc<Identity>>>> =
    LazyLock::new(Default::default);

/// The identity in a DER certificate. Every RPC reads its caller's (the access check, the
/// audit name), and parsing the certificate and printing its subject each time cost 2.7 % of
/// the machine under load (docs/performance.md, run L), so the answer is kept per
/// certificate's bytes. A
/// certificate is public, and what is kept is derived from it alone.
fn identity_of_certificate(der: &[u8]) -> Arc<Identity> {
    // A panic while the lock was held cannot leave a wrong entry: entries are inserted whole.
    let lock = || IDENTITIES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = lock().get(der) {
        return found.clone();
    }
    let identity = Arc::new(read_identity(der));
    let mut cache = lock();
    if cache.len() >= IDENTITY_CACHE_ENTRIES {
        cache.clear();
    }
    cache.insert(der.to_vec(), identity.clone());
    identity
}

fn read_identity(der: &[u8]) -> Identity {
    let Ok(cert) = Certificate::from_der(der) else {
        return Identity {
            role: None,
            device: None,
            subject: None,
        };
    };
    let subject = Some(cert.tbs_certificate.subject.to_string());
    let sans = uri_sans(&cert);
    let one = |prefix: &str| {
        let mut found = sans.iter().filter_map(|u| u.strip_prefix(prefix));
        match (found.next(), found.next()) {
            (Some(id), None) if !id.is_empty() => Some(id.to_owned()),
            _ => None,
        }
    };
    Identity {
        role: sans.iter().find_map(|uri| Role::from_uri(uri)),
        device: one(USER_URI_PREFIX).zip(one(DEVICE_URI_PREFIX)),
        subject,
    }
}

/// The URI subject alternative names of a certificate.
fn uri_sans(cert: &Certificate) -> Vec<String> {
    let Some(exts) = &cert.tbs_certificate.extensions else {
        return Vec::new();
    };
    let oid = der::oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME;
    exts.iter()
        .filter(|e| e.extn_id == oid)
        .filter_map(|e| SubjectAltName::from_der(e.extn_value.as_bytes()).ok())
        .flat_map(|san| san.0.into_iter())
        .filter_map(|name| match name {
            GeneralName::UniformResourceIdentifier(uri) => Some(uri.as_str().to_owned()),
            _ => None,
        })
        .collect()
}

/// The role in a DER certificate, if it names one.
pub fn role_of_certificate(der: &[u8]) -> Option<Role> {
    identity_of_certificate(der).role
}

/// The user and device a device certificate names (`urn:yunkey:user:<id>` and
/// `urn:yunkey:device:<id>`), if it names exactly one of each.
pub fn device_of_certificate(der: &[u8]) -> Option<(String, String)> {
    identity_of_certificate(der).device.clone()
}

/// A certificate's notAfter, in Unix seconds (`None` if it does not parse).
pub fn certificate_not_after(der: &[u8]) -> Option<i64> {
    let cert = Certificate::from_der(der).ok()?;
    let t = cert.tbs_certificate.validity.not_after.to_unix_duration();
    i64::try_from(t.as_secs()).ok()
}

/// URI prefix naming the user in user and device certificates (the same as
/// `yunkey_crypto::names`, which this crate does not depend on; a test in
/// `yunkey-coordinator` checks they agree).
pub const USER_URI_PREFIX: &str = "urn:yunkey:user:";
/// URI prefix naming the device in a device certificate.
pub const DEVICE_URI_PREFIX: &str = "urn:yunkey:device:";

/// A printable name of the caller of `req`: `<role>:<certificate subject>`, or
/// `anonymous` without a certificate. For audit records.
pub fn peer_name<T>(req: &Request<T>) -> String {
    let Some(certs) = req.peer_certs() else {
        return "anonymous".to_owned();
    };
    let Some(leaf) = certs.first() else {
        return "anonymous".to_owned();
    };
    let identity = identity_of_certificate(leaf.as_ref());
    let role = identity.role.map(Role::as_str).unwrap_or("unknown");
    match &identity.subject {
        Some(subject) => format!("{role}:{subject}"),
        None => role.to_owned(),
    }
}

/// The verified role of the caller of `req`, if it presented a certificate naming one.
pub fn peer_role<T>(req: &Request<T>) -> Option<Role> {
    let certs = req.peer_certs()?;
    role_of_certificate(certs.first()?.as_ref())
}

/// Admits the caller only if its certificate grants one of `allowed`.
pub fn require<T>(req: &Request<T>, allowed: &[Role]) -> Result<Role, Status> {
    let certs = req.peer_certs();
    check_certs(
        certs.as_deref().map(|c| c.as_slice()),
        allowed,
        "this service",
    )
}

/// Admits a peer that presented `certs` (leaf first; `None` without a client certificate)
/// only if the leaf grants one of `allowed`. `target` names what is being called, for the
/// message: UNAUTHENTICATED without a certificate, PERMISSION_DENIED with the wrong role or
/// none.
pub fn check_certs<C: AsRef<[u8]>>(
    certs: Option<&[C]>,
    allowed: &[Role],
    target: &str,
) -> Result<Role, Status> {
    let names = || {
        allowed
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let Some(leaf) = certs.and_then(|c| c.first()) else {
        return Err(Status::unauthenticated(format!(
            "{target} requires a client certificate with role {}; none was presented",
            names()
        )));
    };
    match role_of_certificate(leaf.as_ref()) {
        Some(role) if allowed.contains(&role) => Ok(role),
        Some(role) => Err(Status::permission_denied(format!(
            "client certificate has role {role}; {target} requires role {}",
            names()
        ))),
        None => Err(Status::permission_denied(format!(
            "client certificate names no yunkey role; {target} requires role {}",
            names()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_remembered_and_the_cache_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::pki::ClusterCa::init(&dir.path().join("ca")).unwrap();
        let subject = crate::pki::Subject {
            role: Role::Node,
            name: "node-1".into(),
            hosts: vec!["localhost".into()],
        };
        let files = ca.issue(&subject, &dir.path().join("node")).unwrap();
        let pem = std::fs::read(files.cert.unwrap()).unwrap();
        let der =
            der::Encode::to_der(&<Certificate as der::DecodePem>::from_pem(&pem).unwrap()).unwrap();
        assert_eq!(role_of_certificate(&der), Some(Role::Node));
        let first = identity_of_certificate(&der);
        assert!(Arc::ptr_eq(&first, &identity_of_certificate(&der)));
        assert!(
            first.subject.as_deref().unwrap().contains("node-1"),
            "{first:?}"
        );
        for i in 0..IDENTITY_CACHE_ENTRIES as u32 + 10 {
            let garbage = i.to_be_bytes();
            assert_eq!(role_of_certificate(&garbage), None);
            assert_eq!(device_of_certificate(&garbage), None);
        }
        assert!(IDENTITIES.lock().unwrap().len() <= IDENTITY_CACHE_ENTRIES);
        // Forgotten when the cache was emptied, and read again the same.
        assert_eq!(role_of_certificate(&der), Some(Role::Node));
    }
}
