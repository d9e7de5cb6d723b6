//! The write-ahead log's on-disk format.
//!
//! A segment file is a header, [`MAGIC`] then [`FORMAT_VERSION`] (little-endian `u16`), then
//! records, then (format 2) zeros: the log writes zeros ahead of its records so that most
//! writes land inside the file and leave its size alone (`super::ZERO_FILL_BYTES`). A record is framed as `len: u32 LE | crc32(body): u32 LE | body`, and the body is a
//! kind byte then its fields (integers little-endian):
//!
//! | kind | record | fields |
//! |---|---|---|
//! | 1 | entry | `index: u64`, then the entry's bytes |
//! | 2 | truncate | `from: u64` (entries at or above it are gone) |
//! | 3 | purge | `upto: u64` (entries at or below it are gone) |
//! | 4 | meta | `key_len: u16`, key, value |
//!
//! Zeros from a frame to the end of the file are a clean end. Any other frame that does not fit,
//! has length 0 or fails its checksum ends the readable log: at the tail of the newest segment
//! that is a write torn by a crash; anywhere else it is corruption.
//!
//! Format 1 (before 2026-12-03) is format 2 without the zeros; it is read as it is, and a
//! segment keeps the format it was created with (only new segments are zero-filled).

use crate::StoreError;

/// First bytes of every segment file.
pub(crate) const MAGIC: &[u8; 6] = b"YKWAL\0";
/// The segment format this code writes. A newer one is refused, not guessed at.
pub const FORMAT_VERSION: u16 = 2;
/// The oldest segment format this code reads.
pub(crate) const OLDEST_READABLE: u16 = 1;
/// Length of the segment header.
pub(crate) const HEADER_LEN: u64 = 8;
/// Largest record body accepted, written or read (a longer length on disk is a torn frame).
pub(crate) const MAX_BODY: usize = 64 << 20;
/// Frame bytes before the body.
const FRAME_LEN: usize = 8;
/// Where an entry's bytes start, from the start of its frame.
pub(crate) const ENTRY_DATA_AT: u64 = (FRAME_LEN + 1 + 8) as u64;

const KIND_ENTRY: u8 = 1;
const KIND_TRUNCATE: u8 = 2;
const KIND_PURGE: u8 = 3;
const KIND_META: u8 = 4;

/// One record, borrowing its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    Entry { index: u64, data: &'a [u8] },
    Truncate { from: u64 },
    Purge { upto: u64 },
    Meta { key: &'a [u8], value: &'a [u8] },
}

/// The segment header.
pub(crate) fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..6].copy_from_slice(MAGIC);
    h[6..].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// Checks a segment header and returns its format; the error says what is wrong.
pub(crate) fn check_header(bytes: &[u8]) -> Result<u16, String> {
    if bytes.len() < HEADER_LEN as usize || &bytes[..6] != MAGIC {
        return Err("not a yunkey log segment (bad magic)".into());
    }
    let version = u16::from_le_bytes([bytes[6], bytes[7]]);
    if !(OLDEST_READABLE..=FORMAT_VERSION).contains(&version) {
        return Err(format!(
            "log segment format {version}, this build reads formats {OLDEST_READABLE} to \
             {FORMAT_VERSION}: run the yunkey version that wrote it"
        ));
    }
    Ok(version)
}

/// Appends `record`, framed, to `out`. Fails only for a body over [`MAX_BODY`] (or a meta key
/// over 65,535 bytes), and then `out` is unchanged.
pub(crate) fn encode(record: &Record<'_>, out: &mut Vec<u8>) -> Result<(), StoreError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_LEN]);
    match record {
        Record::Entry { index, data } => {
            out.push(KIND_ENTRY);
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(data);
        }
        Record::Truncate { from } => {
            out.push(KIND_TRUNCATE);
            out.extend_from_slice(&from.to_le_bytes());
        }
        Record::Purge { upto } => {
            out.push(KIND_PURGE);
            out.extend_from_slice(&upto.to_le_bytes());
        }
        Record::Meta { key, value } => {
            let key_len = u16::try_from(key.len()).map_err(|_| {
                out.truncate(start);
                StoreError::TooLarge {
                    what: "log meta key",
                    bytes: key.len(),
                    max: u16::MAX as usize,
                }
            })?;
            out.push(KIND_META);
            out.extend_from_slice(&key_len.to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(value);
        }
    }
    let body_len = out.len() - start - FRAME_LEN;
    if body_len > MAX_BODY {
        out.truncate(start);
        return Err(StoreError::TooLarge {
            what: "log record",
            bytes: body_len,
            max: MAX_BODY,
        });
    }
    let crc = crc32fast::hash(&out[start + FRAME_LEN..]);
    out[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Reads the record at the start of `buf`: `Ok(None)` at a clean end (no bytes left, or only
/// zeros),
/// `Ok(Some((record, frame length)))`, or `Err` naming why the frame is not a whole record.
pub(crate) fn decode(buf: &[u8]) -> Result<Option<(Record<'_>, usize)>, String> {
    // Stops at the first byte that is not zero: within a real frame's length field.
    if buf.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    if buf.len() < FRAME_LEN {
        return Err(format!("{} stray bytes", buf.len()));
    }
    let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_BODY || buf.len() - FRAME_LEN < len {
        return Err(format!("frame of length {len} does not fit"));
    }
    let body = &buf[FRAME_LEN..FRAME_LEN + len];
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch".into());
    }
    let u64_at = |at: usize| -> Result<u64, String> {
        body.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or_else(|| "record too short".to_string())
    };
    let record = match body[0] {
        KIND_ENTRY => Record::Entry {
            index: u64_at(1)?,
            data: &body[9..],
        },
        KIND_TRUNCATE => Record::Truncate { from: u64_at(1)? },
        KIND_PURGE => Record::Purge { upto: u64_at(1)? },
        KIND_META => {
            let key_len = body
                .get(1..3)
                .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
                .ok_or("record too short")?;
            let key = body.get(3..3 + key_len).ok_or("record too short")?;
            Record::Meta {
                key,
                value: &body[3 + key_len..],
            }
        }
        other => return Err(format!("unknown record kind {other}")),
    };
    Ok(Some((record, FRAME_LEN + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_entries_start_where_said() {
        let records = [
            Record::Entry {
                index: 7,
                data: b"seven",
            },
            Record::Entry {
                index: 8,
                data: b"",
            },
            Record::Truncate { from: 8 },
            Record::Purge { upto: 3 },
            Record::Meta {
                key: b"vote",
                value: b"\x01\x02",
            },
        ];
        let mut buf = Vec::new();
        for r in &records {
            encode(r, &mut buf).unwrap();
        }
        let data_at = ENTRY_DATA_AT as usize;
        assert_eq!(&buf[data_at..data_at + 5], b"seven");
        let mut pos = 0;
        for expected in &records {
            let (got, n) = decode(&buf[pos..]).unwrap().unwrap();
            assert_eq!(&got, expected);
            pos += n;
        }
        assert_eq!(decode(&buf[pos..]), Ok(None));
    }

    #[test]
    fn torn_and_corrupt_frames_are_errors() {
        let mut buf = Vec::new();
        encode(
            &Record::Entry {
                index: 1,
                data: b"payload",
            },
            &mut buf,
        )
        .unwrap();
        for cut in 1..buf.len() {
            assert!(decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = buf.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(decode(&flipped).unwrap_err(), "checksum mismatch");
        // The zeros a segment is filled with ahead of its records are its clean end...
        assert_eq!(decode(&[0u8; 16]), Ok(None));
        assert_eq!(decode(&[0u8; 3]), Ok(None));
        // ... but a record cut short inside them is torn, as anywhere.
        let mut torn_in_zeros = buf[..buf.len() - 3].to_vec();
        torn_in_zeros.extend_from_slice(&[0u8; 64]);
        assert!(decode(&torn_in_zeros).is_err());
        let mut len_lost = buf.clone();
        len_lost[..4].fill(0);
        assert!(
            decode(&len_lost).is_err(),
            "zeros then bytes are not a clean end"
        );
    }

    #[test]
    fn headers_name_their_version() {
        assert_eq!(check_header(&header()), Ok(FORMAT_VERSION));
        let mut first = header();
        first[6] = 1;
        assert_eq!(
            check_header(&first),
            Ok(1),
            "format 1 segments are still read"
        );
        let mut newer = header();
        newer[6] = 3;
        assert!(check_header(&newer).unwrap_err().contains("format 3"));
        assert!(check_header(b"garbage!").is_err());
    }
}
