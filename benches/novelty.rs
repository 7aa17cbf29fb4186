//! What the unknown-ness score adds to classifying a photo with the default model's network
//! (EfficientNet-Lite0 at 384x384, its last 5 blocks fine-tuned): the network as it classifies
//! (the trained blocks and the head), then the same network with its ImageNet tail (the 5
//! blocks and the head convolution a second time, with the ImageNet weights) and the score on
//! the tail's features, interleaved, median of 7 repetitions at batch 1 and batch 32; then the
//! time to fit the score on 720 feature rows (the default model's training photos).
//! `cargo bench --bench novelty`; `VLINDER_SHARED` points at the shared folder (default ../shared).

use std::time::Instant;

mod common;

use burn::prelude::*;
use rand::{Rng, SeedableRng};
use vlinder::model::Network;
use vlinder::model::efficientnet::{FEATURES, Head, Pooling, TransferNet, Viewing};
use vlinder::novelty::Detector;

const SIDE: usize = 384;
const TUNED_BLOCKS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let device = Device::flex();
    let network = |tail: usize| {
        Network::Transfer(TransferNet {
            backbone: common::lite0(&device).with_imagenet_tail(tail),
            head: Head::new(3, &device),
            viewing: Viewing {
                pooling: Pooling::Gem,
                focus: None,
                mirror: false,
            },
        })
        .freeze()
    };
    let (plain, with_tail) = (network(0), network(TUNED_BLOCKS));
    // The score's cost depends on the shapes, not on the values it was fitted on.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let rows = 720;
    let train: Vec<f32> = (0..rows * FEATURES).map(|_| rng.random::<f32>()).collect();
    let labels: Vec<usize> = (0..rows).map(|i| i % 3).collect();
    let start = Instant::now();
    let detector = Detector::fit(&train, &labels, 3, FEATURES, None).unwrap();
    let fit_seconds = start.elapsed().as_secs_f64();

    println!("EfficientNet-Lite0 at {SIDE}x{SIDE}, the last {TUNED_BLOCKS} blocks fine-tuned");
    for batch in [1, 32] {
        let (mut classify, mut tail, mut score) = (Vec::new(), Vec::new(), Vec::new());
        for repetition in 0..8 {
            let x = || {
                Tensor::<4>::random(
                    [batch, 3, SIDE, SIDE],
                    burn::tensor::Distribution::Uniform(-1.0, 1.0),
                    &device,
                )
            };
            let (a, b) = (x(), x());
            let start = Instant::now();
            let (_, logits) = plain.embed(a);
            std::hint::black_box(logits.into_data());
            let classify_seconds = start.elapsed().as_secs_f64();
            let start = Instant::now();
            let (features, logits) = with_tail.embed(b);
            let features: Vec<f32> = features.into_data().try_to_vec().unwrap();
            std::hint::black_box(logits.into_data());
            let tail_seconds = start.elapsed().as_secs_f64();
            let start = Instant::now();
            std::hint::black_box(detector.scores(&features));
            let score_seconds = start.elapsed().as_secs_f64();
            // The first repetition warms up.
            if repetition > 0 {
                let per_photo = |s: f64| s * 1000.0 / batch as f64;
                classify.push(per_photo(classify_seconds));
                tail.push(per_photo(tail_seconds));
                score.push(per_photo(score_seconds));
            }
        }
        let (c, t, s) = (median(classify), median(tail), median(score));
        let added = t - c + s;
        println!(
            "batch {batch:>2}: classification {c:.2} ms per photo; with the ImageNet tail {t:.2} ms, the score {s:.3} ms: the unknown-ness score adds {added:.2} ms, {:.1}% of classification",
            100.0 * added / c
        );
    }
    println!("fitting the score on {rows} rows of {FEATURES} features: {fit_seconds:.2} s");
}
