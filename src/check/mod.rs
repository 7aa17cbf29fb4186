//! `vlinder check`: the job vlinder exists for. Each submitted record (a photo and the species the
//! volunteer named) gets a verdict from the model's calibrated probabilities, and the records are
//! ranked so that experts see the doubtful ones first.
//!
//! [`crate::verdict`] decides one record, [`records`] reads the CSV and fetches the photos, [`report`]
//! writes the results as CSV, JSON and a self-contained HTML page.

pub mod records;
pub mod report;

use std::collections::BTreeMap;
use std::path::PathBuf;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::context::{Flag, Prior, in_context};
use crate::dataset::Species;
use crate::device::Backend;
use crate::novelty::Novelty;
use crate::predict::{Ranked, rank};
use crate::trained::{ModelDir, TrainedModel, WeightsChoice};
pub use crate::verdict::{Thresholds, Verdict, judge};
use crate::{Result, progress};
use records::{Columns, LoadedPhoto, PhotoSources, Record, RecordError};

/// What `vlinder check` and `vlinder queue import` read: a model, a records CSV and where its
/// photos may come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckInput {
    /// The model directory.
    pub model: PathBuf,
    /// The records: a CSV with a header row; photo paths are relative to the CSV's folder.
    pub records: PathBuf,
    pub columns: Columns,
    /// Photo paths must lie inside this folder, once `..` and links are resolved (default: the
    /// CSV's folder), so that a records file cannot make vlinder read other files.
    pub photos_root: Option<PathBuf>,
    /// Fetch photo URLs that lead to loopback, private or link-local addresses too (refused by
    /// default, so that a records file cannot make vlinder probe this machine or its network).
    pub allow_private_urls: bool,
    pub thresholds: Thresholds,
    pub weights: WeightsChoice,
    pub device: Backend,
}

impl CheckInput {
    /// Loads the model after checking the thresholds, with warnings for what it lacks.
    pub fn load_model(&self) -> Result<TrainedModel> {
        self.thresholds.validate()?;
        let model = ModelDir::new(&self.model).load(self.weights, &self.device.device()?)?;
        if let Err(why) = &model.novelty {
            eprintln!("warning: {why}");
        }
        if self.columns.has_context() && model.card.prior.is_none() {
            eprintln!(
                "warning: {} has no date and place prior (train it with --observations); dates and places are ignored",
                self.model.display()
            );
        }
        Ok(model)
    }

    /// Where the records' photos are read from: paths relative to the CSV's folder, inside
    /// `--photos-root`.
    pub fn photo_sources(&self) -> Result<PhotoSources> {
        let base = match self.records.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let root = self.photos_root.as_ref().unwrap_or(&base);
        let root = root.canonicalize().map_err(|e| crate::Error::io(root, e))?;
        Ok(PhotoSources {
            base,
            root,
            web: records::web(self.allow_private_urls),
        })
    }
}

/// The configuration of `vlinder check`, saved with its results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckConfig {
    #[serde(flatten)]
    pub input: CheckInput,
    /// Where results.csv, report.html and check.json go (default: RECORDS-check beside the CSV).
    pub out: Option<PathBuf>,
}

impl CheckConfig {
    /// The output folder.
    pub fn out_dir(&self) -> PathBuf {
        let records = &self.input.records;
        self.out.clone().unwrap_or_else(|| {
            let stem = records.file_stem().unwrap_or_default().to_string_lossy();
            records.with_file_name(format!("{stem}-check"))
        })
    }
}

/// One record with its verdict, or why it could not be checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckedRecord {
    #[serde(flatten)]
    pub record: Record,
    #[serde(flatten)]
    pub verdict: Option<Verdict>,
    /// The calibrated probability of the claimed species, with the date and place where the
    /// model has a prior and the record gives them.
    pub claimed_probability: Option<f64>,
    /// The same from the photo alone.
    pub image_claimed_probability: Option<f64>,
    /// The photo alone's ranking, when the date or place changed the probabilities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_ranking: Vec<Ranked>,
    /// Why the claimed species is suspect for the record's date or place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<Flag>,
    /// The probability that the claimed species is wrong; records are ranked by it.
    pub doubt: f64,
    pub ranking: Vec<Ranked>,
    /// Whether the photo shows one of the model's species at all (absent for a model without
    /// an unknown-ness score).
    pub novelty: Option<Novelty>,
    pub error: Option<String>,
    /// A small JPEG of the photo, for the HTML report and the review queue.
    #[serde(skip)]
    pub thumbnail: Option<Vec<u8>>,
}

/// Counts per verdict, overall and per claimed species.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Totals {
    pub records: usize,
    pub errors: usize,
    pub by_verdict: BTreeMap<String, usize>,
    pub by_claimed_species: BTreeMap<String, BTreeMap<String, usize>>,
    /// Records per flag ("outside its flight period", ...), whatever their verdict.
    #[serde(default)]
    pub by_flag: BTreeMap<String, usize>,
}

/// Everything a check produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResults {
    pub config: CheckConfig,
    pub species: Vec<String>,
    pub temperature: Option<f64>,
    /// The unknown-ness threshold, or why the model has no score.
    pub novelty: std::result::Result<f64, String>,
    /// What the model's date and place prior was learned from, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<String>,
    pub totals: Totals,
    /// Most doubtful first; records that could not be checked last.
    pub records: Vec<CheckedRecord>,
}

/// Records are classified this many at a time, to bound memory on large batches.
pub const CHUNK: usize = 256;

/// The longer side of the report's thumbnails.
const REPORT_THUMBNAIL: u32 = 96;

/// Checks every record of `config.input.records` and writes the results.
pub fn check(config: &CheckConfig) -> Result<CheckResults> {
    let input = &config.input;
    let model = input.load_model()?;
    let sources = input.photo_sources()?;
    let rows = records::read(&input.records, &input.columns)?;
    let bar = progress::bar(rows.len(), "checking");
    let mut checked = Vec::with_capacity(rows.len());
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<_> = rows.by_ref().take(CHUNK).collect();
        let n = chunk.len() as u64;
        checked.extend(check_records(
            &model,
            chunk,
            &sources,
            &input.thresholds,
            REPORT_THUMBNAIL,
        ));
        bar.inc(n);
    }
    bar.finish_and_clear();
    // Most doubtful first; unreadable records after all checked ones, in file order.
    checked.sort_by(|a, b| {
        a.error
            .is_some()
            .cmp(&b.error.is_some())
            .then(b.doubt.total_cmp(&a.doubt))
            .then(a.record.row.cmp(&b.record.row))
    });
    let prior = model.card.prior.as_ref();
    let results = CheckResults {
        config: config.clone(),
        species: model.card.species.names().to_vec(),
        temperature: model.card.calibration.as_ref().map(|c| c.temperature),
        novelty: match &model.novelty {
            Ok((_, card)) => Ok(card.threshold),
            Err(why) => Err(why.clone()),
        },
        prior: prior.map(|p| p.learned_from.clone()),
        totals: totals(&checked),
        records: checked,
    };
    report::write(&results, &config.out_dir())?;
    Ok(results)
}

/// Loads the photos of a batch of records (on all cores), classifies them in one pass and judges
/// each; a record whose row or photo is unreadable comes back with its error. Thumbnails are
/// at most `thumbnail` pixels on their longer side.
pub fn check_records(
    model: &TrainedModel,
    rows: Vec<Result<Record, RecordError>>,
    sources: &PhotoSources,
    thresholds: &Thresholds,
    thumbnail: u32,
) -> Vec<CheckedRecord> {
    let size = model.card.image_size;
    let filter = model.card.preprocessing.resize;
    let loaded: Vec<Result<(Record, LoadedPhoto), RecordError>> = rows
        .into_par_iter()
        .map(|row| {
            let record = row?;
            match records::load_photo(&record.photo, sources, size, filter, thumbnail) {
                Ok(photo) => Ok((record, photo)),
                Err(message) => Err(RecordError {
                    record: Box::new(record),
                    message,
                }),
            }
        })
        .collect();
    let pixels: Vec<&[u8]> = loaded
        .iter()
        .filter_map(|l| l.as_ref().ok().map(|(_, photo)| photo.pixels.as_slice()))
        .collect();
    let mut assessments = model.assess(&pixels).into_iter();
    loaded
        .into_iter()
        .map(|result| match result {
            Ok((record, photo)) => {
                let a = assessments.next().expect("one row per loaded photo");
                let mut checked = judge_record(
                    record,
                    &a.calibrated,
                    a.novelty,
                    &model.card.species,
                    model.card.prior.as_ref(),
                    thresholds,
                );
                checked.thumbnail = Some(photo.thumbnail);
                checked
            }
            Err(e) => CheckedRecord {
                record: *e.record,
                verdict: None,
                claimed_probability: None,
                image_claimed_probability: None,
                image_ranking: Vec::new(),
                flags: Vec::new(),
                doubt: 0.0,
                ranking: Vec::new(),
                novelty: None,
                error: Some(e.message),
                thumbnail: None,
            },
        })
        .collect()
}

/// A record judged by its photo's calibrated probabilities and, where the model has a prior
/// and the record a date or place, by those too: the verdict and doubt come from the
/// combination, the photo's own figures are kept beside it, and a claim rare for its month or
/// latitude is flagged whatever the photo shows.
pub fn judge_record(
    record: Record,
    calibrated: &[f32],
    novelty: Option<Novelty>,
    species: &Species,
    prior: Option<&Prior>,
    thresholds: &Thresholds,
) -> CheckedRecord {
    let adjusted = in_context(prior, calibrated, &record.context);
    let p = adjusted.as_deref().unwrap_or(calibrated);
    let claimed = species.index_of(record.claimed.trim());
    let (verdict, doubt) = judge(p, species, &record.claimed, thresholds, novelty.as_ref());
    let flags = match (prior, claimed) {
        (Some(prior), Some(i)) => prior.flags(i, &record.context, thresholds.rare_below),
        _ => Vec::new(),
    };
    CheckedRecord {
        claimed_probability: claimed.map(|i| p[i] as f64),
        image_claimed_probability: claimed.map(|i| calibrated[i] as f64),
        image_ranking: if adjusted.is_some() {
            rank(calibrated, species.names())
        } else {
            Vec::new()
        },
        flags,
        record,
        verdict: Some(verdict),
        doubt,
        ranking: rank(p, species.names()),
        novelty,
        error: None,
        thumbnail: None,
    }
}

fn totals(records: &[CheckedRecord]) -> Totals {
    let mut t = Totals {
        records: records.len(),
        ..Totals::default()
    };
    for r in records {
        for flag in &r.flags {
            *t.by_flag.entry(flag.label().to_string()).or_default() += 1;
        }
        let label = match &r.verdict {
            Some(v) => v.label().to_string(),
            None => {
                t.errors += 1;
                "error".to_string()
            }
        };
        *t.by_verdict.entry(label.clone()).or_default() += 1;
        *t.by_claimed_species
            .entry(r.record.claimed.trim().to_string())
            .or_default()
            .entry(label)
            .or_default() += 1;
    }
    t
}
