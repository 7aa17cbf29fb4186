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
    let per_image = |(b, (out, won)): (usize, (&mut [f32], &mut [u8])), padded: &mut [f32]| {
        let image = &input[b * shape.image_len()..][..shape.image_len()];
        to_padded_channels_last(shape, image, padded);
        let conv = convolve(shape, padded, &weights);
        pool(shape, &conv, bias, out, won);
    };
    let images = output
        .par_chunks_mut(shape.pooled_len())
        .zip(winners.par_chunks_mut(shape.pooled_len()))
        .enumerate();
    if keep {
        images
            .zip(padded.par_chunks_mut(shape.padded_len()))
            .for_each(|(image, padded)| per_image(image, padded));
    } else {
        images.for_each_init(
            || vec![0.0; shape.padded_len()],
            |padded, image| per_image(image, padded),
        );
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
    let sums = || vec![0.0f32; shape.weight_len() + shape.filters];
    let per_image = |b: usize, input_grad: Option<&mut [f32]>, sums: &mut Vec<f32>| {
        let grad = &grad_output[b * shape.pooled_len()..][..shape.pooled_len()];
        let winners = &saved.winners[b * shape.pooled_len()..][..shape.pooled_len()];
        let padded = &saved.padded[b * shape.padded_len()..][..shape.padded_len()];
        let conv_grad = unpool(shape, grad, winners);
        let (weight_sums, bias_sums) = sums.split_at_mut(shape.weight_len());
        for row in conv_grad.chunks_exact(shape.filters) {
            for (sum, g) in bias_sums.iter_mut().zip(row) {
                *sum += g;
            }
        }
        weight_gradient(shape, padded, &conv_grad, weight_sums);
        if let Some(input_grad) = input_grad {
            input_gradient(shape, &conv_grad, &saved.weights, input_grad);
        }
    };
    let add = |mut a: Vec<f32>, b: Vec<f32>| {
        a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
        a
    };
    let (input, sums) = if want_input {
        let mut input = vec![0.0; shape.batch * shape.image_len()];
        let sums = input
            .par_chunks_mut(shape.image_len())
            .enumerate()
            .fold(sums, |mut sums, (b, input_grad)| {
                per_image(b, Some(input_grad), &mut sums);
                sums
            })
            .reduce(sums, add);
        (Some(input), sums)
    } else {
        let sums = (0..shape.batch)
            .into_par_iter()
            .fold(sums, |mut sums, b| {
                per_image(b, None, &mut sums);
                sums
            })
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

fn gemm_weights(shape: ConvPoolShape, weight: &[f32]) -> Vec<f32> {
    let (c, f) = (shape.channels, shape.filters);
    let mut out = vec![0.0; shape.weight_len()];
    for filter in 0..f {
        for channel in 0..c {
            for ky in 0..2 {
                for kx in 0..2 {
                    out[(ky * 2 * c + kx * c + channel) * f + filter] =
                        weight[((filter * c + channel) * 2 + ky) * 2 + kx];
                }
            }
        }
    }
    out
}

fn burn_weights(shape: ConvPoolShape, gemm_layout: &[f32]) -> Vec<f32> {
    let (c, f) = (shape.channels, shape.filters);
    let mut out = vec![0.0; shape.weight_len()];
    for filter in 0..f {
        for channel in 0..c {
            for ky in 0..2 {
                for kx in 0..2 {
                    out[((filter * c + channel) * 2 + ky) * 2 + kx] =
                        gemm_layout[(ky * 2 * c + kx * c + channel) * f + filter];
                }
            }
        }
    }
    out
}

fn to_padded_channels_last(shape: ConvPoolShape, image: &[f32], padded: &mut [f32]) {
    let (h, w, c) = (shape.height, shape.width, shape.channels);
    let (_, wp) = shape.padded();
    padded.fill(0.0);
    for y in 0..h {
        for x in 0..w {
            let pixel = &mut padded[(y * wp + x) * c..][..c];
            for (channel, value) in pixel.iter_mut().enumerate() {
                *value = image[(channel * h + y) * w + x];
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
fn convolve(shape: ConvPoolShape, padded: &[f32], weights: &[f32]) -> Vec<f32> {
    let (c, f, rows) = (shape.channels, shape.filters, shape.rows());
    let (_, wp) = shape.padded();
    let mut conv = vec![0.0; rows * f];
    for ky in 0..2 {
        matmul(
            (rows, f, 2 * c),
            &mut conv,
            (f, 1),
            ky == 1,
            &padded[ky * wp * c..],
            (c, 1),
            &weights[ky * 2 * c * f..][..2 * c * f],
            (f, 1),
        );
    }
    conv
}

/// Bias, ReLU and max pooling of one image's convolution, written channels-first.
fn pool(shape: ConvPoolShape, conv: &[f32], bias: &[f32], out: &mut [f32], winners: &mut [u8]) {
    let f = shape.filters;
    let (_, wp) = shape.padded();
    let (ph, pw) = shape.pooled();
    for py in 0..ph {
        for px in 0..pw {
            let corner = (2 * py) * wp + 2 * px;
            let window =
                [corner, corner + 1, corner + wp, corner + wp + 1].map(|p| &conv[p * f..][..f]);
            for filter in 0..f {
                let (mut best, mut won) = (window[0][filter], 0u8);
                for (i, pixel) in window.iter().enumerate().skip(1) {
                    if pixel[filter] > best {
                        best = pixel[filter];
                        won = i as u8;
                    }
                }
                let value = best + bias[filter];
                let at = (filter * ph + py) * pw + px;
                if value > 0.0 {
                    out[at] = value;
                    winners[at] = won;
                } else {
                    out[at] = 0.0;
                    winners[at] = NO_WINNER;
                }
            }
        }
    }
}

/// The gradient with respect to the convolution's output, `[rows, filters]`: each pooled
/// gradient goes to the pixel that won its window.
fn unpool(shape: ConvPoolShape, grad: &[f32], winners: &[u8]) -> Vec<f32> {
    let f = shape.filters;
    let (_, wp) = shape.padded();
    let (ph, pw) = shape.pooled();
    let mut conv_grad = vec![0.0; shape.rows() * f];
    for filter in 0..f {
        for py in 0..ph {
            for px in 0..pw {
                let at = (filter * ph + py) * pw + px;
                let won = winners[at];
                if won != NO_WINNER {
                    let (dy, dx) = (usize::from(won / 2), usize::from(won % 2));
                    let p = (2 * py + dy) * wp + 2 * px + dx;
                    conv_grad[p * f + filter] = grad[at];
                }
            }
        }
    }
    conv_grad
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

/// One image's gradient with respect to its input, channels-first.
fn input_gradient(
    shape: ConvPoolShape,
    conv_grad: &[f32],
    weights: &[f32],
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
    let mut padded_grad = vec![0.0; shape.padded_len()];
    // One product per kernel pixel keeps the destination rows from overlapping.
    for ky in 0..2 {
        for kx in 0..2 {
            matmul(
                (rows, c, f),
                &mut padded_grad[(ky * wp + kx) * c..],
                (c, 1),
                true,
                conv_grad,
                (f, 1),
                &weights[(ky * 2 * c + kx * c) * f..],
                (1, f),
            );
        }
    }
    for y in 0..h {
        for x in 0..w {
            for channel in 0..c {
                input_grad[(channel * h + y) * w + x] = padded_grad[(y * wp + x) * c + channel];
            }
        }
    }
}
