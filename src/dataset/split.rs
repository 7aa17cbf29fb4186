//! Seeded, stratified train/validation splits: each species keeps its share in both parts.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::folder::Photo;
use crate::{Error, Result};

/// Photos divided into a training and a validation part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<Photo>,
    pub validation: Vec<Photo>,
}

/// Puts `fraction` of each species' photos (rounded, at least one of each species with two or
/// more photos) in the validation part. The same photos and seed give the same split.
pub fn stratified_split(
    photos: &[Photo],
    classes: usize,
    fraction: f64,
    seed: u64,
) -> Result<Split> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(Error::invalid(
            "validation-split",
            fraction,
            "a fraction between 0 and 1 exclusive, e.g. 0.2",
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut split = Split {
        train: Vec::new(),
        validation: Vec::new(),
    };
    for class in 0..classes {
        let mut members: Vec<&Photo> = photos.iter().filter(|p| p.label == class).collect();
        members.shuffle(&mut rng);
        let n = members.len();
        let n_val = if n < 2 {
            0
        } else {
            ((n as f64 * fraction).round() as usize).clamp(1, n - 1)
        };
        let (val, train) = members.split_at(n_val);
        split.validation.extend(val.iter().map(|p| (*p).clone()));
        split.train.extend(train.iter().map(|p| (*p).clone()));
    }
    split
        .train
        .sort_by(|a, b| (a.label, &a.path).cmp(&(b.label, &b.path)));
    split
        .validation
        .sort_by(|a, b| (a.label, &a.path).cmp(&(b.label, &b.path)));
    Ok(split)
}

/// Assigns the photos with these `labels` to `k` folds, each species spread evenly over them
/// after a seeded shuffle; returns the photo indices of each fold.
pub fn stratified_folds(
    labels: &[usize],
    classes: usize,
    k: usize,
    seed: u64,
) -> Result<Vec<Vec<usize>>> {
    if k < 2 {
        return Err(Error::invalid("folds", k, "at least 2"));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut folds = vec![Vec::new(); k];
    for class in 0..classes {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        if members.len() < k {
            return Err(Error::invalid(
                "folds",
                k,
                format!(
                    "at most the number of photos of the smallest species ({} of class {class}); use fewer folds or add photos",
                    members.len()
                ),
            ));
        }
        members.shuffle(&mut rng);
        for (i, m) in members.into_iter().enumerate() {
            folds[i % k].push(m);
        }
    }
    for fold in &mut folds {
        fold.sort_unstable();
    }
    Ok(folds)
}
