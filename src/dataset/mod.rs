//! Labelled photos: species folders on disk, train/validation splits and decoded photo sets.
//!
//! The layout is Keras' ImageFolder: one sub-folder per species, whose sorted names give the
//! class indices. [`folder`] finds the photos, [`split`] divides them, [`decode`] turns a file
//! into pixels (resized by `resample`) and [`PhotoSet`] holds a whole set decoded once per run.
//! [`split_folders`] is `vlinder split`, which writes a split to disk with [`near_duplicates`]
//! kept together.

pub mod decode;
pub mod folder;
pub mod near_duplicates;
pub mod photo_set;
mod resample;
pub mod split;
pub mod split_folders;

pub use decode::{ResizeFilter, decode_photo};
pub use folder::{ImageFolder, Photo, SkippedPhoto, Species, photos_below};
pub use photo_set::PhotoSet;
pub use split::{Split, stratified_folds, stratified_split};
