//! Training: the epoch loop with RMSprop, validation after every epoch, and a model directory
//! that is complete after each epoch so that an interrupted run resumes where it stopped.

pub mod batches;
pub mod config;
pub mod cv;
pub mod data;
mod fit;
pub mod mixup;
pub mod transfer;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use burn::optim::{ModuleOptimizer, RmsPropConfig};
use burn::prelude::*;
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::Bytes;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use config::{FineTuneInput, Schedule, TrainConfig, UnknownFeatures};
pub use data::TrainingData;

use crate::context::{Context, Labelled, Prior};
use crate::dataset::{PhotoSet, Species};
use crate::model::Network;
use crate::names::{Names, Resolver};
use crate::novelty::{self, Detector, NoveltyCard};
use crate::open_set::{self, OpenSetReport};
use crate::trained::card::{DataSummary, FORMAT, FORMAT_VERSION, Preprocessing, Versions};
use crate::trained::{
    ModelCard, ModelDir, TrainedModel, WeightsChoice, answers, embed, predict_probabilities,
};
use crate::verdict::Thresholds;
use crate::{Error, Result, calibrate, files, plot};

/// The metrics of one epoch, as in `history.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub validation_loss: f64,
    pub validation_accuracy: f64,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
    pub train_images_per_second: f64,
    /// Time the training step waited for the next batch (decoding is done before the epoch;
    /// this is augmentation and layout that the worker threads did not hide).
    pub data_wait_seconds: f64,
}

/// Trains a new model as `config` says and writes its directory to `out`.
pub fn train(config: &TrainConfig, out: &Path) -> Result<ModelCard> {
    config.validate()?;
    refuse_existing(out)?;
    transfer::backbone_weights(config)?;
    let data = TrainingData::load(config)?;
    train_on(config, &data, out)
}

fn refuse_existing(out: &Path) -> Result<()> {
    if ModelDir::new(out).card_path().exists() {
        return Err(Error::Layout {
            path: out.to_path_buf(),
            reason: "already holds a model; choose another --out, or continue it with --resume"
                .into(),
        });
    }
    Ok(())
}

/// Trains on photos already decoded (cross-validation decodes them once for all folds) and
/// writes the model directory to `out`.
pub fn train_on(config: &TrainConfig, data: &TrainingData, out: &Path) -> Result<ModelCard> {
    let config = &config.described();
    config.validate()?;
    refuse_existing(out)?;
    let dir = ModelDir::new(out);
    let device = config.device.device()?;
    let network = if config.model.is_transfer() {
        Network::Transfer(transfer::network(config, data.species.len(), &device)?)
    } else {
        fresh_network(config, data.species.len(), &device)
    };
    // Only now that everything needed is at hand does the model directory appear.
    files::create_dir(&dir.path.join(CHECKPOINT))?;
    write_split(&dir, data)?;
    let card = ModelCard {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        architecture: config.model.architecture,
        species: data.species.clone(),
        scientific_names: {
            let resolver = Resolver::new(&data.species, &Names::built_in());
            (0..data.species.len())
                .map(|i| resolver.scientific_name(i))
                .collect()
        },
        image_size: config.model.image_size,
        preprocessing: Preprocessing {
            resize: config.model.resize,
            normalisation: config.model.normalisation(),
            channels: "RGB".into(),
            layout: "NCHW".into(),
        },
        output: if data.species.len() == 2 {
            "sigmoid"
        } else {
            "softmax"
        }
        .into(),
        parameters: network.num_params(),
        training: TrainConfig {
            // The card is shared; a password in the URL must not be.
            reviewed: config
                .reviewed
                .as_deref()
                .map(crate::queue::database::without_password),
            ..config.clone()
        },
        data: DataSummary {
            train: per_species(&data.train, &data.species),
            validation: per_species(&data.validation, &data.species),
            skipped: data.skipped.clone(),
        },
        epochs_completed: 0,
        history: Vec::new(),
        final_metrics: None,
        best_metrics: None,
        stopped_early: None,
        training_seconds: 0.0,
        calibration: None,
        novelty: None,
        open_set: None,
        prior: None,
        versions: Versions::current(),
    };
    dir.write_card(&card)?;
    let (card, embedded) = match network {
        Network::Transfer(net) => transfer::run(card, net, data, &dir, &device)?,
        recipe => (
            run(card, recipe, optimizer(config), data, &dir, &device)?,
            None,
        ),
    };
    fit_after_training(card, data, &dir, &device, embedded)
}

/// What is fitted on the finished network: the unknown-ness score, which is then measured on
/// the validation photos (and on `--unknown`), then the date and place prior.
fn fit_after_training(
    card: ModelCard,
    data: &TrainingData,
    dir: &ModelDir,
    device: &Device,
    embedded: Option<Embedded>,
) -> Result<ModelCard> {
    let model = dir.load(WeightsChoice::Last, device)?;
    let card = fit_novelty(card, data, dir, &model, embedded)?;
    // Loaded again, now with its score.
    let model = dir.load(WeightsChoice::Last, device)?;
    let card = measure_open_set(card, data, dir, &model)?;
    fit_prior(card, data, dir, &model)
}

/// The unknown-ness score's figures on the validation photos and, with `--unknown`, on photos
/// of species the model never saw, recorded in the card and printed.
fn measure_open_set(
    mut card: ModelCard,
    data: &TrainingData,
    dir: &ModelDir,
    model: &TrainedModel,
) -> Result<ModelCard> {
    let Ok((_, novelty)) = &model.novelty else {
        return Ok(card);
    };
    let thresholds = Thresholds::default();
    let validation = model.assess(&data.validation.all_pixels());
    let in_set = answers(&validation);
    let unknown = match (&data.unknown, &card.training.unknown) {
        (Some(set), Some(folder)) => {
            let strangers = model.assess(&set.all_pixels());
            Some(open_set::unknown_figures(
                folder,
                &set.paths,
                &answers(&strangers),
                &in_set,
                &card.species,
                &thresholds,
            ))
        }
        _ => None,
    };
    let report = OpenSetReport {
        threshold: novelty.threshold,
        keep: novelty.keep,
        in_set: open_set::in_set_figures(
            &in_set,
            &data.validation.labels,
            &card.species,
            &thresholds,
        ),
        unknown,
    };
    if report.unknown.is_some() {
        eprint!("{}", open_set::render(&report));
    }
    card.open_set = Some(report);
    dir.write_card(&card)?;
    Ok(card)
}

/// Gives the finished model its prior (`--prior`, or learned from the training photos'
/// observations) and fits the prior's weights on the validation photos' calibrated
/// probabilities when their observations are known.
fn fit_prior(
    mut card: ModelCard,
    data: &TrainingData,
    dir: &ModelDir,
    model: &TrainedModel,
) -> Result<ModelCard> {
    let observations = data.observations.as_ref();
    let mut prior = match (&data.prior, observations) {
        (Some(prior), _) => prior.clone(),
        (None, Some(observations)) => {
            let contexts = observations.contexts(&data.train.paths);
            let dated = contexts.iter().filter(|c| c.date.is_some()).count();
            let placed = contexts.iter().filter(|c| c.latitude.is_some()).count();
            // The file's name only: the card is served, and its folders are this machine's.
            let file = card
                .training
                .observations
                .as_deref()
                .and_then(Path::file_name)
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            Prior::learn(
                &card.species,
                &data.train.labels,
                &contexts,
                format!(
                    "the observations of the {} training photos in {} ({dated} with a date, {placed} with a place)",
                    data.train.len(),
                    file
                ),
            )
        }
        (None, None) => return Ok(card),
    };
    if let Some((probabilities, contexts)) = validation_evidence(model, data) {
        let fit = prior.fit(&Labelled {
            probabilities: &probabilities,
            contexts: &contexts,
            labels: &data.validation.labels,
        });
        eprintln!(
            "prior: weights month {:.2}, place {:.2}; on {} validation photos ({} dated, {} placed) accuracy {:.4} -> {:.4}, log loss {:.4} -> {:.4} (weights 1: {:.4}, {:.4})",
            prior.weights.month,
            prior.weights.place,
            fit.photos,
            fit.with_date,
            fit.with_place,
            fit.image.accuracy,
            fit.fitted.accuracy,
            fit.image.log_loss,
            fit.fitted.log_loss,
            fit.bayes.accuracy,
            fit.bayes.log_loss
        );
    }
    card.prior = Some(prior);
    dir.write_card(&card)?;
    Ok(card)
}

/// The validation photos' calibrated probabilities from `model` and their dates and places,
/// when the run has their observations: what a prior's weights are fitted and judged on.
pub(crate) fn validation_evidence(
    model: &TrainedModel,
    data: &TrainingData,
) -> Option<(Vec<Vec<f32>>, Vec<Context>)> {
    let observations = data.observations.as_ref()?;
    let probabilities = model
        .assess(&data.validation.all_pixels())
        .into_iter()
        .map(|a| a.calibrated)
        .collect();
    Some((probabilities, observations.contexts(&data.validation.paths)))
}

/// Features of the finished network's training (with any augmented copies) and validation
/// photos, one row each, where training computed them anyway.
pub struct Embedded {
    pub train: Vec<f32>,
    pub labels: Vec<usize>,
    pub validation: Vec<f32>,
}

/// Fits the unknown-ness score on the finished network's features (and those of `--others`),
/// sets its threshold on the validation photos, and records it in the model directory.
fn fit_novelty(
    mut card: ModelCard,
    data: &TrainingData,
    dir: &ModelDir,
    model: &TrainedModel,
    embedded: Option<Embedded>,
) -> Result<ModelCard> {
    let features = |set: &PhotoSet| {
        let norm = card.preprocessing.normalisation;
        embed(
            &model.network,
            card.image_size,
            norm,
            &set.all_pixels(),
            &model.device,
        )
        .1
    };
    let embedded = embedded.unwrap_or_else(|| Embedded {
        train: features(&data.train),
        labels: data.train.labels.clone(),
        validation: features(&data.validation),
    });
    let dim = embedded.validation.len() / data.validation.len();
    let others = data.others.as_ref().map(features);
    let detector = Detector::fit(
        &embedded.train,
        &embedded.labels,
        card.species.len(),
        dim,
        others.as_deref(),
    )?;
    let mut scores = detector.scores(&embedded.validation);
    let keep = card.training.keep;
    let threshold = novelty::threshold(&scores, keep);
    scores.sort_by(f32::total_cmp);
    let others = data.others.as_ref().map_or(0, PhotoSet::len);
    let passed = scores.iter().filter(|&&s| s as f64 <= threshold).count();
    eprintln!(
        "unknown-ness: {passed} of {} validation photos ({:.1}%) look enough like the species the model knows; a photo that looks less like them than {:.0}% of these do is called `unknown` (its score is above {threshold:.2}; fitted on {} training feature rows{})",
        scores.len(),
        100.0 * passed as f64 / scores.len() as f64,
        100.0 * keep,
        embedded.labels.len(),
        if others > 0 {
            format!(" and {others} other photos")
        } else {
            String::new()
        }
    );
    detector.save(&dir.novelty_path())?;
    card.novelty = Some(NoveltyCard {
        method: novelty::METHOD.into(),
        features: match card.training.model.imagenet_tail {
            0 => novelty::HEAD_FEATURES.into(),
            blocks => format!(
                "the pooled features of the network's last {blocks} blocks and head convolution with their ImageNet weights, as before fine-tuning"
            ),
        },
        dimensions: dim,
        power: novelty::POWER as f64,
        shrinkage: novelty::SHRINKAGE,
        train_features: embedded.labels.len(),
        others,
        keep,
        threshold,
        validation_scores: scores,
    });
    dir.write_card(&card)?;
    Ok(card)
}

/// Continues the training run in `out` from its last completed epoch.
pub fn resume(out: &Path) -> Result<ModelCard> {
    let dir = ModelDir::new(out);
    let card = dir.read_card()?;
    if card.is_complete() {
        return Ok(card);
    }
    let config = &card.training;
    if config.model.is_transfer() {
        return Err(Error::Layout {
            path: out.to_path_buf(),
            reason: "a transfer-learning run cannot be resumed (its features take a minute to recompute); train it again into a new folder".into(),
        });
    }
    let device = config.device.device()?;
    let data = TrainingData::load(config)?;
    if data.species != card.species {
        return Err(Error::Layout {
            path: config
                .data
                .clone()
                .or(config.train.clone())
                .unwrap_or_default(),
            reason: format!(
                "its species ({}) differ from the model's ({}); resume with the photos it was trained on",
                data.species.names().join(", "),
                card.species.names().join(", ")
            ),
        });
    }
    // What a kill left: half-written files, and the checkpoint of an epoch that model.json
    // never recorded (it is trained again, to the same weights).
    files::remove_temporary(&dir.path)?;
    prune_checkpoints(&dir, card.epochs_completed)?;
    let mut network = fresh_network(config, card.species.len(), &device);
    let mut optim = optimizer(config);
    if card.epochs_completed > 0 {
        (network, optim) = load_checkpoint(
            &dir,
            card.epochs_completed,
            config,
            card.species.len(),
            &device,
        )?;
    }
    let card = run(card, network, optim, &data, &dir, &device)?;
    fit_after_training(card, &data, &dir, &device, None)
}

/// The network's seeded initial weights, on the autodiff variant of `device`.
fn fresh_network(config: &TrainConfig, classes: usize, device: &Device) -> Network {
    device.seed(config.seed);
    config.model.init(classes, &device.clone().autodiff())
}

/// RMSprop with the configured values; no momentum, as in Keras.
fn optimizer(config: &TrainConfig) -> ModuleOptimizer {
    RmsPropConfig::new()
        .with_alpha(config.rho)
        .with_momentum(0.0)
        .with_epsilon(config.epsilon)
        .init()
}

/// Trains the recipe's network on the photos, augmented afresh each epoch, from the epoch
/// after `card`'s last, with a checkpoint after each to resume from.
fn run(
    mut card: ModelCard,
    network: Network,
    optim: ModuleOptimizer,
    data: &TrainingData,
    dir: &ModelDir,
    device: &Device,
) -> Result<ModelCard> {
    let config = card.training.clone();
    let autodiff = device.clone().autodiff();
    let pixels = data.validation.all_pixels();
    let norm = config.model.normalisation();
    let checkpoint = |network: &Network, optim: &ModuleOptimizer, epoch| {
        save_checkpoint(dir, epoch, network, optim)
    };
    let stage = fit::Stage {
        forward: |network: &Network, x| network.forward(x),
        validate: |network: &Network| {
            predict_probabilities(network, config.model.image_size, norm, &pixels, device)
        },
        network: |network| network,
        validation_labels: &data.validation.labels,
        checkpoint: Some(&checkpoint),
        dir,
        device,
    };
    let photos = fit::Photos {
        set: &data.train,
        augment: (!config.no_augment).then_some(&config.augment),
        norm,
        seed: config.seed,
        image_size: config.model.image_size,
        device: &autodiff,
        prepare: None,
    };
    let epochs = card.epochs_completed + 1..=config.epochs;
    let plan = fit::Plan::constant(config.learning_rate);
    stage.fit(&mut card, (network, optim), &photos, epochs, plan)?;
    Ok(card)
}

/// Ends an epoch: prints it, records it, fits the calibration after the last one, and writes the
/// model directory: the weights through `save_weights(is_best)` first, `model.json` last, so
/// that it never names an epoch whose weights are not on disk.
fn finish_epoch(
    card: &mut ModelCard,
    record: EpochRecord,
    val_probs: &[Vec<f32>],
    labels: &[usize],
    train_seconds: f64,
    dir: &ModelDir,
    save_weights: impl FnOnce(bool) -> Result<()>,
) -> Result<()> {
    // A diverged epoch is not written: the directory keeps the last finite one.
    let loss = [record.train_loss, record.validation_loss]
        .into_iter()
        .find(|l| !l.is_finite());
    if let Some(loss) = loss {
        let config = &card.training;
        let fine_tuning = config.fine_tune > 0 && record.epoch > config.epochs;
        return Err(Error::Diverged {
            path: dir.path.clone(),
            epoch: record.epoch,
            kept: card.epochs_completed,
            loss,
            learning_rate: if fine_tuning {
                config.fine_tune_learning_rate
            } else {
                config.learning_rate
            },
        });
    }
    eprintln!(
        "epoch {}/{}: loss {:.4} acc {:.4} val_loss {:.4} val_acc {:.4} ({:.1}s, {:.0} img/s, {:.1}% waiting for data)",
        record.epoch,
        card.training.total_epochs(),
        record.train_loss,
        record.train_accuracy,
        record.validation_loss,
        record.validation_accuracy,
        record.seconds,
        record.train_images_per_second,
        100.0 * record.data_wait_seconds / train_seconds
    );
    let is_best = card.record_epoch(record);
    if card.is_complete() {
        let calibration = calibrate::fit(val_probs, labels);
        eprintln!(
            "calibration: temperature {:.3}, expected calibration error {:.4} -> {:.4} on {} validation photos",
            calibration.temperature,
            calibration.ece_before,
            calibration.ece_after,
            calibration.photos
        );
        plot::reliability_diagram(&calibration, &dir.reliability_path())?;
        card.calibration = Some(calibration);
    }
    save_weights(is_best)?;
    files::write_atomic(&dir.history_path(), history_csv(&card.history).as_bytes())?;
    plot::learning_curve(&card.history, &dir.learning_curve_path())?;
    dir.write_card(card)
}

/// The folder of the checkpoint after `epoch`: `network.bpk` and `optimizer.bin`, all that is
/// needed to resume, and `epoch`, the epoch they are from.
fn checkpoint_dir(dir: &ModelDir, epoch: usize) -> PathBuf {
    dir.path.join(CHECKPOINT).join(format!("epoch-{epoch:04}"))
}

const CHECKPOINT: &str = "checkpoint";

/// Writes the checkpoint after `epoch` into a temporary folder, then renames the complete
/// folder into place: a kill leaves either the whole checkpoint or none. model.json, written
/// after it, is the commit point: resuming uses the checkpoint of the epoch it names. Burnpack
/// keeps the parameter ids that the optimizer state is keyed by.
fn save_checkpoint(
    dir: &ModelDir,
    epoch: usize,
    network: &Network,
    optim: &ModuleOptimizer,
) -> Result<()> {
    let root = dir.path.join(CHECKPOINT);
    let staging = root.join(format!(".epoch-{epoch:04}.{}.tmp", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    }
    files::create_dir(&staging)?;
    let path = staging.join("network.bpk");
    let mut store = BurnpackStore::from_bytes(None);
    network
        .save_into(&mut store)
        .map_err(|e| Error::output(&path, e))?;
    let bytes = store.get_bytes().map_err(|e| Error::output(&path, e))?;
    files::write_atomic(&path, &bytes)?;
    let path = staging.join("optimizer.bin");
    let bytes = optim.into_bytes().map_err(|e| Error::output(&path, e))?;
    files::write_atomic(&path, &bytes)?;
    files::write_atomic(&staging.join("epoch"), format!("{epoch}\n").as_bytes())?;
    let target = checkpoint_dir(dir, epoch);
    // A checkpoint of this epoch from a run killed before model.json recorded it.
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(|e| Error::io(&target, e))?;
    }
    std::fs::rename(&staging, &target).map_err(|e| Error::io(&target, e))?;
    files::sync_dir(&root);
    Ok(())
}

/// Removes every checkpoint but the one after `epoch`.
fn prune_checkpoints(dir: &ModelDir, epoch: usize) -> Result<()> {
    let root = dir.path.join(CHECKPOINT);
    let keep = checkpoint_dir(dir, epoch);
    let entries = std::fs::read_dir(&root).map_err(|e| Error::io(&root, e))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::io(&root, e))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("epoch-") && path != keep {
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// Loads the checkpoint after `epoch` (the one model.json names) into a network built on the
/// plain device, then moves it to autodiff, so that the loaded parameters are leaves of the new
/// graph; and the optimizer state that goes with it.
fn load_checkpoint(
    dir: &ModelDir,
    epoch: usize,
    config: &TrainConfig,
    classes: usize,
    device: &Device,
) -> Result<(Network, ModuleOptimizer)> {
    let folder = checkpoint_dir(dir, epoch);
    let corrupt = |path: &Path, reason: String| Error::ModelCorrupt {
        path: path.to_path_buf(),
        reason: format!("{reason}; the run cannot be resumed, train it again into a new folder"),
    };
    let read = |name: &str| {
        let path = folder.join(name);
        std::fs::read(&path).map_err(|e| corrupt(&path, e.to_string()))
    };
    let recorded = String::from_utf8_lossy(&read("epoch")?).trim().to_string();
    if recorded != epoch.to_string() {
        return Err(corrupt(
            &folder.join("epoch"),
            format!("the checkpoint is of epoch {recorded}, model.json says {epoch}"),
        ));
    }
    let mut network = config.model.init(classes, device);
    let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(read("network.bpk")?)));
    network
        .load_from(&mut store)
        .map_err(|e| corrupt(&folder.join("network.bpk"), e.to_string()))?;
    let optim = optimizer(config)
        .from_bytes(Bytes::from_bytes_vec(read("optimizer.bin")?))
        .map_err(|e| corrupt(&folder.join("optimizer.bin"), e.to_string()))?;
    Ok((network.to_device(&device.clone().autodiff()).train(), optim))
}

/// The order photos are seen in epoch `epoch`: a fresh shuffle, the same for the same seed.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

fn per_species(set: &PhotoSet, species: &Species) -> BTreeMap<String, usize> {
    set.counts(species.len())
        .into_iter()
        .enumerate()
        .map(|(i, c)| (species.name(i).to_string(), c))
        .collect()
}

/// `history.csv`: one row per epoch.
pub fn history_csv(history: &[EpochRecord]) -> String {
    let mut csv = String::from(
        "epoch,train_loss,train_accuracy,validation_loss,validation_accuracy,seconds,train_images_per_second,data_wait_seconds\n",
    );
    for r in history {
        let _ = writeln!(
            csv,
            "{},{:.6},{:.6},{:.6},{:.6},{:.3},{:.1},{:.3}",
            r.epoch,
            r.train_loss,
            r.train_accuracy,
            r.validation_loss,
            r.validation_accuracy,
            r.seconds,
            r.train_images_per_second,
            r.data_wait_seconds
        );
    }
    csv
}

/// `split.csv`: which photo was used for what, so that the split can be inspected or rebuilt.
fn write_split(dir: &ModelDir, data: &TrainingData) -> Result<()> {
    let mut csv = String::from("path,species,split\n");
    for (name, set) in [("train", &data.train), ("validation", &data.validation)] {
        for (path, &label) in set.paths.iter().zip(&set.labels) {
            let _ = writeln!(
                csv,
                "{},{},{}",
                files::csv_field(&path.to_string_lossy()),
                files::csv_field(data.species.name(label)),
                name
            );
        }
    }
    files::write_atomic(&dir.split_path(), csv.as_bytes())
}
