//! What the benchmarks share: the pretrained backbone from the shared folder, the machine's
//! float32 matrix-product rate, and the peak memory of a child process.

// Each benchmark uses a part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Child;
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
