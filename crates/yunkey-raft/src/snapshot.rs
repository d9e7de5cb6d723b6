//! The snapshot file format, and streaming a tree into and out of it.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! header   "YKSN" magic, u32 format version
//! records  u32 key length, u32 value length, key, value     -- repeated, in key order
//! trailer  u32 0xFFFF_FFFF end marker, u64 record count, 32-byte SHA-256 of everything before it
//! ```
//!
//! Writing and loading stream through bounded buffers, so memory does not grow with the state.
//! A file is [`verify`]-ed (a whole pass: structure, count, checksum, nothing after the trailer)
//! before any state is replaced from it, so a truncated or corrupt file is rejected with the
//! state untouched.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};
use yunkey_store::{Batch, Entry, Tree};

/// Version of the snapshot file format written by this crate. Readers reject other versions.
/// (Version 1 was a single bincode value holding every entry, kept in sled.)
pub const SNAPSHOT_FORMAT_VERSION: u32 = 2;

/// Magic bytes that open every snapshot.
const MAGIC: &[u8; 4] = b"YKSN";
/// Key length that marks the end of the records.
const END_MARKER: u32 = u32::MAX;
/// Largest key or value a snapshot may hold; anything larger is treated as corruption.
const MAX_PART: u32 = 256 * 1024 * 1024;
/// IO buffer for reading and writing snapshot files.
const IO_BUFFER: usize = 1024 * 1024;
/// Loading applies the records in batches of at most this many records ...
const LOAD_BATCH_RECORDS: usize = 10_000;
/// ... or this many key and value bytes, whichever comes first.
const LOAD_BATCH_BYTES: usize = 4 * 1024 * 1024;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Streams records into a snapshot file, hashing as it goes.
struct SnapshotWriter<W: Write> {
    out: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> SnapshotWriter<W> {
    fn new(out: W) -> io::Result<Self> {
        let mut w = Self {
            out,
            hasher: Sha256::new(),
            count: 0,
        };
        w.put(MAGIC)?;
        w.put(&SNAPSHOT_FORMAT_VERSION.to_be_bytes())?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.out.write_all(bytes)
    }

    fn record(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let len = |part: &[u8], what: &str| {
            u32::try_from(part.len())
                .ok()
                .filter(|&n| n <= MAX_PART)
                .ok_or_else(|| {
                    invalid(format!(
                        "a {what} of {} bytes is larger than a snapshot can hold ({MAX_PART})",
                        part.len()
                    ))
                })
        };
        let (k, v) = (len(key, "key")?, len(value, "value")?);
        self.put(&k.to_be_bytes())?;
        self.put(&v.to_be_bytes())?;
        self.put(key)?;
        self.put(value)?;
        self.count += 1;
        Ok(())
    }

    /// Writes the trailer and returns the output and the record count.
    fn finish(mut self) -> io::Result<(W, u64)> {
        self.put(&END_MARKER.to_be_bytes())?;
        let count = self.count;
        self.put(&count.to_be_bytes())?;
        let digest = self.hasher.finalize();
        self.out.write_all(&digest)?;
        Ok((self.out, count))
    }
}

/// What a file's contents add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileSummary {
    /// Records in the file.
    pub(crate) records: u64,
    /// Size of the file in bytes.
    pub(crate) bytes: u64,
}

/// Writes every entry of `tree` to a new file at `path` (which must not exist), then fsyncs it.
/// The caller keeps `tree` from changing meanwhile. On error the partial file is removed.
pub(crate) fn write_tree(tree: &Tree, path: &Path) -> io::Result<FileSummary> {
    let entries = tree
        .range(&[], None)
        .map(|kv| kv.map_err(|e| io::Error::other(format!("reading state: {e}"))));
    write_entries(entries, path)
}

/// Writes `entries` (in key order) to a new file at `path` (which must not exist), then fsyncs
/// it. On error the partial file is removed.
pub(crate) fn write_entries(
    entries: impl Iterator<Item = io::Result<Entry>>,
    path: &Path,
) -> io::Result<FileSummary> {
    let result = (|| -> io::Result<FileSummary> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        let mut w = SnapshotWriter::new(BufWriter::with_capacity(IO_BUFFER, file))?;
        for kv in entries {
            let (k, v) = kv?;
            w.record(&k, &v)?;
        }
        let (out, records) = w.finish()?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        // Durability: the file's bytes are on disk before anyone renames or records it.
        file.sync_all()?;
        Ok(FileSummary {
            records,
            bytes: file.metadata()?.len(),
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result.map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

/// Copies the file at `from` to a new file at `to` and fsyncs it.
pub(crate) fn copy_file(from: &Path, to: &Path) -> io::Result<()> {
    let result = (|| -> io::Result<()> {
        let mut src = File::open(from)?;
        let mut dst = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(to)?;
        io::copy(&mut src, &mut dst)?;
        dst.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(to);
    }
    result.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("copying {} to {}: {e}", from.display(), to.display()),
        )
    })
}

/// A reader that hashes every byte it passes on.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn read_array<const N: usize>(r: &mut impl Read, what: &str) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            invalid(format!("truncated snapshot: it ends in the {what}"))
        }
        _ => e,
    })?;
    Ok(b)
}

fn read_header(r: &mut impl Read) -> io::Result<()> {
    if &read_array::<4>(r, "header")? != MAGIC {
        return Err(invalid("not a yunkey snapshot (bad magic)".into()));
    }
    let version = u32::from_be_bytes(read_array(r, "header")?);
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(invalid(format!(
            "unsupported snapshot format version {version} (expected {SNAPSHOT_FORMAT_VERSION})"
        )));
    }
    Ok(())
}

/// Reads a record's key and value lengths, or `None` at the end marker.
fn read_lengths(r: &mut impl Read) -> io::Result<Option<(u32, u32)>> {
    let k = u32::from_be_bytes(read_array(r, "record lengths")?);
    if k == END_MARKER {
        return Ok(None);
    }
    let v = u32::from_be_bytes(read_array(r, "record lengths")?);
    if k > MAX_PART || v > MAX_PART {
        return Err(invalid(format!(
            "corrupt snapshot: record lengths {k} and {v} exceed the {MAX_PART}-byte limit"
        )));
    }
    Ok(Some((k, v)))
}

/// Checks a whole snapshot file without keeping any of it: header, record structure, record
/// count, checksum, and that nothing follows the trailer.
pub(crate) fn verify(path: &Path) -> io::Result<FileSummary> {
    let run = || -> io::Result<FileSummary> {
        let file = File::open(path)?;
        let bytes = file.metadata()?.len();
        let mut r = Hashing {
            inner: BufReader::with_capacity(IO_BUFFER, file),
            hasher: Sha256::new(),
        };
        read_header(&mut r)?;
        let mut records = 0u64;
        while let Some((k, v)) = read_lengths(&mut r)? {
            let want = u64::from(k) + u64::from(v);
            let got = io::copy(&mut (&mut r).take(want), &mut io::sink())?;
            if got != want {
                return Err(invalid(
                    "truncated snapshot: it ends inside a record".into(),
                ));
            }
            records += 1;
        }
        let count = u64::from_be_bytes(read_array(&mut r, "trailer")?);
        let digest = r.hasher.clone().finalize();
        let stored: [u8; 32] = read_array(&mut r.inner, "checksum")?;
        if count != records {
            return Err(invalid(format!(
                "corrupt snapshot: the trailer counts {count} records, the file holds {records}"
            )));
        }
        if digest[..] != stored[..] {
            return Err(invalid(
                "corrupt snapshot: SHA-256 checksum mismatch".into(),
            ));
        }
        if r.inner.read(&mut [0u8; 1])? != 0 {
            return Err(invalid("corrupt snapshot: bytes after the trailer".into()));
        }
        Ok(FileSummary { records, bytes })
    };
    run().map_err(|e| io::Error::new(e.kind(), format!("snapshot {}: {e}", path.display())))
}

/// Replaces the contents of `tree` with the records of the snapshot at `path`: clears it, then
/// applies the records in bounded batches. Not atomic: the caller verifies the file first and
/// holds a crash marker while this runs. Returns the number of records loaded.
pub(crate) fn load_into(tree: &Tree, path: &Path) -> io::Result<u64> {
    let store_err = |e: yunkey_store::StoreError| io::Error::other(format!("writing state: {e}"));
    let run = || -> io::Result<u64> {
        let mut r = BufReader::with_capacity(IO_BUFFER, File::open(path)?);
        read_header(&mut r)?;
        tree.clear().map_err(store_err)?;
        let mut batch = Batch::new();
        let mut batch_bytes = 0usize;
        let mut records = 0u64;
        while let Some(entry) = read_record(&mut r)? {
            batch_bytes += entry.0.len() + entry.1.len();
            batch.insert(entry.0, entry.1);
            records += 1;
            if batch.len() >= LOAD_BATCH_RECORDS || batch_bytes >= LOAD_BATCH_BYTES {
                tree.apply(std::mem::take(&mut batch)).map_err(store_err)?;
                batch_bytes = 0;
            }
        }
        if !batch.is_empty() {
            tree.apply(batch).map_err(store_err)?;
        }
        Ok(records)
    };
    run().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("loading snapshot {}: {e}", path.display()),
        )
    })
}

fn read_record(r: &mut impl Read) -> io::Result<Option<Entry>> {
    let Some((k, v)) = read_lengths(r)? else {
        return Ok(None);
    };
    let mut key = vec![0u8; k as usize];
    let mut value = vec![0u8; v as usize];
    r.read_exact(&mut key)?;
    r.read_exact(&mut value)?;
    Ok(Some((key, value)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use yunkey_store::Db;

    fn tree_with(n: usize) -> Tree {
        let t = Db::memory().tree("sm").unwrap();
        for i in 0..n {
            t.insert(format!("k{i:05}").as_bytes(), &vec![i as u8; i % 300])
                .unwrap();
        }
        t
    }

    fn dump(t: &Tree) -> Vec<Entry> {
        t.range(&[], None).map(|kv| kv.unwrap()).collect()
    }

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let src = tree_with(25_000);
        let summary = write_tree(&src, &path).unwrap();
        assert_eq!(summary.records, 25_000);
        assert_eq!(verify(&path).unwrap(), summary);
        let dst = tree_with(3);
        dst.insert(b"zz-stale", b"x").unwrap();
        assert_eq!(load_into(&dst, &path).unwrap(), 25_000);
        assert_eq!(dump(&dst), dump(&src));
    }

    #[test]
    fn every_truncation_and_flipped_byte_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        write_tree(&tree_with(20), &path).unwrap();
        let good = std::fs::read(&path).unwrap();
        let bad = dir.path().join("bad");
        for len in 0..good.len() {
            std::fs::write(&bad, &good[..len]).unwrap();
            assert!(verify(&bad).is_err(), "truncated to {len} bytes accepted");
        }
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x01;
            std::fs::write(&bad, &b).unwrap();
            assert!(verify(&bad).is_err(), "flipped byte {i} accepted");
        }
        let mut longer = good.clone();
        longer.push(0);
        std::fs::write(&bad, &longer).unwrap();
        let err = verify(&bad).unwrap_err().to_string();
        assert!(err.contains("after the trailer"), "{err}");
    }

    #[test]
    fn version_and_magic_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        write_tree(&tree_with(1), &path).unwrap();
        let mut b = std::fs::read(&path).unwrap();
        b[7] = 99;
        std::fs::write(&path, &b).unwrap();
        assert!(verify(&path).unwrap_err().to_string().contains("version"));
        std::fs::write(&path, b"xxxxxxxx").unwrap();
        assert!(verify(&path).unwrap_err().to_string().contains("magic"));
    }
}
