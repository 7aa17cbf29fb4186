//! [`mbconv`](super::mbconv) as a burn operation: a backend extension for burn's CPU backend
//! (flex), with a backward pass of its own under autodiff.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::prelude::*;
use burn::tensor::{DType, TensorData};

use super::mbconv::{self, BlockParams, BlockShape, Saved};

/// The backends the fused block is written for: flex, and autodiff over flex.
#[backend_extension(Flex, Autodiff)]
pub trait MbConvBackend: Backend {
    /// An MBConv block with expansion on channels-last images; weights as in
    /// [`BlockParams`].
    #[allow(clippy::too_many_arguments)]
    fn mbconv(
        input: FloatTensor<Self>,
        expand_weight: FloatTensor<Self>,
        expand_bias: FloatTensor<Self>,
        depthwise_weight: FloatTensor<Self>,
        depthwise_bias: FloatTensor<Self>,
        project_weight: FloatTensor<Self>,
        project_bias: FloatTensor<Self>,
        stride: usize,
    ) -> FloatTensor<Self>;

    /// The same without expansion (the depthwise convolution reads the input).
    fn mbconv_unexpanded(
        input: FloatTensor<Self>,
        depthwise_weight: FloatTensor<Self>,
        depthwise_bias: FloatTensor<Self>,
        project_weight: FloatTensor<Self>,
        project_bias: FloatTensor<Self>,
        stride: usize,
    ) -> FloatTensor<Self>;
}

/// Whether the fused block runs on the device of `tensor`.
pub fn supported(tensor: &Tensor<4>) -> bool {
    tensor.device().without_autodiff() == Device::flex() && tensor.dtype() == DType::F32
}

/// A block's folded parameters as burn tensors: `(weights, bias)` of the expansion (if any),
/// the depthwise and the projection convolution, laid out as [`BlockParams`] says.
pub type FoldedBlock = (Option<(Tensor<2>, Tensor<1>)>, [(Tensor<2>, Tensor<1>); 2]);

/// The block on channels-last images `[batch, height, width, inputs]` on burn's CPU backend,
/// with or without autodiff; the depthwise convolution pads like TensorFlow's 'same'.
pub fn mbconv(input: Tensor<4>, block: FoldedBlock, stride: usize) -> Tensor<4> {
    let (expand, [(dw_w, dw_b), (pr_w, pr_b)]) = block;
    Tensor::from_dispatch(match expand {
        Some((ex_w, ex_b)) => <Dispatch as MbConvBackend>::mbconv(
            input.into_dispatch(),
            ex_w.into_dispatch(),
            ex_b.into_dispatch(),
            dw_w.into_dispatch(),
            dw_b.into_dispatch(),
            pr_w.into_dispatch(),
            pr_b.into_dispatch(),
            stride,
        ),
        None => <Dispatch as MbConvBackend>::mbconv_unexpanded(
            input.into_dispatch(),
            dw_w.into_dispatch(),
            dw_b.into_dispatch(),
            pr_w.into_dispatch(),
            pr_b.into_dispatch(),
            stride,
        ),
    })
}

fn values(tensor: FlexTensor) -> Vec<f32> {
    tensor.to_contiguous().storage().to_vec()
}

/// The block's shape from its input and parameters (expansion first when there is one).
fn shape(input: &FlexTensor, params: &[FlexTensor], stride: usize) -> BlockShape {
    let dims = input.layout().shape();
    let (depthwise, project) = (&params[params.len() - 4], &params[params.len() - 2]);
    let taps = depthwise.layout().shape()[0];
    let kernel = taps.isqrt();
    assert_eq!(
        kernel * kernel,
        taps,
        "depthwise weights are [kernel * kernel, channels]"
    );
    let [hidden, outputs] = [project.layout().shape()[0], project.layout().shape()[1]];
    BlockShape {
        batch: dims[0],
        height: dims[1],
        width: dims[2],
        inputs: dims[3],
        hidden,
        outputs,
        kernel,
        stride,
        expand: params.len() == 6,
    }
}

/// Runs the block; `params` are the weights and biases in [`BlockParams`] order.
fn run(
    input: FlexTensor,
    params: Vec<FlexTensor>,
    stride: usize,
    keep: bool,
) -> (FlexTensor, Option<Saved>) {
    let shape = shape(&input, &params, stride);
    let mut params = params.into_iter().map(values);
    let mut layer = || (params.next().unwrap(), params.next().unwrap());
    let block = BlockParams {
        expand: shape.expand.then(&mut layer),
        depthwise: layer(),
        project: layer(),
    };
    let (output, saved) = mbconv::forward(shape, values(input), block, keep);
    let (h, w) = shape.output();
    let output = FlexTensor::from_data(TensorData::new(output, [shape.batch, h, w, shape.outputs]));
    (output, saved)
}

impl MbConvBackend for Flex {
    fn mbconv(
        input: FlexTensor,
        expand_weight: FlexTensor,
        expand_bias: FlexTensor,
        depthwise_weight: FlexTensor,
        depthwise_bias: FlexTensor,
        project_weight: FlexTensor,
        project_bias: FlexTensor,
        stride: usize,
    ) -> FlexTensor {
        let params = vec![
            expand_weight,
            expand_bias,
            depthwise_weight,
            depthwise_bias,
            project_weight,
            project_bias,
        ];
        run(input, params, stride, false).0
    }

    fn mbconv_unexpanded(
        input: FlexTensor,
        depthwise_weight: FlexTensor,
        depthwise_bias: FlexTensor,
        project_weight: FlexTensor,
        project_bias: FlexTensor,
        stride: usize,
    ) -> FlexTensor {
        let params = vec![
            depthwise_weight,
            depthwise_bias,
            project_weight,
            project_bias,
        ];
        run(input, params, stride, false).0
    }
}

/// The backward pass of a block: parents are the input, then the parameters in
/// [`BlockParams`] order.
#[derive(Debug)]
struct MbConvBackward;

impl<const N: usize> Backward<Flex, N> for MbConvBackward {
    type State = Arc<Saved>;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [input_node, param_nodes @ ..] = &ops.parents[..] else {
            unreachable!("a block has an input")
        };
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let saved = ops.state;
        let found = mbconv::backward(&saved, grad.storage(), input_node.is_some());
        let s = saved.shape;
        if let (Some(node), Some(values)) = (input_node, found.input) {
            let dims = [s.batch, s.height, s.width, s.inputs];
            grads.register::<Flex>(
                node.id,
                FlexTensor::from_data(TensorData::new(values, dims)),
            );
        }
        let BlockParams {
            expand,
            depthwise,
            project,
        } = found.params;
        let layers = expand.into_iter().chain([depthwise, project]);
        // Every weight matrix is `[rows, outputs]`, its bias `[outputs]`.
        for (nodes, (weights, bias)) in param_nodes.chunks_exact(2).zip(layers) {
            let outputs = bias.len();
            let dims = [weights.len() / outputs, outputs];
            if let Some(node) = &nodes[0] {
                grads.register::<Flex>(
                    node.id,
                    FlexTensor::from_data(TensorData::new(weights, dims)),
                );
            }
            if let Some(node) = &nodes[1] {
                grads.register::<Flex>(
                    node.id,
                    FlexTensor::from_data(TensorData::new(bias, [outputs])),
                );
            }
        }
    }
}

/// A tensor under autodiff over flex.
type Tracked<C> = FloatTensor<Autodiff<Flex, C>>;

/// Runs a block under autodiff, recording its backward pass when any input is tracked.
fn tracked<const N: usize, C: CheckpointStrategy>(
    input: Tracked<C>,
    params: Vec<Tracked<C>>,
    stride: usize,
) -> Tracked<C> {
    let nodes: Vec<_> = std::iter::once(&input)
        .chain(&params)
        .map(|t| t.node())
        .collect();
    let nodes: [_; N] = nodes.try_into().unwrap_or_else(|_| panic!("{N} parents"));
    let prep = MbConvBackward
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful();
    let input = input.into_primitive();
    let params: Vec<FlexTensor> = params.into_iter().map(|p| p.into_primitive()).collect();
    match prep {
        OpsKind::Tracked(prep) => {
            let (output, saved) = run(input, params, stride, true);
            prep.finish(Arc::new(saved.expect("kept for the backward pass")), output)
        }
        OpsKind::UnTracked(prep) => prep.finish(run(input, params, stride, false).0),
    }
}

impl<C: CheckpointStrategy> MbConvBackend for Autodiff<Flex, C> {
    fn mbconv(
        input: FloatTensor<Self>,
        expand_weight: FloatTensor<Self>,
        expand_bias: FloatTensor<Self>,
        depthwise_weight: FloatTensor<Self>,
        depthwise_bias: FloatTensor<Self>,
        project_weight: FloatTensor<Self>,
        project_bias: FloatTensor<Self>,
        stride: usize,
    ) -> FloatTensor<Self> {
        let params = vec![
            expand_weight,
            expand_bias,
            depthwise_weight,
            depthwise_bias,
            project_weight,
            project_bias,
        ];
        tracked::<7, C>(input, params, stride)
    }

    fn mbconv_unexpanded(
        input: FloatTensor<Self>,
        depthwise_weight: FloatTensor<Self>,
        depthwise_bias: FloatTensor<Self>,
        project_weight: FloatTensor<Self>,
        project_bias: FloatTensor<Self>,
        stride: usize,
    ) -> FloatTensor<Self> {
        let params = vec![
            depthwise_weight,
            depthwise_bias,
            project_weight,
            project_bias,
        ];
        tracked::<5, C>(input, params, stride)
    }
}
