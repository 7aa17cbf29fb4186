//! [`conv_pool`](super::conv_pool) as a burn operation: a backend extension for burn's CPU
//! backend (flex), with a backward pass of its own under autodiff.

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

use super::conv_pool::{self, ConvPoolShape, Saved};

/// The backends the fused operations are written for: flex, and autodiff over flex.
#[backend_extension(Flex, Autodiff)]
pub trait ConvPoolBackend: Backend {
    /// 2x2 convolution with bias, ReLU, 2x2 max pooling of stride 2.
    fn conv2x2_relu_pool(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        same: bool,
    ) -> FloatTensor<Self>;

    /// Two such layers, the second unpadded, with the activations between them kept
    /// channels-last.
    fn conv2x2_relu_pool_twice(
        input: FloatTensor<Self>,
        weight1: FloatTensor<Self>,
        bias1: FloatTensor<Self>,
        weight2: FloatTensor<Self>,
        bias2: FloatTensor<Self>,
        same: bool,
    ) -> FloatTensor<Self>;
}

/// Whether the fused operations run on the device of `tensor`.
pub fn supported(tensor: &Tensor<4>) -> bool {
    tensor.device().without_autodiff() == Device::flex() && tensor.dtype() == DType::F32
}

/// `max_pool_2x2(relu(conv_2x2(input) + bias))` on burn's CPU backend, with or without autodiff;
/// `same` pads like Keras' 'same', else 'valid'.
pub fn conv2x2_relu_pool(
    input: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    same: bool,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as ConvPoolBackend>::conv2x2_relu_pool(
        input.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        same,
    ))
}

/// [`conv2x2_relu_pool`] twice, the first layer padded as `same` says, the second 'valid'.
pub fn conv2x2_relu_pool_twice(
    input: Tensor<4>,
    first: (Tensor<4>, Tensor<1>),
    second: (Tensor<4>, Tensor<1>),
    same: bool,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as ConvPoolBackend>::conv2x2_relu_pool_twice(
        input.into_dispatch(),
        first.0.into_dispatch(),
        first.1.into_dispatch(),
        second.0.into_dispatch(),
        second.1.into_dispatch(),
        same,
    ))
}

/// The shapes of a chain on `input` with the given weights, the first padded as `same` says.
fn chain(input: &FlexTensor, weights: &[&FlexTensor], same: bool) -> Vec<ConvPoolShape> {
    let dims = input.layout().shape();
    let (mut channels, mut height, mut width) = (dims[1], dims[2], dims[3]);
    weights
        .iter()
        .enumerate()
        .map(|(l, weight)| {
            let shape = ConvPoolShape {
                batch: dims[0],
                channels,
                height,
                width,
                filters: weight.layout().shape()[0],
                same: same && l == 0,
            };
            (channels, (height, width)) = (shape.filters, shape.pooled());
            shape
        })
        .collect()
}

/// Runs a chain; `params` are each layer's weight and bias.
fn run(
    input: FlexTensor,
    params: &[(FlexTensor, FlexTensor)],
    same: bool,
    keep: bool,
) -> (FlexTensor, Option<Saved>) {
    let weights: Vec<&FlexTensor> = params.iter().map(|(w, _)| w).collect();
    let shapes = chain(&input, &weights, same);
    let input = input.to_contiguous();
    let params: Vec<(FlexTensor, FlexTensor)> = params
        .iter()
        .map(|(w, b)| (w.to_contiguous(), b.to_contiguous()))
        .collect();
    let slices: Vec<(&[f32], &[f32])> = params
        .iter()
        .map(|(w, b)| (w.storage(), b.storage()))
        .collect();
    let (output, saved) = conv_pool::forward(&shapes, input.storage(), &slices, keep);
    let last = shapes[shapes.len() - 1];
    let (ph, pw) = last.pooled();
    let output = FlexTensor::from_data(TensorData::new(output, [last.batch, last.filters, ph, pw]));
    (output, saved)
}

impl ConvPoolBackend for Flex {
    fn conv2x2_relu_pool(
        input: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        same: bool,
    ) -> FlexTensor {
        run(input, &[(weight, bias)], same, false).0
    }

    fn conv2x2_relu_pool_twice(
        input: FlexTensor,
        weight1: FlexTensor,
        bias1: FlexTensor,
        weight2: FlexTensor,
        bias2: FlexTensor,
        same: bool,
    ) -> FlexTensor {
        run(input, &[(weight1, bias1), (weight2, bias2)], same, false).0
    }
}

/// The backward pass of a chain: parents are the input, then each layer's weight and bias.
#[derive(Debug)]
struct ConvPoolBackward;

impl<const N: usize> Backward<Flex, N> for ConvPoolBackward {
    type State = Arc<Saved>;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [input_node, params @ ..] = &ops.parents[..] else {
            unreachable!("a chain has an input")
        };
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let saved = ops.state;
        let found = conv_pool::backward(&saved, grad.storage(), input_node.is_some());
        let tensor = |values: Vec<f32>, dims: Vec<usize>| {
            FlexTensor::from_data(TensorData::new(values, dims))
        };
        let shapes: Vec<ConvPoolShape> = saved.shapes().collect();
        if let (Some(node), Some(values)) = (input_node, found.input) {
            let s = shapes[0];
            grads.register::<Flex>(
                node.id,
                tensor(values, vec![s.batch, s.channels, s.height, s.width]),
            );
        }
        for ((nodes, (weight, bias)), shape) in
            params.chunks_exact(2).zip(found.layers).zip(&shapes)
        {
            if let Some(node) = &nodes[0] {
                let dims = vec![shape.filters, shape.channels, 2, 2];
                grads.register::<Flex>(node.id, tensor(weight, dims));
            }
            if let Some(node) = &nodes[1] {
                grads.register::<Flex>(node.id, tensor(bias, vec![shape.filters]));
            }
        }
    }
}

/// A tensor under autodiff over flex.
type Tracked<C> = FloatTensor<Autodiff<Flex, C>>;

/// Runs a chain under autodiff, recording its backward pass when any input is tracked.
fn tracked<const N: usize, C: CheckpointStrategy>(
    input: Tracked<C>,
    params: Vec<(Tracked<C>, Tracked<C>)>,
    same: bool,
) -> Tracked<C> {
    let mut nodes = vec![input.node()];
    for (weight, bias) in &params {
        nodes.extend([weight.node(), bias.node()]);
    }
    let nodes: [_; N] = nodes.try_into().unwrap_or_else(|_| panic!("{N} parents"));
    let prep = ConvPoolBackward
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful();
    let input = input.into_primitive();
    let params: Vec<(FlexTensor, FlexTensor)> = params
        .into_iter()
        .map(|(w, b)| (w.into_primitive(), b.into_primitive()))
        .collect();
    match prep {
        OpsKind::Tracked(prep) => {
            let (output, saved) = run(input, &params, same, true);
            prep.finish(Arc::new(saved.expect("kept for the backward pass")), output)
        }
        OpsKind::UnTracked(prep) => prep.finish(run(input, &params, same, false).0),
    }
}

impl<C: CheckpointStrategy> ConvPoolBackend for Autodiff<Flex, C> {
    fn conv2x2_relu_pool(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        same: bool,
    ) -> FloatTensor<Self> {
        tracked::<3, C>(input, vec![(weight, bias)], same)
    }

    fn conv2x2_relu_pool_twice(
        input: FloatTensor<Self>,
        weight1: FloatTensor<Self>,
        bias1: FloatTensor<Self>,
        weight2: FloatTensor<Self>,
        bias2: FloatTensor<Self>,
        same: bool,
    ) -> FloatTensor<Self> {
        tracked::<5, C>(input, vec![(weight1, bias1), (weight2, bias2)], same)
    }
}
