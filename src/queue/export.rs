//! `vlinder queue export`: every record of the queue with the model's verdict and the latest
//! decision, as CSV, most doubtful first.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::database::Database;
use crate::files::{csv_field, write_atomic_with};
use crate::{Error, Result};

/// The configuration of `vlinder queue export`.
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct ExportConfig {
    /// The queue's database: a SQLite file or a postgres:// URL.
    #[arg(long, default_value = super::DEFAULT_DATABASE, value_name = "URL")]
    pub database: String,
    /// The CSV to write (replaced atomically).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// The export's columns.
pub const HEADER: &[&str] = &[
    "id",
    "line",
    "photo",
    "claimed",
    "observed_on",
    "verdict",
    "predicted",
    "predicted_probability",
    "claimed_probability",
    "doubt",
    "model",
    "decisions",
    "decision",
    "decided_species",
    "validator",
    "decided_at",
];

/// Writes every record to `config.out`; returns how many.
pub fn export(config: &ExportConfig) -> Result<u64> {
    let runtime = super::runtime()?;
    let database = runtime.block_on(Database::open(&config.database))?;
    let out = &config.out;
    let mut rows = 0u64;
    write_atomic_with(out, |file| {
        let io = |e: std::io::Error| Error::io(out, e);
        writeln!(file, "{}", HEADER.join(",")).map_err(io)?;
        runtime.block_on(database.for_each_record(|r| {
            let number = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
            let text = |v: &Option<String>| v.as_deref().map(csv_field).unwrap_or_default();
            let fields = [
                csv_field(&r.id),
                r.line.to_string(),
                csv_field(&r.photo),
                csv_field(&r.claimed),
                text(&r.observed_on),
                csv_field(&r.verdict),
                text(&r.predicted),
                number(r.predicted_probability),
                number(r.claimed_probability),
                format!("{:.6}", r.doubt),
                csv_field(&r.model),
                r.decisions.to_string(),
                r.decision
                    .map(|d| d.as_str().to_string())
                    .unwrap_or_default(),
                text(&r.decided_species),
                text(&r.decided_by),
                r.decided_at.map(|t| t.to_string()).unwrap_or_default(),
            ];
            rows += 1;
            writeln!(file, "{}", fields.join(",")).map_err(io)
        }))
    })?;
    Ok(rows)
}
