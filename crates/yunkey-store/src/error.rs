use thiserror::Error;

/// A storage failure. Corrupt or unreadable state is an error, never silently `None`.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The engine failed (IO error, corruption, lock held by another process).
    #[error("storage engine error: {0}")]
    Engine(String),
    /// The database is held by another open handle (another process, or one in this process
    /// that was not dropped) and stayed held for the whole wait.
    #[error("database {path} is in use by another process (its lock stayed held); stop that process or point this one at its own directory")]
    Locked {
        /// The database directory.
        path: String,
    },
    /// A value too large for the store to take (nothing was written).
    #[error("{what} of {bytes} bytes is too large: at most {max}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        bytes: usize,
        /// The most the store takes.
        max: usize,
    },
    /// A stored value could not be decoded.
    #[error("stored value under {key} is corrupt: {reason}")]
    Corrupt {
        /// Printable form of the key.
        key: String,
        /// What failed to decode.
        reason: String,
    },
}

impl StoreError {
    /// An IO error on `path`, naming the path.
    pub fn io(path: &std::path::Path, e: std::io::Error) -> Self {
        StoreError::Engine(format!("{}: {e}", path.display()))
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Engine(e.to_string())
    }
}
