//! The EXIF orientation of a JPEG photo, and turning the pixels upright.
//!
//! Phone cameras store the sensor's pixels as they are and say in the EXIF `Orientation` tag
//! how to turn them. The face detector finds upright faces only, so a portrait selfie that
//! is stored sideways must be turned first. (The `image` crate does not read the tag.)

use image::{imageops, RgbImage};

/// How a JPEG says its pixels must be turned to show the scene upright: the EXIF
/// `Orientation` value, 1 (as stored) to 8. Anything missing, damaged or out of range is 1.
pub fn jpeg_orientation(jpeg: &[u8]) -> u16 {
    exif_orientation(jpeg)
        .filter(|o| (1..=8).contains(o))
        .unwrap_or(1)
}

/// Turns `image` upright per an EXIF orientation value (1 to 8; other values change nothing).
pub fn apply(image: RgbImage, orientation: u16) -> RgbImage {
    match orientation {
        2 => imageops::flip_horizontal(&image),
        3 => imageops::rotate180(&image),
        4 => imageops::flip_vertical(&image),
        5 => imageops::flip_horizontal(&imageops::rotate90(&image)),
        6 => imageops::rotate90(&image),
        7 => imageops::flip_horizontal(&imageops::rotate270(&image)),
        8 => imageops::rotate270(&image),
        _ => image,
    }
}

/// The Orientation tag of IFD0 in the JPEG's APP1 Exif segment, if there is one.
fn exif_orientation(jpeg: &[u8]) -> Option<u16> {
    if jpeg.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut at = 2;
    // Markers until the image data starts (SOS) or the file ends.
    loop {
        let marker = jpeg.get(at..at + 2)?;
        if marker[0] != 0xFF {
            return None;
        }
        let kind = marker[1];
        if kind == 0xD8 || (0xD0..=0xD7).contains(&kind) || kind == 0x01 || kind == 0xFF {
            // Standalone markers (and fill bytes) have no length.
            at += if kind == 0xFF { 1 } else { 2 };
            continue;
        }
        if kind == 0xDA || kind == 0xD9 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes(
            jpeg.get(at + 2..at + 4)?.try_into().ok()?,
        ));
        let body = jpeg.get(at + 4..(at + 2).checked_add(len)?)?;
        if kind == 0xE1 {
            if let Some(tiff) = body.strip_prefix(b"Exif\0\0") {
                return tiff_orientation(tiff);
            }
        }
        at += 2 + len;
    }
}

/// The Orientation (0x0112) entry of IFD0 in a TIFF structure.
fn tiff_orientation(tiff: &[u8]) -> Option<u16> {
    let big_endian = match tiff.get(..2)? {
        b"MM" => true,
        b"II" => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b: [u8; 2] = tiff.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = tiff.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    if u16_at(2)? != 42 {
        return None;
    }
    let ifd = usize::try_from(u32_at(4)?).ok()?;
    let entries = usize::from(u16_at(ifd)?);
    (0..entries).find_map(|i| {
        let entry = ifd.checked_add(2 + 12 * i)?;
        // Tag 0x0112, type SHORT (3), count 1: the value is in the entry's first two bytes.
        (u16_at(entry)? == 0x0112 && u16_at(entry + 2)? == 3).then(|| u16_at(entry + 8))?
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A JPEG prefix with an APP1 Exif segment whose IFD0 has one Orientation entry.
    fn jpeg_with_orientation(value: u16, big_endian: bool) -> Vec<u8> {
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x00, 0x00];
        jpeg.extend_from_slice(&exif_segment(value, big_endian));
        jpeg.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x02]);
        jpeg
    }

    /// An APP1 Exif segment (marker included) whose IFD0 has one Orientation entry.
    pub(crate) fn exif_segment(value: u16, big_endian: bool) -> Vec<u8> {
        let mut tiff = Vec::new();
        let u16b = |v: u16| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let u32b = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        tiff.extend_from_slice(if big_endian { b"MM" } else { b"II" });
        tiff.extend_from_slice(&u16b(42));
        tiff.extend_from_slice(&u32b(8));
        tiff.extend_from_slice(&u16b(1));
        tiff.extend_from_slice(&u16b(0x0112));
        tiff.extend_from_slice(&u16b(3));
        tiff.extend_from_slice(&u32b(1));
        tiff.extend_from_slice(&u16b(value));
        tiff.extend_from_slice(&[0, 0]);
        tiff.extend_from_slice(&u32b(0));
        let mut body = b"Exif\0\0".to_vec();
        body.extend_from_slice(&tiff);
        let mut segment = vec![0xFF, 0xE1];
        segment.extend_from_slice(&u16::try_from(body.len() + 2).unwrap().to_be_bytes());
        segment.extend_from_slice(&body);
        segment
    }

    #[test]
    fn reads_the_tag_in_either_byte_order() {
        assert_eq!(jpeg_orientation(&jpeg_with_orientation(6, false)), 6);
        assert_eq!(jpeg_orientation(&jpeg_with_orientation(8, true)), 8);
        assert_eq!(jpeg_orientation(&jpeg_with_orientation(9, true)), 1);
    }

    #[test]
    fn anything_else_is_upright() {
        assert_eq!(jpeg_orientation(b""), 1);
        assert_eq!(jpeg_orientation(b"\x89PNG\r\n\x1a\n"), 1);
        assert_eq!(jpeg_orientation(&[0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF]), 1);
        let full = jpeg_with_orientation(6, false);
        for cut in 0..full.len() {
            let o = jpeg_orientation(&full[..cut]);
            assert!(o == 1 || o == 6, "cut at {cut}: {o}");
        }
    }

    #[test]
    fn turns_pixels_as_the_tag_says() {
        // 2x1: red, green.
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(0, 0, image::Rgb([255, 0, 0]));
        img.put_pixel(1, 0, image::Rgb([0, 255, 0]));
        let turned = apply(img.clone(), 6);
        assert_eq!(turned.dimensions(), (1, 2));
        // Rotated 90 degrees clockwise: red on top.
        assert_eq!(turned.get_pixel(0, 0).0, [255, 0, 0]);
        assert_eq!(apply(img.clone(), 1), img);
        assert_eq!(apply(img.clone(), 2).get_pixel(0, 0).0, [0, 255, 0]);
        assert_eq!(apply(img, 8).get_pixel(0, 0).0, [0, 255, 0]);
    }
}
