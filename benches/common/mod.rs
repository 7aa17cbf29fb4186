//! What the benchmarks share: the pretrained backbone from the shared folder.

use std::path::PathBuf;

use burn::prelude::Device;
use vlinder::model::efficientnet::EfficientNetLite0;

/// EfficientNet-Lite0 with the ImageNet weights in `$VLINDER_SHARED/models` (default
/// ../shared beside the repository), without its classifier.
pub fn lite0(device: &Device) -> EfficientNetLite0 {
    EfficientNetLite0::from_pytorch(&lite0_weights(), false, device)
        .expect("the shared EfficientNet-Lite0 weights")
}

/// The shared EfficientNet-Lite0 ImageNet weights file.
#[allow(dead_code)] // not every benchmark needs the file itself
pub fn lite0_weights() -> PathBuf {
    let shared = std::env::var_os("VLINDER_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    shared.join("models/efficientnet-lite0/efficientnet-lite0-57934424.pth")
}
