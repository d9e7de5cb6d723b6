//! The audit log: the replicated audit trail's older lines, moved out of memory into files of
//! each coordinator's data directory (`audit/`), hash-chained and rotated.
//!
//! The trail's lines stay in the replicated state for `--audit-keep` seconds (where
//! `GetUserAudit` reads them); then an [`crate::state::Op::Prune`] takes them out, and every
//! coordinator applying it appends them here in sequence order, so every coordinator's log
//! holds the same lines. A line is
//!
//! ```text
//! <SHA-256 hex of the previous line's hash and this line's JSON> <JSON>
//! ```
//!
//! and its JSON names the previous hash (`prev`), so changing, dropping or reordering a line
//! breaks the chain from there on ([`verify`]). Files are `audit-<first seq, 20 digits>.jsonl`;
//! a file past [`ROTATE_BYTES`] is closed and the next line starts a new one, chained to the
//! last. Closed files may be shipped to an archive and deleted; the chain of the files left
//! still verifies from the first one kept.
//!
//! Appends are fsynced before the prune that made them is applied, so a snapshot taken after
//! it never holds a state whose lines are lost from this node's log. A line already written
//! (its seq at or below the last one) is skipped: a restarted node applies the log after its
//! snapshot again. A node that took a snapshot from the leader instead of applying the log
//! may miss lines that other coordinators hold: it writes a `gap` line naming them.

use crate::state::{AuditRecord, RiskCheck, UserAuditRecord};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Size past which the current file is closed and the next line starts a new one.
pub const ROTATE_BYTES: u64 = 64 * 1024 * 1024;

/// The format of a line's JSON, in its `v` field. 1: this one.
pub const AUDIT_LOG_FORMAT: u32 = 1;

/// One line of the trail leaving memory: the cluster-wide record and, for a command about a
/// user, the user's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exported {
    /// The position in the trail.
    pub seq: u64,
    /// The cluster-wide record (`None`: only the user's line was kept, by a build before
    /// command format 3).
    pub record: Option<AuditRecord>,
    /// For a command about a user: the user's line.
    pub user: Option<UserLine>,
}

/// A user's line of the trail, as the audit log keeps it (its seq, time and actor are the
/// record's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserLine {
    /// The user.
    pub user_id: String,
    /// The command's kind (`sign`, `sign_refused`, `enroll`, ...).
    pub action: String,
    /// `ok` or the rejection.
    pub outcome: String,
    /// The transaction (SHA-256, hex), for signatures and refused signatures.
    pub tx_hash: Option<String>,
    /// The risk checks' decision, for signatures and refused signatures.
    pub risk: Option<RiskCheck>,
}

impl UserLine {
    /// The audit log's form of `user_id`'s line `line`.
    pub fn new(user_id: String, line: UserAuditRecord) -> Self {
        Self {
            user_id,
            action: line.action,
            outcome: line.outcome,
            tx_hash: line.tx_hash.map(hex::encode),
            risk: line.risk,
        }
    }
}

/// What a line says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// A line of the trail.
    Line(Box<Exported>),
    /// Lines `first..=last` are not in this node's log (it installed a snapshot that was
    /// past them, or its files were lost); other coordinators' logs hold them.
    Gap {
        /// The first missing seq.
        first: u64,
        /// The last missing seq.
        last: u64,
    },
}

/// A line's JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The line's format ([`AUDIT_LOG_FORMAT`]).
    pub v: u32,
    /// The trail position of the line (of a gap: its last missing seq).
    pub seq: u64,
    /// The previous line's hash (hex; zeros for the first line ever written).
    pub prev: String,
    /// What it says.
    pub body: Body,
}

/// Why a log cannot be opened or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum AuditLogError {
    /// Reading or writing a file failed.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line does not parse or does not chain.
    #[error("audit log {path} line {line}: {reason}")]
    Broken {
        /// The file.
        path: PathBuf,
        /// The line number (from 1).
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditLogError + '_ {
    move |source| AuditLogError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A coordinator's audit log (see the module documentation).
#[derive(Debug)]
pub struct AuditLog {
    dir: PathBuf,
    rotate_bytes: u64,
    tail: Mutex<Tail>,
}

#[derive(Debug)]
struct Tail {
    /// The file appended to, with its path and size (`None`: the next line starts a file).
    file: Option<(File, PathBuf, u64)>,
    last_seq: Option<u64>,
    last_hash: [u8; 32],
}

impl AuditLog {
    /// Opens the log in `dir` (created if missing), continuing after its last line. A last
    /// line cut short by a crash is removed (it is written again: it was never fsynced).
    pub fn open(dir: &Path) -> Result<Self, AuditLogError> {
        Self::open_rotating_at(dir, ROTATE_BYTES)
    }

    /// [`AuditLog::open`], starting a new file past `rotate_bytes` (tests use small ones).
    pub fn open_rotating_at(dir: &Path, rotate_bytes: u64) -> Result<Self, AuditLogError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut tail = Tail {
            file: None,
            last_seq: None,
            last_hash: [0; 32],
        };
        let mut files = files(dir)?;
        if let Some(path) = files.pop() {
            let (complete, mut last) = read_tail(&path)?;
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
            file.set_len(complete).map_err(io(&path))?;
            // A newest file with no line yet (a crash right after it was made) goes on from
            // the file before it.
            while last.is_none() {
                let Some(before) = files.pop() else { break };
                last = read_tail(&before)?.1;
            }
            if let Some((hash, entry)) = last {
                tail.last_seq = Some(entry.seq);
                tail.last_hash = hash;
            }
            tail.file = Some((file, path, complete));
        }
        Ok(Self {
            dir: dir.to_owned(),
            rotate_bytes,
            tail: Mutex::new(tail),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `lines` (in seq order) and fsyncs; lines at or below the last seq written
    /// are skipped, and a jump past the next seq is written as a gap first.
    pub fn append(&self, lines: &[Exported]) -> Result<(), AuditLogError> {
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let mut wrote = false;
        for line in lines {
            if tail.last_seq.is_some_and(|last| line.seq <= last) {
                continue;
            }
            let next = tail.last_seq.map_or(0, |s| s + 1);
            if line.seq > next {
                tail.write(
                    self,
                    line.seq - 1,
                    Body::Gap {
                        first: next,
                        last: line.seq - 1,
                    },
                )?;
            }
            tail.write(self, line.seq, Body::Line(Box::new(line.clone())))?;
            wrote = true;
        }
        if wrote {
            if let Some((file, path, _)) = &tail.file {
                file.sync_data().map_err(io(path))?;
            }
        }
        Ok(())
    }
}

impl Tail {
    fn write(&mut self, log: &AuditLog, seq: u64, body: Body) -> Result<(), AuditLogError> {
        let dir = &log.dir;
        if self
            .file
            .as_ref()
            .is_some_and(|(_, _, n)| *n >= log.rotate_bytes)
        {
            if let Some((file, path, _)) = self.file.take() {
                file.sync_data().map_err(io(&path))?;
            }
        }
        if self.file.is_none() {
            let path = dir.join(format!("audit-{seq:020}.jsonl"));
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
            yunkey_store::sync_dir(dir).map_err(io(dir))?;
            self.file = Some((file, path, 0));
        }
        let entry = Entry {
            v: AUDIT_LOG_FORMAT,
            seq,
            prev: hex::encode(self.last_hash),
            body,
        };
        let json = serde_json::to_vec(&entry).expect("an audit entry serializes");
        let hash = chain(&self.last_hash, &json);
        let mut line = hex::encode(hash).into_bytes();
        line.push(b' ');
        line.extend_from_slice(&json);
        line.push(b'\n');
        let (file, path, len) = self.file.as_mut().expect("opened above");
        file.write_all(&line).map_err(io(path))?;
        *len += line.len() as u64;
        self.last_hash = hash;
        self.last_seq = Some(seq);
        Ok(())
    }
}

fn chain(prev: &[u8; 32], json: &[u8]) -> [u8; 32] {
    yunkey_crypto::sha256(&[&prev[..], json].concat())
}

/// The log's files, oldest first.
fn files(dir: &Path) -> Result<Vec<PathBuf>, AuditLogError> {
    let mut found = Vec::new();
    for item in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = item.map_err(io(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("audit-") && name.ends_with(".jsonl") {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// Parses one line: its hash and entry, checked against its own JSON.
fn parse(path: &Path, number: usize, line: &[u8]) -> Result<([u8; 32], Entry), AuditLogError> {
    let broken = |reason: String| AuditLogError::Broken {
        path: path.to_owned(),
        line: number,
        reason,
    };
    let space = line
        .iter()
        .position(|b| *b == b' ')
        .ok_or_else(|| broken("no hash before the JSON".into()))?;
    let hash: [u8; 32] = hex::decode(&line[..space])
        .ok()
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| broken("the hash is not 64 hex digits".into()))?;
    let json = &line[space + 1..];
    let entry: Entry = serde_json::from_slice(json).map_err(|e| broken(e.to_string()))?;
    if entry.v != AUDIT_LOG_FORMAT {
        return Err(broken(format!(
            "line format {} is not {AUDIT_LOG_FORMAT}; read it with a newer yunkey",
            entry.v
        )));
    }
    let prev: [u8; 32] = hex::decode(&entry.prev)
        .ok()
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| broken("prev is not 64 hex digits".into()))?;
    if chain(&prev, json) != hash {
        return Err(broken(
            "the hash does not match the line (it was changed)".into(),
        ));
    }
    Ok((hash, entry))
}

type Last = Option<([u8; 32], Entry)>;

/// The length of `path` up to its last complete line, and that line.
fn read_tail(path: &Path) -> Result<(u64, Last), AuditLogError> {
    let mut reader = BufReader::new(File::open(path).map_err(io(path))?);
    let (mut complete, mut last, mut number) = (0u64, None, 0);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(io(path))?;
        if n == 0 || buf.last() != Some(&b'\n') {
            return Ok((complete, last));
        }
        number += 1;
        last = Some(parse(path, number, &buf[..n - 1])?);
        complete += n as u64;
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// Files read.
    pub files: usize,
    /// Lines of the trail.
    pub lines: u64,
    /// Gap lines (seqs this node's log does not hold).
    pub gaps: Vec<(u64, u64)>,
    /// The first and last seq.
    pub first_seq: Option<u64>,
    /// The last seq.
    pub last_seq: Option<u64>,
}

/// Checks every file of the log in `dir`: each line's hash, each line chained to the one
/// before (from the first line of the oldest file kept), seqs rising.
pub fn verify(dir: &Path) -> Result<Verified, AuditLogError> {
    let mut report = Verified::default();
    let mut prev: Option<[u8; 32]> = None;
    for path in files(dir)? {
        report.files += 1;
        let reader = BufReader::new(File::open(&path).map_err(io(&path))?);
        for (i, line) in reader.split(b'\n').enumerate() {
            let line = line.map_err(io(&path))?;
            let (hash, entry) = parse(&path, i + 1, &line)?;
            let broken = |reason: String| AuditLogError::Broken {
                path: path.clone(),
                line: i + 1,
                reason,
            };
            if let Some(p) = prev {
                if hex::encode(p) != entry.prev {
                    return Err(broken(
                        "does not chain to the line before (a line was removed or reordered)"
                            .into(),
                    ));
                }
            }
            if report.last_seq.is_some_and(|s| entry.seq <= s) {
                return Err(broken(format!(
                    "seq {} does not rise (the line before had {})",
                    entry.seq,
                    report.last_seq.unwrap_or_default()
                )));
            }
            match &entry.body {
                Body::Line(_) => report.lines += 1,
                Body::Gap { first, last } => report.gaps.push((*first, *last)),
            }
            report.first_seq.get_or_insert(entry.seq);
            report.last_seq = Some(entry.seq);
            prev = Some(hash);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64) -> Exported {
        Exported {
            seq,
            record: Some(AuditRecord {
                at: 100 + seq as i64,
                actor: "client:bank".into(),
                action: format!("ConsumeAuthorization(alice, {seq})"),
                outcome: "ok".into(),
            }),
            user: None,
        }
    }

    #[test]
    fn lines_chain_survive_a_reopen_and_skip_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        log.append(&[line(0), line(1), line(2)]).unwrap();
        drop(log);
        // A restarted node applies the same prune again, then goes on.
        let log = AuditLog::open(dir.path()).unwrap();
        log.append(&[line(1), line(2), line(3)]).unwrap();
        let report = verify(dir.path()).unwrap();
        assert_eq!(report.lines, 4);
        assert_eq!((report.first_seq, report.last_seq), (Some(0), Some(3)));
        assert!(report.gaps.is_empty());
        // A jump is written as a gap.
        log.append(&[line(7)]).unwrap();
        let report = verify(dir.path()).unwrap();
        assert_eq!(report.gaps, vec![(4, 6)]);
        assert_eq!(report.lines, 5);
    }

    #[test]
    fn a_changed_or_removed_line_breaks_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        log.append(&[line(0), line(1), line(2)]).unwrap();
        let path = files(dir.path()).unwrap().remove(0);
        let text = std::fs::read_to_string(&path).unwrap();

        std::fs::write(&path, text.replace("alice, 1", "mallory, 1")).unwrap();
        let err = verify(dir.path()).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("changed"), "{err}");

        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
        let err = verify(dir.path()).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("chain"), "{err}");
    }

    #[test]
    fn files_rotate_and_the_chain_goes_on_without_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open_rotating_at(dir.path(), 400).unwrap();
        let lines: Vec<Exported> = (0..10).map(line).collect();
        log.append(&lines).unwrap();
        let names = files(dir.path()).unwrap();
        assert!(names.len() >= 3, "{names:?}");
        assert!(names[0].ends_with("audit-00000000000000000000.jsonl"));
        let report = verify(dir.path()).unwrap();
        assert_eq!((report.files, report.lines), (names.len(), 10));
        // The oldest file shipped away: what is left still verifies.
        std::fs::remove_file(&names[0]).unwrap();
        let report = verify(dir.path()).unwrap();
        assert_eq!(report.last_seq, Some(9));
        assert!(report.first_seq > Some(0));
    }

    #[test]
    fn an_empty_newest_file_goes_on_from_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open_rotating_at(dir.path(), 100).unwrap();
        log.append(&[line(0), line(1)]).unwrap();
        drop(log);
        // A crash right after the next file was made.
        std::fs::File::create(dir.path().join(format!("audit-{:020}.jsonl", 2))).unwrap();
        let log = AuditLog::open_rotating_at(dir.path(), 100).unwrap();
        log.append(&[line(2)]).unwrap();
        let report = verify(dir.path()).unwrap();
        assert_eq!((report.lines, report.last_seq), (3, Some(2)));
        assert!(report.gaps.is_empty());
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        log.append(&[line(0), line(1)]).unwrap();
        drop(log);
        let path = files(dir.path()).unwrap().remove(0);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &text[..text.len() - 10]).unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        log.append(&[line(1), line(2)]).unwrap();
        let report = verify(dir.path()).unwrap();
        assert_eq!((report.lines, report.last_seq), (3, Some(2)));
    }
}
