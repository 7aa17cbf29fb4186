//! The flags of `train` and `cv`.

use std::path::PathBuf;

use clap::Args;
use vlinder::device::Backend;
use vlinder::train::cv::CvConfig;
use vlinder::train::{FineTuneInput, Schedule, TrainConfig, UnknownFeatures};

use super::augment::AugmentArgs;
use super::model::ModelArgs;

/// The flags of [`TrainConfig`].
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// A folder with one sub-folder of photos per species, split into train and validation
    /// by --validation-split.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["train", "validation"])]
    pub data: Option<PathBuf>,
    /// A folder of species sub-folders to train on (with --validation).
    #[arg(long, value_name = "DIR", requires = "validation")]
    pub train: Option<PathBuf>,
    /// A folder of species sub-folders to validate on (with --train).
    #[arg(long, value_name = "DIR", requires = "train")]
    pub validation: Option<PathBuf>,
    /// The share of each species' photos held out for validation with --data.
    #[arg(long, default_value_t = TrainConfig::default().validation_split)]
    pub validation_split: f64,
    /// The network: which one, its input size and resizing, how a transfer network looks.
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    pub epochs: usize,
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    pub batch_size: usize,
    /// RMSprop's learning rate.
    #[arg(long, default_value_t = TrainConfig::default().learning_rate)]
    pub learning_rate: f64,
    /// RMSprop's decay of the squared-gradient average (Keras' rho).
    #[arg(long, default_value_t = TrainConfig::default().rho)]
    pub rho: f32,
    /// RMSprop's epsilon (Keras' default).
    #[arg(long, default_value_t = TrainConfig::default().epsilon)]
    pub epsilon: f32,
    /// Seeds the split, the initial weights, the photo order and dropout.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    pub seed: u64,
    /// The backbone's weights (.pth) for a transfer model (default: the ones `vlinder backbone
    /// install NAME` put in the cache).
    #[arg(long, value_name = "FILE")]
    pub backbone: Option<PathBuf>,
    /// For the transfer models: augmented copies of each training photo whose features are
    /// computed once, besides the photo itself (the recipe draws afresh every epoch instead).
    #[arg(long, default_value_t = TrainConfig::default().feature_copies)]
    pub feature_copies: usize,
    /// For the transfer models: after training the head, train the last N of the backbone's
    /// MBConv blocks (Lite0 has 16), its final 1x1 convolution and the head together (0: the
    /// backbone stays frozen).
    #[arg(long, value_name = "N", default_value_t = TrainConfig::default().fine_tune)]
    pub fine_tune: usize,
    /// Epochs of fine-tuning, after --epochs of the head alone.
    #[arg(long, default_value_t = TrainConfig::default().fine_tune_epochs)]
    pub fine_tune_epochs: usize,
    /// RMSprop's learning rate while fine-tuning: small, so that the pretrained weights move
    /// only a little (1e-4 overfit within a few epochs in our runs).
    #[arg(long, default_value_t = TrainConfig::default().fine_tune_learning_rate)]
    pub fine_tune_learning_rate: f64,
    /// How the learning rate moves during fine-tuning, step by step: `constant`, or `cosine`
    /// (half a cosine from --fine-tune-learning-rate towards 0 at the end).
    #[arg(long, value_enum, default_value_t = TrainConfig::default().fine_tune_schedule)]
    pub fine_tune_schedule: Schedule,
    /// Epochs at the start of fine-tuning over which the learning rate rises linearly from
    /// near 0 to --fine-tune-learning-rate, so that the new head's first large gradients do
    /// not knock the pretrained weights about.
    #[arg(long, value_name = "EPOCHS", default_value_t = TrainConfig::default().fine_tune_warmup)]
    pub fine_tune_warmup: usize,
    /// Stop fine-tuning once the validation loss has not improved for N epochs, and keep the
    /// weights of the fine-tuning epoch with the lowest validation loss.
    #[arg(long, value_name = "N")]
    pub fine_tune_patience: Option<usize>,
    /// What fine-tuning trains on: `activations`, those before the fine-tuned blocks,
    /// computed once for the photos and their --feature-copies augmented copies; or `photos`,
    /// every training photo augmented afresh each epoch and run through the frozen blocks
    /// again: slower per epoch, never the same copy twice, and no activations held in memory.
    #[arg(long, value_enum, default_value_t = TrainConfig::default().fine_tune_from)]
    pub fine_tune_from: FineTuneInput,
    /// Train towards targets moved this share of the way to uniform (label smoothing, e.g.
    /// 0.1), so that the network is not pushed to ever larger logits on a few photos; the
    /// validation loss is always against the labels as they are.
    #[arg(long, value_name = "ALPHA", default_value_t = TrainConfig::default().label_smoothing)]
    pub label_smoothing: f32,
    /// Mixup: blend each training batch with a shuffled copy of itself by a weight drawn from
    /// Beta(ALPHA, ALPHA), folded onto [0.5, 1], and its loss between both labels alike, so
    /// that the network cannot fit every training photo exactly (0: off; e.g. 0.2). On cached
    /// features or activations (the transfer models) those are blended, not the pixels.
    #[arg(long, value_name = "ALPHA", default_value_t = TrainConfig::default().mixup)]
    pub mixup: f32,
    /// Photos of other species or of no butterfly (any layout, no labels): they teach the
    /// unknown-ness score what the model's species are not.
    #[arg(long, value_name = "DIR")]
    pub others: Option<PathBuf>,
    /// Photos of species the model is not trained on (any layout, no labels), used for nothing
    /// but measuring: the finished model's unknown-ness score is tried on them, and the share
    /// that pass and that would get `agrees` are printed and kept in model.json (with `cv`,
    /// for every fold).
    #[arg(long, value_name = "DIR")]
    pub unknown: Option<PathBuf>,
    /// Each photo's observation date and place: a CSV with a row per photo (file, species,
    /// observed_on, latitude, longitude) or a collection's manifest.jsonl. The training photos'
    /// months and latitudes become the model's prior; the validation photos' fit its weight.
    #[arg(long, value_name = "FILE")]
    pub observations: Option<PathBuf>,
    /// A prior made by `vlinder prior gbif` instead of the training photos' own; with
    /// --observations its weight is fitted on the validation photos, else it is 1.
    #[arg(long, value_name = "PRIOR.json")]
    pub prior: Option<PathBuf>,
    /// A review queue's database (a SQLite file or a postgres:// URL; give a password in
    /// PGPASSWORD rather than the URL): the photos of records validators confirmed or corrected
    /// are added to the training photos, labelled with the validators' species.
    #[arg(long, value_name = "URL")]
    pub reviewed: Option<String>,
    /// The share of validation photos whose unknown-ness score must pass: the rest of them,
    /// and photos less like the known species, are called `unknown`.
    #[arg(long, default_value_t = TrainConfig::default().keep)]
    pub keep: f64,
    /// What the unknown-ness score of a fine-tuned model is fitted on: `imagenet`, the features
    /// the network had before fine-tuning (the tuned blocks are kept a second time with their
    /// ImageNet weights: about 40% more work per photo, and far fewer photos of species the
    /// model never saw pass), or `tuned`, the features the head sees.
    #[arg(long, value_enum, default_value_t = TrainConfig::default().unknown_features)]
    pub unknown_features: UnknownFeatures,
    /// Train on the photos as they are, without augmentation.
    #[arg(long)]
    pub no_augment: bool,
    /// The augmentation of the training photos (never the validation photos), a fresh draw for
    /// every photo in every epoch.
    #[command(flatten)]
    pub augment: AugmentArgs,
    /// Where the computation runs.
    #[arg(long, value_enum, default_value_t = TrainConfig::default().device)]
    pub device: Backend,
}

impl From<TrainArgs> for TrainConfig {
    fn from(args: TrainArgs) -> Self {
        TrainConfig {
            data: args.data,
            train: args.train,
            validation: args.validation,
            validation_split: args.validation_split,
            model: args.model.into(),
            epochs: args.epochs,
            batch_size: args.batch_size,
            learning_rate: args.learning_rate,
            rho: args.rho,
            epsilon: args.epsilon,
            seed: args.seed,
            backbone: args.backbone,
            feature_copies: args.feature_copies,
            fine_tune: args.fine_tune,
            fine_tune_epochs: args.fine_tune_epochs,
            fine_tune_learning_rate: args.fine_tune_learning_rate,
            fine_tune_schedule: args.fine_tune_schedule,
            fine_tune_warmup: args.fine_tune_warmup,
            fine_tune_patience: args.fine_tune_patience,
            fine_tune_from: args.fine_tune_from,
            label_smoothing: args.label_smoothing,
            mixup: args.mixup,
            others: args.others,
            unknown: args.unknown,
            observations: args.observations,
            prior: args.prior,
            reviewed: args.reviewed,
            keep: args.keep,
            unknown_features: args.unknown_features,
            no_augment: args.no_augment,
            augment: args.augment.into(),
            device: args.device,
        }
    }
}

/// The flags of [`CvConfig`].
#[derive(Debug, Args)]
pub struct CvArgs {
    #[command(flatten)]
    pub train: TrainArgs,
    /// The number of folds.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Where the fold models (fold-1, fold-2, ...) and cv.json go.
    #[arg(long, short, value_name = "DIR")]
    pub out: PathBuf,
}

impl From<CvArgs> for CvConfig {
    fn from(args: CvArgs) -> Self {
        CvConfig {
            train: args.train.into(),
            folds: args.folds,
            out: args.out,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};
    use vlinder::dataset::ResizeFilter;
    use vlinder::model::{Architecture, Pooling, Viewing};

    use super::*;
    use crate::{Cli, Command, given};

    /// The configuration `vlinder train --out model ARGS` runs with, `--model transfer` resolved
    /// as `main` resolves it.
    fn resolved(args: &[&str]) -> TrainConfig {
        let line = [&["vlinder"], args, &["--out", "model"]].concat();
        let matches = Cli::command().get_matches_from(line);
        let Command::Train { args, .. } = Cli::from_arg_matches(&matches).unwrap().command else {
            panic!("not train: {args:?}");
        };
        TrainConfig::from(args).resolve_transfer(|id| given(&matches, "train", id))
    }

    /// `train --data photos --model transfer` and `extra`, resolved.
    fn transfer_with(extra: &[&str]) -> TrainConfig {
        let command = ["train", "--data", "photos", "--model", "transfer"];
        resolved(&[&command[..], extra].concat())
    }

    #[test]
    fn model_transfer_is_the_winning_configuration_and_given_options_override_it() {
        let winner = transfer_with(&[]);
        let spelled_out = resolved(&[
            "train",
            "--data",
            "photos",
            "--model",
            "efficientnet-lite0",
            "--image-size",
            "384",
            "--resize",
            "bilinear",
            "--feature-copies",
            "2",
            "--label-smoothing",
            "0.1",
            "--fine-tune",
            "5",
            "--fine-tune-epochs",
            "8",
            "--fine-tune-learning-rate",
            "1e-4",
            "--fine-tune-schedule",
            "cosine",
            "--fine-tune-warmup",
            "1",
        ]);
        assert_eq!(winner, spelled_out);
        winner.validate().unwrap();

        let smaller = transfer_with(&["--image-size", "224", "--mirror"]);
        assert_eq!(smaller.model.architecture, Architecture::EfficientNetLite0);
        assert_eq!((smaller.model.image_size, smaller.model.focus), (224, None));
        assert_eq!(smaller.model.resize, ResizeFilter::Bilinear);
        assert!(smaller.model.mirror);
        assert_eq!((smaller.fine_tune, smaller.fine_tune_epochs), (5, 8));
        smaller.validate().unwrap();

        // Looking twice leaves the backbone frozen, and with it every fine-tuning option.
        let focused = transfer_with(&["--image-size", "640", "--focus", "320"]);
        assert_eq!(focused.fine_tune, 0);
        assert_eq!(
            (focused.fine_tune_schedule, focused.fine_tune_warmup),
            (Schedule::Constant, 0)
        );
        assert_eq!(
            focused.fine_tune_epochs,
            TrainConfig::default().fine_tune_epochs
        );
        focused.validate().unwrap();
        let frozen = transfer_with(&["--fine-tune", "0"]);
        assert_eq!((frozen.fine_tune, frozen.fine_tune_warmup), (0, 0));
        frozen.validate().unwrap();

        let tuned_more = transfer_with(&["--fine-tune", "16", "--fine-tune-warmup", "2"]);
        assert_eq!((tuned_more.fine_tune, tuned_more.fine_tune_warmup), (16, 2));
        assert_eq!(tuned_more.fine_tune_schedule, Schedule::Cosine);
        tuned_more.validate().unwrap();

        // Other architectures keep what clap gave them.
        let recipe = resolved(&["train", "--data", "photos"]);
        assert_eq!(recipe.model.architecture, Architecture::Recipe);
        assert_eq!((recipe.model.image_size, recipe.feature_copies), (75, 4));
        assert!(!recipe.model.mirror);
        assert_eq!((recipe.label_smoothing, recipe.fine_tune), (0.0, 0));
    }

    #[test]
    fn fine_tuning_schedule_options_without_fine_tuning_or_out_of_range_are_refused() {
        let config = |args: &[&str]| {
            let mut all = vec!["train", "--data", "photos", "--model", "efficientnet-lite0"];
            all.extend_from_slice(args);
            resolved(&all)
        };
        let refused = |args: &[&str], name: &str, reason: &str| {
            let err = config(args).validate().unwrap_err().to_string();
            assert!(
                err.contains(name) && err.contains(reason),
                "{args:?}: {err}"
            );
        };
        let off = "only with --fine-tune N";
        refused(&["--fine-tune-patience", "2"], "fine-tune-patience", off);
        refused(&["--fine-tune-warmup", "1"], "fine-tune-warmup", off);
        refused(
            &["--fine-tune-schedule", "cosine"],
            "fine-tune-schedule",
            off,
        );
        refused(&["--fine-tune-from", "photos"], "fine-tune-from", off);
        let tuned = ["--fine-tune", "3", "--fine-tune-epochs", "4"];
        refused(
            &[&tuned[..], &["--fine-tune-warmup", "4"]].concat(),
            "fine-tune-warmup",
            "fewer epochs than --fine-tune-epochs 4",
        );
        refused(
            &[&tuned[..], &["--fine-tune-patience", "0"]].concat(),
            "fine-tune-patience",
            "at least 1",
        );
        let all = config(
            &[
                &tuned[..],
                &["--fine-tune-warmup", "1", "--fine-tune-schedule", "cosine"],
                &["--fine-tune-patience", "2", "--fine-tune-from", "photos"],
            ]
            .concat(),
        );
        all.validate().unwrap();
        assert_eq!(
            (
                all.fine_tune_schedule,
                all.fine_tune_warmup,
                all.fine_tune_patience,
                all.fine_tune_from
            ),
            (Schedule::Cosine, 1, Some(2), FineTuneInput::Photos)
        );
    }

    #[test]
    fn mirrors_label_smoothing_and_mixup_are_checked() {
        let config = |args: &[&str]| {
            let mut all = vec!["train", "--data", "photos"];
            all.extend_from_slice(args);
            resolved(&all)
        };
        let lite0 = ["--model", "efficientnet-lite0"];
        let ok = config(&[&lite0[..], &["--mirror", "--label-smoothing", "0.1"]].concat());
        ok.validate().unwrap();
        assert!(ok.model.viewing().mirror);
        assert_eq!(ok.label_smoothing, 0.1);
        let err = config(&["--mirror"]).validate().unwrap_err().to_string();
        assert!(
            err.contains("mirror") && err.contains("transfer models"),
            "{err}"
        );
        for alpha in ["1", "-0.1", "NaN"] {
            let err = config(&[&format!("--label-smoothing={alpha}")])
                .validate()
                .unwrap_err()
                .to_string();
            assert!(err.contains("label-smoothing"), "{alpha}: {err}");
        }
        let mixed = config(&[&lite0[..], &["--mixup", "0.2"]].concat());
        mixed.validate().unwrap();
        assert_eq!(mixed.mixup, 0.2);
        for alpha in ["-0.2", "NaN", "11"] {
            let err = config(&[&format!("--mixup={alpha}")])
                .validate()
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("mixup") && err.contains("Beta"),
                "{alpha}: {err}"
            );
        }
    }

    #[test]
    fn a_bare_command_line_gives_the_defaults_written_once() {
        let parsed = resolved(&["train", "--data", "photos"]);
        let defaults = TrainConfig {
            data: Some("photos".into()),
            ..TrainConfig::default()
        };
        assert_eq!(parsed, defaults);
        // Spot checks against the recipe, so that the defaults cannot drift together.
        assert_eq!(
            (
                defaults.epochs,
                defaults.batch_size,
                defaults.model.image_size
            ),
            (50, 32, 75)
        );
        assert_eq!(defaults.augment.rotation_range, 40.0);
        assert_eq!(defaults.augment.zoom_range, "0.2".parse().unwrap());
        // A model.json that lacks the later fields reads them as the defaults.
        let mut json = serde_json::to_value(&defaults).unwrap();
        let fields = json.as_object_mut().unwrap();
        for field in [
            "feature_copies",
            "fine_tune_epochs",
            "fine_tune_learning_rate",
            "keep",
        ] {
            assert!(fields.remove(field).is_some(), "{field}");
        }
        let old: TrainConfig = serde_json::from_value(json).unwrap();
        assert_eq!(old, defaults);
    }

    #[test]
    fn new_runs_pool_by_gem_and_older_model_files_read_as_they_were_trained() {
        let args = ["train", "--data", "photos", "--model", "efficientnet-lite0"];
        let config = resolved(&args);
        assert_eq!(config.model.pooling, Pooling::Gem);
        assert_eq!(config.model.focus, None);

        // A model.json written before these options had neither key: its network averaged.
        let mut json = serde_json::to_value(&config).unwrap();
        let fields = json.as_object_mut().unwrap();
        assert!(fields.remove("pooling").is_some() && fields.remove("focus").is_some());
        let old: TrainConfig = serde_json::from_value(json).unwrap();
        assert_eq!(old.model.viewing(), Viewing::default());
        assert_eq!(old.model.viewing().pooling, Pooling::Average);
    }
}
