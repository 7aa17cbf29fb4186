//! What the unknown-ness score adds to classifying a photo: EfficientNet-Lite0 and its head at
//! 224x224 (as `vlinder predict` runs them), and the score on the same photos' features,
//! interleaved, median of 7 repetitions at batch 1 and batch 32; then the time to fit the score
//! on 3,600 feature rows (720 photos and 4 augmented copies each, as a default run has).
//! `cargo bench --bench novelty`; `VLINDER_SHARED` points at the shared folder (default ../shared).

use std::time::Instant;

mod common;

use burn::prelude::*;
use rand::{Rng, SeedableRng};
use vlinder::model::Network;
use vlinder::model::efficientnet::{FEATURES, Head, Pooling, TransferNet, Viewing};
use vlinder::novelty::Detector;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let device = Device::flex();
    let backbone = common::lite0(&device);
    let network = Network::Transfer(TransferNet {
        backbone,
        head: Head::new(3, &device),
        viewing: Viewing {
            pooling: Pooling::Gem,
            focus: None,
            mirror: false,
        },
    });
    // The score's cost depends on the shapes, not on the values it was fitted on.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let rows = 3600;
    let train: Vec<f32> = (0..rows * FEATURES).map(|_| rng.random::<f32>()).collect();
    let labels: Vec<usize> = (0..rows).map(|i| i % 3).collect();
    let start = Instant::now();
    let detector = Detector::fit(&train, &labels, 3, FEATURES, None).unwrap();
    let fit_seconds = start.elapsed().as_secs_f64();

    for batch in [1, 32] {
        let (mut classify, mut score) = (Vec::new(), Vec::new());
        for repetition in 0..8 {
            let x = Tensor::<4>::random(
                [batch, 3, 224, 224],
                burn::tensor::Distribution::Uniform(-1.0, 1.0),
                &device,
            );
            let start = Instant::now();
            let (features, logits) = network.embed(x);
            let features: Vec<f32> = features.into_data().try_to_vec().unwrap();
            std::hint::black_box(logits.into_data());
            let network_seconds = start.elapsed().as_secs_f64();
            let start = Instant::now();
            std::hint::black_box(detector.scores(&features));
            let score_seconds = start.elapsed().as_secs_f64();
            // The first repetition warms up.
            if repetition > 0 {
                classify.push(network_seconds * 1000.0 / batch as f64);
                score.push(score_seconds * 1000.0 / batch as f64);
            }
        }
        let (c, s) = (median(classify), median(score));
        println!(
            "batch {batch:>2}: classification {c:.2} ms per photo, unknown-ness score {s:.3} ms per photo: +{:.1}%",
            100.0 * s / c
        );
    }
    println!("fitting the score on {rows} rows of {FEATURES} features: {fit_seconds:.1} s");
}
