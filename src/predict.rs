//! `vlinder predict`: each photo's species ranked by probability.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dataset::decode::has_photo_extension;
use crate::dataset::decode_photo;
use crate::device::Backend;
use crate::model::{ModelDir, WeightsChoice};
use crate::{Error, Result, files};

/// How predictions are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

/// The configuration of `vlinder predict`.
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct PredictConfig {
    /// The model directory.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Photos, or folders searched (recursively) for photos.
    #[arg(required = true, value_name = "PHOTO|FOLDER")]
    pub photos: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Show only the K most probable species in the table (default: all).
    #[arg(long, value_name = "K")]
    pub top: Option<usize>,
    #[arg(long, value_enum, default_value_t = WeightsChoice::Last)]
    pub weights: WeightsChoice,
    #[arg(long, value_enum, default_value_t = Backend::Flex)]
    pub device: Backend,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Classifies every photo; an unreadable photo gets an error in its [`Prediction`], the rest go on.
pub fn predict(config: &PredictConfig) -> Result<Vec<Prediction>> {
    let model = ModelDir::new(&config.model).load(config.weights, &config.device.device()?)?;
    let photos = expand(&config.photos)?;
    let size = model.card.image_size;
    let decoded: Vec<_> = photos
        .par_iter()
        .map(|p| decode_photo(p, size, model.card.preprocessing.resize))
        .collect();
    let readable: Vec<&[u8]> = decoded.iter().filter_map(|d| d.as_deref().ok()).collect();
    let mut probabilities = model.calibrated_probabilities(&readable).into_iter();
    Ok(photos
        .into_iter()
        .zip(decoded)
        .map(|(photo, d)| match d {
            Ok(_) => {
                let p = probabilities.next().expect("one row per readable photo");
                Prediction {
                    photo,
                    ranking: rank(&p, model.card.species.names()),
                    error: None,
                }
            }
            Err(e) => Prediction {
                photo,
                ranking: Vec::new(),
                error: Some(e.to_string()),
            },
        })
        .collect())
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
            let before = photos.len();
            collect_photos(input, &mut photos)?;
            if photos.len() == before {
                return Err(Error::Layout {
                    path: input.clone(),
                    reason: "no photo (jpg, jpeg, png, bmp, tif, tiff, webp) in this folder".into(),
                });
            }
        } else {
            photos.push(input.clone());
        }
    }
    Ok(photos)
}

fn collect_photos(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_photos(&path, out)?;
        } else if has_photo_extension(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Renders predictions in `format`; `top` limits the species shown per photo in the table.
pub fn render(predictions: &[Prediction], format: OutputFormat, top: Option<usize>) -> String {
    match format {
        OutputFormat::Json => {
            serde_json::to_string_pretty(predictions).expect("predictions serialise") + "\n"
        }
        OutputFormat::Csv => {
            let mut s = String::from("photo,rank,species,probability,error\n");
            for p in predictions {
                let photo = files::csv_field(&p.photo.to_string_lossy());
                match &p.error {
                    Some(e) => {
                        let _ = writeln!(s, "{photo},,,,{}", files::csv_field(e));
                    }
                    None => {
                        for (i, r) in p.ranking.iter().enumerate() {
                            let species = files::csv_field(&r.species);
                            let _ =
                                writeln!(s, "{photo},{},{species},{:.6},", i + 1, r.probability);
                        }
                    }
                }
            }
            s
        }
        OutputFormat::Table => {
            let width = predictions
                .iter()
                .map(|p| p.photo.to_string_lossy().len())
                .max()
                .unwrap_or(5)
                .max(5);
            let mut s = format!(
                "{:width$}  species (probability), most probable first\n",
                "photo"
            );
            for p in predictions {
                let cells = match &p.error {
                    Some(e) => format!("error: {e}"),
                    None => p
                        .ranking
                        .iter()
                        .take(top.unwrap_or(usize::MAX))
                        .map(|r| format!("{} ({:.3})", r.species, r.probability))
                        .collect::<Vec<_>>()
                        .join("  "),
                };
                let _ = writeln!(s, "{:width$}  {cells}", p.photo.to_string_lossy());
            }
            s
        }
    }
}
