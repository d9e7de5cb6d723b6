//! A device's side of the device channel ([`crate::server_tls`]): TLS 1.3 with the device
//! certificate as the client certificate, where the handshake's signature is made by the
//! device's keystore ([`HandshakeSigner`]), so the device key never leaves it, not even into
//! the TLS library.

use crate::tls::TlsMaterial;
use crate::NetError;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::SignatureAlgorithm;
pub use rustls::SignatureScheme;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Signs a TLS handshake with a device key held elsewhere (a keystore, a TEE).
pub trait HandshakeSigner: Send + Sync + fmt::Debug {
    /// The scheme the key signs with: `ECDSA_NISTP256_SHA256`, or
    /// [`crate::sm2_tls::SM2SIG_SM3`] for an SM2 key.
    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }

    /// A DER signature over `message` in [`HandshakeSigner::scheme`]: ECDSA P-256 over
    /// SHA-256(`message`), or SM2 over SM3 with the ID [`crate::sm2_tls::TLS13_SM2_ID`].
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String>;
}

/// A device's certificate and the signer of its key.
#[derive(Debug, Clone)]
pub struct DeviceIdentity {
    /// The device certificate (DER), issued by the user CA.
    pub certificate: Vec<u8>,
    /// Signs with the device key.
    pub signer: Arc<dyn HandshakeSigner>,
}

#[derive(Debug)]
struct KeystoreKey(Arc<dyn HandshakeSigner>);

impl SigningKey for KeystoreKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&self.0.scheme())
            .then(|| Box::new(KeystoreSigner(self.0.clone())) as Box<dyn Signer>)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct KeystoreSigner(Arc<dyn HandshakeSigner>);

impl Signer for KeystoreSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.0.sign(message).map_err(rustls::Error::General)
    }

    fn scheme(&self) -> SignatureScheme {
        self.0.scheme()
    }
}

#[derive(Debug)]
struct OneCertificate(Arc<CertifiedKey>, SignatureScheme);

impl ResolvesClientCert for OneCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        sigschemes.contains(&self.1).then(|| self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A TLS 1.3-only client config for HTTP/2 that trusts `tls`'s CA and presents `identity`.
pub fn client_config(
    tls: &TlsMaterial,
    identity: &DeviceIdentity,
) -> Result<rustls::ClientConfig, NetError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(tls.ca_pem()) {
        let cert: CertificateDer<'static> =
            cert.map_err(|e| NetError::Tls(format!("CA PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| NetError::Tls(format!("bad CA certificate: {e}")))?;
    }
    let key = CertifiedKey::new(
        vec![CertificateDer::from(identity.certificate.clone())],
        Arc::new(KeystoreKey(identity.signer.clone())),
    );
    let mut config =
        rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .with_root_certificates(roots)
            .with_client_cert_resolver(Arc::new(OneCertificate(
                Arc::new(key),
                identity.signer.scheme(),
            )));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A lazily connecting channel to `endpoint` (`https://host:port`) over the device channel:
/// TLS 1.3, `identity` as the client certificate, the server checked against `tls`'s CA and
/// `domain` (default: the endpoint's host). Same timeouts and keep-alives as
/// [`crate::pool::connect_lazy`].
pub fn connect_lazy(
    endpoint: &str,
    tls: &TlsMaterial,
    domain: Option<&str>,
    identity: &DeviceIdentity,
) -> Result<Channel, NetError> {
    let bad = |reason: String| NetError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let uri: tonic::codegen::http::Uri = endpoint.parse().map_err(|e| bad(format!("{e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad(
            "must start with https:// (yunkey always uses TLS)".into()
        ));
    }
    let host = uri
        .host()
        .ok_or_else(|| bad("has no host".into()))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let name = domain.map(str::to_owned).unwrap_or_else(|| host.clone());
    let server_name = ServerName::try_from(name.trim_matches(['[', ']']).to_owned())
        .map_err(|e| bad(format!("server name: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(tls, identity)?));
    // tonic would add its own TLS to an https URI; this connector does the TLS itself, so
    // tonic is given the plain form of the same address.
    let plain = format!("http://{}:{port}", uri.host().unwrap_or_default());
    let connect = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let connector = connector.clone();
        let server_name = server_name.clone();
        let host = host.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    let ep = Endpoint::from_shared(plain)
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(crate::pool::CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    Ok(ep.connect_with_connector_lazy(connect))
}
