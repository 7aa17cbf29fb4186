//! One answer from several photos of a record. Photos of one sighting show one individual, or
//! its habitat, or a hand holding it: they are not independent evidence, so their probabilities
//! are averaged (a linear pool keeps the record as sure as its photos are, where multiplying
//! them would make two photos of one butterfly count as two sightings). A photo whose
//! unknown-ness score says it shows none of the model's species (the habitat, the hand) is left
//! out as long as another photo shows one; only when every photo is unknown is the record.

use serde::{Deserialize, Serialize};

use crate::novelty::Novelty;
use crate::predict::Ranked;

/// What the model made of one of a record's photos, kept beside the record's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhotoAnswer {
    pub photo: String,
    /// The photo's own ranking (calibrated, without the date and place).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranking: Vec<Ranked>,
    pub novelty: Option<Novelty>,
    /// Whether its answer went into the record's.
    pub used: bool,
    /// Why it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    pub thumbnail: Option<Vec<u8>>,
}

/// The calibrated probabilities and unknown-ness of a record from those of its readable
/// photos (at least one), and which photos were used.
pub fn combine(photos: &[(&[f32], Option<Novelty>)]) -> (Vec<f32>, Option<Novelty>, Vec<bool>) {
    assert!(!photos.is_empty(), "a record to combine has a photo");
    let known = |n: &Option<Novelty>| n.is_none_or(|n| !n.unknown);
    let any_known = photos.iter().any(|(_, n)| known(n));
    let used: Vec<bool> = photos.iter().map(|(_, n)| !any_known || known(n)).collect();
    let chosen: Vec<&(&[f32], Option<Novelty>)> = photos
        .iter()
        .zip(&used)
        .filter(|(_, u)| **u)
        .map(|(p, _)| p)
        .collect();
    let classes = chosen[0].0.len();
    let mut mean = vec![0f32; classes];
    for (p, _) in &chosen {
        mean.iter_mut().zip(p.iter()).for_each(|(m, v)| *m += v);
    }
    mean.iter_mut().for_each(|m| *m /= chosen.len() as f32);
    // The record is as familiar as its most familiar photo used.
    let novelty = chosen
        .iter()
        .filter_map(|(_, n)| *n)
        .min_by(|a, b| a.score.total_cmp(&b.score));
    (mean, novelty, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn novelty(score: f64, unknown: bool) -> Option<Novelty> {
        Some(Novelty {
            score,
            threshold: 5.0,
            unknown,
            p_value: if unknown { 0.01 } else { 0.5 },
            weight: if unknown { 0.2 } else { 1.0 },
        })
    }

    #[test]
    fn photos_are_averaged_and_a_photo_of_no_known_species_is_left_out() {
        let wing: &[f32] = &[0.9, 0.1];
        let underside: &[f32] = &[0.7, 0.3];
        let habitat: &[f32] = &[0.1, 0.9];
        let (p, n, used) = combine(&[
            (wing, novelty(2.0, false)),
            (habitat, novelty(9.0, true)),
            (underside, novelty(3.0, false)),
        ]);
        assert_eq!(used, [true, false, true]);
        assert!(
            (p[0] - 0.8).abs() < 1e-6 && (p[1] - 0.2).abs() < 1e-6,
            "{p:?}"
        );
        assert_eq!(n.unwrap().score, 2.0);
        assert!(!n.unwrap().unknown);

        // Only when every photo is of no known species is the record unknown.
        let (_, n, used) = combine(&[(habitat, novelty(9.0, true)), (wing, novelty(6.0, true))]);
        assert_eq!(used, [true, true]);
        assert!(n.unwrap().unknown && n.unwrap().score == 6.0);

        // A model without a score averages every photo.
        let (p, n, _) = combine(&[(wing, None), (habitat, None)]);
        assert_eq!((p, n), (vec![0.5, 0.5], None));
    }
}
