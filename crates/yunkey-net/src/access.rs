//! Who may call which RPC: one table, [`RPC_ROLES`], enforced by [`AccessLayer`] in front of
//! every yunkey gRPC server, and printed in `docs/api.md` (a unit test keeps the two equal).
//!
//! The layer reads the gRPC path (`/yunkey.v1.ClusterService/AddNode`) and the caller's verified
//! client certificate, and refuses before the request is decoded:
//! - a path that has no row: PERMISSION_DENIED (default deny: a new RPC is unreachable until
//!   it has a row);
//! - no client certificate where a role is needed: UNAUTHENTICATED;
//! - a certificate whose role is not in the row: PERMISSION_DENIED.
//!
//! Role summary: `client` is a business backend (KeyService); `operator` runs the cluster
//! (membership, chip admission, chips' list); `node` is a coordinator or chip (RaftService,
//! ChipService). No role implies another: an operator certificate cannot enrol or sign, a
//! node certificate cannot change membership or admit a chip.

use crate::role::{check_certs, device_of_certificate, role_of_certificate, Role};
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::codegen::http;
use tonic::codegen::Service;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

/// Who may call an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// Anyone who completes the TLS handshake, with or without a client certificate.
    Anyone,
    /// Only a client certificate naming one of these roles.
    Roles(&'static [Role]),
    /// Only a device certificate (issued by the user CA, naming a user and a device, no
    /// role). The service then checks it against the device's registration.
    Device,
}

/// Which process serves an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServedBy {
    /// Every coordinator, on its one TLS port.
    Coordinator,
    /// Every chip.
    Chip,
    /// The business's risk service (`yunkey risk`, or the business's own).
    Risk,
    /// The biometric unit (`yunkey-face`).
    Face,
}

impl ServedBy {
    /// Its name in the docs.
    pub fn as_str(self) -> &'static str {
        match self {
            ServedBy::Coordinator => "coordinator",
            ServedBy::Chip => "chip",
            ServedBy::Risk => "risk service",
            ServedBy::Face => "biometric unit",
        }
    }
}

/// One RPC and the roles it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcRule {
    /// Fully qualified service name, `yunkey.v1.ClusterService`.
    pub service: &'static str,
    /// Method name, `AddNode`.
    pub method: &'static str,
    /// Who serves it.
    pub served_by: ServedBy,
    /// Who may call it.
    pub allowed: Allowed,
    /// Why, in a few words (shown in the docs).
    pub why: &'static str,
}

impl RpcRule {
    /// The gRPC path, `/service/method`.
    pub fn path(&self) -> String {
        format!("/{}/{}", self.service, self.method)
    }

    /// Whether a caller with `role` (`None`: no client certificate) is admitted.
    pub fn admits(&self, role: Option<Role>) -> bool {
        match self.allowed {
            Allowed::Anyone => true,
            Allowed::Roles(roles) => role.is_some_and(|r| roles.contains(&r)),
            Allowed::Device => false,
        }
    }
}

/// `yunkey.v1.KeyService`.
pub const KEY_SERVICE: &str = "yunkey.v1.KeyService";
/// `yunkey.v1.TerminalService`.
pub const TERMINAL_SERVICE: &str = "yunkey.v1.TerminalService";
/// `yunkey.v1.ClusterService`.
pub const CLUSTER_SERVICE: &str = "yunkey.v1.ClusterService";
/// `yunkey.v1.ChipService`.
pub const CHIP_SERVICE: &str = "yunkey.v1.ChipService";
/// `yunkey.v1.RaftService`.
pub const RAFT_SERVICE: &str = "yunkey.v1.RaftService";
/// `yunkey.v1.RiskService`.
pub const RISK_SERVICE: &str = "yunkey.v1.RiskService";
/// `yunkey.v1.FaceService`.
pub const FACE_SERVICE: &str = "yunkey.v1.FaceService";
/// `grpc.health.v1.Health`.
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
/// `grpc.reflection.v1.ServerReflection`.
pub const REFLECTION_SERVICE: &str = "grpc.reflection.v1.ServerReflection";

const CLIENT: &[Role] = &[Role::Client];
const OPERATOR: &[Role] = &[Role::Operator];
const NODE: &[Role] = &[Role::Node];
const RISK: &[Role] = &[Role::Risk];
const OPERATOR_NODE: &[Role] = &[Role::Operator, Role::Node];
const ANY_ROLE: &[Role] = &[Role::Client, Role::Operator, Role::Node];

const fn rule(
    service: &'static str,
    method: &'static str,
    served_by: ServedBy,
    allowed: Allowed,
    why: &'static str,
) -> RpcRule {
    RpcRule {
        service,
        method,
        served_by,
        allowed,
        why,
    }
}

const fn key(method: &'static str, why: &'static str) -> RpcRule {
    rule(
        KEY_SERVICE,
        method,
        ServedBy::Coordinator,
        Allowed::Roles(CLIENT),
        why,
    )
}

const fn terminal(method: &'static str, allowed: Allowed, why: &'static str) -> RpcRule {
    rule(
        TERMINAL_SERVICE,
        method,
        ServedBy::Coordinator,
        allowed,
        why,
    )
}

const fn cluster(method: &'static str, roles: &'static [Role], why: &'static str) -> RpcRule {
    rule(
        CLUSTER_SERVICE,
        method,
        ServedBy::Coordinator,
        Allowed::Roles(roles),
        why,
    )
}

/// A `ChipService` row: every chip RPC needs role `node`.
const fn chip(method: &'static str) -> RpcRule {
    rule(
        CHIP_SERVICE,
        method,
        ServedBy::Chip,
        Allowed::Roles(NODE),
        "internal: coordinators call chips",
    )
}

/// A `RiskService` row: the coordinators (role `node`) call it.
const fn risk(method: &'static str, why: &'static str) -> RpcRule {
    rule(
        RISK_SERVICE,
        method,
        ServedBy::Risk,
        Allowed::Roles(NODE),
        why,
    )
}

const fn raft(method: &'static str) -> RpcRule {
    rule(
        RAFT_SERVICE,
        method,
        ServedBy::Coordinator,
        Allowed::Roles(NODE),
        "internal: Raft between coordinators",
    )
}

/// Every RPC a yunkey process serves and who may call it. A path not listed here is refused.
///
/// To add an RPC, add its row here (for `ChipService`: `chip("Name")`), then run
/// `cargo test -p yunkey-net` and paste the table it prints into `docs/api.md`.
pub const RPC_ROLES: &[RpcRule] = &[
    key("EnrollUser", "business API"),
    key("GetUser", "business API"),
    key("RevokeUser", "business API"),
    key("RevokeDevice", "business API"),
    key("ReactivateUser", "business API"),
    key("Sign", "business API"),
    key("SignBatch", "business API"),
    key("Verify", "business API"),
    key(
        "EnrollFace",
        "business API; forwarded to the risk service",
    ),
    key(
        "DeleteFace",
        "business API; forwarded to the risk service",
    ),
    key("GetUserAudit", "business API"),
    terminal(
        "RegisterDevice",
        Allowed::Anyone,
        "the device proves itself with its own key and the activation code",
    ),
    terminal(
        "SignTransaction",
        Allowed::Device,
        "the device channel: mutual TLS with the device certificate, then its authorization",
    ),
    terminal("GetTime", Allowed::Anyone, "public clock for devices"),
    terminal(
        "RenewDevice",
        Allowed::Device,
        "the device channel: the current certificate renews itself",
    ),
    cluster(
        "Status",
        ANY_ROLE,
        "read-only; businesses read the user CA certificate and readiness from it",
    ),
    cluster(
        "ListChips",
        OPERATOR_NODE,
        "read-only; chip endpoints are for operators",
    ),
    cluster(
        "GetPlacement",
        OPERATOR_NODE,
        "read-only; a user's holders and what the reconciler will do",
    ),
    cluster(
        "AdmitChip",
        OPERATOR,
        "hands the security domain to a chip",
    ),
    cluster(
        "DrainChip",
        OPERATOR,
        "moves every key off a chip",
    ),
    cluster(
        "RemoveChip",
        OPERATOR,
        "takes a chip out of the registry (refused while it holds keys)",
    ),
    cluster(
        "AddNode",
        OPERATOR,
        "membership; served by the leader only (a follower answers UNAVAILABLE with the leader's address)",
    ),
    cluster(
        "RemoveNode",
        OPERATOR,
        "membership; served by the leader only (as AddNode)",
    ),
    cluster(
        "WriteProbe",
        ANY_ROLE,
        "a no-op Raft write: a write-health check that changes no state",
    ),
    cluster(
        "SignRelease",
        OPERATOR,
        "signs a terminal release with the code-signing key in chips",
    ),
    cluster(
        "RevokeRelease",
        OPERATOR,
        "devices presenting a revoked release are refused",
    ),
    cluster(
        "SetReleasePolicy",
        OPERATOR,
        "which terminal releases the cluster accepts",
    ),
    cluster(
        "ListReleases",
        OPERATOR,
        "the signed releases, the policy and the code-signing certificate",
    ),
    chip("GetInfo"),
    chip("InitDomain"),
    chip("ExportDomain"),
    chip("ImportDomain"),
    chip("SetTrustAnchor"),
    chip("GenerateKey"),
    chip("BindDevice"),
    chip("UpdateBinding"),
    chip("RevokeBinding"),
    chip("SetActivation"),
    chip("SignAuthorized"),
    chip("SignAuthorizedBatch"),
    chip("IssueCertificate"),
    chip("WrapKey"),
    chip("UnwrapKey"),
    chip("DeleteKey"),
    chip("ListKeys"),
    chip("SignManifest"),
    risk(
        "AssessRisk",
        "internal: coordinators ask before every signature",
    ),
    risk(
        "AuthenticateUser",
        "internal: coordinators ask on a step-up",
    ),
    risk("EnrollFace", "internal: forwarded KeyService.EnrollFace"),
    risk("DeleteFace", "internal: forwarded KeyService.DeleteFace"),
    rule(
        FACE_SERVICE,
        "Embed",
        ServedBy::Face,
        Allowed::Roles(RISK),
        "internal: the risk service asks the biometric unit",
    ),
    raft("AppendEntries"),
    raft("AppendEntriesStream"),
    raft("Vote"),
    raft("InstallSnapshot"),
    raft("ClientWrite"),
    raft("ReadIndex"),
    rule(
        HEALTH_SERVICE,
        "Check",
        ServedBy::Coordinator,
        Allowed::Anyone,
        "readiness for load balancers",
    ),
    rule(
        HEALTH_SERVICE,
        "Watch",
        ServedBy::Coordinator,
        Allowed::Anyone,
        "readiness for load balancers",
    ),
    rule(
        REFLECTION_SERVICE,
        "ServerReflectionInfo",
        ServedBy::Coordinator,
        Allowed::Anyone,
        "the public schema, for grpcurl",
    ),
];

/// The row of a gRPC path (`/service/method`), if any.
pub fn rule_for_path(path: &str) -> Option<&'static RpcRule> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    RPC_ROLES
        .iter()
        .find(|r| r.service == service && r.method == method)
}

/// The row of `service` and `method`, if any.
pub fn rule_for(service: &str, method: &str) -> Option<&'static RpcRule> {
    RPC_ROLES
        .iter()
        .find(|r| r.service == service && r.method == method)
}

/// Decides a call to `path` by a peer that presented `certs` (leaf first), per [`RPC_ROLES`].
/// Returns the caller's role (`None`: no role was needed and none was checked).
pub fn check<C: AsRef<[u8]>>(path: &str, certs: Option<&[C]>) -> Result<Option<Role>, Status> {
    let Some(rule) = rule_for_path(path) else {
        return Err(Status::permission_denied(format!(
            "{path} is not in yunkey's access table (yunkey_net::access::RPC_ROLES); \
             nobody may call it"
        )));
    };
    let target = || format!("{}/{}", rule.service, rule.method);
    match rule.allowed {
        Allowed::Anyone => Ok(None),
        Allowed::Roles(roles) => check_certs(certs, roles, &target()).map(Some),
        Allowed::Device => {
            let Some(leaf) = certs.and_then(|c| c.first()) else {
                return Err(Status::unauthenticated(format!(
                    "{} requires the device certificate as the TLS client certificate (the \
                     device channel); none was presented",
                    target()
                )));
            };
            if role_of_certificate(leaf.as_ref()).is_some()
                || device_of_certificate(leaf.as_ref()).is_none()
            {
                return Err(Status::permission_denied(format!(
                    "{} requires a device certificate; the client certificate is not one",
                    target()
                )));
            }
            Ok(None)
        }
    }
}

/// The table as it appears in `docs/api.md`.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| service | RPC | roles accepted | served by | why |\n|---|---|---|---|---|\n",
    );
    for r in RPC_ROLES {
        let roles = match r.allowed {
            Allowed::Anyone => "anyone (no certificate needed)".to_owned(),
            Allowed::Device => "a device (its device certificate)".to_owned(),
            Allowed::Roles(roles) => roles
                .iter()
                .map(|r| format!("`{r}`"))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let _ = writeln!(
            out,
            "| `{}` | `{}` | {roles} | {} | {} |",
            r.service,
            r.method,
            r.served_by.as_str(),
            r.why
        );
    }
    out
}

/// A tower layer that enforces [`RPC_ROLES`] in front of a tonic server:
/// `Server::builder().tls_config(..)?.layer(AccessLayer)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLayer;

impl<S> tower_layer::Layer<S> for AccessLayer {
    type Service = Access<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Access { inner }
    }
}

/// The service [`AccessLayer`] wraps around a server's routes.
#[derive(Debug, Clone)]
pub struct Access<S> {
    inner: S,
}

impl<S, B, ResBody> Service<http::Request<B>> for Access<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let certs = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs());
        match check(req.uri().path(), certs.as_deref().map(|c| c.as_slice())) {
            Ok(_) => {
                // The clone that was polled ready serves this call (tower's usual pattern).
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                Box::pin(ready.call(req))
            }
            Err(status) => {
                tracing::info!(
                    target: "yunkey::audit",
                    path = req.uri().path(),
                    code = ?status.code(),
                    reason = status.message(),
                    "call refused by the access table"
                );
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn rows_are_unique_and_paths_resolve() {
        let mut seen = BTreeSet::new();
        for r in RPC_ROLES {
            assert!(seen.insert(r.path()), "{} is listed twice", r.path());
            assert_eq!(rule_for_path(&r.path()), Some(r));
            assert_eq!(rule_for(r.service, r.method), Some(r));
        }
        assert!(rule_for_path("/yunkey.v1.ClusterService/Drain").is_none());
        assert!(rule_for_path("ClusterService/AddNode").is_none());
    }

    #[test]
    fn membership_and_admission_are_operator_only() {
        for method in ["AddNode", "RemoveNode", "AdmitChip"] {
            let r = rule_for(CLUSTER_SERVICE, method).unwrap();
            assert_eq!(r.allowed, Allowed::Roles(&[Role::Operator]), "{method}");
            assert!(!r.admits(Some(Role::Client)) && !r.admits(Some(Role::Node)));
            assert!(!r.admits(None));
        }
        // Every chip RPC: node only.
        for r in RPC_ROLES.iter().filter(|r| r.service == CHIP_SERVICE) {
            assert_eq!(r.allowed, Allowed::Roles(&[Role::Node]), "{}", r.method);
            assert_eq!(r.served_by, ServedBy::Chip);
        }
        // The business API: client only.
        for r in RPC_ROLES.iter().filter(|r| r.service == KEY_SERVICE) {
            assert_eq!(r.allowed, Allowed::Roles(&[Role::Client]), "{}", r.method);
        }
    }

    #[test]
    fn unknown_path_and_missing_certificate_are_refused() {
        let none: Option<&[Vec<u8>]> = None;
        let err = check("/yunkey.v1.ClusterService/Drain", none).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(err.message().contains("access table"), "{err:?}");
        let err = check("/yunkey.v1.ClusterService/AddNode", none).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(
            err.message().contains(
                "ClusterService/AddNode requires a client certificate with role operator"
            ),
            "{err:?}"
        );
        assert_eq!(
            check("/yunkey.v1.TerminalService/GetTime", none).unwrap(),
            None
        );
        // A certificate that names no role (garbage DER here) is refused, not trusted.
        let junk = [vec![0u8; 8]];
        let err = check("/yunkey.v1.KeyService/Sign", Some(&junk[..])).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(err.message().contains("names no yunkey role"), "{err:?}");
    }

    #[test]
    fn roles_are_checked_against_real_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::pki::DevPki::ensure(dir.path()).unwrap();
        let der = |role: Role| {
            let (cert, _) = crate::pki::files::identity(role);
            use der::DecodePem;
            let pem = std::fs::read(pki.path(cert)).unwrap();
            let cert = x509_cert::Certificate::from_pem(&pem).unwrap();
            vec![der::Encode::to_der(&cert).unwrap()]
        };
        for r in RPC_ROLES {
            for role in Role::ALL {
                let certs = der(role);
                let got = check(&r.path(), Some(&certs[..]));
                if r.admits(Some(role)) {
                    assert!(got.is_ok(), "{} refused {role}: {got:?}", r.path());
                } else {
                    let err = got.unwrap_err();
                    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{}", r.path());
                    let why = match r.allowed {
                        Allowed::Device => "requires a device certificate".to_owned(),
                        _ => format!("role {role}"),
                    };
                    assert!(err.message().contains(&why), "{err:?}");
                }
            }
        }
    }

    /// `docs/api.md` prints [`RPC_ROLES`] between two markers; they must agree.
    #[test]
    fn docs_table_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md");
        let docs = std::fs::read_to_string(path).unwrap();
        let begin = "<!-- rpc-roles: generated from yunkey_net::access::RPC_ROLES -->\n";
        let end = "<!-- /rpc-roles -->";
        let start = docs
            .find(begin)
            .unwrap_or_else(|| panic!("docs/api.md lacks the marker {begin:?}"))
            + begin.len();
        let stop = start + docs[start..].find(end).expect("end marker");
        let expected = markdown_table();
        assert!(
            docs[start..stop] == expected,
            "docs/api.md's RPC role table differs from yunkey_net::access::RPC_ROLES; \
             replace it with:\n{expected}"
        );
    }
}
