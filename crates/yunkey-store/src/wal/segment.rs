//! Segment files: naming, creating (atomically, durably) and reading back at open.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record::{self, Record};
use crate::StoreError;

/// One segment file of the log.
pub(crate) struct Segment {
    /// Sequence number; the file is `{seq:016x}.wal`.
    pub(crate) seq: u64,
    pub(crate) file: Arc<File>,
    /// Bytes of whole records (and header) in the file: where the next record goes.
    pub(crate) len: u64,
    /// Bytes in the file: `len`, then the zeros written ahead of the records.
    pub(crate) size: u64,
    /// Whether the log writes zeros ahead of this segment's records (format 2 and later; a
    /// format-1 segment stays as its format says).
    pub(crate) zero_fill: bool,
}

/// Path of segment `seq` in `dir`.
pub(crate) fn path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.wal"))
}

/// Sequence numbers of the segments in `dir`, oldest first. Removes temporary files left by
/// a crash while a segment was being created.
pub(crate) fn list(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut seqs = Vec::new();
    for item in std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
        let item = item.map_err(|e| StoreError::io(dir, e))?;
        let name = item.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".wal.tmp") {
            std::fs::remove_file(item.path()).map_err(|e| StoreError::io(&item.path(), e))?;
        } else if let Some(hex) = name.strip_suffix(".wal") {
            let seq = u64::from_str_radix(hex, 16).map_err(|_| StoreError::Corrupt {
                key: item.path().display().to_string(),
                reason: "a .wal file whose name is not a segment number".into(),
            })?;
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Creates segment `seq` holding the header then `records`: written to a temporary file,
/// synced, renamed into place, and the directory synced, so the segment exists whole or not
/// at all.
pub(crate) fn create(dir: &Path, seq: u64, records: &[Record<'_>]) -> Result<Segment, StoreError> {
    let final_path = path(dir, seq);
    let tmp = final_path.with_extension("wal.tmp");
    let mut bytes = record::header().to_vec();
    for r in records {
        record::encode(r, &mut bytes)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| StoreError::io(&tmp, e))?;
    file.write_all(&bytes)
        .map_err(|e| StoreError::io(&tmp, e))?;
    file.sync_data().map_err(|e| StoreError::io(&tmp, e))?;
    std::fs::rename(&tmp, &final_path).map_err(|e| StoreError::io(&final_path, e))?;
    sync_dir(dir)?;
    Ok(Segment {
        seq,
        file: Arc::new(file),
        len: bytes.len() as u64,
        size: bytes.len() as u64,
        zero_fill: true,
    })
}

/// Opens segment `seq` and hands each whole record to `apply` with its offset in the file.
///
/// A frame that is not a whole record ends the segment: when `newest`, it is a write torn by
/// a crash, and the file is cut there (and synced); otherwise it is corruption, an error.
pub(crate) fn replay(
    dir: &Path,
    seq: u64,
    newest: bool,
    mut apply: impl FnMut(&Record<'_>, u64),
) -> Result<Segment, StoreError> {
    let p = path(dir, seq);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .map_err(|e| StoreError::io(&p, e))?;
    let bytes = std::fs::read(&p).map_err(|e| StoreError::io(&p, e))?;
    let corrupt = |reason: String| StoreError::Corrupt {
        key: p.display().to_string(),
        reason,
    };
    let format = record::check_header(&bytes).map_err(corrupt)?;
    let mut size = bytes.len() as u64;
    let mut pos = record::HEADER_LEN as usize;
    loop {
        match record::decode(&bytes[pos..]) {
            Ok(None) => break,
            Ok(Some((r, n))) => {
                apply(&r, pos as u64);
                pos += n;
            }
            Err(reason) if newest => {
                tracing::warn!(
                    segment = %p.display(),
                    offset = pos,
                    dropped_bytes = bytes.len() - pos,
                    reason,
                    "Raft log: cutting a record torn by a crash (it was never acknowledged)"
                );
                file.set_len(pos as u64)
                    .map_err(|e| StoreError::io(&p, e))?;
                file.sync_all().map_err(|e| StoreError::io(&p, e))?;
                size = pos as u64;
                break;
            }
            Err(reason) => {
                return Err(corrupt(format!(
                    "{reason} at offset {pos} of a segment that is not the newest"
                )))
            }
        }
    }
    Ok(Segment {
        seq,
        file: Arc::new(file),
        len: pos as u64,
        size,
        zero_fill: format >= 2,
    })
}

/// Reads `len` bytes at `offset` of `file`.
pub(crate) fn read_at(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// [`crate::sync_dir`], with the directory named in the error.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    crate::sync_dir(dir).map_err(|e| StoreError::io(dir, e))
}
