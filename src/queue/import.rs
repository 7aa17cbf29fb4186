//! `vlinder queue import`: records checked as `vlinder check` does, stored in the queue's
//! database a batch at a time. The CSV is read as a stream; each batch is one transaction, so a
//! killed import loses at most the batch under way, and the next run skips what is stored.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::database::Database;
use super::store::Stored;
use crate::check::records;
use crate::check::{CheckInput, check_records};
use crate::trained::ModelDir;
use crate::{Error, Result, progress};

/// The longer side of the thumbnails the queue's page shows.
pub const THUMBNAIL: u32 = 320;

/// One of N processes that share an import: it takes the records whose data row number
/// (0 for the first) leaves `index` when divided by `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `I/N`, 0 <= I < N, as a Kubernetes Indexed Job's JOB_COMPLETION_INDEX counts.
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let parsed = text.split_once('/').and_then(|(i, n)| {
            Some(Shard {
                index: i.trim().parse().ok()?,
                count: n.trim().parse().ok()?,
            })
        });
        match parsed {
            Some(shard) if shard.count > 0 && shard.index < shard.count => Ok(shard),
            _ => Err(format!(
                "{text:?} is not a shard: give I/N with 0 <= I < N, e.g. 0/4 for the first of four"
            )),
        }
    }
}

/// The configuration of `vlinder queue import`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportConfig {
    pub input: CheckInput,
    /// The queue's database: a SQLite file (created if missing) or a postgres:// URL.
    pub database: String,
    /// Check again, with this model, records stored by another model (decisions are kept).
    pub recheck: bool,
    /// Take only every N-th record, starting at the I-th (0-based), so that N processes share
    /// one import.
    pub shard: Option<Shard>,
    /// Records classified and committed together.
    pub batch: usize,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImportReport {
    /// Data rows of the CSV read (this shard's and others').
    pub rows: u64,
    /// Records checked and stored now.
    pub stored: u64,
    /// Of those, records whose photo or row could not be read (stored with verdict `error`).
    pub errors: u64,
    /// Records stored before by this model: not checked again.
    pub already: u64,
    /// Records stored before by another model and kept (give --recheck to check them).
    pub other_model: u64,
    /// Records another model had checked, checked again with --recheck.
    pub rechecked: u64,
    /// Ids met again in the CSV (each with its line and the line it was first on): the first
    /// is kept, the others are not checked.
    pub repeated: Vec<(String, u64, u64)>,
    /// Records with an empty id: not stored (an id is what a decision refers to).
    pub without_id: Vec<u64>,
    /// Rows the CSV reader could not read (their line and why): not stored.
    pub malformed: Vec<(u64, String)>,
    pub model: String,
    pub seconds: f64,
    /// Seconds spent waiting for the database.
    pub database_seconds: f64,
}

/// Imports the records of `config.input.records` into `config.database`.
pub fn import(config: &ImportConfig) -> Result<ImportReport> {
    if !(1..=4096).contains(&config.batch) {
        return Err(Error::invalid("batch", config.batch, "between 1 and 4096"));
    }
    let started = Instant::now();
    let mut clock = DatabaseClock::new()?;
    let database = clock.wait(Database::create(&config.database))?;
    let input = &config.input;
    let model_id = ModelDir::new(&input.model).identity(input.weights)?;
    let model = input.load_model()?;
    let resolver = input.resolver(&model.card.species)?;
    let sources = input.photo_sources()?;
    let mut reader =
        records::Reader::open(&input.records, &input.columns, &input.table)?.enumerate();
    let mut report = ImportReport {
        model: model_id.clone(),
        ..ImportReport::default()
    };
    let mut first_line: HashMap<String, u64> = HashMap::new();
    // A first quick pass counts the rows, for the progress bar's length and ETA.
    let rows = records::Reader::open(&input.records, &input.columns, &input.table)?.count() as u64;
    let share = config.shard.map_or(rows, |s| {
        rows / s.count + u64::from(rows % s.count > s.index)
    });
    let bar = progress::bar(share as usize, "importing");
    loop {
        let mut batch: Vec<records::Record> = Vec::new();
        for (index, row) in reader.by_ref() {
            report.rows += 1;
            if config
                .shard
                .is_some_and(|s| index as u64 % s.count != s.index)
            {
                continue;
            }
            let mut record = match row {
                Ok(record) => record,
                Err(e) => {
                    report.malformed.push((e.record.row, e.message));
                    continue;
                }
            };
            record.id = record.id.trim().to_string();
            if record.id.is_empty() {
                report.without_id.push(record.row);
                continue;
            }
            if let Some(first) = first_line.get(&record.id) {
                report.repeated.push((record.id, record.row, *first));
                continue;
            }
            first_line.insert(record.id.clone(), record.row);
            batch.push(record);
            if batch.len() == config.batch {
                break;
            }
        }
        if batch.is_empty() {
            break;
        }
        let ids: Vec<&str> = batch.iter().map(|r| r.id.as_str()).collect();
        let stored = clock.wait(database.stored(&ids, &model_id))?;
        let n = batch.len() as u64;
        let mut todo = Vec::new();
        for record in batch {
            match stored.get(&record.id) {
                Some(Stored::ByThisModel) => report.already += 1,
                Some(Stored::ByAnotherModel) if !config.recheck => report.other_model += 1,
                found => {
                    if found == Some(&Stored::ByAnotherModel) {
                        report.rechecked += 1;
                    }
                    todo.push(Ok(record));
                }
            }
        }
        if !todo.is_empty() {
            let mut checked = check_records(
                &model,
                &resolver,
                todo,
                &sources,
                &input.thresholds,
                THUMBNAIL,
            );
            // Paths relative to the CSV mean nothing once in the database: keep where the
            // photo is, for the page and for `train --reviewed`.
            for photo in checked.iter_mut().flat_map(|r| {
                r.record
                    .photos
                    .iter_mut()
                    .chain(r.photos.iter_mut().map(|p| &mut p.photo))
            }) {
                if !photo.starts_with("http://")
                    && !photo.starts_with("https://")
                    && let Ok(path) = sources.base.join(photo.trim()).canonicalize()
                {
                    *photo = path.display().to_string();
                }
            }
            report.errors += checked.iter().filter(|r| r.error.is_some()).count() as u64;
            report.stored += checked.len() as u64;
            clock.wait(database.store(&checked, &model_id))?;
        }
        bar.inc(n);
    }
    bar.finish_and_clear();
    report.seconds = started.elapsed().as_secs_f64();
    report.database_seconds = clock.spent.as_secs_f64();
    Ok(report)
}

/// Runs the database's work from synchronous code and adds up the time it takes.
struct DatabaseClock {
    runtime: tokio::runtime::Runtime,
    spent: Duration,
}

impl DatabaseClock {
    fn new() -> Result<Self> {
        Ok(DatabaseClock {
            runtime: super::runtime()?,
            spent: Duration::ZERO,
        })
    }

    fn wait<T>(&mut self, work: impl Future<Output = Result<T>>) -> Result<T> {
        let started = Instant::now();
        let out = self.runtime.block_on(work);
        self.spent += started.elapsed();
        out
    }
}
