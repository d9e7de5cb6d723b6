//! Shared by the face tests: where the models and photos are, and images made on the spot.

#![allow(dead_code)]

use image::{imageops, ImageEncoder, Rgb, RgbImage};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use yunkey_face::{Recognizer, ENCODER_FILE, LANDMARKS_FILE};

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The models: `$YUNKEY_FACE_MODELS`, or `target/face-models` in the workspace. Fails (never
/// skips) when they are missing, naming the script that fetches them.
pub fn models_dir() -> PathBuf {
    let dir = std::env::var_os("YUNKEY_FACE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/face-models"));
    for file in [LANDMARKS_FILE, ENCODER_FILE] {
        assert!(
            dir.join(file).is_file(),
            "the face models are not in {}: run `scripts/face-models.sh {}` (or set \
             YUNKEY_FACE_MODELS to a directory that has {LANDMARKS_FILE} and {ENCODER_FILE})",
            dir.display(),
            dir.display()
        );
    }
    dir
}

/// One recogniser for the whole test binary.
pub fn recognizer() -> &'static Recognizer {
    static RECOGNIZER: OnceLock<Recognizer> = OnceLock::new();
    RECOGNIZER.get_or_init(|| Recognizer::open(&models_dir()).expect("open the face models"))
}

/// A photo of `tests/data/faces/`.
pub fn photo(name: &str) -> Vec<u8> {
    let path = workspace_root().join("tests/data/faces").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A JPEG of `image`.
pub fn jpeg(image: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ColorType::Rgb8,
        )
        .unwrap();
    out
}

/// A PNG of `image`.
pub fn png(image: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ColorType::Rgb8,
        )
        .unwrap();
    out
}

/// A photo of several people, composed in memory: the top square of each photo (where the
/// head is), 600x600 pixels, two to a row.
pub fn group_photo(names: &[&str]) -> Vec<u8> {
    const TILE: u32 = 600;
    let rows = (names.len() as u32).div_ceil(2);
    let mut group = RgbImage::from_pixel(2 * TILE, rows * TILE, Rgb([255, 255, 255]));
    for (i, name) in names.iter().enumerate() {
        let img = image::load_from_memory(&photo(name)).unwrap().into_rgb8();
        let side = img.width().min(img.height());
        let head = imageops::crop_imm(&img, 0, 0, side, side).to_image();
        let tile = imageops::resize(&head, TILE, TILE, imageops::FilterType::Triangle);
        let (x, y) = ((i as u32 % 2) * TILE, (i as u32 / 2) * TILE);
        imageops::replace(&mut group, &tile, i64::from(x), i64::from(y));
    }
    jpeg(&group)
}

/// A picture without a face: a plain grey PNG.
pub fn blank_png() -> Vec<u8> {
    png(&RgbImage::from_pixel(640, 480, Rgb([128, 128, 128])))
}

/// `jpeg` with an EXIF APP1 segment carrying `orientation`, right after the SOI marker.
pub fn with_exif_orientation(mut jpeg: Vec<u8>, orientation: u16) -> Vec<u8> {
    let mut tiff = b"II".to_vec();
    tiff.extend_from_slice(&42u16.to_le_bytes());
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&1u16.to_le_bytes());
    tiff.extend_from_slice(&0x0112u16.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut segment = vec![0xFF, 0xE1];
    segment.extend_from_slice(&u16::try_from(tiff.len() + 8).unwrap().to_be_bytes());
    segment.extend_from_slice(b"Exif\0\0");
    segment.extend_from_slice(&tiff);
    jpeg.splice(2..2, segment);
    jpeg
}
