//! The description of a network: which one, the input it takes and how a transfer network looks
//! at it. One [`ModelConfig::init`] builds every network vlinder trains or loads; the model
//! card keeps the description (inside its training configuration, under the keys it has always
//! had), so a model directory rebuilds the network it was trained as.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::efficientnet::{self, EfficientNetLite, Head, Pooling, TransferNet, Viewing};
use super::input::{self, Normalisation};
use super::recipe::{self, RecipeCnn};
use super::{Architecture, Network};
use crate::dataset::ResizeFilter;
use crate::{Error, Result};

/// The largest square input side any network accepts: bigger photos cost memory, not accuracy.
pub const MAX_IMAGE_SIZE: u32 = 1024;

/// Everything that decides a network's shape and its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The network to train.
    #[serde(rename = "model")]
    // The key model.json has always used.
    pub architecture: Architecture,
    /// Photos are resized to this many pixels square.
    pub image_size: u32,
    /// How photos are resized.
    pub resize: ResizeFilter,
    /// For the transfer models: how the backbone's feature map becomes the head's input.
    #[serde(default)]
    // Models trained before this option pooled by averaging.
    pub pooling: Pooling,
    /// For the transfer models: look twice, at the whole photo shrunk to VIEW pixels and at a
    /// VIEW-pixel window of it at full size around where the features respond most, and give
    /// the head the mean of both (--image-size a multiple of VIEW, e.g. 640 with 320). Helps
    /// with small butterflies in large scenes; costs a second pass through the backbone.
    #[serde(default)]
    pub focus: Option<u32>,
    /// For the transfer models: look at each photo also mirrored left to right and give the
    /// head the mean of both (test-time flips, for validation and every answer; training flips
    /// at random instead). Costs a second pass through the backbone.
    #[serde(default)]
    // Models trained before this option looked once.
    pub mirror: bool,
    /// For a fine-tuned transfer network: its last N blocks and the head's 1x1 convolution kept
    /// a second time with their ImageNet weights, whose pooled features the unknown-ness score
    /// is fitted on (0: none, the score takes the features the head sees). Set by training
    /// from `--fine-tune` and `--unknown-features`.
    #[serde(default)]
    pub imagenet_tail: usize,
}

impl Default for ModelConfig {
    /// The recipe's network, and GeM pooling for a transfer one: the command line's defaults.
    fn default() -> Self {
        ModelConfig {
            architecture: Architecture::Recipe,
            image_size: 75,
            resize: ResizeFilter::Nearest,
            pooling: Pooling::Gem,
            focus: None,
            mirror: false,
            imagenet_tail: 0,
        }
    }
}

impl ModelConfig {
    /// The network for `classes` species with fresh weights (for a transfer network the
    /// backbone's too: the pretrained ones are loaded into it afterwards).
    pub fn init(&self, classes: usize, device: &Device) -> Network {
        match (self.architecture, self.architecture.backbone()) {
            (_, Some(variant)) => Network::Transfer(self.transfer(
                EfficientNetLite::new(variant, false, device),
                classes,
                device,
            )),
            (Architecture::RecipeDropout, None) => {
                Network::Recipe(RecipeCnn::new(classes, self.image_size, 0.25, 0.5, device))
            }
            (_, None) => {
                Network::Recipe(RecipeCnn::new(classes, self.image_size, 0.0, 0.25, device))
            }
        }
    }

    /// A transfer network on `backbone` (pretrained, when training starts) with a fresh head
    /// for `classes` species.
    pub fn transfer(
        &self,
        backbone: EfficientNetLite,
        classes: usize,
        device: &Device,
    ) -> TransferNet {
        TransferNet {
            backbone: backbone.with_imagenet_tail(self.imagenet_tail),
            head: Head::new(classes, device),
            viewing: self.viewing(),
        }
    }

    /// Whether the network is a pretrained backbone with a new head.
    pub fn is_transfer(&self) -> bool {
        self.architecture.backbone().is_some()
    }

    /// How a transfer network looks at photos.
    pub fn viewing(&self) -> Viewing {
        Viewing {
            pooling: self.pooling,
            focus: self.focus.map(|view| view as usize),
            mirror: self.mirror,
        }
    }

    /// How pixels are normalised for this network.
    pub fn normalisation(&self) -> Normalisation {
        if self.is_transfer() {
            efficientnet::NORMALISATION
        } else {
            input::RESCALE
        }
    }

    /// The smallest square input the network accepts.
    pub fn min_image_size(&self) -> u32 {
        if self.is_transfer() {
            efficientnet::MIN_IMAGE_SIZE
        } else {
            recipe::MIN_IMAGE_SIZE
        }
    }

    /// Checks every value, naming the first bad one and what is allowed.
    pub fn validate(&self) -> Result<()> {
        let min = self.min_image_size();
        if self.image_size < min || self.image_size > MAX_IMAGE_SIZE {
            return Err(Error::invalid(
                "image-size",
                self.image_size,
                format!(
                    "between {min} and {MAX_IMAGE_SIZE} pixels for the {} model",
                    self.architecture
                ),
            ));
        }
        if let Some(view) = self.focus {
            self.validate_focus(view)?;
        }
        if let (tail @ 1.., backbone) = (self.imagenet_tail, self.architecture.backbone()) {
            let blocks = backbone.map_or(0, |b| b.block_count());
            if tail > blocks || self.focus.is_some() {
                return Err(Error::invalid(
                    "imagenet_tail",
                    tail,
                    format!(
                        "at most the backbone's {blocks} blocks, for a fine-tuned transfer network (not with --focus)"
                    ),
                ));
            }
        }
        if self.mirror && !self.is_transfer() {
            return Err(Error::invalid(
                "mirror",
                "(given)",
                "only for the transfer models (--model efficientnet-lite0, ...); the recipe models look once",
            ));
        }
        Ok(())
    }

    fn validate_focus(&self, view: u32) -> Result<()> {
        let invalid = |allowed: String| Err(Error::invalid("focus", view, allowed));
        if !self.is_transfer() {
            return invalid(
                "no --focus for the recipe models; it is for the transfer models (--model efficientnet-lite0, ...)".into(),
            );
        }
        if view < efficientnet::MIN_IMAGE_SIZE {
            return invalid(format!("at least {} pixels", efficientnet::MIN_IMAGE_SIZE));
        }
        if self.image_size < 2 * view || !self.image_size.is_multiple_of(view) {
            return invalid(format!(
                "a whole fraction (a half, a third, ...) of --image-size {}: e.g. --image-size {} --focus {view}",
                self.image_size,
                2 * view
            ));
        }
        Ok(())
    }
}
