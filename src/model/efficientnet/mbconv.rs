//! An MBConv block of EfficientNet-Lite for training on the CPU: 1x1 expansion with ReLU6,
//! depthwise convolution with ReLU6, 1x1 projection, the residual added, forward and backward,
//! on channels-last `f32` images `[batch, height, width, channels]`.
//!
//! Why by hand: on burn's layers a block is nine operations (three convolutions, three batch
//! norms, two clamps, an add), each a pass over memory in burn's channels-first layout, and the
//! grouped depthwise convolution, forward and backward, is most of a training step. Here the
//! batch norms come folded into the convolutions (the caller folds them with burn's operations,
//! so autodiff carries their gradients back to the scale and shift), the 1x1 convolutions are
//! matrix products over the pixels, bias and ReLU6 are applied in place, and the depthwise
//! convolution reads the unpadded image and skips the taps outside it. The forward pass keeps
//! the expanded and the depthwise activations; the backward pass masks the gradients with
//! them (ReLU6 lets a gradient through where its output is strictly between 0 and 6). Photos are
//! spread over rayon's threads, each thread summing its own weight gradients.

use rayon::prelude::*;

use crate::model::kernels::{DepthwiseShape, Parallelism, depthwise_relu6, matmul, sum_rows, wide};

/// The shapes of one block on one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockShape {
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub inputs: usize,
    /// Channels the depthwise convolution sees: `inputs` times the expansion.
    pub hidden: usize,
    pub outputs: usize,
    pub kernel: usize,
    pub stride: usize,
    /// Whether a 1x1 expansion comes first (EfficientNet's first block has none).
    pub expand: bool,
}

impl BlockShape {
    fn depthwise(&self) -> DepthwiseShape {
        DepthwiseShape {
            height: self.height,
            width: self.width,
            channels: self.hidden,
            kernel: self.kernel,
            stride: self.stride,
        }
    }

    /// Rows and columns of the output.
    pub fn output(&self) -> (usize, usize) {
        self.depthwise().output()
    }

    /// The input is added to the output when the block keeps its shape.
    pub fn residual(&self) -> bool {
        self.stride == 1 && self.inputs == self.outputs
    }

    fn input_pixels(&self) -> usize {
        self.height * self.width
    }

    fn output_pixels(&self) -> usize {
        let (h, w) = self.output();
        h * w
    }

    fn input_len(&self) -> usize {
        self.input_pixels() * self.inputs
    }

    fn expanded_len(&self) -> usize {
        if self.expand {
            self.input_pixels() * self.hidden
        } else {
            0
        }
    }

    fn depthwise_len(&self) -> usize {
        self.output_pixels() * self.hidden
    }

    /// Values per photo of the output `[height, width, outputs]`.
    pub fn output_len(&self) -> usize {
        self.output_pixels() * self.outputs
    }
}

/// A block's weights with the batch norms folded in, or their gradients: `(weights, bias)` of
/// each layer, 1x1 weights `[inputs, outputs]`, depthwise weights `[kernel * kernel, channels]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockParams {
    pub expand: Option<(Vec<f32>, Vec<f32>)>,
    pub depthwise: (Vec<f32>, Vec<f32>),
    pub project: (Vec<f32>, Vec<f32>),
}

impl BlockParams {
    fn zeros_like(&self) -> Self {
        let zeros = |(w, b): &(Vec<f32>, Vec<f32>)| (vec![0.0; w.len()], vec![0.0; b.len()]);
        BlockParams {
            expand: self.expand.as_ref().map(zeros),
            depthwise: zeros(&self.depthwise),
            project: zeros(&self.project),
        }
    }

    fn layers_mut(&mut self) -> impl Iterator<Item = &mut (Vec<f32>, Vec<f32>)> {
        self.expand
            .iter_mut()
            .chain([&mut self.depthwise, &mut self.project])
    }

    fn add(mut self, mut other: Self) -> Self {
        for (mine, theirs) in self.layers_mut().zip(other.layers_mut()) {
            add_to(&mut mine.0, &theirs.0);
            add_to(&mut mine.1, &theirs.1);
        }
        self
    }

    fn check(&self, shape: &BlockShape) {
        let BlockShape {
            inputs,
            hidden,
            outputs,
            kernel,
            ..
        } = *shape;
        let sizes = |(w, b): &(Vec<f32>, Vec<f32>)| (w.len(), b.len());
        assert_eq!(
            self.expand.as_ref().map(sizes),
            shape.expand.then_some((inputs * hidden, hidden))
        );
        assert_eq!(sizes(&self.depthwise), (kernel * kernel * hidden, hidden));
        assert_eq!(sizes(&self.project), (hidden * outputs, outputs));
        assert!(shape.expand || hidden == inputs);
    }
}

/// What the backward pass needs from the forward pass.
#[derive(Debug)]
pub struct Saved {
    pub shape: BlockShape,
    params: BlockParams,
    input: Vec<f32>,
    /// After the expansion's ReLU6, `[batch, height, width, hidden]`; empty without expansion.
    expanded: Vec<f32>,
    /// After the depthwise ReLU6, `[batch, out height, out width, hidden]`.
    depthwise: Vec<f32>,
}

/// Gradients of the loss with respect to a block's input and its folded parameters.
#[derive(Debug)]
pub struct Gradients {
    /// `None` when not asked for.
    pub input: Option<Vec<f32>>,
    pub params: BlockParams,
}

/// The block's output `[batch, out height, out width, outputs]` for `input`
/// `[batch, height, width, inputs]`; with `keep`, also what [`backward`] needs.
pub fn forward(
    shape: BlockShape,
    input: Vec<f32>,
    params: BlockParams,
    keep: bool,
) -> (Vec<f32>, Option<Saved>) {
    params.check(&shape);
    assert_eq!(input.len(), shape.batch * shape.input_len());
    let mut output = vec![0.0; shape.batch * shape.output_len()];
    let mut expanded = vec![0.0; shape.batch * shape.expanded_len()];
    let mut depthwise = vec![0.0; shape.batch * shape.depthwise_len()];
    let mut expanded_photos: Vec<Option<&mut [f32]>> = if shape.expand {
        expanded
            .chunks_exact_mut(shape.expanded_len())
            .map(Some)
            .collect()
    } else {
        (0..shape.batch).map(|_| None).collect()
    };
    output
        .par_chunks_exact_mut(shape.output_len())
        .zip(depthwise.par_chunks_exact_mut(shape.depthwise_len()))
        .zip(expanded_photos.par_iter_mut())
        .enumerate()
        .for_each(|(i, ((out, dw), expanded))| {
            let x = &input[i * shape.input_len()..][..shape.input_len()];
            photo_forward(&shape, &params, x, expanded.as_deref_mut(), dw, out);
        });
    drop(expanded_photos);
    let saved = keep.then_some(Saved {
        shape,
        params,
        input,
        expanded,
        depthwise,
    });
    (output, saved)
}

fn photo_forward(
    shape: &BlockShape,
    params: &BlockParams,
    x: &[f32],
    expanded: Option<&mut [f32]>,
    depthwise: &mut [f32],
    out: &mut [f32],
) {
    let BlockShape {
        inputs,
        hidden,
        outputs,
        ..
    } = *shape;
    let hidden_input: &[f32] = match (expanded, &params.expand) {
        (Some(expanded), Some((weights, bias))) => {
            let pixels = shape.input_pixels();
            matmul(
                (pixels, hidden, inputs),
                expanded,
                (hidden, 1),
                false,
                x,
                (inputs, 1),
                weights,
                (hidden, 1),
                Parallelism::None,
            );
            bias_relu6(expanded, bias);
            expanded
        }
        _ => x,
    };
    let (weights, bias) = &params.depthwise;
    depthwise_relu6(
        shape.depthwise(),
        hidden_input,
        0,
        weights,
        bias,
        0,
        depthwise,
    );
    let (weights, bias) = &params.project;
    matmul(
        (shape.output_pixels(), outputs, hidden),
        out,
        (outputs, 1),
        false,
        depthwise,
        (hidden, 1),
        weights,
        (outputs, 1),
        Parallelism::None,
    );
    add_rows(out, bias);
    if shape.residual() {
        add_to(out, x);
    }
}

/// Buffers one thread reuses from photo to photo in [`backward`].
struct Scratch {
    /// The gradient at the depthwise output, then masked by its ReLU6.
    depthwise: Vec<f32>,
    /// The gradient at the expanded activations.
    expanded: Vec<f32>,
}

/// The gradients of a block from the gradient of its output; the input's only `want_input`.
pub fn backward(saved: &Saved, grad_output: &[f32], want_input: bool) -> Gradients {
    let shape = saved.shape;
    assert_eq!(grad_output.len(), shape.batch * shape.output_len());
    let mut grad_input = vec![0.0; shape.batch * shape.input_len()];
    let params = grad_input
        .par_chunks_exact_mut(shape.input_len())
        .enumerate()
        .fold(
            || {
                let scratch = Scratch {
                    depthwise: vec![0.0; shape.depthwise_len()],
                    expanded: vec![0.0; shape.expanded_len()],
                };
                (saved.params.zeros_like(), scratch)
            },
            |(mut grads, mut scratch), (i, grad_x)| {
                photo_backward(
                    saved,
                    i,
                    grad_output,
                    want_input,
                    grad_x,
                    &mut grads,
                    &mut scratch,
                );
                (grads, scratch)
            },
        )
        .map(|(grads, _)| grads)
        .reduce_with(BlockParams::add)
        .unwrap_or_else(|| saved.params.zeros_like());
    Gradients {
        input: want_input.then_some(grad_input),
        params,
    }
}

#[allow(clippy::too_many_arguments)]
fn photo_backward(
    saved: &Saved,
    i: usize,
    grad_output: &[f32],
    want_input: bool,
    grad_x: &mut [f32],
    grads: &mut BlockParams,
    scratch: &mut Scratch,
) {
    let shape = &saved.shape;
    let BlockShape {
        inputs,
        hidden,
        outputs,
        ..
    } = *shape;
    fn photo(values: &[f32], i: usize, len: usize) -> &[f32] {
        &values[i * len..][..len]
    }
    let x = photo(&saved.input, i, shape.input_len());
    let depthwise = photo(&saved.depthwise, i, shape.depthwise_len());
    let grad_y = photo(grad_output, i, shape.output_len());
    let pixels_out = shape.output_pixels();

    // Projection: dW = depthwise^T grad_y, db = column sums, grad at its input = grad_y W^T.
    matmul(
        (hidden, outputs, pixels_out),
        &mut grads.project.0,
        (outputs, 1),
        true,
        depthwise,
        (1, hidden),
        grad_y,
        (outputs, 1),
        Parallelism::None,
    );
    sum_rows(grad_y, &mut grads.project.1, None);
    let grad_dw = &mut scratch.depthwise[..];
    matmul(
        (pixels_out, hidden, outputs),
        grad_dw,
        (hidden, 1),
        false,
        grad_y,
        (outputs, 1),
        &saved.params.project.0,
        (1, outputs),
        Parallelism::None,
    );
    mask_relu6(grad_dw, depthwise);
    sum_rows(grad_dw, &mut grads.depthwise.1, None);

    // Depthwise: into the expanded activations' gradient, or straight into the input's.
    let Some((expand_weights, _)) = &saved.params.expand else {
        grad_x.fill(0.0);
        depthwise_backward(
            shape.depthwise(),
            x,
            &saved.params.depthwise.0,
            grad_dw,
            grad_x,
            &mut grads.depthwise.0,
        );
        if shape.residual() {
            add_to(grad_x, grad_y);
        }
        return;
    };
    let expanded = photo(&saved.expanded, i, shape.expanded_len());
    let grad_expanded = &mut scratch.expanded[..];
    grad_expanded.fill(0.0);
    depthwise_backward(
        shape.depthwise(),
        expanded,
        &saved.params.depthwise.0,
        grad_dw,
        grad_expanded,
        &mut grads.depthwise.0,
    );
    mask_relu6(grad_expanded, expanded);

    // Expansion.
    let (grad_weights, grad_bias) = grads.expand.as_mut().expect("the shapes were checked");
    let pixels_in = shape.input_pixels();
    matmul(
        (inputs, hidden, pixels_in),
        grad_weights,
        (hidden, 1),
        true,
        x,
        (1, inputs),
        grad_expanded,
        (hidden, 1),
        Parallelism::None,
    );
    sum_rows(grad_expanded, grad_bias, None);
    if want_input {
        matmul(
            (pixels_in, inputs, hidden),
            grad_x,
            (inputs, 1),
            false,
            grad_expanded,
            (hidden, 1),
            expand_weights,
            (1, hidden),
            Parallelism::None,
        );
        if shape.residual() {
            add_to(grad_x, grad_y);
        }
    }
}

wide! {
/// The depthwise convolution's backward pass for one photo: adds to `grad_input`
/// (`[height, width, channels]`) and `grad_weights` (`[kernel * kernel, channels]`) what
/// `grad_output` (`[out height, out width, channels]`, already through the ReLU6) sends back
/// through each tap that lands inside the image.
fn depthwise_backward(
    shape: DepthwiseShape,
    input: &[f32],
    weights: &[f32],
    grad_output: &[f32],
    grad_input: &mut [f32],
    grad_weights: &mut [f32],
) {
    let DepthwiseShape { height: h, width: w, channels: c, kernel: k, .. } = shape;
    let (rows, columns) = shape.output();
    let (top, left) = shape.padding();
    for oy in 0..rows {
        let (y, ky) = shape.taps(oy, top, h);
        for ox in 0..columns {
            let (x, kx) = shape.taps(ox, left, w);
            let g = &grad_output[(oy * columns + ox) * c..][..c];
            for (dy, ty) in ky.clone().enumerate() {
                for (dx, tx) in kx.clone().enumerate() {
                    let at = ((y + dy) * w + x + dx) * c;
                    let tap = (ty * k + tx) * c;
                    let v = &input[at..][..c];
                    let gi = &mut grad_input[at..][..c];
                    let t = &weights[tap..][..c];
                    let gt = &mut grad_weights[tap..][..c];
                    for j in 0..c {
                        gt[j] += g[j] * v[j];
                        gi[j] += g[j] * t[j];
                    }
                }
            }
        }
    }
}
}

wide! {
/// `min(max(row + bias, 0), 6)` in place for each row of `values`.
fn bias_relu6(values: &mut [f32], bias: &[f32]) {
    for row in values.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v = (*v + b).clamp(0.0, 6.0);
        }
    }
}
}

wide! {
/// Adds `bias` to each row of `values`.
fn add_rows(values: &mut [f32], bias: &[f32]) {
    for row in values.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}
}

wide! {
/// `values += other`, element by element.
fn add_to(values: &mut [f32], other: &[f32]) {
    for (v, o) in values.iter_mut().zip(other) {
        *v += o;
    }
}
}

wide! {
/// Zeroes the gradients where the ReLU6 output `activations` sat at 0 or 6.
fn mask_relu6(grads: &mut [f32], activations: &[f32]) {
    for (g, a) in grads.iter_mut().zip(activations) {
        if !(*a > 0.0 && *a < 6.0) {
            *g = 0.0;
        }
    }
}
}
