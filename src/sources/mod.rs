//! Where labelled photos come from: Flickr keyword search, as the recipe did, and GBIF's
//! expert-verified observations. Both fill a [`Collection`] (one folder per species, a manifest
//! line per photo with its author and licence, an attribution file) and can be run again to
//! resume.
//!
//! [`http`] paces, retries and limits the calls; [`flickr`] and [`gbif`] speak each API;
//! [`collection`] keeps what was stored. The base URLs are options, so the tests run this code
//! against a local server.

pub mod collection;
pub mod flickr;
pub mod gbif;
pub mod http;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use collection::{Collection, ManifestEntry, Outcome};
use http::Service;

use crate::{Error, Result, progress};

/// The largest photo downloaded.
const MAX_PHOTO_BYTES: u64 = 50 * 1024 * 1024;

/// Options that every source shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchOptions {
    /// The collection folder: one sub-folder per species, manifest.jsonl and ATTRIBUTION.md.
    pub out: PathBuf,
    /// Photos per species to have in the folder, counting those already there; -1 for all.
    pub max: i64,
    /// Photos downloaded at once.
    pub jobs: usize,
    #[serde(flatten)]
    pub api: ApiOptions,
}

/// How a web service is called: its rate, retries and time limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiOptions {
    /// API calls per hour at most (Flickr allows 3,600 per key).
    pub calls_per_hour: u32,
    /// Further attempts after a failure that may pass (time-out, HTTP 429 or 5xx).
    pub retries: u32,
    /// Seconds before the first retry; each further one waits twice as long.
    pub backoff: f64,
    /// Seconds a request may take.
    pub timeout: u64,
    /// Download photos whose URLs lead to loopback, private or link-local addresses too (refused
    /// by default: the URLs come from the service's answers).
    pub allow_private_urls: bool,
}

/// The most retries of one call.
const MAX_RETRIES: u32 = 100;
/// The longest `--backoff` and `--timeout`, in seconds: an hour.
const MAX_SECONDS: u64 = 3600;

impl FetchOptions {
    fn validate(&self) -> Result<()> {
        if self.max == 0 || self.max < -1 {
            return Err(Error::invalid(
                "max",
                self.max,
                "a positive count, or -1 for all",
            ));
        }
        if self.jobs == 0 || self.jobs > 64 {
            return Err(Error::invalid("jobs", self.jobs, "between 1 and 64"));
        }
        self.api.validate()
    }

    fn service(&self) -> Service {
        self.api.service()
    }

    /// Photos still wanted for a species that has `have`.
    fn wanted(&self, have: usize) -> usize {
        match self.max {
            -1 => usize::MAX,
            max => (max as usize).saturating_sub(have),
        }
    }
}

impl ApiOptions {
    pub fn validate(&self) -> Result<()> {
        if self.calls_per_hour == 0 {
            return Err(Error::invalid("calls-per-hour", 0, "at least 1"));
        }
        // Bounded so that the waits and deadlines they make cannot overflow.
        if self.retries > MAX_RETRIES {
            return Err(Error::invalid(
                "retries",
                self.retries,
                format!("between 0 and {MAX_RETRIES}"),
            ));
        }
        if !(self.backoff >= 0.0 && self.backoff <= MAX_SECONDS as f64) {
            // `{:?}` writes 1e300 as typed, not as 301 digits.
            return Err(Error::invalid(
                "backoff",
                format!("{:?}", self.backoff),
                format!("seconds, between 0 and {MAX_SECONDS}"),
            ));
        }
        if !(1..=MAX_SECONDS).contains(&self.timeout) {
            return Err(Error::invalid(
                "timeout",
                self.timeout,
                format!("seconds, between 1 and {MAX_SECONDS}"),
            ));
        }
        Ok(())
    }

    pub fn service(&self) -> Service {
        Service::new(
            self.calls_per_hour,
            Duration::from_secs(self.timeout),
            self.retries,
            Duration::from_secs_f64(self.backoff),
            http::Reach::from_allow_private(self.allow_private_urls),
        )
    }
}

/// A photo a source offers: where to get it and whom to credit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// `flickr` or `gbif`.
    pub source: String,
    pub id: String,
    /// The species folder it goes to.
    pub species: String,
    pub title: String,
    pub author: String,
    pub licence: String,
    pub page_url: String,
    pub image_url: String,
    /// When the photo was taken (or, failing that, uploaded), as the source gives it.
    pub date: String,
    /// Where, in decimal degrees, when the source knows (`vlinder train --observations` reads
    /// them from the manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
}

/// What a run did for one species.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpeciesTally {
    /// Photos the source listed (after the licence filter).
    pub listed: usize,
    pub downloaded: usize,
    /// Listed photos that an earlier run had stored.
    pub already_present: usize,
    /// Photos whose bytes were already stored under another id.
    pub duplicates: usize,
    /// Photos left out, with the reason.
    pub skipped: Vec<Skipped>,
    /// Photos in the folder at the end.
    pub in_folder: usize,
}

/// A photo left out and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub id: String,
    pub url: String,
    pub reason: String,
}

/// What a fetch did, per species folder, and the error that stopped it early, if one did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FetchReport {
    pub species: BTreeMap<String, SpeciesTally>,
    pub api_calls: usize,
    /// Set when the run stopped before the end; what was stored is kept.
    pub stopped: Option<String>,
}

/// An API's answer as JSON; an HTML page (a proxy's or the service's error page) or JSON cut
/// short is a fault that may pass, named for `service`.
fn answer_json(body: &[u8], service: &str) -> std::result::Result<serde_json::Value, http::Fault> {
    serde_json::from_slice(body).map_err(|e| {
        let start = String::from_utf8_lossy(&body[..body.len().min(64)]).into_owned();
        if start.trim_start().starts_with('<') {
            http::Fault::transient(format!(
                "{service} answered with an HTML page instead of its JSON"
            ))
        } else {
            http::Fault::transient(format!("{service}'s answer is not complete JSON ({e})"))
        }
    })
}

/// A string or number member of a JSON object as text (the APIs use both).
fn text(v: &serde_json::Value, key: &str) -> String {
    match v.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// A latitude and longitude pair from two members, when both are numbers in range and not
/// both 0 (what Flickr answers for a photo without a place).
fn coordinates(v: &serde_json::Value, latitude: &str, longitude: &str) -> Option<(f64, f64)> {
    let lat: f64 = text(v, latitude).parse().ok()?;
    let lon: f64 = text(v, longitude).parse().ok()?;
    let valid = (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon);
    (valid && (lat, lon) != (0.0, 0.0)).then_some((lat, lon))
}

/// A numeric member, whether given as a number or a string; 0 when absent.
fn number(v: &serde_json::Value, key: &str) -> u64 {
    text(v, key).parse().unwrap_or(0)
}

/// A species folder name that stays inside the collection folder.
pub fn check_folder_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "species folder",
            format!("{name:?}"),
            "a plain folder name of letters, digits, '_', '-' or '.', not starting with '.', e.g. maniola_jurtina",
        ))
    }
}

/// Downloads, of the photos a source `offered` for `folder` (each a candidate, or its id and why
/// it is not one), those still wanted; returns whether the folder wants more.
fn take(
    service: &Service,
    collection: &Collection,
    options: &FetchOptions,
    folder: &str,
    offered: Vec<std::result::Result<Candidate, (String, String)>>,
    tally: &mut SpeciesTally,
) -> Result<bool> {
    let mut candidates = Vec::new();
    for photo in offered {
        match photo {
            Ok(candidate) => candidates.push(candidate),
            Err((id, reason)) => tally.skipped.push(Skipped {
                id,
                url: String::new(),
                reason,
            }),
        }
    }
    let wanted = options.wanted(collection.count(folder));
    download(service, collection, candidates, wanted, options.jobs, tally)?;
    Ok(options.wanted(collection.count(folder)) > 0)
}

/// Downloads `candidates` (of one species) with `jobs` threads into `collection` until the
/// species has `wanted` more photos; counts each outcome in `tally`. Returns how many were
/// stored; an error writing to the collection stops it.
fn download(
    service: &Service,
    collection: &Collection,
    candidates: Vec<Candidate>,
    wanted: usize,
    jobs: usize,
    tally: &mut SpeciesTally,
) -> Result<usize> {
    let mut fresh = Vec::new();
    for candidate in candidates {
        tally.listed += 1;
        if collection.contains(&candidate.source, &candidate.id) {
            tally.already_present += 1;
        } else {
            fresh.push(candidate);
        }
    }
    if fresh.is_empty() || wanted == 0 {
        return Ok(0);
    }
    let stored = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let reserved = AtomicUsize::new(0);
    let queue = Mutex::new(fresh.iter());
    let results = Mutex::new((Vec::new(), None::<Error>));
    let bar = progress::bar(fresh.len().min(wanted), "downloading");
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(fresh.len()) {
            scope.spawn(|| {
                loop {
                    if stop.load(Ordering::Relaxed) || stored.load(Ordering::Relaxed) >= wanted {
                        return;
                    }
                    // A photo is downloaded only with a place reserved for it, so that the
                    // threads together never store more than wanted.
                    let places = reserved.load(Ordering::Acquire);
                    if places >= wanted {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        continue;
                    }
                    if reserved
                        .compare_exchange(places, places + 1, Ordering::AcqRel, Ordering::Acquire)
                        .is_err()
                    {
                        continue;
                    }
                    let Some(candidate) = queue.lock().unwrap_or_else(|p| p.into_inner()).next()
                    else {
                        reserved.fetch_sub(1, Ordering::AcqRel);
                        return;
                    };
                    let downloaded = service.retrying(|| {
                        service.get(&candidate.image_url, &[], MAX_PHOTO_BYTES, false)
                    });
                    let outcome = match downloaded {
                        Err(reason) => Outcome::Unusable(reason),
                        Ok(bytes) => match collection.store(candidate, &bytes) {
                            Ok(outcome) => outcome,
                            Err(e) => {
                                stop.store(true, Ordering::Relaxed);
                                results.lock().unwrap_or_else(|p| p.into_inner()).1 = Some(e);
                                return;
                            }
                        },
                    };
                    if matches!(outcome, Outcome::Stored(_)) {
                        stored.fetch_add(1, Ordering::Relaxed);
                        bar.inc(1);
                    } else {
                        reserved.fetch_sub(1, Ordering::AcqRel);
                    }
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                        .push((candidate, outcome));
                }
            });
        }
    });
    bar.finish_and_clear();
    let (outcomes, error) = results.into_inner().unwrap_or_else(|p| p.into_inner());
    for (candidate, outcome) in outcomes {
        match outcome {
            Outcome::Stored(_) => tally.downloaded += 1,
            Outcome::Duplicate(of) => {
                tally.duplicates += 1;
                tally.skipped.push(Skipped {
                    id: candidate.id.clone(),
                    url: candidate.image_url.clone(),
                    reason: format!("the same photo is already stored as {of}"),
                });
            }
            Outcome::Unusable(reason) => tally.skipped.push(Skipped {
                id: candidate.id.clone(),
                url: candidate.image_url.clone(),
                reason,
            }),
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(stored.into_inner()),
    }
}

/// The report as a table and a list of what was skipped.
pub fn render_report(report: &FetchReport) -> String {
    let width = report
        .species
        .keys()
        .map(|s| s.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let mut out = format!(
        "{:width$}  {:>8}  {:>10}  {:>8}  {:>10}  {:>7}  {:>9}\n",
        "species", "listed", "downloaded", "present", "duplicates", "skipped", "in folder"
    );
    for (name, t) in &report.species {
        let _ = writeln!(
            out,
            "{name:width$}  {:>8}  {:>10}  {:>8}  {:>10}  {:>7}  {:>9}",
            t.listed,
            t.downloaded,
            t.already_present,
            t.duplicates,
            t.skipped.len() - t.duplicates,
            t.in_folder
        );
    }
    for (name, t) in &report.species {
        for s in t
            .skipped
            .iter()
            .filter(|s| !s.reason.contains("already stored"))
        {
            let _ = writeln!(out, "skipped {name} {} ({}): {}", s.id, s.url, s.reason);
        }
    }
    let _ = writeln!(out, "{} API calls", report.api_calls);
    if let Some(reason) = &report.stopped {
        let _ = writeln!(out, "stopped early: {reason}");
    }
    out
}
