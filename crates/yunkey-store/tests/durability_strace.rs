//! The durability points, checked at the system-call level:
//!
//! - every [`Db::flush`] of a sled database returns only after `fdatasync` (or `fsync`) of
//!   sled's log file, issued after the last write to it; a value big enough for sled to keep
//!   in a blob file gets its blob file synced and its directory entry `fsync`ed too (the
//!   chips' keys and the state machine's snapshot records are acknowledged after a flush);
//! - every [`Wal::sync`] returns only after `fdatasync` of each segment written since the last
//!   one, and a new segment's directory entry is synced before anything in it is acknowledged
//!   (the Raft log, the vote and the log pointers are acknowledged after a sync).
//!
//! This is what makes those acknowledgements survive a power loss (`kill -9` alone cannot
//! show the difference). Each test runs itself again under `strace -f -y` as a child that
//! writes, syncs and then records an "ack" in a file of its own, and reads the trace. Needs
//! `strace` (apt-get install strace; `.ci/run` installs it).

use std::io::Write;
use std::path::Path;
use std::process::Command;
use yunkey_store::{Db, Wal, WalOptions};

const CHILD_ENV: &str = "YUNKEY_DURABILITY_CHILD_DIR";
/// Small writes, then one value of 300 KB (sled keeps nodes over ~128 KiB in blob files).
const SMALL_ACKS: usize = 5;
/// Log appends of 500 bytes into segments of 4 KiB: several new segments.
const WAL_APPENDS: u64 = 30;

#[test]
fn every_flush_fdatasyncs_before_it_returns() {
    const NAME: &str = "every_flush_fdatasyncs_before_it_returns";
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        db_child(Path::new(&dir));
        return;
    }
    let (trace, data) = trace_child(NAME);
    let acks = check_trace(&trace, &data, &db_ack_rules);
    assert_eq!(acks, SMALL_ACKS + 1, "every ack of the child was seen");
}

#[test]
fn every_log_sync_fdatasyncs_before_it_returns() {
    const NAME: &str = "every_log_sync_fdatasyncs_before_it_returns";
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        wal_child(Path::new(&dir));
        return;
    }
    let (trace, data) = trace_child(NAME);
    let acks = check_trace(&trace, &data, &wal_ack_rules);
    assert_eq!(
        acks as u64,
        WAL_APPENDS + 2,
        "every ack of the child was seen"
    );
    assert!(
        trace.matches(".wal.tmp>").count() >= 3,
        "the child made several segments"
    );
}

/// Runs test `name` again under strace; returns the trace and the path the child's data
/// directory had (removed since).
fn trace_child(name: &str) -> (String, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let trace = dir.path().join("trace.txt");
    let out = Command::new("strace")
        .args(["-f", "-y", "-qq", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=write,pwrite64,pwritev,fdatasync,fsync,sync_file_range",
        ])
        .arg(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &data)
        .output()
        .expect("running strace (apt-get install strace)");
    assert!(
        out.status.success(),
        "the traced child failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let trace = std::fs::read_to_string(&trace).unwrap();
    (trace, data)
}

/// The traced child of the log test: appends, syncs, then records the acknowledgement; then
/// the same for a named value and a purge.
fn wal_child(dir: &Path) {
    let wal = Wal::open_with(
        dir,
        WalOptions {
            segment_bytes: 4096,
        },
    )
    .unwrap();
    let mut acks = std::fs::File::create(dir.with_extension("acks")).unwrap();
    for i in 1..=WAL_APPENDS {
        wal.append([(i, vec![i as u8; 500])]).unwrap();
        wal.sync().unwrap();
        acks.write_all(format!("ack {i}\n").as_bytes()).unwrap();
    }
    wal.set_meta(b"vote", b"term 2").unwrap();
    wal.sync().unwrap();
    acks.write_all(b"ack vote\n").unwrap();
    wal.purge_to(WAL_APPENDS - 1).unwrap();
    wal.sync().unwrap();
    acks.write_all(b"ack purge\n").unwrap();
}

/// What each acknowledgement of the log test needs besides "nothing written is unsynced": a
/// segment synced since the last ack, and the directory synced if a segment was made.
fn wal_ack_rules(what: &str, data: &str, synced: &[String]) {
    assert!(
        synced.iter().any(|p| p.ends_with(".wal")),
        "acknowledged {what:?} with no fdatasync of a log segment since the last ack: {synced:?}"
    );
    if synced.iter().any(|p| p.ends_with(".wal.tmp")) {
        assert!(
            synced.iter().any(|p| p == data),
            "acknowledged {what:?} after making a segment whose directory entry was not \
             synced: {synced:?}"
        );
    }
}

/// What each acknowledgement of the sled test needs besides "nothing written is unsynced":
/// sled's log synced since the last ack, and for the big value its blob file and directory.
fn db_ack_rules(what: &str, data: &str, synced: &[String]) {
    let log = format!("{data}/db");
    assert!(
        synced.contains(&log),
        "acknowledged {what:?} with no fdatasync of sled's log since the last ack: {synced:?}"
    );
    if what == "ack big" {
        let blob_dir = format!("{data}/blobs");
        assert!(
            synced
                .iter()
                .any(|p| p.starts_with(&format!("{blob_dir}/"))),
            "the 300 KB value was acknowledged with no blob file synced: {synced:?}"
        );
        assert!(
            synced.contains(&blob_dir),
            "a new blob file's directory entry was not synced: {synced:?}"
        );
    }
}

/// The traced child of the sled test: writes, flushes, then records the acknowledgement.
fn db_child(dir: &Path) {
    let db = Db::open_sled(dir).unwrap();
    let tree = db.tree("t").unwrap();
    let mut acks = std::fs::File::create(dir.with_extension("acks")).unwrap();
    for i in 0..SMALL_ACKS {
        tree.insert(format!("k{i}").as_bytes(), &[i as u8; 100])
            .unwrap();
        db.flush().unwrap();
        acks.write_all(format!("ack {i}\n").as_bytes()).unwrap();
    }
    tree.insert(b"big", &vec![7u8; 300_000]).unwrap();
    db.flush().unwrap();
    acks.write_all(b"ack big\n").unwrap();
}

/// One system call of the trace that matters here.
#[derive(Debug, PartialEq)]
enum Event {
    /// A write to a file under the database directory (path given).
    Write(String),
    /// A completed `fdatasync`/`fsync` of that path.
    Sync(String),
    /// The child's acknowledgement.
    Ack(String),
}

/// Checks that before each ack, every file under `data` written since the previous ack was
/// synced after its last write, and what `rules` asks of the syncs since the previous ack.
/// Returns how many acks were seen.
fn check_trace(trace: &str, data: &Path, rules: &dyn Fn(&str, &str, &[String])) -> usize {
    let data = data.display().to_string();
    let events = parse(trace, &data);
    let mut dirty: Vec<String> = Vec::new();
    let mut synced_since_ack: Vec<String> = Vec::new();
    let mut acks = 0;
    for event in events {
        match event {
            Event::Write(path) => {
                if !dirty.contains(&path) {
                    dirty.push(path);
                }
            }
            Event::Sync(path) => {
                dirty.retain(|p| p != &path);
                synced_since_ack.push(path);
            }
            Event::Ack(what) => {
                acks += 1;
                assert!(
                    dirty.is_empty(),
                    "acknowledged {what:?} while these were written and not synced: {dirty:?}"
                );
                rules(&what, &data, &synced_since_ack);
                synced_since_ack.clear();
            }
        }
    }
    acks
}

/// The events of a `strace -f -y` trace, in the order they completed. A call split by another
/// thread (`<unfinished ...>` then `<... resumed>`) completes at its resumed line.
fn parse(trace: &str, data: &str) -> Vec<Event> {
    let mut pending: std::collections::HashMap<String, (String, String)> = Default::default();
    let mut events = Vec::new();
    for line in trace.lines() {
        let (pid, rest) = line.split_once(' ').unwrap_or(("", line));
        let rest = rest.trim_start();
        let (call, path, args, result) = if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((call, tail)) = resumed.split_once(" resumed>") else {
                continue;
            };
            let Some((name, path)) = pending.remove(pid) else {
                continue;
            };
            debug_assert_eq!(name, call);
            (name, path, tail.to_string(), tail.to_string())
        } else {
            let Some((call, tail)) = rest.split_once('(') else {
                continue;
            };
            let path = tail
                .split_once('<')
                .and_then(|(_, p)| p.split_once('>'))
                .map(|(p, _)| p.to_string())
                .unwrap_or_default();
            if tail.ends_with("<unfinished ...>") {
                pending.insert(pid.to_string(), (call.to_string(), path));
                continue;
            }
            (call.to_string(), path, tail.to_string(), tail.to_string())
        };
        let ok = result
            .rsplit_once(" = ")
            .is_some_and(|(_, r)| !r.trim_start().starts_with('-'));
        if !ok {
            continue;
        }
        if path.ends_with(".acks") && call == "write" {
            let text = args
                .split_once('"')
                .and_then(|(_, t)| t.split_once("\\n"))
                .map(|(t, _)| t.to_string())
                .unwrap_or_default();
            events.push(Event::Ack(text));
        } else if path == data || path.starts_with(&format!("{data}/")) {
            match call.as_str() {
                "write" | "pwrite64" | "pwritev" => events.push(Event::Write(path)),
                "fdatasync" | "fsync" => events.push(Event::Sync(path)),
                _ => {}
            }
        }
    }
    events
}

#[test]
fn the_trace_reader_sees_a_missing_sync() {
    let data = Path::new("/d");
    let good = "1 pwrite64(3</d/db>, \"x\", 1, 0) = 1\n\
                2 fdatasync(3</d/db> <unfinished ...>\n\
                1 write(9</d.acks>, \"nothing\\n\", 8) = 8\n";
    // The fdatasync had not completed when the ack was written: refused.
    let caught = std::panic::catch_unwind(|| check_trace(good, data, &db_ack_rules));
    assert!(
        caught.is_err(),
        "an ack before the sync completed must be refused"
    );
    let fine = "1 pwrite64(3</d/db>, \"x\", 1, 0) = 1\n\
                2 fdatasync(3</d/db> <unfinished ...>\n\
                3 write(5<pipe:[1]>, \"x\", 1) = 1\n\
                2 <... fdatasync resumed>) = 0\n\
                1 write(9</d.acks>, \"ack 0\\n\", 6) = 6\n";
    assert_eq!(check_trace(fine, data, &db_ack_rules), 1);
    let unsynced_write = "1 pwrite64(3</d/db>, \"x\", 1, 0) = 1\n\
                          1 fdatasync(3</d/db>) = 0\n\
                          1 pwrite64(3</d/db>, \"y\", 1, 1) = 1\n\
                          1 write(9</d.acks>, \"ack 1\\n\", 6) = 6\n";
    let caught = std::panic::catch_unwind(|| check_trace(unsynced_write, data, &db_ack_rules));
    assert!(
        caught.is_err(),
        "a write after the last sync must be refused"
    );
}
