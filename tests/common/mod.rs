//! Helpers shared by the integration tests: the repository's sample photos, the full shared
//! photos, small subsets of them, and photo files the tests make themselves.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use vlinder::augment::AugmentParams;
use vlinder::dataset::ResizeFilter;
use vlinder::device::Backend;
use vlinder::model::{Architecture, ModelConfig, Pooling};
use vlinder::train::{Schedule, TrainConfig};

/// The photos kept in the repository (`assets/sample/`, see its README): 80 openly licensed photos of each
/// of three species, the longest side 128 pixels. Tests that need nothing else run on a fresh
/// clone.
pub fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/sample")
}

/// The shared folder with the full photo sets, the golden outputs and the Lite0 weights:
/// `$VLINDER_SHARED`, by default `../shared` beside the repository. Tests that read it are
/// `#[ignore]`d with the reason "needs ../shared"; `.ci/run` runs them where it exists.
pub fn shared() -> PathBuf {
    std::env::var_os("VLINDER_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

/// The shared data folder, `shared()/data`.
pub fn shared_data() -> PathBuf {
    let data = shared().join("data");
    assert!(
        data.is_dir(),
        "{} is missing: set VLINDER_SHARED to the folder that holds data/, golden/ and models/",
        data.display()
    );
    data
}

/// The ImageNet weights of EfficientNet-Lite0 in the shared folder (only a path: tests of settings
/// refused before the weights are read run without them).
pub fn lite0_weights() -> PathBuf {
    shared().join("models/efficientnet-lite0/efficientnet-lite0-57934424.pth")
}

/// The first `per_species` photos (sorted by name) of each named species of the repository's
/// sample, linked into a new ImageFolder under `dir`.
pub fn subset(dir: &Path, species: &[&str], per_species: usize) -> PathBuf {
    link_photos(&sample(), species, 0..per_species, &dir.join("photos"))
}

/// As [`subset`], from the full iNaturalist set in the shared folder: for the tests that need
/// ../shared anyway (their thresholds were set on these photos).
pub fn shared_subset(dir: &Path, species: &[&str], per_species: usize) -> PathBuf {
    link_photos(
        &shared_data().join("inat_uk_3species_csellwood"),
        species,
        0..per_species,
        &dir.join("photos"),
    )
}

/// The photos at positions `range` (sorted by name) of each named species folder of `source`,
/// linked into `root/<species>/`.
pub fn link_photos(
    source: &Path,
    species: &[&str],
    range: std::ops::Range<usize>,
    root: &Path,
) -> PathBuf {
    for name in species {
        let mut files: Vec<PathBuf> = std::fs::read_dir(source.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", source.join(name).display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        std::fs::create_dir_all(root.join(name)).unwrap();
        for file in &files[range.clone()] {
            std::os::unix::fs::symlink(file, root.join(name).join(file.file_name().unwrap()))
                .unwrap();
        }
    }
    root.to_path_buf()
}

/// The bytes of one real JPEG from the sample.
pub fn real_jpeg() -> Vec<u8> {
    std::fs::read(sample().join("gonepteryx_rhamni/inaturalist-54184062.jpg")).unwrap()
}

/// Runs the `vlinder` binary with `args`; returns (exit success, stdout, stderr).
pub fn vlinder(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vlinder"))
        .args(args)
        .output()
        .expect("the vlinder binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Training seeds the backend's random generator, which is global to the process: tests that
/// train hold this lock so that concurrent tests do not draw from each other's sequence.
pub fn training_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A quick training configuration for tests: the recipe at 32x32 on `data`, a quarter held out,
/// no augmentation, seed 3.
pub fn quick_config(data: &Path, epochs: usize) -> TrainConfig {
    TrainConfig {
        data: Some(data.to_path_buf()),
        train: None,
        validation: None,
        validation_split: 0.25,
        model: ModelConfig {
            architecture: Architecture::Recipe,
            image_size: 32,
            resize: ResizeFilter::Bilinear,
            pooling: Pooling::Gem,
            focus: None,
            mirror: false,
            imagenet_tail: 0,
        },
        epochs,
        batch_size: 16,
        learning_rate: 1e-3,
        rho: 0.9,
        epsilon: 1e-7,
        seed: 3,
        backbone: None,
        feature_copies: 4,
        fine_tune: 0,
        fine_tune_epochs: 10,
        fine_tune_learning_rate: 1e-4,
        fine_tune_schedule: Schedule::Constant,
        fine_tune_warmup: 0,
        fine_tune_patience: None,
        fine_tune_from: Default::default(),
        label_smoothing: 0.0,
        mixup: 0.0,
        others: None,
        unknown: None,
        observations: None,
        reviewed: None,
        prior: None,
        keep: 0.95,
        unknown_features: vlinder::train::UnknownFeatures::Imagenet,
        no_augment: true,
        augment: AugmentParams::default(),
        device: Backend::Flex,
    }
}

/// `config` with its network's description changed by `change`.
pub fn with_model(mut config: TrainConfig, change: impl FnOnce(&mut ModelConfig)) -> TrainConfig {
    change(&mut config.model);
    config
}

/// Reads a little-endian float32 `.npy` file in C order: (shape, values).
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{} is not .npy", path.display());
    let (header_len, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let values = bytes[start + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (shape, values)
}

/// A web server on 127.0.0.1 for the rest of the test: `answer(path)` gives the content type
/// and body of each GET. Returns the base URL, `http://127.0.0.1:PORT`.
pub fn web_server(answer: impl Fn(&str) -> (&'static str, Vec<u8>) + Send + 'static) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let n = stream.read(&mut request).unwrap_or(0);
            let request = String::from_utf8_lossy(&request[..n]);
            let (kind, body) = answer(request.split_whitespace().nth(1).unwrap_or("/"));
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    base
}

/// `vlinder check` of `records` with `model` and the default columns and thresholds.
pub fn check_config(model: &Path, records: &Path) -> vlinder::check::CheckConfig {
    vlinder::check::CheckConfig {
        input: check_input(model, records),
        out: None,
    }
}

/// What `check` and `queue import` read: `records` with `model`, the default columns and
/// thresholds, photos from anywhere.
pub fn check_input(model: &Path, records: &Path) -> vlinder::check::CheckInput {
    vlinder::check::CheckInput {
        model: model.to_path_buf(),
        records: records.to_path_buf(),
        columns: vlinder::check::records::Columns::default(),
        table: Default::default(),
        // The fixtures are links into the sample or ../shared and files in temporary folders.
        photos_root: Some("/".into()),
        // Photo URLs in the tests are served on 127.0.0.1.
        allow_private_urls: true,
        names: None,
        thresholds: vlinder::check::Thresholds::default(),
        weights: vlinder::trained::WeightsChoice::Last,
        device: Backend::Flex,
    }
}

/// Evaluation of `model` on the validation part of its own split of `data`, written into `out`.
pub fn validation_config(
    model: &Path,
    data: &Path,
    out: &Path,
) -> vlinder::evaluate::EvaluateConfig {
    vlinder::evaluate::EvaluateConfig {
        model: model.to_path_buf(),
        data: data.to_path_buf(),
        split: vlinder::evaluate::SplitChoice::Validation,
        weights: vlinder::trained::WeightsChoice::Last,
        unknown: None,
        thresholds: vlinder::check::Thresholds::default(),
        out: Some(out.to_path_buf()),
        device: Backend::Flex,
    }
}

/// Evaluates `model` on the validation part of its own split of `data`, writing into `out`.
pub fn evaluate_validation(
    model: &Path,
    data: &Path,
    out: &Path,
) -> vlinder::evaluate::EvaluationReport {
    vlinder::evaluate::evaluate(&validation_config(model, data, out)).unwrap()
}

/// One request to [`api_server`]: its path and decoded query parameters, in order.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub path: String,
    pub query: Vec<(String, String)>,
}

impl ApiRequest {
    /// The first value of the query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A pseudo-header of an [`ApiReply`]: the connection is closed after this many bytes of the
/// body (the declared length stays that of the whole body), as a network failure would.
pub const CUT_AFTER: &str = "x-test-cut-after";
/// A pseudo-header of an [`ApiReply`]: the answer waits this many milliseconds.
pub const DELAY_MS: &str = "x-test-delay-ms";

/// An answer of [`api_server`]: status, extra headers and body.
pub struct ApiReply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl ApiReply {
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        ApiReply {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn status(status: u16) -> Self {
        ApiReply {
            status,
            headers: Vec::new(),
            body: b"{}".to_vec(),
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// A stand-in for a remote API on 127.0.0.1, each connection served on its own thread:
/// `answer` gets every GET with the server's base URL (for links in its answers) and gives the
/// reply. Returns the base URL, `http://127.0.0.1:PORT`.
pub fn api_server(
    answer: impl Fn(&ApiRequest, &str) -> ApiReply + Send + Sync + 'static,
) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let answer = std::sync::Arc::new(answer);
    let served = base.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (answer, base) = (answer.clone(), served.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    return;
                }
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let target = first.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let request = ApiRequest {
                    path: path.to_string(),
                    query: query
                        .split('&')
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once('=').unwrap_or((p, ""));
                            (percent_decode(k), percent_decode(v))
                        })
                        .collect(),
                };
                let reply = answer(&request, &base);
                let mut head = format!(
                    "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    reply.status,
                    reply.body.len()
                );
                let mut body: &[u8] = &reply.body;
                for (k, v) in &reply.headers {
                    match *k {
                        CUT_AFTER => body = &body[..v.parse::<usize>().unwrap().min(body.len())],
                        DELAY_MS => {
                            std::thread::sleep(std::time::Duration::from_millis(v.parse().unwrap()))
                        }
                        _ => head.push_str(&format!("{k}: {v}\r\n")),
                    }
                }
                head.push_str("\r\n");
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body);
            });
        }
    });
    base
}

/// Small real JPEGs: 24x24 crops of a real photo, a different one for each `n` (up to 6,000
/// in a row), so each has its own bytes.
pub fn small_real_jpeg(n: usize) -> Vec<u8> {
    use std::sync::OnceLock;
    static PHOTO: OnceLock<image::RgbImage> = OnceLock::new();
    let photo = PHOTO.get_or_init(|| image::load_from_memory(&real_jpeg()).unwrap().to_rgb8());
    let (w, h) = photo.dimensions();
    // Every crop position once before any repeats: more distinct photos than a test asks for.
    let (columns, rows) = ((w - 24) as usize, (h - 24) as usize);
    let x = (n % columns) as u32;
    let y = (n / columns % rows) as u32;
    let crop = image::imageops::crop_imm(photo, x, y, 24, 24).to_image();
    let mut bytes = Vec::new();
    crop.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
        &mut bytes, 90,
    ))
    .unwrap();
    bytes
}

/// `vlinder serve` with `config` on a thread of its own, listening on the port `config.addr`
/// names (0: any free one).
pub struct Server {
    pub addr: std::net::SocketAddr,
    stop: tokio::sync::mpsc::UnboundedSender<()>,
    pub thread: Option<std::thread::JoinHandle<vlinder::Result<()>>>,
}

impl Server {
    pub fn with(config: vlinder::serve::ServeConfig) -> Server {
        let (stop, stopped) = tokio::sync::mpsc::unbounded_channel();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(config.addr).await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                vlinder::serve::serve(&config, listener, stopped).await
            })
        });
        let addr = addr_rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap();
        Server {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Asks the server to stop (a first Ctrl-C), without waiting.
    pub fn begin_shutdown(&self) {
        self.stop.send(()).unwrap();
    }

    /// Stops the server gracefully and returns what `serve` returned.
    pub fn shutdown(mut self) -> vlinder::Result<()> {
        self.stop.send(()).unwrap();
        self.thread.take().unwrap().join().unwrap()
    }
}

/// An HTTP client that returns 4xx and 5xx answers instead of failing on them.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .new_agent()
}
