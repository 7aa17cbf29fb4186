//! The recipe model's speed on this machine, vlinder beside the Keras recipe, interleaved:
//! the training step (forward, loss, backward, RMSprop) at batch 32 on random 75x75x3 tensors,
//! inference at batch 64 and batch 1, and the float32 GEMM rate of the same backend as the
//! machine's practical peak. Median, min and max of the repetitions; a table on stdout, JSON and
//! a bar chart in target/bench/.
//!
//! `cargo bench --bench speed`. Keras runs when `VLINDER_KERAS_PYTHON` (default
//! /tmp/keras-anchor/bin/python) has it; threads: `VLINDER_BENCH_THREADS` (2).
//! A real epoch on photos, side by side, is `benches/keras_side_by_side.sh`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use burn::optim::{GradientsParams, ModuleOptimizer, RmsPropConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use vlinder::model::{self, Architecture};

const REPETITIONS: usize = 3;
const STEPS: usize = 20;
/// Forward, backward and update of the recipe model per image, and forward alone.
const TRAIN_FLOP: f64 = 85e6;
const INFER_FLOP: f64 = 28e6;

fn stats(mut v: Vec<f64>) -> [f64; 3] {
    v.sort_by(f64::total_cmp);
    [v[v.len() / 2], v[0], v[v.len() - 1]]
}

/// One repetition of vlinder's measures.
fn vlinder_round(device: &Device) -> BTreeMap<&'static str, f64> {
    let autodiff = device.clone().autodiff();
    autodiff.seed(1);
    let mut network = Architecture::Recipe.init(2, 75, &autodiff);
    let mut optim: ModuleOptimizer = RmsPropConfig::new()
        .with_alpha(0.9)
        .with_momentum(0.0)
        .with_epsilon(1e-7)
        .init();
    let x = Tensor::<4>::random([32, 3, 75, 75], Distribution::Uniform(0.0, 1.0), &autodiff);
    let labels: Vec<usize> = (0..32).map(|i| i % 2).collect();
    let mut step = |network: model::Network| {
        let loss = model::loss(network.forward(x.clone()), &labels);
        let grads = GradientsParams::from_grads(loss.backward(), &network);
        optim.step(1e-3, network, grads)
    };
    for _ in 0..3 {
        network = step(network);
    }
    let start = Instant::now();
    for _ in 0..STEPS {
        network = step(network);
    }
    // The update is lazy on some backends: reading a weight waits for it.
    std::hint::black_box(network.clone().valid());
    let train = (32 * STEPS) as f64 / start.elapsed().as_secs_f64();

    let valid = network.valid();
    let x64 = Tensor::<4>::random([64, 3, 75, 75], Distribution::Uniform(0.0, 1.0), device);
    let x1 = Tensor::<4>::random([1, 3, 75, 75], Distribution::Uniform(0.0, 1.0), device);
    let infer = |x: &Tensor<4>| std::hint::black_box(valid.forward(x.clone()).into_data());
    for _ in 0..3 {
        infer(&x64);
        infer(&x1);
    }
    let start = Instant::now();
    for _ in 0..10 {
        infer(&x64);
    }
    let batch64 = 640.0 / start.elapsed().as_secs_f64();
    let batch1 = stats(
        (0..50)
            .map(|_| {
                let start = Instant::now();
                infer(&x1);
                start.elapsed().as_secs_f64() * 1000.0
            })
            .collect(),
    )[0];
    BTreeMap::from([
        ("train_images_per_second", train),
        ("batch64_images_per_second", batch64),
        ("batch1_ms", batch1),
    ])
}

/// GFLOP/s of a 1024x1024 float32 matrix product on the backend.
fn gemm_gflops(device: &Device) -> f64 {
    let n = 1024;
    let a = Tensor::<2>::random([n, n], Distribution::Uniform(-1.0, 1.0), device);
    let b = Tensor::<2>::random([n, n], Distribution::Uniform(-1.0, 1.0), device);
    std::hint::black_box(a.clone().matmul(b.clone()).into_data());
    let start = Instant::now();
    for _ in 0..10 {
        std::hint::black_box(a.clone().matmul(b.clone()).into_data());
    }
    10.0 * 2.0 * (n * n * n) as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn keras_round(python: &PathBuf, threads: usize) -> Option<BTreeMap<String, f64>> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/keras_step.py");
    let out = Command::new(python)
        .arg(script)
        .args(["--threads", &threads.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "keras_step.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.lines().last()?).ok()
}

fn main() {
    let threads: usize = std::env::var("VLINDER_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("the thread pool is set once");
    let python = PathBuf::from(
        std::env::var("VLINDER_KERAS_PYTHON")
            .unwrap_or_else(|_| "/tmp/keras-anchor/bin/python".into()),
    );
    let device = vlinder::device::Backend::Flex
        .device()
        .expect("the default build has the CPU backend");
    let measures = [
        "train_images_per_second",
        "batch64_images_per_second",
        "batch1_ms",
    ];
    let mut runs: BTreeMap<&str, BTreeMap<&str, Vec<f64>>> = BTreeMap::new();
    let mut gemm = Vec::new();
    for rep in 1..=REPETITIONS {
        eprintln!("repetition {rep}/{REPETITIONS}");
        gemm.push(gemm_gflops(&device));
        for (k, v) in vlinder_round(&device) {
            runs.entry("vlinder (burn flex)")
                .or_default()
                .entry(k)
                .or_default()
                .push(v);
        }
        if python.exists()
            && let Some(keras) = keras_round(&python, threads)
        {
            for k in measures {
                if let Some(v) = keras.get(k) {
                    runs.entry("Keras 3 / TensorFlow")
                        .or_default()
                        .entry(k)
                        .or_default()
                        .push(*v);
                }
            }
        }
    }
    let [peak, peak_lo, peak_hi] = stats(gemm);
    println!(
        "{threads} threads; float32 GEMM 1024^3 on burn flex: median {peak:.1} GFLOP/s (min {peak_lo:.1}, max {peak_hi:.1})"
    );
    println!(
        "{:<22} {:>28} {:>28} {:>22}",
        "contender", "train img/s (share of GEMM)", "inference b64 img/s (share)", "batch-1 ms"
    );
    let mut json = serde_json::Map::new();
    let mut chart: Vec<vlinder::plot::BarPanel> = vec![
        (
            "training step, batch 32".into(),
            "images/s".into(),
            Vec::new(),
        ),
        ("inference, batch 64".into(), "images/s".into(), Vec::new()),
        ("inference, batch 1".into(), "ms".into(), Vec::new()),
    ];
    for (who, values) in &runs {
        let get = |k: &str| stats(values[k].clone());
        let [train, train_lo, train_hi] = get("train_images_per_second");
        let [b64, b64_lo, b64_hi] = get("batch64_images_per_second");
        let [b1, b1_lo, b1_hi] = get("batch1_ms");
        println!(
            "{who:<22} {:>28} {:>28} {:>22}",
            format!(
                "{train:.0} [{train_lo:.0}-{train_hi:.0}] ({:.1}%)",
                100.0 * train * TRAIN_FLOP / (peak * 1e9)
            ),
            format!(
                "{b64:.0} [{b64_lo:.0}-{b64_hi:.0}] ({:.1}%)",
                100.0 * b64 * INFER_FLOP / (peak * 1e9)
            ),
            format!("{b1:.2} [{b1_lo:.2}-{b1_hi:.2}]")
        );
        for (i, v) in [train, b64, b1].into_iter().enumerate() {
            chart[i].2.push((who.to_string(), v));
        }
        json.insert(
            who.to_string(),
            serde_json::json!({
                "train_images_per_second": [train, train_lo, train_hi],
                "batch64_images_per_second": [b64, b64_lo, b64_hi],
                "batch1_ms": [b1, b1_lo, b1_hi],
            }),
        );
    }
    json.insert(
        "gemm_gflops".into(),
        serde_json::json!([peak, peak_lo, peak_hi]),
    );
    json.insert("threads".into(), threads.into());
    json.insert("repetitions".into(), REPETITIONS.into());
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench can be made");
    vlinder::files::write_json(&dir.join("speed.json"), &json).expect("speed.json is written");
    vlinder::plot::bar_panels(&chart, &dir.join("speed.png")).expect("speed.png is written");
    println!(
        "written: {}, {}",
        dir.join("speed.json").display(),
        dir.join("speed.png").display()
    );
}
