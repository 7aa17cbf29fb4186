//! Unknown-ness: does a photo show one of the species the model was trained on at all?
//!
//! A classifier must name one of its species, and on photos of other species it names one with
//! confidence (its probabilities say nothing here). The score instead measures how far a photo's
//! features (what the model's last layer sees, L2-normalised) lie from the training photos':
//! the Mahalanobis distance to the nearest species' mean under one covariance shared by all
//! species, shrunk towards a multiple of the identity because a few hundred photos cannot fill a
//! covariance of 1280 dimensions. Each feature is first raised to the power 1/4 (the features
//! are pooled activations, never negative), which evens out the few large ones that otherwise
//! decide every distance. With photos of other species or of no butterfly
//! (`train --others`), their mean is one more class under the same covariance and the score
//! becomes the distance to the nearest species minus the distance to the others: a photo that
//! looks like the others scores higher. The threshold is the score that `keep` of the
//! validation photos stay below.
//!
//! The statistics are saved as `novelty.safetensors` (`means`: the whitened class means, the
//! others' last; `whitening`: the matrix that turns a covariance distance into a Euclidean one);
//! what they were fitted on, the threshold and the validation photos' scores are in
//! `model.json`.

use std::collections::HashMap;
use std::path::Path;

use gemm::{Parallelism, gemm};
use rayon::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, files};

/// The share of the covariance replaced by a scaled identity. The open-set study (README)
/// found AUROC within 0.004 for every value from 0.5 to 1.
pub const SHRINKAGE: f64 = 0.9;

/// The power each feature is raised to before L2 normalisation. The study found AUROC 0.948 with
/// the features as they are, 0.967 with their square roots, 0.969 with this.
pub const POWER: f32 = 0.25;

/// The name of the score in `model.json`.
pub const METHOD: &str = "mahalanobis-shared-covariance";

/// Fitted statistics of the unknown-ness score.
#[derive(Debug, Clone, PartialEq)]
pub struct Detector {
    dim: usize,
    /// The model's species; with others, one more row follows them in `means`.
    classes: usize,
    others: bool,
    /// Whitened means, `[classes (+ 1), dim]`.
    means: Vec<f32>,
    /// `[dim, dim]`: for a feature row x, |x W - m W|² is the shrunk covariance distance.
    whitening: Vec<f32>,
}

/// What `model.json` records of the score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoveltyCard {
    pub method: String,
    /// What the features are: those the head sees, or for a fine-tuned network with an
    /// ImageNet tail the ones its ImageNet weights give.
    #[serde(default = "head_features")]
    pub features: String,
    /// Feature dimensions (the head's input).
    pub dimensions: usize,
    pub power: f64,
    pub shrinkage: f64,
    /// Feature rows the species' statistics came from (training photos and augmented copies).
    pub train_features: usize,
    /// Photos of other species or of no butterfly (`--others`); 0 without.
    pub others: usize,
    /// The share of validation photos that pass, by which the threshold was set.
    pub keep: f64,
    /// Photos scoring above this are `unknown`.
    pub threshold: f64,
    /// The validation photos' scores, sorted: a new score's p-value among them.
    pub validation_scores: Vec<f32>,
}

/// What every score was fitted on before models could keep an ImageNet tail.
pub const HEAD_FEATURES: &str = "the pooled features the head sees";

fn head_features() -> String {
    HEAD_FEATURES.into()
}

/// The unknown-ness of one photo.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Novelty {
    pub score: f64,
    pub threshold: f64,
    /// Above the threshold: not one of the species this model knows.
    pub unknown: bool,
    /// The share of validation photos (of known species) scoring at least as high, counting
    /// this photo among them: small for a photo unlike every known species.
    pub p_value: f64,
    /// How much of the claimed species' probability stands when ranking records: 1 up to the
    /// threshold, beyond it the p-value as a share of the validation photos left out
    /// (`p_value / (1 - keep)`), down to about a tenth for a photo beyond them all.
    pub weight: f64,
}

impl NoveltyCard {
    /// The unknown-ness of a photo with `score`.
    pub fn judge(&self, score: f32) -> Novelty {
        let scores = &self.validation_scores;
        let below = scores.partition_point(|&s| s < score);
        let p_value = (scores.len() - below + 1) as f64 / (scores.len() + 1) as f64;
        // A score that is not a number (features that overflowed) is no known species either.
        let unknown = score.is_nan() || score as f64 > self.threshold;
        Novelty {
            score: score as f64,
            threshold: self.threshold,
            unknown,
            p_value,
            weight: if unknown {
                (p_value / (1.0 - self.keep)).min(1.0)
            } else {
                1.0
            },
        }
    }

    /// Checks the fields a reader relies on.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(self.keep > 0.0 && self.keep < 1.0) {
            return Err(format!("novelty.keep {} is not between 0 and 1", self.keep));
        }
        if !self.threshold.is_finite() {
            return Err("novelty.threshold is not a finite number".into());
        }
        if self.validation_scores.is_empty()
            || self.validation_scores.iter().any(|s| !s.is_finite())
            || !self.validation_scores.is_sorted()
        {
            return Err("novelty.validation_scores must be finite and sorted".into());
        }
        Ok(())
    }
}

/// The score above which `keep` of `scores` lie at or below (the empirical quantile).
pub fn threshold(scores: &[f32], keep: f64) -> f64 {
    let mut sorted = scores.to_vec();
    sorted.sort_by(f32::total_cmp);
    let index = ((keep * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index] as f64
}

/// Rows with each value raised to [`POWER`] (negative ones as 0), then scaled to unit length
/// (a zero row stays zero).
fn normalised(rows: &[f32], dim: usize) -> Vec<f32> {
    let mut out: Vec<f32> = rows.iter().map(|v| v.max(0.0).powf(POWER)).collect();
    out.par_chunks_mut(dim).for_each(|row| {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    });
    out
}

/// `[m, k] x [k, n]`, row-major.
fn matmul(lhs: &[f32], rhs: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    // SAFETY: the slices hold m*k, k*n and m*n values, row-major; `out` aliases neither.
    unsafe {
        gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::Rayon(0),
        );
    }
    out
}

/// The lower-triangular Cholesky factor of the symmetric positive definite `[d, d]` matrix.
fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; d * d];
    for j in 0..d {
        let diagonal = a[j * d + j] - l[j * d..j * d + j].iter().map(|v| v * v).sum::<f64>();
        // NaN fails this too.
        if diagonal.is_nan() || diagonal <= 0.0 {
            return None;
        }
        let pivot = diagonal.sqrt();
        l[j * d + j] = pivot;
        let (done, rest) = l.split_at_mut((j + 1) * d);
        let row_j = &done[j * d..j * d + j];
        rest.par_chunks_mut(d).enumerate().for_each(|(r, row)| {
            let i = j + 1 + r;
            let dot: f64 = row[..j].iter().zip(row_j).map(|(a, b)| a * b).sum();
            row[j] = (a[i * d + j] - dot) / pivot;
        });
    }
    Some(l)
}

/// `(L⁻¹)ᵀ` for a lower-triangular `L`, so that |x (L⁻¹)ᵀ|² = x (L Lᵀ)⁻¹ xᵀ.
fn inverse_transposed(l: &[f64], d: usize) -> Vec<f64> {
    // Column c of L⁻¹ solves L y = e_c by forward substitution; it is row c of the result.
    let mut out = vec![0f64; d * d];
    out.par_chunks_mut(d).enumerate().for_each(|(c, y)| {
        y[c] = 1.0 / l[c * d + c];
        for i in c + 1..d {
            let dot: f64 = (c..i).map(|k| l[i * d + k] * y[k]).sum();
            y[i] = -dot / l[i * d + i];
        }
    });
    out
}

impl Detector {
    /// Fits the statistics on feature rows `train` (`dim` values each) labelled with
    /// `classes` species, and on rows of other photos if there are any.
    pub fn fit(
        train: &[f32],
        labels: &[usize],
        classes: usize,
        dim: usize,
        others: Option<&[f32]>,
    ) -> Result<Self> {
        let train = normalised(train, dim);
        let others = others.map(|o| normalised(o, dim));
        let groups = classes + usize::from(others.is_some());
        let mut rows: Vec<(&[f32], usize)> = train
            .chunks_exact(dim)
            .zip(labels.iter().copied())
            .collect();
        if let Some(o) = &others {
            rows.extend(o.chunks_exact(dim).map(|row| (row, classes)));
        }
        let mut sums = vec![0f64; groups * dim];
        let mut counts = vec![0usize; groups];
        for (row, group) in &rows {
            counts[*group] += 1;
            for (s, v) in sums[group * dim..(group + 1) * dim].iter_mut().zip(*row) {
                *s += *v as f64;
            }
        }
        if let Some(empty) = counts.iter().position(|&c| c == 0) {
            return Err(Error::invalid(
                "novelty",
                format!("group {empty}"),
                "every species needs training photos for the unknown-ness score",
            ));
        }
        let means: Vec<f64> = sums
            .chunks_exact(dim)
            .zip(&counts)
            .flat_map(|(s, &c)| s.iter().map(move |v| v / c as f64))
            .collect();
        // The shared covariance of the residuals from each group's mean.
        let residuals: Vec<f32> = rows
            .par_iter()
            .flat_map_iter(|(row, group)| {
                let mean = &means[group * dim..(group + 1) * dim];
                row.iter().zip(mean).map(|(v, m)| (*v as f64 - m) as f32)
            })
            .collect();
        let n = rows.len();
        let transposed: Vec<f32> = (0..dim)
            .into_par_iter()
            .flat_map_iter(|c| residuals.chunks_exact(dim).map(move |row| row[c]))
            .collect();
        let covariance = matmul(&transposed, &residuals, dim, n, dim);
        let trace: f64 = (0..dim)
            .map(|i| covariance[i * dim + i] as f64)
            .sum::<f64>()
            / n as f64;
        let ridge = SHRINKAGE * trace / dim as f64;
        let shrunk: Vec<f64> = covariance
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let c = (1.0 - SHRINKAGE) * c as f64 / n as f64;
                if i / dim == i % dim { c + ridge } else { c }
            })
            .collect();
        let factor = cholesky(&shrunk, dim).ok_or_else(|| {
            Error::invalid(
                "novelty",
                "covariance",
                "the training photos' features are degenerate (all alike); train on more varied photos",
            )
        })?;
        let whitening: Vec<f32> = inverse_transposed(&factor, dim)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let means: Vec<f32> = means.iter().map(|&v| v as f32).collect();
        let detector = Detector {
            dim,
            classes,
            others: others.is_some(),
            means: matmul(&means, &whitening, groups, dim, dim),
            whitening,
        };
        detector.check_finite()?;
        Ok(detector)
    }

    /// The score of each feature row: higher is less like the known species.
    pub fn scores(&self, features: &[f32]) -> Vec<f32> {
        let n = features.len() / self.dim;
        let whitened = matmul(
            &normalised(features, self.dim),
            &self.whitening,
            n,
            self.dim,
            self.dim,
        );
        whitened
            .par_chunks_exact(self.dim)
            .map(|z| {
                let distance = |group: usize| -> f32 {
                    let mean = &self.means[group * self.dim..(group + 1) * self.dim];
                    z.iter().zip(mean).map(|(a, b)| (a - b) * (a - b)).sum()
                };
                let nearest = (0..self.classes)
                    .map(distance)
                    .fold(f32::INFINITY, f32::min);
                if self.others {
                    nearest - distance(self.classes)
                } else {
                    nearest
                }
            })
            .collect()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    fn check_finite(&self) -> Result<()> {
        if self
            .means
            .iter()
            .chain(&self.whitening)
            .all(|v| v.is_finite())
        {
            Ok(())
        } else {
            Err(Error::invalid(
                "novelty",
                "statistics",
                "not finite; the network's features overflowed, retrain with a lower learning rate",
            ))
        }
    }

    /// Writes the statistics as safetensors.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes =
            |values: &[f32]| -> Vec<u8> { values.iter().flat_map(|v| v.to_le_bytes()).collect() };
        let (means, whitening) = (bytes(&self.means), bytes(&self.whitening));
        let groups = self.means.len() / self.dim;
        let tensors = [
            (
                "means",
                TensorView::new(Dtype::F32, vec![groups, self.dim], &means),
            ),
            (
                "whitening",
                TensorView::new(Dtype::F32, vec![self.dim, self.dim], &whitening),
            ),
        ]
        .into_iter()
        .map(|(name, view)| view.map(|v| (name, v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::output(path, e))?;
        let metadata = HashMap::from([
            ("method".to_string(), METHOD.to_string()),
            ("others".to_string(), self.others.to_string()),
        ]);
        let serialised =
            safetensors::serialize(tensors, Some(metadata)).map_err(|e| Error::output(path, e))?;
        files::write_atomic(path, &crate::trained::directory::sorted_header(serialised))
    }

    /// Reads statistics written by [`Detector::save`] for a model of `classes` species whose
    /// features have `dim` values, with or without others.
    pub fn load(path: &Path, classes: usize, dim: usize, others: bool) -> Result<Self> {
        let corrupt = |reason: String| Error::ModelCorrupt {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| corrupt(format!("cannot read it: {e}")))?;
        let tensors = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| corrupt(format!("not safetensors: {e}")))?;
        let read = |name: &str, shape: [usize; 2]| -> Result<Vec<f32>> {
            let view = tensors
                .tensor(name)
                .map_err(|e| corrupt(format!("no tensor {name:?}: {e}")))?;
            if view.dtype() != Dtype::F32 || view.shape() != shape {
                return Err(corrupt(format!(
                    "{name} is {:?} {:?}, expected F32 {shape:?}",
                    view.dtype(),
                    view.shape()
                )));
            }
            Ok(view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let groups = classes + usize::from(others);
        let detector = Detector {
            dim,
            classes,
            others,
            means: read("means", [groups, dim])?,
            whitening: read("whitening", [dim, dim])?,
        };
        detector
            .check_finite()
            .map_err(|_| corrupt("its statistics are not finite numbers".into()))?;
        Ok(detector)
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// `n` rows around `centre` with independent noise of `spread`.
    fn cloud(rng: &mut ChaCha8Rng, centre: &[f32], n: usize, spread: f32) -> Vec<f32> {
        (0..n)
            .flat_map(|_| {
                centre
                    .iter()
                    .map(|c| c + spread * (rng.random::<f32>() - 0.5))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn axis(dim: usize, i: usize) -> Vec<f32> {
        let mut v = vec![0.3f32; dim];
        v[i] = 1.0;
        v
    }

    #[test]
    fn cholesky_and_inverse_whiten_a_known_matrix() {
        // [[4, 2], [2, 3]] = L Lᵀ with L = [[2, 0], [1, √2]].
        let l = cholesky(&[4.0, 2.0, 2.0, 3.0], 2).unwrap();
        let expected = [2.0, 0.0, 1.0, 2f64.sqrt()];
        assert!(
            l.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-12),
            "{l:?}"
        );
        // x = [1, 1]: x A⁻¹ xᵀ = (3 - 2 - 2 + 4) / 8 = 3/8.
        let w = inverse_transposed(&l, 2);
        let z = [w[0] + w[2], w[1] + w[3]];
        assert!((z[0] * z[0] + z[1] * z[1] - 0.375).abs() < 1e-12);
        assert!(
            cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none(),
            "not positive definite"
        );
    }

    #[test]
    fn photos_unlike_every_species_score_high_and_others_sharpen_the_score() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let dim = 8;
        let mut train = Vec::new();
        let mut labels = Vec::new();
        for class in 0..3 {
            train.extend(cloud(&mut rng, &axis(dim, class), 200, 0.4));
            labels.extend(std::iter::repeat_n(class, 200));
        }
        let known = Detector::fit(&train, &labels, 3, dim, None).unwrap();
        let validation: Vec<f32> = (0..3)
            .flat_map(|c| cloud(&mut rng, &axis(dim, c), 100, 0.4))
            .collect();
        let in_set = known.scores(&validation);
        let stranger = known.scores(&cloud(&mut rng, &axis(dim, 6), 100, 0.4));
        let t = threshold(&in_set, 0.95);
        let passed = in_set.iter().filter(|&&s| s as f64 <= t).count();
        assert_eq!(passed, 285, "95% of 300 validation rows pass");
        assert!(
            stranger.iter().all(|&s| s as f64 > t),
            "{stranger:?} vs {t}"
        );

        // A look-alike halfway between species 0 and axis 6 passes without others, and is
        // caught once photos like it are given as others.
        let mut between = axis(dim, 0);
        between[6] = 0.6;
        let look_alikes = cloud(&mut rng, &between, 100, 0.4);
        let others = cloud(&mut rng, &between, 200, 0.4);
        let with_others = Detector::fit(&train, &labels, 3, dim, Some(&others)).unwrap();
        let t_others = threshold(&with_others.scores(&validation), 0.95);
        let caught = |d: &Detector, t: f64| {
            d.scores(&look_alikes)
                .iter()
                .filter(|&&s| s as f64 > t)
                .count()
        };
        assert!(
            caught(&with_others, t_others) > caught(&known, t) + 20,
            "{} with others, {} without",
            caught(&with_others, t_others),
            caught(&known, t)
        );

        // Saved and read back, the statistics give the same scores; the wrong shape is refused.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("novelty.safetensors");
        with_others.save(&path).unwrap();
        let back = Detector::load(&path, 3, dim, true).unwrap();
        assert_eq!(back, with_others);
        let err = Detector::load(&path, 3, dim, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("means") && err.contains("[3, 8]"), "{err}");
    }

    #[test]
    fn the_p_value_counts_validation_scores_at_least_as_high() {
        let card = NoveltyCard {
            method: METHOD.into(),
            features: HEAD_FEATURES.into(),
            dimensions: 2,
            power: POWER as f64,
            shrinkage: SHRINKAGE,
            train_features: 10,
            others: 0,
            keep: 0.75,
            threshold: 3.0,
            validation_scores: vec![1.0, 2.0, 3.0, 4.0],
        };
        assert!(card.validate().is_ok());
        let n = card.judge(2.0);
        assert!(!n.unknown && (n.p_value - 4.0 / 5.0).abs() < 1e-12);
        assert_eq!(n.weight, 1.0);
        let far = card.judge(10.0);
        assert!(far.unknown && (far.p_value - 1.0 / 5.0).abs() < 1e-12);
        assert!((far.weight - 0.2 / 0.25).abs() < 1e-12);
        assert!(
            card.judge(f32::NAN).unknown,
            "a score that is not a number is no known species"
        );
        assert_eq!(threshold(&[4.0, 1.0, 3.0, 2.0], 0.75), 3.0);
        let bad = NoveltyCard { keep: 1.0, ..card };
        assert!(bad.validate().unwrap_err().contains("keep"));
    }
}
