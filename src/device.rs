//! Picking the compute device at run time. The CPU backend (`flex`) is the default build; other
//! backends are cargo features, and naming one that was not built gives a clear error.

use burn::prelude::Device;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The compute backends vlinder knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
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
            Backend::Flex => Ok(Device::flex()),
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
