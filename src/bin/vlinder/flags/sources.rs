//! The flags of `fetch` and `prior gbif`.

use std::path::PathBuf;

use clap::Args;
use vlinder::sources::flickr::{self, FlickrConfig, FlickrSize};
use vlinder::sources::gbif::{self, GbifConfig, GbifNamesConfig, GbifPriorConfig};
use vlinder::sources::{ApiOptions, FetchOptions};

/// The flags of [`FetchOptions`].
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The collection folder: one sub-folder per species, manifest.jsonl and ATTRIBUTION.md.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Photos per species to have in the folder, counting those already there; -1 for all.
    #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
    pub max: i64,
    /// Photos downloaded at once.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    #[command(flatten)]
    pub api: ApiArgs,
}

impl From<FetchArgs> for FetchOptions {
    fn from(args: FetchArgs) -> Self {
        FetchOptions {
            out: args.out,
            max: args.max,
            jobs: args.jobs,
            api: args.api.into(),
        }
    }
}

/// The flags of [`ApiOptions`].
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// API calls per hour at most (Flickr allows 3,600 per key).
    #[arg(long, default_value_t = 3500)]
    pub calls_per_hour: u32,
    /// Further attempts after a failure that may pass (time-out, HTTP 429 or 5xx).
    #[arg(long, default_value_t = 4)]
    pub retries: u32,
    /// Seconds before the first retry; each further one waits twice as long.
    #[arg(long, default_value_t = 2.0)]
    pub backoff: f64,
    /// Seconds a request may take.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Download photos whose URLs lead to loopback, private or link-local addresses too (refused
    /// by default: the URLs come from the service's answers).
    #[arg(long)]
    pub allow_private_urls: bool,
}

impl From<ApiArgs> for ApiOptions {
    fn from(args: ApiArgs) -> Self {
        ApiOptions {
            calls_per_hour: args.calls_per_hour,
            retries: args.retries,
            backoff: args.backoff,
            timeout: args.timeout,
            allow_private_urls: args.allow_private_urls,
        }
    }
}

/// The flags of [`FlickrConfig`].
#[derive(Debug, Args)]
pub struct FlickrArgs {
    /// Species as FOLDER=SEARCH TEXT, e.g. maniola_jurtina="meadow brown butterfly".
    #[arg(value_name = "FOLDER=TEXT", required = true)]
    pub species: Vec<String>,
    #[arg(long, value_enum, default_value_t = FlickrSize::Medium)]
    pub size: FlickrSize,
    /// Flickr licence ids to accept (the recipe's: 1 BY-NC-SA, 2 BY-NC, 4 BY, 5 BY-SA).
    #[arg(long, value_delimiter = ',', default_values_t = [1u64, 2, 4, 5])]
    pub licenses: Vec<u64>,
    /// A file holding the API key (default: $FLICKR_API_KEY, else ~/.config/vlinder/flickr-api-key).
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// The REST endpoint.
    #[arg(long, default_value = flickr::DEFAULT_URL)]
    pub base_url: String,
    /// Results per search page (Flickr allows up to 500).
    #[arg(long, default_value_t = 500)]
    pub per_page: u64,
    #[command(flatten)]
    pub options: FetchArgs,
}

impl From<FlickrArgs> for FlickrConfig {
    fn from(args: FlickrArgs) -> Self {
        FlickrConfig {
            species: args.species,
            size: args.size,
            licenses: args.licenses,
            api_key_file: args.api_key_file,
            base_url: args.base_url,
            per_page: args.per_page,
            options: args.options.into(),
        }
    }
}

/// The flags of [`GbifConfig`].
#[derive(Debug, Args)]
pub struct GbifArgs {
    /// Species by scientific name, e.g. "Maniola jurtina" (into folder maniola_jurtina), or
    /// FOLDER="Scientific name".
    #[arg(value_name = "SPECIES", required = true)]
    pub species: Vec<String>,
    /// Only observations from this country (ISO 3166 code, e.g. GB).
    #[arg(long)]
    pub country: Option<String>,
    /// Only this dataset, e.g. 50c9509d-22c7-4a22-a47d-8c48425ef4a7 (iNaturalist
    /// research-grade) or 8a863029-f435-446a-821e-275f4f641165 (Observation.org).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Licences to accept, as GBIF names them.
    #[arg(long, value_delimiter = ',', default_values_t = ["CC0_1_0".to_string(), "CC_BY_4_0".into(), "CC_BY_NC_4_0".into()])]
    pub licenses: Vec<String>,
    /// The API's base URL.
    #[arg(long, default_value = gbif::DEFAULT_URL)]
    pub base_url: String,
    #[command(flatten)]
    pub options: FetchArgs,
}

impl From<GbifArgs> for GbifConfig {
    fn from(args: GbifArgs) -> Self {
        GbifConfig {
            species: args.species,
            country: args.country,
            dataset: args.dataset,
            licenses: args.licenses,
            base_url: args.base_url,
            options: args.options.into(),
        }
    }
}

/// The flags of [`GbifPriorConfig`].
#[derive(Debug, Args)]
pub struct GbifPriorArgs {
    /// Species by scientific name, e.g. "Maniola jurtina" (for the model's maniola_jurtina), or
    /// FOLDER="Scientific name".
    #[arg(value_name = "SPECIES", required = true)]
    pub species: Vec<String>,
    /// The country whose occurrences are counted (ISO 3166 code, e.g. NL).
    #[arg(long)]
    pub country: String,
    /// Only this dataset's occurrences.
    #[arg(long)]
    pub dataset: Option<String>,
    /// The API's base URL.
    #[arg(long, default_value = gbif::DEFAULT_URL)]
    pub base_url: String,
    /// Where the prior goes (JSON, for `vlinder train --prior`).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub api: ApiArgs,
}

impl From<GbifPriorArgs> for GbifPriorConfig {
    fn from(args: GbifPriorArgs) -> Self {
        GbifPriorConfig {
            species: args.species,
            country: args.country,
            dataset: args.dataset,
            base_url: args.base_url,
            out: args.out,
            api: args.api.into(),
        }
    }
}

/// The flags of [`GbifNamesConfig`].
#[derive(Debug, Args)]
pub struct GbifNamesArgs {
    /// Species by scientific name, e.g. "Maniola jurtina".
    #[arg(value_name = "SPECIES", required_unless_present = "model")]
    pub species: Vec<String>,
    /// Every species of this model, by its scientific name.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// A names file to extend: its names are kept, GBIF's are merged in.
    #[arg(long, value_name = "FILE")]
    pub extend: Option<PathBuf>,
    /// The API's base URL.
    #[arg(long, default_value = gbif::DEFAULT_URL)]
    pub base_url: String,
    /// Where the names file goes (CSV: scientific, nl, en, synonyms; for --names).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub api: ApiArgs,
}

impl From<GbifNamesArgs> for GbifNamesConfig {
    fn from(args: GbifNamesArgs) -> Self {
        GbifNamesConfig {
            species: args.species,
            extend: args.extend,
            base_url: args.base_url,
            out: args.out,
            api: args.api.into(),
        }
    }
}
