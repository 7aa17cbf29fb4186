//! The EfficientNet-Lite ports against PyTorch's outputs with the same ImageNet weights.

mod common;

use burn::prelude::*;
use vlinder::model::efficientnet::{EfficientNetLite, FEATURES, LITE0};
use vlinder::model::{Head, Pooling, TransferNet, Viewing};

/// The five ImageNet classes a golden case ranks first.
fn top5(case: &serde_json::Value) -> Vec<usize> {
    case["top5"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect()
}

/// Asserts that `network` gives PyTorch's pooled features and logits for `x` within the
/// tolerances, and its five first classes.
fn assert_like_pytorch(
    what: &str,
    network: &EfficientNetLite,
    x: Tensor<4>,
    (want_features, want_logits): (&[f32], &[f32]),
    top5: &[usize],
    (feature_tolerance, logit_tolerance): (f32, f32),
) {
    let values = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
    let features = values(network.features(x.clone()));
    let logits = values(network.logits(x).unwrap());
    assert_eq!(features.len(), FEATURES);
    let max_diff = |a: &[f32], b: &[f32]| {
        assert_eq!(a.len(), b.len(), "{what}");
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    let (df, dl) = (
        max_diff(&features, want_features),
        max_diff(&logits, want_logits),
    );
    eprintln!("{what}: features {df:.2e}, logits {dl:.2e}");
    assert!(
        df < feature_tolerance && dl < logit_tolerance,
        "{what}: features differ by {df}, logits by {dl}"
    );
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    assert_eq!(order[..5], top5[..], "{what}");
}

#[test]
#[ignore = "needs ../shared: the PyTorch golden outputs and the Lite0 weights"]
fn the_port_reproduces_pytorch_logits_and_features() {
    let golden = common::shared().join("golden/efficientnet_lite0");
    let device = Device::flex();
    let layers = EfficientNetLite::from_pytorch(
        vlinder::model::efficientnet::LITE0,
        &common::lite0_weights(),
        true,
        &device,
    )
    .unwrap();
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden.join("cases.json")).unwrap()).unwrap();
    let cases = cases["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5, "every golden case is run");
    // As the README states: burn's layers within 1e-5 of PyTorch's features and 2e-5 of its
    // logits; the fused training blocks and the frozen CPU path, whose folded batch norms round
    // differently, within 1e-4 and 2e-4.
    let paths = [
        (
            "burn's layers",
            layers.clone().with_burn_layers(),
            1e-5,
            2e-5,
        ),
        ("fused blocks", layers.clone(), 1e-4, 2e-4),
        ("frozen", layers.freeze(), 1e-4, 2e-4),
    ];
    for ((path, network, feature_tolerance, logit_tolerance), case) in paths
        .iter()
        .flat_map(|path| cases.iter().map(move |case| (path, case)))
    {
        let name = case["name"].as_str().unwrap();
        let (shape, input) = common::read_npy(&golden.join(case["input"].as_str().unwrap()));
        let x = Tensor::<4>::from_data(
            TensorData::new(input, [shape[0], shape[1], shape[2], shape[3]]),
            &device,
        );
        let (_, want_features) = common::read_npy(&golden.join(case["features"].as_str().unwrap()));
        let (_, want_logits) = common::read_npy(&golden.join(case["logits"].as_str().unwrap()));
        assert_like_pytorch(
            &format!("{path}, {name}"),
            network,
            x,
            (&want_features, &want_logits),
            &top5(case),
            (*feature_tolerance, *logit_tolerance),
        );
    }
}

#[test]
#[ignore = "needs ../shared: the Lite0 weights"]
fn any_image_size_of_at_least_32_runs_and_trains() {
    let device = Device::flex();
    let network = EfficientNetLite::from_pytorch(
        vlinder::model::efficientnet::LITE0,
        &common::lite0_weights(),
        true,
        &device,
    )
    .unwrap();
    for side in [32, 33, 47] {
        let x = Tensor::<4>::ones([2, 3, side, side], &device);
        let features = network.features(x).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(features.len(), 2 * FEATURES, "{side}");
        assert!(features.iter().all(|v| v.is_finite()), "{side}");
    }
    // And a transfer model trains end to end at the smallest size.
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(tmp.path(), &["celastrina_argiolus", "gonepteryx_rhamni"], 6);
    let config = vlinder::train::TrainConfig {
        backbone: Some(common::lite0_weights()),
        feature_copies: 1,
        ..common::with_model(common::quick_config(&data, 2), |m| {
            m.architecture = vlinder::model::Architecture::EfficientNetLite0;
            m.image_size = 32;
        })
    };
    let _serial = common::training_lock();
    let card = vlinder::train::train(&config, &tmp.path().join("m")).unwrap();
    assert_eq!((card.image_size, card.epochs_completed), (32, 2));
    assert!(card.final_metrics.unwrap().validation_loss.is_finite());
}

#[test]
#[ignore = "needs ../shared: the Lite0 weights (a backbone with random weights answers the same for any photo)"]
fn looking_at_mirrors_averages_both_views_and_answers_a_photo_as_its_mirror() {
    let device = Device::flex();
    device.seed(7);
    let mirrored = TransferNet {
        backbone: EfficientNetLite::from_pytorch(LITE0, &common::lite0_weights(), false, &device)
            .unwrap(),
        head: Head::new(3, &device),
        viewing: Viewing {
            pooling: Pooling::Gem,
            focus: None,
            mirror: true,
        },
    };
    let once = TransferNet {
        viewing: Viewing {
            mirror: false,
            ..mirrored.viewing
        },
        ..mirrored.clone()
    };
    let photos = Tensor::<4>::random(
        [2, 3, 96, 96],
        burn::tensor::Distribution::Uniform(-1.0, 1.0),
        &device,
    );
    let flipped = photos.clone().flip([3]);
    let values = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
    let answer = values(mirrored.forward(photos.clone()));
    // The mean of two views does not depend on which came first: exactly the same answer.
    assert_eq!(answer, values(mirrored.forward(flipped.clone())));
    let views = values((once.forward(photos.clone()) + once.forward(flipped.clone())) / 2.0);
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
    assert!(close(&answer, &views), "{answer:?} vs {views:?}");
    let single = values(once.forward(photos.clone()));
    assert!(!close(&answer, &single), "{answer:?} vs {single:?}");
    // Fine-tuning's route, from the activations of both views, gives the same answer.
    let blocks = 10;
    let from = values(mirrored.forward_from(
        mirrored.backbone.activations(photos, blocks),
        Some(mirrored.backbone.activations(flipped, blocks)),
        blocks,
    ));
    assert!(close(&answer, &from), "{answer:?} vs {from:?}");
}

/// The input both sides of the golden files compute (`tests/fixtures/lite_golden/make.py`).
fn formula_image(height: usize, width: usize) -> Tensor<4> {
    let mut values = Vec::with_capacity(3 * height * width);
    for c in 0..3 {
        for row in 0..height {
            for column in 0..width {
                let angle = 0.05 * row as f64 + 0.09 * column as f64 + 1.3 * c as f64;
                values.push((0.8 * angle.sin()) as f32);
            }
        }
    }
    Tensor::from_data(
        TensorData::new(values, [1, 3, height, width]),
        &Device::flex(),
    )
}

#[test]
#[ignore = "needs the larger backbones installed: vlinder backbone install NAME, as .ci/run does"]
fn the_larger_backbones_reproduce_pytorch_on_every_path() {
    use vlinder::model::backbone;
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lite_golden");
    for spec in &backbone::BACKBONES[1..] {
        let golden = fixtures.join(spec.name());
        let weights = spec.find(&backbone::cache_dir()).unwrap();
        let network =
            EfficientNetLite::from_pytorch(spec.variant, &weights, true, &Device::flex()).unwrap();
        assert_eq!(network.block_count(), spec.variant.block_count());
        let cases: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(golden.join("cases.json")).unwrap())
                .unwrap();
        let cases = cases["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 2, "{}: both golden cases", spec.name());
        let paths = [
            (
                "burn's layers",
                network.clone().with_burn_layers(),
                1e-5,
                2e-5,
            ),
            ("fused blocks", network.clone(), 1e-4, 2e-4),
            ("frozen", network.freeze(), 1e-4, 2e-4),
        ];
        for (path, network, feature_tolerance, logit_tolerance) in &paths {
            for case in cases {
                let name = case["name"].as_str().unwrap();
                let size = |key: &str| case[key].as_u64().unwrap() as usize;
                let x = formula_image(size("height"), size("width"));
                let (_, want_features) =
                    common::read_npy(&golden.join(format!("{name}.features.npy")));
                let (_, want_logits) = common::read_npy(&golden.join(format!("{name}.logits.npy")));
                assert_like_pytorch(
                    &format!("{}, {path}, {name}", spec.name()),
                    network,
                    x,
                    (&want_features, &want_logits),
                    &top5(case),
                    (*feature_tolerance, *logit_tolerance),
                );
            }
        }
    }
}
