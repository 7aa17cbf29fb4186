//! The unknown-ness score: fitted on the training photos alone, or with photos of other
//! species, it makes `check`, `predict` and `evaluate` say `unknown` for species the model never
//! saw; models from before it still load and never say it; bad `--others` and `--keep` values
//! are clear errors that write nothing.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use vlinder::check::{self, Verdict};
use vlinder::device::Backend;
use vlinder::evaluate::{self, EvaluateConfig};
use vlinder::model::Architecture;
use vlinder::train::{self, TrainConfig};
use vlinder::trained::{ModelDir, WeightsChoice};

const KNOWN: [&str; 3] = [
    "anthocharis_cardamines",
    "celastrina_argiolus",
    "gonepteryx_rhamni",
];
const LEEDS: &str = "leeds_butterfly_10species";
/// Leeds species given as `--others`; the unknown test photos are of the other species.
const OTHERS: [&str; 3] = ["danaus_plexippus", "junonia_coenia", "vanessa_cardui"];
const UNSEEN: [&str; 3] = [
    "nymphalis_antiopa",
    "papilio_cresphontes",
    "vanessa_atalanta",
];

fn leeds() -> PathBuf {
    common::shared_data().join(LEEDS)
}

/// Lite0 at 160 pixels on 30 photos of each known species, no augmentation.
fn transfer_config(data: &Path) -> TrainConfig {
    TrainConfig {
        backbone: Some(common::lite0_weights()),
        epochs: 30,
        validation_split: 0.2,
        ..common::with_model(common::quick_config(data, 30), |m| {
            m.architecture = Architecture::EfficientNetLite0;
            m.image_size = 160;
        })
    }
}

fn evaluate_config(
    model: &Path,
    data: &Path,
    unknown: Option<&Path>,
    out: &Path,
) -> EvaluateConfig {
    EvaluateConfig {
        unknown: unknown.map(Path::to_path_buf),
        ..common::validation_config(model, data, out)
    }
}

/// Records naming each photo below `dir` (one folder per species) as `claim(photo)`.
fn records(dir: &Path, out: &Path, claim: impl Fn(&Path) -> String) -> PathBuf {
    let mut csv = String::from("id,species,photo\n");
    for (i, photo) in vlinder::dataset::photos_below(dir)
        .unwrap()
        .0
        .iter()
        .enumerate()
    {
        writeln!(csv, "r{i},{},{}", claim(photo), photo.display()).unwrap();
    }
    std::fs::write(out, csv).unwrap();
    out.to_path_buf()
}

#[test]
#[ignore = "needs ../shared: the Lite0 weights and the Leeds photos"]
fn species_the_model_never_saw_are_unknown_and_never_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::shared_subset(tmp.path(), &KNOWN, 30);
    let unseen = common::link_photos(&leeds(), &UNSEEN, 0..12, &tmp.path().join("unseen"));
    let model = tmp.path().join("model");
    // Loading a model draws from the backend's global generator too: the whole test holds the
    // lock, so that its figures repeat.
    let _serial = common::training_lock();
    let card = train::train(&transfer_config(&data), &model).unwrap();
    // The score and its threshold are in the model directory: 95% of 18 validation photos
    // (rounded up to whole photos) pass.
    let novelty = card
        .novelty
        .clone()
        .expect("a finished run has an unknown-ness score");
    assert_eq!(
        (novelty.dimensions, novelty.keep, novelty.others),
        (1280, 0.95, 0)
    );
    assert_eq!(novelty.train_features, 72);
    assert_eq!(novelty.validation_scores.len(), 18);
    let passed = novelty
        .validation_scores
        .iter()
        .filter(|&&s| s as f64 <= novelty.threshold)
        .count();
    assert_eq!(passed, 18, "ceil(0.95 * 18) = 18 of 18 pass");
    assert!(model.join("novelty.safetensors").is_file());

    // evaluate --unknown: the score separates the unseen species from the validation photos,
    // and far fewer of them get `agrees` than on the probabilities alone.
    let report = evaluate::evaluate(&evaluate_config(
        &model,
        &data,
        Some(&unseen),
        &tmp.path().join("e"),
    ))
    .unwrap();
    let open_set = report.open_set.clone().unwrap();
    let unknown = open_set.unknown.clone().unwrap();
    assert_eq!(unknown.photos, 36);
    assert!(unknown.auroc.unwrap() > 0.9, "{unknown:?}");
    assert!(unknown.passed < 0.5, "{unknown:?}");
    assert!(unknown.agrees < unknown.agrees_image_only, "{unknown:?}");
    assert_eq!(open_set.in_set.photos, 18);
    assert!((open_set.in_set.passed - 1.0).abs() < 1e-12);
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("e/evaluation.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["open_set"]["unknown"]["photos"], 36);
    // One row per species folder, which together make up the whole.
    assert_eq!(unknown.by_folder.len(), 3);
    assert!(unknown.by_folder.values().all(|f| f.photos == 12));
    let mean_pass = unknown.by_folder.values().map(|f| f.passed).sum::<f64>() / 3.0;
    assert!((mean_pass - unknown.passed).abs() < 1e-9);
    let table = evaluate::render_report(&report);
    assert!(
        table.contains("AUROC of the score") && table.contains("agrees when named"),
        "{table}"
    );

    // check: every unseen photo named as the model's own top species. An `unknown` photo is
    // never `agrees`, ranks above every photo that agrees, and the report says why.
    let csv = records(&unseen, &tmp.path().join("unseen.csv"), |_| String::new());
    let first = check::check(&common::check_config(&model, &csv)).unwrap();
    let named_as_top = records(&unseen, &tmp.path().join("named.csv"), |photo| {
        let r = first
            .records
            .iter()
            .find(|r| Path::new(&r.record.photos[0]) == photo)
            .unwrap();
        r.ranking[0].species.clone()
    });
    let results = check::check(&common::check_config(&model, &named_as_top)).unwrap();
    let verdicts: Vec<&Verdict> = results
        .records
        .iter()
        .map(|r| r.verdict.as_ref().unwrap())
        .collect();
    let unknowns = verdicts.iter().filter(|v| ***v == Verdict::Unknown).count();
    assert!(unknowns >= 18, "{unknowns} of 36 unseen photos are unknown");
    for r in &results.records {
        let n = r.novelty.unwrap();
        assert_eq!(n.unknown, n.score > n.threshold);
        assert_eq!(
            *r.verdict.as_ref().unwrap() == Verdict::Unknown,
            n.unknown,
            "{r:?}"
        );
        assert_eq!(r.ranking.len(), 3, "the ranking is still given");
    }
    let last_unknown = verdicts
        .iter()
        .rposition(|v| **v == Verdict::Unknown)
        .unwrap();
    let first_agrees = verdicts.iter().position(|v| **v == Verdict::Agrees);
    assert!(
        first_agrees.is_none_or(|a| a > last_unknown),
        "{verdicts:?}"
    );
    let out = tmp.path().join("named-check");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("not one of the species this model knows"));
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(csv.lines().next().unwrap().contains(",unknown_score,"));
    assert_eq!(
        csv.lines().filter(|l| l.contains(",unknown,")).count(),
        unknowns
    );

    // predict says it too, in every format.
    let (ok, json, _) = common::vlinder(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--format",
        "json",
        unseen.to_str().unwrap(),
    ]);
    assert!(ok);
    let answers: serde_json::Value = serde_json::from_str(&json).unwrap();
    let flagged = answers
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["novelty"]["unknown"] == true)
        .count();
    assert_eq!(flagged, unknowns);
    let (_, table, _) = common::vlinder(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        unseen.to_str().unwrap(),
    ]);
    assert_eq!(
        table
            .matches("not one of the species this model knows")
            .count(),
        unknowns
    );
}

#[test]
#[ignore = "needs ../shared: the Lite0 weights and the Leeds photos"]
fn photos_of_other_species_sharpen_the_score_and_the_recipe_has_one_too() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::shared_subset(tmp.path(), &KNOWN, 30);
    // Others in a layout of their own (nested, unlabelled), and held-out photos of the same
    // species and of species neither model saw.
    let others = tmp.path().join("others/any/depth");
    common::link_photos(&leeds(), &OTHERS, 0..10, &others);
    std::fs::write(others.join("README.txt"), "not a photo").unwrap();
    let like_others = common::link_photos(&leeds(), &OTHERS, 10..20, &tmp.path().join("like"));
    let unseen = common::link_photos(&leeds(), &UNSEEN, 0..10, &tmp.path().join("unseen"));
    let (plain, sharp) = (tmp.path().join("plain"), tmp.path().join("sharp"));
    let _serial = common::training_lock();
    {
        train::train(&transfer_config(&data), &plain).unwrap();
        let card = train::train(
            &TrainConfig {
                others: Some(tmp.path().join("others")),
                ..transfer_config(&data)
            },
            &sharp,
        )
        .unwrap();
        assert_eq!(card.novelty.as_ref().unwrap().others, 30);
        assert!(
            card.data
                .skipped
                .iter()
                .any(|s| s.path.ends_with("README.txt")),
            "{:?}",
            card.data.skipped
        );
    }
    let score = |model: &Path, unknown: &Path, out: &str| {
        let report = evaluate::evaluate(&evaluate_config(
            model,
            &data,
            Some(unknown),
            &tmp.path().join(out),
        ))
        .unwrap();
        report.open_set.unwrap().unknown.unwrap()
    };
    // Held-out photos of the species given as others are caught almost all.
    let like = score(&sharp, &like_others, "e1");
    assert!(like.passed <= 0.1, "{like:?}");
    assert!(
        like.passed < score(&plain, &like_others, "e2").passed,
        "{like:?}"
    );
    // And species that neither saw are caught no worse than without others.
    let with_others = score(&sharp, &unseen, "e3");
    let without = score(&plain, &unseen, "e4");
    assert!(
        with_others.auroc.unwrap() + 0.02 >= without.auroc.unwrap(),
        "{with_others:?} {without:?}"
    );

    // The recipe CNN gets a score on its 64 dense activations.
    let recipe = tmp.path().join("recipe");
    let card = train::train(&common::quick_config(&data, 3), &recipe).unwrap();
    assert_eq!(card.novelty.unwrap().dimensions, 64);
    let report = evaluate::evaluate(&evaluate_config(
        &recipe,
        &data,
        Some(&unseen),
        &tmp.path().join("e5"),
    ))
    .unwrap();
    assert!(report.open_set.unwrap().unknown.unwrap().auroc.is_some());
}

#[test]
fn a_model_from_before_the_score_loads_and_never_says_unknown() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(tmp.path(), &KNOWN[..2], 16);
    // The sample's third species, which this model never sees.
    let unseen = common::link_photos(
        &common::sample(),
        &KNOWN[2..],
        0..4,
        &tmp.path().join("unseen"),
    );
    let model = tmp.path().join("model");
    let _serial = common::training_lock();
    train::train(&common::quick_config(&data, 2), &model).unwrap();
    // Today's model.json without the key and without the statistics file, as older versions
    // wrote them.
    let mut card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("model.json")).unwrap()).unwrap();
    card.as_object_mut().unwrap().remove("novelty");
    for key in ["others", "keep"] {
        card["training"].as_object_mut().unwrap().remove(key);
    }
    std::fs::write(model.join("model.json"), card.to_string()).unwrap();
    std::fs::remove_file(model.join("novelty.safetensors")).unwrap();

    let loaded = ModelDir::new(&model)
        .load(WeightsChoice::Last, &Backend::Flex.device().unwrap())
        .unwrap();
    assert!(
        loaded
            .novelty
            .as_ref()
            .unwrap_err()
            .contains("has no unknown-ness score")
    );
    assert_eq!(loaded.card.training.keep, 0.95);
    let csv = records(&unseen, &tmp.path().join("unseen.csv"), |_| {
        KNOWN[0].to_string()
    });
    let results = check::check(&common::check_config(&model, &csv)).unwrap();
    assert!(
        results
            .records
            .iter()
            .all(|r| r.novelty.is_none() && r.verdict != Some(Verdict::Unknown))
    );
    let html = std::fs::read_to_string(tmp.path().join("unseen-check/report.html")).unwrap();
    assert!(
        html.contains("This model cannot say <b>unknown</b>"),
        "{html}"
    );
    let (ok, _, stderr) = common::vlinder(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        unseen.to_str().unwrap(),
    ]);
    assert!(
        ok && stderr.contains("has no unknown-ness score"),
        "{stderr}"
    );
    // evaluate works as before, and --unknown says why it cannot.
    let e = tmp.path().join("e");
    assert!(
        evaluate::evaluate(&evaluate_config(&model, &data, None, &e))
            .unwrap()
            .open_set
            .is_none()
    );
    let err = evaluate::evaluate(&evaluate_config(&model, &data, Some(&unseen), &e))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has no unknown-ness score") && err.contains("retrain"),
        "{err}"
    );

    // Statistics that are not what the card says are refused with the file's name.
    let broken = tmp.path().join("broken");
    train::train(&common::quick_config(&data, 2), &broken).unwrap();
    std::fs::write(broken.join("novelty.safetensors"), b"not safetensors").unwrap();
    let err = ModelDir::new(&broken)
        .load(WeightsChoice::Last, &Backend::Flex.device().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("novelty.safetensors") && err.contains("not safetensors"),
        "{err}"
    );
}

#[test]
fn bad_others_and_keep_values_are_clear_errors_that_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(tmp.path(), &KNOWN[..2], 8);
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let unreadable = tmp.path().join("unreadable");
    std::fs::create_dir(&unreadable).unwrap();
    std::fs::write(unreadable.join("a.jpg"), "<html>not a photo</html>").unwrap();
    std::fs::write(unreadable.join("b.png"), []).unwrap();
    let cases: [(TrainConfig, &str); 6] = [
        (
            TrainConfig {
                others: Some(tmp.path().join("missing")),
                ..common::quick_config(&data, 1)
            },
            "--others must be a folder",
        ),
        (
            TrainConfig {
                others: Some(empty.clone()),
                ..common::quick_config(&data, 1)
            },
            "no readable photo for --others (0 photo files found)",
        ),
        (
            TrainConfig {
                others: Some(unreadable.clone()),
                ..common::quick_config(&data, 1)
            },
            "no readable photo for --others (2 photo files found)",
        ),
        (
            TrainConfig {
                keep: 0.0,
                ..common::quick_config(&data, 1)
            },
            "invalid keep = 0",
        ),
        (
            TrainConfig {
                keep: 1.0,
                ..common::quick_config(&data, 1)
            },
            "invalid keep = 1",
        ),
        (
            TrainConfig {
                keep: f64::NAN,
                ..common::quick_config(&data, 1)
            },
            "invalid keep = NaN",
        ),
    ];
    for (i, (config, expected)) in cases.into_iter().enumerate() {
        let out = tmp.path().join(format!("model-{i}"));
        let err = train::train(&config, &out).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
        assert!(!out.exists(), "nothing is written for {expected}");
    }
    let (ok, _, stderr) = common::vlinder(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--keep",
        "1.5",
        "--out",
        tmp.path().join("cli").to_str().unwrap(),
    ]);
    assert!(
        !ok && stderr.contains("invalid keep = 1.5: a share between 0 and 1"),
        "{stderr}"
    );
}
