//! Where a photo file becomes pixels: any common format, EXIF orientation applied, converted to
//! 8-bit RGB and resized to a square of the model's input size.

use std::io::{BufRead, Cursor, Read, Seek};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use serde::{Deserialize, Serialize};

use super::resample::{Kernel, resize_rgb};
use crate::{Error, Result};

/// File extensions read as photos, compared without regard to letter case.
pub const PHOTO_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp"];

/// The largest width or height accepted, against decompression bombs.
const MAX_SIDE: u32 = 20_000;
/// The most pixels accepted (100 megapixels), checked from the header before decoding.
pub const MAX_PIXELS: u64 = 100_000_000;

/// Bounds on one decode.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits<'a> {
    /// The most pixels (width x height), checked from the header before anything is allocated.
    pub max_pixels: u64,
    /// Set (by a request that timed out) to stop the decode where it is.
    pub cancelled: Option<&'a AtomicBool>,
}

impl Default for DecodeLimits<'_> {
    fn default() -> Self {
        DecodeLimits {
            max_pixels: MAX_PIXELS,
            cancelled: None,
        }
    }
}

/// The photo's bytes as the decoder reads them, failing every read once `cancelled` is set, so
/// that a decoder that reads as it goes (PNG, TIFF, WebP) stops within a few rows.
struct Stoppable<'a> {
    bytes: Cursor<&'a [u8]>,
    cancelled: Option<&'a AtomicBool>,
}

impl Stoppable<'_> {
    fn check(&self) -> std::io::Result<()> {
        match self.cancelled {
            Some(flag) if flag.load(Ordering::Relaxed) => Err(std::io::Error::other(CANCELLED)),
            _ => Ok(()),
        }
    }
}

const CANCELLED: &str = "decoding stopped: the request was cancelled";

impl Read for Stoppable<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.check()?;
        self.bytes.read(buf)
    }
}

impl BufRead for Stoppable<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.check()?;
        self.bytes.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.bytes.consume(amount)
    }
}

impl Seek for Stoppable<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.bytes.seek(to)
    }
}

/// How a photo is resized to the model's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum ResizeFilter {
    /// Nearest neighbour, what Keras' `flow_from_directory` uses by default.
    Nearest,
    /// Bilinear with antialiasing, like PIL's `BILINEAR`; smoother on large photos.
    Bilinear,
}

impl ResizeFilter {
    fn kernel(self) -> Kernel {
        match self {
            ResizeFilter::Nearest => Kernel::Nearest,
            ResizeFilter::Bilinear => Kernel::Triangle,
        }
    }
}

/// True if `path` has one of the [`PHOTO_EXTENSIONS`].
pub fn has_photo_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| PHOTO_EXTENSIONS.iter().any(|p| e.eq_ignore_ascii_case(p)))
}

/// Decodes the photo at `path` into `size` x `size` RGB pixels, row-major, 3 bytes per pixel.
///
/// The format is read from the file's bytes, not its name. EXIF orientation is applied;
/// grayscale, alpha, 16-bit and palette images are converted to 8-bit RGB (alpha dropped).
pub fn decode_photo(path: &Path, size: u32, filter: ResizeFilter) -> Result<Vec<u8>> {
    Ok(resize_square(&open_oriented(path)?, size, filter))
}

/// `image` as `size` x `size` 8-bit RGB pixels.
pub fn resize_square(image: &DynamicImage, size: u32, filter: ResizeFilter) -> Vec<u8> {
    square_from_rgb(image.to_rgb8(), size, filter)
}

/// `rgb` as `size` x `size` 8-bit RGB pixels.
pub fn square_from_rgb(rgb: RgbImage, size: u32, filter: ResizeFilter) -> Vec<u8> {
    let (width, height) = rgb.dimensions();
    if (width, height) == (size, size) {
        return rgb.into_raw();
    }
    let side = size as usize;
    resize_rgb(
        rgb.as_raw(),
        (width as usize, height as usize),
        (side, side),
        filter.kernel(),
    )
}

/// `rgb` shrunk, its proportions kept, until its longer side is at most `longest` pixels
/// (`None` if it already is), with the bilinear filter widened as `image`'s resize widens it
/// when shrinking. `image`'s own `thumbnail` took a third of a queue import's time.
pub fn shrink_within(rgb: &RgbImage, longest: u32) -> Option<RgbImage> {
    let (width, height) = rgb.dimensions();
    let longer = width.max(height);
    if longer <= longest {
        return None;
    }
    let scaled = |side: u32| ((side as f64 * longest as f64 / longer as f64).round() as u32).max(1);
    let (to_width, to_height) = (scaled(width), scaled(height));
    let pixels = resize_rgb(
        rgb.as_raw(),
        (width as usize, height as usize),
        (to_width as usize, to_height as usize),
        ResizeFilter::Bilinear.kernel(),
    );
    RgbImage::from_raw(to_width, to_height, pixels)
}

/// Opens a photo at its own size with its EXIF orientation applied.
pub fn open_oriented(path: &Path) -> Result<DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    image_from_bytes(&bytes, path)
}

/// Decodes a photo held in memory; `origin` (a path or URL) names it in errors.
pub fn image_from_bytes(bytes: &[u8], origin: &Path) -> Result<DynamicImage> {
    decode_within(bytes, origin, DecodeLimits::default())
}

/// As [`image_from_bytes`], within `limits`: a photo with more pixels is refused from its header,
/// before anything is allocated, and a cancelled decode stops with an error.
pub fn decode_within(bytes: &[u8], origin: &Path, limits: DecodeLimits) -> Result<DynamicImage> {
    let fail = |reason: String| Error::Photo {
        path: origin.to_path_buf(),
        reason,
    };
    if bytes.is_empty() {
        return Err(fail("the file is empty".into()));
    }
    let source = Stoppable {
        bytes: Cursor::new(bytes),
        cancelled: limits.cancelled,
    };
    let mut reader = ImageReader::new(source)
        .with_guessed_format()
        .map_err(|e| Error::io(origin, e))?;
    match reader.format() {
        None => return Err(fail("not an image in a known format".into())),
        Some(ImageFormat::Jpeg) if !jpeg_is_complete(bytes) => {
            return Err(fail(
                "the JPEG is truncated (its last scan has no end marker)".into(),
            ));
        }
        Some(_) => {}
    }
    let max_pixels = limits.max_pixels.min(MAX_PIXELS);
    let mut bounds = image::Limits::default();
    bounds.max_image_width = Some(MAX_SIDE);
    bounds.max_image_height = Some(MAX_SIDE);
    // The decoder's own allocations: the largest image accepted, 16 bits per channel, RGBA.
    bounds.max_alloc = Some(max_pixels * 8);
    reader.limits(bounds);
    let mut decoder = reader.into_decoder().map_err(|e| fail(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    if width as u64 * height as u64 > max_pixels {
        return Err(fail(format!(
            "{width} x {height} pixels is more than the {} accepted",
            megapixels(max_pixels)
        )));
    }
    let orientation = decoder.orientation().map_err(|e| fail(e.to_string()))?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| fail(e.to_string()))?;
    if limits.cancelled.is_some_and(|c| c.load(Ordering::Relaxed)) {
        return Err(fail(CANCELLED.into()));
    }
    image.apply_orientation(orientation);
    if image.width() == 0 || image.height() == 0 {
        return Err(fail("the image has no pixels".into()));
    }
    Ok(image)
}

/// `pixels` in words: "40 megapixels", or "1500 pixels" below one.
fn megapixels(pixels: u64) -> String {
    if pixels >= 1_000_000 && pixels.is_multiple_of(100_000) {
        format!("{} megapixels", pixels as f64 / 1e6)
    } else {
        format!("{pixels} pixels")
    }
}

/// True if an end-of-image marker follows the last start-of-scan marker. The JPEG decoder fills a
/// truncated file with grey instead of failing; inside scan data every 0xFF byte is stuffed, so
/// the markers cannot occur by chance there, and an embedded thumbnail ends before the main scans.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let last_end = bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]);
    matches!((last_scan, last_end), (Some(scan), Some(end)) if end > scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_photo_shrinks_within_its_longest_side_as_images_thumbnail_would() {
        // A gradient with a sharp-edged square, wider than high.
        let rgb = RgbImage::from_fn(301, 157, |x, y| {
            let square = (100..200).contains(&x) && (40..120).contains(&y);
            image::Rgb([
                (x * 255 / 300) as u8,
                (y * 255 / 156) as u8,
                255 * square as u8,
            ])
        });
        let small = shrink_within(&rgb, 64).expect("301 pixels is more than 64");
        let theirs = DynamicImage::ImageRgb8(rgb.clone())
            .thumbnail(64, 64)
            .to_rgb8();
        assert_eq!(small.dimensions(), theirs.dimensions());
        let differences: Vec<f64> = (small.as_raw().iter().zip(theirs.as_raw()))
            .map(|(&a, &b)| (a as f64 - b as f64).abs())
            .collect();
        let mean = differences.iter().sum::<f64>() / differences.len() as f64;
        assert!(mean < 2.0, "mean difference {mean} from image's thumbnail");
        // Never larger than the photo; a high photo keeps its proportions too.
        assert!(shrink_within(&rgb, 301).is_none() && shrink_within(&rgb, 400).is_none());
        let high = RgbImage::new(40, 1000);
        assert_eq!(shrink_within(&high, 100).unwrap().dimensions(), (4, 100));
    }
}
