//! EfficientNet-Lite0 speed on this machine, vlinder beside ONNX Runtime in the same run,
//! interleaved: the pooled features at 224 and 320 pixels, batch 32 (images/s) and batch 1
//! (ms), from random normalised inputs; then the ratios, from the medians of the rounds. vlinder
//! runs its frozen CPU path (what predict, check, serve and feature extraction use); burn's own
//! layers, the path before it, are measured once for the record. Last, batch-1 latency of a
//! network that looks twice (640x640 input, `--focus 320`), and the time share of each kind of
//! layer at batch 32 (one pass, timed per layer).
//!
//! `cargo bench --bench backbone`. `VLINDER_SHARED` points at the shared folder (default
//! ../shared). ONNX Runtime runs through `benches/lite0_onnxruntime.py` when
//! `VLINDER_ORT_PYTHON` (default /tmp/ort-anchor/bin/python) exists (its set-up is in the
//! script); `VLINDER_BENCH_ROUNDS` (3) sets the rounds. Results also go to
//! target/bench/backbone.json.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

mod common;

use burn::prelude::*;
use vlinder::model::efficientnet::{EfficientNetLite0, Head, Pooling, TransferNet, Viewing};

const SIZES: [usize; 2] = [224, 320];
const BATCH: usize = 32;
/// Multiply-accumulates of Lite0's convolutions per 224x224 image (counted from its shapes).
const LITE0_MACS_224: f64 = 0.385e9;

type Measures = BTreeMap<String, f64>;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds of the pooled features of `batch` random images of `side` pixels, median of `reps`
/// after one warm-up.
fn seconds(backbone: &EfficientNetLite0, batch: usize, side: usize, reps: usize) -> f64 {
    let device = Device::flex();
    let x = Tensor::<4>::random(
        [batch, 3, side, side],
        burn::tensor::Distribution::Uniform(-1.0, 1.0),
        &device,
    );
    let once = || {
        let start = Instant::now();
        std::hint::black_box(backbone.features(x.clone()).into_data());
        start.elapsed().as_secs_f64()
    };
    once();
    median((0..reps).map(|_| once()).collect())
}

/// One round of vlinder's measures.
fn vlinder_round(backbone: &EfficientNetLite0) -> Measures {
    let mut m = Measures::new();
    for side in SIZES {
        m.insert(
            format!("{side} batch {BATCH} img/s"),
            BATCH as f64 / seconds(backbone, BATCH, side, 3),
        );
        m.insert(
            format!("{side} batch 1 ms"),
            seconds(backbone, 1, side, 15) * 1000.0,
        );
    }
    m
}

/// One round of ONNX Runtime's measures, or why there is none.
fn onnxruntime_round(python: &PathBuf, weights: &PathBuf) -> Result<Measures, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/lite0_onnxruntime.py");
    let sizes: Vec<String> = SIZES.iter().map(|s| s.to_string()).collect();
    let out = Command::new(python)
        .arg(&script)
        .arg(weights)
        .args(["--threads", &rayon::current_num_threads().to_string()])
        .args(["--sizes", &sizes.join(",")])
        .args(["--batch", &BATCH.to_string()])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    let json: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let mut m = Measures::new();
    for side in SIZES {
        let at = &json["sizes"][side.to_string()];
        m.insert(
            format!("{side} batch {BATCH} img/s"),
            at["batch_img_s"].as_f64().unwrap_or(f64::NAN),
        );
        m.insert(
            format!("{side} batch 1 ms"),
            at["b1_ms"].as_f64().unwrap_or(f64::NAN),
        );
    }
    Ok(m)
}

fn main() {
    let device = Device::flex();
    let rounds: usize = std::env::var("VLINDER_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let burn_layers = common::lite0(&device);
    let frozen = burn_layers.clone().freeze();
    let python = PathBuf::from(
        std::env::var("VLINDER_ORT_PYTHON").unwrap_or_else(|_| "/tmp/ort-anchor/bin/python".into()),
    );
    let weights = common::lite0_weights();
    let mut ours: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut theirs: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut ort_missing = None;
    for round in 1..=rounds {
        for (k, v) in vlinder_round(&frozen) {
            ours.entry(k).or_default().push(v);
        }
        if python.exists() {
            match onnxruntime_round(&python, &weights) {
                Ok(m) => m
                    .into_iter()
                    .for_each(|(k, v)| theirs.entry(k).or_default().push(v)),
                Err(e) => ort_missing = Some(e),
            }
        } else {
            ort_missing = Some(format!(
                "{} not found (set VLINDER_ORT_PYTHON; set-up in benches/lite0_onnxruntime.py)",
                python.display()
            ));
        }
        eprintln!("round {round}/{rounds} done");
    }
    let mut report = serde_json::Map::new();
    println!(
        "| EfficientNet-Lite0 pooled features, {} threads, median of {rounds} rounds | vlinder | ONNX Runtime | ratio |",
        rayon::current_num_threads()
    );
    println!("|---|---|---|---|");
    for (name, values) in &ours {
        let ours = median(values.clone());
        let theirs = theirs.get(name).map(|v| median(v.clone()));
        // Throughput: ours / theirs; latency: theirs / ours, so above 1 means vlinder is ahead.
        let ratio = theirs.map(|t| {
            if name.ends_with("ms") {
                t / ours
            } else {
                ours / t
            }
        });
        println!(
            "| {name} | {ours:.1} | {} | {} |",
            theirs.map_or("-".into(), |t| format!("{t:.1}")),
            ratio.map_or("-".into(), |r| format!("{r:.2}x"))
        );
        report.insert(
            name.clone(),
            serde_json::json!({"vlinder": values, "onnxruntime": theirs, "ratio": ratio}),
        );
    }
    if let Some(why) = ort_missing {
        println!("ONNX Runtime not measured: {why}");
    }
    let b32 = median(ours[&format!("224 batch {BATCH} img/s")].clone());
    println!(
        "224 batch {BATCH}: {:.1} GMAC/s, {:.0}% of the machine's float32 matrix-product peak as the speed bench measures it (run `cargo bench --bench speed` for that figure)",
        b32 * LITE0_MACS_224 / 1e9,
        f64::NAN
    );
    let unfused = BATCH as f64 / seconds(&burn_layers, BATCH, 224, 1);
    println!("burn's layers (before the frozen path), 224 batch {BATCH}: {unfused:.1} img/s");
    report.insert("burn layers 224 batch 32 img/s".into(), unfused.into());
    let twice = TransferNet {
        backbone: frozen.clone(),
        head: Head::new(3, &device),
        viewing: Viewing {
            pooling: Pooling::Gem,
            focus: Some(320),
        },
    };
    let x = Tensor::<4>::random(
        [1, 3, 640, 640],
        burn::tensor::Distribution::Uniform(-1.0, 1.0),
        &device,
    );
    let focus = median(
        (0..6)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(twice.features(x.clone()).into_data());
                start.elapsed().as_secs_f64() * 1000.0
            })
            .skip(1)
            .collect(),
    );
    println!("640x640 with --focus 320, batch 1: {focus:.1} ms");
    report.insert("640 focus 320 batch 1 ms".into(), focus.into());
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    std::fs::write(
        dir.join("backbone.json"),
        serde_json::to_string_pretty(&report).expect("JSON"),
    )
    .expect("target/bench/backbone.json");
}
