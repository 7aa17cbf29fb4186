//! A set of photos decoded once per run and held in memory as resized 8-bit RGB pixels.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::decode::{ResizeFilter, decode_photo};
use super::folder::{Photo, SkippedPhoto, count_labels, photos_below};
use crate::{Result, progress};

/// Decoded photos, `size * size * 3` bytes each, with their labels and paths.
#[derive(Debug, Clone)]
pub struct PhotoSet {
    pub size: u32,
    pixels: Vec<u8>,
    pub labels: Vec<usize>,
    pub paths: Vec<PathBuf>,
}

impl PhotoSet {
    /// Decodes `photos` in parallel; unreadable ones are returned as skipped, not fatal.
    pub fn decode(
        photos: &[Photo],
        size: u32,
        filter: ResizeFilter,
        what: &str,
    ) -> (PhotoSet, Vec<SkippedPhoto>) {
        let bar = progress::bar(photos.len(), format!("decoding {what}"));
        let decoded: Vec<_> = photos
            .par_iter()
            .map(|photo| {
                let result = decode_photo(&photo.path, size, filter);
                bar.inc(1);
                result
            })
            .collect();
        bar.finish_and_clear();
        let photo_bytes = (size * size * 3) as usize;
        let mut set = PhotoSet {
            size,
            pixels: Vec::with_capacity(photos.len() * photo_bytes),
            labels: Vec::new(),
            paths: Vec::new(),
        };
        let mut skipped = Vec::new();
        for (photo, result) in photos.iter().zip(decoded) {
            match result {
                Ok(pixels) => {
                    set.pixels.extend_from_slice(&pixels);
                    set.labels.push(photo.label);
                    set.paths.push(photo.path.clone());
                }
                Err(e) => skipped.push(SkippedPhoto {
                    path: photo.path.clone(),
                    reason: match e {
                        crate::Error::Photo { reason, .. } => reason,
                        other => other.to_string(),
                    },
                }),
            }
        }
        (set, skipped)
    }

    /// Every photo below `dir`, in any layout and without labels (all 0), decoded; files
    /// that are not photos or cannot be read come back as skipped, with how many photo files
    /// there were.
    pub fn decode_below(
        dir: &Path,
        size: u32,
        filter: ResizeFilter,
        what: &str,
    ) -> Result<(PhotoSet, Vec<SkippedPhoto>, usize)> {
        let (paths, mut skipped) = photos_below(dir)?;
        let photos: Vec<Photo> = paths
            .into_iter()
            .map(|path| Photo { path, label: 0 })
            .collect();
        let (set, bad) = PhotoSet::decode(&photos, size, filter, what);
        skipped.extend(bad);
        Ok((set, skipped, photos.len()))
    }

    /// A new set of the photos at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> PhotoSet {
        let mut set = PhotoSet {
            size: self.size,
            pixels: Vec::with_capacity(indices.len() * (self.size * self.size * 3) as usize),
            labels: Vec::with_capacity(indices.len()),
            paths: Vec::with_capacity(indices.len()),
        };
        for &i in indices {
            set.pixels.extend_from_slice(self.pixels(i));
            set.labels.push(self.labels[i]);
            set.paths.push(self.paths[i].clone());
        }
        set
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of every photo, in order.
    pub fn all_pixels(&self) -> Vec<&[u8]> {
        (0..self.len()).map(|i| self.pixels(i)).collect()
    }

    /// The pixels of photo `index`.
    pub fn pixels(&self, index: usize) -> &[u8] {
        let n = (self.size * self.size * 3) as usize;
        &self.pixels[index * n..(index + 1) * n]
    }

    /// Photos per class.
    pub fn counts(&self, classes: usize) -> Vec<usize> {
        count_labels(self.labels.iter().copied(), classes)
    }
}
