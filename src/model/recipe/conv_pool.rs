//! The recipe's hot layer pair on the CPU: a 2x2 convolution with bias, ReLU and a 2x2 max pool
//! of stride 2, forward and backward, for `f32` images in burn's `[batch, channels, height,
//! width]` layout.
//!
//! Why by hand: burn's generic CPU path runs this as im2col, GEMM, a separate ReLU and a generic
//! pooling loop, with layout copies between them; for the recipe's shapes that spends most of a
//! training step outside the matrix products. Here each image is stored once channels-last with
//! its padding, and a 2x2 convolution becomes two matrix products whose left operand is a strided
//! view of that image (row `p` of kernel row `ky` is the `2 * channels` values starting at pixel
//! `p + ky * padded_width`), so no patch matrix is built. ReLU and pooling are fused into one pass
//! that remembers which of the four pixels won; the backward pass routes gradients through that
//! record. Images are spread over rayon's threads.

use gemm::{Parallelism, gemm};
use rayon::prelude::*;

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

/// What the backward pass needs from the forward pass.
pub struct Saved {
    shape: ConvPoolShape,
    /// Each image channels-last with its padding.
    padded: Vec<f32>,
    /// Per pooled value, which pixel of its window won (row-major), or [`NO_WINNER`].
    winners: Vec<u8>,
    weights: Vec<f32>,
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saved").field("shape", &self.shape).finish()
    }
}

/// Gradients of the loss with respect to the three inputs.
pub struct Gradients {
    /// `None` when not asked for (the network's first layer).
    pub input: Option<Vec<f32>>,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// Buffers one thread reuses from image to image.
#[derive(Default)]
struct Scratch {
    padded: Vec<f32>,
    conv: Vec<f32>,
    pooled: Vec<f32>,
    products: Vec<f32>,
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

/// Pooled activations `[batch, filters, pooled height, pooled width]` of images `[batch,
/// channels, height, width]`, weights `[filters, channels, 2, 2]` and biases `[filters]`; with
/// `keep`, also what [`backward`] needs.
pub fn forward(
    shape: ConvPoolShape,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    keep: bool,
) -> (Vec<f32>, Option<Saved>) {
    assert_eq!(input.len(), shape.batch * shape.image_len());
    assert_eq!(weight.len(), shape.weight_len());
    assert_eq!(bias.len(), shape.filters);
    let weights = gemm_weights(shape, weight);
    let mut output = vec![0.0; shape.batch * shape.pooled_len()];
    let mut winners = vec![NO_WINNER; shape.batch * shape.pooled_len()];
    let mut padded = vec![
        0.0;
        if keep {
            shape.batch * shape.padded_len()
        } else {
            0
        }
    ];
    let per_image =
        |scratch: &mut Scratch, b: usize, out: &mut [f32], won: &mut [u8], padded: &mut [f32]| {
            let image = &input[b * shape.image_len()..][..shape.image_len()];
            to_padded_channels_last(shape, image, padded);
            let conv = zeroed(&mut scratch.conv, shape.rows() * shape.filters);
            convolve(shape, padded, &weights, conv);
            let pooled = zeroed(&mut scratch.pooled, shape.pooled_len());
            pool(shape, conv, bias, pooled, won);
            let (ph, pw) = shape.pooled();
            transpose(pooled, ph * pw, shape.filters, out);
        };
    let images = output
        .par_chunks_mut(shape.pooled_len())
        .zip(winners.par_chunks_mut(shape.pooled_len()))
        .enumerate();
    if keep {
        images
            .zip(padded.par_chunks_mut(shape.padded_len()))
            .for_each_init(Scratch::default, |scratch, ((b, (out, won)), padded)| {
                per_image(scratch, b, out, won, padded)
            });
    } else {
        images.for_each_init(Scratch::default, |scratch, (b, (out, won))| {
            let mut padded = std::mem::take(&mut scratch.padded);
            padded.resize(shape.padded_len(), 0.0);
            per_image(scratch, b, out, won, &mut padded);
            scratch.padded = padded;
        });
    }
    let saved = keep.then_some(Saved {
        shape,
        padded,
        winners,
        weights,
    });
    (output, saved)
}

/// Gradients from the loss's gradient with respect to the pooled output.
pub fn backward(saved: &Saved, grad_output: &[f32], want_input: bool) -> Gradients {
    let shape = saved.shape;
    assert_eq!(grad_output.len(), shape.batch * shape.pooled_len());
    let (ph, pw) = shape.pooled();
    let sums = || vec![0.0f32; shape.weight_len() + shape.filters];
    let per_image =
        |scratch: &mut Scratch, b: usize, input_grad: Option<&mut [f32]>, sums: &mut [f32]| {
            let grad = &grad_output[b * shape.pooled_len()..][..shape.pooled_len()];
            let winners = &saved.winners[b * shape.pooled_len()..][..shape.pooled_len()];
            let padded = &saved.padded[b * shape.padded_len()..][..shape.padded_len()];
            let grad_channels_last = sized(&mut scratch.pooled, shape.pooled_len());
            transpose(grad, shape.filters, ph * pw, grad_channels_last);
            let conv_grad = zeroed(&mut scratch.conv, shape.rows() * shape.filters);
            unpool(shape, grad_channels_last, winners, conv_grad);
            let (weight_sums, bias_sums) = sums.split_at_mut(shape.weight_len());
            for row in conv_grad.chunks_exact(shape.filters) {
                for (sum, g) in bias_sums.iter_mut().zip(row) {
                    *sum += g;
                }
            }
            weight_gradient(shape, padded, conv_grad, weight_sums);
            if let Some(input_grad) = input_grad {
                let products = sized(&mut scratch.products, shape.rows() * 4 * shape.channels);
                let padded_grad = zeroed(&mut scratch.padded, shape.padded_len());
                input_gradient(
                    shape,
                    conv_grad,
                    &saved.weights,
                    products,
                    padded_grad,
                    input_grad,
                );
            }
        };
    let add = |mut a: Vec<f32>, b: Vec<f32>| {
        a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
        a
    };
    let fold = |(mut scratch, mut sums): (Scratch, Vec<f32>),
                (b, input_grad): (usize, Option<&mut [f32]>)| {
        per_image(&mut scratch, b, input_grad, &mut sums);
        (scratch, sums)
    };
    let init = || (Scratch::default(), sums());
    let (input, sums) = if want_input {
        let mut input = vec![0.0; shape.batch * shape.image_len()];
        let sums = input
            .par_chunks_mut(shape.image_len())
            .enumerate()
            .map(|(b, grad)| (b, Some(grad)))
            .fold(init, fold)
            .map(|(_, sums)| sums)
            .reduce(sums, add);
        (Some(input), sums)
    } else {
        let sums = (0..shape.batch)
            .into_par_iter()
            .map(|b| (b, None))
            .fold(init, fold)
            .map(|(_, sums)| sums)
            .reduce(sums, add);
        (None, sums)
    };
    let (weight_sums, bias) = sums.split_at(shape.weight_len());
    Gradients {
        input,
        weight: burn_weights(shape, weight_sums),
        bias: bias.to_vec(),
    }
}

/// `dst[j][i] = src[i][j]` for `src` of `rows x cols`, eight source rows at a time so that
/// reads stay in a few cache lines and writes are runs of eight.
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const BLOCK: usize = 8;
    let full = rows / BLOCK * BLOCK;
    for i0 in (0..full).step_by(BLOCK) {
        let block: [&[f32]; BLOCK] = std::array::from_fn(|k| &src[(i0 + k) * cols..][..cols]);
        for j in 0..cols {
            let out = &mut dst[j * rows + i0..][..BLOCK];
            for (o, row) in out.iter_mut().zip(&block) {
                *o = row[j];
            }
        }
    }
    for i in full..rows {
        for (j, value) in src[i * cols..][..cols].iter().enumerate() {
            dst[j * rows + i] = *value;
        }
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

fn to_padded_channels_last(shape: ConvPoolShape, image: &[f32], padded: &mut [f32]) {
    let (h, w, c) = (shape.height, shape.width, shape.channels);
    let (_, wp) = shape.padded();
    padded.fill(0.0);
    for (channel, plane) in image.chunks_exact(h * w).enumerate() {
        for (row, padded_row) in plane.chunks_exact(w).zip(padded.chunks_exact_mut(wp * c)) {
            for (value, pixel) in row.iter().zip(padded_row[channel..].iter_mut().step_by(c)) {
                *pixel = *value;
            }
        }
    }
}

/// `dst (m x n) += lhs (m x k) * rhs (k x n)`, or `=` when `!accumulate`, with explicit
/// strides `(row, column)` for each operand.
#[allow(clippy::too_many_arguments)]
fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_strides: (usize, usize),
    accumulate: bool,
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
) {
    let last =
        |(rs, cs): (usize, usize), rows: usize, cols: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(last(dst_strides, m, n) < dst.len());
    assert!(last(lhs_strides, m, k) < lhs.len());
    assert!(last(rhs_strides, k, n) < rhs.len());
    // SAFETY: the asserts above keep every element gemm touches inside the three slices, and
    // `dst` is borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_strides.1 as isize,
            dst_strides.0 as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_strides.1 as isize,
            lhs_strides.0 as isize,
            rhs.as_ptr(),
            rhs_strides.1 as isize,
            rhs_strides.0 as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
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
        );
    }
}

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
        );
    }
}

/// One image's gradient with respect to its input, channels-first: one product gives each
/// convolution row's contribution to its four input pixels, which are then added in place.
fn input_gradient(
    shape: ConvPoolShape,
    conv_grad: &[f32],
    weights: &[f32],
    products: &mut [f32],
    padded_grad: &mut [f32],
    input_grad: &mut [f32],
) {
    let (h, w, c, f, rows) = (
        shape.height,
        shape.width,
        shape.channels,
        shape.filters,
        shape.rows(),
    );
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
    );
    for (p, row) in products.chunks_exact(4 * c).enumerate() {
        for (k, part) in row.chunks_exact(c).enumerate() {
            let pixel = p + (k / 2) * wp + k % 2;
            for (sum, value) in padded_grad[pixel * c..][..c].iter_mut().zip(part) {
                *sum += value;
            }
        }
    }
    for (channel, plane) in input_grad.chunks_exact_mut(h * w).enumerate() {
        for (row, padded_row) in plane
            .chunks_exact_mut(w)
            .zip(padded_grad.chunks_exact(wp * c))
        {
            for (value, pixel) in row.iter_mut().zip(padded_row[channel..].iter().step_by(c)) {
                *value = *pixel;
            }
        }
    }
}
