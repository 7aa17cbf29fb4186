//! The review queue under load, over loopback: a database filled with RECORDS records (default
//! 1,000,000; synthetic verdicts, each with a small real JPEG as its thumbnail), then 20
//! validators at once, each in a loop of reading a page of undecided records and deciding one
//! of them, for 20 seconds. Reports the fill rate, p50/p99 of the page and of a decision, the
//! 201s and 409s, and checks that every stored decision is in the log and none was overwritten.
//!
//! `cargo bench --bench queue_load [-- RECORDS [DATABASE_URL]]` (default: a SQLite file in a
//! temporary folder).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod common;

use rand::{Rng, SeedableRng};
use vlinder::check::records::Record;
use vlinder::check::{CheckedRecord, Verdict};
use vlinder::predict::Ranked;
use vlinder::queue::{Database, Role};

const SPECIES: [&str; 3] = [
    "anthocharis_cardamines",
    "celastrina_argiolus",
    "gonepteryx_rhamni",
];
const VALIDATORS: usize = 20;
const SECONDS: u64 = 20;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let records: usize = args
        .first()
        .map_or(1_000_000, |n| n.parse().expect("RECORDS is a number"));
    let tmp = std::env::temp_dir().join(format!("vlinder-queue-load-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| tmp.join("queue.db").display().to_string());
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));

    let model = tmp.join("model");
    common::quick_model(&model);

    let runtime = vlinder::queue::runtime().unwrap();
    let thumbnail = {
        let photo =
            image::open(repo.join("assets/sample/gonepteryx_rhamni/inaturalist-54184062.jpg"))
                .unwrap();
        let mut jpeg = Vec::new();
        photo
            .thumbnail(64, 64)
            .to_rgb8()
            .write_to(
                &mut std::io::Cursor::new(&mut jpeg),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        jpeg
    };
    let filled = Instant::now();
    runtime.block_on(async {
        let db = Database::create(&url).await.unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let stored = db.count().await.unwrap() as usize;
        for start in (stored..records).step_by(1000) {
            let batch: Vec<CheckedRecord> = (start..(start + 1000).min(records))
                .map(|i| synthetic(i, &mut rng, &thumbnail))
                .collect();
            db.store(&batch, "load@000000000000").await.unwrap();
            if start % 100_000 == 0 {
                eprintln!("{start} records stored");
            }
        }
        for v in 0..VALIDATORS {
            db.add_user(
                &format!("v{v}"),
                Role::Validator,
                "a long load-test password",
                true,
            )
            .await
            .unwrap();
        }
    });
    let fill_seconds = filled.elapsed().as_secs_f64();
    println!(
        "filled {records} records into {url} in {fill_seconds:.1} s ({:.0} records/s)",
        records as f64 / fill_seconds
    );

    let (mut server, addr) = common::queue_server(&model, &url);
    let base = format!("http://{addr}");

    let pages = Mutex::new(Vec::new());
    let decisions = Mutex::new(Vec::new());
    let stored = Mutex::new(Vec::new());
    let (mut created, mut conflicts, mut other) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..VALIDATORS)
            .map(|v| {
                let (base, pages, decisions, stored) = (&base, &pages, &decisions, &stored);
                scope.spawn(move || validator(v, base, deadline, pages, decisions, stored))
            })
            .collect();
        for h in handles {
            let (c, k, o) = h.join().unwrap();
            created += c;
            conflicts += k;
            other += o;
        }
    });
    let peak = common::peak_memory_mib(server.id());
    let _ = server.kill();
    let _ = server.wait();

    let report = |name: &str, mut times: Vec<f64>| {
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize] * 1000.0;
        println!(
            "{name:>9}: {} requests, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            times.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        );
    };
    report("page", pages.into_inner().unwrap());
    report("decision", decisions.into_inner().unwrap());
    println!(
        "{VALIDATORS} validators for {SECONDS} s: {created} decisions stored, {conflicts} told 409 (decided by another first), {other} other answers; server peak memory {peak:.0} MiB"
    );
    assert_eq!(other, 0, "every answer is 201 or 409");

    // Every 201 is in the log with its validator, no record's decision count disagrees with
    // its log, and the log has nothing else.
    let stored = stored.into_inner().unwrap();
    runtime.block_on(async {
        let db = Database::open(&url).await.unwrap();
        let mut logged = 0;
        for (id, seq, validator) in &stored {
            let history = db.history(id).await.unwrap();
            let entry = history
                .iter()
                .find(|d| d.seq == *seq)
                .expect("a stored decision is logged");
            assert_eq!(&entry.validator, validator, "{id} #{seq} overwritten");
            logged += 1;
        }
        let decided = db
            .queue(
                &vlinder::queue::QueueFilter {
                    decided: Some(true),
                    ..Default::default()
                },
                500,
            )
            .await
            .unwrap();
        for r in &decided {
            assert_eq!(db.history(&r.id).await.unwrap().len() as i64, r.decisions);
        }
        println!("checked: all {logged} stored decisions are in the log, none overwritten");
    });
    let _ = std::fs::remove_dir_all(&tmp);
}

/// A checked record with a random verdict: the doubt spreads the queue's order.
fn synthetic(i: usize, rng: &mut impl Rng, thumbnail: &[u8]) -> CheckedRecord {
    let claimed = SPECIES[i % 3];
    let p: f32 = rng.random();
    let mut ranking: Vec<Ranked> = SPECIES
        .iter()
        .map(|s| Ranked {
            species: s.to_string(),
            probability: if *s == claimed { p } else { (1.0 - p) / 2.0 },
        })
        .collect();
    ranking.sort_by(|a, b| b.probability.total_cmp(&a.probability));
    let date =
        vlinder::context::date::Date::new(2021, 4 + (i % 5) as u32, 1 + (i % 28) as u32).ok();
    CheckedRecord {
        record: Record {
            row: i as u64 + 2,
            id: format!("rec{i:07}"),
            photos: vec![format!("photos/{i}.jpg")],
            claimed: claimed.to_string(),
            context: vlinder::context::Context {
                date,
                ..Default::default()
            },
            context_warnings: Vec::new(),
        },
        understood: None,
        verdict: Some(if p > 0.7 {
            Verdict::Agrees
        } else if p < 0.3 {
            Verdict::Disagrees {
                predicted: ranking[0].species.clone(),
            }
        } else {
            Verdict::Uncertain
        }),
        claimed_probability: Some(p as f64),
        image_claimed_probability: Some(p as f64),
        image_ranking: Vec::new(),
        flags: Vec::new(),
        doubt: 1.0 - p as f64,
        ranking,
        novelty: None,
        photos: Vec::new(),
        error: None,
        thumbnail: Some(thumbnail.to_vec()),
    }
}

type Stored = Mutex<Vec<(String, i64, String)>>;

/// One validator's loop: a page of undecided records, then a decision on one of them.
fn validator(
    v: usize,
    base: &str,
    deadline: Instant,
    pages: &Mutex<Vec<f64>>,
    decisions: &Mutex<Vec<f64>>,
    stored: &Stored,
) -> (usize, usize, usize) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let name = format!("v{v}");
    let mut signed = agent
        .post(format!("{base}/v1/session"))
        .header("Content-Type", "application/json")
        .send(
            serde_json::json!({"name": name, "password": "a long load-test password"}).to_string(),
        )
        .unwrap();
    assert_eq!(signed.status(), 200);
    let cookie = signed.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let csrf = json(signed.body_mut())["csrf"]
        .as_str()
        .unwrap()
        .to_string();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(v as u64);
    let (mut created, mut conflicts, mut other) = (0, 0, 0);
    while Instant::now() < deadline {
        let started = Instant::now();
        let mut page = agent
            .get(format!("{base}/v1/queue?decided=no&limit=50"))
            .header("Cookie", &cookie)
            .call()
            .unwrap();
        let page = json(page.body_mut());
        pages.lock().unwrap().push(started.elapsed().as_secs_f64());
        let records = page["records"].as_array().unwrap();
        // Validators mostly take the top of the queue, so they often meet.
        let pick = &records[rng.random_range(0..records.len().min(5))];
        let id = pick["id"].as_str().unwrap();
        let started = Instant::now();
        let answer = agent
            .post(format!("{base}/v1/records/{id}/decisions"))
            .header("Cookie", &cookie)
            .header("X-CSRF-Token", &csrf)
            .header("Content-Type", "application/json")
            .send(
                serde_json::json!({"decision": "confirm", "replaces": pick["decisions"]})
                    .to_string(),
            )
            .unwrap();
        decisions
            .lock()
            .unwrap()
            .push(started.elapsed().as_secs_f64());
        match answer.status().as_u16() {
            201 => {
                created += 1;
                let seq = pick["decisions"].as_i64().unwrap() + 1;
                stored
                    .lock()
                    .unwrap()
                    .push((id.to_string(), seq, name.clone()));
            }
            409 => conflicts += 1,
            _ => other += 1,
        }
    }
    (created, conflicts, other)
}

fn json(body: &mut ureq::Body) -> serde_json::Value {
    serde_json::from_str(&body.read_to_string().unwrap()).unwrap()
}
