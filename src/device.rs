//! Picking the compute device at run time. The CPU backend (`flex`) is the default build; other
//! backends are cargo features, and naming one that was not built gives a clear error.

use burn::prelude::Device;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The compute backends vlinder knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Pure-Rust CPU backend (feature `flex`, the default).
    #[default]
    Flex,
    /// NVIDIA GPU (feature `cuda`).
    Cuda,
    /// Any GPU through WebGPU (feature `wgpu`).
    Wgpu,
    /// LibTorch (feature `tch`).
    Tch,
}

impl Backend {
    /// The device for this backend, or an error naming the cargo feature to build with.
    pub fn device(self) -> Result<Device> {
        match self {
            #[cfg(feature = "flex")]
            Backend::Flex => {
                keep_freed_memory();
                Ok(Device::flex())
            }
            #[cfg(feature = "cuda")]
            Backend::Cuda => Ok(Device::cuda(0)),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => Ok(Device::wgpu(Default::default())),
            #[cfg(feature = "tch")]
            Backend::Tch => Ok(Device::libtorch()),
            #[allow(unreachable_patterns)]
            other => Err(Error::invalid(
                "device",
                format!("{other:?}").to_lowercase(),
                format!(
                    "this vlinder was built without it; rebuild with `cargo install --path . --features {}`",
                    format!("{other:?}").to_lowercase()
                ),
            )),
        }
    }
}

/// Tells glibc's allocator to keep freed memory for reuse instead of handing it back to the
/// system. A training step on the CPU allocates and frees the same tens of megabytes each time;
/// by default glibc maps and unmaps them, and the page faults and zeroing that follow cost 10-15%
/// of the recipe's training step on a 2-core machine (`cargo bench --bench speed`).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: mallopt only changes allocator thresholds; it runs once, before the backend
        // allocates, and glibc serialises it with allocations.
        ONCE.call_once(|| unsafe {
            // 32 MiB, the most glibc accepts: larger blocks are still mapped on their own.
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        });
    }
}
