use std::os::unix::fs::FileExt;

use super::*;

fn entry(i: u64) -> (u64, Vec<u8>) {
    (i, format!("entry {i}").into_bytes())
}

fn small(dir: &Path) -> Wal {
    Wal::open_with(dir, WalOptions { segment_bytes: 256 }).unwrap()
}

fn segments(dir: &Path) -> Vec<u64> {
    segment::list(dir).unwrap()
}

#[test]
fn entries_and_meta_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(dir.path()).unwrap();
        wal.append((1..=5).map(entry)).unwrap();
        wal.set_meta(b"vote", b"v1").unwrap();
        wal.set_meta(b"vote", b"v2").unwrap();
        wal.sync().unwrap();
    }
    let wal = Wal::open(dir.path()).unwrap();
    assert_eq!(wal.bounds().unwrap(), Some((1, 5)));
    assert_eq!(wal.range(2, Some(4)).unwrap(), vec![entry(2), entry(3)]);
    assert_eq!(wal.range(4, None).unwrap(), vec![entry(4), entry(5)]);
    assert!(wal.range(4, Some(4)).unwrap().is_empty());
    assert_eq!(wal.meta(b"vote").unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(wal.meta(b"other").unwrap(), None);
}

#[test]
fn entries_are_put_by_index() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(dir.path()).unwrap();
        wal.append([entry(5), entry(3)]).unwrap();
        wal.append([(5, b"five again".to_vec())]).unwrap();
        wal.purge_to(3).unwrap();
        wal.append([entry(2)]).unwrap();
        wal.sync().unwrap();
    }
    let wal = Wal::open(dir.path()).unwrap();
    assert_eq!(
        wal.range(0, None).unwrap(),
        vec![entry(2), (5, b"five again".to_vec())]
    );
}

#[test]
fn a_segment_is_kept_while_it_holds_a_live_entry() {
    let dir = tempfile::tempdir().unwrap();
    let wal = small(dir.path());
    for i in 1..=20 {
        wal.append([entry(i)]).unwrap();
    }
    wal.sync().unwrap();
    let first = segments(dir.path())[0];
    // Entries 1 and 2 live in the first segment: after a purge to 1 it still holds entry 2.
    wal.purge_to(1).unwrap();
    wal.sync().unwrap();
    assert_eq!(segments(dir.path())[0], first);
    wal.purge_to(12).unwrap();
    wal.sync().unwrap();
    assert_ne!(segments(dir.path())[0], first);
    assert_eq!(
        wal.range(0, None).unwrap(),
        (13..=20).map(entry).collect::<Vec<_>>()
    );
}

#[test]
fn truncation_and_reappend_replay_in_order() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = small(dir.path());
        wal.append((1..=10).map(entry)).unwrap();
        wal.truncate_from(6).unwrap();
        assert_eq!(wal.bounds().unwrap(), Some((1, 5)));
        wal.append([(6, b"new six".to_vec()), (7, b"new seven".to_vec())])
            .unwrap();
        wal.sync().unwrap();
        assert!(segments(dir.path()).len() > 1, "the test spans segments");
    }
    let wal = small(dir.path());
    assert_eq!(wal.bounds().unwrap(), Some((1, 7)));
    let got = wal.range(5, None).unwrap();
    assert_eq!(
        got,
        vec![
            entry(5),
            (6, b"new six".to_vec()),
            (7, b"new seven".to_vec())
        ]
    );
}

#[test]
fn purged_segments_are_deleted_after_sync_and_meta_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = small(dir.path());
        wal.set_meta(b"vote", b"kept").unwrap();
        for i in 1..=40 {
            wal.append([entry(i)]).unwrap();
        }
        wal.sync().unwrap();
        let before = segments(dir.path());
        assert!(before.len() >= 4, "{before:?}");
        wal.purge_to(30).unwrap();
        assert_eq!(
            segments(dir.path()),
            before,
            "nothing deleted before the sync"
        );
        wal.sync().unwrap();
        let after = segments(dir.path());
        assert!(after.len() < before.len(), "{before:?} -> {after:?}");
        assert!(
            !after.contains(&before[0]),
            "the first segment held vote and 1.."
        );
        assert_eq!(wal.bounds().unwrap(), Some((31, 40)));
    }
    let wal = small(dir.path());
    assert_eq!(wal.meta(b"vote").unwrap().as_deref(), Some(&b"kept"[..]));
    assert_eq!(wal.purged().unwrap(), Some(30));
    assert_eq!(wal.bounds().unwrap(), Some((31, 40)));
    assert_eq!(
        wal.range(0, None).unwrap(),
        (31..=40).map(entry).collect::<Vec<_>>()
    );
}

#[test]
fn a_torn_tail_is_cut_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(dir.path()).unwrap();
        wal.append((1..=3).map(entry)).unwrap();
        wal.sync().unwrap();
    }
    let newest = segment::path(dir.path(), *segments(dir.path()).last().unwrap());
    let records_end = records_end(&newest);
    // Half a record, as a crash in the middle of a write leaves it: inside the zeros.
    let mut half = Vec::new();
    record::encode(
        &Record::Entry {
            index: 4,
            data: b"never acknowledged",
        },
        &mut half,
    )
    .unwrap();
    half.truncate(half.len() / 2);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap()
        .write_all_at(&half, records_end)
        .unwrap();
    let wal = Wal::open(dir.path()).unwrap();
    assert_eq!(wal.bounds().unwrap(), Some((1, 3)));
    assert_eq!(
        std::fs::metadata(&newest).unwrap().len(),
        records_end,
        "cut back to the last whole record"
    );
    wal.append([entry(4)]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    assert_eq!(
        Wal::open(dir.path()).unwrap().range(4, None).unwrap(),
        vec![entry(4)]
    );
}

/// Where the records of a segment end: after its last byte that is not zero (the entries of
/// these tests end in a digit).
fn records_end(segment: &Path) -> u64 {
    let bytes = std::fs::read(segment).unwrap();
    bytes.iter().rposition(|&b| b != 0).unwrap() as u64 + 1
}

#[test]
fn writes_land_inside_zeros_written_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let seg = segment::path(dir.path(), 1);
    {
        let wal = Wal::open(dir.path()).unwrap();
        wal.append([entry(1)]).unwrap();
        wal.sync().unwrap();
        let size = std::fs::metadata(&seg).unwrap().len();
        assert_eq!(size, records_end(&seg) + ZERO_FILL_BYTES);
        // The next writes fit in the zeros: the file's size does not move.
        wal.append((2..=50).map(entry)).unwrap();
        wal.set_meta(b"vote", b"v1").unwrap();
        wal.sync().unwrap();
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), size);
    }
    // The zeros read back as the clean end, and writes go on from the last record.
    let wal = Wal::open(dir.path()).unwrap();
    assert_eq!(wal.bounds().unwrap(), Some((1, 50)));
    wal.append([entry(51)]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open(dir.path()).unwrap();
    assert_eq!(
        wal.range(0, None).unwrap(),
        (1..=51).map(entry).collect::<Vec<_>>()
    );
    assert_eq!(wal.meta(b"vote").unwrap().as_deref(), Some(&b"v1"[..]));

    // Small segments: the zeros stop at the segment's size, and full segments, zeros and
    // all, read back whole.
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = small(dir.path());
        wal.append((1..=30).map(entry)).unwrap();
        for i in 31..=40 {
            wal.append([entry(i)]).unwrap();
        }
        wal.sync().unwrap();
    }
    let all = segments(dir.path());
    assert!(all.len() > 2, "{all:?}");
    for seq in &all[1..all.len() - 1] {
        let len = std::fs::metadata(segment::path(dir.path(), *seq))
            .unwrap()
            .len();
        assert!(len <= 256, "segment {seq} is {len} bytes");
    }
    assert_eq!(
        small(dir.path()).range(0, None).unwrap(),
        (1..=40).map(entry).collect::<Vec<_>>()
    );
}

#[test]
fn a_format_1_segment_is_read_and_written_as_format_1() {
    let dir = tempfile::tempdir().unwrap();
    let seg = segment::path(dir.path(), 1);
    // A segment as the format-1 log wrote it: header, records, nothing after.
    let mut bytes = record::header().to_vec();
    bytes[6..8].copy_from_slice(&1u16.to_le_bytes());
    for i in 1..=3 {
        let (index, data) = entry(i);
        record::encode(&Record::Entry { index, data: &data }, &mut bytes).unwrap();
    }
    std::fs::write(&seg, &bytes).unwrap();
    {
        let wal = Wal::open(dir.path()).unwrap();
        assert_eq!(
            wal.range(0, None).unwrap(),
            (1..=3).map(entry).collect::<Vec<_>>()
        );
        wal.append([entry(4)]).unwrap();
        wal.sync().unwrap();
    }
    let after = std::fs::read(&seg).unwrap();
    assert_eq!(
        &after[6..8],
        &1u16.to_le_bytes(),
        "the segment keeps its format"
    );
    assert_eq!(
        after.len() as u64,
        records_end(&seg),
        "no zeros after format-1 records"
    );
    assert_eq!(
        Wal::open(dir.path()).unwrap().range(0, None).unwrap(),
        (1..=4).map(entry).collect::<Vec<_>>()
    );
}

#[test]
fn corruption_before_the_newest_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = small(dir.path());
        for i in 1..=20 {
            wal.append([entry(i)]).unwrap();
        }
        wal.sync().unwrap();
    }
    let first = segment::path(dir.path(), segments(dir.path())[0]);
    let mut bytes = std::fs::read(&first).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&first, bytes).unwrap();
    let err = Wal::open_with(dir.path(), WalOptions { segment_bytes: 256 }).unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { reason, .. } if reason.contains("not the newest")),
        "{err}"
    );
}

#[test]
fn a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Wal::open(dir.path()).unwrap());
    let seg = segment::path(dir.path(), 1);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[6] = 9;
    std::fs::write(&seg, bytes).unwrap();
    let err = Wal::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("format 9"), "{err}");
}

#[test]
fn one_process_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path()).unwrap();
    let err = Wal::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    drop(wal);
    Wal::open(dir.path()).expect("the lock goes with the last handle");
}

#[test]
fn concurrent_appends_and_syncs_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let wal = small(dir.path());
    let next = Arc::new(Mutex::new(1u64));
    std::thread::scope(|s| {
        for _ in 0..4 {
            let (wal, next) = (wal.clone(), next.clone());
            s.spawn(move || {
                for _ in 0..50 {
                    {
                        let mut n = next.lock().unwrap();
                        wal.append([entry(*n)]).unwrap();
                        *n += 1;
                    }
                    wal.sync().unwrap();
                }
            });
        }
    });
    drop(wal);
    let wal = small(dir.path());
    assert_eq!(
        wal.range(0, None).unwrap(),
        (1..=200).map(entry).collect::<Vec<_>>()
    );
}

#[test]
fn an_entry_too_large_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path()).unwrap();
    let err = wal
        .append([entry(1), (2, vec![0u8; record::MAX_BODY + 1])])
        .unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
    assert_eq!(wal.bounds().unwrap(), None);
}
