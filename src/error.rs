//! The library's error type: every variant names the file or value at fault and what to do.

use std::path::PathBuf;

/// Result with vlinder's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in vlinder's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: cannot read this photo ({reason}); skip or replace the file")]
    Photo { path: PathBuf, reason: String },

    #[error("{path}: {reason}")]
    Layout { path: PathBuf, reason: String },

    #[error(
        "{path}: not a vlinder model directory ({reason}); train one with `vlinder train --out {path}`"
    )]
    ModelMissing { path: PathBuf, reason: String },

    #[error(
        "{path}: unreadable model file ({reason}); retrain the model or restore the file from a backup"
    )]
    ModelCorrupt { path: PathBuf, reason: String },

    #[error(
        "{path}: model format version {found}, but this vlinder reads version {expected}; retrain the model with this version of vlinder"
    )]
    ModelVersion {
        path: PathBuf,
        found: u32,
        expected: u32,
    },

    #[error("{origin}: {reason}")]
    Backbone { origin: String, reason: String },

    #[error("species {species:?} in {path} is unknown to the model, which knows: {known}")]
    UnknownSpecies {
        species: String,
        path: PathBuf,
        known: String,
    },

    #[error("invalid {name} = {value}: {expected}")]
    InvalidValue {
        name: &'static str,
        value: String,
        expected: String,
    },

    #[error("{service}: {reason}")]
    Source {
        service: &'static str,
        reason: String,
    },

    #[error("database {database}: {reason}")]
    Database { database: String, reason: String },

    #[error("cannot write {path}: {reason}")]
    Output { path: PathBuf, reason: String },

    #[error(
        "training diverged in epoch {epoch} (loss {loss}); {path} keeps epoch {kept}; train again with a lower --learning-rate than {learning_rate}"
    )]
    Diverged {
        path: PathBuf,
        epoch: usize,
        kept: usize,
        loss: f64,
        learning_rate: f64,
    },
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Output`] for `path`.
    pub fn output(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        Error::Output {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    /// An [`Error::InvalidValue`] for the parameter `name`.
    pub fn invalid(name: &'static str, value: impl ToString, expected: impl Into<String>) -> Self {
        Error::InvalidValue {
            name,
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}
