//! From decoded photos to the network's input: NCHW float tensors scaled by 1/255, as Keras'
//! `rescale=1/255`.

use burn::prelude::*;

/// The factor applied to 8-bit pixel values.
pub const RESCALE: f32 = 1.0 / 255.0;

/// Stacks RGB photos (each `size * size * 3` bytes, row-major HWC) into a `[n, 3, size, size]`
/// tensor on `device`.
pub fn batch_tensor<'a>(
    photos: impl ExactSizeIterator<Item = &'a [u8]>,
    size: u32,
    device: &Device,
) -> Tensor<4> {
    let n = photos.len();
    let plane = (size * size) as usize;
    let mut data = vec![0f32; n * 3 * plane];
    for (i, pixels) in photos.enumerate() {
        let out = &mut data[i * 3 * plane..(i + 1) * 3 * plane];
        for (p, rgb) in pixels.chunks_exact(3).enumerate() {
            out[p] = rgb[0] as f32 * RESCALE;
            out[plane + p] = rgb[1] as f32 * RESCALE;
            out[2 * plane + p] = rgb[2] as f32 * RESCALE;
        }
    }
    let side = size as usize;
    Tensor::from_data(TensorData::new(data, [n, 3, side, side]), device)
}
