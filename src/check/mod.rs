//! `vlinder check`: the job vlinder exists for. Each submitted record (a photo and the species the
//! volunteer named) gets a verdict from the model's calibrated probabilities, and the records are
//! ranked so that experts see the doubtful ones first.
//!
//! [`crate::verdict`] decides one record, [`records`] reads the CSV and fetches the photos, [`report`]
//! writes the results as CSV, JSON and a self-contained HTML page.

pub mod archive;
pub mod combine;
pub mod records;
pub mod report;
pub mod table;

use std::collections::BTreeMap;
use std::path::PathBuf;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::context::{Flag, Prior, in_context};
use crate::dataset::Species;
use crate::device::Backend;
use crate::names::{Claim, Level, Names, Resolution, Resolver, Understood, Unresolved};
use crate::novelty::Novelty;
use crate::predict::{Ranked, rank};
use crate::trained::{Assessment, ModelDir, TrainedModel, WeightsChoice};
pub use crate::verdict::{Thresholds, Verdict, judge};
use crate::{Result, progress};
use combine::PhotoAnswer;
use records::{Columns, LoadedPhoto, PhotoSources, Record, RecordError};
use table::TableOptions;

/// What `vlinder check` and `vlinder queue import` read: a model, a records CSV and where its
/// photos may come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckInput {
    /// The model directory.
    pub model: PathBuf,
    /// The records: a CSV with a header row; photo paths are relative to the CSV's folder.
    pub records: PathBuf,
    pub columns: Columns,
    /// How the records file is read (found from it where not given).
    #[serde(flatten)]
    pub table: TableOptions,
    /// Photo paths must lie inside this folder, once `..` and links are resolved (default: the
    /// CSV's folder), so that a records file cannot make vlinder read other files.
    pub photos_root: Option<PathBuf>,
    /// Fetch photo URLs that lead to loopback, private or link-local addresses too (refused by
    /// default, so that a records file cannot make vlinder probe this machine or its network).
    pub allow_private_urls: bool,
    /// The species' common names and synonyms that claimed names are resolved with (a CSV
    /// with the columns scientific, nl, en and synonyms; default: the built-in Dutch
    /// butterflies).
    #[serde(default)]
    pub names: Option<PathBuf>,
    pub thresholds: Thresholds,
    pub weights: WeightsChoice,
    pub device: Backend,
}

impl CheckInput {
    /// What the records' claimed names are resolved with: the model's species and the names
    /// file.
    pub fn resolver(&self, species: &Species) -> Result<Resolver> {
        let names = match &self.names {
            Some(path) => Names::read(path)?,
            None => Names::built_in(),
        };
        Ok(Resolver::new(species, &names))
    }

    /// The claimed names of the records that resolve to none of the model's species, most
    /// frequent first: read before any photo is, so that a person can see them (and stop)
    /// before the check.
    pub fn unresolved_names(&self, resolver: &Resolver) -> Result<Vec<Unresolved>> {
        let rows = records::Reader::open(&self.records, &self.columns, &self.table)?;
        let claimed: Vec<String> = rows.filter_map(|r| r.ok().map(|r| r.claimed)).collect();
        Ok(resolver.unresolved(claimed.iter().map(String::as_str)))
    }

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
        // An archive folder's photo paths are relative to the archive itself.
        let base = match self.records.parent() {
            _ if self.records.is_dir() => self.records.clone(),
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let root = self.photos_root.as_ref().unwrap_or(&base);
        let root = root.canonicalize().map_err(|e| crate::Error::io(root, e))?;
        // Canonical, so that a photo's path can be judged against the root before any file
        // it names is looked at.
        let base = base
            .canonicalize()
            .map_err(|e| crate::Error::io(&base, e))?;
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
    /// What the claimed name was understood as (absent for a name none of the model's species
    /// has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub understood: Option<Understood>,
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
    /// an unknown-ness score): for a record with several photos, the most familiar photo's
    /// among those its verdict used.
    pub novelty: Option<Novelty>,
    /// Each photo's own answer, and whether the verdict used it (for records with several
    /// photos it gives their rankings too).
    #[serde(default)]
    pub photos: Vec<PhotoAnswer>,
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
    /// The claimed names that none of the model's species has, with how many records give each.
    #[serde(default)]
    pub unresolved_names: Vec<Unresolved>,
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
    let resolver = input.resolver(&model.card.species)?;
    let sources = input.photo_sources()?;
    let rows = records::read(&input.records, &input.columns, &input.table)?;
    let unresolved_names = resolver.unresolved(
        rows.iter()
            .filter_map(|r| r.as_ref().ok().map(|r| r.claimed.as_str())),
    );
    let bar = progress::bar(rows.len(), "checking");
    let mut checked = Vec::with_capacity(rows.len());
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<_> = rows.by_ref().take(CHUNK).collect();
        let n = chunk.len() as u64;
        checked.extend(check_records(
            &model,
            &resolver,
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
        unresolved_names,
        totals: totals(&checked),
        records: checked,
    };
    report::write(&results, &config.out_dir())?;
    Ok(results)
}

/// Loads the photos of a batch of records (on all cores), classifies them in one pass and judges
/// each record from all its readable photos (see [`combine`]); a record whose row is unreadable,
/// or none of whose photos is, comes back with its error. Thumbnails are at most `thumbnail`
/// pixels on their longer side.
pub fn check_records(
    model: &TrainedModel,
    resolver: &Resolver,
    rows: Vec<Result<Record, RecordError>>,
    sources: &PhotoSources,
    thresholds: &Thresholds,
    thumbnail: u32,
) -> Vec<CheckedRecord> {
    let size = model.card.image_size;
    let filter = model.card.preprocessing.resize;
    type Loaded = (Record, Vec<std::result::Result<LoadedPhoto, String>>);
    let loaded: Vec<Result<Loaded, RecordError>> = rows
        .into_par_iter()
        .map(|row| {
            let record = row?;
            if record.photos.is_empty() {
                return Err(RecordError {
                    record: Box::new(record),
                    message: "the photo column is empty".into(),
                });
            }
            let photos = record
                .photos
                .par_iter()
                .map(|photo| records::load_photo(photo, sources, size, filter, thumbnail))
                .collect();
            Ok((record, photos))
        })
        .collect();
    let pixels: Vec<&[u8]> = loaded
        .iter()
        .filter_map(|l| l.as_ref().ok())
        .flat_map(|(_, photos)| photos.iter().filter_map(|p| p.as_ref().ok()))
        .map(|photo| photo.pixels.as_slice())
        .collect();
    let mut assessments = model.assess(&pixels).into_iter();
    let names = model.card.species.names();
    loaded
        .into_iter()
        .map(|result| {
            let (record, photos) = match result {
                Ok(loaded) => loaded,
                Err(e) => return CheckedRecord::failed(*e.record, e.message),
            };
            let answers: Vec<Option<Assessment>> = photos
                .iter()
                .map(|p| {
                    p.as_ref()
                        .ok()
                        .map(|_| assessments.next().expect("one per photo"))
                })
                .collect();
            let readable: Vec<(&[f32], Option<Novelty>)> = answers
                .iter()
                .flatten()
                .map(|a| (a.calibrated.as_slice(), a.novelty))
                .collect();
            if readable.is_empty() {
                let why: Vec<&str> = photos
                    .iter()
                    .filter_map(|p| p.as_ref().err())
                    .map(String::as_str)
                    .collect();
                let message = match why.as_slice() {
                    [one] => one.to_string(),
                    all => format!(
                        "none of its {} photos can be read: {}",
                        all.len(),
                        all.join("; ")
                    ),
                };
                return CheckedRecord::failed(record, message);
            }
            let (calibrated, novelty, used) = combine::combine(&readable);
            let mut used = used.into_iter();
            let several = record.photos.len() > 1;
            let each: Vec<PhotoAnswer> = record
                .photos
                .iter()
                .zip(photos)
                .zip(&answers)
                .map(|((photo, loaded), answer)| {
                    let (used, thumbnail, error) = match loaded {
                        Ok(l) => (
                            used.next().expect("one per readable photo"),
                            Some(l.thumbnail),
                            None,
                        ),
                        Err(e) => (false, None, Some(e)),
                    };
                    PhotoAnswer {
                        photo: photo.clone(),
                        ranking: answer
                            .as_ref()
                            .filter(|_| several)
                            .map_or_else(Vec::new, |a| rank(&a.calibrated, names)),
                        novelty: answer.as_ref().and_then(|a| a.novelty),
                        used,
                        error,
                        thumbnail,
                    }
                })
                .collect();
            let mut checked = judge_record(
                record,
                &calibrated,
                novelty,
                resolver,
                model.card.prior.as_ref(),
                thresholds,
            );
            checked.thumbnail = each
                .iter()
                .find(|p| p.used)
                .and_then(|p| p.thumbnail.clone());
            checked.photos = each;
            checked
        })
        .collect()
}

impl CheckedRecord {
    /// A record that could not be checked, and why.
    pub fn failed(record: Record, message: String) -> Self {
        CheckedRecord {
            record,
            understood: None,
            verdict: None,
            claimed_probability: None,
            image_claimed_probability: None,
            image_ranking: Vec::new(),
            flags: Vec::new(),
            doubt: 0.0,
            ranking: Vec::new(),
            novelty: None,
            photos: Vec::new(),
            error: Some(message),
            thumbnail: None,
        }
    }

    /// The verdict's name, with a claim at genus level said so ("agrees at genus level").
    pub fn verdict_label(&self) -> String {
        match (&self.verdict, &self.understood) {
            (None, _) => "error".into(),
            (Some(v), Some(u)) if u.level == Level::Genus && *v != Verdict::Unknown => {
                format!("{} at genus level", v.label())
            }
            (Some(v), _) => v.label().into(),
        }
    }
}

/// A record judged by its photo's calibrated probabilities and, where the model has a prior
/// and the record a date or place, by those too: the verdict and doubt come from the
/// combination, the photo's own figures are kept beside it, and a claim rare for its month or
/// latitude is flagged whatever the photo shows.
pub fn judge_record(
    record: Record,
    calibrated: &[f32],
    novelty: Option<Novelty>,
    resolver: &Resolver,
    prior: Option<&Prior>,
    thresholds: &Thresholds,
) -> CheckedRecord {
    let species = resolver.species();
    let resolution = resolver.resolve(&record.claimed);
    if let Resolution::Ambiguous { species } = &resolution {
        let message = resolver.ambiguity(record.claimed.trim(), species);
        return CheckedRecord::failed(record, message);
    }
    let claim = resolution.claim();
    let adjusted = in_context(prior, calibrated, &record.context);
    let p = adjusted.as_deref().unwrap_or(calibrated);
    let (verdict, doubt) = judge(p, species, &claim, thresholds, novelty.as_ref());
    // The flight period and range are a species' own.
    let flags = match (prior, &claim) {
        (Some(prior), Claim::Species { index }) => {
            prior.flags(*index, &record.context, thresholds.rare_below)
        }
        _ => Vec::new(),
    };
    CheckedRecord {
        understood: resolver.understood(&resolution),
        claimed_probability: claim.probability(p).map(f64::from),
        image_claimed_probability: claim.probability(calibrated).map(f64::from),
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
        photos: Vec::new(),
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
        // Records are counted under the species their name was understood as.
        let claimed = r
            .understood
            .as_ref()
            .map_or(r.record.claimed.trim(), |u| &u.name);
        *t.by_claimed_species
            .entry(claimed.to_string())
            .or_default()
            .entry(label)
            .or_default() += 1;
    }
    t
}
