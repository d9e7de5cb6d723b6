//! From the bytes a caller sent to the pixels the detector sees: size limits, JPEG and PNG
//! decoding, the EXIF orientation, and the downscale of large photos.

use crate::{orientation, scale, FaceError};
use image::codecs::jpeg::JpegDecoder;
use image::codecs::png::PngDecoder;
use image::io::Limits;
use image::{DynamicImage, ImageDecoder, ImageFormat, RgbImage};
use std::io::Cursor;

/// Largest encoded image accepted, in bytes (4 MiB, as `face.proto` says).
pub const MAX_IMAGE_BYTES: usize = yunkey_net::MAX_FACE_IMAGE_BYTES;

/// Largest image accepted, in pixels (width times height, from the image's header, before
/// anything is decoded): 25 megapixels, above any phone's default photo (12 MP) and most
/// cameras'. It stops decompression bombs: a few kilobytes of PNG that would decode to
/// gigabytes. The decoded copy of an image this size takes 75 MB.
pub const MAX_PIXELS: u64 = 25_000_000;

/// Photos whose longer side is above this many pixels are scaled down to it before the face
/// detector runs.
///
/// The detector's time grows with the pixel count (a 12 MP phone photo has 12 times the
/// pixels of a 1024x1024 one), while a face in a photo meant for recognition stays far above
/// the detector's smallest face (about 80x80 pixels) after the scaling: in a head-and-shoulders
/// selfie it is 300 pixels or more, in the portraits of the test photos 125 to 260. The embedding is made from a
/// 150x150 crop of the face, so it loses little. A large JPEG is decoded straight at 1/2, 1/4
/// or 1/8 of its size, which is also far faster than decoding it whole. Faces smaller than
/// about 80 pixels in the scaled image (a crowd in the background) are not found, and not
/// counted.
pub const WORKING_MAX_SIDE: u32 = 1024;

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
    let decoded = match format {
        ImageFormat::Jpeg => {
            let mut decoder = JpegDecoder::new(Cursor::new(bytes)).map_err(unreadable)?;
            let (width, height) = decoder.dimensions();
            check_pixels(width, height)?;
            decoder
                .set_limits(limits(width, height))
                .map_err(unreadable)?;
            // A large JPEG is decoded at 1/2, 1/4 or 1/8 of its size straight from the DCT
            // coefficients (far faster than decoding it whole), no smaller than needed.
            if width.max(height) > WORKING_MAX_SIDE {
                let (w, h) = scaled(width, height);
                let fit = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
                decoder.scale(fit(w), fit(h)).map_err(unreadable)?;
            }
            let orientation = orientation::jpeg_orientation(bytes);
            let rgb = DynamicImage::from_decoder(decoder)
                .map_err(unreadable)?
                .into_rgb8();
            orientation::apply(shrink(rgb), orientation)
        }
        _ => {
            let decoder = PngDecoder::new(Cursor::new(bytes)).map_err(unreadable)?;
            let (width, height) = decoder.dimensions();
            check_pixels(width, height)?;
            let decoder = PngDecoder::with_limits(Cursor::new(bytes), limits(width, height))
                .map_err(unreadable)?;
            shrink(
                DynamicImage::from_decoder(decoder)
                    .map_err(unreadable)?
                    .into_rgb8(),
            )
        }
    };
    Ok(decoded)
}

/// Refuses images without pixels or with more than [`MAX_PIXELS`], from their header.
fn check_pixels(width: u32, height: u32) -> Result<(), FaceError> {
    if width == 0 || height == 0 {
        return Err(FaceError::Unreadable("the image has no pixels".into()));
    }
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(FaceError::TooManyPixels {
            width,
            height,
            limit: MAX_PIXELS,
        });
    }
    Ok(())
}

/// The decoder must not find a larger image than its header said.
fn limits(width: u32, height: u32) -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits
}

/// `width` x `height` scaled so that the longer side is [`WORKING_MAX_SIDE`].
fn scaled(width: u32, height: u32) -> (u32, u32) {
    let longer = u64::from(width.max(height)).max(1);
    let scale = |side: u32| {
        let scaled = u64::from(side) * u64::from(WORKING_MAX_SIDE) / longer;
        u32::try_from(scaled).unwrap_or(WORKING_MAX_SIDE).max(1)
    };
    (scale(width), scale(height))
}

/// `image` scaled down so that its longer side is at most [`WORKING_MAX_SIDE`].
fn shrink(image: RgbImage) -> RgbImage {
    let (w, h) = image.dimensions();
    if w.max(h) <= WORKING_MAX_SIDE {
        return image;
    }
    let (w, h) = scaled(w, h);
    scale::downscale(image, w, h)
}

fn unreadable(why: impl std::fmt::Display) -> FaceError {
    FaceError::Unreadable(why.to_string())
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

    /// A grey JPEG, with an EXIF orientation if given.
    fn jpeg(width: u32, height: u32, orientation: Option<u16>) -> Vec<u8> {
        let pixels = vec![128u8; (width * height * 3) as usize];
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut out)
            .write_image(&pixels, width, height, image::ColorType::Rgb8)
            .unwrap();
        if let Some(o) = orientation {
            let app1 = crate::orientation::tests::exif_segment(o, false);
            out.splice(2..2, app1);
        }
        out
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
        assert_eq!(
            img.dimensions(),
            (WORKING_MAX_SIDE, WORKING_MAX_SIDE * 1000 / 3200)
        );
        let img = decode(&jpeg(1000, 3000, None)).unwrap();
        assert_eq!(img.dimensions(), (WORKING_MAX_SIDE / 3, WORKING_MAX_SIDE));
    }

    #[test]
    fn turns_jpegs_upright() {
        let img = decode(&jpeg(40, 20, None)).unwrap();
        assert_eq!(img.dimensions(), (40, 20));
        let img = decode(&jpeg(40, 20, Some(6))).unwrap();
        assert_eq!(img.dimensions(), (20, 40));
    }
}
