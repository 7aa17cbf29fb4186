//! EfficientNet-Lite0 speed on this machine: batch-1 latency and batch-32 throughput of the
//! pooled features at 224x224, and batch-1 latency of a network that looks twice (640x640 input,
//! `--focus 320`), median, min and max of 5 repetitions.
//! `cargo bench --bench backbone`; `VLINDER_SHARED` points at the shared folder (default ../shared).

use std::time::Instant;

mod common;

use burn::prelude::*;
use vlinder::model::efficientnet::{Head, Pooling, TransferNet, Viewing};

fn median_min_max(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let device = Device::flex();
    let backbone = common::lite0(&device);
    let network = |viewing| TransferNet {
        backbone: backbone.clone(),
        head: Head::new(3, &device),
        viewing,
    };
    let once = network(Viewing::default());
    let twice = network(Viewing {
        pooling: Pooling::Gem,
        focus: Some(320),
    });
    let run = |network: &TransferNet, batch: usize, side: usize| {
        let x = Tensor::<4>::random(
            [batch, 3, side, side],
            burn::tensor::Distribution::Uniform(-1.0, 1.0),
            &device,
        );
        let start = Instant::now();
        let features = network.features(x).into_data();
        std::hint::black_box(features);
        start.elapsed().as_secs_f64()
    };
    run(&once, 1, 224);
    let (m, lo, hi) = median_min_max((0..5).map(|_| run(&once, 1, 224) * 1000.0).collect());
    println!(
        "EfficientNet-Lite0 features, 224x224, batch 1: median {m:.1} ms (min {lo:.1}, max {hi:.1})"
    );
    let (m, lo, hi) = median_min_max((0..5).map(|_| 32.0 / run(&once, 32, 224)).collect());
    println!(
        "EfficientNet-Lite0 features, 224x224, batch 32: median {m:.1} images/s (min {lo:.1}, max {hi:.1})"
    );
    run(&twice, 1, 640);
    let (m, lo, hi) = median_min_max((0..5).map(|_| run(&twice, 1, 640) * 1000.0).collect());
    println!(
        "EfficientNet-Lite0 features, 640x640 with --focus 320, batch 1: median {m:.1} ms (min {lo:.1}, max {hi:.1})"
    );
}
