//! The recipe network's shape, and saving and loading a model directory.

mod common;

use burn::prelude::*;
use std::path::Path;

use vlinder::dataset::ResizeFilter;
use vlinder::model::{Architecture, ModelConfig, Pooling, loss, probabilities};
use vlinder::trained::{ModelDir, WeightsChoice};

/// A fresh network of `architecture` for `classes` species at `image_size` pixels.
fn network(
    architecture: Architecture,
    classes: usize,
    image_size: u32,
    device: &Device,
) -> vlinder::model::Network {
    let mut model = common::quick_config(std::path::Path::new("photos"), 1).model;
    (model.architecture, model.image_size) = (architecture, image_size);
    model.init(classes, device)
}

#[test]
fn parameter_counts_match_keras() {
    let device = Device::flex();
    // Keras' model.count_params() for the recipe at 75x75x3 with two classes.
    assert_eq!(
        network(Architecture::Recipe, 2, 75, &device).num_params(),
        1_335_905
    );
    assert_eq!(
        network(Architecture::RecipeDropout, 2, 75, &device).num_params(),
        1_335_905
    );
    // Three classes: Dense(3) instead of Dense(1) adds 2 * 65 parameters.
    assert_eq!(
        network(Architecture::Recipe, 3, 75, &device).num_params(),
        1_336_035
    );
    // 150x150: 37x37x64 after the second pooling layer.
    assert_eq!(
        network(Architecture::Recipe, 2, 150, &device).num_params(),
        416 + 8256 + (37 * 37 * 64 * 64 + 64) + 65
    );
}

#[test]
fn outputs_are_one_logit_for_two_species_and_a_distribution_otherwise() {
    let device = Device::flex();
    let x = Tensor::<4>::random([5, 3, 32, 32], burn::tensor::Distribution::Default, &device);
    let binary = network(Architecture::Recipe, 2, 32, &device).forward(x.clone());
    assert_eq!(binary.dims(), [5, 1]);
    let multi = network(Architecture::Recipe, 4, 32, &device).forward(x);
    assert_eq!(multi.dims(), [5, 4]);
    let p = probabilities(multi)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    for row in p.chunks(4) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    let p = probabilities(binary)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    for row in p.chunks(2) {
        assert!((row[0] + row[1] - 1.0).abs() < 1e-6);
    }
}

#[test]
fn losses_are_binary_and_categorical_cross_entropy() {
    let device = Device::flex();
    // Binary: -ln(sigmoid(2)) for label 1, -ln(1 - sigmoid(-1)) for label 0.
    let logits = Tensor::<2>::from_data([[2.0f32], [-1.0]], &device);
    let got = loss(logits, &[1, 0], 0.0).into_scalar::<f32>();
    let sig = |z: f32| 1.0 / (1.0 + (-z).exp());
    let want = (-(sig(2.0).ln()) - (1.0 - sig(-1.0)).ln()) / 2.0;
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    // Categorical: -ln(softmax(z)[label]).
    let logits = Tensor::<2>::from_data([[1.0f32, 2.0, 3.0]], &device);
    let got = loss(logits, &[0], 0.0).into_scalar::<f32>();
    let want = -(1f32.exp() / (1f32.exp() + 2f32.exp() + 3f32.exp())).ln();
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
}

#[test]
fn label_smoothing_moves_each_target_towards_uniform() {
    let device = Device::flex();
    let value = |logits: Tensor<2>, labels: &[usize], smoothing| {
        loss(logits, labels, smoothing).into_scalar::<f32>()
    };
    // Three species: the cross-entropy against (1 - α) one-hot + α / 3.
    let rows = [[2.0f32, -1.0, 0.5], [0.0, 1.0, 3.0]];
    let labels = [0, 1];
    let logits = Tensor::<2>::from_floats(rows, &device);
    let expected = |alpha: f32| {
        let mut total = 0.0;
        for (row, &label) in rows.iter().zip(&labels) {
            let norm = row.iter().map(|v| v.exp()).sum::<f32>().ln();
            for (k, v) in row.iter().enumerate() {
                let target = alpha / 3.0 + if k == label { 1.0 - alpha } else { 0.0 };
                total -= target * (v - norm);
            }
        }
        total / rows.len() as f32
    };
    for alpha in [0.0, 0.1, 0.3] {
        let got = value(logits.clone(), &labels, alpha);
        assert!((got - expected(alpha)).abs() < 1e-5, "α {alpha}: {got}");
    }
    // Two species, one sigmoid output: the target of the label moves to 1 - α/2.
    let logit = 1.5f32;
    let p = 1.0 / (1.0 + (-logit).exp());
    let binary = Tensor::<2>::from_floats([[logit]], &device);
    for (label, alpha) in [(1, 0.0), (1, 0.2), (0, 0.2)] {
        let target = if label == 1 {
            1.0 - alpha / 2.0
        } else {
            alpha / 2.0
        };
        let want = -(target * p.ln() + (1.0 - target) * (1.0 - p).ln());
        let got = value(binary.clone(), &[label], alpha);
        assert!(
            (got - want).abs() < 1e-5,
            "label {label} α {alpha}: {got} vs {want}"
        );
    }
}

#[test]
fn a_missing_or_corrupt_model_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let missing = dir.path().join("nothing-here");
    let err = ModelDir::new(&missing)
        .load(WeightsChoice::Last, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nothing-here") && err.contains("vlinder train"),
        "{err}"
    );

    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("model.json"), "{ not json").unwrap();
    let err = ModelDir::new(&bad)
        .load(WeightsChoice::Last, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.json") && err.contains("invalid JSON"),
        "{err}"
    );

    std::fs::write(
        bad.join("model.json"),
        r#"{"format": "vlinder-model", "format_version": 99}"#,
    )
    .unwrap();
    let err = ModelDir::new(&bad)
        .load(WeightsChoice::Last, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("version 99") && err.contains("retrain"),
        "{err}"
    );
}

/// A recipe model trained for one epoch on 8 photos of two species, in `dir/model`.
fn tiny_model(dir: &std::path::Path) -> std::path::PathBuf {
    let data = common::subset(dir, &["anthocharis_cardamines", "gonepteryx_rhamni"], 8);
    let model = dir.join("model");
    let _serial = common::training_lock();
    vlinder::train::train(&common::quick_config(&data, 1), &model).unwrap();
    model
}

#[test]
fn weights_that_are_not_finite_numbers_are_refused_with_the_tensor_named() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    // The same file with one weight of the output layer set to NaN.
    let path = model.join("weights.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, view)| {
            (
                name.to_string(),
                view.shape().to_vec(),
                view.data().to_vec(),
            )
        })
        .collect();
    let output = data
        .iter_mut()
        .find(|(name, ..)| name == "output.weight")
        .unwrap();
    output.2[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(name, shape, bytes)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .unwrap();
            (name.clone(), view)
        })
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    let err = ModelDir::new(&model)
        .load(WeightsChoice::Last, &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("weights.safetensors")
            && err.contains("output.weight")
            && err.contains("not finite"),
        "{err}"
    );
}

#[test]
fn a_model_json_with_impossible_values_is_refused_with_the_field_named() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let original = std::fs::read_to_string(model.join("model.json")).unwrap();
    // (field as a JSON pointer, hostile value, what the error says)
    let cases = [
        (
            "/image_size",
            serde_json::json!(60000),
            "image_size 60000 is outside 6..=1024",
        ),
        (
            "/image_size",
            serde_json::json!(48),
            "image_size 48 differs from training.image_size 32",
        ),
        (
            "/calibration/temperature",
            serde_json::json!(0.0),
            "calibration.temperature 0 is not a positive number",
        ),
        (
            "/calibration/temperature",
            serde_json::json!(-1.0),
            "calibration.temperature -1",
        ),
        (
            "/output",
            serde_json::json!("softmax"),
            "output \"softmax\" does not fit 2 species",
        ),
        (
            "/training/learning_rate",
            serde_json::json!(-1.0),
            "training: invalid learning-rate = -1",
        ),
    ];
    for (field, value, expected) in cases {
        let mut card: serde_json::Value = serde_json::from_str(&original).unwrap();
        *card.pointer_mut(field).unwrap() = value;
        std::fs::write(model.join("model.json"), card.to_string()).unwrap();
        let err = ModelDir::new(&model)
            .load(WeightsChoice::Last, &Device::flex())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model.json") && err.contains(expected),
            "{err}"
        );
    }
}

#[test]
fn weights_open_with_the_safetensors_crate_under_pytorch_names_and_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let bytes = std::fs::read(model.join("weights.safetensors")).unwrap();
    let weights = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut found: Vec<(String, Vec<usize>)> = weights
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            (name, view.shape().to_vec())
        })
        .collect();
    found.sort();
    // At 32 pixels: 2x2 convolution to 31, pooling to 15, convolution to 14, pooling to 7.
    let want: Vec<(String, Vec<usize>)> = [
        ("conv1.bias", vec![32]),
        ("conv1.weight", vec![32, 3, 2, 2]),
        ("conv2.bias", vec![64]),
        ("conv2.weight", vec![64, 32, 2, 2]),
        ("dense.bias", vec![64]),
        ("dense.weight", vec![64, 64 * 7 * 7]),
        ("output.bias", vec![1]),
        ("output.weight", vec![1, 64]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    assert_eq!(found, want);

    // Python's reader, where a Python with safetensors is at hand (`VLINDER_PYTHON`, default
    // python3): PyTorch's `load_file` when torch is there too, else NumPy's.
    let python = std::env::var("VLINDER_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = "import json,sys\n\
                  try:\n    from safetensors.torch import load_file\n\
                  except ImportError:\n    from safetensors.numpy import load_file\n\
                  t = load_file(sys.argv[1])\n\
                  print(json.dumps(sorted([k, list(v.shape)] for k, v in t.items())))";
    match std::process::Command::new(&python)
        .args(["-c", script])
        .arg(model.join("weights.safetensors"))
        .output()
    {
        Ok(out) if out.status.success() => {
            let read: Vec<(String, Vec<usize>)> =
                serde_json::from_slice(&out.stdout).expect("the script prints JSON");
            assert_eq!(read, want, "Python's safetensors load_file");
        }
        _ => eprintln!("{python} has no safetensors: Python's reader was not tried"),
    }
}

#[test]
fn weights_start_glorot_uniform_and_biases_at_zero_as_in_keras() {
    use burn::store::ModuleSnapshot;
    let device = Device::flex();
    device.seed(11);
    let network = network(Architecture::Recipe, 2, 32, &device);
    let tensors: std::collections::BTreeMap<String, Vec<f32>> = network
        .collect(None, None, false)
        .into_iter()
        .map(|t| {
            let bytes = t.to_bytes().unwrap();
            let values = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (t.name.trim_start_matches("Recipe.").to_string(), values)
        })
        .collect();
    // (tensor, fan in, fan out) as Keras counts them: a 2x2 kernel counts its 4 taps.
    for (name, fan_in, fan_out) in [
        ("dense.weight", 64 * 7 * 7, 64),
        ("conv2.weight", 32 * 4, 64 * 4),
    ] {
        let values = tensors
            .get(name)
            .unwrap_or_else(|| panic!("{name} not in {:?}", tensors.keys()));
        assert_eq!(
            values.len(),
            fan_in * fan_out / if name.starts_with("conv") { 4 } else { 1 }
        );
        let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
        assert!(
            values.iter().all(|&v| (v as f64).abs() <= limit),
            "{name}: outside ±{limit}"
        );
        let n: f64 = values.len() as f64;
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        // Uniform on ±limit: mean 0, variance limit²/3; the bounds are 6 standard errors.
        assert!(
            mean.abs() < 6.0 * limit / (3.0 * n).sqrt(),
            "{name}: mean {mean}"
        );
        let want = limit * limit / 3.0;
        assert!(
            (var - want).abs() < want * 6.0 * (0.8 / n).sqrt(),
            "{name}: variance {var} vs {want}"
        );
        // Spread over the whole range, not a narrower one.
        let max = values.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
        assert!(max > 0.99 * limit, "{name}: largest {max} of {limit}");
    }
    for name in ["conv1.bias", "conv2.bias", "dense.bias", "output.bias"] {
        assert!(tensors[name].iter().all(|&v| v == 0.0), "{name}");
    }
}

#[test]
fn model_json_files_written_before_the_model_config_existed_still_describe_their_network() {
    // Written by vlinder at commit 05af5ee on 2026-12-02 (the network's description then lived
    // in the flat training configuration): a recipe model and a fine-tuned transfer model.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model-2026-12-02");
    let cases = [
        (
            "recipe.json",
            Architecture::Recipe,
            32,
            ResizeFilter::Nearest,
        ),
        (
            "transfer.json",
            Architecture::EfficientNetLite0,
            224,
            ResizeFilter::Bilinear,
        ),
    ];
    let device = Device::flex();
    for (file, architecture, image_size, resize) in cases {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::copy(fixtures.join(file), tmp.path().join("model.json")).unwrap();
        let card = ModelDir::new(tmp.path()).read_card().unwrap();
        let expected = ModelConfig {
            architecture,
            image_size,
            resize,
            pooling: Pooling::Gem,
            focus: None,
            mirror: false,
            imagenet_tail: 0,
        };
        assert_eq!(card.training.model, expected, "{file}");
        // The description rebuilds the network that was trained: the same parameter count.
        let network = card.training.model.init(card.species.len(), &device);
        assert_eq!(network.num_params(), card.parameters, "{file}");
        // Written again, the card keeps the keys older readers look for.
        let json = serde_json::to_value(&card).unwrap();
        assert_eq!(
            json["training"]["model"],
            serde_json::json!(architecture.to_string())
        );
        assert_eq!(
            json["training"]["image_size"],
            serde_json::json!(image_size)
        );
    }
}
