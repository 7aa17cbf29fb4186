//! Training on small subsets of the real photos: learning, reproducibility, resuming, saving,
//! and every kind of bad training input.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use vlinder::augment::AugmentParams;
use vlinder::evaluate::{self, EvaluateConfig};
use vlinder::model::Architecture;
use vlinder::train::{self, TrainConfig};
use vlinder::trained::{ModelCard, ModelDir, WeightsChoice};

const PAIR: [&str; 2] = ["celastrina_argiolus", "gonepteryx_rhamni"];

fn config(data: &Path, epochs: usize) -> TrainConfig {
    common::quick_config(data, epochs)
}

/// The message of a training run that must fail.
fn train_error(config: &TrainConfig, out: &Path) -> String {
    train::train(config, out).unwrap_err().to_string()
}

fn losses(card: &ModelCard) -> Vec<(f64, f64)> {
    card.history
        .iter()
        .map(|r| (r.train_loss, r.validation_loss))
        .collect()
}

#[test]
fn learns_the_pair_and_the_saved_model_reproduces_its_validation_metrics() {
    let _serial = common::training_lock();
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(tmp.path(), &PAIR, 80);
    let out = tmp.path().join("model");
    let card = train::train(&config(&data, 10), &out).unwrap();

    let first = &card.history[0];
    let last = card.final_metrics.as_ref().unwrap();
    assert!(
        last.train_loss < first.train_loss * 0.9,
        "training loss falls: {:?}",
        losses(&card)
    );
    // 40 validation photos, balanced: chance is 0.5.
    let best = card.best_metrics.as_ref().unwrap();
    assert!(
        best.validation_accuracy >= 0.7,
        "beats chance clearly: {:?}",
        card.history
    );
    assert_eq!(card.parameters, 64 * 7 * 7 * 64 + 64 + 416 + 8256 + 65);
    assert_eq!(card.data.train.values().sum::<usize>(), 120);
    assert_eq!(card.data.validation.values().sum::<usize>(), 40);

    for file in [
        "model.json",
        "weights.safetensors",
        "weights-best.safetensors",
        "history.csv",
        "learning-curve.png",
        "split.csv",
    ] {
        assert!(out.join(file).is_file(), "{file} is written");
    }
    let history = std::fs::read_to_string(out.join("history.csv")).unwrap();
    assert_eq!(history.lines().count(), 11);
    let split = std::fs::read_to_string(out.join("split.csv")).unwrap();
    assert_eq!(
        split.lines().filter(|l| l.ends_with(",validation")).count(),
        40
    );

    // Loading the saved weights and re-deriving the split gives the metrics training reported.
    let report = common::evaluate_validation(&out, &data, &tmp.path().join("eval"));
    assert_eq!(report.evaluation.photos, 40);
    assert!((report.evaluation.accuracy - last.validation_accuracy).abs() < 1e-9);
    assert!((report.evaluation.log_loss - last.validation_loss).abs() < 1e-5);
    assert!(report.evaluation.roc_auc.unwrap() > 0.5);
    assert!(tmp.path().join("eval/evaluation.json").is_file());
    assert!(tmp.path().join("eval/confusion-matrix.png").is_file());

    let best_report = evaluate::evaluate(&EvaluateConfig {
        weights: WeightsChoice::Best,
        ..report.config.clone()
    })
    .unwrap();
    assert!((best_report.evaluation.log_loss - best.validation_loss).abs() < 1e-5);
}

#[test]
fn the_same_seed_gives_the_same_run_and_another_seed_another() {
    let _serial = common::training_lock();
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(tmp.path(), &PAIR, 30);
    let a = train::train(&config(&data, 3), &tmp.path().join("a")).unwrap();
    let b = train::train(&config(&data, 3), &tmp.path().join("b")).unwrap();
    assert_eq!(losses(&a), losses(&b));
    for file in ["split.csv", "weights.safetensors", "novelty.safetensors"] {
        assert!(
            file_bytes(&tmp.path().join("a"), file) == file_bytes(&tmp.path().join("b"), file),
            "{file} differs between two runs of the same seed"
        );
    }
    let c = train::train(
        &TrainConfig {
            seed: 4,
            ..config(&data, 3)
        },
        &tmp.path().join("c"),
    )
    .unwrap();
    assert_ne!(losses(&a), losses(&c));
}

#[test]
fn mixup_changes_the_run_and_repeats_with_the_seed() {
    let _serial = common::training_lock();
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(tmp.path(), &PAIR, 30);
    let mixed = TrainConfig {
        mixup: 0.4,
        ..config(&data, 3)
    };
    let a = train::train(&mixed, &tmp.path().join("a")).unwrap();
    let b = train::train(&mixed, &tmp.path().join("b")).unwrap();
    assert_eq!(losses(&a), losses(&b));
    assert_eq!(a.training.mixup, 0.4, "model.json records it");
    let plain = train::train(&config(&data, 3), &tmp.path().join("plain")).unwrap();
    assert_ne!(losses(&a), losses(&plain));
}

#[test]
fn an_interrupted_run_resumes_where_it_stopped() {
    let _serial = common::training_lock();
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(tmp.path(), &PAIR, 30);
    let whole = train::train(&config(&data, 4), &tmp.path().join("whole")).unwrap();

    // A run stopped after two of its four epochs: its directory says 2 of 4.
    let dir = tmp.path().join("stopped");
    train::train(&config(&data, 2), &dir).unwrap();
    let model_dir = ModelDir::new(&dir);
    let mut card = model_dir.read_card().unwrap();
    card.training.epochs = 4;
    model_dir.write_card(&card).unwrap();

    let resumed = train::resume(&dir).unwrap();
    assert_eq!(resumed.epochs_completed, 4);
    let (a, b) = (losses(&whole), losses(&resumed));
    for (x, y) in a.iter().zip(&b) {
        assert!(
            (x.0 - y.0).abs() < 1e-5 && (x.1 - y.1).abs() < 1e-5,
            "{a:?} vs {b:?}"
        );
    }
}

#[test]
fn augmentation_changes_training_not_validation_and_is_reproducible() {
    let _serial = common::training_lock();
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(tmp.path(), &PAIR, 30);
    let augmented = TrainConfig {
        no_augment: false,
        ..config(&data, 3)
    };
    let a = train::train(&augmented, &tmp.path().join("a")).unwrap();
    let b = train::train(&augmented, &tmp.path().join("b")).unwrap();
    let plain = train::train(&config(&data, 3), &tmp.path().join("plain")).unwrap();
    assert_eq!(
        losses(&a),
        losses(&b),
        "the same seed draws the same augmentations"
    );
    assert_ne!(
        losses(&a),
        losses(&plain),
        "augmentation changes what the network sees"
    );
    let saved = ModelDir::new(tmp.path().join("a")).read_card().unwrap();
    assert!(!saved.training.no_augment);
    assert_eq!(saved.training.augment, AugmentParams::default());
    // Validation photos are never augmented: evaluating the saved model on them gives the
    // metrics training reported.
    let report =
        common::evaluate_validation(&tmp.path().join("a"), &data, &tmp.path().join("eval"));
    assert!((report.evaluation.log_loss - a.final_metrics.unwrap().validation_loss).abs() < 1e-5);
    // Bad augmentation values are refused before any work.
    let bad = TrainConfig {
        augment: AugmentParams {
            rotation_range: -5.0,
            ..AugmentParams::default()
        },
        ..augmented
    };
    let err = train::train(&bad, &tmp.path().join("bad"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("rotation-range"), "{err}");
}

#[test]
fn several_species_train_with_a_softmax() {
    let _serial = common::training_lock();
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(
        tmp.path(),
        &[
            "anthocharis_cardamines",
            "celastrina_argiolus",
            "gonepteryx_rhamni",
        ],
        20,
    );
    let card = train::train(
        &common::with_model(config(&data, 2), |m| {
            m.architecture = Architecture::RecipeDropout
        }),
        &tmp.path().join("m"),
    )
    .unwrap();
    assert_eq!(card.output, "softmax");
    assert_eq!(card.species.len(), 3);
    assert_eq!(card.history.len(), 2);
}

/// A copy of a two-species subset whose first species folder also holds bad files.
fn data_with_bad_files(tmp: &Path) -> PathBuf {
    let data = common::subset(tmp, &PAIR, 12);
    let species = data.join(PAIR[0]);
    let real = common::real_jpeg();
    std::fs::write(species.join("empty.jpg"), b"").unwrap();
    std::fs::write(species.join("text.jpg"), b"<html>not a photo</html>").unwrap();
    std::fs::write(species.join("cut.jpg"), &real[..real.len() / 2]).unwrap();
    data
}

#[test]
fn bad_photos_are_skipped_counted_and_listed() {
    let _serial = common::training_lock();
    let tmp = tempfile::tempdir().unwrap();
    let data = data_with_bad_files(tmp.path());
    let card = train::train(&config(&data, 1), &tmp.path().join("m")).unwrap();
    let mut skipped: Vec<String> = card
        .data
        .skipped
        .iter()
        .map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    skipped.sort();
    assert_eq!(skipped, ["cut.jpg", "empty.jpg", "text.jpg"]);
    let used: usize =
        card.data.train.values().sum::<usize>() + card.data.validation.values().sum::<usize>();
    assert_eq!(used, 24);
    let saved = ModelDir::new(tmp.path().join("m")).read_card().unwrap();
    assert_eq!(saved.data.skipped.len(), 3);
}

#[test]
fn bad_training_inputs_are_clear_errors() {
    let _serial = common::training_lock();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();

    // One species only.
    let one = common::subset(&t.join("one"), &PAIR[..1], 5);
    let err = train_error(&config(&one, 1), &t.join("m1"));
    assert!(err.contains("at least two"), "{err}");

    // A species whose photos are all unreadable.
    let data = common::subset(&t.join("unreadable"), &PAIR[..1], 5);
    std::fs::create_dir(data.join("broken")).unwrap();
    std::fs::write(data.join("broken/a.jpg"), b"nope").unwrap();
    std::fs::write(data.join("broken/b.jpg"), b"").unwrap();
    let err = train_error(&config(&data, 1), &t.join("m2"));
    assert!(
        err.contains("broken") && err.contains("no readable training photo"),
        "{err}"
    );

    // A validation folder with nothing readable, and one with a species the training lacks.
    let train_dir = common::subset(&t.join("train"), &PAIR, 5);
    let validation = t.join("validation");
    std::fs::create_dir_all(validation.join(PAIR[0])).unwrap();
    std::fs::write(validation.join(PAIR[0]).join("x.jpg"), b"").unwrap();
    let separate = TrainConfig {
        data: None,
        train: Some(train_dir.clone()),
        validation: Some(validation.clone()),
        ..config(&train_dir, 1)
    };
    let err = train_error(&separate, &t.join("m3"));
    assert!(
        err.contains("validation set has no readable photo"),
        "{err}"
    );
    std::fs::create_dir_all(validation.join("vanessa_atalanta")).unwrap();
    let err = train_error(&separate, &t.join("m4"));
    assert!(
        err.contains("vanessa_atalanta") && err.contains("unknown to the model"),
        "{err}"
    );

    // Bad values name the parameter and what is allowed.
    let err = train_error(
        &common::with_model(config(&train_dir, 1), |m| m.image_size = 4),
        &t.join("m5"),
    );
    assert!(
        err.contains("image-size") && err.contains("between 6 and 1024"),
        "{err}"
    );
    let err = train_error(
        &TrainConfig {
            validation_split: 0.0,
            ..config(&train_dir, 1)
        },
        &t.join("m6"),
    );
    assert!(err.contains("validation-split"), "{err}");

    // An existing model is never overwritten.
    train::train(&config(&train_dir, 1), &t.join("m7")).unwrap();
    let err = train_error(&config(&train_dir, 1), &t.join("m7"));
    assert!(err.contains("already holds a model"), "{err}");
}

#[test]
fn a_run_that_diverges_stops_with_the_epoch_and_keeps_the_last_finite_one() {
    let _serial = common::training_lock();
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(tmp.path(), &PAIR, 12);
    let out = tmp.path().join("model");
    let diverging = TrainConfig {
        learning_rate: 1e8,
        ..config(&data, 5)
    };
    let err = train::train(&diverging, &out).unwrap_err();
    let vlinder::Error::Diverged { epoch, kept, .. } = err else {
        panic!("{err}")
    };
    let message = err.to_string();
    assert!(
        message.contains(&format!("diverged in epoch {epoch}"))
            && message.contains("lower --learning-rate than 100000000"),
        "{message}"
    );
    assert_eq!(kept, epoch - 1);
    // What is on disk is the last finite epoch, whole, or no model yet if that was the first.
    let card = vlinder::trained::ModelDir::new(&out).read_card().unwrap();
    assert_eq!(card.epochs_completed, kept);
    assert!(card.history.iter().all(|r| r.train_loss.is_finite()));
    let (ok, _, stderr) = common::vlinder(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--learning-rate",
        "1e8",
        "--image-size",
        "32",
        "--epochs",
        "5",
        "--out",
        tmp.path().join("cli").to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("diverged in epoch"), "{stderr}");
}

#[test]
fn the_command_line_trains_predicts_and_fails_with_a_non_zero_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(tmp.path(), &PAIR, 10);
    let model = tmp.path().join("model");
    let (ok, stdout, stderr) = common::vlinder(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "1",
        "--image-size",
        "24",
        "--out",
        model.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("model written to"), "{stdout}");
    assert!(stderr.contains("epoch 1/1"), "{stderr}");

    let photo = data
        .join(PAIR[1])
        .read_dir()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let (ok, stdout, _) = common::vlinder(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        photo.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(ok);
    let parsed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let ranking = parsed[0]["ranking"].as_array().unwrap();
    assert_eq!(ranking.len(), 2);
    let p0 = ranking[0]["probability"].as_f64().unwrap();
    let p1 = ranking[1]["probability"].as_f64().unwrap();
    assert!(p0 >= p1 && (p0 + p1 - 1.0).abs() < 1e-5);

    // A folder works too; an unreadable photo is reported, the others still answered.
    let bad = tmp.path().join("bad.jpg");
    std::fs::write(&bad, b"not a jpeg").unwrap();
    // A hidden file in a folder (macOS leaves `._` files) is no photo, as in training.
    std::fs::write(data.join(PAIR[0]).join("._0001.jpg"), b"resource fork").unwrap();
    let (ok, stdout, stderr) = common::vlinder(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        data.join(PAIR[0]).to_str().unwrap(),
        bad.to_str().unwrap(),
        "--format",
        "csv",
    ]);
    assert!(!ok);
    assert_eq!(
        stdout.lines().filter(|l| l.contains(",1,")).count(),
        10,
        "{stdout}"
    );
    assert!(
        stdout.contains("bad.jpg,,,,") && stderr.contains("1 of 11"),
        "{stdout}{stderr}"
    );
    assert!(!stdout.contains("._0001.jpg"), "{stdout}");

    // A reader that stops early (`| head`) ends the output quietly.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vlinder"))
        .args(["predict", "--model", model.to_str().unwrap()])
        .arg(data.join(PAIR[0]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("panicked"),
        "{stderr}"
    );

    let (ok, _, stderr) = common::vlinder(&[
        "predict",
        "--model",
        tmp.path().join("none").to_str().unwrap(),
        photo.to_str().unwrap(),
    ]);
    assert!(
        !ok && stderr.contains("none") && stderr.contains("not a vlinder model directory"),
        "{stderr}"
    );

    let (ok, _, stderr) =
        common::vlinder(&["train", "--out", tmp.path().join("x").to_str().unwrap()]);
    assert!(!ok && stderr.contains("--data"), "{stderr}");

    // Evaluating on a species the model does not know.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(other.join("vanessa_cardui")).unwrap();
    let (ok, _, stderr) = common::vlinder(&[
        "evaluate",
        "--model",
        model.to_str().unwrap(),
        "--data",
        other.to_str().unwrap(),
    ]);
    assert!(
        !ok && stderr.contains("vanessa_cardui") && stderr.contains("unknown to the model"),
        "{stderr}"
    );
}

#[test]
fn cross_validation_trains_one_model_per_fold_and_summarises_them() {
    use vlinder::train::cv::{CvConfig, cross_validate};
    let _serial = common::training_lock();
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(tmp.path(), &PAIR, 9);
    let out = tmp.path().join("cv");
    let report = cross_validate(&CvConfig {
        train: config(&data, 1),
        folds: 3,
        out: out.clone(),
    })
    .unwrap();
    assert_eq!(report.folds.len(), 3);
    for f in &report.folds {
        assert_eq!((f.train_photos, f.validation_photos), (12, 6));
        assert!(f.model.join("model.json").is_file());
    }
    // The summary from the folds' own model directories: mean and sample standard deviation of
    // each fold's final validation accuracy and log loss, in cv.json and in the table.
    let finals: Vec<(f64, f64)> = report
        .folds
        .iter()
        .map(|f| {
            let m = ModelDir::new(&f.model)
                .read_card()
                .unwrap()
                .final_metrics
                .unwrap();
            assert_eq!(
                (f.accuracy, f.log_loss),
                (m.validation_accuracy, m.validation_loss)
            );
            (m.validation_accuracy, m.validation_loss)
        })
        .collect();
    let mean_std = |values: Vec<f64>| {
        let mean = values.iter().sum::<f64>() / 3.0;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 2.0;
        (mean, var.sqrt())
    };
    let accuracy = mean_std(finals.iter().map(|f| f.0).collect());
    let log_loss = mean_std(finals.iter().map(|f| f.1).collect());
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("cv.json")).unwrap()).unwrap();
    for (key, want) in [
        ("mean_accuracy", accuracy.0),
        ("std_accuracy", accuracy.1),
        ("mean_log_loss", log_loss.0),
        ("std_log_loss", log_loss.1),
    ] {
        let got = saved[key].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "{key}: {got} vs {want}");
    }
    let table = vlinder::train::cv::render_table(&report);
    assert!(
        table.contains(&format!(
            "mean accuracy {:.4} ± {:.4}, log loss {:.4} ± {:.4} over 3 folds",
            accuracy.0, accuracy.1, log_loss.0, log_loss.1
        )),
        "{table}"
    );
    // Every photo is validated exactly once across the folds.
    let mut validated: Vec<String> = report
        .folds
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f.model.join("split.csv"))
                .unwrap()
                .lines()
                .filter(|l| l.ends_with(",validation"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    validated.sort();
    validated.dedup();
    assert_eq!(validated.len(), 18);
    // A fold's model is evaluated on its own fold, as split.csv lists it, not on a fresh 80/20,
    // also when the photos' folder has moved since.
    let moved = tmp.path().join("moved");
    std::fs::rename(&data, &moved).unwrap();
    for f in &report.folds {
        let e = common::evaluate_validation(&f.model, &moved, &tmp.path().join("e"));
        assert_eq!(e.evaluation.photos, 6);
        assert!(
            (e.evaluation.accuracy - f.accuracy).abs() < 1e-12,
            "{} vs {}",
            e.evaluation.accuracy,
            f.accuracy
        );
    }
    std::fs::rename(&moved, &data).unwrap();
    let err = cross_validate(&CvConfig {
        train: config(&data, 1),
        folds: 10,
        out: tmp.path().join("x"),
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("folds") && err.contains("smallest species"),
        "{err}"
    );
}

#[test]
fn cross_validation_with_unknown_photos_reports_each_folds_open_set_figures() {
    use vlinder::train::cv::{CvConfig, cross_validate};
    let _serial = common::training_lock();
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(tmp.path(), &PAIR, 9);
    // The sample's third species, which the folds never train on.
    let unknown = common::subset(&tmp.path().join("u"), &["anthocharis_cardamines"], 10);
    let with_unknown = TrainConfig {
        unknown: Some(unknown.clone()),
        ..config(&data, 1)
    };
    let report = cross_validate(&CvConfig {
        train: with_unknown.clone(),
        folds: 3,
        out: tmp.path().join("cv"),
    })
    .unwrap();
    let mut agrees = Vec::new();
    for f in &report.folds {
        let card = ModelDir::new(&f.model).read_card().unwrap();
        let open_set = card.open_set.expect("the fold model measured its score");
        assert_eq!(f.open_set.as_ref(), Some(&open_set));
        assert_eq!(open_set.in_set.photos, 6, "the fold's validation photos");
        let u = open_set.unknown.expect("and the unknown photos");
        assert_eq!(u.photos, 10);
        assert_eq!(u.by_folder["anthocharis_cardamines"].photos, 10);
        assert!(u.auroc.is_some_and(|a| (0.0..=1.0).contains(&a)));
        agrees.push(u.agrees);
    }
    let summary = report.open_set.as_ref().expect("a summary of the folds");
    let mean = agrees.iter().sum::<f64>() / 3.0;
    assert!((summary.agrees.0 - mean).abs() < 1e-12, "{summary:?}");
    let table = vlinder::train::cv::render_table(&report);
    assert!(
        table.contains("unknown photos: AUROC") && table.contains("right names agree"),
        "{table}"
    );
    // A missing or empty folder stops the run before a photo is decoded or a fold trained.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for (dir, expected) in [
        (tmp.path().join("missing"), "--unknown must be a folder"),
        (
            empty,
            "no readable photo for --unknown (0 photo files found)",
        ),
    ] {
        let out = tmp.path().join("bad");
        let err = cross_validate(&CvConfig {
            train: TrainConfig {
                unknown: Some(dir),
                ..config(&data, 1)
            },
            folds: 3,
            out: out.clone(),
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains(expected), "{err}");
        assert!(!out.exists(), "nothing is written for {expected}");
    }
}

/// The safetensors file's tensors in `dir` (weights written with sorted headers compare as bytes).
fn file_bytes(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

/// history.csv without its timing columns (seconds, images per second, waiting), which no two
/// runs share.
fn history_metrics(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("history.csv"))
        .unwrap()
        .lines()
        .map(|l| l.split(',').take(5).collect::<Vec<_>>().join(","))
        .collect()
}

/// Every file or folder below `dir` whose name marks it temporary.
fn temporary_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if vlinder::files::is_temporary(&path.file_name().unwrap().to_string_lossy()) {
                found.push(path.clone());
            }
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    found
}

#[test]
fn a_run_killed_at_any_point_resumes_to_the_same_weights_as_an_uninterrupted_one() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(tmp.path(), &PAIR, 40);
    // Augmented, so that resuming must also draw the same augmentations.
    let train_args = |out: &Path| -> Vec<String> {
        [
            "train",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--epochs",
            "6",
            "--image-size",
            "32",
            "--seed",
            "3",
        ]
        .map(String::from)
        .to_vec()
    };
    let whole = tmp.path().join("whole");
    let args = train_args(&whole);
    let (ok, _, stderr) = common::vlinder(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{stderr}");

    // Killed with SIGKILL as epoch k is being written (the line is printed just before the
    // files), a little later for even k, then resumed.
    for k in 1..=5 {
        let out = tmp.path().join(format!("killed-{k}"));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vlinder"))
            .args(train_args(&out))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mark = format!("epoch {k}/6:");
        for line in stderr.lines() {
            if line.unwrap().contains(&mark) {
                if k % 2 == 0 {
                    std::thread::sleep(Duration::from_millis(3));
                }
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let left: Vec<String> = std::fs::read_dir(out.join("checkpoint"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let recorded = ModelDir::new(&out).read_card().map(|c| c.epochs_completed);
        eprintln!(
            "killed at epoch {k}: model.json says {recorded:?}, checkpoint/ holds {left:?}, {} temporary files",
            temporary_files(&out).len()
        );
        let (ok, _, stderr) = common::vlinder(&["train", "--resume", out.to_str().unwrap()]);
        assert!(ok, "killed at epoch {k}: {stderr}");
        for file in ["weights.safetensors", "weights-best.safetensors"] {
            assert!(
                file_bytes(&out, file) == file_bytes(&whole, file),
                "killed at epoch {k}: {file} differs from the uninterrupted run's"
            );
        }
        assert_eq!(
            history_metrics(&out),
            history_metrics(&whole),
            "killed at epoch {k}"
        );
        let card = ModelDir::new(&out).read_card().unwrap();
        let epochs: Vec<usize> = card.history.iter().map(|r| r.epoch).collect();
        assert_eq!(
            epochs,
            (1..=6).collect::<Vec<_>>(),
            "each epoch recorded once"
        );
        assert_eq!(temporary_files(&out), Vec::<PathBuf>::new());
        let checkpoints: Vec<String> = std::fs::read_dir(out.join("checkpoint"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(checkpoints, ["epoch-0006"]);
    }
}

#[test]
fn model_transfer_without_an_installed_backbone_names_the_install_command_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("model");
    for command in ["train", "cv"] {
        let result = std::process::Command::new(env!("CARGO_BIN_EXE_vlinder"))
            .args([command, "--data", common::sample().to_str().unwrap()])
            .args(["--model", "transfer", "--out", out.to_str().unwrap()])
            .env("VLINDER_CACHE", tmp.path().join("empty cache"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "{command}: {stderr}");
        assert!(
            stderr.contains("vlinder backbone install efficientnet-lite0"),
            "{command}: {stderr}"
        );
        assert!(!out.exists(), "{command} wrote {}", out.display());
    }
}
