//! `vlinder evaluate`: how well a trained model names the species of labelled photos.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dataset::{ImageFolder, Photo, PhotoSet, SkippedPhoto, stratified_split};
use crate::device::Backend;
use crate::metrics::Evaluation;
use crate::open_set::{self, OpenSetReport, UnknownFigures};
use crate::train::data::relabel;
use crate::trained::{Assessment, ModelCard, ModelDir, TrainedModel, WeightsChoice, answers};
use crate::verdict::Thresholds;
use crate::{Error, Result, files, plot};

/// Which photos of `--data` to evaluate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum SplitChoice {
    /// Every photo in the folder.
    All,
    /// The training part of the model's own --validation-split of this folder.
    Train,
    /// The validation part of the model's own --validation-split of this folder.
    Validation,
}

/// The configuration of `vlinder evaluate`, saved in `evaluation.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvaluateConfig {
    /// The model directory.
    pub model: PathBuf,
    /// A folder with one sub-folder of photos per species.
    pub data: PathBuf,
    /// Which of its photos to use.
    pub split: SplitChoice,
    /// Which saved weights to use.
    pub weights: WeightsChoice,
    /// Photos of species the model was not trained on, or of no butterfly (any layout): how
    /// well the unknown-ness score tells them from the evaluated photos.
    pub unknown: Option<PathBuf>,
    /// The verdict thresholds of the open-set figures, as in `vlinder check`.
    pub thresholds: Thresholds,
    /// Where `evaluation.json` and `confusion-matrix.png` go (default: the model directory).
    pub out: Option<PathBuf>,
    pub device: Backend,
}

/// What `evaluation.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvaluationReport {
    pub config: EvaluateConfig,
    #[serde(flatten)]
    pub evaluation: Evaluation,
    /// The unknown-ness score's figures, for a model that has one.
    pub open_set: Option<OpenSetReport>,
    pub skipped: Vec<SkippedPhoto>,
}

/// Evaluates the model on the photos `config` names and writes the report and the confusion
/// matrix plot.
pub fn evaluate(config: &EvaluateConfig) -> Result<EvaluationReport> {
    let dir = ModelDir::new(&config.model);
    let model = dir.load(config.weights, &config.device.device()?)?;
    let card = &model.card;
    let folder = ImageFolder::scan(&config.data)?;
    let mut photos = relabel(&folder, &card.species)?;
    if config.split != SplitChoice::All {
        photos = model_split(&dir, card, config, photos)?;
    }
    let (set, mut skipped) = PhotoSet::decode(
        &photos,
        card.image_size,
        card.preprocessing.resize,
        "evaluation",
    );
    skipped.splice(0..0, folder.skipped);
    if set.is_empty() {
        return Err(Error::Layout {
            path: config.data.clone(),
            reason: "no readable photo to evaluate on".into(),
        });
    }
    let assessments = model.assess(&set.all_pixels());
    let probabilities: Vec<Vec<f32>> = assessments.iter().map(|a| a.raw.clone()).collect();
    let open_set = match (&model.novelty, &config.unknown) {
        (Ok((_, novelty)), unknown) => {
            let unknown = match unknown {
                Some(dir) => Some(unknown_figures(
                    &model,
                    dir,
                    &assessments,
                    config,
                    &mut skipped,
                )?),
                None => None,
            };
            Some(OpenSetReport {
                threshold: novelty.threshold,
                keep: novelty.keep,
                in_set: open_set::in_set_figures(
                    &answers(&assessments),
                    &set.labels,
                    &card.species,
                    &config.thresholds,
                ),
                unknown,
            })
        }
        (Err(why), Some(dir)) => {
            return Err(Error::invalid("unknown", dir.display(), why.clone()));
        }
        (Err(_), None) => None,
    };
    let report = EvaluationReport {
        config: config.clone(),
        evaluation: Evaluation::compute(&probabilities, &set.labels, &card.species),
        open_set,
        skipped,
    };
    let out = output_dir(config);
    files::create_dir(out)?;
    files::write_json(&out.join("evaluation.json"), &report)?;
    plot::confusion_matrix(
        &report.evaluation.confusion,
        &report.evaluation.species,
        &out.join("confusion-matrix.png"),
    )?;
    Ok(report)
}

/// The photos of `photos` in the part of the model's split that `config.split` names: as its
/// `split.csv` lists them (a `cv` fold's model has its fold there), else re-created from the
/// seed and `--validation-split` it was trained with.
fn model_split(
    dir: &ModelDir,
    card: &ModelCard,
    config: &EvaluateConfig,
    photos: Vec<Photo>,
) -> Result<Vec<Photo>> {
    let part = match config.split {
        SplitChoice::Train => "train",
        _ => "validation",
    };
    let listing = dir.split_path();
    if listing.is_file() {
        let corrupt = |reason: String| Error::ModelCorrupt {
            path: listing.clone(),
            reason,
        };
        // Photos are matched by their path inside the folder they were trained from, so that
        // the folder may be given from elsewhere or have moved.
        let t = &card.training;
        let roots: Vec<&PathBuf> = [&t.data, &t.train, &t.validation]
            .into_iter()
            .flatten()
            .collect();
        let inside = |path: &Path, roots: &[&PathBuf]| -> PathBuf {
            roots
                .iter()
                .find_map(|root| path.strip_prefix(root).ok())
                .unwrap_or(path)
                .to_path_buf()
        };
        let mut reader = csv::Reader::from_path(&listing).map_err(|e| corrupt(e.to_string()))?;
        let mut wanted = std::collections::HashSet::new();
        for row in reader.records() {
            let row = row.map_err(|e| corrupt(e.to_string()))?;
            if row.get(2) == Some(part) {
                wanted.insert(inside(Path::new(row.get(0).unwrap_or_default()), &roots));
            }
        }
        let chosen: Vec<Photo> = photos
            .into_iter()
            .filter(|p| wanted.contains(&inside(&p.path, &[&config.data])))
            .collect();
        if chosen.is_empty() {
            return Err(Error::Layout {
                path: config.data.clone(),
                reason: format!(
                    "none of its photos is in the {part} part of {}; give --data the folder the model was trained on, or --split all",
                    listing.display()
                ),
            });
        }
        return Ok(chosen);
    }
    if card.training.data.is_none() {
        return Err(Error::invalid(
            "split",
            part,
            "`all`: this model was trained on separate --train and --validation folders, not a --validation-split",
        ));
    }
    let split = stratified_split(
        &photos,
        card.species.len(),
        card.training.validation_split,
        card.training.seed,
    )?;
    Ok(match config.split {
        SplitChoice::Train => split.train,
        _ => split.validation,
    })
}

/// The photos below `dir` through the model, against the evaluated photos' answers.
fn unknown_figures(
    model: &TrainedModel,
    dir: &Path,
    in_set: &[Assessment],
    config: &EvaluateConfig,
    skipped: &mut Vec<SkippedPhoto>,
) -> Result<UnknownFigures> {
    let card = &model.card;
    let (set, unusable, _) =
        PhotoSet::decode_below(dir, card.image_size, card.preprocessing.resize, "unknown")?;
    skipped.extend(unusable);
    if set.is_empty() {
        return Err(Error::Layout {
            path: dir.to_path_buf(),
            reason: "no readable photo of unknown species to evaluate on".into(),
        });
    }
    let strangers = model.assess(&set.all_pixels());
    Ok(open_set::unknown_figures(
        dir,
        &set.paths,
        &answers(&strangers),
        &answers(in_set),
        &card.species,
        &config.thresholds,
    ))
}

/// The report as a text table: overall metrics, per-species scores, the confusion matrix and
/// the unknown-ness figures.
pub fn render_report(report: &EvaluationReport) -> String {
    let mut s = render_table(&report.evaluation);
    if let Some(o) = &report.open_set {
        s.push('\n');
        s.push_str(&open_set::render(o));
    }
    s
}

/// The report as a text table: overall metrics, per-species scores and the confusion matrix.
pub fn render_table(e: &Evaluation) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "photos    {}", e.photos);
    let _ = writeln!(s, "accuracy  {:.4}", e.accuracy);
    let _ = writeln!(s, "log loss  {:.4}", e.log_loss);
    if let Some(auc) = e.roc_auc {
        let _ = writeln!(s, "ROC AUC   {auc:.4}");
    }
    let _ = writeln!(s, "macro F1  {:.4}\n", e.macro_f1);
    let width = e.species.iter().map(|n| n.len()).max().unwrap_or(7).max(7);
    let _ = writeln!(
        s,
        "{:width$}  precision  recall  f1      support",
        "species"
    );
    for sp in &e.per_species {
        let _ = writeln!(
            s,
            "{:width$}  {:<9.4}  {:<6.4}  {:<6.4}  {}",
            sp.species, sp.precision, sp.recall, sp.f1, sp.support
        );
    }
    let _ = writeln!(
        s,
        "\nconfusion (rows: true, columns: predicted, in the order above)"
    );
    for (name, row) in e.species.iter().zip(&e.confusion) {
        let cells: Vec<String> = row.iter().map(|c| format!("{c:>6}")).collect();
        let _ = writeln!(s, "{name:width$}  {}", cells.join(""));
    }
    s
}

/// The default output folder of an evaluation.
pub fn output_dir(config: &EvaluateConfig) -> &Path {
    config.out.as_deref().unwrap_or(&config.model)
}
