//! [`SnapshotDir`]: the directory holding snapshot files, their names, and durable renames.
//!
//! Names: `snap-<seq>-<snapshot id>.ykss` for finished snapshots and `<kind>-<seq>.tmp` for files
//! being built or received. `<seq>` increases within the directory, so no name is reused.
//! Temporary files left by a crash are removed when the directory is opened.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const SNAP_PREFIX: &str = "snap-";
const SNAP_SUFFIX: &str = ".ykss";
const TEMP_SUFFIX: &str = ".tmp";

/// The snapshot directory of one state machine.
#[derive(Debug)]
pub(crate) struct SnapshotDir {
    path: PathBuf,
    next_seq: AtomicU64,
}

fn io_context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The sequence number in a file name of this directory, if it is one of ours.
fn seq_of(name: &str) -> Option<u64> {
    let digits = if let Some(rest) = name.strip_prefix(SNAP_PREFIX) {
        rest.split('-').next()?
    } else {
        let stem = name.strip_suffix(TEMP_SUFFIX)?;
        stem.rsplit('-').next()?
    };
    digits.parse().ok()
}

impl SnapshotDir {
    /// Creates the directory if needed and removes temporary files a crash left behind.
    pub(crate) fn open(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        std::fs::create_dir_all(&path).map_err(|e| {
            io_context(
                e,
                format!("cannot create snapshot directory {}", path.display()),
            )
        })?;
        let mut max_seq = 0;
        for name in Self::list(&path)? {
            if let Some(seq) = seq_of(&name) {
                max_seq = max_seq.max(seq);
            }
            if name.ends_with(TEMP_SUFFIX) {
                let p = path.join(&name);
                tracing::info!(path = %p.display(), "removing an unfinished snapshot file");
                std::fs::remove_file(&p)
                    .map_err(|e| io_context(e, format!("cannot remove {}", p.display())))?;
            }
        }
        Ok(Self {
            path,
            next_seq: AtomicU64::new(max_seq + 1),
        })
    }

    fn list(path: &Path) -> io::Result<Vec<String>> {
        let entries = std::fs::read_dir(path).map_err(|e| {
            io_context(
                e,
                format!("cannot list snapshot directory {}", path.display()),
            )
        })?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh path for a temporary file of `kind` (`build`, `receive`, `copy`).
    pub(crate) fn temp_path(&self, kind: &str) -> PathBuf {
        self.path
            .join(format!("{kind}-{:010}{TEMP_SUFFIX}", self.seq()))
    }

    /// A fresh file name for a finished snapshot with `snapshot_id` (sanitized for the name).
    pub(crate) fn new_snapshot_name(&self, snapshot_id: &str) -> String {
        let id: String = snapshot_id
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{SNAP_PREFIX}{:010}-{id}{SNAP_SUFFIX}", self.seq())
    }

    /// The path of a file of this directory.
    pub(crate) fn path_of(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Whether `path` is directly in this directory.
    pub(crate) fn contains(&self, path: &Path) -> bool {
        path.parent() == Some(self.path.as_path())
    }

    /// Renames `from` to `to` (both in this directory) and fsyncs the directory, so the new name
    /// survives a crash.
    pub(crate) fn rename_durably(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to).map_err(|e| {
            io_context(
                e,
                format!("cannot rename {} to {}", from.display(), to.display()),
            )
        })?;
        self.sync()
    }

    /// fsyncs the directory (its entries: creations, renames, deletions).
    pub(crate) fn sync(&self) -> io::Result<()> {
        yunkey_store::sync_dir(&self.path)
            .map_err(|e| io_context(e, format!("cannot fsync {}", self.path.display())))
    }

    /// Deletes every finished snapshot file except `keep`. Failures are logged, not returned:
    /// a file left behind wastes space but breaks nothing.
    pub(crate) fn remove_snapshots_except(&self, keep: Option<&str>) {
        let names = match Self::list(&self.path) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("cannot clean up old snapshots: {e}");
                return;
            }
        };
        for name in names {
            let ours = name.starts_with(SNAP_PREFIX) && name.ends_with(SNAP_SUFFIX);
            if ours && Some(name.as_str()) != keep {
                let p = self.path.join(&name);
                match std::fs::remove_file(&p) {
                    Ok(()) => tracing::debug!(path = %p.display(), "removed an old snapshot"),
                    Err(e) => {
                        tracing::warn!(path = %p.display(), "cannot remove old snapshot: {e}")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_fresh_and_temporaries_are_cleaned() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(tmp.path().join("snapshots")).unwrap();
        let a = dir.new_snapshot_name("3-1-40-2");
        let b = dir.new_snapshot_name("3-1-40-2/../x");
        assert_ne!(a, b);
        assert!(!b.contains('/'));
        std::fs::write(dir.path_of(&a), b"a").unwrap();
        std::fs::write(dir.path_of(&b), b"b").unwrap();
        let t = dir.temp_path("receive");
        std::fs::write(&t, b"partial").unwrap();
        assert!(dir.contains(&t));

        let dir = SnapshotDir::open(tmp.path().join("snapshots")).unwrap();
        assert!(!t.exists(), "temporary file survived reopening");
        let c = dir.new_snapshot_name("x");
        assert!(c > b, "sequence went backwards: {c} after {b}");
        dir.remove_snapshots_except(Some(&a));
        assert!(dir.path_of(&a).exists());
        assert!(!dir.path_of(&b).exists());
    }
}
