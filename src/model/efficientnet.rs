//! EfficientNet-Lite, the ImageNet-pretrained backbones for transfer learning: depthwise-separable
//! MBConv blocks with batch norm and ReLU6, no squeeze-and-excitation, 1280 pooled features. The
//! family's members ([`Variant`]) share the stages of Lite0, widened and deepened by their
//! coefficients; the stem, the first and last stages' depth and the head stay fixed.
//!
//! Layer names follow the PyTorch package `efficientnet-lite-pytorch` without its leading
//! underscores, so its `.pth` weights load by name. Convolutions pad like TensorFlow's 'same'
//! (the weights come from TensorFlow), computed from the input size, so any image size works.
//! [`TransferNet`] puts a new head on it, with a choice of pooling and an optional second look
//! at the region where the features respond most.

use std::path::Path;
use std::sync::Arc;

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::store::{ModuleSnapshot, PytorchStore};
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::{AvgPoolOptions, PadMode};
use serde::{Deserialize, Serialize};

use super::input::Normalisation;
use crate::{Error, Result};

mod extension;
mod frozen;
mod mbconv;
use extension::FoldedBlock;
use frozen::{FrozenLite, Output};

/// Pixels are normalised as (pixel - 127) / 128 on the 0..255 scale, as these weights expect.
pub const NORMALISATION: Normalisation = Normalisation {
    offset: 127.0,
    scale: 1.0 / 128.0,
};
/// Pooled features per photo.
pub const FEATURES: usize = 1280;
/// The smallest input side: five stride-2 stages leave one pixel.
pub const MIN_IMAGE_SIZE: u32 = 32;
const BN_EPSILON: f64 = 1e-3;

/// (repeats, kernel, stride, expansion, input channels, output channels) of each stage of
/// Lite0; the other members scale the channels and the repeats.
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// Channels of the stem's output, the same in every member.
const STEM_CHANNELS: usize = 32;

/// A member of the EfficientNet-Lite family: its name (as `--model` and the installer know it)
/// and how much wider and deeper than Lite0 it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Variant {
    pub name: &'static str,
    width: f64,
    depth: f64,
    /// The side it was trained on for ImageNet.
    pub native_size: u32,
}

/// The coefficients of TensorFlow's `efficientnet_lite_builder.py`.
pub const LITE0: Variant = Variant {
    name: "efficientnet-lite0",
    width: 1.0,
    depth: 1.0,
    native_size: 224,
};
pub const LITE1: Variant = Variant {
    name: "efficientnet-lite1",
    width: 1.0,
    depth: 1.1,
    native_size: 240,
};
pub const LITE2: Variant = Variant {
    name: "efficientnet-lite2",
    width: 1.1,
    depth: 1.2,
    native_size: 260,
};

/// One MBConv block's shape: (kernel, stride, expansion, input channels, output channels).
type BlockShape = (usize, usize, usize, usize, usize);

impl Variant {
    /// Channels scaled by the width, rounded to a multiple of 8 (and never more than 10% down),
    /// as TensorFlow's `round_filters`.
    fn channels(&self, channels: usize) -> usize {
        let scaled = channels as f64 * self.width;
        let mut rounded = (((scaled + 4.0) as usize) / 8 * 8).max(8);
        if (rounded as f64) < 0.9 * scaled {
            rounded += 8;
        }
        rounded
    }

    /// Every block's shape, in order.
    fn blocks(&self) -> Vec<BlockShape> {
        let mut blocks = Vec::new();
        for (stage, (repeats, kernel, stride, expansion, input, output)) in
            STAGES.into_iter().enumerate()
        {
            // Lite keeps the first and last stages as deep as Lite0's (`fix_head_stem`).
            let repeats = if stage == 0 || stage == STAGES.len() - 1 {
                repeats
            } else {
                (self.depth * repeats as f64).ceil() as usize
            };
            let input = if stage == 0 {
                STEM_CHANNELS
            } else {
                self.channels(input)
            };
            let output = self.channels(output);
            for r in 0..repeats {
                let (input, stride) = if r == 0 { (input, stride) } else { (output, 1) };
                blocks.push((kernel, stride, expansion, input, output));
            }
        }
        blocks
    }

    /// MBConv blocks: the units that fine-tuning unfreezes from the end.
    pub fn block_count(&self) -> usize {
        self.blocks().len()
    }
}

/// A convolution without bias and with TensorFlow 'same' padding.
#[derive(Module, Debug)]
struct SameConv {
    conv: Conv2d,
    kernel: usize,
    stride: usize,
}

impl SameConv {
    fn new(
        channels: [usize; 2],
        kernel: usize,
        stride: usize,
        groups: usize,
        device: &Device,
    ) -> Self {
        let conv = Conv2dConfig::new(channels, [kernel, kernel])
            .with_stride([stride, stride])
            .with_groups(groups)
            .with_bias(false)
            .init(device);
        SameConv {
            conv,
            kernel,
            stride,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let pad = |size: usize| {
            let out = size.div_ceil(self.stride);
            let total = ((out - 1) * self.stride + self.kernel).saturating_sub(size);
            (total / 2, total - total / 2)
        };
        let (rows, cols) = (pad(h), pad(w));
        let x = if rows == (0, 0) && cols == (0, 0) {
            x
        } else {
            x.pad([rows, cols], PadMode::Constant(0.0))
        };
        self.conv.forward(x)
    }
}

fn relu6(x: Tensor<4>) -> Tensor<4> {
    x.clamp(0.0, 6.0)
}

/// A batch norm that always normalises with its stored (ImageNet) statistics, in training too:
/// batches of a few dozen photos would give noisy statistics, and fine-tuning must not overwrite
/// the pretrained ones. Its scale and shift stay trainable.
fn batch_norm(channels: usize, device: &Device) -> BatchNorm {
    let mut bn = BatchNormConfig::new(channels)
        .with_epsilon(BN_EPSILON)
        .init(device);
    bn.training = Param::from_bool(false);
    bn
}

/// An inverted-residual block: 1x1 expansion, depthwise convolution, 1x1 projection.
#[derive(Module, Debug)]
struct MbConv {
    expand_conv: Option<SameConv>,
    bn0: Option<BatchNorm>,
    depthwise_conv: SameConv,
    bn1: BatchNorm,
    project_conv: SameConv,
    bn2: BatchNorm,
    residual: bool,
}

impl MbConv {
    fn new(
        input: usize,
        output: usize,
        kernel: usize,
        stride: usize,
        expansion: usize,
        device: &Device,
    ) -> Self {
        let hidden = input * expansion;
        let (expand_conv, bn0) = if expansion == 1 {
            (None, None)
        } else {
            (
                Some(SameConv::new([input, hidden], 1, 1, 1, device)),
                Some(batch_norm(hidden, device)),
            )
        };
        MbConv {
            expand_conv,
            bn0,
            depthwise_conv: SameConv::new([hidden, hidden], kernel, stride, hidden, device),
            bn1: batch_norm(hidden, device),
            project_conv: SameConv::new([hidden, output], 1, 1, 1, device),
            bn2: batch_norm(output, device),
            residual: stride == 1 && input == output,
        }
    }

    fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let mut x = input.clone();
        if let (Some(conv), Some(bn)) = (&self.expand_conv, &self.bn0) {
            x = relu6(bn.forward(conv.forward(x)));
        }
        x = relu6(self.bn1.forward(self.depthwise_conv.forward(x)));
        x = self.bn2.forward(self.project_conv.forward(x));
        if self.residual { x + input } else { x }
    }

    /// The block as one fused operation on channels-last images `[n, h, w, c]` on burn's CPU
    /// backend: the same function as [`forward`](Self::forward), its gradients reaching the
    /// same parameters (the batch norms are folded here, with burn's operations).
    fn forward_fused(&self, input: Tensor<4>) -> Tensor<4> {
        let expand = match (&self.expand_conv, &self.bn0) {
            (Some(conv), Some(bn)) => Some(folded(conv, bn)),
            _ => None,
        };
        let block: FoldedBlock = (
            expand,
            [
                folded(&self.depthwise_conv, &self.bn1),
                folded(&self.project_conv, &self.bn2),
            ],
        );
        extension::mbconv(input, block, self.depthwise_conv.stride)
    }
}

/// A convolution's weights scaled by its batch norm, `[inputs x kh x kw, outputs]` (for a
/// depthwise convolution `[kh x kw, channels]`), and the bias that the norm's shift leaves.
fn folded(conv: &SameConv, bn: &BatchNorm) -> (Tensor<2>, Tensor<1>) {
    let weight = conv.conv.weight.val();
    let [outputs, per_group, kh, kw] = weight.dims();
    let scale = bn.gamma.val() / (bn.running_var.value() + bn.epsilon).sqrt();
    let weight = weight.reshape([outputs, per_group * kh * kw]) * scale.clone().unsqueeze_dim(1);
    let bias = bn.beta.val() - bn.running_mean.value() * scale;
    (weight.transpose(), bias)
}

/// The ImageNet weights of a backbone's last blocks and of its head's 1x1 convolution, kept
/// beside the ones fine-tuning trains and never trained themselves: run on the same activations
/// as the trained blocks, they give the features the network had before it learnt a few
/// species, on which the unknown-ness score tells those species from others far better than
/// on the trained features (see the open-set figures in the documentation).
#[derive(Module, Debug)]
pub struct ImagenetTail {
    blocks: Vec<MbConv>,
    conv_head: SameConv,
    bn1: BatchNorm,
}

impl ImagenetTail {
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// The feature map of activations `[n, c, h, w]` that entered the tail's first block.
    fn feature_map(&self, activations: Tensor<4>, burn_layers: bool) -> Tensor<4> {
        let x = run_blocks(&self.blocks, activations, burn_layers);
        relu6(self.bn1.forward(self.conv_head.forward(x)))
    }
}

/// Activations through `blocks`: fused on burn's CPU backend, burn's layers elsewhere (or
/// when `burn_layers`).
fn run_blocks(blocks: &[MbConv], x: Tensor<4>, burn_layers: bool) -> Tensor<4> {
    if burn_layers || blocks.is_empty() || !extension::supported(&x) {
        return blocks.iter().fold(x, |x, block| block.forward(x));
    }
    blocks
        .iter()
        .fold(x.permute([0, 2, 3, 1]), |x, block| block.forward_fused(x))
        .permute([0, 3, 1, 2])
}

/// An EfficientNet-Lite network, with or without its ImageNet classifier.
#[derive(Module, Debug)]
pub struct EfficientNetLite {
    conv_stem: SameConv,
    bn0: BatchNorm,
    blocks: Vec<MbConv>,
    conv_head: SameConv,
    bn1: BatchNorm,
    fc: Option<Linear>,
    /// The ImageNet weights of the blocks that fine-tuning trains, for the unknown-ness score.
    imagenet_tail: Option<ImagenetTail>,
    /// The weights folded for the CPU, once [`freeze`](Self::freeze) made them.
    #[module(skip)]
    frozen: Option<Arc<FrozenLite>>,
    /// Run the blocks on burn's layers even where the fused ones could run.
    #[module(skip)]
    burn_layers: bool,
}

impl EfficientNetLite {
    /// `variant` with untrained weights; `classifier` adds the 1000-class ImageNet layer.
    pub fn new(variant: Variant, classifier: bool, device: &Device) -> Self {
        let shapes = variant.blocks();
        let last = shapes.last().map_or(STEM_CHANNELS, |&(.., output)| output);
        let blocks = shapes
            .into_iter()
            .map(|(kernel, stride, expansion, input, output)| {
                MbConv::new(input, output, kernel, stride, expansion, device)
            })
            .collect();
        EfficientNetLite {
            conv_stem: SameConv::new([3, STEM_CHANNELS], 3, 2, 1, device),
            bn0: batch_norm(STEM_CHANNELS, device),
            blocks,
            conv_head: SameConv::new([last, FEATURES], 1, 1, 1, device),
            bn1: batch_norm(FEATURES, device),
            fc: classifier.then(|| LinearConfig::new(FEATURES, 1000).init(device)),
            imagenet_tail: None,
            frozen: None,
            burn_layers: false,
        }
    }

    /// `variant` with the ImageNet weights of a PyTorch `.pth` file of
    /// `efficientnet-lite-pytorch`, with or without the ImageNet classifier.
    pub fn from_pytorch(
        variant: Variant,
        path: &Path,
        classifier: bool,
        device: &Device,
    ) -> Result<Self> {
        let mut network = EfficientNetLite::new(variant, classifier, device);
        // PyTorch names: `_blocks.3._expand_conv.weight`; ours: `blocks.3.expand_conv.conv.weight`.
        let mut store = PytorchStore::from_file(path)
            .with_key_remapping(r"(^|\.)_", "$1")
            .with_key_remapping(
                r"(conv_stem|conv_head|expand_conv|depthwise_conv|project_conv)\.weight$",
                "$1.conv.weight",
            );
        network
            .load_from(&mut store)
            .map_err(|e| Error::Backbone {
                origin: path.display().to_string(),
                reason: format!(
                    "cannot load {} ImageNet weights ({e}); run `vlinder backbone install {}` or give the right file with --backbone",
                    variant.name, variant.name
                ),
            })?;
        Ok(network)
    }

    /// The network with a copy of its weights folded for inference on the CPU (batch norms
    /// merged into the convolutions, channels-last kernels): from then on, inputs on burn's
    /// CPU backend go through that copy for [`pooled`](Self::pooled), [`features`](Self::features),
    /// [`feature_map`](Self::feature_map) and [`activations`](Self::activations), several times
    /// faster, and without gradients. Call it once the weights are final: the copy does not
    /// follow later changes. Other backends keep burn's layers.
    pub fn freeze(mut self) -> Self {
        self.frozen = Some(Arc::new(FrozenLite::new(&self)));
        self
    }

    /// The frozen copy, when there is one and `images` are on burn's CPU backend in `f32`.
    #[cfg_attr(not(feature = "flex"), allow(unused_variables))]
    fn frozen_for(&self, images: &Tensor<4>) -> Option<&FrozenLite> {
        #[cfg(feature = "flex")]
        if images.device().without_autodiff() == Device::flex()
            && images.dtype() == burn::tensor::DType::F32
        {
            return self.frozen.as_deref();
        }
        None
    }

    /// `output` of the frozen copy for normalised images `[n, 3, h, w]`.
    fn run_frozen<const D: usize>(
        frozen: &FrozenLite,
        images: Tensor<4>,
        output: Output,
    ) -> Tensor<D> {
        let [n, _, h, w] = images.dims();
        let device = images.device();
        let pixels = images
            .into_data()
            .try_into_vec::<f32>()
            .expect("the frozen path takes f32 images");
        let values = frozen.run(&pixels, (h, w), output);
        let mut dims = vec![n];
        dims.extend(frozen.output_dims((h, w), output));
        Tensor::from_data(TensorData::new(values, dims), &device)
    }

    /// The 1280 features of normalised images `[n, 3, h, w]`, pooled as `pooling` says.
    pub fn pooled(&self, images: Tensor<4>, pooling: Pooling) -> Tensor<2> {
        match self.frozen_for(&images) {
            Some(frozen) => Self::run_frozen(frozen, images, Output::Pooled(pooling)),
            None => pooling.pool(self.feature_map(images)),
        }
    }

    /// The 1280 globally averaged features of normalised images `[n, 3, h, w]`, as the
    /// network was trained on ImageNet.
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        self.pooled(images, Pooling::Average)
    }

    /// The 1280-channel map before pooling, `[n, 1280, h/32, w/32]` (rounded up).
    pub fn feature_map(&self, images: Tensor<4>) -> Tensor<4> {
        if let Some(frozen) = self.frozen_for(&images) {
            return Self::run_frozen(frozen, images, Output::Map);
        }
        let all = self.block_count();
        self.feature_map_from(self.activations(images, all), all)
    }

    /// The activations of normalised images `[n, 3, h, w]` after the stem and the first
    /// `blocks` blocks: what fine-tuning the remaining blocks starts from.
    pub fn activations(&self, images: Tensor<4>, blocks: usize) -> Tensor<4> {
        if let Some(frozen) = self.frozen_for(&images) {
            return Self::run_frozen(frozen, images, Output::Activations(blocks));
        }
        let x = relu6(self.bn0.forward(self.conv_stem.forward(images)));
        self.run_blocks(x, 0..blocks)
    }

    /// MBConv blocks in the network.
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// The network that runs burn's own layers for its blocks even on burn's CPU backend,
    /// where it would otherwise run each block as one fused operation: the reference that the
    /// fused blocks are measured and tested against.
    pub fn with_burn_layers(mut self) -> Self {
        self.burn_layers = true;
        self
    }

    /// The blocks `range` on activations `[n, c, h, w]`: fused and channels-last in between
    /// on burn's CPU backend, else burn's layers.
    fn run_blocks(&self, x: Tensor<4>, range: std::ops::Range<usize>) -> Tensor<4> {
        run_blocks(&self.blocks[range], x, self.burn_layers)
    }

    /// The network with a copy of its last `blocks` blocks and head convolution as they are
    /// now (the ImageNet weights, before fine-tuning), frozen, for the unknown-ness score; 0:
    /// none. Called on a network about to be fine-tuned, or on a fresh one whose saved weights
    /// (the copy's among them) are loaded next.
    pub fn with_imagenet_tail(mut self, blocks: usize) -> Self {
        self.imagenet_tail = (blocks > 0).then(|| {
            let tail = ImagenetTail {
                blocks: self.blocks[self.blocks.len() - blocks..].to_vec(),
                conv_head: self.conv_head.clone(),
                bn1: self.bn1.clone(),
            };
            // Nothing in it trains, whatever the optimiser is handed.
            tail.no_grad()
        });
        self
    }

    /// The copy of the ImageNet tail, if the network keeps one.
    pub fn imagenet_tail(&self) -> Option<&ImagenetTail> {
        self.imagenet_tail.as_ref()
    }

    /// Pooled features `[n, 1280]` and, from the same pass through the blocks before it, the
    /// ImageNet tail's pooled features `[n, 1280]` (`None` without a tail).
    pub fn pooled_with_imagenet(
        &self,
        images: Tensor<4>,
        pooling: Pooling,
    ) -> (Tensor<2>, Option<Tensor<2>>) {
        let Some(tail) = &self.imagenet_tail else {
            return (self.pooled(images, pooling), None);
        };
        if let Some(frozen) = self.frozen_for(&images) {
            let both: Tensor<3> = Self::run_frozen(frozen, images, Output::WithImagenet(pooling));
            let [n, _, _] = both.dims();
            let part = |i: usize| both.clone().slice([0..n, i..i + 1]).reshape([n, FEATURES]);
            return (part(0), Some(part(1)));
        }
        let from = self.block_count() - tail.block_count();
        let shared = self.activations(images, from);
        let imagenet = pooling.pool(tail.feature_map(shared.clone(), self.burn_layers));
        (
            pooling.pool(self.feature_map_from(shared, from)),
            Some(imagenet),
        )
    }

    /// The feature map from [`activations`](Self::activations) after the first `blocks`
    /// blocks.
    pub fn feature_map_from(&self, activations: Tensor<4>, blocks: usize) -> Tensor<4> {
        let x = self.run_blocks(activations, blocks..self.block_count());
        relu6(self.bn1.forward(self.conv_head.forward(x)))
    }

    /// ImageNet logits `[n, 1000]`, or `None` for a network built without the classifier.
    pub fn logits(&self, images: Tensor<4>) -> Option<Tensor<2>> {
        let fc = self.fc.as_ref()?;
        Some(fc.forward(self.features(images)))
    }
}

/// The new classifier of transfer learning: dropout, then a dense layer, on pooled features.
#[derive(Module, Debug)]
pub struct Head {
    dropout: Dropout,
    linear: Linear,
}

/// Dropout before the new head, as EfficientNet-Lite0's own classifier has.
const HEAD_DROPOUT: f64 = 0.2;

impl Head {
    /// A fresh head for `classes` species (Glorot-uniform weights, zero bias, as Keras).
    pub fn new(classes: usize, device: &Device) -> Self {
        let linear = LinearConfig::new(FEATURES, super::outputs(classes))
            .with_initializer(burn::nn::Initializer::XavierUniform { gain: 1.0 })
            .init(device);
        Head {
            dropout: DropoutConfig::new(HEAD_DROPOUT).init(),
            linear: Linear {
                bias: linear.bias.as_ref().map(super::zeros_like),
                ..linear
            },
        }
    }

    /// Logits for pooled features `[n, 1280]`.
    pub fn forward(&self, features: Tensor<2>) -> Tensor<2> {
        self.linear.forward(self.dropout.forward(features))
    }
}

/// How a feature map `[n, c, h, w]` becomes one vector `[n, c]` per photo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The mean over all positions, as the backbone was trained on ImageNet.
    #[default]
    Average,
    /// The generalised mean with exponent 3: leans towards the positions that respond most,
    /// so a small butterfly in a large scene is not averaged away.
    Gem,
}

/// The exponent of [`Pooling::Gem`].
const GEM_POWER: f32 = 3.0;
/// ReLU6 leaves zeros; this floor keeps the cube root's gradient finite.
const GEM_FLOOR: f32 = 1e-6;

impl Pooling {
    /// One vector per photo from its feature map.
    pub fn pool(self, map: Tensor<4>) -> Tensor<2> {
        let [n, c, h, w] = map.dims();
        let positions = map.reshape([n, c, h * w]);
        let pooled = match self {
            Pooling::Average => positions.mean_dim(2),
            Pooling::Gem => positions
                .clamp_min(GEM_FLOOR)
                .powf_scalar(GEM_POWER)
                .mean_dim(2)
                .powf_scalar(1.0 / GEM_POWER),
        };
        pooled.reshape([n, c])
    }
}

/// How the backbone looks at a photo for the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Viewing {
    pub pooling: Pooling,
    /// With `Some(view)` the network looks twice: at the whole photo shrunk to `view` pixels,
    /// then at a `view`-pixel window of the full-size input around the position whose
    /// features respond most; the head sees the mean of both views' features. The input side
    /// is a multiple of `view`.
    pub focus: Option<usize>,
    /// Whether the network also looks at the photo mirrored left to right and gives the head
    /// the mean of both views' features (test-time flips). The head is linear, so this is the
    /// mean of the two views' logits.
    pub mirror: bool,
}

/// Transfer learning: EfficientNet-Lite0's pooled features into a new [`Head`].
#[derive(Module, Debug)]
pub struct TransferNet {
    pub backbone: EfficientNetLite,
    pub head: Head,
    #[module(skip)]
    pub viewing: Viewing,
}

impl TransferNet {
    /// Logits from normalised images.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.features(images))
    }

    /// The features the unknown-ness score works on and the logits, from one pass: the
    /// features the head sees, or with an ImageNet tail ([`EfficientNetLite::with_imagenet_tail`])
    /// the tail's, averaged over both views when the network looks at mirrors too.
    pub fn embed(&self, images: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        if self.backbone.imagenet_tail().is_none() {
            let features = self.features(images);
            return (features.clone(), self.head.forward(features));
        }
        debug_assert!(
            self.viewing.focus.is_none(),
            "a tail needs a fine-tuned backbone"
        );
        let pooling = self.viewing.pooling;
        let views = if self.viewing.mirror {
            vec![images.clone(), images.flip([3])]
        } else {
            vec![images]
        };
        let count = views.len() as f32;
        let (mut features, mut imagenet) = (Vec::new(), Vec::new());
        for view in views {
            let (tuned, tail) = self.backbone.pooled_with_imagenet(view, pooling);
            features.push(tuned);
            imagenet.push(tail.expect("the backbone has a tail"));
        }
        let mean = |parts: Vec<Tensor<2>>| {
            parts
                .into_iter()
                .reduce(|a, b| a + b)
                .expect("one view at least")
                / count
        };
        (mean(imagenet), self.head.forward(mean(features)))
    }

    /// The features the head sees, from normalised images.
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        if !self.viewing.mirror {
            return self.features_of_view(images);
        }
        // One view after the other rather than one batch of both: half the peak memory.
        (self.features_of_view(images.clone()) + self.features_of_view(images.flip([3]))) / 2.0
    }

    /// The features of the photos as they are, looking twice with `focus`.
    fn features_of_view(&self, images: Tensor<4>) -> Tensor<2> {
        let pooling = self.viewing.pooling;
        let Some(view) = self.viewing.focus else {
            return self.backbone.pooled(images, pooling);
        };
        let [n, _, side, _] = images.dims();
        let shrink = side / view;
        let whole = avg_pool2d(images.clone(), AvgPoolOptions::new([shrink, shrink]));
        let map = self.backbone.feature_map(whole);
        let windows = focus_windows(map.clone(), side, view);
        let crops = (0..n)
            .zip(windows)
            .map(|(i, [top, left])| {
                images
                    .clone()
                    .slice([i..i + 1, 0..3, top..top + view, left..left + view])
            })
            .collect();
        let detail = self.backbone.feature_map(Tensor::cat(crops, 0));
        (pooling.pool(map) + pooling.pool(detail)) / 2.0
    }

    /// Logits from the backbone's activations after its first `blocks` blocks (without focus),
    /// and with `mirrored` those of the same photos mirrored, for a network that looks at both
    /// (training passes `None`: its photos are flipped at random instead).
    pub fn forward_from(
        &self,
        activations: Tensor<4>,
        mirrored: Option<Tensor<4>>,
        blocks: usize,
    ) -> Tensor<2> {
        let features = self.features_from(activations, blocks);
        let features = match mirrored {
            Some(mirrored) => (features + self.features_from(mirrored, blocks)) / 2.0,
            None => features,
        };
        self.head.forward(features)
    }

    /// The head's features from the backbone's activations after its first `blocks` blocks;
    /// fine-tuning, which starts there, does not take a second look.
    pub fn features_from(&self, activations: Tensor<4>, blocks: usize) -> Tensor<2> {
        debug_assert!(self.viewing.focus.is_none());
        self.viewing
            .pooling
            .pool(self.backbone.feature_map_from(activations, blocks))
    }
}

/// The top-left corner of each photo's `view`-pixel window in a `side`-pixel input, centred
/// (as far as the edges allow) on the position of `map` whose channels sum highest.
fn focus_windows(map: Tensor<4>, side: usize, view: usize) -> Vec<[usize; 2]> {
    let [n, _, h, w] = map.dims();
    let strongest: Vec<i64> = map
        .sum_dim(1)
        .reshape([n, h * w])
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .expect("argmax gives integers");
    strongest
        .into_iter()
        .map(|position| {
            let position = position as usize;
            let centre = |cell: usize, cells: usize| (cell * 2 + 1) * side / (cells * 2);
            let start = |centre: usize| centre.saturating_sub(view / 2).min(side - view);
            [
                start(centre(position / w, h)),
                start(centre(position % w, w)),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Device {
        crate::device::Backend::Flex.device().unwrap()
    }

    /// Output, then the gradients of `sum(output * probe)` for the input and every parameter
    /// (each convolution's weight, each batch norm's scale and shift), of a block with random
    /// weights and batch-norm statistics on images `[batch, inputs, h, w]`, through burn's
    /// layers or the fused operation.
    fn block_values(
        (inputs, outputs, kernel, stride, expansion): (usize, usize, usize, usize, usize),
        (batch, h, w): (usize, usize, usize),
        fused: bool,
        seed: u64,
    ) -> Vec<(String, Vec<f32>)> {
        use burn::module::RunningState;
        use rand::{Rng, SeedableRng};
        // A generator of the test's own: burn's is shared with the tests running beside it.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let device = Device::flex().autodiff();
        let mut random = |dims: &[usize], low: f32, high: f32| {
            let values: Vec<f32> = (0..dims.iter().product())
                .map(|_| rng.random_range(low..high))
                .collect();
            TensorData::new(values, dims.to_vec())
        };
        let mut block = MbConv::new(inputs, outputs, kernel, stride, expansion, &device);
        for conv in [
            block.expand_conv.as_mut(),
            Some(&mut block.depthwise_conv),
            Some(&mut block.project_conv),
        ]
        .into_iter()
        .flatten()
        {
            let dims = conv.conv.weight.dims();
            let bound = 1.0 / ((dims[1] * dims[2] * dims[3]) as f32).sqrt();
            conv.conv.weight = Param::from_data(random(&dims, -2.0 * bound, 2.0 * bound), &device);
        }
        for bn in [
            block.bn0.as_mut(),
            Some(&mut block.bn1),
            Some(&mut block.bn2),
        ]
        .into_iter()
        .flatten()
        {
            let c = [bn.gamma.dims()[0]];
            bn.gamma = Param::from_data(random(&c, 0.5, 2.5), &device);
            bn.beta = Param::from_data(random(&c, -1.0, 1.0), &device);
            bn.running_mean = RunningState::new(Tensor::from_data(random(&c, -0.5, 0.5), &device));
            bn.running_var = RunningState::new(Tensor::from_data(random(&c, 0.5, 2.0), &device));
        }
        let input = Tensor::<4>::from_data(random(&[batch, inputs, h, w], -3.0, 3.0), &device)
            .require_grad();
        let output = if fused {
            block
                .forward_fused(input.clone().permute([0, 2, 3, 1]))
                .permute([0, 3, 1, 2])
        } else {
            block.forward(input.clone())
        };
        let probe = Tensor::<4>::from_data(random(&output.dims(), -1.0, 1.0), &Device::flex());
        let grads = (output.clone() * Tensor::from_inner(probe))
            .sum()
            .backward();
        let values = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
        let values1 = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
        let mut found = vec![
            ("output".to_string(), values(output.inner())),
            ("input".to_string(), values(input.grad(&grads).unwrap())),
        ];
        let convs = [
            ("expand", block.expand_conv.as_ref(), block.bn0.as_ref()),
            ("depthwise", Some(&block.depthwise_conv), Some(&block.bn1)),
            ("project", Some(&block.project_conv), Some(&block.bn2)),
        ];
        for (name, conv, bn) in convs {
            let (Some(conv), Some(bn)) = (conv, bn) else {
                continue;
            };
            let grad = |what: &str| format!("{name} {what}");
            found.push((
                grad("weight"),
                values(conv.conv.weight.grad(&grads).unwrap()),
            ));
            found.push((grad("gamma"), values1(bn.gamma.grad(&grads).unwrap())));
            found.push((grad("beta"), values1(bn.beta.grad(&grads).unwrap())));
        }
        found
    }

    #[test]
    fn the_fused_block_matches_burns_layers_forward_and_backward() {
        let cases = [
            // The first block's kind: no expansion, residual-free (32 -> 16).
            ((32, 16, 3, 1, 1), (2, 9, 7)),
            // Expansion, residual, channels not a multiple of the 16 lanes.
            ((6, 6, 3, 1, 6), (3, 8, 11)),
            // Stride 2 with a 5x5 kernel on odd sides, 48 hidden channels.
            ((8, 10, 5, 2, 6), (2, 11, 9)),
            // A picture smaller than the kernel.
            ((4, 4, 5, 1, 6), (2, 3, 2)),
        ];
        for (i, (layers, images)) in cases.into_iter().enumerate() {
            let seed = 40 + i as u64;
            let expected = block_values(layers, images, false, seed);
            let found = block_values(layers, images, true, seed);
            assert_eq!(expected.len(), found.len());
            for ((what, e), (_, f)) in expected.iter().zip(&found) {
                assert_eq!(e.len(), f.len(), "case {i}: {what} length");
                let scale = e.iter().fold(1.0f32, |m, v| m.max(v.abs()));
                let worst = e
                    .iter()
                    .zip(f)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(
                    worst <= 1e-4 * scale,
                    "case {i}: {what} differs by {worst} (scale {scale})"
                );
                assert!(e.iter().any(|v| *v != 0.0), "case {i}: {what} is all zero");
            }
            // The outputs are not vanishingly small: the weights and statistics push values past
            // both ends of ReLU6 (removing the mask of the upper end makes this test fail).
            let (_, output) = &expected[0];
            assert!(
                output.iter().any(|v| v.abs() > 1.0),
                "case {i}: outputs too small"
            );
        }
    }

    #[test]
    fn gem_leans_towards_the_strongest_positions() {
        let map = Tensor::<4>::from_floats([[[[1.0, 2.0], [3.0, 4.0]]]], &device());
        let average: Vec<f32> = Pooling::Average
            .pool(map.clone())
            .into_data()
            .try_to_vec()
            .unwrap();
        let gem: Vec<f32> = Pooling::Gem.pool(map).into_data().try_to_vec().unwrap();
        assert!((average[0] - 2.5).abs() < 1e-6);
        // (1 + 8 + 27 + 64) / 4 = 25
        assert!((gem[0] - 25f32.cbrt()).abs() < 1e-5, "{gem:?}");
    }

    #[test]
    fn the_focus_window_centres_on_the_strongest_position_within_the_photo() {
        // Two photos, 3 channels on a 4x4 grid of a 128-pixel input; the channel sums peak at
        // cell (0, 0) and at cell (2, 3).
        let mut values = vec![0f32; 2 * 3 * 16];
        values[0] = 5.0;
        values[48 + 16 + 2 * 4 + 3] = 5.0;
        let map = Tensor::<4>::from_data(TensorData::new(values, [2, 3, 4, 4]), &device());
        // Cell (2, 3) is centred on pixel (80, 112): its 64-pixel window starts at row 48 and
        // would start at column 80, past the edge, so it stops at 64. Cell (0, 0) clamps to 0.
        assert_eq!(focus_windows(map, 128, 64), vec![[0, 0], [48, 64]]);
    }
}
