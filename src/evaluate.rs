//! `vlinder evaluate`: how well a trained model names the species of labelled photos.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::check::{Thresholds, Verdict, judge};
use crate::dataset::{ImageFolder, Photo, PhotoSet, SkippedPhoto, Species, stratified_split};
use crate::device::Backend;
use crate::metrics::{self, Evaluation};
use crate::train::data::relabel;
use crate::trained::{Assessment, ModelCard, ModelDir, TrainedModel, WeightsChoice};
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

/// How the unknown-ness score does on the evaluated photos and on photos of unknown species.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenSetReport {
    pub threshold: f64,
    pub keep: f64,
    pub in_set: InSetFigures,
    pub unknown: Option<UnknownFigures>,
}

/// The evaluated photos (of known species) as records: each photo named rightly, and named as
/// each other species, with and without the unknown-ness score.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InSetFigures {
    pub photos: usize,
    /// The share whose score passes the threshold.
    pub passed: f64,
    /// The share of right names that get `agrees`.
    pub right_names_agree: f64,
    pub right_names_agree_image_only: f64,
    /// The AUC of the doubt that ranks wrong names above right ones.
    pub doubt_auc: Option<f64>,
    pub doubt_auc_image_only: Option<f64>,
}

/// Photos of species the model does not know.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnknownFigures {
    pub folder: PathBuf,
    pub photos: usize,
    /// The AUC of the score between them and the evaluated photos.
    pub auroc: Option<f64>,
    /// The share whose score passes the threshold, as if they were known species.
    pub passed: f64,
    /// The share that would get `agrees` if the claim were the model's top species.
    pub agrees: f64,
    pub agrees_image_only: f64,
    /// The same shares for the photos of each folder directly below `folder` (`.` for photos
    /// directly in it): one species each, in the usual layout.
    pub by_folder: BTreeMap<String, FolderFigures>,
}

/// The unknown photos of one folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FolderFigures {
    pub photos: usize,
    pub passed: f64,
    pub agrees: f64,
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
                in_set: in_set_figures(
                    &assessments,
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

/// Whether a photo's unknown-ness score passes its threshold (never for a model without one).
fn passes(a: &Assessment) -> bool {
    a.novelty.is_some_and(|n| !n.unknown)
}

/// The share of `items` for which `test` holds.
fn share<T>(items: &[T], test: impl Fn(&T) -> bool) -> f64 {
    items.iter().filter(|i| test(i)).count() as f64 / items.len().max(1) as f64
}

fn in_set_figures(
    assessments: &[Assessment],
    labels: &[usize],
    species: &Species,
    thresholds: &Thresholds,
) -> InSetFigures {
    // Every photo with every name: its own (right) and each other species' (wrong).
    let mut right = [Vec::new(), Vec::new()];
    let (mut doubts, mut wrong) = ([Vec::new(), Vec::new()], Vec::new());
    for (a, &label) in assessments.iter().zip(labels) {
        for claimed in 0..species.len() {
            for (i, novelty) in [a.novelty.as_ref(), None].into_iter().enumerate() {
                let (verdict, doubt) = judge(
                    &a.calibrated,
                    species,
                    species.name(claimed),
                    thresholds,
                    novelty,
                );
                doubts[i].push(doubt as f32);
                if claimed == label {
                    right[i].push(verdict);
                }
            }
            wrong.push(claimed != label);
        }
    }
    let agree = |v: &Verdict| *v == Verdict::Agrees;
    InSetFigures {
        photos: assessments.len(),
        passed: share(assessments, passes),
        right_names_agree: share(&right[0], agree),
        right_names_agree_image_only: share(&right[1], agree),
        doubt_auc: metrics::roc_auc(&doubts[0], &wrong),
        doubt_auc_image_only: metrics::roc_auc(&doubts[1], &wrong),
    }
}

/// The photos below `dir` through the model, against the evaluated photos' scores.
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
    let scores: Vec<f32> = in_set
        .iter()
        .chain(&strangers)
        .map(|a| a.novelty.map_or(f32::NAN, |n| n.score as f32))
        .collect();
    let positives: Vec<bool> = (0..scores.len()).map(|i| i >= in_set.len()).collect();
    let agrees = |a: &&Assessment, novelty: bool| {
        let top = card.species.name(metrics::argmax(&a.calibrated));
        let novelty = a.novelty.filter(|_| novelty);
        judge(
            &a.calibrated,
            &card.species,
            top,
            &config.thresholds,
            novelty.as_ref(),
        )
        .0 == Verdict::Agrees
    };
    let mut folders: BTreeMap<String, Vec<&Assessment>> = BTreeMap::new();
    for (path, a) in set.paths.iter().zip(&strangers) {
        let relative = path.strip_prefix(dir).unwrap_or(path);
        let folder = match relative.parent().and_then(|p| p.components().next()) {
            Some(first) => first.as_os_str().to_string_lossy().into_owned(),
            None => ".".to_string(),
        };
        folders.entry(folder).or_default().push(a);
    }
    let all: Vec<&Assessment> = strangers.iter().collect();
    Ok(UnknownFigures {
        folder: dir.to_path_buf(),
        photos: strangers.len(),
        auroc: metrics::roc_auc(&scores, &positives),
        passed: share(&all, |a| passes(a)),
        agrees: share(&all, |a| agrees(a, true)),
        agrees_image_only: share(&all, |a| agrees(a, false)),
        by_folder: folders
            .into_iter()
            .map(|(name, photos)| {
                let figures = FolderFigures {
                    photos: photos.len(),
                    passed: share(&photos, |a| passes(a)),
                    agrees: share(&photos, |a| agrees(a, true)),
                };
                (name, figures)
            })
            .collect(),
    })
}

/// The report as a text table: overall metrics, per-species scores, the confusion matrix and
/// the unknown-ness figures.
pub fn render_report(report: &EvaluationReport) -> String {
    use std::fmt::Write;
    let mut s = render_table(&report.evaluation);
    let Some(o) = &report.open_set else {
        return s;
    };
    let percent = |share: f64| format!("{:.1}%", 100.0 * share);
    let auc = |auc: Option<f64>| auc.map_or("-".to_string(), |a| format!("{a:.4}"));
    let i = &o.in_set;
    let _ = writeln!(
        s,
        "\nunknown-ness (threshold {:.4}, set to keep {} of the validation photos)",
        o.threshold,
        percent(o.keep)
    );
    let _ = writeln!(
        s,
        "                                     with score  image only"
    );
    let _ = writeln!(
        s,
        "photos evaluated that pass           {:>10}",
        percent(i.passed)
    );
    let _ = writeln!(
        s,
        "right names that get agrees          {:>10}  {:>10}",
        percent(i.right_names_agree),
        percent(i.right_names_agree_image_only)
    );
    let _ = writeln!(
        s,
        "AUC of doubt, wrong names vs right   {:>10}  {:>10}",
        auc(i.doubt_auc),
        auc(i.doubt_auc_image_only)
    );
    if let Some(u) = &o.unknown {
        let _ = writeln!(
            s,
            "\n{} photos of unknown species ({})",
            u.photos,
            u.folder.display()
        );
        let _ = writeln!(
            s,
            "AUROC of the score, unknown vs evaluated  {}",
            auc(u.auroc)
        );
        let _ = writeln!(
            s,
            "pass the threshold                        {}",
            percent(u.passed)
        );
        let _ = writeln!(
            s,
            "agrees when named as the top species      {} (image only: {})",
            percent(u.agrees),
            percent(u.agrees_image_only)
        );
        if u.by_folder.len() > 1 {
            let width = u
                .by_folder
                .keys()
                .map(String::len)
                .max()
                .unwrap_or(6)
                .max(6);
            let _ = writeln!(s, "\n{:width$}  photos    pass  agrees", "folder");
            for (name, f) in &u.by_folder {
                let _ = writeln!(
                    s,
                    "{name:width$}  {:>6}  {:>6}  {:>6}",
                    f.photos,
                    percent(f.passed),
                    percent(f.agrees)
                );
            }
        }
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
