//! `vlinder predict`: each photo's species ranked by probability.

use std::fmt::Write as _;
use std::path::PathBuf;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::context::{Context, Observations, Prior, in_context};
use crate::dataset::{decode_photo, photos_below};
use crate::device::Backend;
use crate::novelty::Novelty;
use crate::trained::{ModelDir, WeightsChoice};
use crate::{Error, Result, files, progress};

/// How predictions are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

/// The configuration of `vlinder predict`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PredictConfig {
    /// The model directory.
    pub model: PathBuf,
    /// Photos, or folders searched (recursively) for photos.
    pub photos: Vec<PathBuf>,
    pub format: OutputFormat,
    /// Show only the K most probable species in the table (default: all).
    pub top: Option<usize>,
    /// When the photos were taken (2021-04-25 or 25-04-2021), for a model with a date and
    /// place prior.
    #[serde(default)]
    pub date: Option<String>,
    /// Where, in decimal degrees (with --longitude).
    #[serde(default)]
    pub latitude: Option<String>,
    #[serde(default)]
    pub longitude: Option<String>,
    /// Each photo's date and place instead: a CSV with a row per photo (photo or file, date
    /// or observed_on, latitude, longitude; matched by folder and file name) or a manifest.jsonl.
    #[serde(default)]
    pub observations: Option<PathBuf>,
    pub weights: WeightsChoice,
    pub device: Backend,
}

impl PredictConfig {
    /// The date and place given, checked: a bad one is an error, not a silent photo-only answer.
    pub fn context(&self) -> Result<Context> {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let (context, warnings) = Context::parse(
            &text(&self.date),
            &text(&self.latitude),
            &text(&self.longitude),
        );
        match warnings.first() {
            Some(why) => Err(Error::invalid(
                "date or place",
                format!(
                    "{} {} {}",
                    text(&self.date),
                    text(&self.latitude),
                    text(&self.longitude)
                )
                .trim()
                .to_string(),
                why.clone(),
            )),
            None => Ok(context),
        }
    }
}

/// A species and its probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    pub species: String,
    pub probability: f32,
}

/// The answer for one photo: species from most to least probable, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub photo: PathBuf,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ranking: Vec<Ranked>,
    /// The photo alone's ranking, when the date or place changed it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_ranking: Vec<Ranked>,
    /// Whether the photo shows one of the model's species at all (absent for a model without
    /// an unknown-ness score).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub novelty: Option<Novelty>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Photos decoded ahead of the network: a few of its batches, so that a folder of any size is
/// never held decoded at once.
const CHUNK: usize = 256;

/// Classifies every photo; an unreadable photo gets an error in its [`Prediction`], the rest go on.
///
/// Photos go through in chunks, decoded and then classified; decoding the next chunk while the
/// network works on this one was measured slower on 2 cores (both stages use every core).
pub fn predict(config: &PredictConfig) -> Result<Vec<Prediction>> {
    let context = config.context()?;
    let observations = config
        .observations
        .as_deref()
        .map(Observations::read)
        .transpose()?;
    if let Some(o) = &observations {
        for w in &o.warnings {
            eprintln!("warning: {w}; that photo is judged without it");
        }
    }
    let model = ModelDir::new(&config.model).load(config.weights, &config.device.device()?)?;
    let photos = expand(&config.photos)?;
    if let Err(why) = &model.novelty {
        eprintln!("warning: {why}");
    }
    let prior = model.card.prior.as_ref();
    if (!context.is_empty() || observations.is_some()) && prior.is_none() {
        eprintln!(
            "warning: {} has no date and place prior (train it with --observations); the date and place are ignored",
            config.model.display()
        );
    }
    let names = model.card.species.names();
    let (size, filter) = (model.card.image_size, model.card.preprocessing.resize);
    let bar = progress::bar(photos.len(), "predicting");
    let mut predictions = Vec::with_capacity(photos.len());
    for paths in photos.chunks(CHUNK) {
        let decoded: Vec<Result<Vec<u8>>> = paths
            .par_iter()
            .map(|p| decode_photo(p, size, filter))
            .collect();
        let readable: Vec<&[u8]> = decoded.iter().filter_map(|d| d.as_deref().ok()).collect();
        let mut assessments = model.assess(&readable).into_iter();
        predictions.extend(paths.iter().zip(&decoded).map(|(photo, d)| match d {
            Ok(_) => {
                let a = assessments.next().expect("one row per readable photo");
                let context = observations
                    .as_ref()
                    .map_or(context, |o| o.of(photo).copied().unwrap_or_default());
                let (ranking, image_ranking) =
                    rank_in_context(&a.calibrated, prior, &context, names);
                Prediction {
                    photo: photo.clone(),
                    ranking,
                    image_ranking,
                    novelty: a.novelty,
                    error: None,
                }
            }
            Err(e) => Prediction {
                photo: photo.clone(),
                ranking: Vec::new(),
                image_ranking: Vec::new(),
                novelty: None,
                error: Some(e.to_string()),
            },
        }));
        bar.inc(paths.len() as u64);
    }
    bar.finish_and_clear();
    Ok(predictions)
}

/// The ranking with the date and place taken into account where `prior` has something to say
/// about `context`, and the photo alone's ranking when that changed it (else empty).
pub fn rank_in_context(
    calibrated: &[f32],
    prior: Option<&Prior>,
    context: &Context,
    species: &[String],
) -> (Vec<Ranked>, Vec<Ranked>) {
    match in_context(prior, calibrated, context) {
        Some(adjusted) => (rank(&adjusted, species), rank(calibrated, species)),
        None => (rank(calibrated, species), Vec::new()),
    }
}

/// Species sorted by falling probability.
pub fn rank(probabilities: &[f32], species: &[String]) -> Vec<Ranked> {
    let mut ranking: Vec<Ranked> = species
        .iter()
        .zip(probabilities)
        .map(|(s, &p)| Ranked {
            species: s.clone(),
            probability: p,
        })
        .collect();
    ranking.sort_by(|a, b| b.probability.total_cmp(&a.probability));
    ranking
}

/// Files as given; folders replaced by the photos below them, sorted.
fn expand(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut photos = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let (found, _) = photos_below(input)?;
            if found.is_empty() {
                return Err(Error::Layout {
                    path: input.clone(),
                    reason: "no photo (jpg, jpeg, png, bmp, tif, tiff, webp) in this folder".into(),
                });
            }
            photos.extend(found);
        } else {
            photos.push(input.clone());
        }
    }
    Ok(photos)
}

/// Renders predictions in `format`; `top` limits the species shown per photo in the table.
pub fn render(predictions: &[Prediction], format: OutputFormat, top: Option<usize>) -> String {
    match format {
        OutputFormat::Json => {
            serde_json::to_string_pretty(predictions).expect("predictions serialise") + "\n"
        }
        OutputFormat::Csv => {
            let mut s = String::from(
                "photo,rank,species,probability,image_probability,unknown,unknown_score,error\n",
            );
            for p in predictions {
                let photo = files::csv_field(&p.photo.to_string_lossy());
                let (unknown, score) = p.novelty.map_or((String::new(), String::new()), |n| {
                    (n.unknown.to_string(), format!("{:.4}", n.score))
                });
                match &p.error {
                    Some(e) => {
                        let _ = writeln!(s, "{photo},,,,,,,{}", files::csv_field(e));
                    }
                    None => {
                        for (i, r) in p.ranking.iter().enumerate() {
                            let species = files::csv_field(&r.species);
                            let alone = p
                                .image_ranking
                                .iter()
                                .find(|a| a.species == r.species)
                                .map_or(String::new(), |a| format!("{:.6}", a.probability));
                            let _ = writeln!(
                                s,
                                "{photo},{},{species},{:.6},{alone},{unknown},{score},",
                                i + 1,
                                r.probability
                            );
                        }
                    }
                }
            }
            s
        }
        OutputFormat::Table => {
            let photos: Vec<String> = predictions
                .iter()
                .map(|p| files::terminal_text(&p.photo.to_string_lossy()))
                .collect();
            let width = photos.iter().map(String::len).max().unwrap_or(5).max(5);
            let mut s = format!(
                "{:width$}  species (probability), most probable first\n",
                "photo"
            );
            for (p, photo) in predictions.iter().zip(&photos) {
                let cells = match &p.error {
                    Some(e) => format!("error: {}", files::terminal_text(e)),
                    None => {
                        let ranking = p
                            .ranking
                            .iter()
                            .take(top.unwrap_or(usize::MAX))
                            .map(|r| format!("{} ({:.3})", r.species, r.probability))
                            .collect::<Vec<_>>()
                            .join("  ");
                        let ranking = match p.image_ranking.first() {
                            Some(a) => format!(
                                "{ranking}  [photo alone: {} ({:.3})]",
                                a.species, a.probability
                            ),
                            None => ranking,
                        };
                        match p.novelty.filter(|n| n.unknown) {
                            Some(n) => format!(
                                "unknown: not one of the species this model knows (score {:.2} > {:.2}); ranking {ranking}",
                                n.score, n.threshold
                            ),
                            None => ranking,
                        }
                    }
                };
                let _ = writeln!(s, "{photo:width$}  {cells}");
            }
            s
        }
    }
}
