//! The flags of `split`.

use std::path::PathBuf;

use clap::Args;
use vlinder::dataset::split_folders::{PhotoFiles, SplitFoldersConfig};

/// The flags of [`SplitFoldersConfig`].
#[derive(Debug, Args)]
pub struct SplitArgs {
    /// A folder with one sub-folder of photos per species.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The folder to create, with train/, validation/ (and test/) or fold-1/ ... fold-K/ in it.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The share of each species' photos in validation/ (without --folds).
    #[arg(long, default_value_t = 0.2)]
    pub validation: f64,
    /// The share of each species' photos held out in test/ (0: no test folder).
    #[arg(long, default_value_t = 0.0)]
    pub test: f64,
    /// Write K folds instead of one split: fold-i/validation holds fold i, fold-i/train the rest.
    #[arg(long, value_name = "K")]
    pub folds: Option<usize>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// How the photos get into the new folders.
    #[arg(long, value_enum, default_value_t = PhotoFiles::Copy)]
    pub files: PhotoFiles,
    /// Photos whose difference hashes differ in at most this many of 64 bits are near-duplicates.
    #[arg(long, default_value_t = 5)]
    pub near_duplicate_bits: u32,
}

impl From<SplitArgs> for SplitFoldersConfig {
    fn from(args: SplitArgs) -> Self {
        SplitFoldersConfig {
            dir: args.dir,
            out: args.out,
            validation: args.validation,
            test: args.test,
            folds: args.folds,
            seed: args.seed,
            files: args.files,
            near_duplicate_bits: args.near_duplicate_bits,
        }
    }
}
