//! The recipe's hot layers on the CPU: a chain of blocks of a 2x2 convolution with bias, ReLU and
//! a 2x2 max pool of stride 2 (the recipe has two), forward and backward, for `f32` images in
//! burn's `[batch, channels, height, width]` layout.
//!
//! Why by hand: burn's generic CPU path runs this as im2col, GEMM, a separate ReLU and a generic
//! pooling loop, with layout copies between them; for the recipe's shapes that spends most of a
//! training step outside the matrix products. Here each image is stored once channels-last with
//! its padding, and a 2x2 convolution becomes two matrix products whose left operand is a strided
//! view of that image (row `p` of kernel row `ky` is the `2 * channels` values starting at pixel
//! `p + ky * padded_width`), so no patch matrix is built. ReLU and pooling are fused into one pass
//! that remembers which of the four pixels won; the backward pass routes gradients through that
//! record. Between blocks the activations stay channels-last. Images are spread over rayon's
//! threads.

use rayon::prelude::*;

use crate::model::kernels::{Parallelism, matmul, transpose, wide};

/// No pixel of the window passed the ReLU: the gradient stops here.
const NO_WINNER: u8 = u8::MAX;

/// The shapes of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvPoolShape {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub filters: usize,
    /// Keras' 'same' padding (one zero row and column after the image for a 2x2 kernel) instead
    /// of 'valid'.
    pub same: bool,
}

impl ConvPoolShape {
    fn padded(&self) -> (usize, usize) {
        let pad = usize::from(self.same);
        (self.height + pad, self.width + pad)
    }

    /// Side lengths of the convolution's output.
    fn conv(&self) -> (usize, usize) {
        let (h, w) = self.padded();
        (h - 1, w - 1)
    }

    /// Side lengths of the pooled output `[batch, filters, height, width]`.
    pub fn pooled(&self) -> (usize, usize) {
        let (h, w) = self.conv();
        (h / 2, w / 2)
    }

    /// Rows of the convolution computed per image: every padded-width position up to the last
    /// valid output pixel (the positions in the last padded column are computed and ignored).
    fn rows(&self) -> usize {
        let (_, wp) = self.padded();
        let (oh, ow) = self.conv();
        (oh - 1) * wp + ow
    }

    fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    fn padded_len(&self) -> usize {
        let (hp, wp) = self.padded();
        hp * wp * self.channels
    }

    fn pooled_len(&self) -> usize {
        let (ph, pw) = self.pooled();
        self.filters * ph * pw
    }

    /// Weights `[filters, channels, 2, 2]` as two `[2 * channels, filters]` matrices, one per
    /// kernel row, row index `kx * channels + channel`.
    fn weight_len(&self) -> usize {
        4 * self.channels * self.filters
    }
}

/// One layer of a chain: its shapes and its weights as matrices.
struct Layer {
    shape: ConvPoolShape,
    weights: Vec<f32>,
}

/// What the backward pass needs of one image from the forward pass, per layer.
struct ImageRecord {
    /// The layer's input, channels-last with its padding.
    padded: Vec<Vec<f32>>,
    /// Per pooled value (channels-last), which pixel of its window won (row-major), or
    /// [`NO_WINNER`].
    winners: Vec<Vec<u8>>,
}

/// What the backward pass needs from the forward pass.
pub struct Saved {
    layers: Vec<Layer>,
    images: Vec<ImageRecord>,
}

impl Saved {
    /// The shapes of the chain's layers.
    pub fn shapes(&self) -> impl Iterator<Item = ConvPoolShape> + '_ {
        self.layers.iter().map(|l| l.shape)
    }
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shapes: Vec<_> = self.layers.iter().map(|l| l.shape).collect();
        f.debug_struct("Saved").field("layers", &shapes).finish()
    }
}

/// Gradients of the loss with respect to the chain's input and each layer's parameters.
pub struct Gradients {
    /// `None` when not asked for (the network's first layer).
    pub input: Option<Vec<f32>>,
    /// Per layer, the weight gradient `[filters, channels, 2, 2]` and the bias gradient.
    pub layers: Vec<(Vec<f32>, Vec<f32>)>,
}

/// Buffers one thread reuses from image to image.
#[derive(Default)]
struct Scratch {
    /// Per layer, its padded input and its winners; moved out when the forward pass keeps them.
    padded: Vec<Vec<f32>>,
    winners: Vec<Vec<u8>>,
    conv: Vec<f32>,
    pooled: Vec<f32>,
    products: Vec<f32>,
    grad: Vec<f32>,
}

/// `buffer` resized to `len` zeros.
fn zeroed(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buffer.clear();
    buffer.resize(len, 0.0);
    buffer
}

/// `buffer` resized to `len`, for a caller that overwrites every value.
fn sized(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buffer.resize(len, 0.0);
    &mut buffer[..len]
}

/// Checks that each layer takes the previous one's pooled output without padding.
fn check_chain(shapes: &[ConvPoolShape]) {
    assert!(!shapes.is_empty());
    for pair in shapes.windows(2) {
        let (ph, pw) = pair[0].pooled();
        let next = pair[1];
        assert!(
            !next.same
                && next.batch == pair[0].batch
                && next.channels == pair[0].filters
                && (next.height, next.width) == (ph, pw),
            "layer {next:?} cannot follow {:?}",
            pair[0]
        );
    }
}

/// Pooled activations `[batch, filters, pooled height, pooled width]` of the last layer of a
/// chain of conv + ReLU + pool layers, from images `[batch, channels, height, width]` and each
/// layer's weights `[filters, channels, 2, 2]` and biases `[filters]`; with `keep`, also what
/// [`backward`] needs. Between layers the activations stay channels-last.
pub fn forward(
    shapes: &[ConvPoolShape],
    input: &[f32],
    params: &[(&[f32], &[f32])],
    keep: bool,
) -> (Vec<f32>, Option<Saved>) {
    check_chain(shapes);
    assert_eq!(params.len(), shapes.len());
    let (first, last) = (shapes[0], shapes[shapes.len() - 1]);
    assert_eq!(input.len(), first.batch * first.image_len());
    let layers: Vec<Layer> = shapes
        .iter()
        .zip(params)
        .map(|(&shape, (weight, bias))| {
            assert_eq!(weight.len(), shape.weight_len());
            assert_eq!(bias.len(), shape.filters);
            Layer {
                shape,
                weights: gemm_weights(shape, weight),
            }
        })
        .collect();
    let mut output = vec![0.0; last.batch * last.pooled_len()];
    let images: Vec<Option<ImageRecord>> = output
        .par_chunks_mut(last.pooled_len())
        .enumerate()
        .map_init(Scratch::default, |scratch, (b, out)| {
            scratch.padded.resize_with(layers.len(), Vec::new);
            scratch.winners.resize_with(layers.len(), Vec::new);
            let image = &input[b * first.image_len()..][..first.image_len()];
            to_padded_channels_last(
                first,
                image,
                sized(&mut scratch.padded[0], first.padded_len()),
            );
            for (l, (layer, (_, bias))) in layers.iter().zip(params).enumerate() {
                let shape = layer.shape;
                let conv = sized(&mut scratch.conv, shape.rows() * shape.filters);
                let (done, next) = scratch.padded.split_at_mut(l + 1);
                convolve(shape, &done[l], &layer.weights, conv);
                let won = &mut scratch.winners[l];
                won.resize(shape.pooled_len(), NO_WINNER);
                // The next layer's input is this one's pooled output, unpadded.
                let pooled = match next.first_mut() {
                    Some(next) => sized(next, shape.pooled_len()),
                    None => sized(&mut scratch.pooled, shape.pooled_len()),
                };
                pool(shape, conv, bias, pooled, won);
            }
            let (ph, pw) = last.pooled();
            transpose(&scratch.pooled, ph * pw, last.filters, out);
            keep.then(|| ImageRecord {
                padded: scratch.padded.iter_mut().map(std::mem::take).collect(),
                winners: scratch.winners.iter_mut().map(std::mem::take).collect(),
            })
        })
        .collect();
    let saved = keep.then(|| Saved {
        layers,
        images: images.into_iter().flatten().collect(),
    });
    (output, saved)
}

/// The groups a batch's weight gradients are summed in: enough for 16 cores, fixed so that the
/// sums do not depend on the number of threads.
const GRADIENT_GROUPS: usize = 16;

/// Gradients from the loss's gradient with respect to the last layer's pooled output.
pub fn backward(saved: &Saved, grad_output: &[f32], want_input: bool) -> Gradients {
    let layers = &saved.layers;
    let (first, last) = (layers[0].shape, layers[layers.len() - 1].shape);
    assert_eq!(grad_output.len(), last.batch * last.pooled_len());
    // All layers' weight and bias sums, one after the other.
    let offsets: Vec<usize> = layers
        .iter()
        .scan(0, |at, l| {
            let start = *at;
            *at += l.shape.weight_len() + l.shape.filters;
            Some(start)
        })
        .collect();
    let total: usize = layers
        .iter()
        .map(|l| l.shape.weight_len() + l.shape.filters)
        .sum();
    let per_image =
        |scratch: &mut Scratch, b: usize, input_grad: Option<&mut [f32]>, sums: &mut [f32]| {
            let record = &saved.images[b];
            let (ph, pw) = last.pooled();
            let grad = &grad_output[b * last.pooled_len()..][..last.pooled_len()];
            transpose(
                grad,
                last.filters,
                ph * pw,
                sized(&mut scratch.grad, last.pooled_len()),
            );
            for (l, layer) in layers.iter().enumerate().rev() {
                let shape = layer.shape;
                let conv_grad = zeroed(&mut scratch.conv, shape.rows() * shape.filters);
                unpool(shape, &scratch.grad, &record.winners[l], conv_grad);
                let sums = &mut sums[offsets[l]..][..shape.weight_len() + shape.filters];
                let (weight_sums, bias_sums) = sums.split_at_mut(shape.weight_len());
                for row in conv_grad.chunks_exact(shape.filters) {
                    for (sum, g) in bias_sums.iter_mut().zip(row) {
                        *sum += g;
                    }
                }
                weight_gradient(shape, &record.padded[l], conv_grad, weight_sums);
                if l > 0 || want_input {
                    let products = sized(&mut scratch.products, shape.rows() * 4 * shape.channels);
                    // Unpadded layers (all but maybe the first) get the previous layer's pooled
                    // gradient, channels-last, directly.
                    let padded_grad = zeroed(&mut scratch.pooled, shape.padded_len());
                    padded_input_gradient(shape, conv_grad, &layer.weights, products, padded_grad);
                    std::mem::swap(&mut scratch.grad, &mut scratch.pooled);
                }
            }
            if let Some(input_grad) = input_grad {
                from_padded_channels_last(first, &scratch.grad, input_grad);
            }
        };
    // The batch is cut into the same contiguous groups whatever the number of threads, each
    // group summed in image order and the groups' sums added in group order: the weight
    // gradients are the same to the bit from run to run (rayon's fold and reduce would add in
    // the order the threads happened to finish).
    let group = first.batch.div_ceil(GRADIENT_GROUPS).max(1);
    let mut input = want_input.then(|| vec![0.0f32; first.batch * first.image_len()]);
    let mut input_groups: Vec<Option<&mut [f32]>> = match &mut input {
        Some(input) => input
            .chunks_mut(group * first.image_len())
            .map(Some)
            .collect(),
        None => (0..first.batch.div_ceil(group)).map(|_| None).collect(),
    };
    let partial_sums: Vec<Vec<f32>> = input_groups
        .par_iter_mut()
        .enumerate()
        // Buffers are made once per piece of work rayon splits off, not once per group.
        .map_init(Scratch::default, |scratch, (g, input_grad)| {
            let mut sums = vec![0.0f32; total];
            let images = g * group..((g + 1) * group).min(first.batch);
            for (i, b) in images.enumerate() {
                let grad = input_grad
                    .as_deref_mut()
                    .map(|grads| &mut grads[i * first.image_len()..][..first.image_len()]);
                per_image(scratch, b, grad, &mut sums);
            }
            sums
        })
        .collect();
    let mut sums = vec![0.0f32; total];
    for partial in &partial_sums {
        sums.iter_mut().zip(partial).for_each(|(s, p)| *s += p);
    }
    let gradients = layers
        .iter()
        .zip(&offsets)
        .map(|(layer, &at)| {
            let shape = layer.shape;
            let (weight, bias) =
                sums[at..][..shape.weight_len() + shape.filters].split_at(shape.weight_len());
            (burn_weights(shape, weight), bias.to_vec())
        })
        .collect();
    Gradients {
        input,
        layers: gradients,
    }
}

/// Each weight's index in burn's `[filters, channels, 2, 2]` layout and in the matrices' layout.
fn weight_places(shape: ConvPoolShape) -> impl Iterator<Item = (usize, usize)> {
    let (c, f) = (shape.channels, shape.filters);
    (0..f).flat_map(move |filter| {
        (0..c).flat_map(move |channel| {
            (0..4).map(move |k| {
                let (ky, kx) = (k / 2, k % 2);
                (
                    ((filter * c + channel) * 2 + ky) * 2 + kx,
                    (ky * 2 * c + kx * c + channel) * f + filter,
                )
            })
        })
    })
}

fn gemm_weights(shape: ConvPoolShape, weight: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; shape.weight_len()];
    for (burn, matrices) in weight_places(shape) {
        out[matrices] = weight[burn];
    }
    out
}

fn burn_weights(shape: ConvPoolShape, matrices_layout: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; shape.weight_len()];
    for (burn, matrices) in weight_places(shape) {
        out[burn] = matrices_layout[matrices];
    }
    out
}

wide! {
fn to_padded_channels_last(shape: ConvPoolShape, image: &[f32], padded: &mut [f32]) {
    let (h, w, c) = (shape.height, shape.width, shape.channels);
    let (_, wp) = shape.padded();
    if !shape.same {
        // Without padding the channels-last image is the transposed channels-first one.
        transpose(image, c, h * w, padded);
        return;
    }
    {
        // Only the last column and the last row are padding; the image covers the rest.
        for row in padded.chunks_exact_mut(wp * c) {
            row[w * c..].fill(0.0);
        }
        let last_row = h * wp * c;
        padded[last_row..].fill(0.0);
    }
    for (channel, plane) in image.chunks_exact(h * w).enumerate() {
        for (row, padded_row) in plane.chunks_exact(w).zip(padded.chunks_exact_mut(wp * c)) {
            for (value, pixel) in row.iter().zip(padded_row[channel..].iter_mut().step_by(c)) {
                *pixel = *value;
            }
        }
    }
}
}

/// The convolution without bias, `[rows, filters]`, one row per padded-width position.
fn convolve(shape: ConvPoolShape, padded: &[f32], weights: &[f32], conv: &mut [f32]) {
    let (c, f, rows) = (shape.channels, shape.filters, shape.rows());
    let (_, wp) = shape.padded();
    for ky in 0..2 {
        matmul(
            (rows, f, 2 * c),
            conv,
            (f, 1),
            ky == 1,
            &padded[ky * wp * c..],
            (c, 1),
            &weights[ky * 2 * c * f..][..2 * c * f],
            (f, 1),
            Parallelism::None,
        );
    }
}

wide! {
/// Bias, ReLU and max pooling of one image's convolution, channels-last.
fn pool(shape: ConvPoolShape, conv: &[f32], bias: &[f32], pooled: &mut [f32], winners: &mut [u8]) {
    let f = shape.filters;
    let (_, wp) = shape.padded();
    let (ph, pw) = shape.pooled();
    for py in 0..ph {
        for px in 0..pw {
            let corner = (2 * py) * wp + 2 * px;
            let [a, b, c, d] =
                [corner, corner + 1, corner + wp, corner + wp + 1].map(|p| &conv[p * f..][..f]);
            let at = (py * pw + px) * f;
            let (out, won) = (&mut pooled[at..][..f], &mut winners[at..][..f]);
            // Pairwise maxima as selects, ties to the earlier pixel, so the loop vectorises.
            for i in 0..f {
                let (top_right, bottom_right) = (b[i] > a[i], d[i] > c[i]);
                let top = if top_right { b[i] } else { a[i] };
                let bottom = if bottom_right { d[i] } else { c[i] };
                let lower = bottom > top;
                let best = if lower { bottom } else { top };
                let index = if lower {
                    2 + u8::from(bottom_right)
                } else {
                    u8::from(top_right)
                };
                let value = best + bias[i];
                let alive = value > 0.0;
                out[i] = if alive { value } else { 0.0 };
                won[i] = if alive { index } else { NO_WINNER };
            }
        }
    }
}
}

wide! {
/// The gradient with respect to the convolution's output, `[rows, filters]`: each pooled
/// gradient (channels-last) goes to the pixel that won its window.
fn unpool(shape: ConvPoolShape, grad: &[f32], winners: &[u8], conv_grad: &mut [f32]) {
    let f = shape.filters;
    let (_, wp) = shape.padded();
    let (ph, pw) = shape.pooled();
    for py in 0..ph {
        for px in 0..pw {
            let at = (py * pw + px) * f;
            let corner = (2 * py) * wp + 2 * px;
            let (won, g) = (&winners[at..][..f], &grad[at..][..f]);
            for (k, pixel) in (0u8..).zip([corner, corner + 1, corner + wp, corner + wp + 1]) {
                let dst = &mut conv_grad[pixel * f..][..f];
                // A bit mask instead of a branch lets the compiler vectorise this loop.
                for i in 0..f {
                    let keep = 0u32.wrapping_sub(u32::from(won[i] == k));
                    dst[i] = f32::from_bits(g[i].to_bits() & keep);
                }
            }
        }
    }
}
}

/// Adds one image's weight gradient, in the matrices' layout, to `sums`.
fn weight_gradient(shape: ConvPoolShape, padded: &[f32], conv_grad: &[f32], sums: &mut [f32]) {
    let (c, f, rows) = (shape.channels, shape.filters, shape.rows());
    let (_, wp) = shape.padded();
    for ky in 0..2 {
        // The transposed strided view: element (j, p) is padded[(p + ky * wp) * c + j].
        matmul(
            (2 * c, f, rows),
            &mut sums[ky * 2 * c * f..][..2 * c * f],
            (f, 1),
            true,
            &padded[ky * wp * c..],
            (1, c),
            conv_grad,
            (f, 1),
            Parallelism::None,
        );
    }
}

/// Adds one image's gradient with respect to its padded channels-last input to `padded_grad`:
/// one product gives each convolution row's contribution to its four input pixels, which are
/// then added in place.
fn padded_input_gradient(
    shape: ConvPoolShape,
    conv_grad: &[f32],
    weights: &[f32],
    products: &mut [f32],
    padded_grad: &mut [f32],
) {
    let (c, f, rows) = (shape.channels, shape.filters, shape.rows());
    let (_, wp) = shape.padded();
    // products[p][(ky * 2 + kx) * c + channel] = sum over filters of conv_grad[p][filter] * weight.
    matmul(
        (rows, 4 * c, f),
        products,
        (4 * c, 1),
        false,
        conv_grad,
        (f, 1),
        weights,
        (1, f),
        Parallelism::None,
    );
    add_shifted(c, wp, products, padded_grad);
}

wide! {
/// `padded_grad[p + (k / 2) * wp + k % 2] += products[p][k]` for the four kernel pixels `k`.
fn add_shifted(c: usize, wp: usize, products: &[f32], padded_grad: &mut [f32]) {
    for (p, row) in products.chunks_exact(4 * c).enumerate() {
        for (k, part) in row.chunks_exact(c).enumerate() {
            let pixel = p + (k / 2) * wp + k % 2;
            for (sum, value) in padded_grad[pixel * c..][..c].iter_mut().zip(part) {
                *sum += value;
            }
        }
    }
}
}

wide! {
/// The image inside a padded channels-last buffer, channels-first.
fn from_padded_channels_last(shape: ConvPoolShape, padded: &[f32], image: &mut [f32]) {
    let (h, w, c) = (shape.height, shape.width, shape.channels);
    let (_, wp) = shape.padded();
    for (channel, plane) in image.chunks_exact_mut(h * w).enumerate() {
        for (row, padded_row) in plane.chunks_exact_mut(w).zip(padded.chunks_exact(wp * c)) {
            for (value, pixel) in row.iter_mut().zip(padded_row[channel..].iter().step_by(c)) {
                *value = *pixel;
            }
        }
    }
}
}
