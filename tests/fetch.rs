//! `vlinder fetch`: the real Flickr and GBIF client code against a local server that speaks
//! their JSON and serves real JPEG bytes.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::{ApiReply, ApiRequest};
use serde_json::json;
use vlinder::sources::collection::read_manifest;
use vlinder::sources::flickr::{self, FlickrConfig, FlickrSize};
use vlinder::sources::gbif::{self, GbifConfig};
use vlinder::sources::{ApiOptions, FetchOptions, FetchReport};

const KEY: &str = "secret-test-key-0123456789";

/// A photo on the fake Flickr: id, upload time, licence.
#[derive(Clone)]
struct FlickrPhoto {
    id: String,
    uploaded: u64,
    licence: u32,
}

fn photos(n: usize) -> Vec<FlickrPhoto> {
    (0..n)
        .map(|i| FlickrPhoto {
            id: format!("{}", 5_000_000 + i),
            // Spread over 2010..2020.
            uploaded: 1_262_304_000 + (i as u64 * 315_360_000 / n as u64),
            licence: 4,
        })
        .collect()
}

/// Flickr's `photos.search` over `photos`, newest first, with its 4,000-result cap.
fn search_answer(request: &ApiRequest, photos: &[FlickrPhoto], base: &str) -> ApiReply {
    let from: u64 = request
        .param("min_upload_date")
        .unwrap_or("0")
        .parse()
        .unwrap();
    let to: u64 = request
        .param("max_upload_date")
        .unwrap_or("99999999999")
        .parse()
        .unwrap();
    let per_page: usize = request.param("per_page").unwrap().parse().unwrap();
    let page: usize = request.param("page").unwrap().parse().unwrap();
    let mut matching: Vec<&FlickrPhoto> = photos
        .iter()
        .filter(|p| (from..=to).contains(&p.uploaded))
        .collect();
    matching.sort_by_key(|p| std::cmp::Reverse(p.uploaded));
    let visible = &matching[..matching.len().min(4000)];
    let start = ((page - 1) * per_page).min(visible.len());
    let end = (start + per_page).min(visible.len());
    let photo: Vec<_> = visible[start..end]
        .iter()
        .map(|p| {
            json!({
                "id": p.id, "owner": "12345@N00", "secret": "abc", "server": "65535", "farm": 66,
                "title": format!("Meadow brown {}", p.id), "ispublic": 1, "isfriend": 0, "isfamily": 0,
                "license": p.licence.to_string(), "ownername": "A. Recorder",
                "datetaken": "2019-07-01 10:00:00", "dateupload": p.uploaded.to_string(),
                // Flickr's `geo` extra: strings, and 0/0 for a photo without a place.
                "latitude": if p.id.ends_with(['0', '2', '4', '6', '8']) { "52.37" } else { "0" },
                "longitude": if p.id.ends_with(['0', '2', '4', '6', '8']) { "4.89" } else { "0" },
                "url_m": format!("{base}/img/{}.jpg", p.id), "height_m": 24, "width_m": 24
            })
        })
        .collect();
    let body = json!({
        "photos": {
            "page": page, "pages": matching.len().div_ceil(per_page), "perpage": per_page,
            "total": matching.len().to_string(), "photo": photo
        },
        "stat": "ok"
    });
    ApiReply::ok(body.to_string())
}

fn image_number(path: &str) -> usize {
    path.trim_start_matches("/img/")
        .trim_end_matches(".jpg")
        .parse::<usize>()
        .unwrap()
}

fn options(out: &Path, max: i64) -> FetchOptions {
    FetchOptions {
        out: out.to_path_buf(),
        max,
        jobs: 8,
        api: ApiOptions {
            calls_per_hour: 10_000_000,
            retries: 2,
            backoff: 0.05,
            timeout: 10,
            // The fake services serve their photos on 127.0.0.1.
            allow_private_urls: true,
        },
    }
}

fn key_file(dir: &Path) -> PathBuf {
    let path = dir.join("flickr-key");
    std::fs::write(&path, format!("{KEY}\n")).unwrap();
    path
}

fn flickr_config(base: &str, dir: &Path, out: &Path, max: i64) -> FlickrConfig {
    FlickrConfig {
        species: vec!["maniola_jurtina=\"meadow brown butterfly\"".into()],
        size: FlickrSize::Medium,
        licenses: vec![1, 2, 4, 5],
        api_key_file: Some(key_file(dir)),
        base_url: format!("{base}/services/rest/"),
        per_page: 500,
        options: options(out, max),
    }
}

/// A fake service: `/img/N.jpg` is a real JPEG, every other request is logged and answered by
/// `answer`. Returns its base URL and the log of API requests.
fn fake_service(
    answer: impl Fn(&ApiRequest, &str) -> ApiReply + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<ApiRequest>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let log_in = log.clone();
    let url = common::api_server(move |request, base| {
        if request.path.starts_with("/img/") {
            return ApiReply::ok(common::small_real_jpeg(image_number(&request.path)));
        }
        log_in.lock().unwrap().push(request.clone());
        answer(request, base)
    });
    (url, log)
}

/// A fake Flickr over `photos`.
fn fake_flickr(photos: Vec<FlickrPhoto>) -> (String, Arc<Mutex<Vec<ApiRequest>>>) {
    fake_service(move |request, base| search_answer(request, &photos, base))
}

fn no_secret_in(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            assert!(!text.contains(KEY), "the API key is in {}", path.display());
        }
    }
}

#[test]
fn flickr_goes_past_the_4000_cap_with_upload_date_windows() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, searches) = fake_flickr(photos(4_100));
    let out = tmp.path().join("photos");
    let report = flickr::fetch(&flickr_config(&base, tmp.path(), &out, -1)).unwrap();
    assert_eq!(report.stopped, None);
    let tally = &report.species["maniola_jurtina"];
    assert_eq!(
        tally.downloaded,
        4_100,
        "{:?}",
        &tally.skipped[..tally.skipped.len().min(3)]
    );
    assert_eq!(tally.in_folder, 4_100);
    let searches = searches.lock().unwrap();
    assert!(searches.iter().all(|r| r.param("api_key") == Some(KEY)
        && r.param("license") == Some("1,2,4,5")
        && r.param("text") == Some("meadow brown butterfly")
        && r.param("format") == Some("json")));
    // The whole range was too big; its halves were walked page by page.
    let windows: std::collections::BTreeSet<(String, String)> = searches
        .iter()
        .map(|r| {
            (
                r.param("min_upload_date").unwrap().to_string(),
                r.param("max_upload_date").unwrap().to_string(),
            )
        })
        .collect();
    assert!(windows.len() >= 3, "{windows:?}");
    assert_eq!(report.api_calls, searches.len());

    let manifest = read_manifest(&out).unwrap();
    assert_eq!(manifest.len(), 4_100);
    let first = manifest.iter().find(|e| e.photo.id == "5000000").unwrap();
    assert_eq!(first.photo.source, "flickr");
    assert_eq!(first.photo.species, "maniola_jurtina");
    assert_eq!(first.photo.author, "A. Recorder");
    assert_eq!(first.photo.licence, "CC BY 2.0");
    assert_eq!(
        first.photo.page_url,
        "https://www.flickr.com/photos/12345@N00/5000000/"
    );
    assert_eq!(first.photo.image_url, format!("{base}/img/5000000.jpg"));
    assert_eq!((first.width, first.height), (24, 24));
    assert_eq!(first.photo.date, "2019-07-01 10:00:00");
    assert_eq!(
        (first.photo.latitude, first.photo.longitude),
        (Some(52.37), Some(4.89)),
        "photo {} is geotagged",
        first.photo.id
    );
    let bytes = std::fs::read(out.join(&first.file)).unwrap();
    assert_eq!(bytes.len() as u64, first.bytes);
    assert_eq!(bytes, common::small_real_jpeg(5_000_000));
    let attribution = std::fs::read_to_string(out.join("ATTRIBUTION.md")).unwrap();
    assert!(attribution.contains("A. Recorder") && attribution.contains(&first.photo.page_url));
    no_secret_in(&out);
}

#[test]
fn flickr_resumes_skips_bad_photos_and_stores_identical_photos_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut all = photos(40);
    all[3].licence = 0; // All rights reserved: not asked for, though the server sends it.
    let image_hits = Arc::new(AtomicUsize::new(0));
    let hits = image_hits.clone();
    let listed = all.clone();
    let url = common::api_server(move |request, base| {
        if request.path.starts_with("/img/") {
            hits.fetch_add(1, Ordering::SeqCst);
            let n = image_number(&request.path) - 5_000_000;
            let jpeg = common::small_real_jpeg(n);
            return ApiReply::ok(match n {
                5 => b"<html><body>Photo not found</body></html>".to_vec(),
                6 => jpeg[..jpeg.len() / 2].to_vec(),
                7 => common::small_real_jpeg(8),
                _ => jpeg,
            });
        }
        let mut reply = search_answer(request, &listed, base);
        // Like Flickr when new uploads shift the pages: page 2 repeats a photo of page 1.
        if request.param("page") == Some("2") {
            let mut json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
            let repeated = json["photos"]["photo"][0].clone();
            let mut again = repeated.clone();
            again["id"] = json!("5000039");
            json["photos"]["photo"].as_array_mut().unwrap().push(again);
            reply.body = json.to_string().into_bytes();
        }
        reply
    });
    let out = tmp.path().join("photos");
    let config = FlickrConfig {
        per_page: 10,
        ..flickr_config(&url, tmp.path(), &out, 12)
    };
    let first = flickr::fetch(&config).unwrap();
    assert_eq!(first.species["maniola_jurtina"].in_folder, 12);
    let after_first = image_hits.load(Ordering::SeqCst);

    // An interrupted write left a temporary file; the next run removes it.
    let stale = out.join("maniola_jurtina/.flickr-1.jpg.999.tmp");
    std::fs::write(&stale, b"half a photo").unwrap();
    let second = flickr::fetch(&FlickrConfig {
        options: options(&out, -1),
        ..config.clone()
    })
    .unwrap();
    assert!(!stale.exists());
    let tally = &second.species["maniola_jurtina"];
    assert_eq!(tally.already_present, 12, "{first:?} {tally:?}");
    // 40 listed, one not licensed: 39, minus the HTML page, the truncated JPEG and the copy.
    assert_eq!(tally.in_folder, 36, "{tally:?}");
    assert_eq!(tally.duplicates, 1);
    assert_eq!(
        image_hits.load(Ordering::SeqCst) - after_first,
        39 - 12,
        "stored photos are not downloaded again"
    );
    let reasons: Vec<(&str, &str)> = first.species["maniola_jurtina"]
        .skipped
        .iter()
        .chain(&tally.skipped)
        .map(|s| (s.id.as_str(), s.reason.as_str()))
        .collect();
    let reason = |id: &str| {
        reasons
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, r)| r.to_string())
            .unwrap_or_default()
    };
    assert!(reason("5000003").contains("not asked for"), "{reasons:?}");
    assert!(reason("5000005").contains("not an image"), "{reasons:?}");
    assert!(!reason("5000006").is_empty(), "{reasons:?}");
    assert!(
        reason("5000007").contains("already stored")
            || reason("5000008").contains("already stored"),
        "{reasons:?}"
    );
    let manifest = read_manifest(&out).unwrap();
    assert_eq!(manifest.len(), 36);
    let ids: std::collections::HashSet<&str> =
        manifest.iter().map(|e| e.photo.id.as_str()).collect();
    assert_eq!(ids.len(), 36, "each photo once");
    let files = std::fs::read_dir(out.join("maniola_jurtina"))
        .unwrap()
        .count();
    assert_eq!(files, 36, "no partial file survives");
    no_secret_in(&out);
}

/// A fake Flickr whose search answers come from `script` in turn (then the real answer).
fn scripted_flickr(script: Vec<ApiReply>) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let count = calls.clone();
    let script = Mutex::new(script.into_iter());
    let listed = photos(3);
    let url = common::api_server(move |request, base| {
        if request.path.starts_with("/img/") {
            return ApiReply::ok(common::small_real_jpeg(image_number(&request.path)));
        }
        count.fetch_add(1, Ordering::SeqCst);
        match script.lock().unwrap().next() {
            Some(reply) => reply,
            None => search_answer(request, &listed, base),
        }
    });
    (url, calls)
}

fn flickr_fault(code: u32, message: &str) -> ApiReply {
    ApiReply::ok(json!({"stat": "fail", "code": code, "message": message}).to_string())
}

fn run_scripted(script: Vec<ApiReply>) -> (FetchReport, usize, f64, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let (url, calls) = scripted_flickr(script);
    let config = flickr_config(&url, tmp.path(), &tmp.path().join("photos"), -1);
    let started = Instant::now();
    let report = flickr::fetch(&config).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    (report, calls.load(Ordering::SeqCst), seconds, tmp)
}

#[test]
fn transient_failures_are_retried_and_retry_after_is_honoured() {
    let (report, calls, _, _tmp) = run_scripted(vec![
        flickr_fault(105, "Service currently unavailable"),
        ApiReply::status(503),
    ]);
    assert_eq!(report.stopped, None);
    assert_eq!(calls, 3);
    assert_eq!(report.species["maniola_jurtina"].in_folder, 3);

    let mut busy = ApiReply::status(429);
    busy.headers.push(("Retry-After", "1".into()));
    let (report, calls, seconds, _tmp) = run_scripted(vec![busy]);
    assert_eq!((report.stopped, calls), (None, 2));
    assert!(seconds >= 1.0, "waited {seconds}s");
}

#[test]
fn failures_that_do_not_pass_stop_the_run_with_a_clear_reason() {
    let cases = [
        (
            vec![flickr_fault(100, "Invalid API Key (Key not found)")],
            "rejected the API key",
        ),
        (
            vec![
                ApiReply::status(500),
                ApiReply::status(500),
                ApiReply::status(502),
            ],
            "HTTP 502 (after 3 attempts)",
        ),
        (
            (0..3)
                .map(|_| ApiReply::ok("<!DOCTYPE html><html>Maintenance</html>"))
                .collect(),
            "HTML page instead of its JSON",
        ),
        (
            (0..3)
                .map(|_| ApiReply::ok(r#"{"photos":{"page":1,"pages":1,"#))
                .collect(),
            "not complete JSON",
        ),
    ];
    for (script, expected) in cases {
        let (report, _, _, tmp) = run_scripted(script);
        let stopped = report.stopped.clone().unwrap_or_default();
        assert!(stopped.contains(expected), "{stopped}");
        assert!(!stopped.contains(KEY), "{stopped}");
        no_secret_in(&tmp.path().join("photos"));
    }
}

#[test]
fn the_command_line_fails_clearly_without_a_key_or_with_a_bad_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("photos");
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_vlinder"))
            .args(args)
            .env_remove("FLICKR_API_KEY")
            .env("HOME", tmp.path())
            .env("XDG_CONFIG_HOME", tmp.path().join("config"))
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let out_arg = out.to_str().unwrap();
    let (ok, stderr) = run(&["fetch", "flickr", "a=meadow brown", "--out", out_arg]);
    assert!(!ok && stderr.contains("FLICKR_API_KEY"), "{stderr}");
    let (ok, stderr) = run(&[
        "fetch",
        "flickr",
        "../escape=meadow brown",
        "--out",
        out_arg,
    ]);
    assert!(
        !ok && stderr.contains("species folder") && stderr.contains("../escape"),
        "{stderr}"
    );

    // An output folder that cannot be made is named.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let key = key_file(tmp.path());
    let (ok, stderr) = run(&[
        "fetch",
        "flickr",
        "a=meadow brown",
        "--out",
        file.join("photos").to_str().unwrap(),
        "--api-key-file",
        key.to_str().unwrap(),
        "--base-url",
        "http://127.0.0.1:9/",
    ]);
    assert!(!ok && stderr.contains("a-file"), "{stderr}");

    // Values that would overflow a wait or a deadline are range errors, not panics.
    for (option, value, expected) in [
        (
            "--retries",
            "4294967295",
            "invalid retries = 4294967295: between 0 and 100",
        ),
        (
            "--backoff",
            "1e300",
            "invalid backoff = 1e300: seconds, between 0 and 3600",
        ),
        (
            "--timeout",
            "18446744073709551615",
            "invalid timeout = 18446744073709551615",
        ),
        ("--timeout", "0", "invalid timeout = 0"),
    ] {
        let (ok, stderr) = run(&[
            "fetch",
            "flickr",
            "a=meadow brown",
            "--out",
            out_arg,
            "--api-key-file",
            key.to_str().unwrap(),
            "--base-url",
            "http://127.0.0.1:9/",
            option,
            value,
        ]);
        assert!(
            !ok && stderr.contains(expected) && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
}

#[test]
fn photo_urls_on_private_addresses_are_refused_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, _) = fake_flickr(photos(3));
    let out = tmp.path().join("photos");
    let config = FlickrConfig {
        options: {
            let mut options = options(&out, -1);
            options.api.allow_private_urls = false;
            options
        },
        ..flickr_config(&base, tmp.path(), &out, -1)
    };
    // The API (given on the command line) answers; the photo URLs in its answer lead to
    // 127.0.0.1 and are skipped, each with the reason.
    let report = flickr::fetch(&config).unwrap();
    let tally = &report.species["maniola_jurtina"];
    assert_eq!((tally.listed, tally.downloaded), (3, 0));
    assert_eq!(tally.skipped.len(), 3);
    for skipped in &tally.skipped {
        assert!(
            skipped.reason.contains("loopback") && skipped.reason.contains("--allow-private-urls"),
            "{skipped:?}"
        );
    }
}

#[test]
fn api_calls_are_paced_under_the_hourly_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, searches) = fake_flickr(photos(50));
    let config = FlickrConfig {
        per_page: 10,
        options: {
            let mut options = options(&tmp.path().join("photos"), -1);
            // One call every 0.25 s.
            options.api.calls_per_hour = 14_400;
            options
        },
        ..flickr_config(&base, tmp.path(), &tmp.path().join("photos"), -1)
    };
    let started = Instant::now();
    let report = flickr::fetch(&config).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(searches.lock().unwrap().len(), 5);
    assert_eq!(report.species["maniola_jurtina"].in_folder, 50);
    assert!(seconds >= 1.0, "5 calls in {seconds}s");
}

/// A fake GBIF with `n` occurrences of taxon 1234, every fifth under CC BY-NC-ND and every
/// seventh without an image.
fn fake_gbif(n: usize) -> (String, Arc<Mutex<Vec<ApiRequest>>>) {
    fake_service(move |request, base| {
        match request.path.as_str() {
            "/v1/species/match" => ApiReply::ok(match request.param("name") {
                Some("Maniola jurtina") => json!({"usageKey": 1234, "scientificName": "Maniola jurtina (Linnaeus, 1758)",
                    "rank": "SPECIES", "status": "ACCEPTED", "matchType": "EXACT", "confidence": 99}),
                _ => json!({"confidence": 100, "matchType": "NONE", "synonym": false}),
            }
            .to_string()),
            "/v1/occurrence/search" => {
                let offset: usize = request.param("offset").unwrap().parse().unwrap();
                let limit: usize = request.param("limit").unwrap().parse().unwrap();
                let results: Vec<_> = (offset..(offset + limit).min(n))
                    .map(|i| {
                        let licence = if i % 5 == 4 {
                            "http://creativecommons.org/licenses/by-nc-nd/4.0/legalcode"
                        } else {
                            "http://creativecommons.org/licenses/by-nc/4.0/legalcode"
                        };
                        let media = if i % 7 == 6 {
                            json!([])
                        } else {
                            json!([{"type": "StillImage", "format": "image/jpeg",
                                "identifier": format!("{base}/img/{}.jpg", 100 + i),
                                "references": format!("https://www.inaturalist.org/photos/{i}"),
                                "license": licence, "rightsHolder": "B. Observer", "creator": "B. Observer"}])
                        };
                        json!({"key": 4_000_000_000u64 + i as u64, "datasetKey": "50c9509d-22c7-4a22-a47d-8c48425ef4a7",
                            "taxonKey": 1234, "scientificName": "Maniola jurtina (Linnaeus, 1758)",
                            "license": "http://creativecommons.org/licenses/by-nc/4.0/legalcode",
                            "eventDate": "2023-07-14T10:00:00", "recordedBy": "B. Observer", "media": media,
                            "decimalLatitude": 52.1, "decimalLongitude": 5.2})
                    })
                    .collect();
                ApiReply::ok(json!({"offset": offset, "limit": limit, "endOfRecords": offset + limit >= n,
                    "count": n, "results": results}).to_string())
            }
            _ => ApiReply::status(404),
        }
    })
}

fn gbif_config(base: &str, out: &Path, species: &str) -> GbifConfig {
    GbifConfig {
        species: vec![species.into()],
        country: Some("GB".into()),
        dataset: Some("50c9509d-22c7-4a22-a47d-8c48425ef4a7".into()),
        licenses: vec!["CC0_1_0".into(), "CC_BY_4_0".into(), "CC_BY_NC_4_0".into()],
        base_url: format!("{base}/v1"),
        options: options(out, -1),
    }
}

#[test]
fn gbif_resolves_the_name_pages_by_300_and_keeps_only_asked_licences() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, log) = fake_gbif(650);
    let out = tmp.path().join("photos");
    let report = gbif::fetch(&gbif_config(&base, &out, "Maniola jurtina")).unwrap();
    assert_eq!(report.stopped, None);
    let searches: Vec<ApiRequest> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path.ends_with("/occurrence/search"))
        .cloned()
        .collect();
    let offsets: Vec<&str> = searches
        .iter()
        .map(|r| r.param("offset").unwrap())
        .collect();
    assert_eq!(offsets, ["0", "300", "600"]);
    for r in &searches {
        assert_eq!(r.param("taxonKey"), Some("1234"));
        assert_eq!(r.param("mediaType"), Some("StillImage"));
        assert_eq!(r.param("limit"), Some("300"));
        assert_eq!(r.param("country"), Some("GB"));
        assert_eq!(
            r.param("datasetKey"),
            Some("50c9509d-22c7-4a22-a47d-8c48425ef4a7")
        );
        let licences: Vec<&str> = r
            .query
            .iter()
            .filter(|(k, _)| k == "license")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(licences, ["CC0_1_0", "CC_BY_4_0", "CC_BY_NC_4_0"]);
    }
    let expected = (0..650).filter(|i| i % 5 != 4 && i % 7 != 6).count();
    let tally = &report.species["maniola_jurtina"];
    assert_eq!(tally.in_folder, expected, "{:?}", &tally.skipped[..3]);
    assert!(
        tally
            .skipped
            .iter()
            .any(|s| s.reason.contains("CC_BY_NC_ND_4_0"))
    );
    assert!(
        tally
            .skipped
            .iter()
            .any(|s| s.reason.contains("no still image"))
    );
    let manifest = read_manifest(&out).unwrap();
    let first = manifest
        .iter()
        .find(|e| e.photo.id == "4000000000")
        .unwrap();
    assert_eq!(first.photo.source, "gbif");
    assert_eq!(first.photo.licence, "CC_BY_NC_4_0");
    assert_eq!(first.photo.author, "B. Observer");
    assert_eq!(
        first.photo.page_url,
        "https://www.gbif.org/occurrence/4000000000"
    );
    assert_eq!(first.photo.date, "2023-07-14T10:00:00");
    assert_eq!(
        (first.photo.latitude, first.photo.longitude),
        (Some(52.1), Some(5.2))
    );
    assert!(
        std::fs::read_to_string(out.join("ATTRIBUTION.md"))
            .unwrap()
            .contains("B. Observer")
    );

    // A name GBIF does not know stops the run before anything is written.
    let elsewhere = tmp.path().join("other");
    let err = gbif::fetch(&gbif_config(&base, &elsewhere, "Maniola jurtinaa"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not know the species \"Maniola jurtinaa\""),
        "{err}"
    );
    assert!(!elsewhere.exists());
}

/// The command line of `vlinder fetch flickr` against the fake service at `base`.
fn fetch_command(base: &str, dir: &Path, out: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_vlinder"));
    command
        .args(["fetch", "flickr", "maniola_jurtina=meadow brown butterfly"])
        .arg("--out")
        .arg(out)
        .arg("--api-key-file")
        .arg(key_file(dir))
        .args(["--base-url", &format!("{base}/services/rest/")])
        .args([
            "--max",
            "-1",
            "--jobs",
            "2",
            "--retries",
            "2",
            "--backoff",
            "0.01",
        ])
        .arg("--allow-private-urls")
        .env_remove("FLICKR_API_KEY");
    command
}

/// Every photo file in the species folder is whole, and every one is listed in the manifest
/// once (`all_listed`; after a kill, the last photo stored may not be listed yet); returns how
/// many there are.
fn whole_photos(out: &Path, all_listed: bool) -> usize {
    let manifest = read_manifest(out).unwrap();
    let listed: std::collections::HashSet<&str> =
        manifest.iter().map(|e| e.file.as_str()).collect();
    assert_eq!(listed.len(), manifest.len(), "each photo listed once");
    let mut files = 0;
    for entry in std::fs::read_dir(out.join("maniola_jurtina")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if vlinder::files::is_temporary(&name) {
            continue;
        }
        image::open(&path).unwrap_or_else(|e| panic!("{name} is not a whole photo: {e}"));
        assert!(
            !all_listed || listed.contains(format!("maniola_jurtina/{name}").as_str()),
            "{name} unlisted"
        );
        files += 1;
    }
    files
}

#[test]
fn a_fetch_killed_or_cut_off_leaves_no_partial_photo_and_the_next_run_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let listed = photos(12);
    let cuts = Arc::new(AtomicUsize::new(0));
    let cut = cuts.clone();
    // Each photo takes 150 ms; photo 3's first two answers break off after 100 bytes.
    let base = common::api_server(move |request, base| {
        if request.path.starts_with("/img/") {
            let n = image_number(&request.path);
            let mut reply = ApiReply::ok(common::small_real_jpeg(n));
            reply.headers.push((common::DELAY_MS, "150".into()));
            if n == 5_000_003 && cut.fetch_add(1, Ordering::SeqCst) < 2 {
                reply.headers.push((common::CUT_AFTER, "100".into()));
            }
            return reply;
        }
        search_answer(request, &listed, base)
    });
    let out = tmp.path().join("photos");

    // Killed (SIGKILL) in the middle of its downloads.
    let mut child = fetch_command(&base, tmp.path(), &out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let before = whole_photos(&out, false);
    assert!(before < 12, "the kill came before the end: {before} photos");
    // As if the kill had cut the manifest's last line in half.
    let manifest = out.join("manifest.jsonl");
    let mut text = std::fs::read_to_string(&manifest).unwrap_or_default();
    text.push_str(r#"{"source":"flickr","id":"50000"#);
    std::fs::write(&manifest, text).unwrap();

    let output = fetch_command(&base, tmp.path(), &out).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stderr}");
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY));
    assert_eq!(whole_photos(&out, true), 12, "{stdout}{stderr}");
    assert_eq!(read_manifest(&out).unwrap().len(), 12);
    assert!(
        cuts.load(Ordering::SeqCst) >= 3,
        "photo 3 was cut off twice, then came whole"
    );
    no_secret_in(&out);
}

#[test]
fn a_rejected_key_fails_the_command_with_a_non_zero_exit_and_never_shows_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, _) = scripted_flickr(vec![flickr_fault(100, "Invalid API Key (Key not found)")]);
    let output = fetch_command(&base, tmp.path(), &tmp.path().join("photos"))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(!output.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("rejected the API key"), "{stderr}");
    assert!(
        !stdout.contains(KEY) && !stderr.contains(KEY),
        "{stdout}{stderr}"
    );
}

/// A fake GBIF checklist: Pyronia tithonus (key 1234) with two synonyms over two pages and
/// Dutch and English names; "Epinephele tithonus" matches as a synonym of it.
fn fake_gbif_checklist() -> (String, Arc<Mutex<Vec<ApiRequest>>>) {
    fake_service(|request, _| {
        let taxon = |key: u64, name: &str, status: &str| {
            json!({"key": key, "scientificName": format!("{name} (Linnaeus, 1771)"),
                "canonicalName": name, "taxonomicStatus": status, "acceptedKey": 1234,
                "accepted": "Pyronia tithonus (Linnaeus, 1771)", "rank": "SPECIES"})
        };
        match request.path.as_str() {
            "/v1/species/match" => ApiReply::ok(match request.param("name") {
                Some("Pyronia tithonus") => json!({"usageKey": 1234, "matchType": "EXACT", "status": "ACCEPTED"}),
                Some("Epinephele tithonus") => json!({"usageKey": 5678, "matchType": "EXACT", "status": "SYNONYM"}),
                _ => json!({"matchType": "NONE"}),
            }
            .to_string()),
            "/v1/species/1234" => ApiReply::ok(taxon(1234, "Pyronia tithonus", "ACCEPTED").to_string()),
            "/v1/species/5678" => ApiReply::ok(taxon(5678, "Epinephele tithonus", "SYNONYM").to_string()),
            "/v1/species/1234/synonyms" => ApiReply::ok(match request.param("offset") {
                Some("0") => json!({"offset": 0, "limit": 100, "endOfRecords": false,
                    "results": [{"key": 1, "scientificName": "Papilio tithonus Linnaeus, 1771"}]}),
                _ => json!({"offset": 100, "limit": 100, "endOfRecords": true,
                    "results": [{"key": 2, "canonicalName": "Maniola tithonus", "scientificName": "Maniola tithonus (Linnaeus, 1771)"}]}),
            }
            .to_string()),
            "/v1/species/1234/vernacularNames" => ApiReply::ok(json!({"endOfRecords": true, "results": [
                {"vernacularName": "Gatekeeper", "language": "eng"},
                {"vernacularName": "Hedge Brown", "language": "eng"},
                {"vernacularName": "Oranje zandoogje", "language": "nld"}]}).to_string()),
            _ => ApiReply::status(404),
        }
    })
}

#[test]
fn gbif_names_build_and_extend_a_names_file_with_synonyms_and_common_names() {
    use vlinder::names::{Claim, Names, Resolver};
    use vlinder::sources::gbif::GbifNamesConfig;
    let tmp = tempfile::tempdir().unwrap();
    let (base, log) = fake_gbif_checklist();
    let existing = tmp.path().join("mine.csv");
    std::fs::write(
        &existing,
        "scientific,nl,en\nManiola jurtina,Bruin zandoogje,Meadow Brown\n",
    )
    .unwrap();
    let config = GbifNamesConfig {
        species: vec!["Epinephele tithonus".into()],
        extend: Some(existing.clone()),
        base_url: format!("{base}/v1"),
        out: tmp.path().join("names.csv"),
        api: options(tmp.path(), -1).api,
    };
    let names = gbif::names(&config).unwrap();
    // Entered under the accepted name, with the name asked for, both pages of synonyms (the
    // author cut off where GBIF gave no canonical name) and the first name in each language.
    let gatekeeper = names.of("Pyronia tithonus").unwrap();
    assert_eq!(
        (gatekeeper.nl.as_str(), gatekeeper.en.as_str()),
        ("Oranje zandoogje", "Gatekeeper")
    );
    assert_eq!(
        gatekeeper.synonyms,
        [
            "Epinephele tithonus",
            "Papilio tithonus",
            "Maniola tithonus"
        ]
    );
    assert!(
        names.of("Maniola jurtina").is_some(),
        "the extended file's names are kept"
    );
    let written = Names::read(&config.out).unwrap();
    assert_eq!(written, names);
    let species = vlinder::dataset::Species::new(vec!["pyronia_tithonus".into()]);
    let resolver = Resolver::new(&species, &written);
    assert_eq!(
        resolver.resolve("Papilio tithonus").claim(),
        Claim::Species { index: 0 }
    );
    let pages: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path.ends_with("/synonyms"))
        .map(|r| r.param("offset").unwrap().to_string())
        .collect();
    assert_eq!(pages, ["0", "100"]);

    // A name GBIF does not know stops the run before anything is written.
    let unknown = GbifNamesConfig {
        species: vec!["Pyronia tithonus".into(), "Pyronia nonexistens".into()],
        out: tmp.path().join("never.csv"),
        ..config
    };
    let err = gbif::names(&unknown).unwrap_err().to_string();
    assert!(err.contains("Pyronia nonexistens"), "{err}");
    assert!(!unknown.out.exists());
}
