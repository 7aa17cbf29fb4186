//! The flags of `predict`.

use std::path::PathBuf;

use clap::Args;
use vlinder::device::Backend;
use vlinder::predict::{OutputFormat, PredictConfig};
use vlinder::trained::WeightsChoice;

/// The flags of [`PredictConfig`].
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The model directory.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Photos, or folders searched (recursively) for photos.
    #[arg(required = true, value_name = "PHOTO|FOLDER")]
    pub photos: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Show only the K most probable species in the table (default: all).
    #[arg(long, value_name = "K")]
    pub top: Option<usize>,
    /// When the photos were taken (2021-04-25 or 25-04-2021), for a model with a date and
    /// place prior.
    #[arg(long, value_name = "DATE")]
    pub date: Option<String>,
    /// Where, in decimal degrees (with --longitude).
    #[arg(
        long,
        value_name = "DEGREES",
        requires = "longitude",
        allow_hyphen_values = true
    )]
    pub latitude: Option<String>,
    #[arg(
        long,
        value_name = "DEGREES",
        requires = "latitude",
        allow_hyphen_values = true
    )]
    pub longitude: Option<String>,
    /// Each photo's date and place instead: a CSV with a row per photo (photo or file, date
    /// or observed_on, latitude, longitude; matched by folder and file name) or a manifest.jsonl.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["date", "latitude", "longitude"])]
    pub observations: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = WeightsChoice::Last)]
    pub weights: WeightsChoice,
    #[arg(long, value_enum, default_value_t = Backend::Flex)]
    pub device: Backend,
}

impl From<PredictArgs> for PredictConfig {
    fn from(args: PredictArgs) -> Self {
        PredictConfig {
            model: args.model,
            photos: args.photos,
            format: args.format,
            top: args.top,
            date: args.date,
            latitude: args.latitude,
            longitude: args.longitude,
            observations: args.observations,
            weights: args.weights,
            device: args.device,
        }
    }
}
