//! The HTTP service against a running server on 127.0.0.1: every endpoint, every bad input, a
//! burst of concurrent requests, slow clients and graceful shutdown.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vlinder::check::Thresholds;
use vlinder::serve::{self, ServeConfig};
use vlinder::train::{self, TrainConfig};

const PAIR: [&str; 2] = ["celastrina_argiolus", "gonepteryx_rhamni"];

fn tiny_model(dir: &Path) -> PathBuf {
    let data = common::subset(dir, &PAIR, 12);
    let out = dir.join("model");
    let _serial = common::training_lock();
    train::train(
        &TrainConfig {
            batch_size: 8,
            seed: 1,
            ..common::with_model(common::quick_config(&data, 1), |m| m.image_size = 24)
        },
        &out,
    )
    .unwrap();
    out
}

/// Builds the application as `vlinder serve` would, on a runtime of its own.
fn app(config: &ServeConfig) -> vlinder::Result<axum::Router> {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(serve::app(config))
}

fn serve_config(model: &Path, max_upload_bytes: usize, timeout_seconds: u64) -> ServeConfig {
    ServeConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        max_upload_bytes,
        timeout_seconds,
        max_batch: 8,
        model: model.to_path_buf(),
        ..ServeConfig::default()
    }
}

use common::{Server, agent};

impl Server {
    fn start(model: &Path, max_upload_bytes: usize, timeout_seconds: u64) -> Server {
        Server::with(serve_config(model, max_upload_bytes, timeout_seconds))
    }
}

/// Status and parsed JSON body of a POST.
fn post(url: &str, content_type: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let mut response = agent()
        .post(url)
        .header("Content-Type", content_type)
        .send(body)
        .unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}")),
    )
}

fn multipart(fields: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "vlinder-test-boundary";
    let mut body = Vec::new();
    for (name, value) in fields {
        let filename = if *name == "photo" {
            "; filename=\"p.jpg\""
        } else {
            ""
        };
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{filename}\r\n\r\n"
        )
        .unwrap();
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// The parsed answer of `GET /healthz`.
fn health_of(server: &Server) -> serde_json::Value {
    let mut answer = agent().get(&server.url("/healthz")).call().unwrap();
    serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).unwrap()
}

fn error_code(value: &serde_json::Value) -> &str {
    value["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error answer: {value}"))
}

#[test]
fn every_endpoint_answers_and_bad_inputs_get_json_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let server = Server::start(&model, 300_000, 30);
    let photo = common::real_jpeg();

    // A deadline past the clock's range is a range error, not a panic.
    for timeout in [0, u64::MAX] {
        let err = app(&serve_config(&model, 300_000, timeout))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("timeout-seconds") && err.contains("between 1 and 3600"),
            "{err}"
        );
    }

    let mut health = agent().get(&server.url("/healthz")).call().unwrap();
    let health: serde_json::Value =
        serde_json::from_str(&health.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["model_thread"], "running");
    assert_eq!(health["failed_batches"], 0);
    // The service's own settings are checked before the model loads.
    type Setting = fn(&mut ServeConfig);
    let settings: [(&str, Setting, &str); 5] = [
        (
            "header-timeout-seconds",
            |c| c.header_timeout_seconds = 0,
            "between 1 and 3600",
        ),
        (
            "shutdown-seconds",
            |c| c.shutdown_seconds = 99999,
            "between 1 and 3600",
        ),
        (
            "max-pixels",
            |c| c.max_pixels = 0,
            "between 1 and 100000000",
        ),
        (
            "max-connections",
            |c| c.max_connections = 0,
            "between 1 and 65536",
        ),
        ("decoders", |c| c.decoders = Some(0), "between 1 and 1024"),
    ];
    for (option, set, range) in settings {
        let mut config = ServeConfig {
            model: model.clone(),
            ..ServeConfig::default()
        };
        set(&mut config);
        let err = app(&config).unwrap_err().to_string();
        assert!(
            err.contains(option) && err.contains(range),
            "{option}: {err}"
        );
    }
    let mut card = agent().get(&server.url("/v1/model")).call().unwrap();
    let card: serde_json::Value =
        serde_json::from_str(&card.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(card["species"], serde_json::json!(PAIR));
    // Local paths are left out of the public card (--expose-paths shows them).
    assert!(card["training"]["data"].is_null(), "{}", card["training"]);
    assert!(!card.to_string().contains(tmp.path().to_str().unwrap()));
    // A method an endpoint does not take gets 405 in the same error shape.
    let mut wrong = agent().get(&server.url("/v1/classify")).call().unwrap();
    assert_eq!(wrong.status(), 405);
    let body: serde_json::Value =
        serde_json::from_str(&wrong.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(error_code(&body), "method_not_allowed");
    let mut page = agent().get(&server.url("/")).call().unwrap();
    let page = page.body_mut().read_to_string().unwrap();
    assert!(page.contains("id=\"species\"") && page.contains("/v1/check"));

    // Classify: a raw body and a form give the same ranking, which sums to 1.
    let (status, raw) = post(&server.url("/v1/classify"), "image/jpeg", &photo);
    assert_eq!(status, 200, "{raw}");
    let ranking = raw["ranking"].as_array().unwrap();
    let total: f64 = ranking
        .iter()
        .map(|r| r["probability"].as_f64().unwrap())
        .sum();
    assert_eq!(ranking.len(), 2);
    assert!((total - 1.0).abs() < 1e-5);
    let (ct, body) = multipart(&[("photo", &photo)]);
    let (status, form) = post(&server.url("/v1/classify"), &ct, &body);
    assert_eq!((status, &form), (200, &raw));
    // The photo's unknown-ness comes with every answer, consistent with its threshold.
    let novelty = &raw["novelty"];
    assert_eq!(
        novelty["unknown"].as_bool().unwrap(),
        novelty["score"].as_f64().unwrap() > novelty["threshold"].as_f64().unwrap(),
        "{raw}"
    );

    // Check: the verdict against the claimed species, from a form or a query.
    let (ct, body) = multipart(&[("photo", &photo), ("species", PAIR[1].as_bytes())]);
    let (status, answer) = post(&server.url("/v1/check"), &ct, &body);
    assert_eq!(status, 200, "{answer}");
    let p_claimed = answer["claimed_probability"].as_f64().unwrap();
    let doubt = answer["doubt"].as_f64().unwrap();
    if answer["novelty"]["unknown"] == true {
        // A photo unlike the training photos is `unknown`, and at least as doubtful as even.
        assert_eq!(answer["verdict"], "unknown", "{answer}");
        assert!(doubt >= 0.5 && doubt >= 1.0 - p_claimed - 1e-6, "{answer}");
    } else {
        assert!(
            ["agrees", "disagrees", "uncertain"].contains(&answer["verdict"].as_str().unwrap()),
            "{answer}"
        );
        assert!((doubt - (1.0 - p_claimed)).abs() < 1e-6);
    }
    let (status, unknown) = post(
        &server.url("/v1/check?species=vanessa_atalanta"),
        "image/jpeg",
        &photo,
    );
    assert_eq!(
        (status, unknown["verdict"].as_str().unwrap()),
        (200, "unknown_species")
    );
    let (status, missing) = post(&server.url("/v1/check"), "image/jpeg", &photo);
    assert_eq!((status, error_code(&missing)), (400, "missing_species"));

    // Bad photos.
    let (status, e) = post(&server.url("/v1/classify"), "image/jpeg", b"");
    assert_eq!((status, error_code(&e)), (400, "empty"));
    let (status, e) = post(
        &server.url("/v1/classify"),
        "image/jpeg",
        b"<html>not a photo</html>",
    );
    assert_eq!((status, error_code(&e)), (422, "bad_photo"));
    let (status, e) = post(
        &server.url("/v1/classify"),
        "image/jpeg",
        &photo[..photo.len() / 2],
    );
    assert_eq!((status, error_code(&e)), (422, "bad_photo"));
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("truncated"),
        "{e}"
    );
    let (status, e) = post(&server.url("/v1/classify"), "image/png", &bomb_png());
    assert_eq!((status, error_code(&e)), (422, "bad_photo"));
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("megapixels"),
        "{e}"
    );
    // Over the limit: refused from the declared length, before the body is read.
    let mut big = std::net::TcpStream::connect(server.addr).unwrap();
    write!(big, "POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 400000\r\n\r\n").unwrap();
    big.write_all(&[0u8; 1000]).unwrap();
    let mut reply = vec![0u8; 4096];
    let n = big.read(&mut reply).unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(
        reply.starts_with("HTTP/1.1 413") && reply.contains("too_large"),
        "{reply}"
    );
    let (status, e) = post(
        &server.url("/v1/classify"),
        "multipart/form-data; boundary=xyz",
        b"--xyz\r\ngarbage",
    );
    assert_eq!((status, error_code(&e)), (400, "bad_multipart"));
    let (status, e) = post(
        &server.url("/v1/classify"),
        "multipart/form-data",
        b"no boundary",
    );
    assert_eq!((status, error_code(&e)), (400, "bad_multipart"));
    let (ct, body) = multipart(&[("species", PAIR[0].as_bytes())]);
    let (status, e) = post(&server.url("/v1/check"), &ct, &body);
    assert_eq!((status, error_code(&e)), (400, "missing_photo"));
    let mut not_found = agent().get(&server.url("/v2/nothing")).call().unwrap();
    assert_eq!(not_found.status().as_u16(), 404);
    let body: serde_json::Value =
        serde_json::from_str(&not_found.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(error_code(&body), "not_found");

    // A burst of concurrent requests is batched and every one gets the right answer.
    let batches_before = health_of(&server)["batches"].as_u64().unwrap();
    let url = server.url("/v1/classify");
    let answers: Vec<serde_json::Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..24)
            .map(|_| scope.spawn(|| post(&url, "image/jpeg", &photo)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .map(|(s, v)| {
                assert_eq!(s, 200);
                v
            })
            .collect()
    });
    let batches = health_of(&server)["batches"].as_u64().unwrap() - batches_before;
    assert!(
        batches < 24,
        "24 concurrent photos took {batches} passes of the model: some were batched"
    );
    for a in &answers {
        let ranking = a["ranking"].as_array().unwrap();
        assert_eq!(ranking.len(), PAIR.len(), "{a}");
        for (x, y) in ranking.iter().zip(raw["ranking"].as_array().unwrap()) {
            assert_eq!(x["species"], y["species"]);
            assert!(
                (x["probability"].as_f64().unwrap() - y["probability"].as_f64().unwrap()).abs()
                    < 1e-5
            );
        }
    }

    // Still serving after all that, and it stops cleanly.
    assert_eq!(
        agent()
            .get(&server.url("/healthz"))
            .call()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    server.shutdown().unwrap();
}

/// A PNG of a few bytes whose header claims 15,000 x 15,000 pixels (225 megapixels), with the
/// start of a compressed stream that would inflate to them.
fn bomb_png() -> Vec<u8> {
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, 15_000, 15_000);
        encoder.set_color(png::ColorType::Grayscale);
        let mut writer = encoder.write_header().unwrap();
        writer
            .write_chunk(png::chunk::IDAT, &[0x78, 0x9c, 0x01])
            .unwrap();
    }
    bytes
}

#[test]
fn a_slow_client_times_out_and_others_are_still_served() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let server = Server::start(&model, 1_000_000, 1);
    let mut slow = std::net::TcpStream::connect(server.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(slow, "POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\npartial").unwrap();
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // In the documented error shape.
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let body = body.trim_start_matches(|c: char| c.is_ascii_hexdigit() || c == '\r' || c == '\n');
    assert!(body.contains(r#"{"error":{"code":"timeout""#), "{answer}");
    // The next client is served; on two busy cores a photo can itself take the 1 s this server
    // allows, so it may try a few times.
    let served = (0..5).any(|_| {
        post(
            &server.url("/v1/classify"),
            "image/jpeg",
            &common::real_jpeg(),
        )
        .0 == 200
    });
    assert!(served, "no 200 in 5 tries");
    server.shutdown().unwrap();
}

/// `vlinder serve` as a child process on a free port of 127.0.0.1.
struct ServeProcess {
    child: std::process::Child,
    addr: SocketAddr,
}

impl ServeProcess {
    fn start(model: &Path, extra: &[&str]) -> ServeProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vlinder"))
            .args(["serve", "--model", model.to_str().unwrap()])
            .args(["--addr", "127.0.0.1:0"])
            .args(extra)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (found, addr) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if let Some(at) = line.split(" on http://").nth(1) {
                    let _ = found.send(at.trim().parse::<SocketAddr>().unwrap());
                }
            }
        });
        let addr = addr.recv_timeout(Duration::from_secs(60)).unwrap();
        ServeProcess { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The most memory the process has held, in MiB (VmHWM).
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .unwrap()
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        kib / 1024.0
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Waits (at most `limit`) for the process to exit: its success and how long it took.
    fn wait(&mut self, limit: Duration) -> (bool, Duration) {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.success(), started.elapsed());
            }
            assert!(started.elapsed() < limit, "still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real RGBA PNG of `width` x `height` black pixels: a few hundred KB that inflate to
/// 4 bytes a pixel. Written a row at a time, so the test itself stays small.
fn black_rgba_png(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, width, height);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder.write_header().unwrap();
        let mut stream = writer.stream_writer().unwrap();
        let row = vec![0u8; width as usize * 4];
        for _ in 0..height {
            stream.write_all(&row).unwrap();
        }
        stream.finish().unwrap();
    }
    bytes
}

#[test]
fn eight_decompression_bombs_at_once_keep_the_server_under_1_gb() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let server = ServeProcess::start(&model, &["--decoders", "2"]);
    // The issue's bomb (100 megapixels, 400 MB of RGBA) is refused from its header; one of 36
    // megapixels, under the 40 allowed, is decoded (144 MB of RGBA, 108 MB as RGB), two at once.
    let huge = black_rgba_png(10_000, 10_000);
    let large = black_rgba_png(6_000, 6_000);
    eprintln!("uploads of {} and {} bytes", huge.len(), large.len());
    let url = server.url("/v1/classify");
    for (photo, want) in [(&huge, 422), (&large, 200)] {
        let answers: Vec<(u16, serde_json::Value)> = std::thread::scope(|scope| {
            let posts: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| post(&url, "image/png", photo)))
                .collect();
            posts.into_iter().map(|p| p.join().unwrap()).collect()
        });
        for (status, body) in &answers {
            assert_eq!(*status, want, "{body}");
        }
        if want == 422 {
            let message = answers[0].1["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("10000 x 10000") && message.contains("40 megapixels"),
                "{message}"
            );
        }
    }
    let peak = server.peak_rss_mib();
    eprintln!("peak RSS after 8 + 8 concurrent bombs: {peak:.0} MiB");
    assert!(peak < 1024.0, "peak RSS {peak:.0} MiB");
}

#[test]
fn slow_idle_and_surplus_connections_are_closed_or_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let server = Server::with(ServeConfig {
        header_timeout_seconds: 2,
        max_connections: 3,
        ..serve_config(&model, 1_000_000, 30)
    });
    let connect = || {
        let stream = std::net::TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
    };
    // A head trickled a line at a time is cut off at the header timeout: the server closes it
    // (a read that timed out instead would be an error).
    let mut trickle = connect();
    trickle.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let _ = trickle.write_all(b"Host: x\r\n");
    let mut rest = Vec::new();
    trickle
        .read_to_end(&mut rest)
        .expect("closed by the server");
    // An idle keep-alive connection is closed after its answer.
    let mut idle = connect();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    idle.read_to_string(&mut answer)
        .expect("closed by the server");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // With three connections open, a fourth gets 503 in the error shape, with Retry-After.
    let silent: Vec<std::net::TcpStream> = (0..3).map(|_| connect()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut busy = agent().get(&server.url("/healthz")).call().unwrap();
    assert_eq!(busy.status(), 503);
    assert_eq!(busy.headers()["retry-after"], "1");
    let body: serde_json::Value =
        serde_json::from_str(&busy.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(error_code(&body), "busy");
    // Once the silent ones time out, the server answers again.
    for mut s in silent {
        let _ = s.read_to_end(&mut Vec::new());
    }
    let health = agent().get(&server.url("/healthz")).call().unwrap();
    assert_eq!(health.status(), 200);
    server.shutdown().unwrap();
}

#[test]
fn shutdown_ends_within_its_deadline_and_at_once_on_a_second_signal() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    for (signals, deadline) in [(1, 2), (2, 120)] {
        // Only the shutdown can end these clients: the other deadlines are ten minutes.
        let mut server = ServeProcess::start(
            &model,
            &[
                "--shutdown-seconds",
                &deadline.to_string(),
                "--header-timeout-seconds",
                "600",
                "--timeout-seconds",
                "600",
            ],
        );
        let mut trickle = std::net::TcpStream::connect(server.addr).unwrap();
        trickle
            .write_all(b"POST /v1/classify HTTP/1.1\r\n")
            .unwrap();
        let mut upload = std::net::TcpStream::connect(server.addr).unwrap();
        write!(upload, "POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\npartial").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        server.signal(libc::SIGTERM);
        if signals == 2 {
            std::thread::sleep(Duration::from_millis(300));
            server.signal(libc::SIGINT);
        }
        let (ok, took) = server.wait(Duration::from_secs(60));
        eprintln!("{signals} signal(s), --shutdown-seconds {deadline}: exited in {took:?}");
        assert!(ok, "exit status");
        if signals == 1 {
            assert!(
                took >= Duration::from_millis(1500) && took < Duration::from_secs(20),
                "the upload in flight gets its 2 s, no more: {took:?}"
            );
        } else {
            assert!(took < Duration::from_secs(20), "{took:?}");
        }
    }
}

/// `count` distinct small photos `p0.jpg`, `p1.jpg`... in `dir`, crops `step` apart.
fn photo_files(dir: &Path, count: usize, step: usize) -> Vec<PathBuf> {
    (0..count)
        .map(|i| {
            let path = dir.join(format!("p{i}.jpg"));
            std::fs::write(&path, common::small_real_jpeg(i * step)).unwrap();
            path
        })
        .collect()
}

/// `vlinder predict --model MODEL PHOTOS...` with the last weights on the CPU.
fn predict(model: &Path, photos: &[PathBuf]) -> Vec<vlinder::predict::Prediction> {
    vlinder::predict::predict(&vlinder::predict::PredictConfig {
        model: model.to_path_buf(),
        photos: photos.to_vec(),
        format: vlinder::predict::OutputFormat::Json,
        top: None,
        date: None,
        latitude: None,
        longitude: None,
        observations: None,
        weights: vlinder::trained::WeightsChoice::Last,
        device: vlinder::device::Backend::Flex,
    })
    .unwrap()
}

#[test]
fn predict_check_and_serve_give_the_temperature_scaled_probabilities() {
    use std::fmt::Write as _;
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    // Without the unknown-ness score, so that every verdict follows from p alone.
    let mut card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("model.json")).unwrap()).unwrap();
    card["novelty"] = serde_json::Value::Null;
    std::fs::remove_file(model.join("novelty.safetensors")).unwrap();
    let photos = photo_files(tmp.path(), 8, 977);
    let with_temperature = |t: Option<f64>| {
        let mut card = card.clone();
        match t {
            Some(t) => card["calibration"]["temperature"] = t.into(),
            None => card["calibration"] = serde_json::Value::Null,
        }
        std::fs::write(model.join("model.json"), card.to_string()).unwrap();
    };
    let predicted = || -> Vec<f64> {
        predict(&model, &photos)
            .iter()
            .map(|p| {
                let r = p.ranking.iter().find(|r| r.species == PAIR[1]).unwrap();
                r.probability as f64
            })
            .collect()
    };
    // The raw probabilities, from the model without calibration.
    with_temperature(None);
    let raw = predicted();
    let logit = |p: f64| (p / (1.0 - p)).ln();
    let scaled = |p: f64, t: f64| 1.0 / (1.0 + (-logit(p) / t).exp());
    // The test can tell calibrated from raw: T = 2 moves some p by more than the tolerance.
    assert!(
        raw.iter().any(|&p| (scaled(p, 2.0) - p).abs() > 1e-3),
        "{raw:?}"
    );
    let mut csv = String::from("id,species,photo\n");
    for (i, photo) in photos.iter().enumerate() {
        writeln!(csv, "r{i},{},{}", PAIR[1], photo.display()).unwrap();
    }
    let records = tmp.path().join("records.csv");
    std::fs::write(&records, csv).unwrap();
    let thresholds = Thresholds::default();
    // The low temperature comes from the raw probabilities: a fixed one leaves undecided the
    // photos that a one-epoch model scores within a hair of 0.5, and which those are varies with
    // the machine's rounding. At T = min|logit| / 20 every scaled logit is at least 20 (p within
    // 2e-9 of 0 or 1), so f32 rounding of p, amplified by 1/T, still moves p by under 1e-4.
    let min_logit = raw
        .iter()
        .map(|&p| logit(p).abs())
        .fold(f64::INFINITY, f64::min);
    assert!(min_logit > 1e-6, "a photo scores exactly 0.5: {raw:?}");
    let mut verdicts_seen = Vec::new();
    for t in [min_logit / 20.0, 2.0, 50.0] {
        with_temperature(Some(t));
        let want: Vec<f64> = raw.iter().map(|&p| scaled(p, t)).collect();
        let close = |got: f64, want: f64, what: &str| {
            assert!(
                (got - want).abs() < 1e-4,
                "{what} at T={t}: {got} vs {want}"
            );
        };
        for (got, want) in predicted().iter().zip(&want) {
            close(*got, *want, "predict");
        }
        let results = vlinder::check::check(&common::check_config(&model, &records)).unwrap();
        let server = Server::start(&model, 1_000_000, 30);
        let mut verdicts = Vec::new();
        for (i, photo) in photos.iter().enumerate() {
            let record = results
                .records
                .iter()
                .find(|r| r.record.id == format!("r{i}"))
                .unwrap();
            close(record.claimed_probability.unwrap(), want[i], "check");
            let bytes = std::fs::read(photo).unwrap();
            let (status, answer) = post(
                &server.url(&format!("/v1/check?species={}", PAIR[1])),
                "image/jpeg",
                &bytes,
            );
            assert_eq!(status, 200, "{answer}");
            close(
                answer["claimed_probability"].as_f64().unwrap(),
                want[i],
                "serve",
            );
            // The verdict is the one p calls for.
            let expected = if want[i] >= thresholds.agree {
                "agrees"
            } else if want[i] <= thresholds.disagree {
                "disagrees"
            } else {
                "uncertain"
            };
            assert_eq!(answer["verdict"], expected, "T={t}: {answer}");
            assert_eq!(record.verdict.as_ref().unwrap().label(), expected);
            verdicts.push(expected);
        }
        server.shutdown().unwrap();
        verdicts_seen.push(verdicts);
    }
    // A high temperature leaves every photo uncertain; a low one decides them.
    assert!(
        verdicts_seen[2].iter().all(|v| *v == "uncertain"),
        "{verdicts_seen:?}"
    );
    assert!(
        verdicts_seen[0].iter().all(|v| *v != "uncertain"),
        "{verdicts_seen:?} from {raw:?}"
    );
}

#[test]
fn requests_in_flight_at_shutdown_get_their_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let mut server = Server::start(&model, 1_000_000, 30);
    let photo = common::real_jpeg();
    // Four uploads half sent when the server is told to stop, finished after.
    let mut clients: Vec<std::net::TcpStream> = (0..4)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(server.addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            write!(
                c,
                "POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                photo.len()
            )
            .unwrap();
            c.write_all(&photo[..photo.len() / 2]).unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    server.begin_shutdown();
    std::thread::sleep(Duration::from_millis(300));
    for c in &mut clients {
        c.write_all(&photo[photo.len() / 2..]).unwrap();
    }
    for c in &mut clients {
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("\"ranking\""), "{answer}");
    }
    server.thread.take().unwrap().join().unwrap().unwrap();
}

#[test]
fn predict_answers_a_long_list_in_order_with_bad_photos_among_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let distinct = photo_files(tmp.path(), 40, 131);
    let broken = tmp.path().join("broken.jpg");
    std::fs::write(&broken, b"not a photo").unwrap();
    // More photos than one chunk of decoded pixels holds, the broken one on either side of the
    // chunk boundaries (256, 512) and last.
    let bad_at = [3, 255, 256, 511, 599];
    let photos: Vec<PathBuf> = (0..600)
        .map(|i| match bad_at.contains(&i) {
            true => broken.clone(),
            false => distinct[i % distinct.len()].clone(),
        })
        .collect();
    let alone = predict(&model, &distinct);
    let all = predict(&model, &photos);
    assert_eq!(all.len(), photos.len());
    for (i, (p, photo)) in all.iter().zip(&photos).enumerate() {
        assert_eq!(&p.photo, photo, "answer {i} is for another photo");
        if bad_at.contains(&i) {
            assert!(
                p.error.as_deref().is_some_and(|e| e.contains("broken.jpg")),
                "{p:?}"
            );
            continue;
        }
        let want = &alone[i % distinct.len()];
        assert!(p.error.is_none(), "{p:?}");
        for (got, want) in p.ranking.iter().zip(&want.ranking) {
            assert_eq!(got.species, want.species, "photo {i}");
            assert!(
                (got.probability - want.probability).abs() < 1e-5,
                "photo {i}"
            );
        }
    }
}

#[test]
fn weights_best_is_used_by_predict_check_and_serve_and_predict_reads_folders_at_any_depth() {
    use std::fmt::Write as _;
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    // Another seed's weights as the "best" ones, so that best and last surely differ; neither
    // model calibrated, so that the probabilities compare as the networks give them.
    let other = tmp.path().join("other");
    {
        let _serial = common::training_lock();
        train::train(
            &TrainConfig {
                seed: 9,
                batch_size: 8,
                ..common::with_model(common::quick_config(&tmp.path().join("photos"), 1), |m| {
                    m.image_size = 24
                })
            },
            &other,
        )
        .unwrap();
    }
    std::fs::copy(
        other.join("weights.safetensors"),
        model.join("weights-best.safetensors"),
    )
    .unwrap();
    for dir in [&model, &other] {
        let mut card: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("model.json")).unwrap())
                .unwrap();
        card["calibration"] = serde_json::Value::Null;
        std::fs::write(dir.join("model.json"), card.to_string()).unwrap();
    }
    // Photos three folders deep, and one at the top.
    let photos = tmp.path().join("to-check");
    std::fs::create_dir_all(photos.join("a/b/c")).unwrap();
    for (i, place) in ["p0.jpg", "a/p1.jpg", "a/b/p2.jpg", "a/b/c/p3.jpg"]
        .iter()
        .enumerate()
    {
        std::fs::write(photos.join(place), common::small_real_jpeg(i * 131)).unwrap();
    }
    let predict = |dir: &Path, extra: &[&str]| -> BTreeMap<String, f64> {
        let mut args = vec![
            "predict",
            "--model",
            dir.to_str().unwrap(),
            photos.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--format", "json"]);
        let (ok, stdout, stderr) = common::vlinder(&args);
        assert!(ok, "{stderr}");
        let parsed: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
        parsed
            .iter()
            .map(|p| {
                let name = Path::new(p["photo"].as_str().unwrap()).file_name().unwrap();
                let second = p["ranking"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["species"] == PAIR[1])
                    .unwrap();
                (
                    name.to_string_lossy().into_owned(),
                    second["probability"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let best = predict(&model, &["--weights", "best"]);
    let last = predict(&model, &[]);
    let other_last = predict(&other, &[]);
    assert_eq!(best.len(), 4, "every photo, at any depth: {best:?}");
    assert_eq!(best, other_last);
    assert_ne!(best, last);

    // Each photo's path by its file name.
    let path_of: BTreeMap<String, PathBuf> = vlinder::dataset::photos_below(&photos)
        .unwrap()
        .0
        .into_iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect();

    // check --weights best gives the same p for the claimed species.
    let mut csv = String::from("id,species,photo\n");
    for name in best.keys() {
        writeln!(csv, "{name},{},{}", PAIR[1], path_of[name].display()).unwrap();
    }
    let records = photos.join("records.csv");
    std::fs::write(&records, csv).unwrap();
    let (ok, _, stderr) = common::vlinder(&[
        "check",
        "--model",
        model.to_str().unwrap(),
        records.to_str().unwrap(),
        "--weights",
        "best",
    ]);
    assert!(ok, "{stderr}");
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(photos.join("records-check/check.json")).unwrap(),
    )
    .unwrap();
    for r in results["records"].as_array().unwrap() {
        let id = r["id"].as_str().unwrap();
        let p = r["claimed_probability"].as_f64().unwrap();
        assert!((p - best[id]).abs() < 1e-5, "{id}: {p} vs {}", best[id]);
    }

    // serve --weights best too.
    let server = Server::with(ServeConfig {
        weights: vlinder::trained::WeightsChoice::Best,
        ..serve_config(&model, 1_000_000, 30)
    });
    for (name, p) in &best {
        let (status, answer) = post(
            &server.url(&format!("/v1/check?species={}", PAIR[1])),
            "image/jpeg",
            &std::fs::read(&path_of[name]).unwrap(),
        );
        assert_eq!(status, 200, "{answer}");
        assert!((answer["claimed_probability"].as_f64().unwrap() - p).abs() < 1e-5);
    }
    server.shutdown().unwrap();

    // --top 1: one species a photo in the table.
    let (ok, table, _) = common::vlinder(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        photos.to_str().unwrap(),
        "--top",
        "1",
    ]);
    assert!(ok);
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{table}");
    let species_shown = |row: &str| {
        PAIR.iter()
            .map(|s| row.matches(&format!("{s} (")).count())
            .sum::<usize>()
    };
    assert!(rows.iter().all(|r| species_shown(r) == 1), "{table}");
}

#[test]
fn a_date_and_place_in_the_form_adjust_the_answer_and_flag_an_unseasonal_claim() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(tmp.path(), &PAIR, 30);
    let model = tmp.path().join("model");
    {
        let mut config = common::quick_config(&data, 2);
        config.observations = Some(common::sample().join("manifest.jsonl"));
        let _serial = common::training_lock();
        train::train(&config, &model).unwrap();
    }
    let server = Server::start(&model, 1 << 20, 30);
    let photo = common::real_jpeg();
    // Holly blues and brimstones both fly in August; in the sample no holly blue flies in
    // February.
    let ask = |path: &str, fields: &[(&str, &[u8])]| {
        let mut all: Vec<(&str, &[u8])> = vec![("photo", &photo)];
        all.extend_from_slice(fields);
        let (content_type, body) = multipart(&all);
        post(&server.url(path), &content_type, &body)
    };
    let (status, plain) = ask("/v1/check", &[("species", PAIR[0].as_bytes())]);
    assert_eq!(status, 200, "{plain}");
    assert!(plain.get("image_ranking").is_none() && plain.get("flags").is_none());
    let (status, dated) = ask(
        "/v1/check",
        &[
            ("species", PAIR[0].as_bytes()),
            ("date", b"2021-02-10"),
            ("latitude", b"51.5"),
            ("longitude", b"-1.2"),
        ],
    );
    assert_eq!(status, 200, "{dated}");
    assert_eq!(dated["date"], "2021-02-10");
    assert_eq!(dated["image_ranking"], plain["ranking"]);
    assert_eq!(
        dated["image_claimed_probability"],
        plain["claimed_probability"]
    );
    assert_eq!(
        dated["flags"][0]["flag"], "outside_flight_period",
        "{dated}"
    );
    // A bad date is reported and the photo alone answers.
    let (status, bad) = ask(
        "/v1/classify",
        &[
            ("date", b"31-04-2021"),
            ("latitude", b"95"),
            ("longitude", b"2"),
        ],
    );
    assert_eq!(status, 200, "{bad}");
    assert_eq!(
        bad["context_warnings"].as_array().unwrap().len(),
        2,
        "{bad}"
    );
    assert!(bad.get("image_ranking").is_none());
    assert_eq!(bad["ranking"], plain["ranking"]);
    server.shutdown().unwrap();
}
