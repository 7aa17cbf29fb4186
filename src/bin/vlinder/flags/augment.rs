//! The flags of augmentation: how `train` augments, and what `augment` writes.

use std::path::PathBuf;

use clap::Args;
use vlinder::augment::params::BrightnessRange;
use vlinder::augment::preview::{PreviewConfig, PreviewFormat};
use vlinder::augment::{AugmentParams, FillMode, ShiftRange, ZoomRange};

/// The flags of [`AugmentParams`].
#[derive(Debug, Args)]
pub struct AugmentArgs {
    /// Rotation range in degrees: a uniform draw from (-r, r).
    #[arg(long, default_value_t = AugmentParams::default().rotation_range)]
    pub rotation_range: f64,
    /// Horizontal shift: below 1 a fraction of the width, 1.0 or more pixels, a whole number N
    /// whole pixels below N, or a list such as 2,4,8.
    #[arg(long, default_value_t = AugmentParams::default().width_shift_range)]
    pub width_shift_range: ShiftRange,
    /// Vertical shift, as --width-shift-range.
    #[arg(long, default_value_t = AugmentParams::default().height_shift_range)]
    pub height_shift_range: ShiftRange,
    /// Shear angle range in degrees (Keras' unit; the recipe's 0.2 is a fifth of a degree).
    #[arg(long, default_value_t = AugmentParams::default().shear_range)]
    pub shear_range: f64,
    /// Zoom range: z for [1-z, 1+z], or LOW,HIGH; rows and columns are drawn independently.
    #[arg(long, default_value_t = AugmentParams::default().zoom_range)]
    pub zoom_range: ZoomRange,
    /// Flip half the photos left to right.
    #[arg(long, default_value_t = AugmentParams::default().horizontal_flip, action = clap::ArgAction::Set, value_name = "true|false")]
    pub horizontal_flip: bool,
    /// Flip half the photos upside down.
    #[arg(long, default_value_t = AugmentParams::default().vertical_flip, action = clap::ArgAction::Set, value_name = "true|false")]
    pub vertical_flip: bool,
    /// How points outside the photo are filled.
    #[arg(long, value_enum, default_value_t = AugmentParams::default().fill_mode)]
    pub fill_mode: FillMode,
    /// The fill value (0..255) for --fill-mode constant.
    #[arg(long, default_value_t = AugmentParams::default().cval)]
    pub cval: f32,
    /// Channel shift range on the 0..255 scale: one uniform draw from (-r, r) added to all channels.
    #[arg(long, default_value_t = AugmentParams::default().channel_shift_range)]
    pub channel_shift_range: f64,
    /// Brightness factors LOW,HIGH, drawn uniformly (off by default).
    #[arg(long, value_name = "LOW,HIGH")]
    pub brightness_range: Option<BrightnessRange>,
}

impl From<AugmentArgs> for AugmentParams {
    fn from(args: AugmentArgs) -> Self {
        AugmentParams {
            rotation_range: args.rotation_range,
            width_shift_range: args.width_shift_range,
            height_shift_range: args.height_shift_range,
            shear_range: args.shear_range,
            zoom_range: args.zoom_range,
            horizontal_flip: args.horizontal_flip,
            vertical_flip: args.vertical_flip,
            fill_mode: args.fill_mode,
            cval: args.cval,
            channel_shift_range: args.channel_shift_range,
            brightness_range: args.brightness_range,
        }
    }
}

/// The flags of [`PreviewConfig`].
#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// The photo to transform.
    pub photo: PathBuf,
    /// How many transformed versions to write.
    #[arg(long, default_value_t = 9)]
    pub count: usize,
    /// The folder to write them to (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// File names are PREFIX_NNN.png (or .jpg).
    #[arg(long, default_value = "aug")]
    pub prefix: String,
    #[arg(long, value_enum, default_value_t = PreviewFormat::Png)]
    pub format: PreviewFormat,
    /// Resize the photo to SIZE x SIZE first, as training does (default: its own size).
    #[arg(long, value_name = "SIZE")]
    pub size: Option<u32>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Also write PREFIX_sheet.png: the original beside its versions.
    #[arg(long)]
    pub sheet: bool,
    #[command(flatten)]
    pub params: AugmentArgs,
}

impl From<PreviewArgs> for PreviewConfig {
    fn from(args: PreviewArgs) -> Self {
        PreviewConfig {
            photo: args.photo,
            count: args.count,
            out: args.out,
            prefix: args.prefix,
            format: args.format,
            size: args.size,
            seed: args.seed,
            sheet: args.sheet,
            params: args.params.into(),
        }
    }
}
