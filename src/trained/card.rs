//! `model.json`: everything needed to use a trained model and to reproduce it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::calibrate::Calibration;
use crate::context::Prior;
use crate::dataset::{ResizeFilter, SkippedPhoto, Species};
use crate::model::Architecture;
use crate::model::config::MAX_IMAGE_SIZE;
use crate::model::input::Normalisation;
use crate::novelty::NoveltyCard;
use crate::open_set::OpenSetReport;
use crate::train::{EpochRecord, TrainConfig};

/// The `format` field of every `model.json`.
pub const FORMAT: &str = "vlinder-model";
/// Bumped whenever a change to the model directory would make older readers misread it.
pub const FORMAT_VERSION: u32 = 1;

/// The description of a trained model, saved as `model.json` in its directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCard {
    pub format: String,
    pub format_version: u32,
    pub architecture: Architecture,
    /// Class-index order: the model's output `i` is `species[i]`.
    pub species: Species,
    /// The species' scientific names in the same order: the names file's spelling, else the
    /// folder's made into one (`maniola_jurtina` is `Maniola jurtina`); absent in models
    /// trained before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scientific_names: Vec<String>,
    pub image_size: u32,
    pub preprocessing: Preprocessing,
    /// `sigmoid` (one output, two species) or `softmax`.
    pub output: String,
    pub parameters: usize,
    /// The full configuration of the training run.
    pub training: TrainConfig,
    pub data: DataSummary,
    pub epochs_completed: usize,
    pub history: Vec<EpochRecord>,
    pub final_metrics: Option<EpochRecord>,
    /// The epoch with the lowest validation loss, saved as `weights-best.safetensors`.
    pub best_metrics: Option<EpochRecord>,
    /// Set when fine-tuning stopped for want of a lower validation loss
    /// (`--fine-tune-patience`), which can happen at its last epoch too: the weights are then
    /// those of `final_metrics`' epoch, the best of fine-tuning.
    #[serde(default)]
    pub stopped_early: Option<StoppedEarly>,
    pub training_seconds: f64,
    /// The temperature fitted on the validation photos with the last epoch's weights, once
    /// training is complete.
    #[serde(default)]
    pub calibration: Option<Calibration>,
    /// The unknown-ness score, fitted with the last epoch's weights once training is complete
    /// (absent in models trained before it existed: they never say `unknown`).
    #[serde(default)]
    pub novelty: Option<NoveltyCard>,
    /// How the unknown-ness score does on the validation photos and, for a model trained with
    /// --unknown, on those photos of species it never saw (absent in models trained before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_set: Option<OpenSetReport>,
    /// The flight-season and latitude prior, with what it was learned from and its weights
    /// fitted on the validation photos (absent unless trained with --observations or --prior).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<Prior>,
    pub versions: Versions,
}

/// Where a run with early stopping ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoppedEarly {
    /// The last epoch that ran.
    pub epoch: usize,
    /// The epoch whose weights were kept.
    pub kept: usize,
}

/// How a photo becomes the network's input.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Preprocessing {
    pub resize: ResizeFilter,
    #[serde(flatten)]
    pub normalisation: Normalisation,
    pub channels: String,
    pub layout: String,
}

/// The photos a model was trained on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DataSummary {
    /// Photos used per species.
    pub train: BTreeMap<String, usize>,
    pub validation: BTreeMap<String, usize>,
    /// Files that could not be used, with the reason.
    pub skipped: Vec<SkippedPhoto>,
}

/// Versions of the software that wrote the model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Versions {
    pub vlinder: String,
    pub burn: String,
}

impl Versions {
    pub fn current() -> Self {
        Versions {
            vlinder: env!("CARGO_PKG_VERSION").to_string(),
            burn: env!("VLINDER_BURN_VERSION").to_string(),
        }
    }
}

impl ModelCard {
    /// Appends an epoch to the history and updates the final and best metrics (final: the
    /// epoch whose weights are kept, the last unless [`stopped_early`](Self::stopped_early) is
    /// set first); returns true if it is the new best by validation loss.
    pub fn record_epoch(&mut self, record: EpochRecord) -> bool {
        let is_best = self
            .best_metrics
            .as_ref()
            .is_none_or(|best| record.validation_loss < best.validation_loss);
        if is_best {
            self.best_metrics = Some(record.clone());
        }
        self.epochs_completed = record.epoch;
        self.training_seconds += record.seconds;
        self.history.push(record);
        // After an early stop the saved weights are an earlier epoch's.
        let kept = self.weights_epoch();
        self.final_metrics = self.history.iter().rev().find(|r| r.epoch == kept).cloned();
        is_best
    }

    /// Checks that the fields agree with each other and lie in the ranges vlinder supports, so
    /// that a hostile or hand-edited `model.json` is refused with the field named instead of
    /// failing later (a huge allocation, a division by zero, an inverted ranking).
    pub fn validate(&self) -> Result<(), String> {
        let min = self.training.model.min_image_size();
        if !(min..=MAX_IMAGE_SIZE).contains(&self.image_size) {
            return Err(format!(
                "image_size {} is outside {min}..={MAX_IMAGE_SIZE} for the {} model",
                self.image_size, self.architecture
            ));
        }
        if self.training.model.image_size != self.image_size {
            return Err(format!(
                "image_size {} differs from training.image_size {}",
                self.image_size, self.training.model.image_size
            ));
        }
        if self.training.model.architecture != self.architecture {
            return Err(format!(
                "architecture {} differs from training.model {}",
                self.architecture, self.training.model.architecture
            ));
        }
        if self.species.len() < 2 {
            return Err(format!(
                "species lists {} species; a model has at least two",
                self.species.len()
            ));
        }
        let output = if self.species.len() == 2 {
            "sigmoid"
        } else {
            "softmax"
        };
        if self.output != output {
            return Err(format!(
                "output {:?} does not fit {} species (expected {output:?})",
                self.output,
                self.species.len()
            ));
        }
        if self.preprocessing.normalisation != self.training.model.normalisation() {
            return Err(format!(
                "preprocessing does not fit the {} model",
                self.architecture
            ));
        }
        if let Some(c) = &self.calibration
            && !(c.temperature.is_finite() && c.temperature > 0.0)
        {
            return Err(format!(
                "calibration.temperature {} is not a positive number",
                c.temperature
            ));
        }
        if let Some(prior) = &self.prior {
            prior.validate().map_err(|e| format!("prior: {e}"))?;
            if prior.species != self.species.names() {
                return Err(format!(
                    "prior.species ({}) differ from species ({})",
                    prior.species.join(", "),
                    self.species.names().join(", ")
                ));
            }
        }
        self.training
            .validate()
            .map_err(|e| format!("training: {e}"))
    }

    /// True once all configured epochs have run, or the run stopped early.
    pub fn is_complete(&self) -> bool {
        self.epochs_completed >= self.training.total_epochs() || self.stopped_early.is_some()
    }

    /// The epoch whose weights `weights.safetensors` holds.
    pub fn weights_epoch(&self) -> usize {
        self.stopped_early.map_or(self.epochs_completed, |s| s.kept)
    }
}
