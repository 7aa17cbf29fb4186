//! EfficientNet-Lite0 speed on this machine, vlinder beside ONNX Runtime in the same run,
//! interleaved: the pooled features at 224 and 320 pixels, batch 32 (images/s) and batch 1
//! (ms), from random normalised inputs; then the ratios, from the medians of the rounds. vlinder
//! runs its frozen CPU path (what predict, check, serve and feature extraction use); burn's own
//! layers, the path before it, are measured once for the record. Last, batch-1 latency of a
//! network that looks twice (640x640 input, `--focus 320`); the share of the machine's float32
//! matrix-product rate reached; and end to end, as whole processes on the 900 photos of
//! `inat_uk_3species_csellwood`: `vlinder train` with the README's 224 transfer command
//! (feature extraction is most of it; its peak memory), `vlinder predict` (images/s, decoding
//! included) and `vlinder check` (records/s), median of 3. Then a fine-tuning step through all
//! 16 blocks (batch 32 at 224: forward, backward, an RMSprop update) on the fused blocks beside
//! PyTorch eager's step (`benches/lite0_pytorch_train.py`, when `VLINDER_TORCH_PYTHON`, default
//! /tmp/torch-anchor/bin/python, exists), interleaved, and once on burn's layers.
//!
//! `cargo bench --bench backbone`. `VLINDER_SHARED` points at the shared folder (default
//! ../shared). ONNX Runtime runs through `benches/lite0_onnxruntime.py` when
//! `VLINDER_ORT_PYTHON` (default /tmp/ort-anchor/bin/python) exists (its set-up is in the
//! script); `VLINDER_BENCH_ROUNDS` (3) sets the rounds. `VLINDER_BENCH_ONLY=features` measures
//! the interleaved table alone (a minute or two, for tuning kernels). Results also go to
//! target/bench/backbone.json.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

mod common;

use burn::optim::{GradientsParams, RmsPropConfig};
use burn::prelude::*;
use vlinder::model::efficientnet::{EfficientNetLite, Head, Pooling, TransferNet, Viewing};

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
fn seconds(backbone: &EfficientNetLite, batch: usize, side: usize, reps: usize) -> f64 {
    let device = Device::flex();
    let x = Tensor::<4>::random(
        [batch, 3, side, side],
        burn::tensor::Distribution::Uniform(-1.0, 1.0),
        &device,
    );
    let data = x.into_data();
    // A tensor of its own for each pass, made before the clock starts, as predict's decoded
    // photos are: a tensor shared with the caller is copied out first (19 MB into fresh pages
    // at 224 batch 32), which the ONNX Runtime side, handed a numpy array, does not do.
    let once = || {
        let x = Tensor::<4>::from_data(data.clone(), &device);
        let start = Instant::now();
        std::hint::black_box(backbone.features(x).into_data());
        start.elapsed().as_secs_f64()
    };
    once();
    median((0..reps).map(|_| once()).collect())
}

/// One round of vlinder's measures.
fn vlinder_round(backbone: &EfficientNetLite) -> Measures {
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

/// The `RESULT {json}` line of a reference script in benches/ run on `weights` with as many
/// threads as vlinder has and `args`, or why there is none.
fn python_result(
    python: &Path,
    script: &str,
    weights: &Path,
    args: &[&str],
) -> Result<serde_json::Value, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("benches")
        .join(script);
    let out = Command::new(python)
        .arg(&script)
        .arg(weights)
        .args(["--threads", &rayon::current_num_threads().to_string()])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    serde_json::from_str(line).map_err(|e| e.to_string())
}

/// One round of ONNX Runtime's measures, or why there is none.
fn onnxruntime_round(python: &Path, weights: &Path) -> Result<Measures, String> {
    let sizes: Vec<String> = SIZES.iter().map(|s| s.to_string()).collect();
    let json = python_result(
        python,
        "lite0_onnxruntime.py",
        weights,
        &["--sizes", &sizes.join(","), "--batch", &BATCH.to_string()],
    )?;
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
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    let mut report = serde_json::Map::new();
    let features_only = std::env::var("VLINDER_BENCH_ONLY").is_ok_and(|v| v == "features");
    // First, while this process is small: a child's peak memory as the system reports it
    // starts from its parent's size at the fork.
    if !features_only {
        end_to_end(
            &common::shared(),
            &common::lite0_weights(),
            &dir,
            &mut report,
        );
    }
    let frozen = common::lite0(&device).freeze();
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
    if features_only {
        return save(&dir, &report);
    }
    let b32 = median(ours[&format!("224 batch {BATCH} img/s")].clone());
    let peak = median((0..3).map(|_| common::gemm_gflops(&device)).collect());
    println!(
        "224 batch {BATCH}: {:.1} GMAC/s = {:.1} GFLOP/s, {:.0}% of this machine's float32 matrix product (1024^3 on burn flex: {peak:.1} GFLOP/s, median of 3)",
        b32 * LITE0_MACS_224 / 1e9,
        2.0 * b32 * LITE0_MACS_224 / 1e9,
        100.0 * 2.0 * b32 * LITE0_MACS_224 / 1e9 / peak
    );
    report.insert("gemm GFLOP/s".into(), peak.into());
    let burn_layers = common::lite0(&device).with_burn_layers();
    let unfused = BATCH as f64 / seconds(&burn_layers, BATCH, 224, 1);
    println!("burn's layers (before the frozen path), 224 batch {BATCH}: {unfused:.1} img/s");
    report.insert("burn layers 224 batch 32 img/s".into(), unfused.into());
    let twice = TransferNet {
        backbone: frozen.clone(),
        head: Head::new(3, &device),
        viewing: Viewing {
            pooling: Pooling::Gem,
            focus: Some(320),
            mirror: false,
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
    fine_tuning(rounds, &weights, &mut report);
    save(&dir, &report);
}

fn save(dir: &Path, report: &serde_json::Map<String, serde_json::Value>) {
    std::fs::write(
        dir.join("backbone.json"),
        serde_json::to_string_pretty(report).expect("JSON"),
    )
    .expect("target/bench/backbone.json");
}

/// The image side and batch of the fine-tuning step.
const STEP_SIDE: usize = 224;

/// Seconds per fine-tuning step through every block, median of `reps` after one warm-up: the
/// loss of a new 3-class head on `BATCH` random images, backward, an RMSprop update (the
/// settings of `vlinder train --fine-tune`).
fn step_seconds(backbone: EfficientNetLite, reps: usize) -> f64 {
    let device = Device::flex().autodiff();
    let mut net = TransferNet {
        backbone,
        head: Head::new(3, &device),
        viewing: Viewing::default(),
    };
    let mut optim = RmsPropConfig::new()
        .with_alpha(0.9)
        .with_momentum(0.0)
        .with_epsilon(1e-7)
        .init();
    let x = Tensor::<4>::random(
        [BATCH, 3, STEP_SIDE, STEP_SIDE],
        burn::tensor::Distribution::Uniform(-1.0, 1.0),
        &device,
    );
    let labels: Vec<usize> = (0..BATCH).map(|i| i % 3).collect();
    let mut times = Vec::new();
    for _ in 0..=reps {
        let start = Instant::now();
        let loss = vlinder::model::loss(net.forward(x.clone()), &labels, 0.0);
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        net = optim.step(1e-5, net, grads);
        times.push(start.elapsed().as_secs_f64());
    }
    median(times[1..].to_vec())
}

/// PyTorch eager's fine-tuning step in seconds, or why there is none.
fn pytorch_step(python: &Path, weights: &Path) -> Result<f64, String> {
    if !python.exists() {
        return Err(format!(
            "{} not found (set VLINDER_TORCH_PYTHON; set-up in benches/lite0_pytorch_train.py)",
            python.display()
        ));
    }
    let json = python_result(
        python,
        "lite0_pytorch_train.py",
        weights,
        &[
            "--batch",
            &BATCH.to_string(),
            "--size",
            &STEP_SIDE.to_string(),
        ],
    )?;
    json["step_s"]
        .as_f64()
        .ok_or_else(|| format!("no step_s in {json}"))
}

/// The fine-tuning step on the fused blocks beside PyTorch eager's, interleaved over `rounds`,
/// and once on burn's layers.
fn fine_tuning(
    rounds: usize,
    weights: &Path,
    report: &mut serde_json::Map<String, serde_json::Value>,
) {
    let device = Device::flex().autodiff();
    let python = PathBuf::from(
        std::env::var("VLINDER_TORCH_PYTHON")
            .unwrap_or_else(|_| "/tmp/torch-anchor/bin/python".into()),
    );
    let (mut ours, mut theirs, mut missing) = (Vec::new(), Vec::new(), None);
    for round in 1..=rounds {
        ours.push(step_seconds(common::lite0(&device), 3));
        match pytorch_step(&python, weights) {
            Ok(s) => theirs.push(s),
            Err(why) => missing = Some(why),
        }
        eprintln!("fine-tuning round {round}/{rounds} done");
    }
    let ours = median(ours);
    let theirs = (!theirs.is_empty()).then(|| median(theirs));
    let burn_layers = step_seconds(common::lite0(&device).with_burn_layers(), 1);
    println!(
        "| fine-tuning step, all 16 blocks, batch {BATCH} at {STEP_SIDE}, median of {rounds} rounds | vlinder | PyTorch eager | ratio |"
    );
    println!("|---|---|---|---|");
    println!(
        "| seconds per step | {ours:.2} | {} | {} |",
        theirs.map_or("-".into(), |t| format!("{t:.2}")),
        theirs.map_or("-".into(), |t| format!("{:.2}x", t / ours))
    );
    println!("burn's layers (before the fused blocks): {burn_layers:.2} s per step");
    if let Some(why) = missing {
        println!("PyTorch not measured: {why}");
    }
    report.insert(
        "fine-tuning step s".into(),
        serde_json::json!({"vlinder": ours, "pytorch": theirs, "burn layers": burn_layers}),
    );
}

/// Seconds and peak memory (MiB) of a `vlinder` run with `args`, its output discarded; `None`
/// when it fails.
fn vlinder(args: &[std::ffi::OsString]) -> Option<(f64, f64)> {
    let start = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_vlinder"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let (ok, peak) = common::wait_with_peak_memory(child);
    ok.then(|| (start.elapsed().as_secs_f64(), peak))
}

/// The whole-process figures on the shared iNaturalist photos, into `report`.
fn end_to_end(
    shared: &Path,
    weights: &Path,
    dir: &Path,
    report: &mut serde_json::Map<String, serde_json::Value>,
) {
    let data = shared.join("data/inat_uk_3species_csellwood");
    let Ok(species) = std::fs::read_dir(&data) else {
        println!("end to end: {} not found", data.display());
        return;
    };
    let mut photos: Vec<(String, PathBuf)> = species
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            std::fs::read_dir(e.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(move |p| (name.clone(), p.path()))
        })
        .collect();
    photos.sort();
    let model = dir.join("lite0-224");
    let _ = std::fs::remove_dir_all(&model);
    let os = |s: &str| std::ffi::OsStr::new(s).to_owned();
    let train: Vec<std::ffi::OsString> = vec![
        os("train"),
        os("--data"),
        data.clone().into(),
        os("--model"),
        os("efficientnet-lite0"),
        os("--image-size"),
        os("224"),
        os("--resize"),
        os("bilinear"),
        os("--backbone"),
        weights.into(),
        os("--out"),
        model.clone().into(),
    ];
    let Some((train_s, train_peak)) = vlinder(&train) else {
        println!("end to end: `vlinder train` failed");
        return;
    };
    println!(
        "vlinder train, the 224 transfer command, {} photos: {train_s:.1} s, peak memory {train_peak:.0} MiB",
        photos.len()
    );
    // Records claiming each photo's species, every tenth the next species instead.
    let names: Vec<&String> = {
        let mut n: Vec<&String> = photos.iter().map(|(s, _)| s).collect();
        n.dedup();
        n
    };
    let mut csv = String::from("id,photo,species\n");
    for (i, (species, path)) in photos.iter().enumerate() {
        let at = names.iter().position(|n| *n == species).unwrap_or(0);
        let claim = if i % 10 == 0 {
            names[(at + 1) % names.len()]
        } else {
            species
        };
        csv.push_str(&format!("{i},{},{claim}\n", path.display()));
    }
    let records = dir.join("records.csv");
    std::fs::write(&records, csv).expect("target/bench/records.csv");
    let predict: Vec<std::ffi::OsString> = vec![
        os("predict"),
        os("--model"),
        model.clone().into(),
        data.clone().into(),
        os("--format"),
        os("csv"),
    ];
    let check: Vec<std::ffi::OsString> = vec![
        os("check"),
        os("--model"),
        model.into(),
        records.into(),
        os("--photos-root"),
        data.into(),
        os("--out"),
        dir.join("records-check").into(),
    ];
    for (what, args, unit) in [
        ("predict", predict, "images/s"),
        ("check", check, "records/s"),
    ] {
        let runs: Vec<(f64, f64)> = (0..3).filter_map(|_| vlinder(&args)).collect();
        if runs.len() < 3 {
            println!("end to end: `vlinder {what}` failed");
            continue;
        }
        let rate = median(runs.iter().map(|(s, _)| photos.len() as f64 / s).collect());
        let peak = median(runs.iter().map(|(_, p)| *p).collect());
        println!(
            "vlinder {what}, {} photos at 224, whole process: {rate:.1} {unit} (peak memory {peak:.0} MiB)",
            photos.len()
        );
        report.insert(format!("{what} {unit}"), rate.into());
    }
    report.insert("train seconds".into(), train_s.into());
    report.insert("train peak MiB".into(), train_peak.into());
}
