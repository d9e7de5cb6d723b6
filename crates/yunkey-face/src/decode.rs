//! From the bytes a caller sent to the pixels the detector sees: size limits, JPEG and PNG
//! decoding, the EXIF orientation, and the downscale of large photos.

use crate::{orientation, FaceError};
use image::io::{Limits, Reader};
use image::{imageops, ImageFormat, RgbImage};
use std::io::Cursor;

/// Largest encoded image accepted, in bytes (4 MiB, as `face.proto` says).
pub const MAX_IMAGE_BYTES: usize = 4 * 1024 * 1024;

/// Largest image accepted, in pixels (width times height, from the image's header, before
/// anything is decoded): 25 megapixels, above any phone's default photo (12 MP) and most
/// cameras'. It stops decompression bombs: a few kilobytes of PNG that would decode to
/// gigabytes. The decoded copy of an image this size takes 75 MB.
pub const MAX_PIXELS: u64 = 25_000_000;

/// Photos whose longer side is above this many pixels are scaled down to it before the face
/// detector runs.
///
/// The detector's time grows with the pixel count (a 12 MP phone photo takes seconds), while a
/// face in a photo meant for recognition is hundreds of pixels wide and stays far above the
/// detector's smallest face (about 80x80 pixels) after the scaling. The embedding is made from
/// a 150x150 crop of the face, so it loses nothing. Faces smaller than about 80 pixels in the
/// scaled image (a crowd in the background) are not found, and not counted.
pub const WORKING_MAX_SIDE: u32 = 1600;

/// Decodes a JPEG or PNG into upright RGB pixels, at most [`WORKING_MAX_SIDE`] on the longer
/// side.
pub fn decode(bytes: &[u8]) -> Result<RgbImage, FaceError> {
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(FaceError::TooLarge {
            bytes: bytes.len(),
            limit: MAX_IMAGE_BYTES,
        });
    }
    let format = match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Jpeg | ImageFormat::Png)) => f,
        _ => return Err(unreadable("not a JPEG or PNG image")),
    };
    let (width, height) = Reader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| unreadable(&e.to_string()))?;
    if width == 0 || height == 0 {
        return Err(unreadable("the image has no pixels"));
    }
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(FaceError::TooManyPixels {
            width,
            height,
            limit: MAX_PIXELS,
        });
    }
    let mut reader = Reader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    // The header was checked; the decoder must not find a larger image than it said.
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|e| unreadable(&e.to_string()))?;
    let rgb = shrink(decoded.into_rgb8());
    Ok(match format {
        ImageFormat::Jpeg => orientation::apply(rgb, orientation::jpeg_orientation(bytes)),
        _ => rgb,
    })
}

/// `image` scaled down so that its longer side is at most [`WORKING_MAX_SIDE`].
fn shrink(image: RgbImage) -> RgbImage {
    let (w, h) = image.dimensions();
    let longer = w.max(h);
    if longer <= WORKING_MAX_SIDE {
        return image;
    }
    let scale = |side: u32| {
        let scaled = u64::from(side) * u64::from(WORKING_MAX_SIDE) / u64::from(longer);
        u32::try_from(scaled).unwrap_or(WORKING_MAX_SIDE).max(1)
    };
    imageops::resize(&image, scale(w), scale(h), imageops::FilterType::Triangle)
}

fn unreadable(why: &str) -> FaceError {
    FaceError::Unreadable(why.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::png::PngEncoder;
    use image::ImageEncoder;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let pixels = vec![200u8; (width * height * 3) as usize];
        let mut out = Vec::new();
        PngEncoder::new(&mut out)
            .write_image(&pixels, width, height, image::ColorType::Rgb8)
            .unwrap();
        out
    }

    /// CRC-32 (IEEE), as PNG chunks carry it.
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn decodes_png() {
        let img = decode(&png(40, 30)).unwrap();
        assert_eq!(img.dimensions(), (40, 30));
    }

    #[test]
    fn refuses_what_is_not_an_image() {
        for bytes in [
            &b""[..],
            b"hello",
            b"GIF89a......",
            &[0xFF, 0xD8, 0xFF, 0xE0, 0, 0],
        ] {
            assert!(
                matches!(decode(bytes), Err(FaceError::Unreadable(_))),
                "{bytes:?}"
            );
        }
        let mut cut = png(64, 64);
        cut.truncate(cut.len() / 2);
        assert!(matches!(decode(&cut), Err(FaceError::Unreadable(_))));
    }

    #[test]
    fn refuses_large_files_before_reading_them() {
        let big = vec![0u8; MAX_IMAGE_BYTES + 1];
        match decode(&big) {
            Err(FaceError::TooLarge { bytes, limit }) => {
                assert_eq!((bytes, limit), (MAX_IMAGE_BYTES + 1, 4_194_304));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_decompression_bombs_from_the_header() {
        // A valid PNG header claiming 30000x30000 pixels, and nothing behind it.
        let mut header = png(1, 1);
        header[16..20].copy_from_slice(&30_000u32.to_be_bytes());
        header[20..24].copy_from_slice(&30_000u32.to_be_bytes());
        // The IHDR chunk's CRC covers its type and data (bytes 12..29).
        let crc = crc32(&header[12..29]);
        header[29..33].copy_from_slice(&crc.to_be_bytes());
        match decode(&header) {
            Err(FaceError::TooManyPixels {
                width,
                height,
                limit,
            }) => assert_eq!((width, height, limit), (30_000, 30_000, MAX_PIXELS)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn shrinks_large_photos() {
        let img = decode(&png(3200, 1000)).unwrap();
        assert_eq!(img.dimensions(), (WORKING_MAX_SIDE, 500));
    }
}
