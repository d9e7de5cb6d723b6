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
        /// The typed reason, when the server named one (decide on this, not on the message).
        reason: Option<yunkey_net::reason::Reason>,
    },
    /// Connection set-up failed.
    #[error("{0}")]
    Net(#[from] yunkey_net::NetError),
    /// The keystore failed.
    #[error("keystore: {0}")]
    Keystore(String),
    /// The PIN does not open the device key. The failure counts towards the lockout.
    #[error(
        "wrong PIN (the device key did not open); {attempts_left} more failed attempt(s) \
         destroy the device key"
    )]
    WrongPin {
        /// Failed verifications left before the keystore locks itself.
        attempts_left: u32,
    },
    /// The keystore destroyed the device key after too many failed verifications in a row,
    /// and refuses every use until the device is re-activated and registered again.
    #[error(
        "the device key for {user_id} was destroyed after {failures} failed verifications in a \
         row: this device must be re-activated (the operator runs `yunkey user reactivate \
         {user_id}` for a new activation code, then `yunkey terminal register` creates a new key)"
    )]
    Locked {
        /// Whose key.
        user_id: String,
        /// The failed verifications that locked it.
        failures: u32,
    },
    /// The user could not be verified: nothing was tried against the key (no PIN available,
    /// the prompt was cancelled). It does not count towards the lockout.
    #[error("user verification: {0}")]
    Unverified(String),
    /// Bad input on the client side.
    #[error("{0}")]
    Invalid(String),
}

impl ClientError {
    /// The typed reason of a refusal, if the server named one.
    pub fn reason(&self) -> Option<yunkey_net::reason::Reason> {
        match self {
            ClientError::Status { reason, .. } => *reason,
            _ => None,
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        ClientError::Status {
            code: s.code(),
            message: s.message().to_owned(),
            reason: yunkey_net::reason::Reason::of(&s),
        }
    }
}

impl From<yunkey_crypto::validate::InvalidField> for ClientError {
    fn from(e: yunkey_crypto::validate::InvalidField) -> Self {
        ClientError::Invalid(e.to_string())
    }
}
