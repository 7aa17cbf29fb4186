//! `vlinder queue export`: every record of the queue with the model's verdict and the latest
//! decision, as CSV, most doubtful first.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::database::Database;
use super::store::QueueEntry;
use crate::files::{csv_field, write_atomic_with};
use crate::{Error, Result};

/// The configuration of `vlinder queue export`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportConfig {
    /// The queue's database: a SQLite file or a postgres:// URL.
    pub database: String,
    /// The CSV to write (replaced atomically).
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

/// One record as a line of the export (without its line break).
pub fn csv_line(r: &QueueEntry) -> String {
    let number = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
    let text = |v: &Option<String>| v.as_deref().map(csv_field).unwrap_or_default();
    [
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
        r.decided_at.map(iso_time).unwrap_or_default(),
    ]
    .join(",")
}

/// Seconds since 1970 as `2026-12-03T13:45:00Z`.
pub fn iso_time(seconds: i64) -> String {
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Days to a civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

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
            rows += 1;
            writeln!(file, "{}", csv_line(r)).map_err(io)
        }))
    })?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_iso_8601_in_utc() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso_time(1_796_300_130), "2026-12-03T12:15:30Z");
    }
}
