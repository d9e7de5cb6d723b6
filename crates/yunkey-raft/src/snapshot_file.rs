//! [`SnapshotFile`]: openraft's snapshot data, a file on disk that knows its own path.

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::fs::File;
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

/// A snapshot's bytes as a file: what openraft reads chunks from when it sends a snapshot and
/// writes received chunks into (the `SnapshotData` of the [`crate::TypeConfig`]).
///
/// The async IO traits delegate to the inner [`tokio::fs::File`]. A file made by
/// `begin_receiving_snapshot` is *temporary*: it is deleted when dropped, unless the state
/// machine adopted it as its snapshot (so an abandoned transfer leaves nothing behind).
pub struct SnapshotFile {
    file: File,
    path: PathBuf,
    temporary: bool,
}

impl SnapshotFile {
    /// Opens an existing snapshot file read-only (a stored snapshot, to send or to install).
    pub async fn open(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        let file = File::open(&path).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open snapshot file {}: {e}", path.display()),
            )
        })?;
        Ok(Self {
            file,
            path,
            temporary: false,
        })
    }

    /// Creates a new, empty, temporary file at `path` for reading and writing; it is deleted on
    /// drop unless [`SnapshotFile::keep`] is called.
    pub(crate) async fn create_temporary(path: PathBuf) -> io::Result<Self> {
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot create snapshot file {}: {e}", path.display()),
                )
            })?;
        Ok(Self {
            file,
            path,
            temporary: true,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file is deleted on drop.
    pub(crate) fn is_temporary(&self) -> bool {
        self.temporary
    }

    /// Stops deleting the file on drop and records its new path (after a rename).
    pub(crate) fn keep(&mut self, new_path: PathBuf) {
        self.temporary = false;
        self.path = new_path;
    }

    /// The inner file (to flush and sync it).
    pub(crate) fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        if self.temporary {
            if let Err(e) = std::fs::remove_file(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), "cannot remove abandoned snapshot file: {e}");
                }
            }
        }
    }
}

impl std::fmt::Debug for SnapshotFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotFile")
            .field("path", &self.path)
            .field("temporary", &self.temporary)
            .finish()
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        Pin::new(&mut self.file).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.file).poll_complete(cx)
    }
}
