//! The flags of `evaluate`.

use std::path::PathBuf;

use clap::Args;
use vlinder::device::Backend;
use vlinder::evaluate::{EvaluateConfig, SplitChoice};
use vlinder::trained::WeightsChoice;

use super::check::ThresholdsArgs;

/// The flags of [`EvaluateConfig`].
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// The model directory.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// A folder with one sub-folder of photos per species.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Which of its photos to use.
    #[arg(long, value_enum, default_value_t = SplitChoice::All)]
    pub split: SplitChoice,
    /// Which saved weights to use.
    #[arg(long, value_enum, default_value_t = WeightsChoice::Last)]
    pub weights: WeightsChoice,
    /// Photos of species the model was not trained on, or of no butterfly (any layout): how
    /// well the unknown-ness score tells them from the evaluated photos.
    #[arg(long, value_name = "DIR")]
    pub unknown: Option<PathBuf>,
    /// The verdict thresholds of the open-set figures, as in `vlinder check`.
    #[command(flatten)]
    pub thresholds: ThresholdsArgs,
    /// Where `evaluation.json` and `confusion-matrix.png` go (default: the model directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Backend::Flex)]
    pub device: Backend,
}

impl From<EvaluateArgs> for EvaluateConfig {
    fn from(args: EvaluateArgs) -> Self {
        EvaluateConfig {
            model: args.model,
            data: args.data,
            split: args.split,
            weights: args.weights,
            unknown: args.unknown,
            thresholds: args.thresholds.into(),
            out: args.out,
            device: args.device,
        }
    }
}
