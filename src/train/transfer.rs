//! Transfer learning: EfficientNet-Lite0 runs once over each photo (and each augmented copy of
//! it; twice with `--focus`), then a new head is trained on the pooled features, which takes
//! milliseconds per epoch instead of a pass through the backbone. With `--fine-tune N` the
//! activations before the last N blocks are kept as well, and those blocks are then trained
//! with the head, starting from the kept activations rather than from the photos. The saved
//! model holds the backbone and the head, so it is used like any other.

use std::path::PathBuf;
use std::time::Instant;

use burn::prelude::*;

use super::{Embedded, FineTuneInput, TrainConfig, TrainingData, batches, fit, optimizer};
use crate::augment::AugmentParams;
use crate::dataset::PhotoSet;
use crate::model::backbone;
use crate::model::{self, EfficientNetLite, Head, Network, TransferNet, Variant, Viewing, input};
use crate::trained::{ModelCard, ModelDir};
use crate::{Result, progress};

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
    /// Pooled features `[n, 1280]`, as the network looks (mirrored too, if it does).
    features: Tensor<2>,
    /// The activations before the blocks that fine-tuning trains, when it does.
    activations: Option<Tensor<4>>,
    /// The same activations of the photos mirrored, when the network also looks at mirrors.
    mirrored: Option<Tensor<4>>,
}

impl Encoded {
    fn cat(parts: Vec<Encoded>) -> Encoded {
        let cat4 = |parts: Vec<Option<Tensor<4>>>| {
            parts
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .map(|parts| Tensor::cat(parts, 0))
        };
        let mut features = Vec::with_capacity(parts.len());
        let (mut activations, mut mirrored) = (Vec::new(), Vec::new());
        for part in parts {
            features.push(part.features);
            activations.push(part.activations);
            mirrored.push(part.mirrored);
        }
        Encoded {
            features: Tensor::cat(features, 0),
            activations: cat4(activations),
            mirrored: cat4(mirrored),
        }
    }
}

/// Runs the backbone over every photo in `set`, or with `augment` (parameters, seed, copy
/// number) over a seeded augmented copy of each, keeping the pooled features and, when
/// `activations`, those before the blocks that fine-tuning trains (of the mirrored photos too
/// when `net` looks at mirrors).
fn encode(
    net: &TransferNet,
    set: &PhotoSet,
    config: &TrainConfig,
    (augment, activations): (Option<(&AugmentParams, u64, usize)>, bool),
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
        let mirrored = (activations && net.viewing.mirror)
            .then(|| net.backbone.activations(images.clone().flip([3]), frozen));
        parts.push(if activations {
            // The head first trains on the features it would see without fine-tuning (one
            // frozen pass is cheaper than the trained blocks on burn's layers); fine-tuning
            // then starts from the activations before its blocks.
            Encoded {
                features: net.features(images.clone()),
                activations: Some(net.backbone.activations(images, frozen)),
                mirrored,
            }
        } else {
            Encoded {
                features: net.features(images),
                activations: None,
                mirrored,
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
    let fine_tune = config.fine_tune > 0;
    // Fine-tuning from photos computes the training photos' activations afresh every epoch.
    let from_photos = config.fine_tune_from == FineTuneInput::Photos;
    // The backbone does not change while the features are computed. Training photos are
    // seen once each (augmentation flips them at random); validation photos as the network
    // will look at photos when it answers.
    let mut frozen = TransferNet {
        backbone: net.backbone.clone().freeze(),
        head: net.head.clone(),
        viewing: Viewing {
            mirror: false,
            ..net.viewing
        },
    };
    let keep = fine_tune && !from_photos;
    let mut parts = vec![encode(
        &frozen,
        &data.train,
        &config,
        (None, keep),
        device,
        "train",
    )];
    let mut labels = data.train.labels.clone();
    if !config.no_augment {
        for copy in 1..=config.feature_copies {
            let augment = Some((&config.augment, config.seed, copy));
            let what = format!("copy {copy}/{}", config.feature_copies);
            parts.push(encode(
                &frozen,
                &data.train,
                &config,
                (augment, keep),
                device,
                &what,
            ));
            labels.extend_from_slice(&data.train.labels);
        }
    }
    let train = Encoded::cat(parts);
    frozen.viewing = net.viewing;
    let validation = encode(
        &frozen,
        &data.validation,
        &config,
        (None, fine_tune),
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
    let TransferNet {
        backbone,
        head,
        viewing,
    } = net;
    // The frozen backbone's features are the finished network's too, and those its ImageNet
    // tail gives a fine-tuned one; that tail's score is fitted on the photos alone, without
    // the augmented copies (the open-set study's choice).
    let embedded = match (fine_tune, backbone.imagenet_tail().is_some()) {
        (false, _) => Some(Embedded {
            train: rows(train.features.clone()),
            labels: labels.clone(),
            validation: rows(validation.features.clone()),
        }),
        (true, true) => {
            let photos = data.train.len();
            let [_, dim] = train.features.dims();
            Some(Embedded {
                train: rows(train.features.clone().slice([0..photos, 0..dim])),
                labels: data.train.labels.clone(),
                validation: rows(validation.features.clone()),
            })
        }
        (true, false) => None,
    };
    let autodiff = device.clone().autodiff();
    let head_stage = fit::Stage {
        forward: |head: &Head, x| head.forward(x),
        validate: |head: &Head| model::probability_rows(head.forward(validation.features.clone())),
        network: |head| {
            Network::Transfer(TransferNet {
                backbone: backbone.clone(),
                head,
                viewing,
            })
        },
        validation_labels: &data.validation.labels,
        checkpoint: None,
        dir,
        device,
    };
    let features = fit::Cached {
        inputs: train.features.to_device(&autodiff),
        labels: &labels,
    };
    let head = head_stage.fit(
        &mut card,
        (head.to_device(&autodiff).train(), optimizer(&config)),
        &features,
        1..=config.epochs,
        fit::Plan::constant(config.learning_rate),
    )?;
    if let Some(val_x) = validation.activations {
        let tuned_from = backbone.block_count() - config.fine_tune;
        eprintln!(
            "fine-tuning the last {} blocks with the head, from {}",
            config.fine_tune,
            match from_photos {
                true => "the photos augmented afresh each epoch",
                false => "the activations computed once",
            }
        );
        let net = TransferNet {
            backbone,
            head,
            viewing,
        };
        let stage = fit::Stage {
            forward: |net: &TransferNet, x| net.forward_from(x, None, tuned_from),
            validate: |net: &TransferNet| {
                let mirrored = validation.mirrored.clone();
                model::probability_rows(net.forward_from(val_x.clone(), mirrored, tuned_from))
            },
            network: Network::Transfer,
            validation_labels: &data.validation.labels,
            checkpoint: None,
            dir,
            device,
        };
        let module = (net.to_device(&autodiff).train(), optimizer(&config));
        let epochs = config.epochs + 1..=config.total_epochs();
        let plan = fit::Plan {
            base: config.fine_tune_learning_rate,
            schedule: config.fine_tune_schedule,
            warmup_epochs: config.fine_tune_warmup,
            patience: config.fine_tune_patience,
        };
        match train.activations {
            Some(train_x) => {
                let activations = fit::Cached {
                    inputs: train_x.to_device(&autodiff),
                    labels: &labels,
                };
                stage.fit(&mut card, module, &activations, epochs, plan)?;
            }
            None => {
                // The frozen blocks run on the frozen copy, outside the gradients.
                let photos = fit::Photos {
                    set: &data.train,
                    augment: (!config.no_augment).then_some(&config.augment),
                    norm: config.model.normalisation(),
                    seed: config.seed,
                    image_size: config.model.image_size,
                    device,
                    prepare: Some(&|images| {
                        frozen
                            .backbone
                            .activations(images, tuned_from)
                            .to_device(&autodiff)
                    }),
                };
                stage.fit(&mut card, module, &photos, epochs, plan)?;
            }
        }
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
