//! Calibrated confidence: temperature scaling fitted on the validation photos, the expected
//! calibration error before and after, and the reliability table behind the diagram.
//!
//! The temperature works on probabilities directly: p_i^(1/T), renormalised, equals the softmax
//! (or sigmoid) of the logits divided by T, so it fits any model that outputs probabilities.

use serde::{Deserialize, Serialize};

use crate::metrics::{argmax, log_loss};

/// Probabilities are floored here before taking logarithms.
const FLOOR: f64 = 1e-12;
/// Confidence bins of the calibration error and the reliability diagram.
pub const BINS: usize = 15;

/// A fitted temperature with the calibration it achieves on the photos it was fitted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub temperature: f64,
    pub photos: usize,
    pub log_loss_before: f64,
    pub log_loss_after: f64,
    pub ece_before: f64,
    pub ece_after: f64,
    pub reliability_before: Vec<ReliabilityBin>,
    pub reliability_after: Vec<ReliabilityBin>,
}

/// One confidence bin: how many photos, their mean confidence and their accuracy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    pub low: f64,
    pub high: f64,
    pub count: usize,
    pub confidence: f64,
    pub accuracy: f64,
}

/// `probabilities` sharpened (T < 1) or softened (T > 1) by `temperature`.
pub fn apply_temperature(probabilities: &[f32], temperature: f64) -> Vec<f32> {
    let logs: Vec<f64> = probabilities
        .iter()
        .map(|&p| log(p) / temperature)
        .collect();
    from_logs(&logs)
}

/// The natural logarithm of a probability, floored so that 0 stays finite.
pub fn log(probability: f32) -> f64 {
    (probability as f64).max(FLOOR).ln()
}

/// Probabilities proportional to `exp(logs)`, summing to 1 (the largest log is subtracted
/// first, so that none overflows).
pub fn from_logs(logs: &[f64]) -> Vec<f32> {
    let top = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logs.iter().map(|l| (l - top).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}

fn scaled(probabilities: &[Vec<f32>], temperature: f64) -> Vec<Vec<f32>> {
    probabilities
        .iter()
        .map(|p| apply_temperature(p, temperature))
        .collect()
}

/// The reliability table: photos binned by their top probability.
pub fn reliability(probabilities: &[Vec<f32>], labels: &[usize]) -> Vec<ReliabilityBin> {
    let mut sums = vec![(0usize, 0.0f64, 0usize); BINS];
    for (p, &label) in probabilities.iter().zip(labels) {
        let top = argmax(p);
        let confidence = p[top] as f64;
        let bin = ((confidence * BINS as f64) as usize).min(BINS - 1);
        sums[bin].0 += 1;
        sums[bin].1 += confidence;
        sums[bin].2 += usize::from(top == label);
    }
    sums.into_iter()
        .enumerate()
        .map(|(i, (count, conf, correct))| ReliabilityBin {
            low: i as f64 / BINS as f64,
            high: (i + 1) as f64 / BINS as f64,
            count,
            confidence: if count > 0 { conf / count as f64 } else { 0.0 },
            accuracy: if count > 0 {
                correct as f64 / count as f64
            } else {
                0.0
            },
        })
        .collect()
}

/// Expected calibration error: the count-weighted gap between confidence and accuracy.
pub fn expected_calibration_error(bins: &[ReliabilityBin]) -> f64 {
    let total: usize = bins.iter().map(|b| b.count).sum();
    if total == 0 {
        return 0.0;
    }
    bins.iter()
        .map(|b| b.count as f64 * (b.accuracy - b.confidence).abs())
        .sum::<f64>()
        / total as f64
}

/// Fits the temperature that minimises the log loss of `probabilities` for `labels`, by
/// golden-section search over log T in [ln 0.05, ln 20] (the loss is unimodal in T).
pub fn fit(probabilities: &[Vec<f32>], labels: &[usize]) -> Calibration {
    let loss = |log_t: f64| log_loss(&scaled(probabilities, log_t.exp()), labels);
    let (mut a, mut b) = (0.05f64.ln(), 20f64.ln());
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - ratio * (b - a);
    let mut d = a + ratio * (b - a);
    let (mut fc, mut fd) = (loss(c), loss(d));
    while b - a > 1e-4 {
        if fc < fd {
            (b, d, fd) = (d, c, fc);
            c = b - ratio * (b - a);
            fc = loss(c);
        } else {
            (a, c, fc) = (c, d, fd);
            d = a + ratio * (b - a);
            fd = loss(d);
        }
    }
    let temperature = ((a + b) / 2.0).exp();
    let after = scaled(probabilities, temperature);
    let reliability_before = reliability(probabilities, labels);
    let reliability_after = reliability(&after, labels);
    Calibration {
        temperature,
        photos: labels.len(),
        log_loss_before: log_loss(probabilities, labels),
        log_loss_after: log_loss(&after, labels),
        ece_before: expected_calibration_error(&reliability_before),
        ece_after: expected_calibration_error(&reliability_after),
        reliability_before,
        reliability_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn temperature_one_changes_nothing_and_scaling_keeps_the_ranking() {
        let p = [0.7f32, 0.2, 0.1];
        let same = apply_temperature(&p, 1.0);
        assert!(same.iter().zip(&p).all(|(a, b)| (a - b).abs() < 1e-6));
        let soft = apply_temperature(&p, 2.0);
        assert!(soft[0] < 0.7 && soft[0] > soft[1] && soft[1] > soft[2]);
        assert!((soft.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn an_overconfident_model_is_softened_and_its_error_falls() {
        // True probability of being right is 0.75, but the model always says 0.99.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let n = 4000;
        let probs: Vec<Vec<f32>> = (0..n).map(|_| vec![0.99, 0.01]).collect();
        let labels: Vec<usize> = (0..n).map(|_| usize::from(rng.random_bool(0.25))).collect();
        let c = fit(&probs, &labels);
        assert!(c.temperature > 1.0, "{}", c.temperature);
        let calibrated = apply_temperature(&[0.99, 0.01], c.temperature);
        assert!((calibrated[0] - 0.75).abs() < 0.03, "{calibrated:?}");
        assert!(
            c.ece_before > 0.2 && c.ece_after < 0.03,
            "{} -> {}",
            c.ece_before,
            c.ece_after
        );
        assert!(c.log_loss_after < c.log_loss_before);
    }
}
