//! The parameters of Keras' `ImageDataGenerator` and the random draw of one [`Transform`] from
//! them, with Keras' distributions.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::transform::Transform;
use crate::{Error, Result};

/// How points outside the photo are filled, with SciPy's semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum FillMode {
    /// aaaa|abcd|dddd
    Nearest,
    /// kkkk|abcd|kkkk with k = --cval
    Constant,
    /// dcba|abcd|dcba
    Reflect,
    /// SciPy's 'wrap': the first and last samples overlap (period len - 1)
    Wrap,
}

/// A `width_shift_range` or `height_shift_range`, with Keras' three meanings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ShiftRange {
    /// A whole number N: a whole-pixel shift from {-(N-1), ..., N-1}, with 0 twice as likely as
    /// each other value (Keras draws `choice(N)` and a random sign).
    Pixels(u32),
    /// A number below 1 is a fraction of the side, 1 or more a number of pixels; drawn
    /// uniformly from (-r, r).
    Uniform(f64),
    /// One of the listed values with a random sign; fractions of the side if all are below 1.
    Choice(Vec<f64>),
}

impl ShiftRange {
    /// A random offset in pixels for an axis of `side` pixels.
    pub fn draw(&self, side: usize, rng: &mut impl Rng) -> f64 {
        let (value, largest) = match self {
            ShiftRange::Pixels(0) => return 0.0,
            ShiftRange::Pixels(n) => {
                let magnitude = rng.random_range(0..*n) as f64;
                (
                    if rng.random_bool(0.5) {
                        magnitude
                    } else {
                        -magnitude
                    },
                    *n as f64,
                )
            }
            ShiftRange::Uniform(r) if *r == 0.0 => return 0.0,
            ShiftRange::Uniform(r) => (rng.random_range(-r..=*r), *r),
            ShiftRange::Choice(values) if values.is_empty() => return 0.0,
            ShiftRange::Choice(values) => {
                let v = values[rng.random_range(0..values.len())];
                let largest = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (if rng.random_bool(0.5) { v } else { -v }, largest)
            }
        };
        if largest < 1.0 {
            value * side as f64
        } else {
            value
        }
    }

    fn validate(&self, name: &'static str) -> Result<()> {
        let bad = match self {
            ShiftRange::Pixels(_) => false,
            ShiftRange::Uniform(r) => !(r.is_finite() && *r >= 0.0),
            ShiftRange::Choice(values) => values.iter().any(|v| !v.is_finite()),
        };
        if bad {
            return Err(Error::invalid(
                name,
                self,
                "a number of 0 or more (below 1: a fraction of the side), a whole number of pixels, or a list such as 2,4,8",
            ));
        }
        Ok(())
    }
}

impl FromStr for ShiftRange {
    type Err = String;

    /// `0.2` (fraction), `10.0` (pixels, uniform), `10` (whole pixels), `1,2,3` (a list).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().trim_start_matches('[').trim_end_matches(']');
        if s.contains(',') {
            let values: Result<Vec<f64>, _> =
                s.split(',').map(|v| v.trim().parse::<f64>()).collect();
            return values
                .map(ShiftRange::Choice)
                .map_err(|_| format!("{s:?} is not a list of numbers"));
        }
        if let Ok(n) = s.parse::<u32>() {
            return Ok(ShiftRange::Pixels(n));
        }
        s.parse::<f64>()
            .map(ShiftRange::Uniform)
            .map_err(|_| format!("{s:?} is not a number, a whole number or a list"))
    }
}

impl fmt::Display for ShiftRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShiftRange::Pixels(n) => write!(f, "{n}"),
            ShiftRange::Uniform(r) => write!(f, "{r:?}"),
            ShiftRange::Choice(v) => {
                let items: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
                write!(f, "{}", items.join(","))
            }
        }
    }
}

/// Keras' `zoom_range`: one number z for [1 - z, 1 + z], or a pair of bounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ZoomRange {
    pub low: f64,
    pub high: f64,
}

impl FromStr for ZoomRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().trim_start_matches('[').trim_end_matches(']');
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let num = |v: &str| {
            v.parse::<f64>()
                .map_err(|_| format!("{v:?} is not a number"))
        };
        match parts.as_slice() {
            [z] => {
                let z = num(z)?;
                Ok(ZoomRange {
                    low: 1.0 - z,
                    high: 1.0 + z,
                })
            }
            [low, high] => Ok(ZoomRange {
                low: num(low)?,
                high: num(high)?,
            }),
            _ => Err(format!("{s:?} is neither a number nor a pair LOW,HIGH")),
        }
    }
}

impl fmt::Display for ZoomRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?},{:?}", self.low, self.high)
    }
}

/// A pair of brightness factors, LOW,HIGH.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BrightnessRange {
    pub low: f64,
    pub high: f64,
}

impl FromStr for BrightnessRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let zoom: ZoomRange = s.parse()?;
        if !s.contains(',') {
            return Err(format!("{s:?}: give two factors, LOW,HIGH (e.g. 0.8,1.2)"));
        }
        Ok(BrightnessRange {
            low: zoom.low,
            high: zoom.high,
        })
    }
}

/// The augmentation parameters, named as in Keras' `ImageDataGenerator`. The defaults are the
/// recipe's, written once in [`Default`], which the command line's defaults read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AugmentParams {
    /// Rotation range in degrees: a uniform draw from (-r, r).
    pub rotation_range: f64,
    /// Horizontal shift: below 1 a fraction of the width, 1.0 or more pixels, a whole number N
    /// whole pixels below N, or a list such as 2,4,8.
    pub width_shift_range: ShiftRange,
    /// Vertical shift, as --width-shift-range.
    pub height_shift_range: ShiftRange,
    /// Shear angle range in degrees (Keras' unit; the recipe's 0.2 is a fifth of a degree).
    pub shear_range: f64,
    /// Zoom range: z for [1-z, 1+z], or LOW,HIGH; rows and columns are drawn independently.
    pub zoom_range: ZoomRange,
    /// Flip half the photos left to right.
    pub horizontal_flip: bool,
    /// Flip half the photos upside down.
    pub vertical_flip: bool,
    /// How points outside the photo are filled.
    pub fill_mode: FillMode,
    /// The fill value (0..255) for --fill-mode constant.
    pub cval: f32,
    /// Channel shift range on the 0..255 scale: one uniform draw from (-r, r) added to all channels.
    pub channel_shift_range: f64,
    /// Brightness factors LOW,HIGH, drawn uniformly (off by default).
    pub brightness_range: Option<BrightnessRange>,
}

impl Default for AugmentParams {
    fn default() -> Self {
        AugmentParams {
            rotation_range: 40.0,
            width_shift_range: ShiftRange::Uniform(0.2),
            height_shift_range: ShiftRange::Uniform(0.2),
            shear_range: 0.2,
            zoom_range: ZoomRange {
                low: 0.8,
                high: 1.2,
            },
            horizontal_flip: true,
            vertical_flip: false,
            fill_mode: FillMode::Nearest,
            cval: 0.0,
            channel_shift_range: 0.0,
            brightness_range: None,
        }
    }
}

impl AugmentParams {
    /// Checks every parameter, naming the first bad one and its allowed values.
    pub fn validate(&self) -> Result<()> {
        let non_negative = |name: &'static str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(Error::invalid(name, v, "a number of 0 or more"))
            }
        };
        non_negative("rotation-range", self.rotation_range)?;
        non_negative("shear-range", self.shear_range)?;
        non_negative("channel-shift-range", self.channel_shift_range)?;
        self.width_shift_range.validate("width-shift-range")?;
        self.height_shift_range.validate("height-shift-range")?;
        let z = self.zoom_range;
        if !(z.low > 0.0 && z.high >= z.low && z.high.is_finite()) {
            return Err(Error::invalid(
                "zoom-range",
                z,
                "bounds above 0 with LOW <= HIGH, e.g. 0.2 (for 0.8,1.2) or 0.5,1.5",
            ));
        }
        if let Some(b) = self.brightness_range
            && !(b.low >= 0.0 && b.high >= b.low && b.high.is_finite())
        {
            return Err(Error::invalid(
                "brightness-range",
                format!("{},{}", b.low, b.high),
                "two factors of 0 or more with LOW <= HIGH, e.g. 0.8,1.2",
            ));
        }
        if !self.cval.is_finite() {
            return Err(Error::invalid(
                "cval",
                self.cval,
                "a number on the 0..255 scale",
            ));
        }
        Ok(())
    }

    /// Draws the transform for a photo of `rows` x `cols`, in Keras' order: rotation, row
    /// shift, column shift, shear, zoom, flips, channel shift, brightness.
    pub fn draw(&self, rows: usize, cols: usize, rng: &mut impl Rng) -> Transform {
        let symmetric = |r: f64, rng: &mut dyn rand::RngCore| {
            if r > 0.0 {
                rng.random_range(-r..=r)
            } else {
                0.0
            }
        };
        let theta = symmetric(self.rotation_range, rng);
        let tx = self.height_shift_range.draw(rows, rng);
        let ty = self.width_shift_range.draw(cols, rng);
        let shear = symmetric(self.shear_range, rng);
        let (zx, zy) = if self.zoom_range.low == 1.0 && self.zoom_range.high == 1.0 {
            (1.0, 1.0)
        } else {
            let z = self.zoom_range;
            (
                rng.random_range(z.low..=z.high),
                rng.random_range(z.low..=z.high),
            )
        };
        // Keras draws both coins even when a flip is off.
        let flip_horizontal = rng.random_bool(0.5) && self.horizontal_flip;
        let flip_vertical = rng.random_bool(0.5) && self.vertical_flip;
        let channel_shift =
            (self.channel_shift_range > 0.0).then(|| symmetric(self.channel_shift_range, rng));
        let brightness = self
            .brightness_range
            .map(|b| rng.random_range(b.low..=b.high));
        Transform {
            theta,
            tx,
            ty,
            shear,
            zx,
            zy,
            flip_horizontal,
            flip_vertical,
            channel_shift,
            brightness,
            fill_mode: self.fill_mode,
            cval: self.cval,
        }
    }
}
