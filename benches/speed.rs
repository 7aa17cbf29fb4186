//! The recipe model's speed on this machine, vlinder beside the Keras recipe, interleaved:
//! the training step (forward, loss, backward, RMSprop) at batch 32 on random 75x75x3 tensors,
//! inference at batch 64 and batch 1, real training epochs on every photo of ../shared/data
//! (decoding, augmentation, training and validation, with the share of the epoch spent waiting
//! for data and the process's peak memory), and the float32 GEMM rate of the same backend as the
//! machine's practical peak. Median, min and max of the repetitions; tables on stdout, JSON and
//! a bar chart in target/bench/.
//!
//! `cargo bench --bench speed`. Keras runs when `VLINDER_KERAS_PYTHON` (default
//! /tmp/keras-anchor/bin/python) has it; threads: `VLINDER_BENCH_THREADS` (2); photos:
//! `VLINDER_BENCH_DATA` (../shared/data, one folder per data set, one per species inside).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

mod common;

use burn::optim::{GradientsParams, ModuleOptimizer, RmsPropConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use vlinder::dataset::ResizeFilter;
use vlinder::model::{self, Architecture, ModelConfig, Pooling};

const REPETITIONS: usize = 3;
const STEPS: usize = 20;
/// Forward, backward and update of the recipe model per image, and forward alone.
const TRAIN_FLOP: f64 = 85e6;
const INFER_FLOP: f64 = 28e6;
/// Epochs per real training run; the median epoch of each run is kept.
const EPOCHS: usize = 3;

type Measures = BTreeMap<&'static str, f64>;

fn stats(mut v: Vec<f64>) -> [f64; 3] {
    v.sort_by(f64::total_cmp);
    [v[v.len() / 2], v[0], v[v.len() - 1]]
}

/// One repetition of vlinder's measures.
fn vlinder_round(device: &Device) -> Measures {
    let autodiff = device.clone().autodiff();
    autodiff.seed(1);
    let recipe = ModelConfig {
        architecture: Architecture::Recipe,
        image_size: 75,
        resize: ResizeFilter::Nearest,
        pooling: Pooling::Average,
        focus: None,
        mirror: false,
        imagenet_tail: 0,
    };
    let mut network = recipe.init(2, &autodiff);
    let mut optim: ModuleOptimizer = RmsPropConfig::new()
        .with_alpha(0.9)
        .with_momentum(0.0)
        .with_epsilon(1e-7)
        .init();
    let x = Tensor::<4>::random([32, 3, 75, 75], Distribution::Uniform(0.0, 1.0), &autodiff);
    let labels: Vec<usize> = (0..32).map(|i| i % 2).collect();
    let mut step = |network: model::Network| {
        let loss = model::loss(network.forward(x.clone()), &labels, 0.0);
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

fn keras_round(python: &Path, threads: usize) -> Option<Measures> {
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
    let found: BTreeMap<String, f64> = serde_json::from_str(line.lines().last()?).ok()?;
    let measures = [
        "train_images_per_second",
        "batch64_images_per_second",
        "batch1_ms",
    ];
    Some(
        measures
            .into_iter()
            .filter_map(|k| Some((k, *found.get(k)?)))
            .collect(),
    )
}

/// Every photo of the data folder as one folder of species folders of symbolic links, named
/// `set--species`; `None` when there are none.
fn all_photos(out: &Path) -> Option<(PathBuf, usize)> {
    let data = std::env::var_os("VLINDER_BENCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    let data = data.canonicalize().ok()?;
    let photos = out.join("photos");
    let _ = std::fs::remove_dir_all(&photos);
    let folders = |dir: &Path| -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        found.sort();
        found
    };
    let mut count = 0;
    for set in folders(&data) {
        for species in folders(&set) {
            let name = |p: &Path| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            };
            let folder = photos.join(format!("{}--{}", name(&set), name(&species)));
            std::fs::create_dir_all(&folder).ok()?;
            for photo in std::fs::read_dir(&species).ok()?.flatten() {
                if photo.path().is_file() {
                    std::os::unix::fs::symlink(photo.path(), folder.join(photo.file_name()))
                        .ok()?;
                    count += 1;
                }
            }
        }
    }
    (count > 0).then_some((photos, count))
}

fn median(v: impl IntoIterator<Item = f64>) -> f64 {
    stats(v.into_iter().collect())[0]
}

/// One `vlinder train` run of [`EPOCHS`] on `photos` (seeded 80/20 split); its split is left
/// in `model/split.csv` for Keras.
fn vlinder_epochs(photos: &Path, model: &Path, threads: usize) -> Option<Measures> {
    let _ = std::fs::remove_dir_all(model);
    let start = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_vlinder"))
        .arg("train")
        .arg("--data")
        .arg(photos)
        .args(["--validation-split", "0.2", "--seed", "42"])
        .args(["--epochs", &EPOCHS.to_string()])
        .arg("--out")
        .arg(model)
        .env("RAYON_NUM_THREADS", threads.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let (ok, peak) = common::wait_with_peak_memory(child);
    let wall = start.elapsed().as_secs_f64();
    if !ok {
        eprintln!("vlinder train failed on {}", photos.display());
        return None;
    }
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("model.json")).ok()?).ok()?;
    let history = card["history"].as_array()?;
    let field = |name: &'static str| history.iter().filter_map(move |e| e[name].as_f64());
    let waits = history
        .iter()
        .filter_map(|e| Some(100.0 * e["data_wait_seconds"].as_f64()? / e["seconds"].as_f64()?));
    Some(BTreeMap::from([
        ("epoch_seconds", median(field("seconds"))),
        (
            "epoch_train_images_per_second",
            median(field("train_images_per_second")),
        ),
        ("epoch_data_wait_percent", median(waits)),
        ("peak_memory_mib", peak),
        ("run_seconds", wall),
    ]))
}

/// The Keras recipe for [`EPOCHS`] on the split vlinder used.
fn keras_epochs(python: &Path, split_csv: &Path, out: &Path, threads: usize) -> Option<Measures> {
    let split = out.join("keras-split");
    let _ = std::fs::remove_dir_all(&split);
    let csv = std::fs::read_to_string(split_csv).ok()?;
    for line in csv.lines().skip(1) {
        let mut fields = line.rsplitn(3, ',');
        let (part, species, path) = (fields.next()?, fields.next()?, fields.next()?);
        let folder = split.join(part).join(species);
        std::fs::create_dir_all(&folder).ok()?;
        let target = std::fs::canonicalize(path).ok()?;
        std::os::unix::fs::symlink(&target, folder.join(target.file_name()?)).ok()?;
    }
    let anchor =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/anchors/keras_recipe.py");
    let start = Instant::now();
    let mut child = Command::new(python)
        .arg(anchor)
        .arg("--train")
        .arg(split.join("train"))
        .arg("--validation")
        .arg(split.join("validation"))
        .args([
            "--epochs",
            &EPOCHS.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdout = String::new();
    child.stdout.take()?.read_to_string(&mut stdout).ok()?;
    let (ok, peak) = common::wait_with_peak_memory(child);
    let wall = start.elapsed().as_secs_f64();
    let result: serde_json::Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|json| serde_json::from_str(json).ok())?;
    ok.then_some(BTreeMap::from([
        ("epoch_seconds", result["median_epoch_seconds"].as_f64()?),
        (
            "epoch_train_images_per_second",
            result["train_images_per_second"].as_f64()?,
        ),
        ("peak_memory_mib", peak),
        ("run_seconds", wall),
    ]))
}

const VLINDER: &str = "vlinder (burn flex)";
const KERAS: &str = "Keras 3 / TensorFlow";

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
    let keras = python.exists();
    let device = vlinder::device::Backend::Flex
        .device()
        .expect("the default build has the CPU backend");
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).expect("target/bench can be made");
    let photos = all_photos(&out);
    match &photos {
        Some((_, n)) => eprintln!("real epochs on {n} photos"),
        None => eprintln!("no photos found (VLINDER_BENCH_DATA): real epochs skipped"),
    }
    let mut runs: BTreeMap<&str, BTreeMap<&str, Vec<f64>>> = BTreeMap::new();
    let mut record = |who: &'static str, measures: Measures| {
        for (k, v) in measures {
            runs.entry(who).or_default().entry(k).or_default().push(v);
        }
    };
    let mut gemm = Vec::new();
    for rep in 1..=REPETITIONS {
        eprintln!("repetition {rep}/{REPETITIONS}");
        gemm.push(common::gemm_gflops(&device));
        record(VLINDER, vlinder_round(&device));
        if keras && let Some(measures) = keras_round(&python, threads) {
            record(KERAS, measures);
        }
        if let Some((photos, _)) = &photos {
            let model = out.join("epoch-vlinder");
            if let Some(measures) = vlinder_epochs(photos, &model, threads) {
                record(VLINDER, measures);
                let split = model.join("split.csv");
                if keras && let Some(measures) = keras_epochs(&python, &split, &out, threads) {
                    record(KERAS, measures);
                }
            }
        }
    }
    let [peak, peak_lo, peak_hi] = stats(gemm);
    println!(
        "{threads} threads; float32 GEMM 1024^3 on burn flex: median {peak:.1} GFLOP/s (min {peak_lo:.1}, max {peak_hi:.1})"
    );
    let cell = |values: &BTreeMap<&str, Vec<f64>>, key: &str, digits: usize, flop: f64| {
        let Some(v) = values.get(key) else {
            return "-".to_string();
        };
        let [m, lo, hi] = stats(v.clone());
        let share = if flop > 0.0 {
            format!(" ({:.0}%)", 100.0 * m * flop / (peak * 1e9))
        } else {
            String::new()
        };
        format!("{m:.digits$} [{lo:.digits$}-{hi:.digits$}]{share}")
    };
    println!("\nrandom 75x75x3 tensors, median [min-max] (share of the GEMM rate)");
    println!(
        "{:<22} {:>28} {:>28} {:>20}",
        "contender", "train step b32 img/s", "inference b64 img/s", "inference b1 ms"
    );
    for (who, values) in &runs {
        println!(
            "{who:<22} {:>28} {:>28} {:>20}",
            cell(values, "train_images_per_second", 0, TRAIN_FLOP),
            cell(values, "batch64_images_per_second", 0, INFER_FLOP),
            cell(values, "batch1_ms", 2, 0.0),
        );
    }
    if let Some((_, n)) = &photos {
        println!(
            "\nreal training, {n} photos, seeded 80/20 split, 75x75, the recipe's augmentation, {EPOCHS} epochs a run: median epoch of each run, median [min-max] of the runs"
        );
        println!(
            "{:<22} {:>18} {:>20} {:>16} {:>20} {:>18}",
            "contender", "epoch s", "train img/s", "data wait %", "peak memory MiB", "whole run s"
        );
        for (who, values) in &runs {
            println!(
                "{who:<22} {:>18} {:>20} {:>16} {:>20} {:>18}",
                cell(values, "epoch_seconds", 2, 0.0),
                cell(values, "epoch_train_images_per_second", 0, 0.0),
                cell(values, "epoch_data_wait_percent", 1, 0.0),
                cell(values, "peak_memory_mib", 0, 0.0),
                cell(values, "run_seconds", 1, 0.0),
            );
        }
    }
    let mut json = serde_json::Map::new();
    let panels = [
        (
            "training step, batch 32",
            "images/s",
            "train_images_per_second",
        ),
        (
            "inference, batch 64",
            "images/s",
            "batch64_images_per_second",
        ),
        ("inference, batch 1", "ms", "batch1_ms"),
        ("real epoch", "s", "epoch_seconds"),
    ];
    let mut chart: Vec<vlinder::plot::BarPanel> = panels
        .iter()
        .map(|(title, unit, _)| (title.to_string(), unit.to_string(), Vec::new()))
        .collect();
    for (who, values) in &runs {
        for ((_, _, key), panel) in panels.iter().zip(&mut chart) {
            if let Some(v) = values.get(key) {
                panel.2.push((who.to_string(), stats(v.clone())[0]));
            }
        }
        let measures: serde_json::Map<String, serde_json::Value> = values
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(stats(v.clone()))))
            .collect();
        json.insert(who.to_string(), measures.into());
    }
    json.insert(
        "gemm_gflops".into(),
        serde_json::json!([peak, peak_lo, peak_hi]),
    );
    json.insert("threads".into(), threads.into());
    json.insert("repetitions".into(), REPETITIONS.into());
    json.insert("epochs_per_run".into(), EPOCHS.into());
    chart.retain(|panel| !panel.2.is_empty());
    vlinder::files::write_json(&out.join("speed.json"), &json).expect("speed.json is written");
    vlinder::plot::bar_panels(&chart, &out.join("speed.png")).expect("speed.png is written");
    println!(
        "written: {}, {}",
        out.join("speed.json").display(),
        out.join("speed.png").display()
    );
}
