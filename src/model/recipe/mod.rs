//! The published recipe's CNN, layer for layer:
//! Conv2D(32, 2x2, same) → ReLU → MaxPool 2x2 → Conv2D(64, 2x2, valid) → ReLU → MaxPool 2x2 →
//! Flatten → Dense(64) → ReLU → Dropout → Dense(1 or classes).
//!
//! Weights start as in Keras (Glorot-uniform kernels, zero biases). The final sigmoid or softmax
//! is applied by [`super::probabilities`] and folded into [`super::loss`].
//!
//! On burn's CPU backend each convolution runs with its ReLU and pooling as one fused operation
//! ([`conv_pool`]): the same arithmetic, several times faster than burn's separate layers.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::prelude::*;

use super::zeros_like;

pub mod conv_pool;
#[cfg(feature = "flex")]
mod extension;
#[cfg(feature = "flex")]
pub use extension::{conv2x2_relu_pool, conv2x2_relu_pool_twice, supported};

/// The smallest input side for which the second pooling layer still has one pixel.
pub const MIN_IMAGE_SIZE: u32 = 6;

const GLOROT: Initializer = Initializer::XavierUniform { gain: 1.0 };

/// The recipe's network; `pool_dropout` is 0 in the first model of the recipe, 0.25 in the
/// second.
#[derive(Module, Debug)]
pub struct RecipeCnn {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    pool_dropout: Dropout,
    dense: Linear,
    head_dropout: Dropout,
    output: Linear,
    relu: Relu,
}

impl RecipeCnn {
    /// A new network for square RGB inputs of side `image_size` and `classes` species.
    pub fn new(
        classes: usize,
        image_size: u32,
        pool_dropout: f64,
        head_dropout: f64,
        device: &Device,
    ) -> Self {
        let outputs = super::outputs(classes);
        let conv1 = Conv2dConfig::new([3, 32], [2, 2])
            .with_padding(PaddingConfig2d::Same)
            .with_initializer(GLOROT)
            .init(device);
        let conv2 = Conv2dConfig::new([32, 64], [2, 2])
            .with_padding(PaddingConfig2d::Valid)
            .with_initializer(GLOROT)
            .init(device);
        let dense = LinearConfig::new(flat_features(image_size), 64)
            .with_initializer(GLOROT)
            .init(device);
        let output = LinearConfig::new(64, outputs)
            .with_initializer(GLOROT)
            .init(device);
        RecipeCnn {
            conv1: Conv2d {
                bias: conv1.bias.as_ref().map(zeros_like),
                ..conv1
            },
            conv2: Conv2d {
                bias: conv2.bias.as_ref().map(zeros_like),
                ..conv2
            },
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            pool_dropout: DropoutConfig::new(pool_dropout).init(),
            dense: Linear {
                bias: dense.bias.as_ref().map(zeros_like),
                ..dense
            },
            head_dropout: DropoutConfig::new(head_dropout).init(),
            output: Linear {
                bias: output.bias.as_ref().map(zeros_like),
                ..output
            },
            relu: Relu::new(),
        }
    }

    /// Logits `[batch, 1]` for two species, `[batch, classes]` otherwise, from images
    /// `[batch, 3, size, size]` scaled to 0..1.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.embed(images).1
    }

    /// The 64 activations of the dense layer (what the output layer sees) and the logits.
    pub fn embed(&self, images: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let x = self.features(images);
        let x = self.relu.forward(self.dense.forward(x.flatten(1, 3)));
        (x.clone(), self.output.forward(self.head_dropout.forward(x)))
    }

    /// Both convolution blocks (convolution, ReLU, pooling, dropout). On burn's CPU backend they
    /// run as fused operations ([`conv_pool`]), elsewhere as burn's layers.
    fn features(&self, images: Tensor<4>) -> Tensor<4> {
        #[cfg(feature = "flex")]
        if extension::supported(&images)
            && let (Some(b1), Some(b2)) = (&self.conv1.bias, &self.conv2.bias)
        {
            let (w1, w2) = (self.conv1.weight.val(), self.conv2.weight.val());
            let same = self.conv1.padding == PaddingConfig2d::Same;
            // Dropout acts only in training with a nonzero rate; without it the two blocks are
            // one operation that keeps the activations between them channels-last.
            if self.pool_dropout.prob == 0.0 || !images.device().is_autodiff() {
                return extension::conv2x2_relu_pool_twice(
                    images,
                    (w1, b1.val()),
                    (w2, b2.val()),
                    same,
                );
            }
            let x = extension::conv2x2_relu_pool(images, w1, b1.val(), same);
            let x = self.pool_dropout.forward(x);
            let x = extension::conv2x2_relu_pool(x, w2, b2.val(), false);
            return self.pool_dropout.forward(x);
        }
        let x = self
            .pool
            .forward(self.relu.forward(self.conv1.forward(images)));
        let x = self.pool_dropout.forward(x);
        let x = self.pool.forward(self.relu.forward(self.conv2.forward(x)));
        self.pool_dropout.forward(x)
    }
}

/// Features after the second pooling layer: 64 channels of ((size / 2) - 1) / 2 squared.
fn flat_features(image_size: u32) -> usize {
    let side = (image_size as usize / 2 - 1) / 2;
    64 * side * side
}
