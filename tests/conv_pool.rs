//! The recipe's fused convolution, ReLU and pooling on burn's CPU backend gives what burn's own
//! layers give, forward and backward, for 'same' and 'valid' padding, odd and even sides, one
//! layer and the two-layer chain.

use burn::module::Param;
use burn::nn::conv::Conv2dConfig;
use burn::nn::pool::MaxPool2dConfig;
use burn::nn::{PaddingConfig2d, Relu};
use burn::prelude::*;
use burn::tensor::Distribution;
use vlinder::model::recipe::{conv2x2_relu_pool, conv2x2_relu_pool_twice, supported};

struct Case {
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    /// Filters of each layer; a second layer is 'valid'.
    filters: Vec<usize>,
    same: bool,
}

/// Output, then the gradients for the input and each layer's weight and bias, of
/// `sum(output * probe)`.
fn run(case: &Case, fused: bool, seed: u64) -> Vec<Vec<f32>> {
    let device = Device::flex().autodiff();
    device.seed(seed);
    let uniform = Distribution::Uniform(-1.0, 1.0);
    let input = Tensor::<4>::random(
        [case.batch, case.channels, case.height, case.width],
        uniform,
        &device,
    )
    .require_grad();
    let mut channels = case.channels;
    let params: Vec<(Tensor<4>, Tensor<1>)> = case
        .filters
        .iter()
        .map(|&filters| {
            let weight =
                Tensor::<4>::random([filters, channels, 2, 2], uniform, &device).require_grad();
            let bias = Tensor::<1>::random([filters], uniform, &device).require_grad();
            channels = filters;
            (weight, bias)
        })
        .collect();
    let output = if fused {
        assert!(supported(&input));
        match &params[..] {
            [(w, b)] => conv2x2_relu_pool(input.clone(), w.clone(), b.clone(), case.same),
            [first, second] => {
                conv2x2_relu_pool_twice(input.clone(), first.clone(), second.clone(), case.same)
            }
            _ => unreachable!("one or two layers"),
        }
    } else {
        let mut x = input.clone();
        for (l, (weight, bias)) in params.iter().enumerate() {
            let padding = if case.same && l == 0 {
                PaddingConfig2d::Same
            } else {
                PaddingConfig2d::Valid
            };
            let [filters, channels, _, _] = weight.dims();
            let mut conv = Conv2dConfig::new([channels, filters], [2, 2])
                .with_padding(padding)
                .init(&device);
            conv.weight = Param::from_tensor(weight.clone());
            conv.bias = Some(Param::from_tensor(bias.clone()));
            let pool = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
            x = pool.forward(Relu::new().forward(conv.forward(x)));
        }
        x
    };
    let probe = Tensor::<4>::random(output.dims(), uniform, &Device::flex());
    let loss = (output.clone() * Tensor::from_inner(probe)).sum();
    let grads = loss.backward();
    let values = |data: TensorData| data.try_to_vec::<f32>().unwrap();
    let mut found = vec![
        values(output.inner().into_data()),
        values(input.grad(&grads).expect("input gradient").into_data()),
    ];
    for (weight, bias) in &params {
        found.push(values(
            weight.grad(&grads).expect("weight gradient").into_data(),
        ));
        found.push(values(
            bias.grad(&grads).expect("bias gradient").into_data(),
        ));
    }
    found
}

#[test]
fn fused_layers_match_burns_layers_forward_and_backward() {
    let case = |batch, channels, (height, width), filters: &[usize], same| Case {
        batch,
        channels,
        height,
        width,
        filters: filters.to_vec(),
        same,
    };
    let cases = [
        case(3, 3, (11, 11), &[5], true),
        case(2, 4, (10, 7), &[6], false),
        case(2, 32, (9, 9), &[64], false),
        case(1, 3, (2, 3), &[2], true),
        // The recipe's chain, small: 'same' then 'valid', channels-last in between.
        case(3, 3, (19, 17), &[8, 16], true),
        case(2, 3, (12, 12), &[32, 64], true),
    ];
    for (i, case) in cases.iter().enumerate() {
        let seed = 10 + i as u64;
        let expected = run(case, false, seed);
        let found = run(case, true, seed);
        assert_eq!(expected.len(), found.len());
        for (what, (e, f)) in expected.iter().zip(&found).enumerate() {
            let what = match what {
                0 => "output".to_string(),
                1 => "input gradient".to_string(),
                k => format!("layer {} {}", (k - 2) / 2 + 1, ["weight", "bias"][k % 2]),
            };
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
