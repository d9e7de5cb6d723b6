use thiserror::Error;

/// A transport set-up failure.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NetError {
    /// A TLS file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// A TLS file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Certificate(String),
    /// An endpoint is not a valid URL.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it is refused.
        reason: String,
    },
    /// TLS configuration failed.
    #[error("TLS configuration failed: {0}")]
    Tls(String),
}
