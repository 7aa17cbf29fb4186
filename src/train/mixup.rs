//! Mixup: each training batch blended with a shuffled copy of itself, by one weight λ drawn per
//! batch from Beta(α, α), and the loss blended the same way between both photos' labels. It
//! keeps a network from fitting every training example exactly, which fine-tuning on a few
//! hundred photos does within a few epochs. On cached features or activations it mixes those
//! (as manifold mixup does) rather than pixels.

use burn::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution};

use crate::model;

/// A batch's blend: weight `lambda` (at least one half) on the batch as it was, the rest on
/// the examples at `partners`.
#[derive(Debug, Clone, PartialEq)]
pub struct Blend {
    pub lambda: f32,
    pub partners: Vec<usize>,
}

/// Draws the blends of one epoch's batches, seeded by the run's seed and the epoch, so that a
/// resumed run draws what an uninterrupted one would.
pub struct Mixup {
    beta: Beta<f32>,
    rng: ChaCha8Rng,
}

impl Mixup {
    /// `alpha` > 0 and finite (the configuration checks it).
    pub fn new(alpha: f32, seed: u64, epoch: usize) -> Self {
        // Salted, so that the draws are not the photo order's sequence (seeded by `seed` too).
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ u64::from_be_bytes(*b"\0\0\0mixup"));
        rng.set_stream(epoch as u64);
        Mixup {
            beta: Beta::new(alpha, alpha).expect("mixup's alpha is checked to be positive"),
            rng,
        }
    }

    /// The next batch of `n` examples' blend. λ is folded onto [0.5, 1] so that each mixed
    /// example is mostly itself and the training accuracy stays counted against its own label.
    pub fn draw(&mut self, n: usize) -> Blend {
        let lambda = self.beta.sample(&mut self.rng);
        let mut partners: Vec<usize> = (0..n).collect();
        partners.shuffle(&mut self.rng);
        Blend {
            lambda: lambda.max(1.0 - lambda),
            partners,
        }
    }
}

impl Blend {
    /// The batch `x` (examples along the first axis) blended with its partners.
    pub fn mix<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let device = x.device();
        let index: Vec<i64> = self.partners.iter().map(|&i| i as i64).collect();
        let n = index.len();
        let index = Tensor::<1, Int>::from_data(TensorData::new(index, [n]), &device);
        let partners = x.clone().select(0, index);
        x.mul_scalar(self.lambda)
            .add(partners.mul_scalar(1.0 - self.lambda))
    }

    /// The training loss of the blended batch's `logits`: λ of it against `labels`, the rest
    /// against the partners' labels (each smoothed by `smoothing`, as [`model::loss`] does).
    pub fn loss(&self, logits: Tensor<2>, labels: &[usize], smoothing: f32) -> Tensor<1> {
        let partner_labels: Vec<usize> = self.partners.iter().map(|&i| labels[i]).collect();
        model::loss(logits.clone(), labels, smoothing)
            .mul_scalar(self.lambda)
            .add(model::loss(logits, &partner_labels, smoothing).mul_scalar(1.0 - self.lambda))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Backend;

    #[test]
    fn blends_repeat_by_seed_and_epoch_and_lean_towards_the_example_itself() {
        let draws = |seed, epoch| {
            let mut mixup = Mixup::new(0.2, seed, epoch);
            (0..50).map(|_| mixup.draw(8)).collect::<Vec<_>>()
        };
        let first = draws(42, 3);
        assert_eq!(first, draws(42, 3));
        assert_ne!(first, draws(42, 4));
        assert_ne!(first, draws(43, 3));
        for blend in &first {
            assert!((0.5..=1.0).contains(&blend.lambda), "{blend:?}");
            let mut sorted = blend.partners.clone();
            sorted.sort();
            assert_eq!(sorted, (0..8).collect::<Vec<_>>());
        }
        // Beta(0.2, 0.2) puts most of its weight near 0 and 1: most batches are barely mixed,
        // some are mixed nearly half and half.
        let light = first.iter().filter(|b| b.lambda > 0.9).count();
        let heavy = first.iter().filter(|b| b.lambda < 0.7).count();
        assert!(light > 20 && heavy > 3, "{light} light, {heavy} heavy");
    }

    #[test]
    fn a_blend_mixes_inputs_and_losses_by_the_same_weight() {
        let device = Backend::Flex.device().unwrap();
        let blend = Blend {
            lambda: 0.75,
            partners: vec![2, 0, 1],
        };
        let x = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 10.0, 2.0, 20.0, 3.0, 30.0], [3, 2]),
            &device,
        );
        let mixed: Vec<f32> = blend.mix(x).into_data().try_to_vec::<f32>().unwrap();
        let want = [
            0.75 * 1.0 + 0.25 * 3.0,
            0.75 * 10.0 + 0.25 * 30.0,
            0.75 * 2.0 + 0.25 * 1.0,
            0.75 * 20.0 + 0.25 * 10.0,
            0.75 * 3.0 + 0.25 * 2.0,
            0.75 * 30.0 + 0.25 * 20.0,
        ];
        for (got, want) in mixed.iter().zip(want) {
            assert!((got - want).abs() < 1e-5, "{mixed:?}");
        }

        let logits = Tensor::<2>::from_data(
            TensorData::new(
                vec![2.0f32, 0.0, -1.0, 0.5, 1.0, 0.0, 0.0, 0.0, 3.0],
                [3, 3],
            ),
            &device,
        );
        let labels = [0, 1, 2];
        let scalar = |t: Tensor<1>| t.into_scalar::<f32>();
        let own = scalar(model::loss(logits.clone(), &labels, 0.1));
        let partners = scalar(model::loss(logits.clone(), &[2, 0, 1], 0.1));
        let mixed = scalar(blend.loss(logits, &labels, 0.1));
        assert!((mixed - (0.75 * own + 0.25 * partners)).abs() < 1e-5);
        assert!(own < partners, "the logits favour the labels as given");
    }
}
