//! The configuration of `vlinder train`, saved in `model.json` so that a run can be repeated.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::augment::AugmentParams;
use crate::dataset::ResizeFilter;
use crate::device::Backend;
use crate::model::{Architecture, ModelConfig};
use crate::{Error, Result};

/// Everything that decides a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// A folder with one sub-folder of photos per species, split into train and validation
    /// by --validation-split.
    pub data: Option<PathBuf>,
    /// A folder of species sub-folders to train on (with --validation).
    pub train: Option<PathBuf>,
    /// A folder of species sub-folders to validate on (with --train).
    pub validation: Option<PathBuf>,
    /// The share of each species' photos held out for validation with --data.
    pub validation_split: f64,
    /// The network: which one, its input size and resizing, how a transfer network looks.
    #[serde(flatten)]
    pub model: ModelConfig,
    pub epochs: usize,
    pub batch_size: usize,
    /// RMSprop's learning rate.
    pub learning_rate: f64,
    /// RMSprop's decay of the squared-gradient average (Keras' rho).
    pub rho: f32,
    /// RMSprop's epsilon (Keras' default).
    pub epsilon: f32,
    /// Seeds the split, the initial weights, the photo order and dropout.
    pub seed: u64,
    /// The backbone's weights (.pth) for a transfer model (default: the ones `vlinder backbone
    /// install NAME` put in the cache).
    pub backbone: Option<PathBuf>,
    /// For the transfer models: augmented copies of each training photo whose features are
    /// computed once, besides the photo itself (the recipe draws afresh every epoch instead).
    #[serde(default = "default_feature_copies")]
    pub feature_copies: usize,
    /// For the transfer models: after training the head, train the last N of the backbone's
    /// MBConv blocks (Lite0 has 16), its final 1x1 convolution and the head together (0: the
    /// backbone stays frozen).
    #[serde(default)]
    pub fine_tune: usize,
    /// Epochs of fine-tuning, after --epochs of the head alone.
    #[serde(default = "default_fine_tune_epochs")]
    pub fine_tune_epochs: usize,
    /// RMSprop's learning rate while fine-tuning: small, so that the pretrained weights move
    /// only a little (1e-4 overfit within a few epochs in our runs).
    #[serde(default = "default_fine_tune_learning_rate")]
    pub fine_tune_learning_rate: f64,
    /// How the learning rate moves during fine-tuning, step by step: `constant`, or `cosine`
    /// (half a cosine from --fine-tune-learning-rate towards 0 at the end).
    #[serde(default)]
    pub fine_tune_schedule: Schedule,
    /// Epochs at the start of fine-tuning over which the learning rate rises linearly from
    /// near 0 to --fine-tune-learning-rate, so that the new head's first large gradients do
    /// not knock the pretrained weights about.
    #[serde(default)]
    pub fine_tune_warmup: usize,
    /// Stop fine-tuning once the validation loss has not improved for N epochs, and keep the
    /// weights of the fine-tuning epoch with the lowest validation loss.
    #[serde(default)]
    pub fine_tune_patience: Option<usize>,
    /// What fine-tuning trains on: `activations`, those before the fine-tuned blocks,
    /// computed once for the photos and their --feature-copies augmented copies; or `photos`,
    /// every training photo augmented afresh each epoch and run through the frozen blocks
    /// again: slower per epoch, never the same copy twice, and no activations held in memory.
    #[serde(default)]
    pub fine_tune_from: FineTuneInput,
    /// Train towards targets moved this share of the way to uniform (label smoothing, e.g.
    /// 0.1), so that the network is not pushed to ever larger logits on a few photos; the
    /// validation loss is always against the labels as they are.
    #[serde(default)]
    pub label_smoothing: f32,
    /// Mixup's α (0: off): each training batch is blended with a shuffled copy of itself by a
    /// weight drawn from Beta(α, α), and its loss between both labels alike (on cached
    /// features or activations, those are blended).
    #[serde(default)]
    pub mixup: f32,
    /// Photos of other species or of no butterfly (any layout, no labels): they teach the
    /// unknown-ness score what the model's species are not.
    #[serde(default)]
    pub others: Option<PathBuf>,
    /// Photos of species the model is not trained on (any layout, no labels), never used to fit
    /// anything: the finished model's unknown-ness score is measured on them and the figures
    /// are recorded in `model.json` (`open_set`).
    #[serde(default)]
    pub unknown: Option<PathBuf>,
    /// Each photo's observation date and place: a CSV with a row per photo (file, species,
    /// observed_on, latitude, longitude) or a collection's manifest.jsonl. The training photos'
    /// months and latitudes become the model's prior; the validation photos' fit its weight.
    #[serde(default)]
    pub observations: Option<PathBuf>,
    /// A prior made by `vlinder prior gbif` instead of the training photos' own; with
    /// --observations its weight is fitted on the validation photos, else it is 1.
    #[serde(default)]
    pub prior: Option<PathBuf>,
    /// A review queue's database (a SQLite file or a postgres:// URL; give a password in
    /// PGPASSWORD rather than the URL): the photos of records validators confirmed or corrected
    /// are added to the training photos, labelled with the validators' species.
    #[serde(default)]
    pub reviewed: Option<String>,
    /// The share of validation photos whose unknown-ness score must pass: the rest of them,
    /// and photos less like the known species, are called `unknown`.
    #[serde(default = "default_keep")]
    pub keep: f64,
    /// What the unknown-ness score of a fine-tuned transfer model is fitted on; a frozen
    /// backbone's features are the ImageNet ones either way.
    #[serde(default = "tuned_features")]
    pub unknown_features: UnknownFeatures,
    /// Train on the photos as they are, without augmentation.
    pub no_augment: bool,
    /// The augmentation of the training photos (never the validation photos), a fresh draw for
    /// every photo in every epoch.
    pub augment: AugmentParams,
    /// Where the computation runs.
    pub device: Backend,
}

impl TrainConfig {
    /// `--model transfer` made concrete: EfficientNet-Lite0 with the configuration that won the
    /// 5-fold cross-validation on the 900 iNaturalist photos (the README's table of every
    /// configuration tried) for each option that `given` (by field name, e.g. `"image_size"`)
    /// says the user left out: 384 pixels, bilinear, 2 feature copies, label smoothing 0.1,
    /// and the last 5 blocks fine-tuned for 8 epochs at 1e-4 along a cosine after a warm-up
    /// epoch. Looking twice needs a frozen backbone, so `--focus` (or `--fine-tune 0`) leaves
    /// the backbone frozen and the fine-tuning options at their own defaults. Any other
    /// architecture is left as it is.
    pub fn resolve_transfer(mut self, given: impl Fn(&str) -> bool) -> Self {
        if self.model.architecture != Architecture::Transfer {
            return self;
        }
        self.model.architecture = Architecture::EfficientNetLite0;
        if !given("image_size") {
            self.model.image_size = 384;
        }
        if !given("resize") {
            self.model.resize = ResizeFilter::Bilinear;
        }
        if !given("feature_copies") {
            self.feature_copies = 2;
        }
        if !given("label_smoothing") {
            self.label_smoothing = 0.1;
        }
        if !given("fine_tune") && !given("focus") {
            self.fine_tune = 5;
        }
        if self.fine_tune > 0 {
            if !given("fine_tune_epochs") {
                self.fine_tune_epochs = 8;
            }
            if !given("fine_tune_learning_rate") {
                self.fine_tune_learning_rate = 1e-4;
            }
            if !given("fine_tune_schedule") {
                self.fine_tune_schedule = Schedule::Cosine;
            }
            if !given("fine_tune_warmup") {
                self.fine_tune_warmup = 1;
            }
        }
        self
    }

    /// The configuration with the network's description completed from the training options:
    /// a fine-tuned backbone whose score takes the ImageNet features keeps the ImageNet weights
    /// of its tuned blocks (`imagenet_tail`).
    pub fn described(&self) -> Self {
        let mut config = self.clone();
        let imagenet = self.unknown_features == UnknownFeatures::Imagenet;
        config.model.imagenet_tail = if self.model.is_transfer() && imagenet {
            self.fine_tune
        } else {
            0
        };
        config
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
            if self.fine_tune_warmup >= self.fine_tune_epochs {
                return Err(Error::invalid(
                    "fine-tune-warmup",
                    self.fine_tune_warmup,
                    format!(
                        "fewer epochs than --fine-tune-epochs {}",
                        self.fine_tune_epochs
                    ),
                ));
            }
            if self.fine_tune_patience == Some(0) {
                return Err(Error::invalid(
                    "fine-tune-patience",
                    0,
                    "at least 1 epoch without improvement",
                ));
            }
        } else {
            // Options that only shape fine-tuning would be silently ignored without it.
            let given = [
                (
                    "fine-tune-schedule",
                    self.fine_tune_schedule != Schedule::Constant,
                ),
                ("fine-tune-warmup", self.fine_tune_warmup > 0),
                ("fine-tune-patience", self.fine_tune_patience.is_some()),
                (
                    "fine-tune-from",
                    self.fine_tune_from != FineTuneInput::Activations,
                ),
            ];
            if let Some((name, _)) = given.iter().find(|(_, given)| *given) {
                return Err(Error::invalid(
                    name,
                    "(given)",
                    "only with --fine-tune N: it shapes fine-tuning, which is off",
                ));
            }
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(Error::invalid(
                "label-smoothing",
                self.label_smoothing,
                "a share from 0 (off) up to but not including 1, e.g. 0.1",
            ));
        }
        if !(self.mixup >= 0.0 && self.mixup <= 10.0) {
            return Err(Error::invalid(
                "mixup",
                self.mixup,
                "Beta's α from 0 (off) to 10, e.g. 0.2 (small α: most batches barely mixed)",
            ));
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

/// What fine-tuning takes its inputs from (`--fine-tune-from`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum FineTuneInput {
    /// The activations before the fine-tuned blocks, computed once.
    #[default]
    Activations,
    /// The photos, augmented afresh each epoch.
    Photos,
}

/// What the unknown-ness score of a fine-tuned transfer model is fitted on (`--unknown-features`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum UnknownFeatures {
    /// The features the network had before fine-tuning: the tuned blocks and the head's
    /// convolution are kept a second time with their ImageNet weights and run on the same
    /// activations (more work per photo; far better at telling species the model never saw).
    Imagenet,
    /// The features the head sees, as fine-tuning left them.
    Tuned,
}

/// How the learning rate moves over the steps of a training stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// The same rate at every step (after any warm-up).
    #[default]
    Constant,
    /// Half a cosine from the full rate towards 0 at the end (after any warm-up).
    Cosine,
}

impl Schedule {
    /// The learning rate at `step` (from 0) of `steps`, the first `warmup` of them rising
    /// linearly to `rate` (the first step at `rate / warmup`), the rest as the schedule says.
    pub fn rate(self, rate: f64, step: usize, steps: usize, warmup: usize) -> f64 {
        if step < warmup {
            return rate * (step + 1) as f64 / warmup as f64;
        }
        match self {
            Schedule::Constant => rate,
            Schedule::Cosine => {
                let progress = (step - warmup) as f64 / (steps - warmup).max(1) as f64;
                0.5 * rate * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

impl Default for TrainConfig {
    /// Every option's default, written once: the command line's defaults and the values that
    /// older `model.json` files without a field are read with come from here. No photos yet;
    /// the recipe's network, optimiser and augmentation.
    fn default() -> Self {
        TrainConfig {
            data: None,
            train: None,
            validation: None,
            validation_split: 0.2,
            model: ModelConfig::default(),
            epochs: 50,
            batch_size: 32,
            learning_rate: 1e-3,
            rho: 0.9,
            epsilon: 1e-7,
            seed: 42,
            backbone: None,
            feature_copies: 4,
            fine_tune: 0,
            fine_tune_epochs: 10,
            fine_tune_learning_rate: 2e-5,
            fine_tune_schedule: Schedule::Constant,
            fine_tune_warmup: 0,
            fine_tune_patience: None,
            fine_tune_from: FineTuneInput::Activations,
            label_smoothing: 0.0,
            mixup: 0.0,
            others: None,
            unknown: None,
            observations: None,
            prior: None,
            reviewed: None,
            keep: 0.95,
            unknown_features: UnknownFeatures::Imagenet,
            no_augment: false,
            augment: AugmentParams::default(),
            device: Backend::Flex,
        }
    }
}

/// The defaults, for the attributes that serde reads them through.
fn defaults() -> TrainConfig {
    TrainConfig::default()
}

/// Read into model.json files written before fine-tuning existed.
fn default_fine_tune_epochs() -> usize {
    defaults().fine_tune_epochs
}

fn default_fine_tune_learning_rate() -> f64 {
    defaults().fine_tune_learning_rate
}

/// Read into model.json files written before the unknown-ness score existed.
fn default_keep() -> f64 {
    defaults().keep
}

/// Read into model.json files written before `unknown_features` existed: their score took
/// the features the head sees.
fn tuned_features() -> UnknownFeatures {
    UnknownFeatures::Tuned
}

/// Read into model.json files written before `feature_copies` existed.
fn default_feature_copies() -> usize {
    defaults().feature_copies
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_learning_rate_warms_up_linearly_then_stays_or_falls_along_a_cosine() {
        let rates = |schedule: Schedule, warmup| -> Vec<f64> {
            (0..10)
                .map(|step| schedule.rate(1e-3, step, 10, warmup))
                .collect()
        };
        assert_eq!(rates(Schedule::Constant, 0), vec![1e-3; 10]);
        let warm = rates(Schedule::Constant, 4);
        for (step, want) in [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3].iter().enumerate() {
            assert!((warm[step] - want).abs() < 1e-12, "step {step}: {warm:?}");
        }
        let cosine = rates(Schedule::Cosine, 2);
        assert_eq!(
            &cosine[..2],
            &warm[..2].iter().map(|r| r * 2.0).collect::<Vec<_>>()[..]
        );
        // The full rate right after the warm-up, half of it half-way through the rest, then
        // down towards 0 without reaching it.
        assert!((cosine[2] - 1e-3).abs() < 1e-12, "{cosine:?}");
        assert!((cosine[6] - 5e-4).abs() < 1e-12, "{cosine:?}");
        assert!(cosine[2..].windows(2).all(|w| w[1] < w[0]), "{cosine:?}");
        assert!(cosine[9] > 0.0 && cosine[9] < 0.05e-3, "{cosine:?}");
    }
}
