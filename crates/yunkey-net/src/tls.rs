//! TLS identities and tonic TLS configs. Servers ask for a client certificate but do not
//! require one at the handshake: device traffic has none, and each service decides with
//! the access table ([`crate::access`]). A certificate that is presented must chain to the CA.

use crate::NetError;
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Paths of a TLS trust root and, optionally, an identity (certificate chain and key).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM of the CA that peers' certificates chain to.
    pub ca: PathBuf,
    /// PEM certificate chain of this side, if it has an identity.
    pub cert: Option<PathBuf>,
    /// PEM private key of this side.
    pub key: Option<PathBuf>,
}

/// Loaded PEM material.
#[derive(Clone)]
pub struct TlsMaterial {
    ca_pem: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("has_identity", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, NetError> {
    std::fs::read(path).map_err(|source| NetError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl TlsFiles {
    /// Reads the files.
    pub fn load(&self) -> Result<TlsMaterial, NetError> {
        let identity = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            (None, None) => None,
            _ => {
                return Err(NetError::Tls(
                    "a certificate needs its key and a key its certificate".into(),
                ))
            }
        };
        Ok(TlsMaterial {
            ca_pem: read(&self.ca)?,
            identity,
        })
    }
}

impl TlsMaterial {
    /// Material from PEM bytes already in memory.
    pub fn from_pem(ca_pem: Vec<u8>, identity: Option<(Vec<u8>, Vec<u8>)>) -> Self {
        Self { ca_pem, identity }
    }

    /// Server TLS: this identity, client certificates optional but verified against the CA.
    pub fn server(&self) -> Result<ServerTlsConfig, NetError> {
        let (cert, key) = self
            .identity
            .as_ref()
            .ok_or_else(|| NetError::Tls("a server needs a certificate and key".into()))?;
        Ok(ServerTlsConfig::new()
            .identity(Identity::from_pem(cert, key))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(true))
    }

    /// Client TLS: trust the CA, present the identity if there is one. `domain` is the name
    /// the server's certificate must carry (for example `localhost`).
    pub fn client(&self, domain: &str) -> ClientTlsConfig {
        let mut cfg = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name(domain.to_owned());
        if let Some((cert, key)) = &self.identity {
            cfg = cfg.identity(Identity::from_pem(cert, key));
        }
        cfg
    }

    /// The CA's PEM.
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }

    /// This side's certificate chain and key (PEM), if it has an identity.
    pub fn identity_pem(&self) -> Option<(&[u8], &[u8])> {
        self.identity
            .as_ref()
            .map(|(c, k)| (c.as_slice(), k.as_slice()))
    }

    /// A copy without the identity (as a device would connect).
    pub fn without_identity(&self) -> Self {
        Self {
            ca_pem: self.ca_pem.clone(),
            identity: None,
        }
    }
}
