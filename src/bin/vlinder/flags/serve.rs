//! The flags of `serve`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use vlinder::device::Backend;
use vlinder::serve::ServeConfig;
use vlinder::trained::WeightsChoice;

use super::check::ThresholdsArgs;

/// The library's defaults, which the flags show and take.
fn defaults() -> ServeConfig {
    ServeConfig::default()
}

/// The flags of [`ServeConfig`].
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The model directory.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// The address to listen on.
    #[arg(long, default_value_t = defaults().addr)]
    pub addr: SocketAddr,
    /// The largest upload accepted, in bytes; larger ones get 413.
    #[arg(long, default_value_t = defaults().max_upload_bytes)]
    pub max_upload_bytes: usize,
    /// A request that takes longer than this (a slow upload included) gets 408, and its work
    /// stops.
    #[arg(long, default_value_t = defaults().timeout_seconds)]
    pub timeout_seconds: u64,
    /// The most pixels (width x height) an uploaded photo may have; a larger one gets 422 from
    /// its header, before it is decoded. 40 megapixels holds any phone's photo.
    #[arg(long, default_value_t = defaults().max_pixels)]
    pub max_pixels: u64,
    /// Photos decoded at once (default: one per core); further requests wait their turn.
    #[arg(long, value_name = "N")]
    pub decoders: Option<usize>,
    /// Connections open at once; a further one gets 503 with Retry-After.
    #[arg(long, default_value_t = defaults().max_connections)]
    pub max_connections: usize,
    /// A connection must send a whole request head within this many seconds of opening or of its
    /// last answer, or it is closed: this ends both trickled headers and idle connections.
    #[arg(long, default_value_t = defaults().header_timeout_seconds)]
    pub header_timeout_seconds: u64,
    /// On Ctrl-C or SIGTERM the requests in flight get this long to finish; a second signal stops
    /// at once.
    #[arg(long, default_value_t = defaults().shutdown_seconds)]
    pub shutdown_seconds: u64,
    /// Show the model card's local paths (training folders, backbone file, skipped files) in
    /// `GET /v1/model`; without it they are left out.
    #[arg(long)]
    pub expose_paths: bool,
    /// The most photos the model classifies in one pass.
    #[arg(long, default_value_t = defaults().max_batch)]
    pub max_batch: usize,
    #[command(flatten)]
    pub thresholds: ThresholdsArgs,
    #[arg(long, value_enum, default_value_t = defaults().weights)]
    pub weights: WeightsChoice,
    #[arg(long, value_enum, default_value_t = defaults().device)]
    pub device: Backend,
    /// The review queue's database (a SQLite file or a postgres:// URL, as `vlinder queue
    /// import` filled it): validators sign in at /queue and decide its records.
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// Species' common names for the queue's page: a CSV with the columns scientific, nl, en
    /// (default: the Dutch butterflies built into vlinder).
    #[arg(long, value_name = "FILE")]
    pub names: Option<PathBuf>,
    /// How long a validator stays signed in.
    #[arg(long, default_value_t = defaults().session_hours)]
    pub session_hours: u64,
    /// Mark the session cookie Secure (for a server behind HTTPS).
    #[arg(long)]
    pub secure_cookies: bool,
}

impl From<ServeArgs> for ServeConfig {
    fn from(args: ServeArgs) -> Self {
        ServeConfig {
            model: args.model,
            addr: args.addr,
            max_upload_bytes: args.max_upload_bytes,
            timeout_seconds: args.timeout_seconds,
            max_pixels: args.max_pixels,
            decoders: args.decoders,
            max_connections: args.max_connections,
            header_timeout_seconds: args.header_timeout_seconds,
            shutdown_seconds: args.shutdown_seconds,
            expose_paths: args.expose_paths,
            max_batch: args.max_batch,
            thresholds: args.thresholds.into(),
            weights: args.weights,
            device: args.device,
            database: args.database,
            names: args.names,
            session_hours: args.session_hours,
            secure_cookies: args.secure_cookies,
        }
    }
}
