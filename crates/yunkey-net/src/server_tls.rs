//! The coordinators' TLS: one port for every caller, TLS 1.3 only, with client certificates
//! from two roots.
//!
//! - Nodes, business clients and operators present certificates of the cluster's TLS CA
//!   (`yunkey pki`), whose role SAN the access table reads ([`crate::access`]).
//! - Devices present their device certificate, issued by the user CA whose key lives in
//!   chips. That CA exists only once the cluster has made it, so it is looked up at run time
//!   (the `user_ca` source of [`ClientRoots::new`]) until it is found, then kept. A certificate
//!   of the user CA that names a role is refused at the handshake: roles come from the
//!   cluster CA only.
//! - An expired device certificate passes the handshake, so that the service can refuse it
//!   with a status that says it expired; every device-channel RPC checks it
//!   (`yunkey_coordinator::devices::check_peer`).
//! - Callers without a certificate are let through the handshake; the access table admits them
//!   to the few RPCs anyone may call (device registration, the clock, health).
//!
//! TLS 1.3 always negotiates a fresh (EC)DHE key, so every session has its own keys. The
//! handshakes run concurrently, each bounded by [`HANDSHAKE_TIMEOUT`], off the accept loop.

use crate::role::role_of_certificate;
use crate::sm2_tls::{Sm2Ca, SM2SIG_SM3};
use crate::whole_frames::WholeFrames;
use crate::NetError;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Longest a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn verifier(roots: Vec<CertificateDer<'static>>) -> Result<Arc<dyn ClientCertVerifier>, NetError> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store
            .add(root)
            .map_err(|e| NetError::Tls(format!("bad trust root: {e}")))?;
    }
    WebPkiClientVerifier::builder(Arc::new(store))
        .allow_unauthenticated()
        .build()
        .map_err(|e| NetError::Tls(e.to_string()))
}

/// The user CA certificate (DER) and the verifier of certificates it issued.
type UserCa = (Vec<u8>, Arc<dyn ClientCertVerifier>);

/// Where the user CA certificate (DER) comes from, once it exists.
pub type UserCaSource = Box<dyn Fn() -> Option<Vec<u8>> + Send + Sync>;

/// The client-certificate roots of a coordinator: the cluster CA, and the user CA once known.
pub struct ClientRoots {
    cluster: Arc<dyn ClientCertVerifier>,
    user_ca: RwLock<Option<UserCa>>,
    user_ca_source: UserCaSource,
    sm2_user_ca: RwLock<Option<Arc<Sm2Ca>>>,
    sm2_user_ca_source: UserCaSource,
}

impl fmt::Debug for ClientRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientRoots")
            .field("has_user_ca", &self.has_user_ca())
            .finish_non_exhaustive()
    }
}

impl ClientRoots {
    /// Roots with the cluster CA (PEM, one or more certificates), and the user CAs from
    /// `user_ca` (ECDSA P-256) and `sm2_user_ca` as soon as they return one (asked at
    /// handshakes until then).
    pub fn new(
        cluster_ca_pem: &[u8],
        user_ca: UserCaSource,
        sm2_user_ca: UserCaSource,
    ) -> Result<Self, NetError> {
        let roots = CertificateDer::pem_slice_iter(cluster_ca_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| NetError::Tls(format!("cluster CA PEM: {e}")))?;
        if roots.is_empty() {
            return Err(NetError::Tls(
                "the cluster CA PEM holds no certificate".into(),
            ));
        }
        Ok(Self {
            cluster: verifier(roots)?,
            user_ca: RwLock::new(None),
            user_ca_source: user_ca,
            sm2_user_ca: RwLock::new(None),
            sm2_user_ca_source: sm2_user_ca,
        })
    }

    /// Trusts device certificates of the user CA `der`. The user CA is write-once: setting
    /// the same certificate again does nothing; another one replaces it (logged).
    pub fn set_user_ca(&self, der: &[u8]) -> Result<(), NetError> {
        if let Some((current, _)) = &*self.user_ca.read().expect("roots lock") {
            if current == der {
                return Ok(());
            }
            tracing::warn!("the user CA certificate changed; trusting the new one for devices");
        }
        let v = verifier(vec![CertificateDer::from(der.to_vec())])?;
        *self.user_ca.write().expect("roots lock") = Some((der.to_vec(), v));
        Ok(())
    }

    /// The SM2 user CA: the one known, else the source's (kept from then on).
    fn sm2_user_ca(&self) -> Option<Arc<Sm2Ca>> {
        if let Some(known) = self.sm2_user_ca.read().expect("roots lock").clone() {
            return Some(known);
        }
        let der = (self.sm2_user_ca_source)()?;
        match Sm2Ca::parse(&der) {
            Ok(ca) => {
                let ca = Arc::new(ca);
                *self.sm2_user_ca.write().expect("roots lock") = Some(ca.clone());
                tracing::info!(
                    "device certificates of the SM2 user CA are trusted on the TLS port"
                );
                Some(ca)
            }
            Err(e) => {
                tracing::error!(error = %e, "the SM2 user CA certificate is not usable for TLS");
                None
            }
        }
    }

    /// Checks a device certificate of the SM2 user CA (webpki does not know SM2), with the
    /// same leniency for an expired one as the P-256 path.
    fn verify_sm2_device(
        &self,
        end_entity: &CertificateDer<'_>,
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ca = self.sm2_user_ca().ok_or(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ))?;
        let at = match crate::role::certificate_not_after(end_entity.as_ref()) {
            Some(not_after) if not_after >= 0 && (not_after as u64) < now.as_secs() => {
                not_after as u64
            }
            _ => now.as_secs(),
        };
        ca.verify(end_entity.as_ref(), at)?;
        if role_of_certificate(end_entity.as_ref()).is_some() {
            return Err(rustls::Error::General(
                "a certificate of the user CA may not name a role".into(),
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    /// Whether device certificates are trusted yet.
    pub fn has_user_ca(&self) -> bool {
        self.user_ca.read().expect("roots lock").is_some()
    }

    fn known_user_ca(&self) -> Option<Arc<dyn ClientCertVerifier>> {
        self.user_ca
            .read()
            .expect("roots lock")
            .as_ref()
            .map(|(_, v)| v.clone())
    }

    /// The user CA's verifier: the one known, else the source's (kept from then on).
    fn user_ca(&self) -> Option<Arc<dyn ClientCertVerifier>> {
        if let Some(known) = self.known_user_ca() {
            return Some(known);
        }
        let der = (self.user_ca_source)()?;
        if let Err(e) = self.set_user_ca(&der) {
            tracing::error!(error = %e, "the user CA certificate is not usable for TLS");
            return None;
        }
        tracing::info!("device certificates of the user CA are trusted on the TLS port");
        self.known_user_ca()
    }
}

impl ClientCertVerifier for ClientRoots {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Optional in TLS 1.3; every yunkey client holds one certificate anyway.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if crate::sm2_tls::signed_with_sm2(end_entity.as_ref()) {
            return self.verify_sm2_device(end_entity, now);
        }
        let by_cluster = self
            .cluster
            .verify_client_cert(end_entity, intermediates, now);
        if by_cluster.is_ok() {
            return by_cluster;
        }
        let Some(user_ca) = self.user_ca() else {
            return by_cluster;
        };
        // An expired device certificate is let through the handshake (its chain still checked,
        // as of its last valid second), so that the device channel can refuse it with a status
        // that says so, instead of a bare TLS alert; the service refuses every expired one.
        let at = match crate::role::certificate_not_after(end_entity.as_ref()) {
            Some(not_after) if not_after >= 0 && (not_after as u64) < now.as_secs() => {
                UnixTime::since_unix_epoch(Duration::from_secs(not_after as u64))
            }
            _ => now,
        };
        let by_user_ca = user_ca.verify_client_cert(end_entity, intermediates, at);
        match by_user_ca {
            Ok(v) if role_of_certificate(end_entity.as_ref()).is_none() => Ok(v),
            Ok(_) => Err(rustls::Error::General(
                "a certificate of the user CA may not name a role".into(),
            )),
            // A device certificate (issued by the user CA) gets the user CA's reason, such as
            // "expired"; anything else the cluster CA's.
            Err(e) if crate::role::device_of_certificate(end_entity.as_ref()).is_some() => Err(e),
            Err(_) => by_cluster,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.cluster.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme == SM2SIG_SM3 {
            return crate::sm2_tls::verify_handshake(message, cert, dss);
        }
        self.cluster.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        let mut schemes = self.cluster.supported_verify_schemes();
        schemes.push(SM2SIG_SM3);
        schemes
    }
}

/// A TLS 1.3-only server config for HTTP/2 with this identity (PEM chain and key) and
/// these client roots.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    roots: Arc<ClientRoots>,
) -> Result<rustls::ServerConfig, NetError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NetError::Tls(format!("server certificate PEM: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| NetError::Tls(format!("server key PEM: {e}")))?;
    let mut config =
        rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .with_client_cert_verifier(roots)
            .with_single_cert(chain, key)
            .map_err(|e| NetError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// TLS connections accepted on `listener` (with `TCP_NODELAY`), for
/// `Server::serve_with_incoming`, each wrapped so that a small response goes out in one write
/// ([`WholeFrames`]). Each handshake runs in its own task, bounded by
/// [`HANDSHAKE_TIMEOUT`]; a failed one is logged at debug level and dropped. The accept loop
/// ends when the returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<WholeFrames<TlsStream<TcpStream>>>> {
    let acceptor = TlsAcceptor::from(config);
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Err(e) = stream.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY");
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(WholeFrames(tls))).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
