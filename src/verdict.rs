//! The verdict on one record: does the photo agree with the species the volunteer named?

use serde::{Deserialize, Serialize};

use crate::dataset::Species;
use crate::metrics::argmax;
use crate::names::Claim;
use crate::novelty::Novelty;
use crate::{Error, Result};

/// The two thresholds on the calibrated probability of the claimed species.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// At or above this probability of the claimed species, the photo agrees.
    pub agree: f64,
    /// At or below this probability of the claimed species, the photo disagrees.
    pub disagree: f64,
    /// With a model that has a date and place prior: a claimed species with less than this
    /// share of its records in the record's month (or latitude band) is flagged "outside its
    /// flight period" ("outside its known range"), whatever the photo shows.
    #[serde(default = "default_rare_below")]
    pub rare_below: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            agree: 0.9,
            disagree: 0.2,
            rare_below: 0.01,
        }
    }
}

fn default_rare_below() -> f64 {
    Thresholds::default().rare_below
}

impl Thresholds {
    pub fn validate(&self) -> Result<()> {
        if !(0.0 <= self.disagree && self.disagree < self.agree && self.agree <= 1.0) {
            return Err(Error::invalid(
                "thresholds",
                format!("agree {} / disagree {}", self.agree, self.disagree),
                "0 <= --disagree < --agree <= 1, e.g. --agree 0.9 --disagree 0.2",
            ));
        }
        if !(0.0..1.0).contains(&self.rare_below) {
            return Err(Error::invalid(
                "rare-below",
                self.rare_below,
                "a share between 0 and 1, e.g. 0.01 (1% of the species' records)",
            ));
        }
        Ok(())
    }
}

/// The least doubt of a record whose photo is `unknown`: as likely wrong as right, so such
/// records rank above every one that agrees.
pub const UNKNOWN_DOUBT: f64 = 0.5;

/// What vlinder says about a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The claimed species is probable enough.
    Agrees,
    /// The claimed species is improbable; `predicted` is the model's most probable species.
    Disagrees { predicted: String },
    /// Between the thresholds: an expert should look.
    Uncertain,
    /// The claimed species is not one the model knows.
    UnknownSpecies,
    /// The photo shows none of the species the model knows (its unknown-ness score is above
    /// the threshold), whatever the probabilities say.
    Unknown,
}

impl Verdict {
    /// The short name used in tables and CSV.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Agrees => "agrees",
            Verdict::Disagrees { .. } => "disagrees",
            Verdict::Uncertain => "uncertain",
            Verdict::UnknownSpecies => "unknown species",
            Verdict::Unknown => "unknown",
        }
    }
}

/// The verdict for the `claim` (a resolved name: a species, a genus or none of the model's)
/// given calibrated `probabilities` in `species` order and the photo's unknown-ness (when the
/// model has a score), and the doubt it is ranked by: the probability that the claim is wrong
/// (1 for an unknown species). A genus is judged by the sum of its species' probabilities.
/// For a photo unlike every known species the probability of the claim is first scaled by
/// the novelty's weight, so that the stranger the photo, the more doubtful the record, and the
/// doubt is at least [`UNKNOWN_DOUBT`].
pub fn judge(
    probabilities: &[f32],
    species: &Species,
    claim: &Claim,
    thresholds: &Thresholds,
    novelty: Option<&Novelty>,
) -> (Verdict, f64) {
    // Compared in the probabilities' own precision, so that 0.9 meets a threshold of 0.9.
    let Some(p) = claim.probability(probabilities) else {
        return (Verdict::UnknownSpecies, 1.0);
    };
    if let Some(n) = novelty.filter(|n| n.unknown) {
        return (
            Verdict::Unknown,
            (1.0 - p as f64 * n.weight).max(UNKNOWN_DOUBT),
        );
    }
    let verdict = if p >= thresholds.agree as f32 {
        Verdict::Agrees
    } else if p <= thresholds.disagree as f32 {
        Verdict::Disagrees {
            predicted: species.name(argmax(probabilities)).to_string(),
        }
    } else {
        Verdict::Uncertain
    };
    (verdict, 1.0 - p as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_thresholds() {
        let species = Species::new(vec![
            "maniola_jurtina".into(),
            "pyronia_tithonus".into(),
            "coenonympha_pamphilus".into(),
        ]);
        // species order: coenonympha_pamphilus, maniola_jurtina, pyronia_tithonus
        let t = Thresholds::default();
        let p = [0.05, 0.93, 0.02];
        let named = |name: &str| match species.index_of(name) {
            Some(index) => Claim::Species { index },
            None => Claim::Unknown,
        };
        assert_eq!(
            judge(&p, &species, &named("maniola_jurtina"), &t, None).0,
            Verdict::Agrees
        );
        let (v, wrong) = judge(&p, &species, &named("pyronia_tithonus"), &t, None);
        assert_eq!(
            v,
            Verdict::Disagrees {
                predicted: "maniola_jurtina".into()
            }
        );
        assert!((wrong - 0.98).abs() < 1e-6);
        assert_eq!(
            judge(
                &[0.1, 0.5, 0.4],
                &species,
                &named("pyronia_tithonus"),
                &t,
                None
            )
            .0,
            Verdict::Uncertain
        );
        assert_eq!(
            judge(
                &[0.1, 0.9, 0.0],
                &species,
                &named("maniola_jurtina"),
                &t,
                None
            )
            .0,
            Verdict::Agrees,
            "the bound itself agrees"
        );
        assert_eq!(
            judge(
                &[0.2, 0.8, 0.0],
                &species,
                &named("coenonympha_pamphilus"),
                &t,
                None
            )
            .0
            .label(),
            "disagrees"
        );
        assert_eq!(
            judge(&p, &species, &named("aglais_io"), &t, None),
            (Verdict::UnknownSpecies, 1.0)
        );
        // A photo unlike every known species is never `agrees`, and ranks among the doubtful.
        let stranger = Novelty {
            score: 9.0,
            threshold: 5.0,
            unknown: true,
            p_value: 1.0 / 181.0,
            weight: 0.11,
        };
        let (v, doubt) = judge(&p, &species, &named("maniola_jurtina"), &t, Some(&stranger));
        assert_eq!(v, Verdict::Unknown);
        assert!((doubt - (1.0 - 0.93 * 0.11)).abs() < 1e-6, "{doubt}");
        let barely = Novelty {
            weight: 0.99,
            ..stranger
        };
        let (_, doubt) = judge(&p, &species, &named("maniola_jurtina"), &t, Some(&barely));
        assert_eq!(doubt, UNKNOWN_DOUBT, "never below an even chance");
        let familiar = Novelty {
            unknown: false,
            p_value: 0.5,
            weight: 1.0,
            ..stranger
        };
        assert_eq!(
            judge(&p, &species, &named("maniola_jurtina"), &t, Some(&familiar)),
            judge(&p, &species, &named("maniola_jurtina"), &t, None),
            "a photo that passes is judged as without the score"
        );
        // A genus is judged by its species together.
        let genus = Claim::Genus {
            genus: "Maniola".into(),
            members: vec![1, 2],
        };
        assert_eq!(
            judge(&[0.05, 0.5, 0.45], &species, &genus, &t, None).0,
            Verdict::Agrees
        );
        assert!(
            Thresholds {
                agree: 0.5,
                disagree: 0.6,
                ..t
            }
            .validate()
            .is_err()
        );
    }
}
