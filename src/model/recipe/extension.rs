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

/// The backends the fused operation is written for: flex, and autodiff over flex.
#[backend_extension(Flex, Autodiff)]
pub trait ConvPoolBackend: Backend {
    /// 2x2 convolution with bias, ReLU, 2x2 max pooling of stride 2.
    fn conv2x2_relu_pool(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        same: bool,
    ) -> FloatTensor<Self>;
}

/// Whether [`conv2x2_relu_pool`] runs on the device of `tensor`.
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

fn shape_of(input: &FlexTensor, weight: &FlexTensor, same: bool) -> ConvPoolShape {
    let dims = input.layout().shape();
    let filters = weight.layout().shape()[0];
    ConvPoolShape {
        batch: dims[0],
        channels: dims[1],
        height: dims[2],
        width: dims[3],
        filters,
        same,
    }
}

fn run(
    input: FlexTensor,
    weight: FlexTensor,
    bias: FlexTensor,
    same: bool,
    keep: bool,
) -> (FlexTensor, Option<Saved>) {
    let shape = shape_of(&input, &weight, same);
    let [input, weight, bias] = [input, weight, bias].map(|t| t.to_contiguous());
    let (output, saved) = conv_pool::forward(
        shape,
        input.storage(),
        weight.storage(),
        bias.storage(),
        keep,
    );
    let (ph, pw) = shape.pooled();
    let output = FlexTensor::from_data(TensorData::new(
        output,
        [shape.batch, shape.filters, ph, pw],
    ));
    (output, saved)
}

impl ConvPoolBackend for Flex {
    fn conv2x2_relu_pool(
        input: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        same: bool,
    ) -> FlexTensor {
        run(input, weight, bias, same, false).0
    }
}

#[derive(Debug)]
struct ConvPoolBackward;

impl Backward<Flex, 3> for ConvPoolBackward {
    type State = (Arc<Saved>, [usize; 4], [usize; 4]);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [input_node, weight_node, bias_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (saved, input_dims, weight_dims) = ops.state;
        let found = conv_pool::backward(&saved, grad.storage(), input_node.is_some());
        let tensor = |values: Vec<f32>, dims: &[usize]| {
            FlexTensor::from_data(TensorData::new(values, dims.to_vec()))
        };
        if let (Some(node), Some(values)) = (input_node, found.input) {
            grads.register::<Flex>(node.id, tensor(values, &input_dims));
        }
        if let Some(node) = weight_node {
            grads.register::<Flex>(node.id, tensor(found.weight, &weight_dims));
        }
        if let Some(node) = bias_node {
            let filters = found.bias.len();
            grads.register::<Flex>(node.id, tensor(found.bias, &[filters]));
        }
    }
}

impl<C: CheckpointStrategy> ConvPoolBackend for Autodiff<Flex, C> {
    fn conv2x2_relu_pool(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        same: bool,
    ) -> FloatTensor<Self> {
        let prep = ConvPoolBackward
            .prepare::<C>([input.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful();
        let dims = |t: &FlexTensor| -> [usize; 4] {
            let s = t.layout().shape();
            [s[0], s[1], s[2], s[3]]
        };
        let (input_dims, weight_dims) = (dims(input.primitive()), dims(weight.primitive()));
        let primitives = (
            input.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
        );
        match prep {
            OpsKind::Tracked(prep) => {
                let (output, saved) = run(primitives.0, primitives.1, primitives.2, same, true);
                let saved = Arc::new(saved.expect("kept for the backward pass"));
                prep.finish((saved, input_dims, weight_dims), output)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(run(primitives.0, primitives.1, primitives.2, same, false).0)
            }
        }
    }
}
