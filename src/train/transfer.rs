//! Transfer learning: EfficientNet-Lite0's pooled features are computed once per photo (and per
//! augmented copy of it), then a new head is trained on them, which takes milliseconds per epoch
//! instead of a pass through the backbone. The saved model holds the backbone and the head, so
//! it is used like any other.

use std::time::Instant;

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;

use super::{
    EpochRecord, TrainConfig, TrainingData, batches, epoch_order, finish_epoch, optimizer,
};
use crate::augment::AugmentParams;
use crate::dataset::PhotoSet;
use crate::model::backbone::{self, EFFICIENTNET_LITE0};
use crate::model::{
    self, EfficientNetLite0, Head, ModelCard, ModelDir, Network, TransferNet, WeightsChoice, input,
};
use crate::{Result, metrics, progress};

/// Photos per pass through the backbone.
const FEATURE_BATCH: usize = 16;

/// The backbone with its ImageNet weights (from `--backbone`, else the installed ones) and a
/// fresh, seeded head.
pub fn network(config: &TrainConfig, classes: usize, device: &Device) -> Result<TransferNet> {
    let path = match &config.backbone {
        Some(path) => path.clone(),
        None => EFFICIENTNET_LITE0.find(&backbone::cache_dir())?,
    };
    let backbone = EfficientNetLite0::from_pytorch(&path, false, device)?;
    device.seed(config.seed);
    Ok(TransferNet {
        backbone,
        head: Head::new(classes, device),
    })
}

/// The pooled features of every photo in `set`, `[n, 1280]` on `device`; with `augment`
/// (parameters, seed, copy number), of a seeded augmented copy of each.
fn features(
    backbone: &EfficientNetLite0,
    set: &PhotoSet,
    config: &TrainConfig,
    augment: Option<(&AugmentParams, u64, usize)>,
    device: &Device,
    what: &str,
) -> Tensor<2> {
    let bar = progress::bar(set.len(), format!("features {what}"));
    let norm = config.model.normalisation();
    let indices: Vec<usize> = (0..set.len()).collect();
    let mut rows = Vec::with_capacity(set.len());
    for chunk in indices.chunks(FEATURE_BATCH) {
        let images = batches::layout(set, chunk, augment, norm);
        rows.push(backbone.features(input::planar_tensor(images, config.image_size, device)));
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Tensor::cat(rows, 0)
}

/// Trains the head of `net` for the configured epochs and writes the model directory.
pub fn run(
    mut card: ModelCard,
    net: TransferNet,
    data: &TrainingData,
    dir: &ModelDir,
    device: &Device,
) -> Result<ModelCard> {
    let config = card.training.clone();
    let started = Instant::now();
    let autodiff = device.clone().autodiff();
    let mut parts = vec![features(
        &net.backbone,
        &data.train,
        &config,
        None,
        device,
        "train",
    )];
    let mut labels = data.train.labels.clone();
    if !config.no_augment {
        for copy in 1..=config.feature_copies {
            let augment = Some((&config.augment, config.seed, copy));
            let what = format!("copy {copy}/{}", config.feature_copies);
            parts.push(features(
                &net.backbone,
                &data.train,
                &config,
                augment,
                device,
                &what,
            ));
            labels.extend_from_slice(&data.train.labels);
        }
    }
    let train_x = Tensor::cat(parts, 0).to_device(&autodiff);
    let val_x = features(
        &net.backbone,
        &data.validation,
        &config,
        None,
        device,
        "validation",
    );
    let feature_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "features of {} photos and {} augmented copies computed in {feature_seconds:.1}s",
        data.train.len() + data.validation.len(),
        labels.len() - data.train.len()
    );
    // The run's time includes the features, which are most of it.
    card.training_seconds += feature_seconds;
    let TransferNet { backbone, head } = net;
    let mut head = head.to_device(&autodiff).train();
    let mut optim: ModuleOptimizer = optimizer(&config);
    let n = labels.len();
    for epoch in card.epochs_completed + 1..=config.epochs {
        let start = Instant::now();
        autodiff.seed(config.seed.wrapping_add(epoch as u64));
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for batch in epoch_order(n, config.seed, epoch).chunks(config.batch_size) {
            let batch_labels: Vec<usize> = batch.iter().map(|&i| labels[i]).collect();
            let indices: Vec<i64> = batch.iter().map(|&i| i as i64).collect();
            let rows =
                Tensor::<1, Int>::from_data(TensorData::new(indices, [batch.len()]), &autodiff);
            let logits = head.forward(train_x.clone().select(0, rows));
            let probs = model::probability_rows(logits.clone().detach());
            let loss = model::loss(logits, &batch_labels);
            loss_sum += loss.clone().into_scalar::<f32>() as f64 * batch.len() as f64;
            correct += probs
                .iter()
                .zip(&batch_labels)
                .filter(|(p, l)| metrics::argmax(p) == **l)
                .count();
            let grads = GradientsParams::from_grads(loss.backward(), &head);
            head = optim.step(config.learning_rate, head, grads);
        }
        let train_seconds = start.elapsed().as_secs_f64();
        let valid_head = head.valid();
        let val_probs = model::probability_rows(valid_head.forward(val_x.clone()));
        let val_labels = &data.validation.labels;
        let record = EpochRecord {
            epoch,
            train_loss: loss_sum / n as f64,
            train_accuracy: correct as f64 / n as f64,
            validation_loss: metrics::log_loss(&val_probs, val_labels),
            validation_accuracy: metrics::accuracy(&val_probs, val_labels),
            seconds: start.elapsed().as_secs_f64(),
            train_images_per_second: n as f64 / train_seconds,
            data_wait_seconds: 0.0,
        };
        finish_epoch(
            &mut card,
            record,
            &val_probs,
            val_labels,
            train_seconds,
            dir,
            |is_best| {
                let network = Network::Transfer(TransferNet {
                    backbone: backbone.clone(),
                    head: valid_head,
                });
                dir.save_weights(&network, WeightsChoice::Last)?;
                if is_best {
                    dir.save_weights(&network, WeightsChoice::Best)?;
                }
                Ok(())
            },
        )?;
    }
    Ok(card)
}
