//! The networks vlinder trains, with their pretrained backbones; the model directory a trained
//! network is saved in is [`crate::trained`].
//!
//! [`recipe`] holds the published recipe's CNN, [`efficientnet`] the transfer network;
//! [`config`] describes a network and builds it; [`backbone`] installs and reads the pretrained
//! weights; [`input`] turns decoded photos into the network's input tensor.

pub mod backbone;
pub mod config;
pub mod efficientnet;
pub mod input;
pub(crate) mod kernels;
pub mod recipe;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

pub use config::ModelConfig;
pub use efficientnet::{
    EfficientNetLite, Head, ImagenetTail, Pooling, TransferNet, Variant, Viewing,
};
pub use input::Normalisation;
pub use recipe::RecipeCnn;

/// The networks vlinder can train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    /// The recipe's CNN: two 2x2 convolutions, a 64-unit dense layer, dropout 0.25.
    Recipe,
    /// The recipe's second model: also dropout 0.25 after each pooling layer, 0.5 before the output.
    RecipeDropout,
    /// A new classifier on EfficientNet-Lite0's ImageNet features (transfer learning).
    #[cfg_attr(feature = "cli", value(name = "efficientnet-lite0"))]
    #[serde(rename = "efficientnet-lite0")]
    EfficientNetLite0,
    /// The same on EfficientNet-Lite1: deeper (21 blocks), made for 240 pixels.
    #[cfg_attr(feature = "cli", value(name = "efficientnet-lite1"))]
    #[serde(rename = "efficientnet-lite1")]
    EfficientNetLite1,
    /// The same on EfficientNet-Lite2: wider (352 channels into the head), made for 260 pixels.
    #[cfg_attr(feature = "cli", value(name = "efficientnet-lite2"))]
    #[serde(rename = "efficientnet-lite2")]
    EfficientNetLite2,
    /// The transfer configuration that won cross-validation (see the README): EfficientNet-Lite0
    /// at 384 pixels (bilinear), 2 feature copies, label smoothing 0.1, its last 5 blocks
    /// fine-tuned for 8 epochs at 1e-4 (cosine, 1 warm-up epoch). Options given beside it
    /// override those; the model card records the network it became.
    Transfer,
}

impl Architecture {
    /// The pretrained backbone of a transfer network; `None` for the recipe's networks.
    pub fn backbone(self) -> Option<Variant> {
        match self {
            Architecture::Recipe | Architecture::RecipeDropout => None,
            Architecture::EfficientNetLite0 | Architecture::Transfer => Some(efficientnet::LITE0),
            Architecture::EfficientNetLite1 => Some(efficientnet::LITE1),
            Architecture::EfficientNetLite2 => Some(efficientnet::LITE2),
        }
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Architecture::Recipe => f.write_str("recipe"),
            Architecture::RecipeDropout => f.write_str("recipe-dropout"),
            Architecture::Transfer => f.write_str("transfer"),
            lite => f.write_str(lite.backbone().expect("a transfer network").name),
        }
    }
}

/// A trained or trainable network of any architecture.
// One network lives per model; boxing the larger variant would save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Network {
    Recipe(RecipeCnn),
    Transfer(TransferNet),
}

impl Network {
    /// Logits `[batch, 1]` for two species, `[batch, classes]` otherwise, from normalised images.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Network::Recipe(n) => n.forward(images),
            Network::Transfer(n) => n.forward(images),
        }
    }

    /// The features the last layer sees `[batch, features]` and the logits, from one pass: the
    /// unknown-ness score works on the features.
    pub fn embed(&self, images: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        match self {
            Network::Recipe(n) => n.embed(images),
            Network::Transfer(n) => n.embed(images),
        }
    }

    /// The network for inference only: a transfer network's backbone gets its frozen CPU copy
    /// ([`EfficientNetLite::freeze`]); the weights must not change afterwards.
    pub fn freeze(self) -> Self {
        match self {
            Network::Transfer(n) => Network::Transfer(TransferNet {
                backbone: n.backbone.freeze(),
                ..n
            }),
            recipe => recipe,
        }
    }
}

/// A zero tensor shaped like `bias`: Keras starts biases at zero, burn does not.
pub(crate) fn zeros_like(bias: &burn::module::Param<Tensor<1>>) -> burn::module::Param<Tensor<1>> {
    let value = bias.val();
    burn::module::Param::from_tensor(Tensor::zeros(value.dims(), &value.device()))
}

/// The number of outputs for `classes` species: one sigmoid unit for two, a softmax otherwise.
pub fn outputs(classes: usize) -> usize {
    if classes == 2 { 1 } else { classes }
}

/// The loss the network is trained with: binary cross-entropy on one sigmoid output for two
/// species, categorical cross-entropy on a softmax otherwise, against targets smoothed by
/// `smoothing` (0: the labels as they are; α: each target moves α of the way to uniform).
/// `logits` are the network's raw outputs; both losses are computed from them for numerical
/// stability.
pub fn loss(logits: Tensor<2>, labels: &[usize], smoothing: f32) -> Tensor<1> {
    let device = logits.device();
    let [n, outputs] = logits.dims();
    let targets: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [n]), &device);
    let smoothing = (smoothing > 0.0).then_some(smoothing);
    if outputs == 1 {
        burn::nn::loss::BinaryCrossEntropyLossConfig::new()
            .with_logits(true)
            .with_smoothing(smoothing)
            .init(&device)
            .forward(logits.reshape([n]), targets)
    } else {
        burn::nn::loss::CrossEntropyLossConfig::new()
            .with_smoothing(smoothing)
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
