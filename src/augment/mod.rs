//! Random geometric augmentation with the exact semantics of Keras' `ImageDataGenerator`
//! (keras-preprocessing 1.1.2), so that users of the recipe get the same transformations from
//! the same parameters.
//!
//! [`AugmentParams`] holds the generator's parameters and draws a random [`Transform`] per photo,
//! with Keras' distributions; [`Transform::apply`] resamples a photo the way
//! `scipy.ndimage.affine_transform` (bilinear, order 1) does, then shifts channels, flips and
//! changes brightness in Keras' order. [`preview`] writes transformed samples to a folder.

pub mod params;
pub mod preview;
pub mod transform;

pub use params::{AugmentParams, FillMode, ShiftRange, ZoomRange};
pub use transform::{Image, Transform};
