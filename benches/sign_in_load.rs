//! Sign-in under attack, over loopback: `vlinder serve --database` while ATTACKERS (250)
//! clients try wrong passwords for made-up names as fast as the server answers, for SECONDS
//! (30), each try from another 127.x.y.z address (as a botnet would: the per-address limit
//! never stops them, so every try reaches the password check). Meanwhile a validator signs in
//! with her right password once a second from her own address, from a browser that signed in
//! before the attack (it shows its device cookie). Reports the server's peak
//! memory, the attackers' answers by status, and the validator's sign-in times (p50, p99, max)
//! and how many got in. Then, in this process, the time to refuse a wrong password for a name
//! that exists and for one that does not (interleaved, median of 40 each): they should be equal.
//!
//! `cargo bench --bench sign_in_load`

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vlinder::queue::users::{SignInLimits, SignInOutcome};
use vlinder::queue::{Database, Role};

const ATTACKERS: usize = 250;
const SECONDS: u64 = 30;
const PASSWORD: &str = "anna has a long password";

/// One sign-in from the local address `from`, with the device cookie `device` if given: the
/// answer's status (0 when the connection failed) and the device cookie it set, if any.
async fn sign_in(
    from: std::net::Ipv4Addr,
    server: SocketAddr,
    name: &str,
    password: &str,
    device: Option<&str>,
) -> (u16, Option<String>) {
    let attempt = async {
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        socket.bind(SocketAddr::new(from.into(), 0)).ok()?;
        let mut stream = socket.connect(server).await.ok()?;
        let body = format!(r#"{{"name":"{name}","password":"{password}"}}"#);
        let request = format!(
            "POST /v1/session HTTP/1.1\r\nHost: {server}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n{body}",
            body.len(),
            device.map_or(String::new(), |d| format!("Cookie: vlinder_device={d}\r\n"))
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        let answer = String::from_utf8_lossy(&answer).to_string();
        let device = answer
            .lines()
            .filter_map(|l| l.strip_prefix("set-cookie: vlinder_device="))
            .find_map(|v| v.split(';').next().map(str::to_string));
        Some((answer.get(9..12)?.parse().ok()?, device))
    };
    attempt.await.unwrap_or((0, None))
}

fn main() {
    let tmp = std::env::temp_dir().join(format!("vlinder-sign-in-load-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let model = tmp.join("model");
    common::quick_model(&model);
    let url = tmp.join("queue.db").display().to_string();
    let runtime = vlinder::queue::runtime().unwrap();
    runtime.block_on(async {
        let db = Database::create(&url).await.unwrap();
        db.add_user("anna", Role::Validator, PASSWORD, true)
            .await
            .unwrap();
    });

    let (mut server, addr) = common::queue_server(&model, &url);
    let before = common::peak_memory_mib(server.id());

    let statuses: Arc<[AtomicU64; 6]> = Arc::new(Default::default());
    let (anna_times, anna_in) = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(SECONDS);
        let next_address = Arc::new(AtomicU64::new(0));
        let attackers: Vec<_> = (0..ATTACKERS)
            .map(|a| {
                let (statuses, next_address) = (statuses.clone(), next_address.clone());
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        // 127.1.0.0 onwards: a new address for every try.
                        let n = next_address.fetch_add(1, Ordering::Relaxed);
                        let from = std::net::Ipv4Addr::new(
                            127,
                            1 + (n >> 16) as u8,
                            (n >> 8) as u8,
                            n as u8,
                        );
                        let (status, _) = sign_in(
                            from,
                            addr,
                            &format!("user{a}x{n}"),
                            "not the password",
                            None,
                        )
                        .await;
                        let slot = match status {
                            401 => 0,
                            429 => 1,
                            503 => 2,
                            0 => 3,
                            200 => 4,
                            _ => 5,
                        };
                        statuses[slot].fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let mut times = Vec::new();
        let mut signed_in = 0;
        // Her browser has signed in before: it shows its device cookie.
        let anna = std::net::Ipv4Addr::new(127, 0, 0, 9);
        let (_, device) = sign_in(anna, addr, "anna", PASSWORD, None).await;
        let device = device.expect("a device cookie");
        while Instant::now() < deadline {
            let start = Instant::now();
            let (status, _) = sign_in(anna, addr, "anna", PASSWORD, Some(&device)).await;
            times.push(start.elapsed().as_secs_f64());
            signed_in += usize::from(status == 200);
            tokio::time::sleep(Duration::from_secs(1).saturating_sub(start.elapsed())).await;
        }
        for a in attackers {
            a.await.unwrap();
        }
        (times, signed_in)
    });
    let peak = common::peak_memory_mib(server.id());
    let _ = server.kill();
    let _ = server.wait();
    let mut times = anna_times;
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize] * 1000.0;
    let s: Vec<u64> = statuses.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    println!(
        "{ATTACKERS} attackers for {SECONDS} s from new addresses: {} refused after the password check (401), {} over a limit (429), {} busy (503), {} connections failed, {} signed in, {} other",
        s[0], s[1], s[2], s[3], s[4], s[5]
    );
    println!("server peak memory: {peak:.0} MiB (before the attack {before:.0} MiB)");
    println!(
        "the validator meanwhile: {anna_in} of {} sign-ins got in; p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        times.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );

    // Equal work for a name that exists and one that does not, in this process.
    let limits = SignInLimits {
        per_name_and_client: i64::MAX,
        per_name: i64::MAX,
        per_client: i64::MAX,
        ..SignInLimits::default()
    };
    let (known, unknown) = runtime.block_on(async {
        let db = Database::open(&url).await.unwrap();
        let (mut known, mut unknown) = (Vec::new(), Vec::new());
        for i in 0..41 {
            for (name, times) in [("anna", &mut known), ("nobody", &mut unknown)] {
                let start = Instant::now();
                let outcome = db
                    .sign_in(name, "wrong password", "bench", None, &limits, 60)
                    .await
                    .unwrap();
                assert!(matches!(outcome, SignInOutcome::Refused));
                // The first round warms up.
                if i > 0 {
                    times.push(start.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
        (known, unknown)
    });
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (k, u) = (median(known), median(unknown));
    println!(
        "a wrong password, median of 40: {k:.1} ms for a name that exists, {u:.1} ms for one that does not ({:+.1}%)",
        100.0 * (u - k) / k
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
