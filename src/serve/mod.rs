//! `vlinder serve`: the model over HTTP for other programs and for reviewers.
//!
//! `POST /v1/classify` ranks the species of a photo, `POST /v1/check` judges a photo against a
//! claimed species, `GET /v1/model` returns the model card, `GET /healthz` says whether the
//! server and its model thread are up, and `GET /` is a page for reviewers. Photos are decoded on
//! blocking threads, a bounded number at once; one model thread takes every request waiting at
//! that moment as one batch, so batches grow with the load. Errors are JSON of one shape:
//! `{"error": {"code": "...", "message": "..."}}`.
//!
//! With `--database`, the review queue is served too ([`review`]): validators sign in, list the
//! queue (`GET /v1/queue`), read a record and decide it, on the page at `/queue`.
//!
//! The connections are served by our own loop over hyper: a request head must arrive within
//! `--header-timeout-seconds` of a connection opening or of its last answer (which also closes
//! idle connections), at most `--max-connections` are open (a further one gets 503), and a
//! shutdown waits at most `--shutdown-seconds` for the requests in flight.

mod review;
mod upload;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::check::records::Record;
use crate::check::{Thresholds, Verdict, judge_record};
use crate::context::{Context, Flag};
use crate::dataset::decode;
use crate::device::Backend;
use crate::names::{Resolution, Resolver, Understood};
use crate::novelty::Novelty;
use crate::predict::{Ranked, rank_in_context};
use crate::trained::{Assessment, ModelCard, ModelDir, TrainedModel, WeightsChoice};
use crate::{Error, Result};

/// The configuration of `vlinder serve`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServeConfig {
    /// The model directory.
    pub model: PathBuf,
    /// The address to listen on.
    pub addr: SocketAddr,
    /// The largest upload accepted, in bytes; larger ones get 413.
    pub max_upload_bytes: usize,
    /// A request that takes longer than this (a slow upload included) gets 408, and its work
    /// stops.
    pub timeout_seconds: u64,
    /// The most pixels (width x height) an uploaded photo may have; a larger one gets 422 from
    /// its header, before it is decoded. 40 megapixels holds any phone's photo.
    pub max_pixels: u64,
    /// Photos decoded at once (default: one per core); further requests wait their turn.
    pub decoders: Option<usize>,
    /// Connections open at once; a further one gets 503 with Retry-After.
    pub max_connections: usize,
    /// A connection must send a whole request head within this many seconds of opening or of its
    /// last answer, or it is closed: this ends both trickled headers and idle connections.
    pub header_timeout_seconds: u64,
    /// On Ctrl-C or SIGTERM the requests in flight get this long to finish; a second signal stops
    /// at once.
    pub shutdown_seconds: u64,
    /// Show the model card's local paths (training folders, backbone file, skipped files) in
    /// `GET /v1/model`; without it they are left out.
    pub expose_paths: bool,
    /// The most photos the model classifies in one pass.
    pub max_batch: usize,
    pub thresholds: Thresholds,
    pub weights: WeightsChoice,
    pub device: Backend,
    /// The review queue's database (a SQLite file or a postgres:// URL, as `vlinder queue
    /// import` filled it): validators sign in at /queue and decide its records.
    pub database: Option<String>,
    /// Species' common names for the queue's page: a CSV with the columns scientific, nl, en
    /// (default: the Dutch butterflies built into vlinder).
    pub names: Option<PathBuf>,
    /// How long a validator stays signed in.
    pub session_hours: u64,
    /// Mark the session cookie Secure (for a server behind HTTPS).
    pub secure_cookies: bool,
}

impl Default for ServeConfig {
    /// Every option's default, written once (the command line shows and takes these); no model
    /// yet: set `model`.
    fn default() -> Self {
        ServeConfig {
            model: PathBuf::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_upload_bytes: 20 * 1024 * 1024,
            timeout_seconds: 30,
            max_pixels: 40_000_000,
            decoders: None,
            max_connections: 256,
            header_timeout_seconds: 10,
            shutdown_seconds: 10,
            expose_paths: false,
            max_batch: 32,
            thresholds: Thresholds::default(),
            weights: WeightsChoice::Last,
            device: Backend::Flex,
            database: None,
            names: None,
            session_hours: 12,
            secure_cookies: false,
        }
    }
}

/// A request for the model thread.
struct Job {
    pixels: Vec<u8>,
    reply: oneshot::Sender<Assessment>,
}

struct AppState {
    card: ModelCard,
    /// The card as `GET /v1/model` shows it.
    public_card: serde_json::Value,
    thresholds: Thresholds,
    max_upload: usize,
    max_pixels: u64,
    /// One permit per decode that may run at once.
    decoders: Arc<Semaphore>,
    jobs: mpsc::Sender<Job>,
    model: Arc<ModelHealth>,
    /// The review queue, when the server has a database.
    review: Option<Arc<review::Review>>,
    /// Claimed names as people write them, resolved to the model's species.
    resolver: Resolver,
}

/// What the model thread has done, for `/healthz`.
#[derive(Debug, Default)]
pub struct ModelHealth {
    running: AtomicBool,
    batches: AtomicU64,
    /// Batches on which the model panicked; the thread goes on with the next one.
    failures: AtomicU64,
}

/// An error answer: status, a stable code and a message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

/// The answer of `/v1/classify`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Classification {
    /// With the date and place where the model has a prior and the request gives them.
    pub ranking: Vec<Ranked>,
    /// The photo alone's ranking, when the date or place changed it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_ranking: Vec<Ranked>,
    /// Whether the photo shows one of the model's species at all (absent for a model without
    /// an unknown-ness score).
    pub novelty: Option<Novelty>,
    #[serde(flatten)]
    pub context: Context,
    /// What of the date or place could not be used, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_warnings: Vec<String>,
}

/// The answer of `/v1/check`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CheckAnswer {
    pub claimed: String,
    /// What the claimed name was understood as, when it names one of the model's species or
    /// genera.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub understood: Option<Understood>,
    /// For a name none of the model's species has: the closest name the model knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closest_known_name: Option<String>,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub claimed_probability: Option<f64>,
    /// The photo alone's probability of the claimed species.
    pub image_claimed_probability: Option<f64>,
    pub doubt: f64,
    pub ranking: Vec<Ranked>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_ranking: Vec<Ranked>,
    pub novelty: Option<Novelty>,
    /// Why the claimed species is suspect for the date or place given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<Flag>,
    #[serde(flatten)]
    pub context: Context,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_warnings: Vec<String>,
}

/// The date and place of a request, from its form fields or else its query.
fn context_of(upload: &upload::Upload, query: &HashMap<String, String>) -> (Context, Vec<String>) {
    let field = |form: &Option<String>, name: &str| {
        form.clone()
            .or_else(|| query.get(name).cloned())
            .unwrap_or_default()
    };
    Context::parse(
        &field(&upload.date, "date"),
        &field(&upload.latitude, "latitude"),
        &field(&upload.longitude, "longitude"),
    )
}

/// The checks of the service's settings, before the model is loaded.
fn validate(config: &ServeConfig) -> Result<()> {
    config.thresholds.validate()?;
    if config.max_batch == 0 {
        return Err(Error::invalid("max-batch", 0, "at least 1"));
    }
    // An hour at most: a deadline past the clock's range would panic.
    for (name, value) in [
        ("timeout-seconds", config.timeout_seconds),
        ("header-timeout-seconds", config.header_timeout_seconds),
        ("shutdown-seconds", config.shutdown_seconds),
    ] {
        if !(1..=3600).contains(&value) {
            return Err(Error::invalid(name, value, "between 1 and 3600"));
        }
    }
    if !(1..=decode::MAX_PIXELS).contains(&config.max_pixels) {
        return Err(Error::invalid(
            "max-pixels",
            config.max_pixels,
            format!("between 1 and {}", decode::MAX_PIXELS),
        ));
    }
    if config.decoders.is_some_and(|n| !(1..=1024).contains(&n)) {
        return Err(Error::invalid(
            "decoders",
            config.decoders.unwrap_or_default(),
            "between 1 and 1024",
        ));
    }
    if !(1..=24 * 365).contains(&config.session_hours) {
        return Err(Error::invalid(
            "session-hours",
            config.session_hours,
            "between 1 and 8760",
        ));
    }
    if !(1..=65_536).contains(&config.max_connections) {
        return Err(Error::invalid(
            "max-connections",
            config.max_connections,
            "between 1 and 65536",
        ));
    }
    Ok(())
}

/// Loads the model (and opens the queue's database) and builds the HTTP application; the model
/// thread ends with the app.
pub async fn app(config: &ServeConfig) -> Result<Router> {
    validate(config)?;
    let names = match &config.names {
        Some(path) => crate::names::Names::read(path)?,
        None => crate::names::Names::built_in(),
    };
    let review = match &config.database {
        Some(url) => Some(Arc::new(review::Review::new(
            crate::queue::Database::open(url).await?,
            names.clone(),
            config.session_hours as i64 * 3600,
            config.secure_cookies,
        ))),
        None => None,
    };
    let model = ModelDir::new(&config.model).load(config.weights, &config.device.device()?)?;
    if let Err(why) = &model.novelty {
        eprintln!("warning: {why}");
    }
    let card = model.card.clone();
    let (jobs, health) = spawn_model_thread(model, config.max_batch);
    let decoders = config
        .decoders
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let state = Arc::new(AppState {
        resolver: Resolver::new(&card.species, &names),
        public_card: public_card(&card, config.expose_paths),
        card,
        thresholds: config.thresholds,
        max_upload: config.max_upload_bytes,
        max_pixels: config.max_pixels,
        decoders: Arc::new(Semaphore::new(decoders)),
        jobs,
        model: health,
        review,
    });
    Ok(Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .route("/v1/model", get(model_card))
        .route("/v1/classify", post(classify))
        .route("/v1/check", post(check))
        .route("/queue", get(review::page))
        .route(
            "/v1/session",
            get(review::whoami)
                .post(review::sign_in)
                .delete(review::sign_out),
        )
        .route("/v1/queue", get(review::queue))
        .route("/v1/records/{id}", get(review::record))
        .route("/v1/records/{id}/photo", get(review::photo))
        .route("/v1/records/{id}/photos/{seq}", get(review::nth_photo))
        .route("/v1/records/{id}/decisions", post(review::decide))
        // The same with the id in the query, for ids such as `.` and `..`.
        .route("/v1/record", get(review::record_by_query))
        .route("/v1/record/photo", get(review::photo_by_query))
        .route("/v1/record/photos/{seq}", get(review::nth_photo_by_query))
        .route("/v1/record/decisions", post(review::decide_by_query))
        .route("/v1/export", get(review::export_csv))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see GET /v1/model, POST /v1/classify, POST /v1/check, and with --database GET /queue",
            )
        })
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed here; GET /, /healthz and /v1/model, POST /v1/classify and /v1/check"),
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            Duration::from_secs(config.timeout_seconds),
            deadline,
        ))
        .layer(axum::middleware::from_fn(refuse_nul))
        .layer(axum::middleware::map_response(hardened))
        .with_state(state))
}

/// Answers 408 in the usual error shape when a request (its upload included) takes longer than
/// `limit`; the request's own work is dropped with it.
async fn deadline(
    State(limit): State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "the request took longer than {} s; send the photo faster or in a smaller file",
                limit.as_secs()
            ),
        )
        .into_response(),
    }
}

/// The model card without local paths (training folders, the backbone file, skipped files'
/// folders) unless `expose`: they tell a visitor nothing about the model and something about
/// the machine.
fn public_card(card: &ModelCard, expose: bool) -> serde_json::Value {
    let mut value = serde_json::to_value(card).expect("the model card serialises");
    if !expose {
        for field in [
            "data",
            "train",
            "validation",
            "backbone",
            "others",
            "unknown",
            "observations",
            "prior",
        ] {
            value["training"][field] = serde_json::Value::Null;
        }
        if let Some(open_set) = value["open_set"]["unknown"].as_object_mut() {
            open_set.insert("folder".into(), serde_json::Value::Null);
        }
        if let Some(skipped) = value["data"]["skipped"].as_array_mut() {
            for entry in skipped {
                let name = std::path::Path::new(entry["path"].as_str().unwrap_or_default())
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned());
                entry["path"] = name.into();
            }
        }
    }
    value
}

/// Serves on `listener` until the first message on `stop`, then gives the requests in flight
/// `--shutdown-seconds` to finish; a second message (or the deadline) ends them at once.
pub async fn serve(
    config: &ServeConfig,
    listener: tokio::net::TcpListener,
    mut stop: mpsc::UnboundedReceiver<()>,
) -> Result<()> {
    let app = app(config).await?;
    // Said once the model and the database are open, so that it is true.
    let at = listener
        .local_addr()
        .map_err(|e| Error::io(config.addr.to_string(), e))?;
    eprintln!("serving {} on http://{at}", config.model.display());
    if config.database.is_some() {
        eprintln!("the review queue's page: http://{at}/queue");
    }
    let header_timeout = Duration::from_secs(config.header_timeout_seconds);
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let (closing, closing_seen) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.recv() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    // Out of file descriptors, or the peer gave up: wait, the server goes on.
                    Err(e) => {
                        eprintln!("warning: cannot accept a connection ({e})");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                match slots.clone().try_acquire_owned() {
                    Ok(slot) => connections.spawn(connection(
                        stream,
                        // Handlers that limit per client (sign-in) read the peer's address.
                        app.clone().layer(axum::Extension(axum::extract::ConnectInfo(peer))),
                        header_timeout,
                        closing_seen.clone(),
                        slot,
                    )),
                    Err(_) => connections.spawn(refuse_busy(stream)),
                };
            }
        }
    }
    let deadline = Duration::from_secs(config.shutdown_seconds);
    eprintln!(
        "shutting down: {} connections get {} s to finish (a second signal stops at once)",
        connections.len(),
        deadline.as_secs()
    );
    drop(listener);
    let _ = closing.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    // A closed channel is no second signal.
    let second = async {
        if stop.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = drained => {}
        _ = tokio::time::sleep(deadline) => {
            eprintln!("closing {} connections still open after {} s", connections.len(), deadline.as_secs());
        }
        _ = second => eprintln!("second signal: closing {} connections now", connections.len()),
    }
    connections.abort_all();
    Ok(())
}

/// Serves one connection (HTTP/1.1, keep-alive) until it closes, its head times out, or the
/// server shuts down; `_slot` counts it as open.
async fn connection(
    stream: tokio::net::TcpStream,
    app: Router,
    header_timeout: Duration,
    mut closing: watch::Receiver<bool>,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    let service = hyper_util::service::TowerToHyperService::new(app);
    let served = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => return,
        _ = closing.wait_for(|c| *c) => {}
    }
    // Finishes the request in progress, then closes.
    served.as_mut().graceful_shutdown();
    let _ = served.await;
}

/// Answers a connection over the cap with 503 and closes it.
async fn refuse_busy(mut stream: tokio::net::TcpStream) {
    let body =
        r#"{"error":{"code":"busy","message":"too many open connections; try again in a moment"}}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        // Reading what the client sent first lets it see the answer rather than a reset.
        let mut request = [0u8; 8192];
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut request)).await;
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// The model lives on one thread; each pass takes every request waiting, up to `max_batch`. A
/// panic on a batch fails that batch's requests (500) and is counted; the thread goes on.
fn spawn_model_thread(
    model: TrainedModel,
    max_batch: usize,
) -> (mpsc::Sender<Job>, Arc<ModelHealth>) {
    let (sender, mut receiver) = mpsc::channel::<Job>(1024);
    let health = Arc::new(ModelHealth::default());
    health.running.store(true, Ordering::SeqCst);
    let state = health.clone();
    std::thread::spawn(move || {
        // Marks the thread stopped however it ends.
        struct Stopped(Arc<ModelHealth>);
        impl Drop for Stopped {
            fn drop(&mut self) {
                self.0.running.store(false, Ordering::SeqCst);
            }
        }
        let _stopped = Stopped(state.clone());
        while let Some(first) = receiver.blocking_recv() {
            let mut jobs = vec![first];
            while jobs.len() < max_batch {
                match receiver.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let pixels: Vec<&[u8]> = jobs.iter().map(|j| j.pixels.as_slice()).collect();
            // The model holds no state that a failed pass could leave half-changed.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.assess(&pixels))) {
                Ok(assessments) => {
                    state.batches.fetch_add(1, Ordering::Relaxed);
                    for (job, a) in jobs.into_iter().zip(assessments) {
                        let _ = job.reply.send(a);
                    }
                }
                Err(panic) => {
                    state.failures.fetch_add(1, Ordering::Relaxed);
                    let why = panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("no message");
                    eprintln!(
                        "error: the model failed on a batch of {} photos ({why}); they get 500, the model goes on",
                        jobs.len()
                    );
                }
            }
        }
    });
    (sender, health)
}

/// Sets `flag` when dropped: a request dropped by its deadline stops its decode.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl AppState {
    /// Decodes the photo on a blocking thread, once a decoder is free, and classifies it on the
    /// model thread.
    async fn assess(&self, photo: axum::body::Bytes) -> Result<Assessment, ApiError> {
        let (size, filter) = (self.card.image_size, self.card.preprocessing.resize);
        let max_pixels = self.max_pixels;
        // The permit goes with the decode: a request that timed out counts until it has stopped.
        let decoder = self.decoders.clone().acquire_owned().await.map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "shutting down",
            )
        })?;
        let cancelled = Arc::new(AtomicBool::new(false));
        let _cancel = CancelOnDrop(cancelled.clone());
        let pixels = tokio::task::spawn_blocking(move || {
            let _decoder = decoder;
            let limits = decode::DecodeLimits {
                max_pixels,
                cancelled: Some(&cancelled),
            };
            decode::decode_within(&photo, std::path::Path::new("upload"), limits)
                .map(|image| decode::resize_square(&image, size, filter))
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| {
            let message = match e {
                Error::Photo { reason, .. } => reason,
                other => other.to_string(),
            };
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_photo",
                format!("the upload is not a usable photo: {message}"),
            )
        })?;
        let (reply, answer) = oneshot::channel();
        let stopped = || {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the model thread has stopped",
            )
        };
        self.jobs
            .send(Job { pixels, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| {
            if self.model.running.load(Ordering::SeqCst) {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "model_failed",
                    "the model failed on this photo's batch; the error is in the server's log",
                )
            } else {
                stopped()
            }
        })
    }
}

/// `GET /healthz`: 200 while the model thread runs, 503 once it has stopped.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let model = &state.model;
    let running = model.running.load(Ordering::SeqCst);
    let body = serde_json::json!({
        "status": if running { "ok" } else { "unavailable" },
        "model_thread": if running { "running" } else { "stopped" },
        "batches": model.batches.load(Ordering::Relaxed),
        "failed_batches": model.failures.load(Ordering::Relaxed),
    });
    let status = if running {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn page() -> Response {
    let html = include_str!("page.html");
    (
        [(header::CONTENT_SECURITY_POLICY, page_policy(html))],
        Html(html),
    )
        .into_response()
}

/// The content security policy of one of our pages: its own inline scripts only, by their
/// hashes (so an injected script never runs), requests to this server only, no framing.
pub(crate) fn page_policy(html: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let mut scripts = String::new();
    let mut rest = html;
    while let Some(start) = rest.find("<script>") {
        let body = &rest[start + "<script>".len()..];
        let Some(end) = body.find("</script>") else {
            break;
        };
        let digest = Sha256::digest(&body.as_bytes()[..end]);
        scripts.push_str(&format!(
            " 'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        ));
        rest = &body[end..];
    }
    format!(
        "default-src 'none'; script-src{scripts}; style-src 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    )
}

/// Headers every answer carries unless its handler set them: no sniffing of content types,
/// no framing, no referrer, nothing kept in caches (answers and photos are a signed-in
/// validator's), and for anything but our pages a policy that lets nothing run.
async fn hardened(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
    ] {
        headers
            .entry(name)
            .or_insert(axum::http::HeaderValue::from_static(value));
    }
    response
}

/// Refuses a URL with a NUL character in it (`%00`): no id, name or filter has one, and
/// PostgreSQL takes none in text.
async fn refuse_nul(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let uri = request.uri().to_string();
    if uri.contains('\0') || uri.to_ascii_lowercase().contains("%00") {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_url",
            "the URL has a NUL character (%00) in it, which no id or filter has",
        )
        .into_response();
    }
    next.run(request).await
}

async fn model_card(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(state.public_card.clone())
}

async fn classify(
    State(state): State<Arc<AppState>>,
    query: Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Classification>, ApiError> {
    let upload = upload::read(&headers, body, state.max_upload).await?;
    let (context, context_warnings) = context_of(&upload, &query);
    let a = state.assess(upload.photo).await?;
    let (ranking, image_ranking) = rank_in_context(
        &a.calibrated,
        state.card.prior.as_ref(),
        &context,
        state.card.species.names(),
    );
    Ok(Json(Classification {
        ranking,
        image_ranking,
        novelty: a.novelty,
        context,
        context_warnings,
    }))
}

async fn check(
    State(state): State<Arc<AppState>>,
    query: Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<CheckAnswer>, ApiError> {
    let upload = upload::read(&headers, body, state.max_upload).await?;
    let claimed = upload.species.clone().or_else(|| query.get("species").cloned()).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_species",
            "name the claimed species: a multipart field `species`, or ?species= with a raw photo body",
        )
    })?;
    let (context, context_warnings) = context_of(&upload, &query);
    let a = state.assess(upload.photo).await?;
    let record = Record {
        row: 0,
        id: String::new(),
        photos: Vec::new(),
        claimed: claimed.clone(),
        context,
        context_warnings,
    };
    let checked = judge_record(
        record,
        &a.calibrated,
        a.novelty,
        &state.resolver,
        state.card.prior.as_ref(),
        &state.thresholds,
    );
    // A name that fits two of the model's species is refused, naming both.
    let Some(verdict) = checked.verdict else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ambiguous_species",
            checked.error.unwrap_or_default(),
        ));
    };
    let closest_known_name = match state.resolver.resolve(&claimed) {
        Resolution::Unresolved { closest } => closest,
        _ => None,
    };
    Ok(Json(CheckAnswer {
        claimed,
        understood: checked.understood,
        closest_known_name,
        verdict,
        claimed_probability: checked.claimed_probability,
        image_claimed_probability: checked.image_claimed_probability,
        doubt: checked.doubt,
        ranking: checked.ranking,
        image_ranking: checked.image_ranking,
        novelty: checked.novelty,
        flags: checked.flags,
        context: checked.record.context,
        context_warnings: checked.record.context_warnings,
    }))
}

/// `vlinder serve`: runs until Ctrl-C or SIGTERM; a second one stops it at once.
pub fn run(config: &ServeConfig) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Error::io("tokio runtime", e))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|e| Error::io(config.addr.to_string(), e))?;
        let (signals, stop) = mpsc::unbounded_channel();
        tokio::spawn(forward_signals(signals));
        serve(config, listener, stop).await
    })
}

/// Sends a message on `signals` for every Ctrl-C or SIGTERM.
async fn forward_signals(signals: mpsc::UnboundedSender<()>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            eprintln!("warning: cannot watch for SIGTERM and SIGINT");
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if signals.send(()).is_err() {
                return;
            }
        }
    }
    #[cfg(not(unix))]
    while tokio::signal::ctrl_c().await.is_ok() {
        if signals.send(()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-epoch recipe model at 24 pixels on six photos of two species of the sample.
    fn tiny_model(dir: &std::path::Path) -> TrainedModel {
        let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/sample");
        for species in ["celastrina_argiolus", "gonepteryx_rhamni"] {
            let mut photos: Vec<_> = std::fs::read_dir(sample.join(species))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            photos.sort();
            std::fs::create_dir_all(dir.join("photos").join(species)).unwrap();
            for photo in &photos[..6] {
                std::os::unix::fs::symlink(
                    photo,
                    dir.join("photos")
                        .join(species)
                        .join(photo.file_name().unwrap()),
                )
                .unwrap();
            }
        }
        let config = crate::train::TrainConfig {
            data: Some(dir.join("photos")),
            epochs: 1,
            model: crate::model::ModelConfig {
                image_size: 24,
                ..Default::default()
            },
            no_augment: true,
            ..Default::default()
        };
        crate::train::train(&config, &dir.join("model")).unwrap();
        ModelDir::new(dir.join("model"))
            .load(WeightsChoice::Last, &Backend::Flex.device().unwrap())
            .unwrap()
    }

    fn ask(jobs: &mpsc::Sender<Job>, pixels: Vec<u8>) -> Option<Assessment> {
        let (reply, answer) = oneshot::channel();
        jobs.blocking_send(Job { pixels, reply }).unwrap();
        answer.blocking_recv().ok()
    }

    #[test]
    fn a_panic_fails_only_its_batch_and_the_model_thread_goes_on() {
        let tmp = tempfile::tempdir().unwrap();
        let (jobs, health) = spawn_model_thread(tiny_model(tmp.path()), 1);
        // Pixels of the wrong size make the model panic.
        assert!(ask(&jobs, vec![0; 5]).is_none());
        assert_eq!(health.failures.load(Ordering::Relaxed), 1);
        assert!(health.running.load(Ordering::SeqCst));
        let answer = ask(&jobs, vec![128; 24 * 24 * 3]).expect("the next photo is answered");
        assert_eq!(answer.calibrated.len(), 2);
        assert_eq!(health.batches.load(Ordering::Relaxed), 1);
        // With the app gone the thread ends, and says so.
        drop(jobs);
        let stopped = std::time::Instant::now();
        while health.running.load(Ordering::SeqCst) {
            assert!(stopped.elapsed() < Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
