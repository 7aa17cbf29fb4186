//! The training batches of one epoch, built on a worker thread ahead of the training step:
//! photos in the epoch's order, each augmented with a fresh draw (or not), laid out as the
//! network's input. A bounded channel keeps a few batches ready and memory bounded.

use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::Scope;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::augment::{AugmentParams, Image};
use crate::dataset::PhotoSet;
use crate::model::input;

/// Batches built ahead of the one being trained on.
const PREFETCH: usize = 4;

/// One batch: `labels.len()` photos as normalised CHW planes.
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<usize>,
}

/// Keeps the augmentation's random stream apart from the shuffling's for the same seed.
const AUGMENT_SALT: u64 = 0xA076_1D64_78BD_642F;

/// The generator of photo `index`'s augmentation in `epoch`: the same draw whatever the order,
/// threads or resumption.
pub fn augment_rng(seed: u64, epoch: usize, index: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ AUGMENT_SALT);
    rng.set_stream(((epoch as u64) << 32) | index as u64);
    rng
}

/// What one epoch's batches are made of.
pub struct BatchPlan<'a> {
    /// Photo indices in the order they are seen.
    pub order: Vec<usize>,
    pub batch_size: usize,
    /// `None` trains on the photos as they are.
    pub augment: Option<&'a AugmentParams>,
    pub norm: input::Normalisation,
    pub seed: u64,
    pub epoch: usize,
}

/// Starts building the batches of `plan` from `set` on a thread of `scope`.
pub fn spawn<'scope, 'env>(
    scope: &'scope Scope<'scope, 'env>,
    set: &'env PhotoSet,
    plan: BatchPlan<'env>,
) -> Receiver<Batch> {
    let (sender, receiver) = sync_channel(PREFETCH);
    scope.spawn(move || {
        let BatchPlan {
            order,
            batch_size,
            augment,
            norm,
            seed,
            epoch,
        } = plan;
        for chunk in order.chunks(batch_size) {
            let images = layout(set, chunk, augment.map(|a| (a, seed, epoch)), norm);
            let labels = chunk.iter().map(|&i| set.labels[i]).collect();
            if sender.send(Batch { images, labels }).is_err() {
                return; // the training loop stopped early
            }
        }
    });
    receiver
}

/// The photos at `indices` laid out as normalised CHW planes, in parallel; with `augment`
/// (parameters, seed, epoch) each gets its own seeded draw first.
pub fn layout(
    set: &PhotoSet,
    indices: &[usize],
    augment: Option<(&AugmentParams, u64, usize)>,
    norm: input::Normalisation,
) -> Vec<f32> {
    let side = set.size as usize;
    let per_photo = 3 * side * side;
    let mut images = vec![0f32; indices.len() * per_photo];
    images
        .par_chunks_mut(per_photo)
        .zip(indices.par_iter())
        .for_each_init(
            || vec![0f32; per_photo],
            |scratch, (out, &index)| {
                let pixels = set.pixels(index);
                match augment {
                    Some((params, seed, epoch)) => {
                        let mut rng = augment_rng(seed, epoch, index);
                        let transform = params.draw(side, side, &mut rng);
                        let image = Image {
                            pixels,
                            rows: side,
                            cols: side,
                        };
                        transform.apply(image, scratch);
                        input::write_planar(scratch, out, norm);
                    }
                    None => input::write_planar(pixels, out, norm),
                }
            },
        );
    images
}
