//! A model directory: `model.json`, the weights (last and best epoch), the training history and
//! plots. Reading one checks its format and version before anything else.

use std::path::PathBuf;

use burn::prelude::*;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use serde::{Deserialize, Serialize};

use super::ModelCard;
use super::card::{FORMAT, FORMAT_VERSION};
use crate::model::{Network, Normalisation, input, probability_rows};
use crate::novelty::{Detector, Novelty, NoveltyCard};
use crate::open_set::Answer;
use crate::{Error, Result, calibrate, files};

/// Which of the saved weights to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
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

    /// The statistics of the unknown-ness score.
    pub fn novelty_path(&self) -> PathBuf {
        self.path.join("novelty.safetensors")
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
        let card: ModelCard = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
        card.validate().map_err(corrupt)?;
        Ok(card)
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
        files::write_atomic(&path, &sorted_header(bytes))
    }

    /// Loads weights saved by [`ModelDir::save_weights`] into `network`.
    pub fn load_weights(&self, network: &mut Network, choice: WeightsChoice) -> Result<()> {
        let path = self.weights_path(choice);
        let bytes = std::fs::read(&path).map_err(|e| Error::ModelCorrupt {
            path: path.clone(),
            reason: format!("cannot read the weights: {e}"),
        })?;
        if let Some(name) = non_finite_tensor(&bytes) {
            return Err(Error::ModelCorrupt {
                path,
                reason: format!("the weights {name} hold values that are not finite numbers"),
            });
        }
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

    /// A short name for exactly this model: the directory's name and the first 12 hex digits of
    /// the sha256 of its card and the chosen weights, so that records checked by it can be told
    /// from those a retrained model checked.
    pub fn identity(&self, choice: WeightsChoice) -> Result<String> {
        use sha2::{Digest, Sha256};
        let mut digest = Sha256::new();
        for path in [self.card_path(), self.weights_path(choice)] {
            digest.update(std::fs::read(&path).map_err(|e| Error::io(&path, e))?);
        }
        let name = self
            .path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into());
        let hash = format!("{:x}", digest.finalize());
        Ok(format!("{name}@{}", &hash[..12]))
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
        let mut network = card.training.model.init(card.species.len(), device);
        self.load_weights(&mut network, choice)?;
        let novelty = self.load_novelty(&card, choice)?;
        Ok(TrainedModel {
            card,
            network: network.valid().freeze(),
            device: device.clone(),
            novelty,
        })
    }

    /// The unknown-ness score that fits the chosen weights, or why there is none.
    fn load_novelty(
        &self,
        card: &ModelCard,
        choice: WeightsChoice,
    ) -> Result<std::result::Result<(Detector, NoveltyCard), String>> {
        let Some(novelty) = &card.novelty else {
            return Ok(Err(format!(
                "{} has no unknown-ness score (trained before vlinder had one); it cannot say `unknown`: retrain it to get one",
                self.path.display()
            )));
        };
        // The score was fitted on the last epoch's features; other weights see other features
        // unless the layers it reads stayed frozen: a frozen backbone, or the ImageNet tail
        // of a fine-tuned one.
        let model = &card.training.model;
        let frozen =
            model.is_transfer() && (card.training.fine_tune == 0 || model.imagenet_tail > 0);
        let best_is_last = card
            .best_metrics
            .as_ref()
            .is_some_and(|b| b.epoch == card.weights_epoch());
        if choice == WeightsChoice::Best && !frozen && !best_is_last {
            return Ok(Err(format!(
                "{}: the unknown-ness score was fitted with the last epoch's weights, not the best; it cannot say `unknown` with --weights best",
                self.path.display()
            )));
        }
        novelty.validate().map_err(|reason| Error::ModelCorrupt {
            path: self.card_path(),
            reason,
        })?;
        let detector = Detector::load(
            &self.novelty_path(),
            card.species.len(),
            novelty.dimensions,
            novelty.others > 0,
        )?;
        Ok(Ok((detector, novelty.clone())))
    }
}

/// The name of the first float32 tensor of a safetensors file with a NaN or infinite value
/// (a diverged or tampered model, whose every answer would be meaningless).
fn non_finite_tensor(bytes: &[u8]) -> Option<String> {
    let tensors = safetensors::SafeTensors::deserialize(bytes).ok()?;
    tensors.iter().find_map(|(name, view)| {
        let non_finite = view.dtype() == safetensors::Dtype::F32
            && view
                .data()
                .chunks_exact(4)
                .any(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite());
        non_finite.then(|| name.to_string())
    })
}

/// A trained network with its card, ready to classify decoded photos.
#[derive(Debug)]
pub struct TrainedModel {
    pub card: ModelCard,
    pub network: Network,
    pub device: Device,
    /// The unknown-ness score's statistics and threshold, or why this model has none.
    pub novelty: std::result::Result<(Detector, NoveltyCard), String>,
}

/// What the model makes of one photo.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// The network's own probabilities, in species order.
    pub raw: Vec<f32>,
    /// With the fitted temperature applied.
    pub calibrated: Vec<f32>,
    /// Whether it shows one of the model's species at all, when the model can tell.
    pub novelty: Option<Novelty>,
}

impl Assessment {
    /// The assessment as the open-set figures read it.
    pub fn answer(&self) -> Answer<'_> {
        Answer {
            calibrated: &self.calibrated,
            novelty: self.novelty,
        }
    }
}

/// Each assessment as the open-set figures read it.
pub fn answers(assessments: &[Assessment]) -> Vec<Answer<'_>> {
    assessments.iter().map(Assessment::answer).collect()
}

/// Photos per forward pass at inference.
const BATCH: usize = 64;

impl TrainedModel {
    /// Raw and calibrated probabilities (unchanged for a model without calibration) and the
    /// unknown-ness of each decoded photo, from one pass of the network.
    pub fn assess(&self, photos: &[&[u8]]) -> Vec<Assessment> {
        let (raw, features) = embed(
            &self.network,
            self.card.image_size,
            self.card.preprocessing.normalisation,
            photos,
            &self.device,
        );
        let scores = self
            .novelty
            .as_ref()
            .ok()
            .map(|(detector, card)| (detector.scores(&features), card));
        raw.into_iter()
            .enumerate()
            .map(|(i, raw)| Assessment {
                calibrated: match &self.card.calibration {
                    Some(c) => calibrate::apply_temperature(&raw, c.temperature),
                    None => raw.clone(),
                },
                raw,
                novelty: scores.as_ref().map(|(s, card)| card.judge(s[i])),
            })
            .collect()
    }
}

/// Per-species probabilities and the features the last layer sees (flat, one row per photo)
/// of `network` (in inference mode) for decoded photos, in batches.
pub fn embed(
    network: &Network,
    image_size: u32,
    norm: Normalisation,
    photos: &[&[u8]],
    device: &Device,
) -> (Vec<Vec<f32>>, Vec<f32>) {
    let mut probabilities = Vec::with_capacity(photos.len());
    let mut features = Vec::new();
    for chunk in photos.chunks(BATCH) {
        let x = input::batch_tensor(chunk.iter().copied(), image_size, norm, device);
        let (f, logits) = network.embed(x);
        probabilities.extend(probability_rows(logits));
        features.extend(
            f.into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("features are f32"),
        );
    }
    (probabilities, features)
}

/// Per-species probabilities of `network` (in inference mode) for decoded photos, in batches.
pub fn predict_probabilities(
    network: &Network,
    image_size: u32,
    norm: Normalisation,
    photos: &[&[u8]],
    device: &Device,
) -> Vec<Vec<f32>> {
    embed(network, image_size, norm, photos, device).0
}

/// SafeTensors `bytes` with the keys of their JSON header in sorted order. The writer takes the
/// metadata from a hash map, whose order changes from run to run; sorted, the same weights give
/// the same file. The header keeps its length (spaces pad it, as the format allows).
pub(crate) fn sorted_header(mut bytes: Vec<u8>) -> Vec<u8> {
    let Some(length) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    else {
        return bytes;
    };
    let Some(end) = usize::try_from(length).ok().and_then(|l| l.checked_add(8)) else {
        return bytes;
    };
    let Some(header) = bytes.get(8..end) else {
        return bytes;
    };
    // serde_json's maps are sorted by key.
    let Ok(parsed) = serde_json::from_slice::<serde_json::Value>(header) else {
        return bytes;
    };
    let sorted = serde_json::to_string(&parsed).expect("JSON values serialise");
    if sorted.len() <= header.len() {
        let mut padded = sorted.into_bytes();
        padded.resize(header.len(), b' ');
        bytes[8..end].copy_from_slice(&padded);
    }
    bytes
}
