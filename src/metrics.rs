//! Classification metrics from per-species probabilities and true labels: accuracy, log loss,
//! per-species precision/recall/F1, the confusion matrix and ROC AUC.

use serde::{Deserialize, Serialize};

use crate::dataset::Species;

/// Probabilities are clipped to [EPS, 1 - EPS] in the log loss, as Keras does.
const EPS: f64 = 1e-7;

/// The index of the largest probability (the first one on ties).
pub fn argmax(probabilities: &[f32]) -> usize {
    let mut best = 0;
    for (i, &p) in probabilities.iter().enumerate() {
        if p > probabilities[best] {
            best = i;
        }
    }
    best
}

/// The share of photos whose most probable species is the true one.
pub fn accuracy(probabilities: &[Vec<f32>], labels: &[usize]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    let correct = probabilities
        .iter()
        .zip(labels)
        .filter(|(p, l)| argmax(p) == **l)
        .count();
    correct as f64 / labels.len() as f64
}

/// Mean negative log probability of the true species (cross-entropy).
pub fn log_loss(probabilities: &[Vec<f32>], labels: &[usize]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    let total: f64 = probabilities
        .iter()
        .zip(labels)
        .map(|(p, &l)| -(p[l] as f64).clamp(EPS, 1.0 - EPS).ln())
        .sum();
    total / labels.len() as f64
}

/// Area under the ROC curve of `scores` for `positives`, with ties counted as half
/// (the Mann-Whitney U statistic). `None` when one of the two groups is empty.
pub fn roc_auc(scores: &[f32], positives: &[bool]) -> Option<f64> {
    let n_pos = positives.iter().filter(|&&p| p).count();
    let n_neg = positives.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Average ranks (1-based) over runs of equal scores.
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_pos += avg_rank * order[i..=j].iter().filter(|&&k| positives[k]).count() as f64;
        i = j + 1;
    }
    let u = rank_sum_pos - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos * n_neg) as f64)
}

/// Precision, recall and F1 of one species.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeciesScores {
    pub species: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Photos of this species in the evaluated set.
    pub support: usize,
}

/// All metrics of a model on a labelled set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluation {
    pub photos: usize,
    pub accuracy: f64,
    pub log_loss: f64,
    /// For two species, the AUC of the second species' probability; for more, the mean of the
    /// one-vs-rest AUCs of the species present.
    pub roc_auc: Option<f64>,
    pub macro_f1: f64,
    pub per_species: Vec<SpeciesScores>,
    /// `confusion[true][predicted]` counts, in species order.
    pub confusion: Vec<Vec<usize>>,
    pub species: Vec<String>,
}

impl Evaluation {
    /// Computes every metric. `probabilities[i]` has one entry per species.
    pub fn compute(probabilities: &[Vec<f32>], labels: &[usize], species: &Species) -> Self {
        let k = species.len();
        let mut confusion = vec![vec![0usize; k]; k];
        for (p, &l) in probabilities.iter().zip(labels) {
            confusion[l][argmax(p)] += 1;
        }
        let per_species: Vec<SpeciesScores> = (0..k)
            .map(|c| {
                let tp = confusion[c][c] as f64;
                let predicted: usize = confusion.iter().map(|row| row[c]).sum();
                let support: usize = confusion[c].iter().sum();
                let precision = ratio(tp, predicted as f64);
                let recall = ratio(tp, support as f64);
                SpeciesScores {
                    species: species.name(c).to_string(),
                    precision,
                    recall,
                    f1: ratio(2.0 * precision * recall, precision + recall),
                    support,
                }
            })
            .collect();
        let present: Vec<&SpeciesScores> = per_species.iter().filter(|s| s.support > 0).collect();
        let macro_f1 = if present.is_empty() {
            0.0
        } else {
            present.iter().map(|s| s.f1).sum::<f64>() / present.len() as f64
        };
        let auc_of = |c: usize| {
            let scores: Vec<f32> = probabilities.iter().map(|p| p[c]).collect();
            let positives: Vec<bool> = labels.iter().map(|&l| l == c).collect();
            roc_auc(&scores, &positives)
        };
        let roc_auc = if k == 2 {
            auc_of(1)
        } else {
            let aucs: Vec<f64> = (0..k).filter_map(auc_of).collect();
            (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64)
        };
        Evaluation {
            photos: labels.len(),
            accuracy: accuracy(probabilities, labels),
            log_loss: log_loss(probabilities, labels),
            roc_auc,
            macro_f1,
            per_species,
            confusion,
            species: species.names().to_vec(),
        }
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ties_as_half_and_orders_correctly() {
        assert_eq!(
            roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            Some(0.75)
        );
        assert_eq!(roc_auc(&[0.5, 0.5], &[false, true]), Some(0.5));
        assert_eq!(roc_auc(&[0.2, 0.9], &[true, true]), None);
    }

    #[test]
    fn scores_follow_the_confusion_matrix() {
        let species = Species::new(vec!["a".into(), "b".into()]);
        let probs = vec![
            vec![0.9, 0.1],
            vec![0.6, 0.4],
            vec![0.3, 0.7],
            vec![0.2, 0.8],
        ];
        let labels = [0, 1, 1, 0];
        let e = Evaluation::compute(&probs, &labels, &species);
        assert_eq!(e.confusion, vec![vec![1, 1], vec![1, 1]]);
        assert_eq!(e.accuracy, 0.5);
        assert_eq!(e.per_species[0].precision, 0.5);
        assert_eq!(e.per_species[1].recall, 0.5);
        let expected_loss = -(0.9f64.ln() + 0.4f64.ln() + 0.7f64.ln() + 0.2f64.ln()) / 4.0;
        assert!((e.log_loss - expected_loss).abs() < 1e-6);
    }

    #[test]
    fn three_species_give_macro_f1_and_one_vs_rest_auc_as_by_hand() {
        let species = Species::new(vec!["a".into(), "b".into(), "c".into()]);
        let probs: Vec<Vec<f32>> = vec![
            vec![0.7, 0.2, 0.1], // a, predicted a
            vec![0.5, 0.4, 0.1], // a, predicted a
            vec![0.2, 0.6, 0.2], // b, predicted b
            vec![0.6, 0.3, 0.1], // b, predicted a
            vec![0.1, 0.2, 0.7], // c, predicted c
            vec![0.3, 0.3, 0.4], // c, predicted c
        ];
        let labels = [0, 0, 1, 1, 2, 2];
        let e = Evaluation::compute(&probs, &labels, &species);
        assert_eq!(
            e.confusion,
            vec![vec![2, 0, 0], vec![1, 1, 0], vec![0, 0, 2]]
        );
        // F1: a = 2·(2/3)·1 / (2/3 + 1) = 0.8, b = 2·1·(1/2) / 1.5 = 2/3, c = 1.
        let macro_f1 = (0.8 + 2.0 / 3.0 + 1.0) / 3.0;
        assert!((e.macro_f1 - macro_f1).abs() < 1e-12, "{}", e.macro_f1);
        // One vs rest, by counting the (positive, negative) pairs ranked right (ties half):
        // a: scores of a 0.7, 0.5 against 0.2, 0.6, 0.1, 0.3: 4 + 3 = 7 of 8.
        // b: 0.6, 0.3 against 0.2, 0.4, 0.2, 0.3: 4 + (2 + 0.5) = 6.5 of 8.
        // c: 0.7, 0.4 against 0.1, 0.1, 0.2, 0.1: 8 of 8.
        let auc = (7.0 / 8.0 + 6.5 / 8.0 + 1.0) / 3.0;
        assert!((e.roc_auc.unwrap() - auc).abs() < 1e-12, "{:?}", e.roc_auc);
    }
}
