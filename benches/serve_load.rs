//! Load on `vlinder serve` over loopback: requests per second and p50/p99 latency of
//! `POST /v1/classify` with 1, 8 and 64 concurrent clients, and the server's peak memory.
//! Bounded: each level runs for 5 seconds or 5,000 requests, whichever comes first.
//!
//! `cargo bench --bench serve_load [-- MODEL_DIR]`; without a model directory it trains a small
//! recipe model (75x75, 2 epochs) on photos from `$VLINDER_SHARED/data` first.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

fn main() {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_vlinder"));
    let shared = common::shared();
    let data = shared.join("data/inat_uk_3species_csellwood");
    let tmp = std::env::temp_dir().join(format!("vlinder-load-{}", std::process::id()));
    let model = match std::env::args().nth(1).filter(|a| !a.starts_with('-')) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let model = tmp.join("model");
            let status = Command::new(&exe)
                .args(["train", "--data"])
                .arg(&data)
                .args(["--epochs", "2", "--out"])
                .arg(&model)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("vlinder train runs");
            assert!(status.success(), "training the bench model failed");
            model
        }
    };
    let photo = std::fs::read(data.join("gonepteryx_rhamni/spp_1.jpg")).expect("a shared photo");

    let mut server = Command::new(&exe)
        .args(["serve", "--model"])
        .arg(&model)
        .args(["--addr", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("vlinder serve starts");
    let mut line = String::new();
    BufReader::new(server.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_string() + "/v1/classify";

    println!("| clients | requests | requests/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    for clients in [1usize, 8, 64] {
        let deadline = Instant::now() + Duration::from_secs(5);
        let per_client = 5000 / clients;
        let mut latencies: Vec<f64> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..clients)
                .map(|_| {
                    scope.spawn(|| {
                        let agent = ureq::Agent::config_builder()
                            .timeout_global(Some(Duration::from_secs(30)))
                            .build()
                            .new_agent();
                        let mut times = Vec::new();
                        while Instant::now() < deadline && times.len() < per_client {
                            let start = Instant::now();
                            let mut response = agent
                                .post(&url)
                                .header("Content-Type", "image/jpeg")
                                .send(&photo[..])
                                .expect("the server answers");
                            response.body_mut().read_to_string().unwrap();
                            times.push(start.elapsed().as_secs_f64() * 1000.0);
                        }
                        times
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let started = deadline - Duration::from_secs(5);
        let elapsed = started.elapsed().as_secs_f64().min(5.0);
        latencies.sort_by(f64::total_cmp);
        let pct = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
        println!(
            "| {clients} | {} | {:.0} | {:.1} | {:.1} |",
            latencies.len(),
            latencies.len() as f64 / elapsed,
            pct(0.5),
            pct(0.99)
        );
    }
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", server.id())).unwrap_or_default();
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: unknown");
    println!(
        "server peak memory (VmHWM): {}",
        peak.trim_start_matches("VmHWM:").trim()
    );
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&tmp);
}
