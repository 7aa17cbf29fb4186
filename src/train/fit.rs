//! The training loop, the one every stage runs: the recipe's network on photos augmented afresh
//! each epoch, a transfer head on cached features, and fine-tuning on cached activations. Each
//! epoch passes over the batches in a seeded order with an RMSprop step per batch, at the
//! learning rate of the stage's plan, then scores the validation photos, writes the model
//! directory (checkpoint, weights, history, model.json last) and stops early if the plan says.

use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;

use super::mixup::Mixup;
use super::{EpochRecord, Schedule, batches, epoch_order, finish_epoch, prune_checkpoints};
use crate::augment::AugmentParams;
use crate::dataset::PhotoSet;
use crate::model::{self, Network, input};
use crate::trained::card::StoppedEarly;
use crate::trained::{ModelCard, ModelDir, WeightsChoice};
use crate::{Result, metrics, progress};

/// Where a stage's training batches come from.
pub(crate) trait Batches<const D: usize> {
    /// How many examples an epoch passes over.
    fn len(&self) -> usize;

    /// Calls `step(inputs, labels)` for the examples of `order` a batch at a time, in order;
    /// returns how long it waited for batches to be made.
    fn each(
        &self,
        epoch: usize,
        order: &[usize],
        batch_size: usize,
        step: &mut dyn FnMut(Tensor<D>, &[usize]),
    ) -> Duration;
}

/// Photos, each augmented with a fresh draw every epoch (or not), laid out as the network's
/// input on a worker thread ahead of the step.
pub(crate) struct Photos<'a> {
    pub set: &'a PhotoSet,
    pub augment: Option<&'a AugmentParams>,
    pub norm: input::Normalisation,
    pub seed: u64,
    pub image_size: u32,
    /// The device the photos' tensors are made on.
    pub device: &'a Device,
    /// What turns a batch of photos into the stage's inputs (none: the photos themselves).
    pub prepare: Option<&'a dyn Fn(Tensor<4>) -> Tensor<4>>,
}

impl Batches<4> for Photos<'_> {
    fn len(&self) -> usize {
        self.set.len()
    }

    fn each(
        &self,
        epoch: usize,
        order: &[usize],
        batch_size: usize,
        step: &mut dyn FnMut(Tensor<4>, &[usize]),
    ) -> Duration {
        let mut waiting = Duration::ZERO;
        std::thread::scope(|scope| {
            let plan = batches::BatchPlan {
                order: order.to_vec(),
                batch_size,
                augment: self.augment,
                norm: self.norm,
                seed: self.seed,
                epoch,
            };
            let batches = batches::spawn(scope, self.set, plan);
            loop {
                let wait = Instant::now();
                let Ok(batch) = batches.recv() else { break };
                waiting += wait.elapsed();
                let x = input::planar_tensor(batch.images, self.image_size, self.device);
                let x = match self.prepare {
                    Some(prepare) => prepare(x),
                    None => x,
                };
                step(x, &batch.labels);
            }
        });
        waiting
    }
}

/// Inputs computed once (features or activations, one row per example), already on the
/// autodiff device, with their labels.
pub(crate) struct Cached<'a, const D: usize> {
    pub inputs: Tensor<D>,
    pub labels: &'a [usize],
}

impl<const D: usize> Batches<D> for Cached<'_, D> {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn each(
        &self,
        _epoch: usize,
        order: &[usize],
        batch_size: usize,
        step: &mut dyn FnMut(Tensor<D>, &[usize]),
    ) -> Duration {
        let device = self.inputs.device();
        for batch in order.chunks(batch_size) {
            let labels: Vec<usize> = batch.iter().map(|&i| self.labels[i]).collect();
            let indices: Vec<i64> = batch.iter().map(|&i| i as i64).collect();
            let rows =
                Tensor::<1, Int>::from_data(TensorData::new(indices, [batch.len()]), &device);
            step(self.inputs.clone().select(0, rows), &labels);
        }
        Duration::ZERO
    }
}

/// How a stage's learning rate moves, and when it stops early.
pub(crate) struct Plan {
    pub base: f64,
    pub schedule: Schedule,
    pub warmup_epochs: usize,
    /// Epochs without a lower validation loss after which the stage stops, keeping its best.
    pub patience: Option<usize>,
}

impl Plan {
    pub fn constant(base: f64) -> Self {
        Plan {
            base,
            schedule: Schedule::Constant,
            warmup_epochs: 0,
            patience: None,
        }
    }
}

/// What a stage trains and how its results are judged and saved.
pub(crate) struct Stage<'a, M, F, V, N> {
    /// Logits of the module for a batch of inputs.
    pub forward: F,
    /// The validation photos' probabilities from a validation copy of the module.
    pub validate: V,
    /// The whole network to save, from a validation copy of the module.
    pub network: N,
    pub validation_labels: &'a [usize],
    /// Writes a checkpoint to resume from after each epoch (the recipe's runs), the older
    /// ones removed once model.json names the new one.
    pub checkpoint: Option<Checkpoint<'a, M>>,
    pub dir: &'a ModelDir,
    pub device: &'a Device,
}

/// Writes the checkpoint of the trained module and the optimizer's state after an epoch.
pub(crate) type Checkpoint<'a, M> = &'a dyn Fn(&M, &ModuleOptimizer, usize) -> Result<()>;

/// The stage's epoch with the lowest validation loss so far, kept for an early stop.
struct Best<M> {
    loss: f64,
    epoch: usize,
    module: M,
    probabilities: Vec<Vec<f32>>,
}

impl<M, F, V, N> Stage<'_, M, F, V, N>
where
    M: Module,
    V: Fn(&M) -> Vec<Vec<f32>>,
    N: Fn(M) -> Network,
{
    /// Trains `module` (on the autodiff device, with `optim`'s state) on `batches` for
    /// `epochs`, recording each in `card` and the model directory; returns the module to keep
    /// (the best epoch's after an early stop), as a validation copy.
    pub fn fit<const D: usize>(
        &self,
        card: &mut ModelCard,
        (module, mut optim): (M, ModuleOptimizer),
        batches: &dyn Batches<D>,
        epochs: RangeInclusive<usize>,
        plan: Plan,
    ) -> Result<M>
    where
        F: Fn(&M, Tensor<D>) -> Tensor<2>,
    {
        let config = card.training.clone();
        let autodiff = self.device.clone().autodiff();
        let n = batches.len();
        let steps_per_epoch = n.div_ceil(config.batch_size);
        let steps = steps_per_epoch * epochs.clone().count();
        let warmup = steps_per_epoch * plan.warmup_epochs;
        // Counted from the stage's first epoch here: the recipe, the one stage that resumes,
        // trains at a constant rate, which a resumed count cannot move.
        let mut step = 0;
        let mut module = Some(module);
        let mut best: Option<Best<M>> = None;
        for epoch in epochs {
            let start = Instant::now();
            // Seeding per epoch makes dropout the same whether or not the run resumed.
            autodiff.seed(config.seed.wrapping_add(epoch as u64));
            let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
            let bar = progress::bar(n, format!("epoch {epoch}/{}", config.total_epochs()));
            let order = epoch_order(n, config.seed, epoch);
            let mut mixup =
                (config.mixup > 0.0).then(|| Mixup::new(config.mixup, config.seed, epoch));
            let waiting = batches.each(epoch, &order, config.batch_size, &mut |x, labels| {
                let trained = module.take().expect("the module between steps");
                let blend = mixup.as_mut().map(|m| m.draw(labels.len()));
                let x = match &blend {
                    Some(blend) => blend.mix(x),
                    None => x,
                };
                let logits = (self.forward)(&trained, x);
                let probs = model::probability_rows(logits.clone().detach());
                let loss = match &blend {
                    Some(blend) => blend.loss(logits, labels, config.label_smoothing),
                    None => model::loss(logits, labels, config.label_smoothing),
                };
                loss_sum += loss.clone().into_scalar::<f32>() as f64 * labels.len() as f64;
                correct += probs
                    .iter()
                    .zip(labels)
                    .filter(|(p, l)| metrics::argmax(p) == **l)
                    .count();
                let grads = GradientsParams::from_grads(loss.backward(), &trained);
                let rate = plan.schedule.rate(plan.base, step, steps, warmup);
                module = Some(optim.step(rate, trained, grads));
                step += 1;
                seen += labels.len();
                bar.inc(labels.len() as u64);
                bar.set_message(format!(
                    "loss {:.4} acc {:.4}",
                    loss_sum / seen as f64,
                    correct as f64 / seen as f64
                ));
            });
            bar.finish_and_clear();
            let trained = module.as_ref().expect("the module after an epoch");
            let train_seconds = start.elapsed().as_secs_f64();
            let valid = trained.valid();
            let val_probs = (self.validate)(&valid);
            let record = EpochRecord {
                epoch,
                train_loss: loss_sum / n as f64,
                train_accuracy: correct as f64 / n as f64,
                validation_loss: metrics::log_loss(&val_probs, self.validation_labels),
                validation_accuracy: metrics::accuracy(&val_probs, self.validation_labels),
                seconds: start.elapsed().as_secs_f64(),
                train_images_per_second: n as f64 / train_seconds,
                data_wait_seconds: waiting.as_secs_f64(),
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
                let checkpoint = self.checkpoint.map(|save| (save, trained, &optim));
                let kept = (valid, val_probs.as_slice());
                self.finish(card, record, train_seconds, kept, checkpoint, false)?;
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
            self.finish(card, record, train_seconds, kept, None, true)?;
            eprintln!(
                "no lower validation loss for {patience} epoch{}: training stops, keeping epoch {}'s weights (val_loss {:.4})",
                if patience == 1 { "" } else { "s" },
                best.epoch,
                best.loss
            );
            return Ok(best.module);
        }
        Ok(module.expect("the trained module").valid())
    }

    /// Records an epoch and writes the model directory: the checkpoint (if any), `valid` as
    /// the weights (and its validation `probabilities` for the calibration, once the run is
    /// complete), model.json last; the weights are also the best unless `restored` from an
    /// earlier epoch.
    fn finish(
        &self,
        card: &mut ModelCard,
        record: EpochRecord,
        train_seconds: f64,
        (valid, probabilities): (M, &[Vec<f32>]),
        checkpoint: Option<(Checkpoint<'_, M>, &M, &ModuleOptimizer)>,
        restored: bool,
    ) -> Result<()> {
        let epoch = record.epoch;
        finish_epoch(
            card,
            record,
            probabilities,
            self.validation_labels,
            train_seconds,
            self.dir,
            |is_best| {
                if let Some((save, trained, optim)) = checkpoint {
                    save(trained, optim, epoch)?;
                }
                let network = (self.network)(valid);
                self.dir.save_weights(&network, WeightsChoice::Last)?;
                if is_best && !restored {
                    self.dir.save_weights(&network, WeightsChoice::Best)?;
                }
                Ok(())
            },
        )?;
        if checkpoint.is_some() {
            // model.json now names this epoch: the one before is no longer needed.
            prune_checkpoints(self.dir, epoch)?;
        }
        Ok(())
    }
}
