//! A model directory: `model.json`, the weights (last and best epoch), the training history and
//! plots. Reading one checks its format and version before anything else.

use std::path::PathBuf;

use burn::prelude::*;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use serde::{Deserialize, Serialize};

use super::card::{FORMAT, FORMAT_VERSION};
use super::{ModelCard, Network, Normalisation, input, probability_rows};
use crate::{Error, Result, calibrate, files};

/// Which of the saved weights to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WeightsChoice {
    /// The weights after the last completed epoch (`weights.safetensors`).
    #[default]
    Last,
    /// The weights of the epoch with the lowest validation loss (`weights-best.safetensors`).
    Best,
}

/// The paths inside a model directory.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub path: PathBuf,
}

impl ModelDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ModelDir { path: path.into() }
    }

    pub fn card_path(&self) -> PathBuf {
        self.path.join("model.json")
    }

    pub fn weights_path(&self, choice: WeightsChoice) -> PathBuf {
        match choice {
            WeightsChoice::Last => self.path.join("weights.safetensors"),
            WeightsChoice::Best => self.path.join("weights-best.safetensors"),
        }
    }

    /// The optimizer state kept so that an interrupted run can resume.
    pub fn optimizer_path(&self) -> PathBuf {
        self.path.join("checkpoint").join("optimizer.bin")
    }

    pub fn history_path(&self) -> PathBuf {
        self.path.join("history.csv")
    }

    pub fn learning_curve_path(&self) -> PathBuf {
        self.path.join("learning-curve.png")
    }

    pub fn reliability_path(&self) -> PathBuf {
        self.path.join("reliability.png")
    }

    pub fn split_path(&self) -> PathBuf {
        self.path.join("split.csv")
    }

    /// Reads and checks `model.json`.
    pub fn read_card(&self) -> Result<ModelCard> {
        let path = self.card_path();
        if !self.path.is_dir() {
            return Err(Error::ModelMissing {
                path: self.path.clone(),
                reason: "no such directory".into(),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::ModelMissing {
            path: self.path.clone(),
            reason: format!("cannot read model.json: {e}"),
        })?;
        let corrupt = |reason: String| Error::ModelCorrupt {
            path: path.clone(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| corrupt(format!("invalid JSON: {e}")))?;
        if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(corrupt(format!("its \"format\" is not \"{FORMAT}\"")));
        }
        let version = value.get("format_version").and_then(|v| v.as_u64());
        if version != Some(FORMAT_VERSION as u64) {
            return Err(Error::ModelVersion {
                path,
                found: version.unwrap_or(0) as u32,
                expected: FORMAT_VERSION,
            });
        }
        serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))
    }

    pub fn write_card(&self, card: &ModelCard) -> Result<()> {
        files::write_json(&self.card_path(), card)
    }

    /// Saves the network's weights in SafeTensors with PyTorch's names and layouts.
    pub fn save_weights(&self, network: &Network, choice: WeightsChoice) -> Result<()> {
        let path = self.weights_path(choice);
        let mut store = SafetensorsStore::from_bytes(None)
            .skip_enum_variants(true)
            .with_to_adapter(BurnToPyTorchAdapter);
        network
            .save_into(&mut store)
            .map_err(|e| Error::output(&path, e))?;
        let bytes = store.get_bytes().map_err(|e| Error::output(&path, e))?;
        files::write_atomic(&path, &bytes)
    }

    /// Loads weights saved by [`ModelDir::save_weights`] into `network`.
    pub fn load_weights(&self, network: &mut Network, choice: WeightsChoice) -> Result<()> {
        let path = self.weights_path(choice);
        let bytes = std::fs::read(&path).map_err(|e| Error::ModelCorrupt {
            path: path.clone(),
            reason: format!("cannot read the weights: {e}"),
        })?;
        let mut store = SafetensorsStore::from_bytes(Some(bytes))
            .skip_enum_variants(true)
            .with_from_adapter(PyTorchToBurnAdapter);
        network
            .load_from(&mut store)
            .map_err(|e| Error::ModelCorrupt {
                path,
                reason: e.to_string(),
            })?;
        Ok(())
    }

    /// Loads the model for inference on `device`.
    pub fn load(&self, choice: WeightsChoice, device: &Device) -> Result<TrainedModel> {
        let card = self.read_card()?;
        if card.epochs_completed == 0 {
            return Err(Error::ModelMissing {
                path: self.path.clone(),
                reason: "training has not completed an epoch yet".into(),
            });
        }
        let mut network = card.training.network(card.species.len(), device);
        self.load_weights(&mut network, choice)?;
        Ok(TrainedModel {
            card,
            network: network.valid(),
            device: device.clone(),
        })
    }
}

/// A trained network with its card, ready to classify decoded photos.
#[derive(Debug)]
pub struct TrainedModel {
    pub card: ModelCard,
    pub network: Network,
    pub device: Device,
}

/// Photos per forward pass at inference.
const BATCH: usize = 64;

impl TrainedModel {
    /// Per-species probabilities for each decoded photo (`image_size`² RGB bytes each), in the
    /// card's species order.
    pub fn probabilities(&self, photos: &[&[u8]]) -> Vec<Vec<f32>> {
        predict_probabilities(
            &self.network,
            self.card.image_size,
            self.card.preprocessing.normalisation,
            photos,
            &self.device,
        )
    }

    /// [`TrainedModel::probabilities`] with the fitted temperature applied (unchanged for a
    /// model without calibration).
    pub fn calibrated_probabilities(&self, photos: &[&[u8]]) -> Vec<Vec<f32>> {
        let raw = self.probabilities(photos);
        match &self.card.calibration {
            Some(c) => raw
                .iter()
                .map(|p| calibrate::apply_temperature(p, c.temperature))
                .collect(),
            None => raw,
        }
    }
}

/// Per-species probabilities of `network` (in inference mode) for decoded photos, in batches.
pub fn predict_probabilities(
    network: &Network,
    image_size: u32,
    norm: Normalisation,
    photos: &[&[u8]],
    device: &Device,
) -> Vec<Vec<f32>> {
    let mut out = Vec::with_capacity(photos.len());
    for chunk in photos.chunks(BATCH) {
        let x = input::batch_tensor(chunk.iter().copied(), image_size, norm, device);
        out.extend(probability_rows(network.forward(x)));
    }
    out
}
