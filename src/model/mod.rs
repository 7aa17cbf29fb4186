//! The networks vlinder trains, and the model directory a trained network lives in.
//!
//! [`recipe`] holds the published recipe's CNN; [`card`] the `model.json` that describes a
//! trained model; [`directory`] reads and writes a whole model directory; [`input`] turns
//! decoded photos into the network's input tensor.

pub mod backbone;
pub mod card;
pub mod directory;
pub mod efficientnet;
pub mod input;
pub mod recipe;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

pub use card::ModelCard;
pub use directory::{ModelDir, TrainedModel, WeightsChoice, predict_probabilities};
pub use recipe::RecipeCnn;

/// The networks vlinder can train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    /// The recipe's CNN: two 2x2 convolutions, a 64-unit dense layer, dropout 0.25.
    Recipe,
    /// The recipe's second model: also dropout 0.25 after each pooling layer, 0.5 before the output.
    RecipeDropout,
}

impl Architecture {
    /// The smallest square input the network accepts.
    pub fn min_image_size(self) -> u32 {
        match self {
            Architecture::Recipe | Architecture::RecipeDropout => recipe::MIN_IMAGE_SIZE,
        }
    }

    /// Builds a freshly initialised network for `classes` species.
    pub fn init(self, classes: usize, image_size: u32, device: &Device) -> RecipeCnn {
        match self {
            Architecture::Recipe => RecipeCnn::new(classes, image_size, 0.0, 0.25, device),
            Architecture::RecipeDropout => RecipeCnn::new(classes, image_size, 0.25, 0.5, device),
        }
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Architecture::Recipe => "recipe",
            Architecture::RecipeDropout => "recipe-dropout",
        };
        f.write_str(name)
    }
}

/// The loss the network is trained with: binary cross-entropy on one sigmoid output for two
/// species, categorical cross-entropy on a softmax otherwise. `logits` are the network's raw
/// outputs; both losses are computed from them for numerical stability.
pub fn loss(logits: Tensor<2>, labels: &[usize]) -> Tensor<1> {
    let device = logits.device();
    let [n, outputs] = logits.dims();
    let targets: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    if outputs == 1 {
        let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [n]), &device);
        burn::nn::loss::BinaryCrossEntropyLossConfig::new()
            .with_logits(true)
            .init(&device)
            .forward(logits.reshape([n]), targets)
    } else {
        let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [n]), &device);
        burn::nn::loss::CrossEntropyLossConfig::new()
            .init(&device)
            .forward(logits, targets)
    }
}

/// Per-species probabilities `[n, classes]` from the network's logits.
pub fn probabilities(logits: Tensor<2>) -> Tensor<2> {
    let [n, outputs] = logits.dims();
    if outputs == 1 {
        let p = burn::tensor::activation::sigmoid(logits);
        Tensor::cat(vec![p.clone().neg().add_scalar(1.0), p], 1).reshape([n, 2])
    } else {
        burn::tensor::activation::softmax(logits, 1)
    }
}

/// Per-species probabilities of the photos in a batch, one row each, in species order.
pub fn probability_rows(logits: Tensor<2>) -> Vec<Vec<f32>> {
    let p = probabilities(logits);
    let [_, classes] = p.dims();
    let values = p
        .into_data()
        .try_to_vec::<f32>()
        .expect("probabilities are f32");
    values
        .chunks_exact(classes)
        .map(|row| row.to_vec())
        .collect()
}
