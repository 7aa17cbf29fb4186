//! The date and place prior end to end: learned from the sample's own observations at training,
//! stored in the model card, and used by check, predict and the HTTP service; records without a
//! date are judged exactly as by the photo alone, and bad dates or prior files are reported.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use vlinder::check::{self, CheckResults};
use vlinder::train;

const SPECIES: [&str; 3] = [
    "anthocharis_cardamines",
    "celastrina_argiolus",
    "gonepteryx_rhamni",
];

/// A quick recipe model on 40 sample photos of each species with the sample's manifest as
/// observations.
fn model_with_prior(dir: &Path) -> (PathBuf, PathBuf) {
    let data = common::subset(dir, &SPECIES, 40);
    let model = dir.join("model");
    let mut config = common::quick_config(&data, 3);
    config.observations = Some(common::sample().join("manifest.jsonl"));
    let _serial = common::training_lock();
    train::train(&config, &model).unwrap();
    (data, model)
}

fn check_with(model: &Path, records: &Path, out: &str, dated: bool) -> CheckResults {
    let mut config = common::check_config(model, records);
    config.out = Some(records.with_file_name(out));
    if dated {
        config.input.columns.date_column = Some("date".into());
        config.input.columns.latitude_column = Some("lat".into());
        config.input.columns.longitude_column = Some("lon".into());
    }
    check::check(&config).unwrap()
}

#[test]
fn the_prior_flags_august_orange_tips_and_leaves_undated_records_as_the_photo_says() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, model) = model_with_prior(tmp.path());
    let card = vlinder::trained::ModelDir::new(&model).read_card().unwrap();
    let prior = card.prior.as_ref().expect("trained with --observations");
    assert_eq!(prior.species, SPECIES);
    assert!(
        prior.learned_from.contains("manifest.jsonl"),
        "{}",
        prior.learned_from
    );
    // The sample's orange-tips fly in April and May.
    let orange = &prior.months[0];
    let spring = orange[3] + orange[4];
    assert!(spring >= 0.9 * orange.iter().sum::<f64>(), "{orange:?}");
    assert_eq!(orange[7], 0.0, "no orange-tip in August");
    let fit = prior
        .validation
        .as_ref()
        .expect("validation photos are dated");
    assert_eq!(fit.photos, 30);
    // Every validation photo is dated; a few lie in latitude bands no training photo came from.
    assert_eq!(fit.with_date, 30);
    assert!((20..=30).contains(&fit.with_place), "{fit:?}");
    assert!(fit.fitted.log_loss <= fit.image.log_loss + 1e-9, "{fit:?}");

    // Orange-tip photos named correctly but dated in August; the same photos without a date;
    // brimstones in August, their busiest month; one record with an impossible date.
    let mut csv = String::from("id,species,photo,date,lat,lon\n");
    let photos = |species: &str| -> Vec<PathBuf> {
        let mut p: Vec<PathBuf> = std::fs::read_dir(data.join(species))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        p.sort();
        p
    };
    for (i, photo) in photos(SPECIES[0]).iter().take(5).enumerate() {
        let p = photo.display();
        writeln!(csv, "aug{i},{},{p},15-08-2021,51.5,-1.2", SPECIES[0]).unwrap();
        writeln!(csv, "undated{i},{},{p},,,", SPECIES[0]).unwrap();
    }
    for (i, photo) in photos(SPECIES[2]).iter().take(3).enumerate() {
        let p = photo.display();
        writeln!(csv, "summer{i},{},{p},2021-08-20T11:00:00,,", SPECIES[2]).unwrap();
    }
    let first = photos(SPECIES[2])[0].display().to_string();
    writeln!(csv, "bad,{},{first},2021-04-31,152.1,-1.0", SPECIES[2]).unwrap();
    let records = tmp.path().join("records.csv");
    std::fs::write(&records, csv).unwrap();

    let with = check_with(&model, &records, "with", true);
    let without = check_with(&model, &records, "without", false);
    let find = |r: &CheckResults, id: &str| {
        r.records
            .iter()
            .find(|c| c.record.id == id)
            .unwrap()
            .clone()
    };
    for i in 0..5 {
        let aug = find(&with, &format!("aug{i}"));
        assert_eq!(aug.flags.len(), 1, "{aug:?}");
        assert_eq!(aug.flags[0].label(), "outside its flight period");
        assert!(aug.flags[0].explain().contains("August"));
        assert!(
            aug.claimed_probability.unwrap() < aug.image_claimed_probability.unwrap(),
            "August lowers the orange-tip: {aug:?}"
        );
        assert!(!aug.image_ranking.is_empty());
        // Without a date: exactly the photo alone, as a check without date columns says.
        let undated = find(&with, &format!("undated{i}"));
        let alone = find(&without, &format!("undated{i}"));
        assert!(undated.flags.is_empty() && undated.image_ranking.is_empty());
        assert_eq!(undated.claimed_probability, alone.claimed_probability);
        assert_eq!(undated.ranking, alone.ranking);
        assert_eq!(
            (undated.verdict, undated.doubt),
            (alone.verdict, alone.doubt)
        );
        assert_eq!(
            alone.claimed_probability,
            find(&without, &format!("aug{i}")).claimed_probability,
            "the same photo"
        );
    }
    assert_eq!(
        with.totals.by_flag.get("outside its flight period"),
        Some(&5),
        "{:?}",
        with.totals
    );
    for i in 0..3 {
        let summer = find(&with, &format!("summer{i}"));
        assert!(
            summer.flags.is_empty() && !summer.image_ranking.is_empty(),
            "{summer:?}"
        );
    }
    // An impossible date and a latitude out of range: said per record, the photo still judged.
    let bad = find(&with, "bad");
    assert!(bad.verdict.is_some() && bad.flags.is_empty());
    assert_eq!(bad.record.context_warnings.len(), 2, "{bad:?}");
    assert!(bad.record.context_warnings[0].contains("day 31 does not exist in month 4"));
    assert!(bad.record.context_warnings[1].contains("latitude 152.1 is outside"));
    assert_eq!(
        bad.claimed_probability,
        find(&without, "bad").claimed_probability
    );

    let csv = std::fs::read_to_string(tmp.path().join("with/results.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let aug_line = csv.lines().find(|l| l.contains(",aug0,")).unwrap();
    let cells: Vec<&str> = aug_line.split(',').collect();
    assert_eq!(cells[column("flags")], "outside its flight period");
    assert_eq!(cells[column("date")], "2021-08-15");
    let html = std::fs::read_to_string(tmp.path().join("with/report.html")).unwrap();
    assert!(html.contains("outside its flight period") && html.contains("photo alone"));
    assert!(
        html.contains("a prior learned from the observations of the"),
        "the report says where the prior comes from"
    );

    // predict: the same photo with and without a date; a bad date is an error.
    let photo = photos(SPECIES[0])[0].display().to_string();
    let m = model.to_str().unwrap();
    let (ok, plain, _) = common::vlinder(&["predict", "--model", m, "--format", "json", &photo]);
    assert!(ok);
    let (ok, dated, _) = common::vlinder(&[
        "predict",
        "--model",
        m,
        "--format",
        "json",
        "--date",
        "2021-08-15",
        &photo,
    ]);
    assert!(ok);
    let plain: serde_json::Value = serde_json::from_str(&plain).unwrap();
    let dated: serde_json::Value = serde_json::from_str(&dated).unwrap();
    assert!(plain[0].get("image_ranking").is_none());
    assert_eq!(dated[0]["image_ranking"], plain[0]["ranking"]);
    assert_ne!(dated[0]["ranking"], plain[0]["ranking"]);
    let (ok, _, stderr) =
        common::vlinder(&["predict", "--model", m, "--date", "2021-13-01", &photo]);
    assert!(
        !ok && stderr.contains("month 13 does not exist"),
        "{stderr}"
    );
}

#[test]
fn a_prior_file_for_other_species_or_a_broken_one_stops_training_before_it_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(tmp.path(), &SPECIES[..2], 4);
    let prior = tmp.path().join("prior.json");
    let write = |text: &str| std::fs::write(&prior, text).unwrap();
    let zeros = "[0,0,0,0,0,0,0,3,4,0,0,0]";
    write(&format!(
        r#"{{"learned_from":"GBIF","species":["Maniola jurtina","Celastrina argiolus"],"months":[{zeros},{zeros}],"band_degrees":1.0,"bands":[],"smoothing":1.0,"weights":{{"month":1.0,"place":1.0}}}}"#
    ));
    let run = |extra: &[&str]| {
        let out = tmp.path().join("model");
        let mut args = vec![
            "train",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--image-size",
            "32",
            "--epochs",
            "1",
        ];
        args.extend_from_slice(extra);
        let result = common::vlinder(&args);
        assert!(!out.join("model.json").exists(), "nothing written");
        result
    };
    let (ok, _, stderr) = run(&["--prior", prior.to_str().unwrap()]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("prior.json") && stderr.contains("no counts for anthocharis_cardamines"),
        "{stderr}"
    );
    write(
        r#"{"learned_from":"x","species":["anthocharis_cardamines","celastrina_argiolus"],"months":[[1,2],[3]],"band_degrees":1.0,"bands":[],"smoothing":1.0,"weights":{"month":1.0,"place":1.0}}"#,
    );
    let (ok, _, stderr) = run(&["--prior", prior.to_str().unwrap()]);
    assert!(
        !ok && stderr.contains("months[0] does not have 12 counts"),
        "{stderr}"
    );
    let observations = tmp.path().join("obs.csv");
    std::fs::write(&observations, "file,observer\nx.jpg,me\n").unwrap();
    let (ok, _, stderr) = run(&["--observations", observations.to_str().unwrap()]);
    assert!(
        !ok && stderr.contains("obs.csv") && stderr.contains("no date column"),
        "{stderr}"
    );
}

/// `%2C` and friends back to text.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// A local server answering as GBIF's species match and faceted occurrence search do, from
/// (species, month, latitude) records; `facets` false leaves the month facet out.
fn fake_gbif(records: Vec<(&'static str, u32, f64)>, facets: bool) -> String {
    common::web_server(move |path| {
        let (route, query) = path.split_once('?').unwrap_or((path, ""));
        let q: Vec<(String, String)> = query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), decode(v)))
            .collect();
        let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let body = if route.ends_with("/species/match") {
            match get("name").as_deref() {
                Some("Anthocharis cardamines") => r#"{"usageKey":1,"matchType":"EXACT"}"#.into(),
                Some("Celastrina argiolus") => r#"{"usageKey":2,"matchType":"EXACT"}"#.into(),
                _ => r#"{"matchType":"NONE"}"#.to_string(),
            }
        } else {
            let species = SPECIES[get("taxonKey").unwrap().parse::<usize>().unwrap() - 1];
            let mut found: Vec<&(&str, u32, f64)> =
                records.iter().filter(|r| r.0 == species).collect();
            if let Some(range) = get("decimalLatitude") {
                let (s, n) = range.split_once(',').unwrap();
                let (s, n): (f64, f64) = (s.parse().unwrap(), n.parse().unwrap());
                found.retain(|r| s <= r.2 && r.2 <= n);
            }
            let mut months = String::new();
            // GBIF lists only the months with records, most first.
            for m in (1..=12).rev() {
                let c = found.iter().filter(|r| r.1 == m).count();
                if c > 0 {
                    let sep = if months.is_empty() { "" } else { "," };
                    months += &format!(r#"{sep}{{"name":"{m}","count":{c}}}"#);
                }
            }
            let facet = if facets && get("facet").is_some() {
                format!(r#","facets":[{{"field":"MONTH","counts":[{months}]}}]"#)
            } else {
                String::new()
            };
            format!(r#"{{"count":{},"results":[]{facet}}}"#, found.len())
        };
        ("application/json", body.into_bytes())
    })
}

#[test]
fn a_prior_from_gbif_counts_per_month_and_latitude_band_and_trains_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut records = vec![("anthocharis_cardamines", 4, 51.5); 30];
    records.extend(vec![("anthocharis_cardamines", 5, 52.2); 20]);
    records.extend(vec![("celastrina_argiolus", 8, 51.7); 25]);
    records.extend(vec![("celastrina_argiolus", 4, -33.9); 5]);
    let base = fake_gbif(records.clone(), true);
    let out = tmp.path().join("prior.json");
    let args = |base: &str, extra: &str| {
        let mut a = vec![
            "prior".to_string(),
            "gbif".into(),
            "--country".into(),
            "GB".into(),
            "--base-url".into(),
            base.to_string(),
            "--retries".into(),
            "0".into(),
            "--calls-per-hour".into(),
            "10000000".into(),
            "--out".into(),
            out.display().to_string(),
            "Anthocharis cardamines".into(),
        ];
        a.push(extra.to_string());
        a
    };
    let run = |a: Vec<String>| common::vlinder(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (ok, stdout, stderr) = run(args(&base, "Celastrina argiolus"));
    assert!(ok, "{stdout}{stderr}");
    let prior: vlinder::context::Prior =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(prior.species, SPECIES[..2]);
    assert_eq!(prior.months[0][3..5], [30.0, 20.0]);
    assert_eq!(prior.months[1][7], 25.0);
    assert_eq!(prior.months[1].iter().sum::<f64>(), 30.0);
    let bands: Vec<(f64, Vec<f64>)> = prior
        .bands
        .iter()
        .map(|b| (b.south, b.counts.clone()))
        .collect();
    assert_eq!(
        bands,
        vec![
            (-34.0, vec![0.0, 5.0]),
            (51.0, vec![30.0, 25.0]),
            (52.0, vec![20.0, 0.0])
        ]
    );
    assert!(prior.learned_from.contains("GBIF occurrences in GB"));

    // The model takes it, in its own species order, with weights fitted on its validation photos.
    let data = common::subset(tmp.path(), &SPECIES[..2], 20);
    let model = tmp.path().join("model");
    let mut config = common::quick_config(&data, 2);
    config.prior = Some(out.clone());
    config.observations = Some(common::sample().join("manifest.jsonl"));
    {
        let _serial = common::training_lock();
        train::train(&config, &model).unwrap();
    }
    let card = vlinder::trained::ModelDir::new(&model).read_card().unwrap();
    let kept = card.prior.unwrap();
    assert_eq!(kept.months, prior.months);
    assert!(kept.validation.is_some());

    // An unknown species, an answer without the month facet, a bad country: errors, no file.
    std::fs::remove_file(&out).unwrap();
    let (ok, _, stderr) = run(args(&base, "Vanessa atalanta"));
    assert!(!ok && stderr.contains("Vanessa atalanta"), "{stderr}");
    let without = fake_gbif(records, false);
    let (ok, _, stderr) = run(args(&without, "Celastrina argiolus"));
    assert!(!ok && stderr.contains("no month facet"), "{stderr}");
    let mut bad = args(&base, "Celastrina argiolus");
    bad[3] = "Britain".into();
    assert_eq!(bad[2], "--country");
    let (ok, _, stderr) = run(bad);
    assert!(!ok && stderr.contains("two-letter"), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn cross_validation_reports_the_photo_alone_against_the_prior_per_fold() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(tmp.path(), &SPECIES, 12);
    let mut train = common::quick_config(&data, 1);
    train.observations = Some(common::sample().join("manifest.jsonl"));
    let config = vlinder::train::cv::CvConfig {
        train,
        folds: 2,
        out: tmp.path().join("cv"),
    };
    let report = {
        let _serial = common::training_lock();
        vlinder::train::cv::cross_validate(&config).unwrap()
    };
    let fits: Vec<_> = report
        .folds
        .iter()
        .map(|f| f.prior.clone().unwrap())
        .collect();
    assert_eq!(
        fits.iter().map(|f| f.photos).sum::<usize>(),
        36,
        "every photo validated once"
    );
    let summary = report.prior.as_ref().unwrap();
    let mean = fits.iter().map(|f| f.image.accuracy).sum::<f64>() / 2.0;
    assert!((summary.image[0].0 - mean).abs() < 1e-12);
    // Each fold's weights fitted on the other folds' photos: with two folds, exactly those the
    // other fold's own training fitted on its validation photos.
    for (fold, other) in [(0, 2), (1, 1)] {
        let card = vlinder::trained::ModelDir::new(tmp.path().join(format!("cv/fold-{other}")))
            .read_card()
            .unwrap();
        let crossed = report.folds[fold].cross_fitted.as_ref().unwrap();
        assert_eq!(crossed.weights, card.prior.unwrap().weights);
    }
    assert!(summary.cross_fitted.is_some());
    let table = vlinder::train::cv::render_table(&report);
    for row in [
        "the photo alone",
        "months, weight fitted",
        "weights 1",
        "weights fitted",
        "fitted on the other folds",
    ] {
        assert!(table.contains(row), "{table}");
    }
    let saved = std::fs::read_to_string(tmp.path().join("cv/cv.json")).unwrap();
    assert!(
        saved.contains("\"bayes\""),
        "cv.json keeps the prior's figures"
    );
}
