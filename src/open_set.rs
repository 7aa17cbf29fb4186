//! How well a model's unknown-ness score does: on photos of its own species (named rightly and
//! wrongly, as records would be) and on photos of species it never saw. `evaluate --unknown`,
//! `train --unknown` and `cv --unknown` report these figures, so that a model is judged on what
//! it knows and on what it does not at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dataset::Species;
use crate::metrics;
use crate::names::Claim;
use crate::novelty::Novelty;
use crate::verdict::{Thresholds, Verdict, judge};

/// What the model made of one photo, as the figures need it.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// Calibrated probabilities in species order.
    pub calibrated: &'a [f32],
    pub novelty: Option<Novelty>,
}

impl Answer<'_> {
    /// Whether the photo's score passes its threshold (never for a model without one).
    fn passes(&self) -> bool {
        self.novelty.is_some_and(|n| !n.unknown)
    }

    /// Whether the photo gets `agrees` when named as the model's top species, with the score
    /// or on the probabilities alone.
    fn agrees_as_top(&self, species: &Species, thresholds: &Thresholds, score: bool) -> bool {
        let top = Claim::Species {
            index: metrics::argmax(self.calibrated),
        };
        let novelty = self.novelty.filter(|_| score);
        judge(self.calibrated, species, &top, thresholds, novelty.as_ref()).0 == Verdict::Agrees
    }
}

/// How the unknown-ness score does on the evaluated photos and on photos of unknown species.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenSetReport {
    pub threshold: f64,
    pub keep: f64,
    pub in_set: InSetFigures,
    pub unknown: Option<UnknownFigures>,
}

/// The evaluated photos (of known species) as records: each photo named rightly, and named as
/// each other species, with and without the unknown-ness score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FolderFigures {
    pub photos: usize,
    pub passed: f64,
    pub agrees: f64,
}

/// The share of `items` for which `test` holds.
fn share<T>(items: &[T], test: impl Fn(&T) -> bool) -> f64 {
    items.iter().filter(|i| test(i)).count() as f64 / items.len().max(1) as f64
}

/// The figures of photos of the model's own species, `labels` their species.
pub fn in_set_figures(
    answers: &[Answer],
    labels: &[usize],
    species: &Species,
    thresholds: &Thresholds,
) -> InSetFigures {
    // Every photo with every name: its own (right) and each other species' (wrong).
    let mut right = [Vec::new(), Vec::new()];
    let (mut doubts, mut wrong) = ([Vec::new(), Vec::new()], Vec::new());
    for (a, &label) in answers.iter().zip(labels) {
        for claimed in 0..species.len() {
            for (i, novelty) in [a.novelty.as_ref(), None].into_iter().enumerate() {
                let claim = Claim::Species { index: claimed };
                let (verdict, doubt) = judge(a.calibrated, species, &claim, thresholds, novelty);
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
        photos: answers.len(),
        passed: share(answers, Answer::passes),
        right_names_agree: share(&right[0], agree),
        right_names_agree_image_only: share(&right[1], agree),
        doubt_auc: metrics::roc_auc(&doubts[0], &wrong),
        doubt_auc_image_only: metrics::roc_auc(&doubts[1], &wrong),
    }
}

/// The figures of the photos at `paths` below `folder`, of species the model does not know,
/// against the photos of its own species (`in_set`).
pub fn unknown_figures(
    folder: &Path,
    paths: &[PathBuf],
    strangers: &[Answer],
    in_set: &[Answer],
    species: &Species,
    thresholds: &Thresholds,
) -> UnknownFigures {
    let scores: Vec<f32> = in_set
        .iter()
        .chain(strangers)
        .map(|a| a.novelty.map_or(f32::NAN, |n| n.score as f32))
        .collect();
    let positives: Vec<bool> = (0..scores.len()).map(|i| i >= in_set.len()).collect();
    let mut folders: BTreeMap<String, Vec<Answer>> = BTreeMap::new();
    for (path, a) in paths.iter().zip(strangers) {
        let relative = path.strip_prefix(folder).unwrap_or(path);
        let name = match relative.parent().and_then(|p| p.components().next()) {
            Some(first) => first.as_os_str().to_string_lossy().into_owned(),
            None => ".".to_string(),
        };
        folders.entry(name).or_default().push(*a);
    }
    let agrees = |a: &Answer| a.agrees_as_top(species, thresholds, true);
    UnknownFigures {
        folder: folder.to_path_buf(),
        photos: strangers.len(),
        auroc: metrics::roc_auc(&scores, &positives),
        passed: share(strangers, Answer::passes),
        agrees: share(strangers, agrees),
        agrees_image_only: share(strangers, |a| a.agrees_as_top(species, thresholds, false)),
        by_folder: folders
            .into_iter()
            .map(|(name, answers)| {
                let figures = FolderFigures {
                    photos: answers.len(),
                    passed: share(&answers, Answer::passes),
                    agrees: share(&answers, agrees),
                };
                (name, figures)
            })
            .collect(),
    }
}

/// The figures as text, for a terminal.
pub fn render(o: &OpenSetReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let percent = |share: f64| format!("{:.1}%", 100.0 * share);
    let auc = |auc: Option<f64>| auc.map_or("-".to_string(), |a| format!("{a:.4}"));
    let i = &o.in_set;
    let _ = writeln!(
        s,
        "unknown-ness (threshold {:.4}, set to keep {} of the validation photos)",
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
    let Some(u) = &o.unknown else {
        return s;
    };
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
    s
}
