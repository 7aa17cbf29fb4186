//! The flight-season and latitude prior: how a species' records spread over the months and over
//! latitude bands, learned from observations (the training photos' own, or GBIF's counts for a
//! country), and how it sharpens a photo's calibrated probabilities.
//!
//! The photo and its date and place are taken as independent given the species, so
//! P(species | photo, context) ∝ P(species | photo) · P(month | species)^w_m · P(band | species)^w_p.
//! The weights (1 would be plain Bayes) are fitted on the validation photos by log loss: counts
//! from few photos, or from a country's whole year, are not this data's exact season.

use serde::{Deserialize, Serialize};

use super::Context;
use crate::calibrate;
use crate::dataset::Species;
use crate::metrics::{accuracy, log_loss};

/// The Laplace smoothing added to every count.
pub const SMOOTHING: f64 = 1.0;
/// Width of the latitude bands, in degrees.
pub const BAND_DEGREES: f64 = 1.0;
/// Weights tried when fitting, in both dimensions: 0, 0.05, ..., 2.
const WEIGHT_STEPS: usize = 40;
const WEIGHT_MAX: f64 = 2.0;

pub const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Counts of one latitude band, `[south, south + band_degrees)`, per species.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Band {
    pub south: f64,
    pub counts: Vec<f64>,
}

impl Band {
    /// The band starting at `south` in `bands`, added with zero counts for `species` species
    /// if it is not there yet.
    pub fn at(bands: &mut Vec<Band>, south: f64, species: usize) -> &mut Band {
        let i = match bands.iter().position(|b| b.south == south) {
            Some(i) => i,
            None => {
                bands.push(Band {
                    south,
                    counts: vec![0.0; species],
                });
                bands.len() - 1
            }
        };
        &mut bands[i]
    }
}

/// The exponents of the two likelihoods.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    pub month: f64,
    pub place: f64,
}

/// Accuracy and log loss on labelled photos.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub accuracy: f64,
    pub log_loss: f64,
}

/// What the prior did on the validation photos, against the photo alone. The fitted weights
/// are chosen on these photos, so `fitted` leans optimistic; `bayes` (weights 1, nothing
/// chosen) does not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriorFit {
    pub photos: usize,
    pub with_date: usize,
    pub with_place: usize,
    /// The calibrated photo alone.
    pub image: Score,
    /// The months alone, their weight fitted.
    pub months: Score,
    /// Months and latitude, both weights 1.
    pub bayes: Score,
    /// Months and latitude, with the fitted weights.
    pub fitted: Score,
}

/// A prior over the model's species, saved in `model.json` (and by `vlinder prior gbif`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prior {
    /// Where the counts come from, for people.
    pub learned_from: String,
    /// The species the counts are for, in the order of `months[i]` and `counts[i]`.
    pub species: Vec<String>,
    /// Records per species and month (January first).
    pub months: Vec<Vec<f64>>,
    pub band_degrees: f64,
    /// Latitude bands with records, south to north.
    pub bands: Vec<Band>,
    pub smoothing: f64,
    pub weights: Weights,
    /// Set once the weights were fitted on validation photos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<PriorFit>,
}

/// Why a claimed species is suspect for the record's date or place, whatever the photo shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "flag", rename_all = "snake_case")]
pub enum Flag {
    /// The species' share of records in this month is below the threshold.
    OutsideFlightPeriod { month: u32, share: f64 },
    /// The species' share of records in this latitude band is below the threshold (or the
    /// band lies outside every record the prior knows).
    OutsideKnownRange { latitude: f64, share: f64 },
}

impl Flag {
    /// The short label shown in tables.
    pub fn label(&self) -> &'static str {
        match self {
            Flag::OutsideFlightPeriod { .. } => "outside its flight period",
            Flag::OutsideKnownRange { .. } => "outside its known range",
        }
    }

    /// The label with the figure behind it.
    pub fn explain(&self) -> String {
        match self {
            Flag::OutsideFlightPeriod { month, share } => format!(
                "{}: {:.1}% of its records are from {}",
                self.label(),
                100.0 * share,
                MONTHS[*month as usize - 1]
            ),
            Flag::OutsideKnownRange { latitude, share } => format!(
                "{}: {:.1}% of its records are near latitude {latitude:.1}",
                self.label(),
                100.0 * share
            ),
        }
    }
}

/// A photo's probabilities with its context taken into account.
#[derive(Debug, Clone, PartialEq)]
pub struct Adjusted {
    pub probabilities: Vec<f32>,
    /// Whether the date and the place changed anything.
    pub used_date: bool,
    pub used_place: bool,
}

/// The probabilities `prior` gives `calibrated` (in species order) in `context`, or None where
/// there is no prior or it has nothing to say about the context: then the photo alone stands.
pub fn in_context(
    prior: Option<&Prior>,
    calibrated: &[f32],
    context: &Context,
) -> Option<Vec<f32>> {
    prior
        .map(|p| p.adjust(calibrated, context))
        .filter(|a| a.used_date || a.used_place)
        .map(|a| a.probabilities)
}

/// Species names compared as folder names: `Maniola jurtina` is `maniola_jurtina`.
pub fn folder_name(name: &str) -> String {
    name.trim().to_lowercase().replace([' ', '-'], "_")
}

impl Prior {
    /// Counts the months and latitude bands of labelled observations (`labels[i]` indexes
    /// `species`); observations without a date or place count only where they can.
    pub fn learn(
        species: &Species,
        labels: &[usize],
        contexts: &[Context],
        learned_from: String,
    ) -> Prior {
        let n = species.len();
        let mut months = vec![vec![0.0; 12]; n];
        let mut bands: Vec<Band> = Vec::new();
        for (&label, context) in labels.iter().zip(contexts) {
            if let Some(date) = context.date {
                months[label][date.month as usize - 1] += 1.0;
            }
            if let Some(lat) = context.latitude {
                let south = (lat / BAND_DEGREES).floor() * BAND_DEGREES;
                Band::at(&mut bands, south, n).counts[label] += 1.0;
            }
        }
        bands.sort_by(|a, b| a.south.total_cmp(&b.south));
        Prior::from_counts(learned_from, species.names().to_vec(), months, bands)
    }

    /// A prior from counts made elsewhere (GBIF's), weights 1 until fitted.
    pub fn from_counts(
        learned_from: String,
        species: Vec<String>,
        months: Vec<Vec<f64>>,
        bands: Vec<Band>,
    ) -> Prior {
        Prior {
            learned_from,
            species,
            months,
            band_degrees: BAND_DEGREES,
            bands,
            smoothing: SMOOTHING,
            weights: Weights {
                month: 1.0,
                place: 1.0,
            },
            validation: None,
        }
    }

    /// Checks the shapes and numbers, so that a hand-edited or hostile file is refused with
    /// the field named.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.species.len();
        if self.months.len() != n {
            return Err(format!(
                "months has {} rows for {n} species",
                self.months.len()
            ));
        }
        if let Some(row) = self.months.iter().position(|m| m.len() != 12) {
            return Err(format!("months[{row}] does not have 12 counts"));
        }
        if let Some(b) = self.bands.iter().find(|b| b.counts.len() != n) {
            return Err(format!(
                "the band at latitude {} has {} counts for {n} species",
                b.south,
                b.counts.len()
            ));
        }
        let counts = self
            .months
            .iter()
            .flatten()
            .chain(self.bands.iter().flat_map(|b| &b.counts));
        if counts.clone().any(|c| !(c.is_finite() && *c >= 0.0)) {
            return Err("a count is negative or not a number".into());
        }
        let numbers = [
            ("band_degrees", self.band_degrees),
            ("smoothing", self.smoothing),
        ];
        if let Some((name, v)) = numbers.iter().find(|(_, v)| !(v.is_finite() && *v > 0.0)) {
            return Err(format!("{name} {v} is not a positive number"));
        }
        let w = self.weights;
        if ![w.month, w.place]
            .iter()
            .all(|v| v.is_finite() && (0.0..=10.0).contains(v))
        {
            return Err(format!(
                "weights {} / {} are outside 0..10",
                w.month, w.place
            ));
        }
        Ok(())
    }

    /// The prior with its rows in `species`' order, or which of the model's species it lacks.
    /// Names match as folder names (`Maniola jurtina` = `maniola_jurtina`).
    pub fn for_species(&self, species: &Species) -> Result<Prior, String> {
        self.validate()?;
        let own: Vec<String> = self.species.iter().map(|s| folder_name(s)).collect();
        let mut order = Vec::with_capacity(species.len());
        let mut missing = Vec::new();
        for name in species.names() {
            match own.iter().position(|s| *s == folder_name(name)) {
                Some(i) => order.push(i),
                None => missing.push(name.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(format!(
                "it has no counts for {} (it has: {}); make one for the model's species",
                missing.join(", "),
                self.species.join(", ")
            ));
        }
        Ok(Prior {
            species: species.names().to_vec(),
            months: order.iter().map(|&i| self.months[i].clone()).collect(),
            bands: self
                .bands
                .iter()
                .map(|b| Band {
                    south: b.south,
                    counts: order.iter().map(|&i| b.counts[i]).collect(),
                })
                .collect(),
            ..self.clone()
        })
    }

    /// P(month | species), smoothed.
    fn month_share(&self, species: usize, month: u32) -> f64 {
        let row = &self.months[species];
        (row[month as usize - 1] + self.smoothing)
            / (row.iter().sum::<f64>() + 12.0 * self.smoothing)
    }

    /// The band holding `latitude`, if any record fell in it.
    fn band(&self, latitude: f64) -> Option<&Band> {
        self.bands
            .iter()
            .find(|b| b.south <= latitude && latitude < b.south + self.band_degrees)
    }

    /// P(band | species), smoothed over the bands with records.
    fn band_share(&self, species: usize, band: &Band) -> f64 {
        let total: f64 = self.bands.iter().map(|b| b.counts[species]).sum();
        (band.counts[species] + self.smoothing) / (total + self.bands.len() as f64 * self.smoothing)
    }

    /// Whether the prior has anything to say about the month and the place of `context`.
    fn usable(&self, context: &Context) -> (Option<u32>, Option<&Band>) {
        let has_months = self.months.iter().flatten().any(|&c| c > 0.0);
        (
            context.date.map(|d| d.month).filter(|_| has_months),
            context.latitude.and_then(|lat| self.band(lat)),
        )
    }

    /// `probabilities` (calibrated, in species order) times the context's likelihoods with
    /// the fitted weights, renormalised; unchanged without a usable date or place.
    pub fn adjust(&self, probabilities: &[f32], context: &Context) -> Adjusted {
        self.adjust_with(probabilities, context, self.weights)
    }

    fn adjust_with(&self, probabilities: &[f32], context: &Context, w: Weights) -> Adjusted {
        let (month, band) = self.usable(context);
        let (used_date, used_place) = (
            month.is_some() && w.month > 0.0,
            band.is_some() && w.place > 0.0,
        );
        if !used_date && !used_place {
            return Adjusted {
                probabilities: probabilities.to_vec(),
                used_date,
                used_place,
            };
        }
        let logs: Vec<f64> = probabilities
            .iter()
            .enumerate()
            .map(|(s, &p)| {
                let mut l = calibrate::log(p);
                if let Some(m) = month.filter(|_| used_date) {
                    l += w.month * self.month_share(s, m).ln();
                }
                if let Some(b) = band.filter(|_| used_place) {
                    l += w.place * self.band_share(s, b).ln();
                }
                l
            })
            .collect();
        Adjusted {
            probabilities: calibrate::from_logs(&logs),
            used_date,
            used_place,
        }
    }

    /// Why `species` is suspect for `context`: its share of records in the month, or in the
    /// latitude band, below `rare_below`. The share here counts one pseudo-record spread over
    /// the months (bands), not the likelihood's smoothing, so that a month without records is
    /// rare even for a species seen a few dozen times. A latitude outside every band the prior
    /// has records for is outside every species' known range.
    pub fn flags(&self, species: usize, context: &Context, rare_below: f64) -> Vec<Flag> {
        let share =
            |count: f64, total: f64, bins: usize| (count + 1.0 / bins as f64) / (total + 1.0);
        let mut flags = Vec::new();
        if let Some(month) = self.usable(context).0 {
            let row = &self.months[species];
            let share = share(row[month as usize - 1], row.iter().sum(), 12);
            if share < rare_below {
                flags.push(Flag::OutsideFlightPeriod { month, share });
            }
        }
        if let Some(latitude) = context.latitude.filter(|_| !self.bands.is_empty()) {
            let total: f64 = self.bands.iter().map(|b| b.counts[species]).sum();
            let share = self
                .band(latitude)
                .map_or(0.0, |b| share(b.counts[species], total, self.bands.len()));
            if share < rare_below {
                flags.push(Flag::OutsideKnownRange { latitude, share });
            }
        }
        flags
    }

    /// Accuracy and log loss of the photos' probabilities adjusted with weights `w`.
    pub fn score(&self, photos: &Labelled, w: Weights) -> Score {
        let adjusted: Vec<Vec<f32>> = photos
            .probabilities
            .iter()
            .zip(photos.contexts)
            .map(|(p, c)| self.adjust_with(p, c, w).probabilities)
            .collect();
        Score {
            accuracy: accuracy(&adjusted, photos.labels),
            log_loss: log_loss(&adjusted, photos.labels),
        }
    }

    /// Fits the weights on labelled photos by log loss (a grid over 0..2 in both), records the
    /// result against the photo alone, and returns it. A dimension no photo has keeps weight 1.
    pub fn fit(&mut self, photos: &Labelled) -> PriorFit {
        let with_date = photos
            .contexts
            .iter()
            .filter(|c| self.usable(c).0.is_some())
            .count();
        let with_place = photos
            .contexts
            .iter()
            .filter(|c| self.usable(c).1.is_some())
            .count();
        let best = best_weights(&[(self, photos)]);
        // Along the grid's row without the place: what the months alone give.
        let months = weight_grid(with_date)
            .into_iter()
            .map(|month| Weights { month, place: 0.0 })
            .map(|w| (self.score(photos, w).log_loss, w))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .expect("a grid of at least one weight")
            .1;
        let fit = PriorFit {
            photos: photos.labels.len(),
            with_date,
            with_place,
            image: self.score(
                photos,
                Weights {
                    month: 0.0,
                    place: 0.0,
                },
            ),
            months: self.score(photos, months),
            bayes: self.score(
                photos,
                Weights {
                    month: 1.0,
                    place: 1.0,
                },
            ),
            fitted: self.score(photos, best),
        };
        self.weights = best;
        self.validation = Some(fit.clone());
        fit
    }
}

/// Labelled photos with what the model said of each and where and when each was seen.
pub struct Labelled<'a> {
    /// Calibrated probabilities, one row per photo.
    pub probabilities: &'a [Vec<f32>],
    pub contexts: &'a [Context],
    pub labels: &'a [usize],
}

/// The grid of weights tried for a dimension that `used` photos have: 0 to [`WEIGHT_MAX`], or
/// only 1 when no photo has it.
fn weight_grid(used: usize) -> Vec<f64> {
    if used == 0 {
        vec![1.0]
    } else {
        (0..=WEIGHT_STEPS)
            .map(|i| WEIGHT_MAX * i as f64 / WEIGHT_STEPS as f64)
            .collect()
    }
}

/// The weights with the lowest log loss over all the photos of `sets`, each set adjusted by
/// its own prior (cross-validation fits one fold's weights on the other folds' photos, each
/// judged by a model and prior of their own).
pub fn best_weights(sets: &[(&Prior, &Labelled)]) -> Weights {
    let used = |dimension: usize| {
        sets.iter()
            .map(|(prior, photos)| {
                let usable = |c: &&Context| {
                    let (month, band) = prior.usable(c);
                    [month.is_some(), band.is_some()][dimension]
                };
                photos.contexts.iter().filter(usable).count()
            })
            .sum::<usize>()
    };
    let photos: usize = sets.iter().map(|(_, p)| p.labels.len()).sum();
    let loss = |w: Weights| {
        sets.iter()
            .map(|(prior, p)| prior.score(p, w).log_loss * p.labels.len() as f64)
            .sum::<f64>()
            / photos.max(1) as f64
    };
    let mut best = (
        f64::INFINITY,
        Weights {
            month: 1.0,
            place: 1.0,
        },
    );
    for &month in &weight_grid(used(0)) {
        for &place in &weight_grid(used(1)) {
            let w = Weights { month, place };
            let l = loss(w);
            if l < best.0 {
                best = (l, w);
            }
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Date;

    fn species() -> Species {
        Species::new(vec![
            "anthocharis_cardamines".into(),
            "celastrina_argiolus".into(),
        ])
    }

    fn on(month: u32, latitude: Option<f64>) -> Context {
        Context {
            date: Some(Date::new(2021, month, 1).unwrap()),
            latitude,
            longitude: latitude.map(|_| -1.0),
        }
    }

    /// Orange-tips in April and May only, holly blues in April and August; all at 51-52°N but
    /// one holly blue at 55.5.
    fn prior() -> Prior {
        let mut labels = vec![];
        let mut contexts = vec![];
        for _ in 0..20 {
            labels.extend([0, 0, 1, 1]);
            contexts.extend([
                on(4, Some(51.5)),
                on(5, Some(51.5)),
                on(4, Some(51.2)),
                on(8, Some(51.9)),
            ]);
        }
        labels.push(1);
        contexts.push(on(8, Some(55.5)));
        Prior::learn(&species(), &labels, &contexts, "test".into())
    }

    #[test]
    fn the_season_moves_probability_and_no_context_changes_nothing() {
        let p = prior();
        assert_eq!(p.months[0][3], 20.0);
        assert_eq!(p.bands.len(), 2);
        assert_eq!(
            (p.bands[0].south, p.bands[0].counts.clone()),
            (51.0, vec![40.0, 40.0])
        );
        let image = [0.6f32, 0.4];
        let august = p.adjust(&image, &on(8, None));
        assert!(august.used_date && !august.used_place);
        assert!(august.probabilities[1] > 0.9, "{:?}", august.probabilities);
        let april = p.adjust(&image, &on(4, None));
        assert!(
            (april.probabilities[0] - 0.6).abs() < 0.05,
            "{:?}",
            april.probabilities
        );
        let none = p.adjust(&image, &Context::default());
        assert_eq!(none.probabilities, image.to_vec());
        assert!(!none.used_date && !none.used_place);
        // A latitude outside every band adds nothing, but flags the claim.
        let far = Context {
            latitude: Some(40.0),
            longitude: Some(0.0),
            date: None,
        };
        assert_eq!(p.adjust(&image, &far).probabilities, image.to_vec());
        assert_eq!(p.flags(0, &far, 0.01)[0].label(), "outside its known range");
    }

    #[test]
    fn rare_months_and_places_are_flagged_for_the_claimed_species() {
        let p = prior();
        let flags = p.flags(0, &on(8, Some(51.5)), 0.05);
        assert_eq!(flags.len(), 1);
        assert_eq!(flags[0].label(), "outside its flight period");
        assert!(
            flags[0].explain().contains("from August"),
            "{}",
            flags[0].explain()
        );
        assert!(p.flags(1, &on(8, Some(51.5)), 0.05).is_empty());
        assert!(p.flags(0, &on(4, None), 0.05).is_empty());
        let north = p.flags(0, &on(4, Some(55.7)), 0.05);
        assert_eq!(north.len(), 1, "{north:?}");
        assert_eq!(north[0].label(), "outside its known range");
    }

    #[test]
    fn fitted_weights_never_lose_to_the_photo_alone_and_shapes_are_checked() {
        let mut p = prior();
        // Photos that cannot tell the species; the months can.
        let probs = vec![vec![0.5f32, 0.5]; 4];
        let contexts = vec![on(5, None), on(8, None), on(4, None), Context::default()];
        let labels = vec![0, 1, 0, 1];
        let fit = p.fit(&Labelled {
            probabilities: &probs,
            contexts: &contexts,
            labels: &labels,
        });
        assert_eq!((fit.with_date, fit.with_place), (3, 0));
        assert!(fit.fitted.log_loss < fit.image.log_loss, "{fit:?}");
        assert!(fit.fitted.accuracy >= fit.image.accuracy);
        assert!(fit.fitted.log_loss <= fit.bayes.log_loss);
        assert!(fit.fitted.log_loss <= fit.months.log_loss + 1e-12);
        assert!(
            p.weights.month > 0.0 && p.weights.place == 1.0,
            "{:?}",
            p.weights
        );

        let reordered = Prior {
            species: vec![
                "Celastrina argiolus".into(),
                "Anthocharis cardamines".into(),
            ],
            months: vec![p.months[1].clone(), p.months[0].clone()],
            bands: vec![],
            ..p.clone()
        };
        let back = reordered.for_species(&species()).unwrap();
        assert_eq!(back.months, p.months);
        assert_eq!(back.species, species().names().to_vec());
        let other = Species::new(vec!["maniola_jurtina".into(), "celastrina_argiolus".into()]);
        let e = p.for_species(&other).unwrap_err();
        assert!(e.contains("no counts for maniola_jurtina"), "{e}");
        let mut bad = p.clone();
        bad.months[1].pop();
        assert!(bad.validate().unwrap_err().contains("months[1]"));
        bad = p.clone();
        bad.months[0][0] = -1.0;
        assert!(bad.validate().is_err());
        bad = p.clone();
        bad.weights.month = f64::NAN;
        assert!(bad.validate().is_err());
    }
}
