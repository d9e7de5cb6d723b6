use thiserror::Error;

/// A client-side failure.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("{code:?}: {message}")]
    Status {
        /// gRPC code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
    /// Connection set-up failed.
    #[error("{0}")]
    Net(#[from] yunkey_net::NetError),
    /// The keystore failed.
    #[error("keystore: {0}")]
    Keystore(String),
    /// The PIN does not open the device key.
    #[error("wrong PIN (the device key did not open)")]
    WrongPin,
    /// Bad input on the client side.
    #[error("{0}")]
    Invalid(String),
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        ClientError::Status {
            code: s.code(),
            message: s.message().to_owned(),
        }
    }
}

impl From<yunkey_crypto::validate::InvalidField> for ClientError {
    fn from(e: yunkey_crypto::validate::InvalidField) -> Self {
        ClientError::Invalid(e.to_string())
    }
}
