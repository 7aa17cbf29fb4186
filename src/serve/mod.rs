//! `vlinder serve`: the model over HTTP for other programs and for reviewers.
//!
//! `POST /v1/classify` ranks the species of a photo, `POST /v1/check` judges a photo against a
//! claimed species, `GET /v1/model` returns the model card, `GET /healthz` says the server is up,
//! and `GET /` is a page for reviewers. Photos are decoded on blocking threads; one model thread
//! takes every request waiting at that moment as one batch, so batches grow with the load.
//! Errors are JSON of one shape: `{"error": {"code": "...", "message": "..."}}`.

mod upload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::check::{Thresholds, Verdict, judge};
use crate::dataset::decode;
use crate::device::Backend;
use crate::model::{Assessment, ModelCard, ModelDir, TrainedModel, WeightsChoice};
use crate::novelty::Novelty;
use crate::predict::{Ranked, rank};
use crate::{Error, Result};

/// The configuration of `vlinder serve`.
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct ServeConfig {
    /// The model directory.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// The largest upload accepted, in bytes; larger ones get 413.
    #[arg(long, default_value_t = 20 * 1024 * 1024)]
    pub max_upload_bytes: usize,
    /// A request that takes longer than this (a slow upload included) gets 408.
    #[arg(long, default_value_t = 30)]
    pub timeout_seconds: u64,
    /// Show the model card's local paths (training folders, backbone file, skipped files) in
    /// `GET /v1/model`; without it they are left out.
    #[arg(long)]
    pub expose_paths: bool,
    /// The most photos the model classifies in one pass.
    #[arg(long, default_value_t = 32)]
    pub max_batch: usize,
    #[command(flatten)]
    pub thresholds: Thresholds,
    #[arg(long, value_enum, default_value_t = WeightsChoice::Last)]
    pub weights: WeightsChoice,
    #[arg(long, value_enum, default_value_t = Backend::Flex)]
    pub device: Backend,
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
    jobs: mpsc::Sender<Job>,
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
    pub ranking: Vec<Ranked>,
    /// Whether the photo shows one of the model's species at all (absent for a model without
    /// an unknown-ness score).
    pub novelty: Option<Novelty>,
}

/// The answer of `/v1/check`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CheckAnswer {
    pub claimed: String,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub claimed_probability: Option<f64>,
    pub doubt: f64,
    pub ranking: Vec<Ranked>,
    pub novelty: Option<Novelty>,
}

/// Loads the model and builds the HTTP application; the model thread ends with the app.
pub fn app(config: &ServeConfig) -> Result<Router> {
    config.thresholds.validate()?;
    if config.max_batch == 0 {
        return Err(Error::invalid("max-batch", 0, "at least 1"));
    }
    // An hour at most: a deadline past the clock's range would panic.
    if !(1..=3600).contains(&config.timeout_seconds) {
        return Err(Error::invalid(
            "timeout-seconds",
            config.timeout_seconds,
            "between 1 and 3600",
        ));
    }
    let model = ModelDir::new(&config.model).load(config.weights, &config.device.device()?)?;
    if let Err(why) = &model.novelty {
        eprintln!("warning: {why}");
    }
    let card = model.card.clone();
    let jobs = spawn_model_thread(model, config.max_batch);
    let state = Arc::new(AppState {
        public_card: public_card(&card, config.expose_paths),
        card,
        thresholds: config.thresholds,
        max_upload: config.max_upload_bytes,
        jobs,
    });
    Ok(Router::new()
        .route("/", get(page))
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/model", get(model_card))
        .route("/v1/classify", post(classify))
        .route("/v1/check", post(check))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see GET /v1/model, POST /v1/classify, POST /v1/check",
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
        for field in ["data", "train", "validation", "backbone", "others"] {
            value["training"][field] = serde_json::Value::Null;
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

/// Serves on `listener` until `shutdown` completes, then finishes the requests in flight.
pub async fn serve(
    config: &ServeConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = app(config)?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io(config.addr.to_string(), e))?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::io(addr.to_string(), e))
}

/// The model lives on one thread; each pass takes every request waiting, up to `max_batch`.
fn spawn_model_thread(model: TrainedModel, max_batch: usize) -> mpsc::Sender<Job> {
    let (sender, mut receiver) = mpsc::channel::<Job>(1024);
    std::thread::spawn(move || {
        while let Some(first) = receiver.blocking_recv() {
            let mut jobs = vec![first];
            while jobs.len() < max_batch {
                match receiver.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let pixels: Vec<&[u8]> = jobs.iter().map(|j| j.pixels.as_slice()).collect();
            let assessments = model.assess(&pixels);
            for (job, a) in jobs.into_iter().zip(assessments) {
                let _ = job.reply.send(a);
            }
        }
    });
    sender
}

impl AppState {
    /// Decodes the photo on a blocking thread and classifies it on the model thread.
    async fn assess(&self, photo: axum::body::Bytes) -> Result<Assessment, ApiError> {
        let (size, filter) = (self.card.image_size, self.card.preprocessing.resize);
        let pixels = tokio::task::spawn_blocking(move || {
            decode::image_from_bytes(&photo, std::path::Path::new("upload"))
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
        self.jobs.send(Job { pixels, reply }).await.map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the model is shutting down",
            )
        })?;
        answer.await.map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the model is shutting down",
            )
        })
    }
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

async fn model_card(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(state.public_card.clone())
}

async fn classify(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Classification>, ApiError> {
    let upload = upload::read(&headers, body, state.max_upload).await?;
    let a = state.assess(upload.photo).await?;
    Ok(Json(Classification {
        ranking: rank(&a.calibrated, state.card.species.names()),
        novelty: a.novelty,
    }))
}

async fn check(
    State(state): State<Arc<AppState>>,
    query: axum::extract::Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<CheckAnswer>, ApiError> {
    let upload = upload::read(&headers, body, state.max_upload).await?;
    let claimed = upload.species.or_else(|| query.get("species").cloned()).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_species",
            "name the claimed species: a multipart field `species`, or ?species= with a raw photo body",
        )
    })?;
    let a = state.assess(upload.photo).await?;
    let (p, novelty) = (&a.calibrated, a.novelty);
    let species = &state.card.species;
    let (verdict, doubt) = judge(p, species, &claimed, &state.thresholds, novelty.as_ref());
    Ok(Json(CheckAnswer {
        claimed_probability: species.index_of(claimed.trim()).map(|i| p[i] as f64),
        claimed,
        verdict,
        doubt,
        ranking: rank(p, species.names()),
        novelty,
    }))
}

/// `vlinder serve`: runs until Ctrl-C or SIGTERM.
pub fn run(config: &ServeConfig) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Error::io("tokio runtime", e))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|e| Error::io(config.addr.to_string(), e))?;
        eprintln!(
            "serving {} on http://{}",
            config.model.display(),
            listener
                .local_addr()
                .map_err(|e| Error::io(config.addr.to_string(), e))?
        );
        serve(config, listener, shutdown_signal()).await
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM can be watched");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    eprintln!("shutting down after the requests in flight");
}
