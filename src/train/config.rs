//! The configuration of `vlinder train`, saved in `model.json` so that a run can be repeated.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::augment::AugmentParams;
use crate::dataset::ResizeFilter;
use crate::device::Backend;
use crate::model::{Architecture, ModelConfig};
use crate::{Error, Result};

/// Everything that decides a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct TrainConfig {
    /// A folder with one sub-folder of photos per species, split into train and validation
    /// by --validation-split.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["train", "validation"])]
    pub data: Option<PathBuf>,
    /// A folder of species sub-folders to train on (with --validation).
    #[arg(long, value_name = "DIR", requires = "validation")]
    pub train: Option<PathBuf>,
    /// A folder of species sub-folders to validate on (with --train).
    #[arg(long, value_name = "DIR", requires = "train")]
    pub validation: Option<PathBuf>,
    /// The share of each species' photos held out for validation with --data.
    #[arg(long, default_value_t = 0.2)]
    pub validation_split: f64,
    /// The network: which one, its input size and resizing, how a transfer network looks.
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelConfig,
    #[arg(long, default_value_t = 50)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// RMSprop's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub learning_rate: f64,
    /// RMSprop's decay of the squared-gradient average (Keras' rho).
    #[arg(long, default_value_t = 0.9)]
    pub rho: f32,
    /// RMSprop's epsilon (Keras' default).
    #[arg(long, default_value_t = 1e-7)]
    pub epsilon: f32,
    /// Seeds the split, the initial weights, the photo order and dropout.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The backbone's weights (.pth) for a transfer model (default: the ones `vlinder backbone
    /// install NAME` put in the cache).
    #[arg(long, value_name = "FILE")]
    pub backbone: Option<PathBuf>,
    /// For the transfer models: augmented copies of each training photo whose features are
    /// computed once, besides the photo itself (the recipe draws afresh every epoch instead).
    #[arg(long, default_value_t = 4)]
    #[serde(default = "default_feature_copies")]
    pub feature_copies: usize,
    /// For the transfer models: after training the head, train the last N of the backbone's
    /// MBConv blocks (Lite0 has 16), its final 1x1 convolution and the head together (0: the
    /// backbone stays frozen).
    #[arg(long, value_name = "N", default_value_t = 0)]
    #[serde(default)]
    pub fine_tune: usize,
    /// Epochs of fine-tuning, after --epochs of the head alone.
    #[arg(long, default_value_t = 10)]
    #[serde(default = "default_fine_tune_epochs")]
    pub fine_tune_epochs: usize,
    /// RMSprop's learning rate while fine-tuning: small, so that the pretrained weights move
    /// only a little (1e-4 overfit within a few epochs in our runs).
    #[arg(long, default_value_t = 2e-5)]
    #[serde(default = "default_fine_tune_learning_rate")]
    pub fine_tune_learning_rate: f64,
    /// Photos of other species or of no butterfly (any layout, no labels): they teach the
    /// unknown-ness score what the model's species are not.
    #[arg(long, value_name = "DIR")]
    #[serde(default)]
    pub others: Option<PathBuf>,
    /// The share of validation photos whose unknown-ness score must pass: the rest of them,
    /// and photos less like the known species, are called `unknown`.
    #[arg(long, default_value_t = 0.95)]
    #[serde(default = "default_keep")]
    pub keep: f64,
    /// Train on the photos as they are, without augmentation.
    #[arg(long)]
    pub no_augment: bool,
    /// The augmentation of the training photos (never the validation photos), a fresh draw for
    /// every photo in every epoch.
    #[command(flatten)]
    pub augment: AugmentParams,
    /// Where the computation runs.
    #[arg(long, value_enum, default_value_t = Backend::Flex)]
    pub device: Backend,
}

impl TrainConfig {
    /// `--model transfer` made concrete: EfficientNet-Lite0 with the configuration that won the
    /// 5-fold cross-validation on the 900 iNaturalist photos (the README's measured figures)
    /// for each option that `given` (by field name, e.g. `"image_size"`) says the user left
    /// out. Looking twice needs a large input and looks once when fine-tuning,
    /// so `--focus` is only added when neither `--image-size` nor `--fine-tune` was given.
    /// Any other architecture is left as it is.
    pub fn resolve_transfer(mut self, given: impl Fn(&str) -> bool) -> Self {
        if self.model.architecture != Architecture::Transfer {
            return self;
        }
        self.model.architecture = Architecture::EfficientNetLite0;
        if !given("image_size") {
            self.model.image_size = 640;
            if !given("focus") && !given("fine_tune") {
                self.model.focus = Some(320);
            }
        }
        if !given("resize") {
            self.model.resize = ResizeFilter::Bilinear;
        }
        if !given("feature_copies") {
            self.feature_copies = 2;
        }
        self
    }

    /// Epochs in all: the head's (or the whole network's) and then fine-tuning's.
    pub fn total_epochs(&self) -> usize {
        self.epochs
            + if self.fine_tune > 0 {
                self.fine_tune_epochs
            } else {
                0
            }
    }

    /// Checks every value, naming the first bad one and what is allowed.
    pub fn validate(&self) -> Result<()> {
        if self.data.is_none() && self.train.is_none() {
            return Err(Error::invalid(
                "data",
                "(none)",
                "give --data DIR, or --train DIR and --validation DIR",
            ));
        }
        if self.epochs == 0 {
            return Err(Error::invalid("epochs", self.epochs, "at least 1"));
        }
        if self.batch_size == 0 {
            return Err(Error::invalid("batch-size", self.batch_size, "at least 1"));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(Error::invalid(
                "learning-rate",
                self.learning_rate,
                "a positive number",
            ));
        }
        if !(self.rho > 0.0 && self.rho < 1.0) {
            return Err(Error::invalid("rho", self.rho, "between 0 and 1 exclusive"));
        }
        if self.epsilon.is_nan() || self.epsilon <= 0.0 {
            return Err(Error::invalid("epsilon", self.epsilon, "a positive number"));
        }
        if self.fine_tune > 0 {
            if !self.model.is_transfer() {
                return Err(Error::invalid(
                    "fine-tune",
                    self.fine_tune,
                    "0 for the recipe models (they train every layer anyway); fine-tuning is for the transfer models (--model efficientnet-lite0, ...)",
                ));
            }
            let blocks = self
                .model
                .architecture
                .backbone()
                .map_or(0, |b| b.block_count());
            if self.fine_tune > blocks {
                return Err(Error::invalid(
                    "fine-tune",
                    self.fine_tune,
                    format!("between 0 and {blocks}, the backbone's blocks"),
                ));
            }
            if self.fine_tune_epochs == 0 {
                return Err(Error::invalid(
                    "fine-tune-epochs",
                    self.fine_tune_epochs,
                    "at least 1 with --fine-tune",
                ));
            }
            if !(self.fine_tune_learning_rate > 0.0 && self.fine_tune_learning_rate.is_finite()) {
                return Err(Error::invalid(
                    "fine-tune-learning-rate",
                    self.fine_tune_learning_rate,
                    "a positive number",
                ));
            }
        }
        if !(self.keep > 0.0 && self.keep < 1.0) {
            return Err(Error::invalid(
                "keep",
                self.keep,
                "a share between 0 and 1 exclusive, e.g. 0.95: the validation photos that pass the unknown-ness score",
            ));
        }
        if self.fine_tune > 0 && self.model.focus.is_some() {
            return Err(Error::invalid(
                "focus",
                self.model.focus.unwrap_or_default(),
                "no --focus with --fine-tune: fine-tuning looks once",
            ));
        }
        if !self.no_augment {
            self.augment.validate()?;
        }
        self.model.validate()
    }
}

/// Read into model.json files written before fine-tuning existed.
fn default_fine_tune_epochs() -> usize {
    10
}

fn default_fine_tune_learning_rate() -> f64 {
    2e-5
}

/// Read into model.json files written before the unknown-ness score existed.
fn default_keep() -> f64 {
    0.95
}

/// Read into model.json files written before `feature_copies` existed.
fn default_feature_copies() -> usize {
    4
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::model::{Pooling, Viewing};

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        config: TrainConfig,
    }

    /// The configuration as the command line makes it, `--model transfer` resolved.
    fn resolved(args: &[&str]) -> TrainConfig {
        use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
        let matches = Command::command().get_matches_from(args);
        let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
        Command::from_arg_matches(&matches)
            .unwrap()
            .config
            .resolve_transfer(given)
    }

    #[test]
    fn model_transfer_is_the_winning_configuration_and_given_options_override_it() {
        let winner = resolved(&["train", "--data", "photos", "--model", "transfer"]);
        let spelled_out = resolved(&[
            "train",
            "--data",
            "photos",
            "--model",
            "efficientnet-lite0",
            "--image-size",
            "640",
            "--focus",
            "320",
            "--resize",
            "bilinear",
            "--feature-copies",
            "2",
        ]);
        assert_eq!(winner, spelled_out);
        winner.validate().unwrap();

        let smaller = resolved(&[
            "train",
            "--data",
            "photos",
            "--model",
            "transfer",
            "--image-size",
            "224",
        ]);
        assert_eq!(smaller.model.architecture, Architecture::EfficientNetLite0);
        assert_eq!((smaller.model.image_size, smaller.model.focus), (224, None));
        assert_eq!(smaller.model.resize, ResizeFilter::Bilinear);
        smaller.validate().unwrap();

        let fine_tuned = resolved(&[
            "train",
            "--data",
            "photos",
            "--model",
            "transfer",
            "--fine-tune",
            "4",
            "--feature-copies",
            "3",
        ]);
        assert_eq!(
            (fine_tuned.model.image_size, fine_tuned.model.focus),
            (640, None)
        );
        assert_eq!(fine_tuned.feature_copies, 3);
        fine_tuned.validate().unwrap();

        // Other architectures keep what clap gave them.
        let recipe = resolved(&["train", "--data", "photos"]);
        assert_eq!(recipe.model.architecture, Architecture::Recipe);
        assert_eq!((recipe.model.image_size, recipe.feature_copies), (75, 4));
    }

    #[test]
    fn new_runs_pool_by_gem_and_older_model_files_read_as_they_were_trained() {
        let args = ["train", "--data", "photos", "--model", "efficientnet-lite0"];
        let config = Command::parse_from(args).config;
        assert_eq!(config.model.pooling, Pooling::Gem);
        assert_eq!(config.model.focus, None);

        // A model.json written before these options had neither key: its network averaged.
        let mut json = serde_json::to_value(&config).unwrap();
        let fields = json.as_object_mut().unwrap();
        assert!(fields.remove("pooling").is_some() && fields.remove("focus").is_some());
        let old: TrainConfig = serde_json::from_value(json).unwrap();
        assert_eq!(old.model.viewing(), Viewing::default());
        assert_eq!(old.model.viewing().pooling, Pooling::Average);
    }
}
