//! Finding labelled photos in an ImageFolder layout: `ROOT/<species>/<photo>`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::decode::has_photo_extension;
use crate::{Error, Result};

/// The species a model tells apart, in class-index order (sorted folder names, as in Keras).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Species(Vec<String>);

impl Species {
    /// Species from names; they are sorted so that indices match Keras' class indices.
    pub fn new(mut names: Vec<String>) -> Self {
        names.sort();
        names.dedup();
        Species(names)
    }

    /// The class index of `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.0.binary_search_by(|n| n.as_str().cmp(name)).ok()
    }

    /// The name of class `index`.
    pub fn name(&self, index: usize) -> &str {
        &self.0[index]
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A photo file with its species' class index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Photo {
    pub path: PathBuf,
    pub label: usize,
}

/// A file that was not used, and why; reported to the user and recorded in `model.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedPhoto {
    pub path: PathBuf,
    pub reason: String,
}

/// The photos found under one ImageFolder root.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    pub root: PathBuf,
    pub species: Species,
    /// Sorted by species, then by path.
    pub photos: Vec<Photo>,
    /// Files in species folders without a photo extension (hidden files are ignored).
    pub skipped: Vec<SkippedPhoto>,
}

impl ImageFolder {
    /// Scans `root`: each sub-folder is a species, every photo below it (at any depth) one of its
    /// photos.
    pub fn scan(root: &Path) -> Result<Self> {
        let mut species_dirs = Vec::new();
        let mut loose_photos = 0;
        for entry in read_dir_sorted(root)? {
            if is_hidden(&entry) {
                continue;
            }
            if entry.is_dir() {
                species_dirs.push(entry);
            } else if has_photo_extension(&entry) {
                loose_photos += 1;
            }
        }
        if species_dirs.is_empty() {
            let found = if loose_photos > 0 {
                format!("found {loose_photos} photos but no species sub-folder")
            } else {
                "no species sub-folder".to_string()
            };
            return Err(Error::Layout {
                path: root.to_path_buf(),
                reason: format!(
                    "{found}; put each species' photos in a folder of its own: {}/<species>/<photo>.jpg",
                    root.display()
                ),
            });
        }
        let names = species_dirs
            .iter()
            .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        let species = Species::new(names);
        let mut photos = Vec::new();
        let mut skipped = Vec::new();
        for (label, dir) in species_dirs.iter().enumerate() {
            let (found, not_photos) = photos_below(dir)?;
            photos.extend(found.into_iter().map(|path| Photo { path, label }));
            skipped.extend(not_photos);
        }
        Ok(ImageFolder {
            root: root.to_path_buf(),
            species,
            photos,
            skipped,
        })
    }

    /// The number of photo files per species.
    pub fn counts(&self) -> Vec<usize> {
        count_labels(self.photos.iter().map(|p| p.label), self.species.len())
    }
}

/// The photos below `dir` at any depth, in any layout (hidden files left out), sorted at each
/// level, and the files there that have no photo extension.
pub fn photos_below(dir: &Path) -> Result<(Vec<PathBuf>, Vec<SkippedPhoto>)> {
    let (photos, others): (Vec<PathBuf>, Vec<PathBuf>) = walk_files(dir)?
        .into_iter()
        .partition(|p| has_photo_extension(p));
    let skipped = others
        .into_iter()
        .map(|path| SkippedPhoto {
            path,
            reason: "not a photo file extension".into(),
        })
        .collect();
    Ok((photos, skipped))
}

/// How many of `labels` fall in each of `classes` classes.
pub fn count_labels(labels: impl Iterator<Item = usize>, classes: usize) -> Vec<usize> {
    let mut counts = vec![0; classes];
    for label in labels {
        counts[label] += 1;
    }
    counts
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut paths = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::io(dir, e))?;
    paths.sort();
    Ok(paths)
}

/// All non-hidden files below `dir`, depth first, sorted at each level.
fn walk_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in read_dir_sorted(dir)? {
        if is_hidden(&path) {
            continue;
        }
        if path.is_dir() {
            files.extend(walk_files(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}
