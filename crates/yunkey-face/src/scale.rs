//! Fast downscaling of RGB images: halving by 2x2 averages, then bilinear for the rest.
//!
//! `image`'s filters take tens of milliseconds per megapixel, as long as the face detector
//! itself; these take a few. Halving first keeps the bilinear step under a factor of 2, where
//! it does not alias.

use image::RgbImage;

/// `image` scaled to `width` x `height`, which must be no larger than it and not zero.
pub fn downscale(mut image: RgbImage, width: u32, height: u32) -> RgbImage {
    while image.width() / 2 >= width && image.height() / 2 >= height {
        image = halve(&image);
    }
    if image.dimensions() == (width, height) {
        return image;
    }
    bilinear(&image, width, height)
}

/// Each output pixel is the average of a 2x2 block (a last odd row or column is dropped).
fn halve(image: &RgbImage) -> RgbImage {
    let (w, h) = (image.width() / 2, image.height() / 2);
    let src = image.as_raw();
    let stride = image.width() as usize * 3;
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    for y in 0..h as usize {
        let top = &src[2 * y * stride..];
        let bottom = &src[(2 * y + 1) * stride..];
        for x in 0..w as usize {
            for c in 0..3 {
                let i = 6 * x + c;
                let sum = u16::from(top[i])
                    + u16::from(top[i + 3])
                    + u16::from(bottom[i])
                    + u16::from(bottom[i + 3]);
                out.push(((sum + 2) / 4) as u8);
            }
        }
    }
    RgbImage::from_raw(w, h, out).unwrap_or_default()
}

/// Bilinear interpolation at pixel centres.
fn bilinear(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (sw, sh) = (image.width() as usize, image.height() as usize);
    let src = image.as_raw();
    // For each output coordinate: the lower source index and the weight of the upper one.
    let taps = |out: u32, size: usize| -> Vec<(usize, f32)> {
        let ratio = size as f32 / out as f32;
        (0..out)
            .map(|i| {
                let pos = ((i as f32 + 0.5) * ratio - 0.5).max(0.0);
                let lower = (pos as usize).min(size - 1);
                (lower, pos - lower as f32)
            })
            .collect()
    };
    let xs = taps(width, sw);
    let ys = taps(height, sh);
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    for &(y0, fy) in &ys {
        let y1 = (y0 + 1).min(sh - 1);
        let (row0, row1) = (&src[y0 * sw * 3..], &src[y1 * sw * 3..]);
        for &(x0, fx) in &xs {
            let x1 = (x0 + 1).min(sw - 1);
            for c in 0..3 {
                let p = |row: &[u8], x: usize| f32::from(row[3 * x + c]);
                let top = p(row0, x0) + (p(row0, x1) - p(row0, x0)) * fx;
                let bottom = p(row1, x0) + (p(row1, x1) - p(row1, x0)) * fx;
                out.push((top + (bottom - top) * fy + 0.5) as u8);
            }
        }
    }
    RgbImage::from_raw(width, height, out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn keeps_a_flat_colour_and_the_requested_size() {
        let img = RgbImage::from_pixel(1001, 777, Rgb([10, 200, 77]));
        for (w, h) in [
            (1001, 777),
            (1000, 700),
            (500, 388),
            (333, 259),
            (100, 10),
            (1, 1),
        ] {
            let small = downscale(img.clone(), w, h);
            assert_eq!(small.dimensions(), (w, h));
            assert!(small.pixels().all(|p| *p == Rgb([10, 200, 77])), "{w}x{h}");
        }
    }

    #[test]
    fn halving_averages_blocks() {
        let mut img = RgbImage::new(2, 2);
        img.put_pixel(0, 0, Rgb([0, 0, 0]));
        img.put_pixel(1, 0, Rgb([100, 0, 0]));
        img.put_pixel(0, 1, Rgb([100, 0, 0]));
        img.put_pixel(1, 1, Rgb([200, 4, 0]));
        assert_eq!(downscale(img, 1, 1).get_pixel(0, 0).0, [100, 1, 0]);
    }
}
