//! The flags of `check`: the records, their columns and the verdict thresholds.

use std::path::PathBuf;

use clap::Args;
use vlinder::check::records::Columns;
use vlinder::check::table::{Encoding, TableOptions};
use vlinder::check::{CheckConfig, CheckInput, Thresholds};
use vlinder::device::Backend;
use vlinder::trained::WeightsChoice;

/// The flags of [`Thresholds`].
#[derive(Debug, Args)]
pub struct ThresholdsArgs {
    /// At or above this probability of the claimed species, the photo agrees.
    #[arg(long, default_value_t = Thresholds::default().agree)]
    pub agree: f64,
    /// At or below this probability of the claimed species, the photo disagrees.
    #[arg(long, default_value_t = Thresholds::default().disagree)]
    pub disagree: f64,
    /// With a model that has a date and place prior: a claimed species with less than this
    /// share of its records in the record's month (or latitude band) is flagged "outside its
    /// flight period" ("outside its known range"), whatever the photo shows.
    #[arg(long, default_value_t = Thresholds::default().rare_below)]
    pub rare_below: f64,
}

impl From<ThresholdsArgs> for Thresholds {
    fn from(args: ThresholdsArgs) -> Self {
        Thresholds {
            agree: args.agree,
            disagree: args.disagree,
            rare_below: args.rare_below,
        }
    }
}

/// The flags of [`Columns`].
#[derive(Debug, Args)]
pub struct ColumnsArgs {
    /// The column with the record's id.
    #[arg(long, value_name = "NAME", default_value_t = Columns::default().id_column)]
    pub id_column: String,
    /// The column with the record's photo: a path (relative to the records file) or an http(s)
    /// URL, or several separated by `|`. Give it more than once for photos in several columns.
    #[arg(long, value_name = "NAME", default_values_t = Columns::default().photo_columns)]
    pub photo_column: Vec<String>,
    /// The column with the species the volunteer named: a scientific or common name (see
    /// --names).
    #[arg(long, value_name = "NAME", default_value_t = Columns::default().species_column)]
    pub species_column: String,
    /// The column with the observation date (2021-04-25 or 25-04-2021, a time may follow),
    /// for a model with a date and place prior.
    #[arg(long, value_name = "NAME")]
    pub date_column: Option<String>,
    /// The column with the latitude in decimal degrees.
    #[arg(long, value_name = "NAME", requires = "longitude_column")]
    pub latitude_column: Option<String>,
    /// The column with the longitude in decimal degrees.
    #[arg(long, value_name = "NAME", requires = "latitude_column")]
    pub longitude_column: Option<String>,
}

impl From<ColumnsArgs> for Columns {
    fn from(args: ColumnsArgs) -> Self {
        Columns {
            id_column: args.id_column,
            photo_columns: args.photo_column,
            species_column: args.species_column,
            date_column: args.date_column,
            latitude_column: args.latitude_column,
            longitude_column: args.longitude_column,
        }
    }
}

/// The flags of [`TableOptions`].
#[derive(Debug, Args)]
pub struct TableArgs {
    /// The CSV's field separator: `,`, `;`, `tab` or another character (default: whichever of
    /// comma, semicolon and tab the header row has most of).
    #[arg(long, value_name = "CHAR", value_parser = delimiter)]
    pub delimiter: Option<char>,
    /// The CSV's encoding (default: UTF-8, with or without a byte-order mark, or Windows-1252
    /// when the file is not valid UTF-8).
    #[arg(long, value_enum)]
    pub encoding: Option<Encoding>,
    /// The worksheet of an .xlsx workbook (default: the first).
    #[arg(long, value_name = "NAME")]
    pub sheet: Option<String>,
}

/// `tab` or a single character.
fn delimiter(value: &str) -> Result<char, String> {
    match value {
        "tab" | "\\t" => Ok('\t'),
        _ => {
            let mut chars = value.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Ok(c),
                _ => Err(format!(
                    "{value:?} is not one character; give e.g. ';' or tab"
                )),
            }
        }
    }
}

impl From<TableArgs> for TableOptions {
    fn from(args: TableArgs) -> Self {
        TableOptions {
            delimiter: args.delimiter,
            encoding: args.encoding,
            sheet: args.sheet,
        }
    }
}

/// The flags of [`CheckInput`].
#[derive(Debug, Args)]
pub struct CheckInputArgs {
    /// The model directory.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// The records: a CSV (any of the usual separators and encodings) or an .xlsx workbook
    /// with a header row; photo paths are relative to its folder.
    #[arg(value_name = "RECORDS")]
    pub records: PathBuf,
    #[command(flatten)]
    pub columns: ColumnsArgs,
    #[command(flatten)]
    pub table: TableArgs,
    /// Photo paths must lie inside this folder, once `..` and links are resolved (default: the
    /// CSV's folder), so that a records file cannot make vlinder read other files.
    #[arg(long, value_name = "DIR")]
    pub photos_root: Option<PathBuf>,
    /// Fetch photo URLs that lead to loopback, private or link-local addresses too (refused by
    /// default, so that a records file cannot make vlinder probe this machine or its network).
    #[arg(long)]
    pub allow_private_urls: bool,
    /// The species' common names and synonyms that claimed names are resolved with: a CSV
    /// with the columns scientific, nl, en and synonyms (`|`-separated), as `vlinder names gbif`
    /// writes it (default: the built-in Dutch butterflies).
    #[arg(long, value_name = "FILE")]
    pub names: Option<PathBuf>,
    /// Stop before checking anything when a claimed name resolves to none of the model's
    /// species (they are listed first either way).
    #[arg(long)]
    pub strict_names: bool,
    #[command(flatten)]
    pub thresholds: ThresholdsArgs,
    #[arg(long, value_enum, default_value_t = WeightsChoice::Last)]
    pub weights: WeightsChoice,
    #[arg(long, value_enum, default_value_t = Backend::Flex)]
    pub device: Backend,
}

impl From<CheckInputArgs> for CheckInput {
    fn from(args: CheckInputArgs) -> Self {
        CheckInput {
            model: args.model,
            records: args.records,
            columns: args.columns.into(),
            table: args.table.into(),
            photos_root: args.photos_root,
            allow_private_urls: args.allow_private_urls,
            names: args.names,
            thresholds: args.thresholds.into(),
            weights: args.weights,
            device: args.device,
        }
    }
}

/// The flags of [`CheckConfig`].
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub input: CheckInputArgs,
    /// Where results.csv, report.html and check.json go (default: RECORDS-check beside the CSV).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print this many of the most doubtful records under the totals (0: none).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
}

impl From<CheckArgs> for CheckConfig {
    fn from(args: CheckArgs) -> Self {
        CheckConfig {
            input: args.input.into(),
            out: args.out,
        }
    }
}
