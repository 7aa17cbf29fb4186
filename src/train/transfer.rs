//! Transfer learning: EfficientNet-Lite0 runs once over each photo (and each augmented copy of
//! it; twice with `--focus`), then a new head is trained on the pooled features, which takes
//! milliseconds per epoch instead of a pass through the backbone. With `--fine-tune N` the
//! activations before the last N blocks are kept as well, and those blocks are then trained
//! with the head, starting from the kept activations rather than from the photos. The saved
//! model holds the backbone and the head, so it is used like any other.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Instant;

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;

use super::{
    Embedded, EpochRecord, Schedule, TrainConfig, TrainingData, batches, epoch_order, finish_epoch,
    optimizer,
};
use crate::augment::AugmentParams;
use crate::dataset::PhotoSet;
use crate::model::backbone;
use crate::model::card::StoppedEarly;
use crate::model::{
    self, EfficientNetLite, ModelCard, ModelDir, Network, TransferNet, Variant, WeightsChoice,
    input,
};
use crate::{Result, metrics, progress};

/// Photos per pass through the backbone.
const FEATURE_BATCH: usize = 16;

/// The backbone with its ImageNet weights (from `--backbone`, else the installed ones) and a
/// fresh, seeded head.
pub fn network(config: &TrainConfig, classes: usize, device: &Device) -> Result<TransferNet> {
    let (variant, path) = backbone_weights(config)?.expect("a transfer network has a backbone");
    let backbone = EfficientNetLite::from_pytorch(variant, &path, false, device)?;
    device.seed(config.seed);
    Ok(config.model.transfer(backbone, classes, device))
}

/// A transfer network's backbone and its weights file (`--backbone`, else the installed one;
/// an error names the command that installs it), `None` for the recipe's: checked before any
/// photo is decoded or anything is written.
pub fn backbone_weights(config: &TrainConfig) -> Result<Option<(Variant, PathBuf)>> {
    let Some(variant) = config.model.architecture.backbone() else {
        return Ok(None);
    };
    let path = match &config.backbone {
        Some(path) => path.clone(),
        None => backbone::of(variant).find(&backbone::cache_dir())?,
    };
    Ok(Some((variant, path)))
}

/// What one pass of the frozen backbone over a set of photos gives.
struct Encoded {
    /// Pooled features `[n, 1280]`.
    features: Tensor<2>,
    /// The activations before the blocks that fine-tuning trains, when it does.
    activations: Option<Tensor<4>>,
}

impl Encoded {
    fn cat(parts: Vec<Encoded>) -> Encoded {
        let (features, activations): (Vec<_>, Vec<_>) = parts
            .into_iter()
            .map(|part| (part.features, part.activations))
            .unzip();
        Encoded {
            features: Tensor::cat(features, 0),
            activations: activations
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .map(|parts| Tensor::cat(parts, 0)),
        }
    }
}

/// Runs the backbone over every photo in `set`, or with `augment` (parameters, seed, copy
/// number) over a seeded augmented copy of each, keeping what training needs.
fn encode(
    net: &TransferNet,
    set: &PhotoSet,
    config: &TrainConfig,
    augment: Option<(&AugmentParams, u64, usize)>,
    device: &Device,
    what: &str,
) -> Encoded {
    let bar = progress::bar(set.len(), format!("features {what}"));
    let norm = config.model.normalisation();
    let frozen = net.backbone.block_count() - config.fine_tune;
    let indices: Vec<usize> = (0..set.len()).collect();
    let mut parts = Vec::with_capacity(set.len().div_ceil(FEATURE_BATCH));
    for chunk in indices.chunks(FEATURE_BATCH) {
        let images = batches::layout(set, chunk, augment, norm);
        let images = input::planar_tensor(images, config.model.image_size, device);
        parts.push(if config.fine_tune > 0 {
            // The head first trains on the features it would see without fine-tuning (one
            // frozen pass is cheaper than the trained blocks on burn's layers); fine-tuning
            // then starts from the activations before its blocks.
            Encoded {
                features: net.features(images.clone()),
                activations: Some(net.backbone.activations(images, frozen)),
            }
        } else {
            Encoded {
                features: net.features(images),
                activations: None,
            }
        });
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Encoded::cat(parts)
}

/// Trains the head of `net` on cached features, then fine-tunes if configured, and writes the
/// model directory after every epoch. Without fine-tuning the cached features are those of the
/// finished network too, and come back for the unknown-ness score.
pub fn run(
    mut card: ModelCard,
    net: TransferNet,
    data: &TrainingData,
    dir: &ModelDir,
    device: &Device,
) -> Result<(ModelCard, Option<Embedded>)> {
    let config = card.training.clone();
    let started = Instant::now();
    // The backbone does not change while the features are computed.
    let frozen = TransferNet {
        backbone: net.backbone.clone().freeze(),
        head: net.head.clone(),
        viewing: net.viewing,
    };
    let mut parts = vec![encode(&frozen, &data.train, &config, None, device, "train")];
    let mut labels = data.train.labels.clone();
    if !config.no_augment {
        for copy in 1..=config.feature_copies {
            let augment = Some((&config.augment, config.seed, copy));
            let what = format!("copy {copy}/{}", config.feature_copies);
            parts.push(encode(
                &frozen,
                &data.train,
                &config,
                augment,
                device,
                &what,
            ));
            labels.extend_from_slice(&data.train.labels);
        }
    }
    let train = Encoded::cat(parts);
    let validation = encode(
        &frozen,
        &data.validation,
        &config,
        None,
        device,
        "validation",
    );
    drop(frozen);
    let feature_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "features of {} photos and {} augmented copies computed in {feature_seconds:.1}s",
        data.train.len() + data.validation.len(),
        labels.len() - data.train.len()
    );
    // The run's time includes the features, which are most of it.
    card.training_seconds += feature_seconds;
    let stage = Stage {
        labels: &labels,
        validation_labels: &data.validation.labels,
        dir,
        device,
    };
    let TransferNet {
        backbone,
        head,
        viewing,
    } = net;
    let embedded = (train.activations.is_none()).then(|| Embedded {
        train: rows(train.features.clone()),
        labels: labels.clone(),
        validation: rows(validation.features.clone()),
    });
    let head = stage.fit(
        &mut card,
        head,
        (train.features, validation.features),
        1..=config.epochs,
        StagePlan::constant(config.learning_rate),
        |head, x| head.forward(x),
        |head| {
            Network::Transfer(TransferNet {
                backbone: backbone.clone(),
                head,
                viewing,
            })
        },
    )?;
    if let (Some(train_x), Some(val_x)) = (train.activations, validation.activations) {
        let frozen = backbone.block_count() - config.fine_tune;
        eprintln!(
            "fine-tuning the last {} blocks with the head",
            config.fine_tune
        );
        stage.fit(
            &mut card,
            TransferNet {
                backbone,
                head,
                viewing,
            },
            (train_x, val_x),
            config.epochs + 1..=config.total_epochs(),
            StagePlan {
                base: config.fine_tune_learning_rate,
                schedule: config.fine_tune_schedule,
                warmup_epochs: config.fine_tune_warmup,
                patience: config.fine_tune_patience,
            },
            |net, x| net.forward_from(x, frozen),
            Network::Transfer,
        )?;
    }
    Ok((card, embedded))
}

/// A feature tensor's values, row after row.
fn rows(features: Tensor<2>) -> Vec<f32> {
    features
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("features are f32")
}

/// How a stage's learning rate moves, and when it stops early.
struct StagePlan {
    base: f64,
    schedule: Schedule,
    warmup_epochs: usize,
    /// Epochs without a lower validation loss after which the stage stops, keeping its best.
    patience: Option<usize>,
}

impl StagePlan {
    fn constant(base: f64) -> Self {
        StagePlan {
            base,
            schedule: Schedule::Constant,
            warmup_epochs: 0,
            patience: None,
        }
    }
}

/// The stage's epoch with the lowest validation loss so far, kept for an early stop.
struct Best<M> {
    loss: f64,
    epoch: usize,
    module: M,
    probabilities: Vec<Vec<f32>>,
}

/// What the head's training and fine-tuning share: the labels and where results go.
struct Stage<'a> {
    labels: &'a [usize],
    validation_labels: &'a [usize],
    dir: &'a ModelDir,
    device: &'a Device,
}

impl Stage<'_> {
    /// Trains `module` with RMSprop on the cached inputs `(train, validation)` for `epochs` at
    /// the learning rates of `plan` (stopping early as it says), `forward` giving logits;
    /// `network` makes the whole network to save from a validation copy of `module`.
    #[allow(clippy::too_many_arguments)]
    fn fit<M: Module, const D: usize>(
        &self,
        card: &mut ModelCard,
        module: M,
        (train_x, val_x): (Tensor<D>, Tensor<D>),
        epochs: RangeInclusive<usize>,
        plan: StagePlan,
        forward: impl Fn(&M, Tensor<D>) -> Tensor<2>,
        network: impl Fn(M) -> Network,
    ) -> Result<M> {
        let config = card.training.clone();
        let autodiff = self.device.clone().autodiff();
        let train_x = train_x.to_device(&autodiff);
        let mut module = module.to_device(&autodiff).train();
        let mut optim: ModuleOptimizer = optimizer(&config);
        let n = self.labels.len();
        let steps_per_epoch = n.div_ceil(config.batch_size);
        let steps = steps_per_epoch * epochs.clone().count();
        let warmup = steps_per_epoch * plan.warmup_epochs;
        let mut step = 0;
        let mut best: Option<Best<M>> = None;
        for epoch in epochs {
            let start = Instant::now();
            autodiff.seed(config.seed.wrapping_add(epoch as u64));
            let (mut loss_sum, mut correct) = (0.0f64, 0usize);
            let bar = progress::bar(n, format!("epoch {epoch}/{}", config.total_epochs()));
            for batch in epoch_order(n, config.seed, epoch).chunks(config.batch_size) {
                let batch_labels: Vec<usize> = batch.iter().map(|&i| self.labels[i]).collect();
                let indices: Vec<i64> = batch.iter().map(|&i| i as i64).collect();
                let rows =
                    Tensor::<1, Int>::from_data(TensorData::new(indices, [batch.len()]), &autodiff);
                let logits = forward(&module, train_x.clone().select(0, rows));
                let probs = model::probability_rows(logits.clone().detach());
                let loss = model::loss(logits, &batch_labels);
                loss_sum += loss.clone().into_scalar::<f32>() as f64 * batch.len() as f64;
                correct += probs
                    .iter()
                    .zip(&batch_labels)
                    .filter(|(p, l)| metrics::argmax(p) == **l)
                    .count();
                let grads = GradientsParams::from_grads(loss.backward(), &module);
                let learning_rate = plan.schedule.rate(plan.base, step, steps, warmup);
                module = optim.step(learning_rate, module, grads);
                step += 1;
                bar.inc(batch.len() as u64);
            }
            bar.finish_and_clear();
            let train_seconds = start.elapsed().as_secs_f64();
            let valid = module.valid();
            let val_probs = model::probability_rows(forward(&valid, val_x.clone()));
            let record = EpochRecord {
                epoch,
                train_loss: loss_sum / n as f64,
                train_accuracy: correct as f64 / n as f64,
                validation_loss: metrics::log_loss(&val_probs, self.validation_labels),
                validation_accuracy: metrics::accuracy(&val_probs, self.validation_labels),
                seconds: start.elapsed().as_secs_f64(),
                train_images_per_second: n as f64 / train_seconds,
                data_wait_seconds: 0.0,
            };
            if plan.patience.is_some()
                && best
                    .as_ref()
                    .is_none_or(|b| record.validation_loss < b.loss)
            {
                best = Some(Best {
                    loss: record.validation_loss,
                    epoch,
                    module: valid.clone(),
                    probabilities: val_probs.clone(),
                });
            }
            let stop = plan
                .patience
                .filter(|&patience| best.as_ref().is_some_and(|b| epoch - b.epoch >= patience));
            let Some(patience) = stop else {
                self.finish(
                    card,
                    record,
                    train_seconds,
                    (valid, &val_probs),
                    &network,
                    false,
                )?;
                continue;
            };
            // No better validation loss for `patience` epochs: the stage ends with its best
            // weights, which the calibration is fitted on and the directory keeps.
            let best = best.expect("a best epoch");
            card.stopped_early = Some(StoppedEarly {
                epoch,
                kept: best.epoch,
            });
            let kept = (best.module.clone(), best.probabilities.as_slice());
            self.finish(card, record, train_seconds, kept, &network, true)?;
            eprintln!(
                "no lower validation loss for {patience} epoch{}: fine-tuning stops, keeping epoch {}'s weights (val_loss {:.4})",
                if patience == 1 { "" } else { "s" },
                best.epoch,
                best.loss
            );
            return Ok(best.module);
        }
        Ok(module.valid())
    }

    /// Records an epoch and writes the model directory with `valid` as its weights (and its
    /// validation `probabilities` for the calibration, once the run is complete); the weights
    /// are also the best unless they are `restored` from an earlier epoch.
    fn finish<M>(
        &self,
        card: &mut ModelCard,
        record: EpochRecord,
        train_seconds: f64,
        (valid, probabilities): (M, &[Vec<f32>]),
        network: impl Fn(M) -> Network,
        restored: bool,
    ) -> Result<()> {
        finish_epoch(
            card,
            record,
            probabilities,
            self.validation_labels,
            train_seconds,
            self.dir,
            |is_best| {
                let network = network(valid);
                self.dir.save_weights(&network, WeightsChoice::Last)?;
                if is_best && !restored {
                    self.dir.save_weights(&network, WeightsChoice::Best)?;
                }
                Ok(())
            },
        )
    }
}
