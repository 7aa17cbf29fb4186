//! `vlinder augment`: writes transformed versions of one photo to a folder, like Keras'
//! `flow(save_to_dir=...)`, with the parameters drawn for each, and optionally a contact sheet of
//! the original beside its versions.

use std::path::{Path, PathBuf};

use image::{RgbImage, imageops};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{AugmentParams, Image, Transform};
use crate::dataset::decode;
use crate::{Error, Result, files};

/// The file format of the written versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum PreviewFormat {
    Png,
    Jpeg,
}

impl PreviewFormat {
    fn extension(self) -> &'static str {
        match self {
            PreviewFormat::Png => "png",
            PreviewFormat::Jpeg => "jpg",
        }
    }

    fn image_format(self) -> image::ImageFormat {
        match self {
            PreviewFormat::Png => image::ImageFormat::Png,
            PreviewFormat::Jpeg => image::ImageFormat::Jpeg,
        }
    }
}

/// The configuration of `vlinder augment`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreviewConfig {
    /// The photo to transform.
    pub photo: PathBuf,
    /// How many transformed versions to write.
    pub count: usize,
    /// The folder to write them to (created if missing).
    pub out: PathBuf,
    /// File names are PREFIX_NNN.png (or .jpg).
    pub prefix: String,
    pub format: PreviewFormat,
    /// Resize the photo to SIZE x SIZE first, as training does (default: its own size).
    pub size: Option<u32>,
    pub seed: u64,
    /// Also write PREFIX_sheet.png: the original beside its versions.
    pub sheet: bool,
    pub params: AugmentParams,
}

/// What a preview wrote.
#[derive(Debug, Clone)]
pub struct PreviewOutput {
    pub versions: Vec<PathBuf>,
    pub sheet: Option<PathBuf>,
    /// `PREFIX_transforms.json`: the parameters drawn for each version.
    pub transforms: PathBuf,
}

/// Writes `config.count` augmented versions of `config.photo`.
pub fn preview(config: &PreviewConfig) -> Result<PreviewOutput> {
    if config.count == 0 {
        return Err(Error::invalid("count", 0, "at least 1"));
    }
    if config.prefix.contains(['/', '\\']) || config.prefix.contains("..") {
        return Err(Error::invalid(
            "prefix",
            &config.prefix,
            "a file name prefix without / or ..",
        ));
    }
    config.params.validate()?;
    let mut original = decode::open_oriented(&config.photo)?.to_rgb8();
    if let Some(size) = config.size {
        if size == 0 {
            return Err(Error::invalid("size", 0, "at least 1 pixel"));
        }
        original = imageops::resize(&original, size, size, imageops::FilterType::Triangle);
    }
    files::create_dir(&config.out)?;
    let (cols, rows) = (original.width() as usize, original.height() as usize);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let digits = config.count.to_string().len().max(3);
    let mut versions = Vec::with_capacity(config.count);
    let mut images = Vec::with_capacity(config.count);
    let mut transforms: Vec<Transform> = Vec::with_capacity(config.count);
    let mut scratch = vec![0f32; rows * cols * 3];
    for i in 0..config.count {
        let transform = config.params.draw(rows, cols, &mut rng);
        transform.apply(
            Image {
                pixels: original.as_raw(),
                rows,
                cols,
            },
            &mut scratch,
        );
        let bytes: Vec<u8> = scratch
            .iter()
            .map(|v| v.round().clamp(0.0, 255.0) as u8)
            .collect();
        let image =
            RgbImage::from_raw(cols as u32, rows as u32, bytes).expect("the buffer fits the image");
        let path = config.out.join(format!(
            "{}_{i:0digits$}.{}",
            config.prefix,
            config.format.extension()
        ));
        write_image(&image, &path, config.format)?;
        versions.push(path);
        images.push(image);
        transforms.push(transform);
    }
    let sheet = if config.sheet {
        let path = config.out.join(format!("{}_sheet.png", config.prefix));
        write_image(
            &contact_sheet(&original, &images),
            &path,
            PreviewFormat::Png,
        )?;
        Some(path)
    } else {
        None
    };
    let transforms_path = config
        .out
        .join(format!("{}_transforms.json", config.prefix));
    files::write_json(&transforms_path, &transforms)?;
    Ok(PreviewOutput {
        versions,
        sheet,
        transforms: transforms_path,
    })
}

fn write_image(image: &RgbImage, path: &Path, format: PreviewFormat) -> Result<()> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, format.image_format())
        .map_err(|e| Error::output(path, e))?;
    files::write_atomic(path, bytes.get_ref())
}

/// The original (framed in orange) followed by its versions, in rows of up to five thumbnails.
fn contact_sheet(original: &RgbImage, versions: &[RgbImage]) -> RgbImage {
    const THUMB: u32 = 200;
    const GAP: u32 = 10;
    let scale = |img: &RgbImage| {
        let (w, h) = img.dimensions();
        let f = THUMB as f64 / w.max(h).max(1) as f64;
        let (tw, th) = (
            ((w as f64 * f).round() as u32).max(1),
            ((h as f64 * f).round() as u32).max(1),
        );
        imageops::resize(img, tw, th, imageops::FilterType::Triangle)
    };
    let tiles: Vec<RgbImage> = std::iter::once(original)
        .chain(versions)
        .map(scale)
        .collect();
    let per_row = tiles.len().min(5) as u32;
    let rows = (tiles.len() as u32).div_ceil(per_row);
    let cell = THUMB + GAP;
    let mut sheet = RgbImage::from_pixel(
        per_row * cell + GAP,
        rows * cell + GAP,
        image::Rgb([255, 255, 255]),
    );
    for (i, tile) in tiles.iter().enumerate() {
        let (x, y) = (
            GAP + (i as u32 % per_row) * cell,
            GAP + (i as u32 / per_row) * cell,
        );
        if i == 0 {
            let frame = RgbImage::from_pixel(
                tile.width() + 6,
                tile.height() + 6,
                image::Rgb([230, 120, 0]),
            );
            imageops::overlay(&mut sheet, &frame, x as i64 - 3, y as i64 - 3);
        }
        imageops::overlay(&mut sheet, tile, x as i64, y as i64);
    }
    sheet
}
