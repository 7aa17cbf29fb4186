//! Transfer learning on EfficientNet-Lite0: the head trained on cached features, saved with the
//! backbone, gives the same answers through the whole network.

mod common;

use std::path::Path;

use vlinder::dataset::ResizeFilter;
use vlinder::evaluate::EvaluationReport;
use vlinder::model::Architecture;
use vlinder::train::{self, FineTuneInput, Schedule, TrainConfig};
use vlinder::trained::{ModelCard, ModelDir, WeightsChoice};

const PAIR: [&str; 2] = ["anthocharis_cardamines", "gonepteryx_rhamni"];

fn transfer_config(data: &std::path::Path) -> TrainConfig {
    TrainConfig {
        backbone: Some(common::lite0_weights()),
        epochs: 15,
        ..common::with_model(common::quick_config(data, 15), |m| {
            m.architecture = Architecture::EfficientNetLite0;
            m.image_size = 96;
        })
    }
}

#[test]
#[ignore = "needs ../shared: the Lite0 weights"]
fn the_head_learns_and_the_saved_network_reproduces_its_validation_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::shared_subset(tmp.path(), &PAIR, 24);
    let out = tmp.path().join("model");
    let _serial = common::training_lock();
    let card = train::train(&transfer_config(&data), &out).unwrap();
    let last = card.final_metrics.clone().unwrap();
    assert!(last.validation_accuracy >= 0.75, "{:?}", card.history);
    assert!(last.train_loss < card.history[0].train_loss);
    assert_eq!(card.architecture, Architecture::EfficientNetLite0);
    assert_eq!(card.preprocessing.normalisation.offset, 127.0);
    assert!(card.calibration.is_some());

    // Through the whole saved network (backbone + head) the validation photos score as the head
    // did on their cached features.
    let report = assert_scores_as_trained(&out, &data, &tmp.path().join("eval"), &card);
    assert_eq!(report.evaluation.photos, 12);

    // A transfer run is not resumed from the middle: it says so.
    let dir = ModelDir::new(&out);
    let mut unfinished = dir.read_card().unwrap();
    unfinished.training.epochs += 5;
    dir.write_card(&unfinished).unwrap();
    let err = train::resume(&out).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("cannot be resumed"), "{err}");
}

#[test]
#[ignore = "needs ../shared: the Lite0 weights"]
fn augmented_copies_change_the_head_and_repeat_with_the_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::shared_subset(tmp.path(), &PAIR, 8);
    let _serial = common::training_lock();
    let plain = train::train(
        &TrainConfig {
            epochs: 2,
            ..transfer_config(&data)
        },
        &tmp.path().join("plain"),
    )
    .unwrap();
    let augmented = TrainConfig {
        epochs: 2,
        no_augment: false,
        feature_copies: 2,
        ..transfer_config(&data)
    };
    let a = train::train(&augmented, &tmp.path().join("a")).unwrap();
    assert_eq!(a.data.train.values().sum::<usize>(), 12);
    assert_ne!(plain.history[0].train_loss, a.history[0].train_loss);
    let b = train::train(&augmented, &tmp.path().join("b")).unwrap();
    assert_eq!(
        a.history[1].train_loss, b.history[1].train_loss,
        "seeded copies repeat"
    );
}

#[test]
fn transfer_settings_that_cannot_work_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(tmp.path(), &PAIR, 4);
    let err = train::train(
        &common::with_model(transfer_config(&data), |m| m.image_size = 16),
        &tmp.path().join("b"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("image-size") && err.contains("between 32 and 1024"),
        "{err}"
    );
    let missing = tmp.path().join("no-such-weights.pth");
    let err = train::train(
        &TrainConfig {
            backbone: Some(missing),
            ..transfer_config(&data)
        },
        &tmp.path().join("c"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no-such-weights.pth"), "{err}");
    assert!(
        !tmp.path().join("c").exists(),
        "nothing is written before the backbone loads"
    );
}

/// Evaluates the model saved at `model` on the validation photos of its split of `data` and
/// checks that they score exactly as its last epoch did in training.
fn assert_scores_as_trained(
    model: &Path,
    data: &Path,
    out: &Path,
    card: &ModelCard,
) -> EvaluationReport {
    let last = card.final_metrics.clone().unwrap();
    let report = common::evaluate_validation(model, data, out);
    assert!((report.evaluation.accuracy - last.validation_accuracy).abs() < 1e-9);
    assert!(
        (report.evaluation.log_loss - last.validation_loss).abs() < 1e-4,
        "{} vs {}",
        report.evaluation.log_loss,
        last.validation_loss
    );
    report
}

/// Every tensor of a saved model, by name.
fn saved_tensors(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    use burn::store::ModuleSnapshot;
    let model = ModelDir::new(dir)
        .load(WeightsChoice::Last, &Default::default())
        .unwrap();
    model
        .network
        .collect(None, None, true)
        .into_iter()
        .map(|t| (t.name.clone(), t.to_bytes().unwrap().to_vec()))
        .collect()
}

#[test]
#[ignore = "needs ../shared: the Lite0 weights"]
fn fine_tuning_trains_only_the_last_blocks_and_keeps_the_imagenet_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::shared_subset(tmp.path(), &PAIR, 12);
    let frozen_run = TrainConfig {
        epochs: 3,
        ..transfer_config(&data)
    };
    let tuned_run = TrainConfig {
        fine_tune: 2,
        fine_tune_epochs: 2,
        ..frozen_run.clone()
    };
    // The same from the photos, run through the frozen blocks each epoch: without
    // augmentation, the very inputs of the cached activations.
    let photos_run = TrainConfig {
        fine_tune_from: FineTuneInput::Photos,
        ..tuned_run.clone()
    };
    // Augmented afresh each epoch (and no augmented copies for the head, which then trains as
    // in the others).
    let fresh_run = TrainConfig {
        no_augment: false,
        feature_copies: 0,
        ..photos_run.clone()
    };
    // Held to the end: loading a model draws initial weights from the same seeded generator
    // that another test's training draws its dropout from.
    let _serial = common::training_lock();
    let frozen = train::train(&frozen_run, &tmp.path().join("frozen")).unwrap();
    let tuned = train::train(&tuned_run, &tmp.path().join("tuned")).unwrap();
    let photos = train::train(&photos_run, &tmp.path().join("from-photos")).unwrap();
    let fresh = train::train(&fresh_run, &tmp.path().join("fresh")).unwrap();
    for card in [&tuned, &photos, &fresh] {
        assert_eq!(card.history.len(), 5);
        assert_eq!(card.epochs_completed, 5);
        assert!(card.calibration.is_some());
        assert_eq!(
            frozen.history[2].train_loss, card.history[2].train_loss,
            "the head trains as without fine-tuning first"
        );
    }
    for epoch in 3..5 {
        let cached = &tuned.history[epoch];
        let (photos, fresh) = (&photos.history[epoch], &fresh.history[epoch]);
        assert!(
            (cached.train_loss - photos.train_loss).abs() < 1e-6
                && (cached.validation_loss - photos.validation_loss).abs() < 1e-6,
            "epoch {}: the same inputs from the photos as from the cached activations",
            epoch + 1
        );
        assert_ne!(
            fresh.train_loss,
            photos.train_loss,
            "epoch {}: trained on fresh augmentations",
            epoch + 1
        );
    }

    let before = saved_tensors(&tmp.path().join("frozen"));
    // Trained: the last two blocks, the 1x1 head convolution and its batch norm (`backbone.bn1`,
    // matched exactly: every block has a `bn1` of its own), and the classifier.
    let trainable = |name: &str| {
        [
            "backbone.blocks.14.",
            "backbone.blocks.15.",
            "backbone.conv_head.",
            "backbone.bn1.",
            "head.",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
    };
    for (run, card) in [
        ("tuned", &tuned),
        ("from-photos", &photos),
        ("fresh", &fresh),
    ] {
        let mut after = saved_tensors(&tmp.path().join(run));
        // The unknown-ness score's copy of the tuned blocks and head convolution keeps their
        // ImageNet weights: those of the model trained without fine-tuning.
        let tail: Vec<String> = after
            .keys()
            .filter(|name| name.starts_with("backbone.imagenet_tail."))
            .cloned()
            .collect();
        assert!(tail.len() > 20, "{run}: {} tensors in the tail", tail.len());
        for name in &tail {
            let original = name
                .replace("imagenet_tail.blocks.0.", "blocks.14.")
                .replace("imagenet_tail.blocks.1.", "blocks.15.")
                .replace("imagenet_tail.", "");
            assert_eq!(
                after[name], before[&original],
                "{run}: {name} is {original} as before fine-tuning"
            );
            after.remove(name);
        }
        let novelty = card.novelty.as_ref().unwrap();
        assert!(
            novelty.features.contains("ImageNet"),
            "{}",
            novelty.features
        );
        assert_eq!(card.training.model.imagenet_tail, 2);
        assert_eq!(before.len(), after.len());
        let mut frozen_checked = 0;
        for (name, bytes) in &before {
            if name.contains("running_") || !trainable(name) {
                assert_eq!(bytes, &after[name], "{run}: {name} must not change");
                frozen_checked += 1;
            }
        }
        // The frozen blocks' batch-norm scale and shift are among them.
        for name in ["backbone.blocks.3.bn1.gamma", "backbone.blocks.13.bn2.beta"] {
            assert_eq!(before[name], after[name], "{run}: {name} must not change");
        }
        assert!(
            frozen_checked > 200,
            "{frozen_checked} frozen tensors compared"
        );
        for name in [
            "backbone.blocks.15.project_conv.conv.weight",
            "backbone.blocks.14.depthwise_conv.conv.weight",
            "backbone.blocks.15.bn2.gamma",
            "backbone.conv_head.conv.weight",
            "backbone.bn1.gamma",
        ] {
            assert_ne!(before[name], after[name], "{run}: {name} is fine-tuned");
        }

        // The saved network, run from the photos, scores the validation photos as fine-tuning
        // did from the kept activations.
        assert_scores_as_trained(
            &tmp.path().join(run),
            &data,
            &tmp.path().join(format!("eval-{run}")),
            card,
        );
    }
}

#[test]
#[ignore = "needs ../shared: the Lite0 weights"]
fn a_model_that_looks_at_mirrors_scores_as_trained_with_or_without_fine_tuning() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::shared_subset(tmp.path(), &PAIR, 12);
    let once = TrainConfig {
        epochs: 3,
        ..transfer_config(&data)
    };
    let mirrored = common::with_model(once.clone(), |m| m.mirror = true);
    let smoothed = TrainConfig {
        label_smoothing: 0.2,
        ..mirrored.clone()
    };
    let tuned = TrainConfig {
        fine_tune: 2,
        fine_tune_epochs: 2,
        ..smoothed.clone()
    };
    let _serial = common::training_lock();
    let mut cards = Vec::new();
    for (run, config) in [
        ("once", &once),
        ("mirrored", &mirrored),
        ("smoothed", &smoothed),
        ("tuned", &tuned),
    ] {
        let out = tmp.path().join(run);
        let card = train::train(config, &out).unwrap();
        // The validation photos were scored in training as the saved network answers them:
        // from both views, through the cached features or the fine-tuned blocks' activations.
        assert_scores_as_trained(&out, &data, &tmp.path().join(format!("eval-{run}")), &card);
        cards.push(card);
    }
    let [once, mirrored, smoothed, tuned] = &cards[..] else {
        unreachable!()
    };
    assert!(mirrored.training.model.mirror && !once.training.model.mirror);
    // The head trains on the same single views; only its validation looks twice.
    assert_eq!(once.history[0].train_loss, mirrored.history[0].train_loss);
    assert_ne!(
        once.history[0].validation_loss,
        mirrored.history[0].validation_loss
    );
    // Smoothed targets cannot be met exactly: a higher training loss from the first epoch.
    assert!(smoothed.history[0].train_loss > mirrored.history[0].train_loss);
    assert_eq!(tuned.history.len(), 5);
}

#[test]
#[ignore = "needs ../shared: the Lite0 weights"]
fn fine_tuning_stops_early_with_its_best_weights_and_follows_its_schedule() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::shared_subset(tmp.path(), &PAIR, 12);
    // A learning rate far too high for fine-tuning: the validation loss soon stops falling.
    let constant = TrainConfig {
        epochs: 3,
        fine_tune: 2,
        fine_tune_epochs: 6,
        fine_tune_learning_rate: 1e-3,
        ..transfer_config(&data)
    };
    let patient = TrainConfig {
        fine_tune_patience: Some(1),
        ..constant.clone()
    };
    let cosine = TrainConfig {
        fine_tune_schedule: Schedule::Cosine,
        fine_tune_warmup: 1,
        ..constant.clone()
    };
    let _serial = common::training_lock();
    let out = tmp.path().join("patient");
    let card = train::train(&patient, &out).unwrap();
    let stopped = card.stopped_early.expect("fine-tuning stopped early");
    assert_eq!(card.history.len(), stopped.epoch, "{:?}", card.history);
    assert!(stopped.epoch < patient.total_epochs(), "{stopped:?}");
    // Patience 1: the epoch after the best one did no better, and the best one is kept.
    assert_eq!(stopped.kept + 1, stopped.epoch);
    assert!(
        stopped.kept > patient.epochs,
        "a fine-tuning epoch: {stopped:?}"
    );
    let kept = &card.history[stopped.kept - 1];
    assert!(card.history[stopped.epoch - 1].validation_loss >= kept.validation_loss);
    assert_eq!(card.final_metrics.as_ref(), Some(kept));
    assert!(card.is_complete() && card.calibration.is_some());
    // The saved weights are the kept epoch's: they score the validation photos as it did.
    assert_scores_as_trained(&out, &data, &tmp.path().join("eval"), &card);
    let reread = ModelDir::new(&out).read_card().unwrap();
    assert_eq!(reread.stopped_early, Some(stopped));

    // Without patience the same run goes to the end; warm-up and cosine change fine-tuning
    // only, not the head before it.
    let plain = train::train(&constant, &tmp.path().join("constant")).unwrap();
    let scheduled = train::train(&cosine, &tmp.path().join("cosine")).unwrap();
    for card in [&plain, &scheduled] {
        assert_eq!(card.stopped_early, None);
        assert_eq!(card.history.len(), constant.total_epochs());
    }
    let losses = |history: &[train::EpochRecord]| -> Vec<(f64, f64)> {
        history
            .iter()
            .map(|r| (r.train_loss, r.validation_loss))
            .collect()
    };
    assert_eq!(losses(&plain.history[..3]), losses(&scheduled.history[..3]));
    assert_eq!(
        losses(&plain.history[..stopped.epoch]),
        losses(&card.history),
        "until it stops, the patient run is the constant one"
    );
    for (a, b) in plain.history[3..].iter().zip(&scheduled.history[3..]) {
        assert_ne!(a.train_loss, b.train_loss, "epoch {}", a.epoch);
    }
}

#[test]
fn fine_tuning_values_that_cannot_work_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(tmp.path(), &PAIR, 4);
    let cases = [
        (
            TrainConfig {
                fine_tune: 17,
                ..transfer_config(&data)
            },
            "between 0 and 16",
        ),
        (
            TrainConfig {
                fine_tune: 2,
                ..common::quick_config(&data, 1)
            },
            "fine-tuning is for the transfer models (--model efficientnet-lite0, ...)",
        ),
        (
            TrainConfig {
                fine_tune: 2,
                fine_tune_epochs: 0,
                ..transfer_config(&data)
            },
            "fine-tune-epochs",
        ),
        (
            TrainConfig {
                fine_tune_patience: Some(2),
                ..transfer_config(&data)
            },
            "fine-tune-patience",
        ),
    ];
    for (i, (config, expected)) in cases.into_iter().enumerate() {
        let out = tmp.path().join(format!("m{i}"));
        let err = train::train(&config, &out).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
        assert!(!out.exists());
    }
}

#[test]
#[ignore = "needs ../shared: the Lite0 weights"]
fn a_model_that_looks_twice_is_saved_with_its_focus_and_predicts_as_trained() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::shared_subset(tmp.path(), &PAIR, 16);
    let out = tmp.path().join("model");
    let config = TrainConfig {
        epochs: 10,
        ..common::with_model(transfer_config(&data), |m| {
            m.image_size = 128;
            m.focus = Some(64);
        })
    };
    let _serial = common::training_lock();
    let card = train::train(&config, &out).unwrap();
    assert_eq!(card.image_size, 128);
    assert_eq!(card.training.model.focus, Some(64));
    assert_eq!(card.training.model.pooling, vlinder::model::Pooling::Gem);
    let last = card.final_metrics.clone().unwrap();
    assert!(last.train_loss < card.history[0].train_loss);

    // Loaded from its directory the network looks twice again: the validation photos score
    // exactly as they did in training (one look at 128 pixels would score otherwise).
    assert_scores_as_trained(&out, &data, &tmp.path().join("eval"), &card);
}

#[test]
fn focus_values_that_cannot_work_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::subset(tmp.path(), &PAIR, 4);
    let cases = [
        (Some(40), 96, 0, "a whole fraction"),
        (Some(64), 96, 0, "a whole fraction"),
        (Some(96), 96, 0, "a whole fraction"),
        (Some(16), 96, 0, "at least 32"),
        (Some(48), 96, 2, "no --focus with --fine-tune"),
    ];
    for (i, (focus, image_size, fine_tune, expected)) in cases.into_iter().enumerate() {
        let config = TrainConfig {
            fine_tune,
            ..common::with_model(transfer_config(&data), |m| {
                m.focus = focus;
                m.image_size = image_size;
            })
        };
        let out = tmp.path().join(format!("m{i}"));
        let err = train::train(&config, &out).unwrap_err().to_string();
        assert!(err.contains(expected), "{focus:?} {image_size}: {err}");
        assert!(!out.exists());
    }
    let recipe = common::with_model(common::quick_config(&data, 1), |m| {
        m.focus = Some(32);
        m.image_size = 64;
    });
    let err = train::train(&recipe, &tmp.path().join("r"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("it is for the transfer models (--model efficientnet-lite0, ...)"),
        "{err}"
    );
}

#[test]
#[ignore = "needs ../shared: the Lite0 weights"]
fn model_transfer_on_the_command_line_trains_the_documented_configuration() {
    // The README's first transfer command, with shorter stages given beside it: what the
    // command line resolves is what model.json records and what ran.
    let tmp = tempfile::tempdir().unwrap();
    let data = common::shared_subset(tmp.path(), &PAIR, 6);
    let out = tmp.path().join("model");
    let _serial = common::training_lock();
    let result = std::process::Command::new(env!("CARGO_BIN_EXE_vlinder"))
        .args([
            "train",
            "--data",
            data.to_str().unwrap(),
            "--model",
            "transfer",
        ])
        .args(["--epochs", "2", "--fine-tune-epochs", "2"])
        .args(["--backbone", common::lite0_weights().to_str().unwrap()])
        .args(["--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stderr}");
    let card = ModelDir::new(&out).read_card().unwrap();
    let t = &card.training;
    assert_eq!(card.architecture, Architecture::EfficientNetLite0);
    assert_eq!(
        (t.model.image_size, t.model.focus, t.model.mirror),
        (384, None, false)
    );
    assert_eq!(t.model.resize, ResizeFilter::Bilinear);
    assert_eq!((t.feature_copies, t.label_smoothing), (2, 0.1));
    assert_eq!((t.fine_tune, t.fine_tune_warmup), (5, 1));
    assert_eq!(t.fine_tune_schedule, Schedule::Cosine);
    assert_eq!(t.fine_tune_learning_rate, 1e-4);
    // The stages given on the command line, not the defaults: 2 epochs of the head, 2 tuned.
    assert_eq!((t.epochs, t.fine_tune_epochs), (2, 2));
    assert_eq!(card.history.len(), 4);
    assert!(stderr.contains("fine-tuning the last 5 blocks"), "{stderr}");
}
