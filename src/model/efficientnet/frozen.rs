//! EfficientNet-Lite0 with frozen weights, for burn's CPU backend: what feature extraction,
//! prediction and serving run, several times faster than the same network on burn's layers.
//!
//! Each batch norm is folded into the convolution before it (its scale into the weights, its
//! shift into a bias), which is exact arithmetic up to rounding. Activations stay channels-last
//! from the stem to the pooling, so a 1x1 convolution is a product of the image's pixels by
//! weights packed once (`kernels::PackedPointwise`), its bias, ReLU6 or residual applied to the
//! sums in registers before they are stored; the stem is the same product on 27-value patches.
//! The depthwise convolution reads the unpadded image and skips the
//! taps that fall outside it. Each block runs a strip of output rows at a time, so that the
//! expanded channels stay in the cache. Buffers are reused from block to block and pass to
//! pass. A batch is spread over the threads a photo at a time; a single photo by strips, and
//! on its small late images by the block's hidden channels: each thread expands, convolves
//! and projects its share of them, and the partial projections are added, so the threads
//! meet once a block instead of after every layer.

use std::sync::Mutex;

use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use rayon::prelude::*;

use super::{EfficientNetLite, FEATURES, GEM_FLOOR, GEM_POWER, Pooling};
use crate::model::kernels::{
    DepthwiseShape, Epilogue, PANEL, PackedPointwise, depthwise_relu6, sum_rows, transpose,
};

/// Output values per tile of a 1x1 convolution spread over the threads by pixels (and of the
/// stem, whose patches are gathered per tile): small enough to stay in a core's L2 cache.
const TILE_VALUES: usize = 32 * 1024;

/// A tile has at least this many rows (pixels), whatever the channel count: a task long
/// enough to pay for handing it to a thread.
const MIN_TILE_ROWS: usize = 128;

/// Values of a strip's expanded rows in [`Block::run_strips`]: they stay in a core's L2 cache
/// between the expansion that writes them and the depthwise convolution that reads them.
const STRIP_VALUES: usize = 128 * 1024;

/// A photo split over the threads runs the blocks on images of at most this many pixels by
/// shares of their hidden channels (or, in a block that cannot be cut so, a layer at a time),
/// rather than by strips: strips of so few rows would expand too many rows twice.
const LAYERED_PIXELS: usize = 400;

/// A single photo's 1x1 convolution with fewer than `inputs x outputs / SMALL_LAYER_RATIO`
/// pixels is split over the threads by output channels rather than by pixels: its weights
/// outweigh its pixels, and each thread then reads only its share of them. Not when it has
/// fewer than 4 pairs of panels a thread, too few to share out evenly (80 outputs are 3 pairs,
/// which 2 threads took 2 and 1).
const SMALL_LAYER_RATIO: usize = 64;

/// What a pass returns for each photo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The activations after the stem and this many blocks, `[channels, height, width]`.
    Activations(usize),
    /// The head's feature map, `[1280, height, width]`.
    Map,
    /// The pooled features, `[1280]`.
    Pooled(Pooling),
    /// The pooled features, then those of the network's ImageNet tail run on the same
    /// activations, `[2, 1280]`.
    WithImagenet(Pooling),
}

impl Output {
    /// How many blocks of a network with `all` a pass for this output runs.
    fn blocks(self, all: usize) -> usize {
        match self {
            Output::Activations(blocks) => blocks,
            Output::Map | Output::Pooled(_) | Output::WithImagenet(_) => all,
        }
    }
}

/// A 1x1 convolution with its batch norm folded in: `[pixels, inputs] x [inputs, outputs]`.
#[derive(Debug)]
struct Pointwise {
    packed: PackedPointwise,
}

/// A depthwise convolution with its batch norm folded in.
#[derive(Debug)]
struct Depthwise {
    kernel: usize,
    stride: usize,
    /// `[kernel * kernel, channels]`.
    weights: Vec<f32>,
    bias: Vec<f32>,
}

#[derive(Debug)]
struct Block {
    expand: Option<Pointwise>,
    depthwise: Depthwise,
    project: Pointwise,
    residual: bool,
    /// The block cut by its hidden channels into one share per thread (see
    /// [`Block::run_shares`]); empty where there is no expansion or a single thread.
    shares: Vec<HiddenShare>,
}

/// Some of a block's hidden channels, with the weights that make and use them: the expansion's
/// output channels, the depthwise convolution's channels, the projection's input channels
/// (its bias in the first share only, so that the shares' sums add up to the projection).
#[derive(Debug)]
struct HiddenShare {
    expand: PackedPointwise,
    depthwise: Depthwise,
    project: PackedPointwise,
}

/// The 3x3 stride-2 stem on the RGB input, as a matrix product of 27-value patches.
#[derive(Debug)]
struct Stem {
    /// `[27, 32]`, patch values in (channel, row, column) order.
    patches: PackedPointwise,
}

/// The network's ImageNet tail ([`super::ImagenetTail`]) folded like the blocks it copies,
/// from the block where it branches off.
#[derive(Debug)]
struct Tail {
    from: usize,
    blocks: Vec<Block>,
    head: Pointwise,
}

/// EfficientNet-Lite0's weights folded for inference on the CPU.
#[derive(Debug)]
pub struct FrozenLite {
    stem: Stem,
    blocks: Vec<Block>,
    head: Pointwise,
    tail: Option<Tail>,
    /// Buffers left by earlier passes, one set per thread that ran: growing and first touching
    /// tens of megabytes costs more than a small batch's arithmetic.
    scratch: Mutex<Vec<Scratch>>,
}

/// Buffers one thread reuses: the current activations, the next ones, the expanded ones and
/// the depthwise output.
#[derive(Debug, Default)]
struct Scratch {
    x: Vec<f32>,
    next: Vec<f32>,
    hidden: Vec<f32>,
    depthwise: Vec<f32>,
}

fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .expect("weights are f32")
}

/// A convolution's weights (burn's `[outputs, inputs, kh, kw]`) scaled by its batch norm, and
/// the bias that the norm's shift leaves: `(weights, bias)`.
fn fold(conv: &Conv2d, bn: &BatchNorm) -> (Vec<f32>, Vec<f32>) {
    let mut weights = values(conv.weight.val());
    let [gamma, beta, mean, var] = [
        bn.gamma.val(),
        bn.beta.val(),
        bn.running_mean.value(),
        bn.running_var.value(),
    ]
    .map(values);
    let per_output = weights.len() / gamma.len();
    let mut bias = Vec::with_capacity(gamma.len());
    for (o, chunk) in weights.chunks_exact_mut(per_output).enumerate() {
        let scale = f64::from(gamma[o]) / (f64::from(var[o]) + bn.epsilon).sqrt();
        chunk
            .iter_mut()
            .for_each(|w| *w = (f64::from(*w) * scale) as f32);
        bias.push((f64::from(beta[o]) - f64::from(mean[o]) * scale) as f32);
    }
    (weights, bias)
}

/// `[rows, cols]` → `[cols, rows]`.
fn transposed(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    transpose(values, rows, cols, &mut out);
    out
}

/// A 1x1 convolution folded with its batch norm, as a matrix, before it is packed.
struct Folded {
    /// `[inputs, outputs]`.
    weights: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

impl Folded {
    fn new(conv: &Conv2d, bn: &BatchNorm) -> Self {
        let [outputs, inputs, _, _] = conv.weight.dims();
        let (weights, bias) = fold(conv, bn);
        Folded {
            weights: transposed(&weights, outputs, inputs),
            bias,
            inputs,
            outputs,
        }
    }

    fn pointwise(&self) -> Pointwise {
        Pointwise {
            packed: PackedPointwise::new(&self.weights, &self.bias, self.inputs, self.outputs),
        }
    }
}

/// The columns `range` of a row-major matrix of `cols` columns.
fn columns(values: &[f32], cols: usize, range: std::ops::Range<usize>) -> Vec<f32> {
    values
        .chunks_exact(cols)
        .flat_map(|row| &row[range.clone()])
        .copied()
        .collect()
}

impl Pointwise {
    fn inputs(&self) -> usize {
        self.packed.inputs
    }

    fn outputs(&self) -> usize {
        self.packed.outputs
    }

    /// `out = input x weights + bias` over `pixels` rows, then the `epilogue`; spread over the
    /// threads when `split`.
    fn run(&self, pixels: usize, input: &[f32], out: &mut [f32], epilogue: Epilogue, split: bool) {
        let (k, n) = (self.inputs(), self.outputs());
        let out = &mut out[..pixels * n];
        let input = &input[..pixels * k];
        let panels = self.packed.panel_count();
        if !split {
            self.packed.run(input, out, epilogue, 0..panels);
            return;
        }
        let pairs = panels.div_ceil(2);
        if pixels * SMALL_LAYER_RATIO >= k * n || pairs < 4 * rayon::current_num_threads() {
            over_rows(out, n, tile_rows(n, pixels, split), true, |first, tile| {
                let rows = tile.len() / n;
                let input = &input[first * k..][..rows * k];
                let epilogue = epilogue.at_row(first, n);
                self.packed.run(input, tile, epilogue, 0..panels);
            });
            return;
        }
        // Weights that outweigh the pixels: each thread takes some panels (pairs, as the
        // kernel computes them) for every pixel, so that it reads only its share of them.
        // A pair a job, which the threads share out as they finish.
        let out = SharedRows(out.as_mut_ptr());
        (0..pairs).into_par_iter().for_each(|pair| {
            let own = 2 * pair..(2 * pair + 2).min(panels);
            // SAFETY: `out` holds `pixels * n` values borrowed mutably by this call, and the
            // jobs' panel ranges are disjoint, so no two write the same value.
            unsafe { self.packed.run_raw(input, out.get(), pixels, epilogue, own) };
        });
    }
}

/// The output rows of a 1x1 convolution shared by threads that write disjoint columns.
#[derive(Clone, Copy)]
struct SharedRows(*mut f32);

// SAFETY: only handed to jobs that write disjoint panels of the rows (see `Pointwise::run`).
unsafe impl Send for SharedRows {}
unsafe impl Sync for SharedRows {}

impl SharedRows {
    /// The pointer, through a method so that closures capture the whole (Sync) wrapper.
    fn get(self) -> *mut f32 {
        self.0
    }
}

impl Depthwise {
    fn new(conv: &super::SameConv, bn: &BatchNorm) -> Self {
        let [channels, _, kernel, _] = conv.conv.weight.dims();
        let (weights, bias) = fold(&conv.conv, bn);
        Depthwise {
            kernel,
            stride: conv.stride,
            weights: transposed(&weights, channels, kernel * kernel),
            bias,
        }
    }
}

impl Block {
    /// The block's layers folded with their batch norms; a single photo is cut into one
    /// share per thread of the pool it is frozen on.
    fn new(b: &super::MbConv) -> Self {
        let expand = (b.expand_conv.as_ref().zip(b.bn0.as_ref()))
            .map(|(conv, bn)| Folded::new(&conv.conv, bn));
        let depthwise = Depthwise::new(&b.depthwise_conv, &b.bn1);
        let project = Folded::new(&b.project_conv.conv, &b.bn2);
        let shares = expand.as_ref().map_or_else(Vec::new, |expand| {
            HiddenShare::cut(expand, &depthwise, &project, rayon::current_num_threads())
        });
        Block {
            expand: expand.as_ref().map(Folded::pointwise),
            depthwise,
            project: project.pointwise(),
            residual: b.residual,
            shares,
        }
    }
}

impl HiddenShare {
    /// The block's hidden channels cut into `parts` shares of whole panels (so the depthwise
    /// convolution keeps its widest path), from the folded `expand` and `project` matrices;
    /// none when there are fewer panels than parts.
    fn cut(
        expand: &Folded,
        depthwise: &Depthwise,
        project: &Folded,
        parts: usize,
    ) -> Vec<HiddenShare> {
        let (inputs, hidden, outputs) = (expand.inputs, expand.outputs, project.outputs);
        let panels = hidden.div_ceil(PANEL);
        if parts < 2 || panels < parts {
            return Vec::new();
        }
        let taps = depthwise.kernel * depthwise.kernel;
        (0..parts)
            .map(|part| {
                let channels = (part * panels / parts * PANEL)
                    ..((part + 1) * panels / parts * PANEL).min(hidden);
                let width = channels.len();
                let bias = match part {
                    0 => project.bias.clone(),
                    _ => vec![0.0; outputs],
                };
                HiddenShare {
                    expand: PackedPointwise::new(
                        &columns(&expand.weights, hidden, channels.clone()),
                        &expand.bias[channels.clone()],
                        inputs,
                        width,
                    ),
                    depthwise: Depthwise {
                        kernel: depthwise.kernel,
                        stride: depthwise.stride,
                        weights: columns(
                            &depthwise.weights[..taps * hidden],
                            hidden,
                            channels.clone(),
                        ),
                        bias: depthwise.bias[channels.clone()].to_vec(),
                    },
                    project: PackedPointwise::new(
                        &project.weights[channels.start * outputs..channels.end * outputs],
                        &bias,
                        width,
                        outputs,
                    ),
                }
            })
            .collect()
    }

    /// This share's partial projection of one photo's block input `x` into `out`: its hidden
    /// channels expanded into `hidden`, convolved into `convolved`, projected with `epilogue`.
    fn run(
        &self,
        shape: DepthwiseShape,
        x: &[f32],
        (hidden, convolved): (&mut Vec<f32>, &mut Vec<f32>),
        out: &mut [f32],
        epilogue: Epilogue,
    ) {
        let shape = DepthwiseShape {
            channels: self.depthwise.bias.len(),
            ..shape
        };
        let (oh, ow) = shape.output();
        let expanded = sized(hidden, shape.height * shape.width * shape.channels);
        let panels = self.expand.panel_count();
        self.expand.run(x, expanded, Epilogue::Relu6, 0..panels);
        let dw = &self.depthwise;
        let conv = sized(convolved, oh * ow * shape.channels);
        depthwise_relu6(shape, expanded, 0, &dw.weights, &dw.bias, 0, conv);
        self.project
            .run(conv, out, epilogue, 0..self.project.panel_count());
    }
}

impl Block {
    /// The depthwise convolution's geometry on an input of `h` x `w` pixels.
    fn depthwise_shape(&self, (h, w): (usize, usize)) -> DepthwiseShape {
        DepthwiseShape {
            height: h,
            width: w,
            channels: self.depthwise.bias.len(),
            kernel: self.depthwise.kernel,
            stride: self.depthwise.stride,
        }
    }

    /// Runs the block on one photo in `s.x` (`[height, width, inputs]`) a layer at a time,
    /// each layer spread over the threads, leaving its output there; returns the output's
    /// height and width.
    fn run_layers(&self, (h, w): (usize, usize), s: &mut Scratch) -> (usize, usize) {
        let Scratch {
            x,
            next,
            hidden,
            depthwise,
        } = s;
        let channels = self.depthwise.bias.len();
        let shape = self.depthwise_shape((h, w));
        let expanded: &[f32] = match &self.expand {
            Some(expand) => {
                let out = sized(hidden, h * w * channels);
                expand.run(h * w, x, out, Epilogue::Relu6, true);
                hidden
            }
            None => x,
        };
        let (oh, ow) = shape.output();
        let rows = oh.div_ceil(4 * rayon::current_num_threads());
        let dw = &self.depthwise;
        let out = sized(depthwise, oh * ow * channels);
        over_rows(out, ow * channels, rows, true, |first, chunk| {
            depthwise_relu6(shape, expanded, 0, &dw.weights, &dw.bias, first, chunk)
        });
        let pixels = oh * ow;
        let out = sized(next, pixels * self.project.outputs());
        let epilogue = match self.residual {
            true => Epilogue::Residual(x),
            false => Epilogue::Linear,
        };
        self.project.run(pixels, depthwise, out, epilogue, true);
        std::mem::swap(x, next);
        (oh, ow)
    }

    /// Runs the block on one photo in `s.x` as [`run_layers`](Self::run_layers) does, with the
    /// work cut by [`shares`](Self::shares) instead of by layers: each thread expands, convolves
    /// and projects its share of the hidden channels for every pixel, the first into the
    /// block's output (with the bias and residual), the others into buffers from `pool` that
    /// are added to it after the one join. Returns the output's height and width.
    fn run_shares(
        &self,
        (h, w): (usize, usize),
        s: &mut Scratch,
        pool: &Mutex<Vec<Scratch>>,
    ) -> (usize, usize) {
        let shape = self.depthwise_shape((h, w));
        let (oh, ow) = shape.output();
        let len = oh * ow * self.project.outputs();
        let Scratch {
            x,
            next,
            hidden,
            depthwise,
        } = s;
        let x: &[f32] = &x[..h * w * self.inputs()];
        let out = sized(next, len);
        let epilogue = match self.residual {
            true => Epilogue::Residual(x),
            false => Epilogue::Linear,
        };
        let (first, rest) = self.shares.split_first().expect("a block cut into shares");
        let mut others: Vec<Scratch> = rest.iter().map(|_| take(pool)).collect();
        rayon::join(
            || first.run(shape, x, (hidden, depthwise), out, epilogue),
            || {
                rest.par_iter().zip(&mut others).for_each(|(share, t)| {
                    let partial = sized(&mut t.next, len);
                    share.run(
                        shape,
                        x,
                        (&mut t.hidden, &mut t.depthwise),
                        partial,
                        Epilogue::Linear,
                    );
                })
            },
        );
        for t in others {
            out.iter_mut()
                .zip(&t.next[..len])
                .for_each(|(o, p)| *o += p);
            give_back(pool, t);
        }
        std::mem::swap(&mut s.x, &mut s.next);
        (oh, ow)
    }

    /// Channels of the block's input.
    fn inputs(&self) -> usize {
        self.expand
            .as_ref()
            .map_or(self.depthwise.bias.len(), |e| e.inputs())
    }

    /// Output rows per strip of [`run_strips`](Self::run_strips): as many as keep the strip's
    /// expanded rows within [`STRIP_VALUES`].
    fn strip_rows(&self, (h, w): (usize, usize)) -> usize {
        let (k, s) = (self.depthwise.kernel, self.depthwise.stride);
        let oh = h.div_ceil(s);
        let rows_in = (STRIP_VALUES / (w * self.depthwise.bias.len())).max(k);
        ((rows_in - k) / s + 1).clamp(1, oh)
    }

    /// The block on one photo in `s.x`, a strip of output rows at a time: the input rows a
    /// strip reads are expanded, convolved and projected while they are still in the cache,
    /// instead of each layer streaming a whole image of expanded channels through memory.
    /// The expanded rows a strip shares with the one before are kept rather than expanded
    /// again (at 320 pixels, expanding them again was 15% of the network's work). When
    /// `split`, the output rows are cut into two runs of strips a thread, spread over the
    /// threads, each with buffers from `pool`. Returns the output's size.
    fn run_strips(
        &self,
        (h, w): (usize, usize),
        s: &mut Scratch,
        pool: &Mutex<Vec<Scratch>>,
        split: bool,
    ) -> (usize, usize) {
        let hidden = self.depthwise.bias.len();
        let shape = self.depthwise_shape((h, w));
        let (oh, ow) = shape.output();
        let (top, _) = shape.padding();
        let (k, stride) = (shape.kernel, shape.stride);
        let inputs = self.inputs();
        let outputs = self.project.outputs();
        let rows = self.strip_rows((h, w));
        let Scratch {
            x,
            next,
            hidden: expanded_rows,
            depthwise: convolved,
        } = s;
        let x: &[f32] = x;
        // The input rows output rows `first..last` read.
        let reads = |first: usize, last: usize| {
            let from = (first * stride).saturating_sub(top);
            (from, ((last - 1) * stride + k - top).min(h))
        };
        // Output rows from `first` on into `out`, strip after strip.
        let run = |first: usize,
                   out: &mut [f32],
                   expanded_rows: &mut Vec<f32>,
                   convolved: &mut Vec<f32>| {
            // The input rows `expanded_rows` holds, from its start.
            let mut held = 0..0;
            for (i, out) in out.chunks_mut(rows * ow * outputs).enumerate() {
                let first = first + i * rows;
                let last = first + out.len() / (ow * outputs);
                let (from, to) = reads(first, last);
                let expanded: &[f32] = match &self.expand {
                    Some(expand) => {
                        let row = w * hidden;
                        let buffer = sized(expanded_rows, (to - from).max(held.len()) * row);
                        // The rows the last strip held that this one reads move to the
                        // front; a strip that reads none of them starts the buffer over.
                        let kept = if held.contains(&from) {
                            buffer.copy_within((from - held.start) * row..held.len() * row, 0);
                            held.end - from
                        } else {
                            0
                        };
                        let new = from + kept..to;
                        expand.run(
                            new.len() * w,
                            &x[new.start * w * inputs..new.end * w * inputs],
                            &mut buffer[kept * row..(to - from) * row],
                            Epilogue::Relu6,
                            false,
                        );
                        held = from..to;
                        &buffer[..(to - from) * row]
                    }
                    None => &x[from * w * inputs..to * w * inputs],
                };
                let dw = &self.depthwise;
                let conv = sized(convolved, (last - first) * ow * hidden);
                depthwise_relu6(shape, expanded, from, &dw.weights, &dw.bias, first, conv);
                let epilogue = match self.residual {
                    // Stride 1 and as many outputs as inputs: the same pixels of the input.
                    true => Epilogue::Residual(&x[first * ow * outputs..last * ow * outputs]),
                    false => Epilogue::Linear,
                };
                self.project
                    .run((last - first) * ow, conv, out, epilogue, false);
            }
        };
        let out = sized(next, oh * ow * outputs);
        if split {
            // Two runs of equal height a thread, each run strips of up to `rows`. Runs of
            // whole strips left the last run short (block 0 at 224 pixels: 34, 34, 34 and 10
            // rows, 68 for one thread and 44 for the other). Only each run's first strip
            // expands rows that another strip expands too.
            let run_rows = oh.div_ceil(2 * rayon::current_num_threads());
            out.par_chunks_mut(run_rows * ow * outputs)
                .enumerate()
                .for_each(|(i, out)| {
                    let mut t = take(pool);
                    run(i * run_rows, out, &mut t.hidden, &mut t.depthwise);
                    give_back(pool, t);
                });
        } else {
            run(0, out, expanded_rows, convolved);
        }
        std::mem::swap(&mut s.x, &mut s.next);
        (oh, ow)
    }
}

/// A set of buffers from `pool`, or a new one.
fn take(pool: &Mutex<Vec<Scratch>>) -> Scratch {
    let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
    pool.pop().unwrap_or_default()
}

fn give_back(pool: &Mutex<Vec<Scratch>>, s: Scratch) {
    let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
    pool.push(s);
}

impl Stem {
    const CHANNELS: usize = super::STEM_CHANNELS;
    const PATCH: usize = 27;

    fn geometry(h: usize, w: usize) -> DepthwiseShape {
        DepthwiseShape {
            height: h,
            width: w,
            channels: 3,
            kernel: 3,
            stride: 2,
        }
    }

    /// The stem's output `[h / 2, w / 2, 32]` (rounded up) in `out`, from one planar RGB image.
    fn run(&self, image: &[f32], (h, w): (usize, usize), out: &mut Vec<f32>, split: bool) {
        let shape = Self::geometry(h, w);
        let (oh, ow) = shape.output();
        let (top, left) = shape.padding();
        let n = Self::CHANNELS;
        let rows = tile_rows(n, oh * ow, split);
        over_rows(sized(out, oh * ow * n), n, rows, split, |first, tile| {
            let m = tile.len() / n;
            // The padding's taps stay zero.
            let mut patches = vec![0.0; m * Self::PATCH];
            for (i, patch) in patches.chunks_exact_mut(Self::PATCH).enumerate() {
                let (oy, ox) = ((first + i) / ow, (first + i) % ow);
                let (y, ky) = shape.taps(oy, top, h);
                let (x, kx) = shape.taps(ox, left, w);
                if ky.len() == 3 && kx.len() == 3 {
                    // Inside the image: copies of a known length, which compile to moves.
                    for (tap, values) in patch.chunks_exact_mut(3).enumerate() {
                        let (channel, dy) = (tap / 3, tap % 3);
                        let at = (channel * h + y + dy) * w + x;
                        let row: &[f32; 3] = image[at..at + 3].try_into().expect("3 taps");
                        values.copy_from_slice(row);
                    }
                    continue;
                }
                for channel in 0..3 {
                    for (dy, ty) in ky.clone().enumerate() {
                        let row = &image[(channel * h + y + dy) * w + x..][..kx.len()];
                        patch[channel * 9 + ty * 3 + kx.start..][..kx.len()].copy_from_slice(row);
                    }
                }
            }
            self.patches.run(
                &patches,
                tile,
                Epilogue::Relu6,
                0..self.patches.panel_count(),
            );
        });
    }
}

/// The first `len` values of `buffer`, grown if needed, for a caller that overwrites them all.
/// A buffer never shrinks, so a reused one is neither reallocated nor cleared again.
fn sized(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// Rows (pixels) per tile of a layer with `n` output channels over `pixels` pixels: what fits
/// the cache, and when one photo is `split` over the threads, at most a quarter of each
/// thread's share, so that small late layers still keep every thread busy.
fn tile_rows(n: usize, pixels: usize, split: bool) -> usize {
    let rows = (TILE_VALUES / n).max(MIN_TILE_ROWS);
    if split {
        rows.min(pixels.div_ceil(4 * rayon::current_num_threads()))
            .max(1)
    } else {
        rows
    }
}

/// Runs `task(first_row, chunk)` over `out` in chunks of `rows` rows of `row_len` values each,
/// spread over rayon's threads when `split`.
fn over_rows(
    out: &mut [f32],
    row_len: usize,
    rows: usize,
    split: bool,
    task: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    let chunk = row_len * rows.max(1);
    if split {
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, part)| task(i * rows, part));
    } else {
        out.chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, part)| task(i * rows, part));
    }
}

impl FrozenLite {
    /// The folded copy of `network`'s weights (its classifier, if any, is not part of it).
    pub fn new(network: &EfficientNetLite) -> Self {
        let [stem_out, ..] = network.conv_stem.conv.weight.dims();
        let (stem, stem_bias) = fold(&network.conv_stem.conv, &network.bn0);
        let blocks = network.blocks.iter().map(Block::new).collect();
        let tail = network.imagenet_tail.as_ref().map(|tail| Tail {
            from: network.blocks.len() - tail.blocks.len(),
            blocks: tail.blocks.iter().map(Block::new).collect(),
            head: Folded::new(&tail.conv_head.conv, &tail.bn1).pointwise(),
        });
        FrozenLite {
            stem: Stem {
                patches: PackedPointwise::new(
                    &transposed(&stem, stem_out, Stem::PATCH),
                    &stem_bias,
                    Stem::PATCH,
                    stem_out,
                ),
            },
            blocks,
            head: Folded::new(&network.conv_head.conv, &network.bn1).pointwise(),
            tail,
            scratch: Mutex::default(),
        }
    }

    /// The input size of each block for an image of `h` x `w` pixels, and last the size after
    /// the last block.
    fn sizes(&self, (h, w): (usize, usize)) -> Vec<(usize, usize)> {
        let mut sizes = vec![Stem::geometry(h, w).output()];
        for block in &self.blocks {
            let (bh, bw) = sizes[sizes.len() - 1];
            let stride = block.depthwise.stride;
            sizes.push((bh.div_ceil(stride), bw.div_ceil(stride)));
        }
        sizes
    }

    /// The channels of block `b`'s input (past the last block: of its output).
    fn channels(&self, b: usize) -> usize {
        match b {
            0 => Stem::CHANNELS,
            b => self.blocks[b - 1].project.outputs(),
        }
    }

    /// The shape of one photo's [`Output`] for an input of `h` x `w` pixels.
    pub fn output_dims(&self, (h, w): (usize, usize), output: Output) -> Vec<usize> {
        let blocks = output.blocks(self.blocks.len());
        let (h, w) = self.sizes((h, w))[blocks];
        match output {
            Output::Activations(_) => vec![self.channels(blocks), h, w],
            Output::Map => vec![FEATURES, h, w],
            Output::Pooled(_) => vec![FEATURES],
            Output::WithImagenet(_) => vec![2, FEATURES],
        }
    }

    /// One [`Output`] per photo of normalised planar images `[n, 3, h, w]`, concatenated.
    pub fn run(&self, images: &[f32], (h, w): (usize, usize), output: Output) -> Vec<f32> {
        let image_len = 3 * h * w;
        let n = images.len() / image_len;
        let per_photo: usize = self.output_dims((h, w), output).iter().product();
        let mut out = vec![0.0; n * per_photo];
        let threads = rayon::current_num_threads();
        if n >= threads {
            // A photo per thread at a time: no thread waits for another within a pass.
            images
                .par_chunks(image_len)
                .zip(out.par_chunks_mut(per_photo))
                .for_each(|(image, out)| self.photo(image, (h, w), output, false, out));
        } else {
            // On a pool thread, so that the layers' parallel loops are shared out with the
            // other threads directly instead of each handed over to the pool and waited for
            // from outside it (11-12% of a 224 or 320 photo's latency on 2 cores).
            rayon::scope(|_| {
                for (image, out) in images.chunks(image_len).zip(out.chunks_mut(per_photo)) {
                    self.photo(image, (h, w), output, threads > 1, out);
                }
            });
        }
        out
    }

    /// The [`Output`] of one photo in `out`, `split` over the threads or not.
    fn photo(
        &self,
        image: &[f32],
        (h, w): (usize, usize),
        output: Output,
        split: bool,
        out: &mut [f32],
    ) {
        let mut s = take(&self.scratch);
        let blocks = output.blocks(self.blocks.len());
        let sizes = self.sizes((h, w));
        let tail = match output {
            Output::WithImagenet(_) => Some(self.tail.as_ref().expect("the network has a tail")),
            _ => None,
        };
        // The activations the tail branches off from, kept while the trained blocks run.
        let mut branch = Vec::new();
        self.stem.run(image, (h, w), &mut s.x, split);
        for (b, block) in self.blocks[..blocks].iter().enumerate() {
            if tail.is_some_and(|t| t.from == b) {
                let (bh, bw) = sizes[b];
                branch.extend_from_slice(&s.x[..bh * bw * self.channels(b)]);
            }
            self.run_block(block, sizes[b], split, &mut s);
        }
        let (oh, ow) = sizes[blocks];
        let pixels = oh * ow;
        match output {
            Output::Activations(_) => {
                let c = self.channels(blocks);
                transpose(&s.x[..pixels * c], pixels, c, out);
            }
            Output::Map | Output::Pooled(_) | Output::WithImagenet(_) => {
                let (own, imagenet) = match output {
                    Output::WithImagenet(_) => out.split_at_mut(FEATURES),
                    _ => (out, &mut [][..]),
                };
                let map = sized(&mut s.next, pixels * FEATURES);
                self.head.run(pixels, &s.x, map, Epilogue::Relu6, split);
                pool(map, pixels, output, own);
                if let Some(tail) = tail {
                    sized(&mut s.x, branch.len()).copy_from_slice(&branch);
                    for (i, block) in tail.blocks.iter().enumerate() {
                        self.run_block(block, sizes[tail.from + i], split, &mut s);
                    }
                    let map = sized(&mut s.next, pixels * FEATURES);
                    tail.head.run(pixels, &s.x, map, Epilogue::Relu6, split);
                    pool(map, pixels, output, imagenet);
                }
            }
        }
        give_back(&self.scratch, s);
    }

    /// One block on the activations in `s.x`, of `size`: by strips, or for a photo split over
    /// the threads on its small late images by shares of its hidden channels (a layer at a
    /// time where it cannot be cut so).
    fn run_block(&self, block: &Block, size: (usize, usize), split: bool, s: &mut Scratch) {
        if split && size.0 * size.1 <= LAYERED_PIXELS {
            if block.shares.len() == rayon::current_num_threads() {
                block.run_shares(size, s, &self.scratch);
            } else {
                block.run_layers(size, s);
            }
        } else {
            block.run_strips(size, s, &self.scratch, split);
        }
    }
}

/// One photo's head output `[pixels, 1280]` as the [`Output`] asks: the map channels-first,
/// or pooled.
fn pool(map: &[f32], pixels: usize, output: Output, out: &mut [f32]) {
    match output {
        Output::Map => transpose(map, pixels, FEATURES, out),
        Output::Pooled(Pooling::Average) | Output::WithImagenet(Pooling::Average) => {
            out.fill(0.0);
            sum_rows(map, out, None);
            out.iter_mut().for_each(|v| *v /= pixels as f32);
        }
        Output::Pooled(Pooling::Gem) | Output::WithImagenet(Pooling::Gem) => {
            out.fill(0.0);
            sum_rows(map, out, Some(GEM_FLOOR));
            out.iter_mut()
                .for_each(|v| *v = (*v / pixels as f32).powf(1.0 / GEM_POWER));
        }
        Output::Activations(_) => unreachable!("activations are not pooled"),
    }
}

#[cfg(test)]
mod tests {
    use burn::module::RunningState;
    use burn::tensor::Distribution;

    use super::*;

    fn device() -> Device {
        crate::device::Backend::Flex.device().unwrap()
    }

    fn random(n: usize, low: f64, high: f64) -> Tensor<1> {
        Tensor::random([n], Distribution::Uniform(low, high), &device())
    }

    /// Batch norms with statistics and scales away from the identity, so folding has
    /// something to fold.
    fn randomise(bn: &mut BatchNorm) {
        let n = bn.gamma.dims()[0];
        bn.gamma = burn::module::Param::from_tensor(random(n, 0.5, 1.5));
        bn.beta = burn::module::Param::from_tensor(random(n, -0.5, 0.5));
        bn.running_mean = RunningState::new(random(n, -0.3, 0.3));
        bn.running_var = RunningState::new(random(n, 0.5, 2.0));
    }

    fn network() -> EfficientNetLite {
        device().seed(7);
        let mut net = EfficientNetLite::new(super::super::LITE0, false, &device());
        randomise(&mut net.bn0);
        randomise(&mut net.bn1);
        for block in &mut net.blocks {
            block.bn0.iter_mut().for_each(randomise);
            randomise(&mut block.bn1);
            randomise(&mut block.bn2);
        }
        net
    }

    fn values<const D: usize>(t: Tensor<D>) -> (Vec<usize>, Vec<f32>) {
        (
            t.dims().to_vec(),
            t.into_data().try_to_vec::<f32>().unwrap(),
        )
    }

    /// The largest difference relative to the largest value of `want`.
    fn assert_close(
        what: &str,
        (got_dims, got): (Vec<usize>, Vec<f32>),
        (dims, want): (Vec<usize>, Vec<f32>),
    ) {
        assert_eq!(got_dims, dims, "{what}: shape");
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let spread = want.iter().filter(|v| v.abs() > 1e-3 * scale).count();
        assert!(
            scale > 0.0 && spread > want.len() / 4,
            "{what}: the reference is degenerate"
        );
        let worst = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 1e-4 * scale.max(1.0),
            "{what}: differs by {worst} (largest value {scale})"
        );
    }

    #[test]
    fn the_frozen_path_gives_burns_answers_for_every_output_size_and_batch() {
        let layers = network().with_burn_layers();
        // The copy is frozen in the pool it runs in, which decides how a single photo's
        // blocks are cut into shares: 2 and 3 threads (an uneven cut), whatever this machine has.
        for threads in [2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| compare_with_burns_layers(&layers, threads));
        }
    }

    #[test]
    fn the_imagenet_tail_gives_the_features_the_network_had_before_its_blocks_changed() {
        let original = network().with_burn_layers();
        let mut tuned = original.clone().with_imagenet_tail(3);
        // What fine-tuning does to the last 3 blocks and the head: other weights.
        for block in &mut tuned.blocks[13..] {
            randomise(&mut block.bn1);
            randomise(&mut block.bn2);
        }
        randomise(&mut tuned.bn1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            let frozen = tuned.clone().freeze();
            // One photo split over both threads (strips, then shares of the hidden channels in
            // the tail's small images too), and a batch spread over them.
            for (n, h, w) in [(1, 97, 80), (3, 64, 64)] {
                let x =
                    Tensor::<4>::random([n, 3, h, w], Distribution::Uniform(-1.0, 1.0), &device());
                for pooling in [Pooling::Average, Pooling::Gem] {
                    let what = |part: &str| format!("{part}, {pooling:?}, {n} photos of {h}x{w}");
                    let (own, tail) = frozen.pooled_with_imagenet(x.clone(), pooling);
                    let (layers_own, layers_tail) = tuned.pooled_with_imagenet(x.clone(), pooling);
                    let (tail, layers_tail) = (tail.unwrap(), layers_tail.unwrap());
                    assert_close(&what("tuned"), values(own.clone()), values(layers_own));
                    assert_close(&what("tail"), values(tail.clone()), values(layers_tail));
                    let before = original.pooled(x.clone(), pooling);
                    assert_close(
                        &what("tail as before"),
                        values(tail),
                        values(before.clone()),
                    );
                    let moved: f32 = (own - before).abs().max().into_scalar();
                    assert!(
                        moved > 1e-3,
                        "{}: the tuned blocks changed nothing",
                        what("tuned")
                    );
                    assert_eq!(
                        values(frozen.pooled(x.clone(), pooling)),
                        values(frozen.pooled_with_imagenet(x.clone(), pooling).0),
                        "{}: the tail does not touch the network's own features",
                        what("tuned")
                    );
                }
            }
        });
    }

    fn compare_with_burns_layers(layers: &EfficientNetLite, threads: usize) {
        let frozen = layers.clone().freeze();
        // Fewer photos than threads split each photo over them: by strips on large images,
        // by hidden channels on small ones, and layer by layer in the first block at 32x40,
        // which has no expansion to cut; more photos spread over the threads in groups. Odd
        // and unequal sides exercise the asymmetric 'same' padding of every stride-2 layer,
        // 32 the smallest input. From about 150 pixels the early blocks take several strips,
        // each keeping the expanded rows it shares with the one before.
        for (n, h, w) in [
            (1, 197, 150),
            (2, 150, 166),
            (1, 64, 64),
            (2, 61, 77),
            (1, 32, 40),
            (5, 37, 45),
            (4, 32, 33),
        ] {
            let x = Tensor::<4>::random([n, 3, h, w], Distribution::Uniform(-1.0, 1.0), &device());
            let what =
                |output: &str| format!("{output} of {n} photos of {h}x{w} on {threads} threads");
            for pooling in [Pooling::Average, Pooling::Gem] {
                assert_close(
                    &what(&format!("{pooling:?} pooling")),
                    values(frozen.pooled(x.clone(), pooling)),
                    values(layers.pooled(x.clone(), pooling)),
                );
            }
            assert_close(
                &what("the feature map"),
                values(frozen.feature_map(x.clone())),
                values(layers.feature_map(x.clone())),
            );
            for blocks in [0, 1, 3, 9, layers.block_count()] {
                assert_close(
                    &what(&format!("activations after {blocks} blocks")),
                    values(frozen.activations(x.clone(), blocks)),
                    values(layers.activations(x.clone(), blocks)),
                );
            }
        }
    }
}
