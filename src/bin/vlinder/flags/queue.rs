//! The flags of `queue import` and `queue export`.

use std::path::PathBuf;

use clap::Args;
use vlinder::check::CHUNK;
use vlinder::queue::DEFAULT_DATABASE;
use vlinder::queue::export::ExportConfig;
use vlinder::queue::import::{ImportConfig, Shard};

use super::check::CheckInputArgs;

/// The flags of [`ImportConfig`].
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub input: CheckInputArgs,
    /// The queue's database: a SQLite file (created if missing) or a postgres:// URL.
    #[arg(long, default_value = DEFAULT_DATABASE, value_name = "URL")]
    pub database: String,
    /// Check again, with this model, records stored by another model (decisions are kept).
    #[arg(long)]
    pub recheck: bool,
    /// Take only every N-th record, starting at the I-th (0-based), so that N processes share
    /// one import.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// Records classified and committed together.
    #[arg(long, default_value_t = CHUNK)]
    pub batch: usize,
}

impl From<ImportArgs> for ImportConfig {
    fn from(args: ImportArgs) -> Self {
        ImportConfig {
            input: args.input.into(),
            database: args.database,
            recheck: args.recheck,
            shard: args.shard,
            batch: args.batch,
        }
    }
}

/// The flags of [`ExportConfig`].
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The queue's database: a SQLite file or a postgres:// URL.
    #[arg(long, default_value = DEFAULT_DATABASE, value_name = "URL")]
    pub database: String,
    /// The CSV to write (replaced atomically).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

impl From<ExportArgs> for ExportConfig {
    fn from(args: ExportArgs) -> Self {
        ExportConfig {
            database: args.database,
            out: args.out,
        }
    }
}
