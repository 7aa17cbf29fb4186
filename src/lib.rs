//! vlinder tells look-alike butterfly species apart from photos.
//!
//! The modules follow the data, from folders of labelled photos to a trained model and its use:
//!
//! - [`sources`]: collecting labelled photos from Flickr and GBIF;
//! - [`dataset`]: species folders, photo decoding, train/validation splits;
//! - [`augment`]: Keras' random geometric augmentation, exactly;
//! - [`model`]: the networks (the recipe's CNN, EfficientNet-Lite0) and pretrained backbones;
//! - [`names`]: species' scientific and common names, and the names people write resolved;
//! - [`train`]: the training loop, transfer learning, cross-validation, history and checkpoints;
//! - [`trained`]: the model directory that training writes and every later stage reads, and its
//!   card (`model.json`);
//! - [`evaluate`]: metrics of a trained model on labelled photos;
//! - [`calibrate`]: temperature scaling for honest probabilities;
//! - [`novelty`]: whether a photo shows one of the model's species at all;
//! - [`open_set`]: how well the unknown-ness score tells known species from others;
//! - [`verdict`]: the verdict on one record from its probabilities and unknown-ness;
//! - [`predict`]: ranked species for new photos;
//! - [`check`]: verdicts on volunteers' records, most doubtful first;
//! - [`queue`]: the review queue: records, verdicts and validators' decisions in a database;
//! - [`serve`]: the HTTP service and the reviewers' page;
//! - [`plot`]: the PNG charts that training and evaluation write.
//!
//! The binary (`src/bin/vlinder/`) is a thin command line over these.

pub mod augment;
pub mod calibrate;
pub mod check;
pub mod context;
pub mod dataset;
pub mod device;
pub mod error;
pub mod evaluate;
pub mod files;
pub mod metrics;
pub mod model;
pub mod names;
pub mod novelty;
pub mod open_set;
pub mod plot;
pub mod predict;
pub mod progress;
pub mod queue;
pub mod serve;
pub mod sources;
pub mod train;
pub mod trained;
pub mod verdict;

pub use error::{Error, Result};
