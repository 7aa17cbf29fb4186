//! Checking submitted records: calibration after training, verdicts, ranking of wrongly named
//! records, and every kind of bad record.

mod common;

use std::fmt::Write as _;

use vlinder::check;
use vlinder::train;

const PAIR: [&str; 2] = ["celastrina_argiolus", "gonepteryx_rhamni"];

#[test]
fn wrongly_named_records_rank_first_and_bad_records_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(tmp.path(), &PAIR, 80);
    let model = tmp.path().join("model");
    let card = {
        let _serial = common::training_lock();
        train::train(&common::quick_config(&data, 10), &model).unwrap()
    };
    let calibration = card
        .calibration
        .as_ref()
        .expect("a complete run is calibrated");
    assert!(
        calibration.temperature > 0.0
            && calibration.log_loss_after <= calibration.log_loss_before + 1e-9
    );
    assert!(model.join("reliability.png").is_file());

    // The validation photos, every fourth one named as the other species.
    let split = std::fs::read_to_string(model.join("split.csv")).unwrap();
    let mut csv = String::from("id,species,photo\n");
    let mut wrong = Vec::new();
    for (i, line) in split
        .lines()
        .skip(1)
        .filter(|l| l.ends_with(",validation"))
        .enumerate()
    {
        let mut parts = line.split(',');
        let (path, species) = (parts.next().unwrap(), parts.next().unwrap());
        let named = if i % 4 == 0 {
            wrong.push(format!("r{i}"));
            if species == PAIR[0] { PAIR[1] } else { PAIR[0] }
        } else {
            species
        };
        writeln!(csv, "r{i},{named},{path}").unwrap();
    }
    // Bad records: an unknown species, a missing file, a file that is no photo, an empty photo
    // cell, and a row with a stray field.
    let not_a_photo = tmp.path().join("notes.jpg");
    std::fs::write(&not_a_photo, "<html>oops</html>").unwrap();
    let real = std::fs::read_dir(data.join(PAIR[0]))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    writeln!(csv, "u1,vanessa_atalanta,{}", real.display()).unwrap();
    writeln!(csv, "m1,{},no/such/photo.jpg", PAIR[0]).unwrap();
    writeln!(csv, "n1,{},{}", PAIR[0], not_a_photo.display()).unwrap();
    writeln!(csv, "e1,{},", PAIR[0]).unwrap();
    writeln!(csv, "x1,{},{},extra", PAIR[0], real.display()).unwrap();
    // Photos by URL: one served by a local HTTP server, one from a port where nothing listens.
    let served = serve_once(std::fs::read(&real).unwrap());
    writeln!(csv, "w1,{},{served}", PAIR[0]).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    writeln!(csv, "w2,{},http://{closed}/photo.jpg", PAIR[0]).unwrap();
    // An unterminated quote swallows the rest of the file into one malformed row.
    writeln!(csv, "q1,\"{},{}", PAIR[0], real.display()).unwrap();
    let records = tmp.path().join("records.csv");
    std::fs::write(&records, csv).unwrap();

    let results = check::check(&common::check_config(&model, &records)).unwrap();
    let out = tmp.path().join("records-check");
    for file in ["results.csv", "report.html", "check.json"] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let n = results.records.len();
    assert_eq!(n, 40 + 8);
    assert_eq!(results.totals.errors, 6);
    // Unreadable records come last; the unknown species is the most doubtful of all.
    assert!(results.records[n - 6..].iter().all(|r| r.error.is_some()));
    let by_url = results
        .records
        .iter()
        .find(|r| r.record.id == "w1")
        .unwrap();
    assert!(
        by_url.error.is_none() && by_url.verdict.is_some(),
        "{by_url:?}"
    );
    assert_eq!(results.records[0].record.id, "u1");
    assert_eq!(
        results.records[0].verdict.as_ref().unwrap().label(),
        "unknown species"
    );
    let errors: Vec<String> = results.records[n - 6..]
        .iter()
        .map(|r| r.error.clone().unwrap())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains(&closed.to_string())),
        "{errors:?}"
    );
    assert_eq!(
        errors
            .iter()
            .filter(|e| e.contains("malformed CSV row"))
            .count(),
        2,
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("no/such/photo.jpg")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("notes.jpg") && e.contains("not an image")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("photo column is empty")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("malformed CSV row")),
        "{errors:?}"
    );

    let rank_of = |id: &str| {
        results
            .records
            .iter()
            .position(|r| r.record.id == id)
            .unwrap() as f64
    };
    // The named validation photos, without the unknown species, the URL record and the errors.
    let checked: Vec<&str> = results.records[1..n - 6]
        .iter()
        .map(|r| r.record.id.as_str())
        .filter(|id| id.starts_with('r'))
        .collect();
    assert_eq!(checked.len(), 40);
    let mean = |ids: &mut dyn Iterator<Item = &str>| {
        let v: Vec<f64> = ids.map(rank_of).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let wrong_mean = mean(&mut wrong.iter().map(String::as_str));
    let right_mean = mean(
        &mut checked
            .iter()
            .copied()
            .filter(|id| !wrong.iter().any(|w| w == id)),
    );
    assert!(
        wrong_mean < right_mean,
        "wrongly named records rank first on average: {wrong_mean} vs {right_mean}"
    );

    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(report.contains("data:image/jpeg;base64,") && report.contains("unknown species"));
    assert!(!report.contains("<script"), "the report is static");
    let results_csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(results_csv.lines().count(), 49);
    assert!(results_csv.lines().nth(1).unwrap().starts_with("1,u1,"));

    // A CSV without the named columns is an error that lists the columns it has.
    std::fs::write(tmp.path().join("bad.csv"), "record,name,file\n1,x,y\n").unwrap();
    let err = check::check(&common::check_config(&model, &tmp.path().join("bad.csv")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"id\"") && err.contains("record, name, file") && err.contains("--id-column"),
        "{err}"
    );

    // The command line reports the failed records and exits non-zero.
    let (ok, stdout, stderr) = common::vlinder(&[
        "check",
        "--model",
        model.to_str().unwrap(),
        records.to_str().unwrap(),
    ]);
    assert!(
        !ok && stdout.contains("report:") && stderr.contains("of 48 records"),
        "{stdout}{stderr}"
    );
}

/// Serves `body` as a JPEG on a local port for the rest of the test; returns its URL.
fn serve_once(body: Vec<u8>) -> String {
    common::web_server(move |_| ("image/jpeg", body.clone())) + "/photo.jpg"
}

#[test]
fn photo_paths_stay_inside_the_photos_folder_and_only_regular_files_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(tmp.path(), &PAIR, 8);
    let model = tmp.path().join("model");
    {
        let _serial = common::training_lock();
        train::train(&common::quick_config(&data, 1), &model).unwrap();
    }
    let folder = tmp.path().join("records");
    std::fs::create_dir(&folder).unwrap();
    let photo = common::real_jpeg();
    std::fs::write(folder.join("inside.jpg"), &photo).unwrap();
    std::fs::write(tmp.path().join("outside.jpg"), &photo).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("outside.jpg"), folder.join("link.jpg")).unwrap();
    let fifo = std::ffi::CString::new(folder.join("pipe.jpg").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    std::fs::File::create(folder.join("huge.jpg"))
        .unwrap()
        .set_len(51 * 1024 * 1024)
        .unwrap();
    let mut csv = String::from("id,species,photo\n");
    for (id, path) in [
        ("inside", "inside.jpg"),
        ("dotdot", "../outside.jpg"),
        ("link", "link.jpg"),
        ("fifo", "pipe.jpg"),
        ("zero", "/dev/zero"),
        ("huge", "huge.jpg"),
        ("there", "../../../../../../etc/passwd"),
        ("not-there", "../../../../../../etc/no-such-file"),
    ] {
        writeln!(csv, "{id},{},{path}", PAIR[0]).unwrap();
    }
    let records = folder.join("records.csv");
    std::fs::write(&records, csv).unwrap();
    let mut config = common::check_config(&model, &records);
    config.input.photos_root = None;
    let results = check::check(&config).unwrap();
    let error = |id: &str| {
        let r = results.records.iter().find(|r| r.record.id == id).unwrap();
        r.error.clone().unwrap_or_default()
    };
    assert_eq!(error("inside"), "");
    for id in ["dotdot", "link"] {
        assert!(
            error(id).contains("outside the photos folder"),
            "{id}: {}",
            error(id)
        );
    }
    assert!(
        error("fifo").contains("not a regular file"),
        "{}",
        error("fifo")
    );
    assert!(
        error("zero").contains("outside the photos folder"),
        "{}",
        error("zero")
    );
    assert!(
        error("huge").contains("larger than 50 MiB"),
        "{}",
        error("huge")
    );
    // Outside the folder, a file that is there and one that is not get the same answer, which
    // names the path as the record wrote it, not where it leads.
    assert_eq!(
        error("there").replace("passwd", "X"),
        error("not-there").replace("no-such-file", "X")
    );
    assert!(
        error("there").starts_with("../../../../../../etc/passwd: outside the photos folder"),
        "{}",
        error("there")
    );
    // No photo from outside reached the report.
    let html = std::fs::read_to_string(folder.join("records-check/report.html")).unwrap();
    assert_eq!(html.matches("data:image/jpeg;base64,").count(), 1);

    // --photos-root allows another folder, still only regular files within it.
    config.input.photos_root = Some(tmp.path().to_path_buf());
    let wider = check::check(&config).unwrap();
    let checked: Vec<&str> = wider
        .records
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| r.record.id.as_str())
        .collect();
    assert_eq!(checked.len(), 3, "{checked:?}");
    assert!(
        ["inside", "dotdot", "link"]
            .iter()
            .all(|id| checked.contains(id))
    );
}

#[test]
fn photo_urls_to_private_addresses_are_refused_and_redirects_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(tmp.path(), &PAIR, 8);
    let model = tmp.path().join("model");
    {
        let _serial = common::training_lock();
        train::train(&common::quick_config(&data, 1), &model).unwrap();
    }
    // `/hop/N` redirects to `/hop/N-1` (relative) and `/hop/0` serves a photo.
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = requests.clone();
    let server = common::api_server(move |request, _| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let n: usize = request.path.trim_start_matches("/hop/").parse().unwrap();
        if n == 0 {
            return common::ApiReply::ok(common::real_jpeg());
        }
        common::ApiReply {
            status: 302,
            headers: vec![("Location", format!("{}", n - 1))],
            body: Vec::new(),
        }
    });
    let mut csv = String::from("id,species,photo\n");
    for hops in [0, 5, 6] {
        writeln!(csv, "h{hops},{},{server}/hop/{hops}", PAIR[0]).unwrap();
    }
    let records = tmp.path().join("records.csv");
    std::fs::write(&records, csv).unwrap();
    let error_of = |results: &check::CheckResults, id: &str| {
        let r = results.records.iter().find(|r| r.record.id == id).unwrap();
        r.error.clone()
    };

    // By default a URL on this machine is refused before anything is sent.
    let mut config = common::check_config(&model, &records);
    config.input.allow_private_urls = false;
    let refused = check::check(&config).unwrap();
    for id in ["h0", "h5", "h6"] {
        let error = error_of(&refused, id).unwrap();
        assert!(
            error.contains("127.0.0.1 is 127.0.0.1, a loopback address")
                && error.contains("--allow-private-urls"),
            "{error}"
        );
    }
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 0);

    // Allowed, five redirects are followed and a sixth is refused.
    let allowed = check::check(&common::check_config(&model, &records)).unwrap();
    assert_eq!(error_of(&allowed, "h0"), None);
    assert_eq!(error_of(&allowed, "h5"), None);
    let error = error_of(&allowed, "h6").unwrap();
    assert!(error.contains("more than 5 redirects"), "{error}");
}
