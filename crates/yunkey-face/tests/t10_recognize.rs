//! The recogniser on real photographs (tests/data/faces): the same person is closer than
//! THRESHOLD, another person farther; photos of several people, no face, garbage, oversized
//! images and missing models are refused with the right error.

mod common;

use common::*;
use image::imageops;
use yunkey_face::{
    distance, Embedding, FaceError, Recognizer, ENCODER_FILE, LANDMARKS_FILE, MAX_IMAGE_BYTES,
    THRESHOLD,
};

fn embed(name: &str) -> Embedding {
    recognizer()
        .embed(&photo(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn the_same_person_is_below_the_threshold() {
    let obama = ["obama.jpg", "obama2.jpg", "obama3.jpg"].map(embed);
    for (i, a) in obama.iter().enumerate() {
        for b in &obama[i + 1..] {
            let d = distance(a, b);
            assert!(d < THRESHOLD, "two photos of Obama are {d} apart");
        }
    }
}

#[test]
fn another_person_is_above_the_threshold() {
    let biden = embed("biden.jpg");
    for name in ["obama.jpg", "obama2.jpg", "obama3.jpg"] {
        let d = distance(&biden, &embed(name));
        assert!(d > THRESHOLD, "Biden and {name} are only {d} apart");
    }
}

#[test]
fn png_and_jpeg_of_one_photo_agree() {
    let img = image::load_from_memory(&photo("obama2.jpg"))
        .unwrap()
        .into_rgb8();
    let from_png = recognizer().embed(&png(&img)).unwrap();
    let d = distance(&from_png, &embed("obama2.jpg"));
    assert!(d < 0.1, "PNG and JPEG of the same pixels are {d} apart");
}

#[test]
fn a_sideways_phone_photo_is_turned_upright() {
    // Stored turned a quarter left, with EXIF orientation 6 ("turn right to view").
    let img = image::load_from_memory(&photo("obama2.jpg"))
        .unwrap()
        .into_rgb8();
    let sideways = jpeg(&imageops::rotate270(&img));
    assert!(
        matches!(recognizer().embed(&sideways), Err(FaceError::NoFace)),
        "the detector finds upright faces only; this test needs a sideways one"
    );
    let tagged = with_exif_orientation(sideways, 6);
    let d = distance(&recognizer().embed(&tagged).unwrap(), &embed("obama2.jpg"));
    assert!(
        d < THRESHOLD,
        "the turned photo is {d} from the upright one"
    );
}

#[test]
fn a_photo_of_two_people_is_refused() {
    let two = group_photo(&["obama.jpg", "biden.jpg"]);
    match recognizer().embed(&two) {
        Err(FaceError::SeveralFaces { count }) => assert_eq!(count, 2),
        other => panic!("two people: {other:?}"),
    }
    let three = group_photo(&["obama.jpg", "biden.jpg", "obama2.jpg"]);
    match recognizer().embed(&three) {
        Err(e @ FaceError::SeveralFaces { count: 3 }) => assert_eq!(
            e.to_string(),
            "3 faces found; the photo must show exactly one"
        ),
        other => panic!("three people: {other:?}"),
    }
}

#[test]
fn a_picture_without_a_face_is_refused() {
    match recognizer().embed(&blank_png()) {
        Err(e @ FaceError::NoFace) => assert_eq!(e.to_string(), "no face found in the image"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn garbage_is_unreadable() {
    for bytes in [
        &b""[..],
        b"not an image at all",
        b"\xFF\xD8\xFF\xE0garbage after a JPEG signature",
        b"\x89PNG\r\n\x1a\ngarbage after a PNG signature",
    ] {
        match recognizer().embed(bytes) {
            Err(e @ FaceError::Unreadable(_)) => {
                assert!(e.to_string().starts_with("unreadable image: "))
            }
            other => panic!("{bytes:?}: {other:?}"),
        }
    }
}

#[test]
fn a_damaged_photo_never_panics() {
    let whole = photo("obama2.jpg");
    for cut in [100, 1_000, whole.len() / 2, whole.len() - 10] {
        // A cut JPEG may decode to a partly grey picture; any result but a panic is fine.
        let _ = recognizer().embed(&whole[..cut]);
    }
    let mut flipped = whole.clone();
    for i in (1_000..flipped.len()).step_by(997) {
        flipped[i] ^= 0x5A;
    }
    let _ = recognizer().embed(&flipped);
}

#[test]
fn an_image_over_4_mib_is_refused_before_decoding() {
    let mut big = photo("obama.jpg");
    big.resize(MAX_IMAGE_BYTES + 1, 0);
    match recognizer().embed(&big) {
        Err(e @ FaceError::TooLarge { .. }) => {
            assert_eq!(
                e.to_string(),
                "image is 4194305 bytes; the limit is 4194304"
            )
        }
        other => panic!("{other:?}"),
    }
    // Exactly at the limit is accepted (the bytes after the JPEG's end are ignored).
    big.truncate(MAX_IMAGE_BYTES);
    recognizer().embed(&big).unwrap();
}

#[test]
fn missing_models_are_named_with_the_script_to_run() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-dir");
    let e = Recognizer::open(&missing).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, FaceError::Models { .. }), "{e:?}");
    assert!(
        msg.contains("no-such-dir") && msg.contains("scripts/face-models.sh"),
        "{msg}"
    );

    // One of the two files there, the other missing.
    std::fs::copy(
        models_dir().join(LANDMARKS_FILE),
        tmp.path().join(LANDMARKS_FILE),
    )
    .unwrap();
    let msg = Recognizer::open(tmp.path()).unwrap_err().to_string();
    assert!(
        msg.contains(ENCODER_FILE) && msg.contains("scripts/face-models.sh"),
        "{msg}"
    );
}

#[test]
fn concurrent_calls_give_the_same_embeddings() {
    let names = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"];
    let alone: Vec<Embedding> = names.iter().map(|n| embed(n)).collect();
    let together: Vec<Embedding> = std::thread::scope(|s| {
        let handles: Vec<_> = names.iter().map(|n| s.spawn(move || embed(n))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((name, a), b) in names.iter().zip(&alone).zip(&together) {
        assert!(distance(a, b) < 1e-5, "{name}: {}", distance(a, b));
    }
}

#[test]
fn an_embedding_is_128_numbers_not_shown_by_debug() {
    let e = embed("obama.jpg");
    assert_eq!(e.as_slice().len(), 128);
    let shown = format!("{e:?}");
    assert!(!shown.contains(&format!("{}", e.as_slice()[0])), "{shown}");
}
