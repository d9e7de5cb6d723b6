//! bincode helpers shared by the stores, the network client and the server.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Serializes `value` with bincode.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, bincode::Error> {
    bincode::serialize(value)
}

/// Deserializes a bincode `T`.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    bincode::deserialize(bytes)
}

/// Runs a blocking closure (a flush) off the async runtime.
pub(crate) async fn blocking<T, F>(f: F) -> std::io::Result<T>
where
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(std::io::Error::other(format!("blocking task failed: {e}"))),
    }
}

/// Turns any displayable error into an `io::Error` (openraft's error constructors take
/// `AnyError`, which an `io::Error` converts to).
pub(crate) fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Wraps any displayable error for openraft's error constructors.
pub(crate) fn any(e: impl std::fmt::Display) -> openraft::AnyError {
    openraft::AnyError::error(e)
}
