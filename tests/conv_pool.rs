//! The recipe's fused convolution, ReLU and pooling on burn's CPU backend gives what burn's own
//! layers give, forward and backward, for 'same' and 'valid' padding and odd and even sides.

use burn::module::Param;
use burn::nn::conv::Conv2dConfig;
use burn::nn::pool::MaxPool2dConfig;
use burn::nn::{PaddingConfig2d, Relu};
use burn::prelude::*;
use burn::tensor::Distribution;
use vlinder::model::recipe::{conv2x2_relu_pool, supported};

struct Case {
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    filters: usize,
    same: bool,
}

/// Output, then the gradients for input, weight and bias, of `sum(output * probe)`.
fn run(case: &Case, fused: bool, seed: u64) -> [Vec<f32>; 4] {
    let device = Device::flex().autodiff();
    device.seed(seed);
    let uniform = Distribution::Uniform(-1.0, 1.0);
    let input = Tensor::<4>::random(
        [case.batch, case.channels, case.height, case.width],
        uniform,
        &device,
    )
    .require_grad();
    let weight =
        Tensor::<4>::random([case.filters, case.channels, 2, 2], uniform, &device).require_grad();
    let bias = Tensor::<1>::random([case.filters], uniform, &device).require_grad();
    let output = if fused {
        assert!(supported(&input));
        conv2x2_relu_pool(input.clone(), weight.clone(), bias.clone(), case.same)
    } else {
        let padding = if case.same {
            PaddingConfig2d::Same
        } else {
            PaddingConfig2d::Valid
        };
        let mut conv = Conv2dConfig::new([case.channels, case.filters], [2, 2])
            .with_padding(padding)
            .init(&device);
        conv.weight = Param::from_tensor(weight.clone());
        conv.bias = Some(Param::from_tensor(bias.clone()));
        let pool = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
        pool.forward(Relu::new().forward(conv.forward(input.clone())))
    };
    let probe = Tensor::<4>::random(output.dims(), uniform, &Device::flex());
    let loss = (output.clone() * Tensor::from_inner(probe)).sum();
    let grads = loss.backward();
    let values = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
    [
        values(output.inner()),
        values(input.grad(&grads).expect("input gradient")),
        values(weight.grad(&grads).expect("weight gradient")),
        bias.grad(&grads)
            .expect("bias gradient")
            .into_data()
            .try_to_vec::<f32>()
            .unwrap(),
    ]
}

#[test]
fn fused_layer_matches_burns_layers_forward_and_backward() {
    let cases = [
        Case {
            batch: 3,
            channels: 3,
            height: 11,
            width: 11,
            filters: 5,
            same: true,
        },
        Case {
            batch: 2,
            channels: 4,
            height: 10,
            width: 7,
            filters: 6,
            same: false,
        },
        Case {
            batch: 2,
            channels: 32,
            height: 9,
            width: 9,
            filters: 64,
            same: false,
        },
        Case {
            batch: 1,
            channels: 3,
            height: 2,
            width: 3,
            filters: 2,
            same: true,
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let seed = 10 + i as u64;
        let expected = run(case, false, seed);
        let found = run(case, true, seed);
        for (what, (e, f)) in [
            "output",
            "input gradient",
            "weight gradient",
            "bias gradient",
        ]
        .iter()
        .zip(expected.iter().zip(&found))
        {
            assert_eq!(e.len(), f.len(), "case {i}: {what} length");
            let scale = e.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let worst = e
                .iter()
                .zip(f)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(
                worst <= 1e-5 * scale,
                "case {i}: {what} differs by {worst} (scale {scale})"
            );
            assert!(e.iter().any(|v| *v != 0.0), "case {i}: {what} is all zero");
        }
    }
}
