//! From decoded photos to a network's input: NCHW float tensors, normalised as the network
//! expects (the recipe: Keras' `rescale=1/255`; EfficientNet-Lite0: (pixel - 127) / 128).

use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Pixel values on the 0..255 scale become `(value - offset) * scale`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalisation {
    pub offset: f32,
    pub scale: f32,
}

/// The recipe's `rescale=1/255`.
pub const RESCALE: Normalisation = Normalisation {
    offset: 0.0,
    scale: 1.0 / 255.0,
};

/// Writes one RGB photo, row-major with channels last on the 0..255 scale, into `out` as three
/// normalised planes (CHW).
pub fn write_planar<T: Copy + Into<f32>>(hwc: &[T], out: &mut [f32], norm: Normalisation) {
    let plane = hwc.len() / 3;
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    let f = |v: T| (v.into() - norm.offset) * norm.scale;
    for (p, rgb) in hwc.chunks_exact(3).enumerate() {
        r[p] = f(rgb[0]);
        g[p] = f(rgb[1]);
        b[p] = f(rgb[2]);
    }
}

/// A `[n, 3, side, side]` tensor from `n` photos already laid out by [`write_planar`].
pub fn planar_tensor(data: Vec<f32>, side: u32, device: &Device) -> Tensor<4> {
    let side = side as usize;
    let n = data.len() / (3 * side * side);
    Tensor::from_data(TensorData::new(data, [n, 3, side, side]), device)
}

/// Stacks decoded RGB photos (each `size * size * 3` bytes) into a `[n, 3, size, size]` tensor.
pub fn batch_tensor<'a>(
    photos: impl ExactSizeIterator<Item = &'a [u8]>,
    size: u32,
    norm: Normalisation,
    device: &Device,
) -> Tensor<4> {
    let per_photo = 3 * (size * size) as usize;
    let mut data = vec![0f32; photos.len() * per_photo];
    for (pixels, out) in photos.zip(data.chunks_exact_mut(per_photo)) {
        // Every caller resizes first; a photo of another size would silently become zeros.
        assert_eq!(
            pixels.len(),
            per_photo,
            "a photo of {} bytes for a {size}x{size} RGB input",
            pixels.len()
        );
        write_planar(pixels, out, norm);
    }
    planar_tensor(data, size, device)
}
