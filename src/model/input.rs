//! From decoded photos to the network's input: NCHW float tensors scaled by 1/255, as Keras'
//! `rescale=1/255`.

use burn::prelude::*;

/// The factor applied to pixel values on the 0..255 scale.
pub const RESCALE: f32 = 1.0 / 255.0;

/// Writes one `side` x `side` RGB photo, row-major with channels last on the 0..255 scale, into
/// `out` as three planes (CHW), rescaled.
pub fn write_planar<T: Copy + Into<f32>>(hwc: &[T], out: &mut [f32]) {
    let plane = hwc.len() / 3;
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (p, rgb) in hwc.chunks_exact(3).enumerate() {
        r[p] = rgb[0].into() * RESCALE;
        g[p] = rgb[1].into() * RESCALE;
        b[p] = rgb[2].into() * RESCALE;
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
    device: &Device,
) -> Tensor<4> {
    let per_photo = 3 * (size * size) as usize;
    let mut data = vec![0f32; photos.len() * per_photo];
    for (pixels, out) in photos.zip(data.chunks_exact_mut(per_photo)) {
        write_planar(pixels, out);
    }
    planar_tensor(data, size, device)
}
