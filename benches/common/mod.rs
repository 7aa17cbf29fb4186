//! What the benchmarks share: the pretrained backbone from the shared folder, the machine's
//! float32 matrix-product rate, the peak memory of a child process, and a quick model and a
//! queue server for the load benchmarks.

// Each benchmark uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use vlinder::model::efficientnet::EfficientNetLite;

/// EfficientNet-Lite0 with the ImageNet weights in `$VLINDER_SHARED/models` (default
/// ../shared beside the repository), without its classifier.
pub fn lite0(device: &Device) -> EfficientNetLite {
    EfficientNetLite::from_pytorch(
        vlinder::model::efficientnet::LITE0,
        &lite0_weights(),
        false,
        device,
    )
    .expect("the shared EfficientNet-Lite0 weights")
}

/// The shared folder: `$VLINDER_SHARED`, default ../shared beside the repository; absolute,
/// since the benches hand it to commands that read paths relative to other files (`check`
/// reads `--photos-root` relative to its CSV).
pub fn shared() -> PathBuf {
    let path = std::env::var_os("VLINDER_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    std::path::absolute(&path).unwrap_or(path)
}

/// The shared EfficientNet-Lite0 ImageNet weights file.
pub fn lite0_weights() -> PathBuf {
    shared().join("models/efficientnet-lite0/efficientnet-lite0-57934424.pth")
}

/// GFLOP/s of a 1024x1024 float32 matrix product on the backend.
pub fn gemm_gflops(device: &Device) -> f64 {
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

/// Waits for `child`; whether it succeeded, and its peak resident memory in MiB.
pub fn wait_with_peak_memory(child: Child) -> (bool, f64) {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, which nothing else has reaped; both pointers are to
    // locals that outlive the call.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let ok = pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (ok, usage.ru_maxrss as f64 / 1024.0)
}

/// A process's peak resident memory so far, in MiB (0 where /proc cannot tell).
pub fn peak_memory_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A tiny model of the sample's three species at `out`, for a server to load (one epoch at
/// 24 pixels: the load benchmarks measure the server, not the network).
pub fn quick_model(out: &Path) {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let trained = Command::new(env!("CARGO_BIN_EXE_vlinder"))
        .args(["train", "--data"])
        .arg(repo.join("assets/sample"))
        .args([
            "--epochs",
            "1",
            "--image-size",
            "24",
            "--no-augment",
            "--out",
        ])
        .arg(out)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(trained.success());
}

/// `vlinder serve --model MODEL --database URL` on a free loopback port: the process and the
/// address it listens on.
pub fn queue_server(model: &Path, url: &str) -> (Child, std::net::SocketAddr) {
    let mut server = Command::new(env!("CARGO_BIN_EXE_vlinder"))
        .args(["serve", "--model"])
        .arg(model)
        .args(["--database", url, "--addr", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server says where it listens")
            .unwrap();
        if let Some(at) = line.split(" on http://").nth(1) {
            break at.trim().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (server, addr)
}
