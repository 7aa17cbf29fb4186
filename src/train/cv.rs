//! `vlinder cv`: k-fold cross-validation of any model and configuration, as the recipe
//! suggested: each fold is the validation set once, the rest train a fresh model.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::data::{load_context, load_unlabelled, require_two_species};
use super::{TrainConfig, TrainingData, train_on, validation_evidence};
use crate::context::prior::{Score, Weights, best_weights};
use crate::context::{Context, Labelled, Prior, PriorFit};
use crate::dataset::{ImageFolder, PhotoSet, stratified_folds};
use crate::open_set::{OpenSetReport, UnknownFigures};
use crate::trained::{ModelDir, WeightsChoice};
use crate::{Error, Result, files};

/// The configuration of `vlinder cv`, saved in `cv.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CvConfig {
    pub train: TrainConfig,
    /// The number of folds.
    pub folds: usize,
    /// Where the fold models (fold-1, fold-2, ...) and cv.json go.
    pub out: PathBuf,
}

/// One fold's result, from its last epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FoldResult {
    pub fold: usize,
    pub train_photos: usize,
    pub validation_photos: usize,
    pub accuracy: f64,
    pub log_loss: f64,
    /// With a prior fitted on the fold's validation photos: the photo alone (calibrated)
    /// against the photo with its date and place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<PriorFit>,
    /// The fold's photos with their date and place, the prior's weights fitted on the other
    /// folds' validation photos instead of its own: nothing chosen on the photos scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_fitted: Option<CrossFitted>,
    /// The fold model's unknown-ness figures on its validation photos and, with --unknown, on
    /// the photos of species it never saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_set: Option<OpenSetReport>,
    pub model: PathBuf,
}

/// A fold's score with weights fitted on the other folds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrossFitted {
    pub weights: Weights,
    pub score: Score,
}

/// What `cv.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CvReport {
    pub config: CvConfig,
    pub folds: Vec<FoldResult>,
    pub mean_accuracy: f64,
    pub std_accuracy: f64,
    pub mean_log_loss: f64,
    pub std_log_loss: f64,
    /// Means and standard deviations over the folds with a prior.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<PriorSummary>,
    /// Means and standard deviations of the unknown-ness figures, with --unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_set: Option<OpenSetSummary>,
    pub skipped: usize,
}

/// The folds' prior figures: (mean, standard deviation) of accuracy and log loss, for the photo
/// alone and each way of adding the date and place (see [`PriorFit`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PriorSummary {
    pub image: [(f64, f64); 2],
    pub months: [(f64, f64); 2],
    pub bayes: [(f64, f64); 2],
    pub fitted: [(f64, f64); 2],
    /// Weights fitted on the other folds (absent from reports written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_fitted: Option<[(f64, f64); 2]>,
}

/// The folds' unknown-ness figures, each as (mean, standard deviation).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenSetSummary {
    /// The validation photos named rightly that get `agrees`.
    pub right_names_agree: (f64, f64),
    /// The AUROC of the score between the unknown photos and the validation photos.
    pub auroc: (f64, f64),
    /// The unknown photos that pass the threshold.
    pub passed: (f64, f64),
    /// The unknown photos that get `agrees` when named as the top species.
    pub agrees: (f64, f64),
}

impl OpenSetSummary {
    /// The summary of folds that all measured unknown photos; `None` otherwise.
    fn of(folds: &[FoldResult]) -> Option<Self> {
        let reports: Vec<&OpenSetReport> = folds
            .iter()
            .map(|f| f.open_set.as_ref().filter(|o| o.unknown.is_some()))
            .collect::<Option<_>>()?;
        let unknown = |get: fn(&UnknownFigures) -> f64| {
            mean_std(
                &reports
                    .iter()
                    .map(|o| get(o.unknown.as_ref().expect("filtered")))
                    .collect::<Vec<_>>(),
            )
        };
        Some(OpenSetSummary {
            right_names_agree: mean_std(
                &reports
                    .iter()
                    .map(|o| o.in_set.right_names_agree)
                    .collect::<Vec<_>>(),
            ),
            auroc: unknown(|u| u.auroc.unwrap_or(f64::NAN)),
            passed: unknown(|u| u.passed),
            agrees: unknown(|u| u.agrees),
        })
    }
}

/// Mean and sample standard deviation.
fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

/// Runs the cross-validation and writes `cv.json`; the photos are decoded once for all folds.
pub fn cross_validate(config: &CvConfig) -> Result<CvReport> {
    let train = &config.train;
    train.validate()?;
    super::transfer::backbone_weights(train)?;
    let Some(data_dir) = &train.data else {
        return Err(Error::invalid(
            "data",
            "(none)",
            "cross-validation splits one folder: give --data DIR",
        ));
    };
    let folder = ImageFolder::scan(data_dir)?;
    require_two_species(&folder)?;
    let mut skipped = folder.skipped.clone();
    let (others, unknown) = load_unlabelled(train, &mut skipped)?;
    let (set, bad) = PhotoSet::decode(
        &folder.photos,
        train.model.image_size,
        train.model.resize,
        "photos",
    );
    skipped.extend(bad);
    let (observations, prior) = load_context(train, &folder.species)?;
    let folds = stratified_folds(&set.labels, folder.species.len(), config.folds, train.seed)?;
    files::create_dir(&config.out)?;
    let mut results = Vec::with_capacity(folds.len());
    // Each fold's prior and the evidence it was fitted on, for the cross-fitted weights.
    let mut evidence: Vec<Option<Evidence>> = Vec::with_capacity(folds.len());
    for (i, validation) in folds.iter().enumerate() {
        let training: Vec<usize> = folds
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, f)| f.iter().copied())
            .collect();
        eprintln!(
            "fold {}/{}: {} training, {} validation photos",
            i + 1,
            folds.len(),
            training.len(),
            validation.len()
        );
        let data = TrainingData {
            species: folder.species.clone(),
            train: set.subset(&training),
            validation: set.subset(validation),
            others: others.clone(),
            unknown: unknown.clone(),
            skipped: skipped.clone(),
            observations: observations.clone(),
            prior: prior.clone(),
        };
        let model = config.out.join(format!("fold-{}", i + 1));
        let card = train_on(train, &data, &model)?;
        evidence.push(match &card.prior {
            Some(prior) if prior.validation.is_some() => {
                let device = train.device.device()?;
                let trained = ModelDir::new(&model).load(WeightsChoice::Last, &device)?;
                validation_evidence(&trained, &data).map(|(probabilities, contexts)| Evidence {
                    prior: prior.clone(),
                    probabilities,
                    contexts,
                    labels: data.validation.labels.clone(),
                })
            }
            _ => None,
        });
        let last = card.final_metrics.expect("a finished run has a last epoch");
        results.push(FoldResult {
            fold: i + 1,
            train_photos: training.len(),
            validation_photos: validation.len(),
            accuracy: last.validation_accuracy,
            log_loss: last.validation_loss,
            prior: card.prior.and_then(|p| p.validation),
            cross_fitted: None,
            open_set: card.open_set,
            model,
        });
    }
    cross_fit(&mut results, &evidence);
    let (mean_accuracy, std_accuracy) =
        mean_std(&results.iter().map(|r| r.accuracy).collect::<Vec<_>>());
    let (mean_log_loss, std_log_loss) =
        mean_std(&results.iter().map(|r| r.log_loss).collect::<Vec<_>>());
    let fits: Vec<&PriorFit> = results.iter().filter_map(|r| r.prior.as_ref()).collect();
    let prior = (!fits.is_empty()).then(|| {
        let of = |f: fn(&PriorFit) -> Score| {
            [
                mean_std(&fits.iter().map(|p| f(p).accuracy).collect::<Vec<_>>()),
                mean_std(&fits.iter().map(|p| f(p).log_loss).collect::<Vec<_>>()),
            ]
        };
        let crossed: Vec<Score> = results
            .iter()
            .filter_map(|r| r.cross_fitted.as_ref().map(|c| c.score))
            .collect();
        PriorSummary {
            image: of(|p| p.image),
            months: of(|p| p.months),
            bayes: of(|p| p.bayes),
            fitted: of(|p| p.fitted),
            cross_fitted: (crossed.len() == fits.len()).then(|| {
                [
                    mean_std(&crossed.iter().map(|s| s.accuracy).collect::<Vec<_>>()),
                    mean_std(&crossed.iter().map(|s| s.log_loss).collect::<Vec<_>>()),
                ]
            }),
        }
    });
    let open_set = OpenSetSummary::of(&results);
    let report = CvReport {
        config: config.clone(),
        folds: results,
        mean_accuracy,
        std_accuracy,
        mean_log_loss,
        std_log_loss,
        prior,
        open_set,
        skipped: skipped.len(),
    };
    files::write_json(&config.out.join("cv.json"), &report)?;
    Ok(report)
}

/// A fold's prior and the validation photos it was fitted on.
struct Evidence {
    prior: Prior,
    probabilities: Vec<Vec<f32>>,
    contexts: Vec<Context>,
    labels: Vec<usize>,
}

impl Evidence {
    fn labelled(&self) -> Labelled<'_> {
        Labelled {
            probabilities: &self.probabilities,
            contexts: &self.contexts,
            labels: &self.labels,
        }
    }
}

/// Scores each fold with the prior's weights fitted on the other folds' validation photos
/// (each adjusted by its own fold's prior), when every fold has a prior and at least two do.
fn cross_fit(results: &mut [FoldResult], evidence: &[Option<Evidence>]) {
    let Some(evidence) = evidence
        .iter()
        .map(Option::as_ref)
        .collect::<Option<Vec<_>>>()
    else {
        return;
    };
    if evidence.len() < 2 {
        return;
    }
    let labelled: Vec<Labelled> = evidence.iter().map(|e| e.labelled()).collect();
    for (k, result) in results.iter_mut().enumerate() {
        let others: Vec<(&Prior, &Labelled)> = evidence
            .iter()
            .zip(&labelled)
            .enumerate()
            .filter(|(j, _)| *j != k)
            .map(|(_, (e, l))| (&e.prior, l))
            .collect();
        let weights = best_weights(&others);
        result.cross_fitted = Some(CrossFitted {
            weights,
            score: evidence[k].prior.score(&labelled[k], weights),
        });
    }
}

/// The report as a table: one row per fold, then mean ± standard deviation.
pub fn render_table(report: &CvReport) -> String {
    use std::fmt::Write;
    let open_set = report.open_set.is_some();
    let mut s = String::from("fold  train  validation  accuracy  log loss");
    if open_set {
        s.push_str("  right names agree  unknown: AUROC    pass  agrees");
    }
    s.push('\n');
    for f in &report.folds {
        let _ = write!(
            s,
            "{:>4}  {:>5}  {:>10}  {:>8.4}  {:>8.4}",
            f.fold, f.train_photos, f.validation_photos, f.accuracy, f.log_loss
        );
        if let Some((o, u)) = f
            .open_set
            .as_ref()
            .and_then(|o| Some((o, o.unknown.as_ref()?)))
            .filter(|_| open_set)
        {
            let auroc = u.auroc.map_or("-".into(), |a| format!("{a:.4}"));
            let _ = write!(
                s,
                "  {:>16.1}%  {auroc:>14}  {:>5.1}%  {:>5.1}%",
                100.0 * o.in_set.right_names_agree,
                100.0 * u.passed,
                100.0 * u.agrees
            );
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "mean accuracy {:.4} ± {:.4}, log loss {:.4} ± {:.4} over {} folds",
        report.mean_accuracy,
        report.std_accuracy,
        report.mean_log_loss,
        report.std_log_loss,
        report.folds.len()
    );
    if let Some(o) = &report.open_set {
        let percent = |(m, sd): (f64, f64)| format!("{:.1}% ± {:.1}", 100.0 * m, 100.0 * sd);
        let _ = writeln!(
            s,
            "unknown photos: AUROC {:.4} ± {:.4}, pass {}, agrees as the top species {}; right names that agree {}",
            o.auroc.0,
            o.auroc.1,
            percent(o.passed),
            percent(o.agrees),
            percent(o.right_names_agree)
        );
    }
    if let Some(p) = &report.prior {
        s.push_str("date and place prior (calibrated)      accuracy           log loss\n");
        for (name, [a, l]) in [
            ("the photo alone", p.image),
            ("months, weight fitted", p.months),
            ("months and latitude, weights 1", p.bayes),
            ("months and latitude, weights fitted", p.fitted),
        ]
        .into_iter()
        .chain(
            p.cross_fitted
                .map(|c| ("the same, fitted on the other folds", c)),
        ) {
            let _ = writeln!(
                s,
                "{name:<38} {:.4} ± {:.4}    {:.4} ± {:.4}",
                a.0, a.1, l.0, l.1
            );
        }
    }
    s
}

/// Where the report goes.
pub fn report_path(config: &CvConfig) -> PathBuf {
    Path::new(&config.out).join("cv.json")
}
