//! The flags that describe the network to train.

use clap::Args;
use vlinder::dataset::ResizeFilter;
use vlinder::model::{Architecture, ModelConfig, Pooling};

/// The flags of [`ModelConfig`].
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// The network to train.
    #[arg(long = "model", value_enum, default_value_t = ModelConfig::default().architecture)]
    pub architecture: Architecture,
    /// Photos are resized to this many pixels square.
    #[arg(long, default_value_t = ModelConfig::default().image_size)]
    pub image_size: u32,
    /// How photos are resized.
    #[arg(long, value_enum, default_value_t = ModelConfig::default().resize)]
    pub resize: ResizeFilter,
    /// For the transfer models: how the backbone's feature map becomes the head's input.
    #[arg(long, value_enum, default_value_t = ModelConfig::default().pooling)]
    pub pooling: Pooling,
    /// For the transfer models: look twice, at the whole photo shrunk to VIEW pixels and at a
    /// VIEW-pixel window of it at full size around where the features respond most, and give
    /// the head the mean of both (--image-size a multiple of VIEW, e.g. 640 with 320). Helps
    /// with small butterflies in large scenes; costs a second pass through the backbone.
    #[arg(long, value_name = "VIEW")]
    pub focus: Option<u32>,
    /// For the transfer models: look at each photo also mirrored left to right and give the
    /// head the mean of both (test-time flips, for validation and every answer; training flips
    /// at random instead). Costs a second pass through the backbone.
    #[arg(long)]
    pub mirror: bool,
}

impl From<ModelArgs> for ModelConfig {
    fn from(args: ModelArgs) -> Self {
        ModelConfig {
            architecture: args.architecture,
            image_size: args.image_size,
            resize: args.resize,
            pooling: args.pooling,
            focus: args.focus,
            mirror: args.mirror,
            // Derived from the training options when training starts.
            imagenet_tail: 0,
        }
    }
}
