//! The review queue over HTTP, when `vlinder serve --database` names one: validators sign in
//! (argon2 passwords, a session cookie that is HttpOnly and SameSite=Strict, a CSRF token sent
//! back in `X-CSRF-Token` with every change), work through the queue most doubtful first and
//! decide records; a decision on a record someone else decided meanwhile gets 409 with theirs.
//! Sign-in tries are limited per name and client, per name and per client (see
//! [`crate::queue::users`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::context::date::Date;
use crate::names::{Names, scientific};
use crate::queue::store::RecordView;
use crate::queue::users::{SignInLimits, SignInOutcome};
use crate::queue::{
    Database, DecisionKind, DecisionRefused, NewDecision, QueueEntry, QueueFilter, Role, export,
};

/// The session cookie's name.
const COOKIE: &str = "vlinder_session";
/// The device cookie's name (see [`crate::queue::users`]).
const DEVICE_COOKIE: &str = "vlinder_device";
/// The longest comment kept with a decision.
const MAX_COMMENT: usize = 2000;

/// What the review queue needs besides the model.
pub struct Review {
    pub database: Database,
    pub names: Names,
    pub session_seconds: i64,
    pub secure_cookies: bool,
    pub limits: SignInLimits,
}

impl Review {
    pub fn new(database: Database, names: Names, session_seconds: i64, secure: bool) -> Self {
        Review {
            database,
            names,
            session_seconds,
            secure_cookies: secure,
            limits: SignInLimits::default(),
        }
    }

    /// The session cookie holding `token` for `max_age` seconds.
    fn cookie(&self, token: &str, max_age: i64) -> HeaderValue {
        self.set_cookie(COOKIE, token, "/", max_age)
    }

    /// An HttpOnly, SameSite=Strict cookie (Secure with --secure-cookies) sent back to `path`.
    fn set_cookie(&self, name: &str, token: &str, path: &str, max_age: i64) -> HeaderValue {
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={token}; HttpOnly; SameSite=Strict; Path={path}; Max-Age={max_age}{secure}"
        ))
        .expect("a hex token is a valid header")
    }
}

fn review(state: &AppState) -> Result<&Review, ApiError> {
    state.review.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_queue",
            "this server has no review queue; start it with --database",
        )
    })
}

fn database_error(e: crate::Error) -> ApiError {
    eprintln!("error: {e}");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "database",
        "the queue's database did not answer; try again in a moment",
    )
}

/// A signed-in validator; changes (any method but GET) must carry the session's CSRF token.
pub struct Validator {
    pub name: String,
    pub role: Role,
    pub csrf: String,
    token: String,
}

fn session_token(headers: &HeaderMap) -> Option<String> {
    cookie(headers, COOKIE)
}

/// The value of the cookie `wanted`, if the request has one.
fn cookie(headers: &HeaderMap, wanted: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == wanted && !value.is_empty()).then(|| value.to_string())
        })
}

impl FromRequestParts<Arc<AppState>> for Validator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let review = review(state)?;
        let unauthorised = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "sign_in",
                "sign in first (POST /v1/session); a session lasts a limited time",
            )
        };
        let token = session_token(&parts.headers).ok_or_else(unauthorised)?;
        let who = review
            .database
            .session(&token)
            .await
            .map_err(database_error)?
            .ok_or_else(unauthorised)?;
        if parts.method != Method::GET && parts.method != Method::HEAD {
            let sent = parts
                .headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !constant_time_eq(sent.as_bytes(), who.csrf.as_bytes()) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "missing or wrong X-CSRF-Token; reload the page",
                ));
            }
        }
        Ok(Validator {
            name: who.name,
            role: who.role,
            csrf: who.csrf,
            token,
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The queue's page, in Dutch or English as the browser prefers (the page has a switch too).
pub async fn page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = review(&state) {
        return e.into_response();
    }
    let lang = preferred_language(
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
    );
    let html = include_str!("queue.html").replace("{{lang}}", lang);
    (
        [(header::CONTENT_SECURITY_POLICY, super::page_policy(&html))],
        Html(html),
    )
        .into_response()
}

/// `nl` or `en`: the first of them in Accept-Language by weight, `en` if neither.
fn preferred_language(accept: &str) -> &'static str {
    let mut best = ("en", -1.0f32);
    for part in accept.split(',') {
        let mut pieces = part.trim().split(';');
        let tag = pieces.next().unwrap_or_default().trim().to_lowercase();
        let weight = pieces
            .find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.parse().ok()))
            .unwrap_or(1.0);
        let lang = if tag.starts_with("nl") {
            "nl"
        } else if tag.starts_with("en") {
            "en"
        } else {
            continue;
        };
        if weight > best.1 {
            best = (lang, weight);
        }
    }
    best.0
}

#[derive(Deserialize)]
pub struct SignIn {
    name: String,
    password: String,
}

/// Who is signed in, with what the page needs: the CSRF token and the species' names.
#[derive(Serialize)]
pub struct SessionAnswer {
    name: String,
    role: Role,
    csrf: String,
    species: Vec<SpeciesNames>,
}

/// One of the model's species as the page shows it.
#[derive(Debug, Serialize)]
pub struct SpeciesNames {
    /// The model's name for it (its folder's), as records and decisions name it.
    id: String,
    scientific: String,
    nl: String,
    en: String,
}

fn session_answer(
    state: &AppState,
    review: &Review,
    name: String,
    role: Role,
    csrf: String,
) -> SessionAnswer {
    let species = state
        .card
        .species
        .names()
        .iter()
        .map(|s| match review.names.of(s) {
            Some(n) => SpeciesNames {
                id: s.clone(),
                scientific: n.scientific.clone(),
                nl: n.nl.clone(),
                en: n.en.clone(),
            },
            None => SpeciesNames {
                id: s.clone(),
                scientific: scientific(s),
                nl: String::new(),
                en: String::new(),
            },
        })
        .collect();
    SessionAnswer {
        name,
        role,
        csrf,
        species,
    }
}

/// `POST /v1/session`: signs in.
pub async fn sign_in(
    State(state): State<Arc<AppState>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Result<Json<SignIn>, JsonRejection>,
) -> Result<Response, ApiError> {
    let review = review(&state)?;
    let request = json_body(request)?;
    let device = cookie(&headers, DEVICE_COOKIE);
    let outcome = review
        .database
        .sign_in(
            &request.name,
            &request.password,
            &client.ip().to_canonical().to_string(),
            device.as_deref(),
            &review.limits,
            review.session_seconds,
        )
        .await
        .map_err(database_error)?;
    let retry = |status, code, message: String, after: i64| {
        let mut response = ApiError::new(status, code, message).into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(after));
        response
    };
    let session = match outcome {
        SignInOutcome::Signed(session) => session,
        SignInOutcome::Refused => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "wrong_password",
                "wrong name or password",
            ));
        }
        SignInOutcome::TooManyTries { retry_after } => {
            return Ok(retry(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failures",
                format!(
                    "too many sign-in tries for this name or from this address; try again in {retry_after} s"
                ),
                retry_after,
            ));
        }
        SignInOutcome::Busy => {
            return Ok(retry(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many sign-ins at once; try again in a moment".to_string(),
                1,
            ));
        }
    };
    let user = session.user;
    let mut response = Json(session_answer(
        &state, review, user.name, user.role, user.csrf,
    ))
    .into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        review.cookie(&session.token, review.session_seconds),
    );
    if let Some(device) = &session.device {
        response.headers_mut().append(
            header::SET_COOKIE,
            review.set_cookie(
                DEVICE_COOKIE,
                device,
                "/v1/session",
                crate::queue::users::DEVICE_SECONDS,
            ),
        );
    }
    Ok(response)
}

/// `GET /v1/session`: who is signed in.
pub async fn whoami(
    State(state): State<Arc<AppState>>,
    who: Validator,
) -> Result<Response, ApiError> {
    let review = review(&state)?;
    Ok(Json(session_answer(&state, review, who.name, who.role, who.csrf)).into_response())
}

/// `DELETE /v1/session`: signs out.
pub async fn sign_out(
    State(state): State<Arc<AppState>>,
    who: Validator,
) -> Result<Response, ApiError> {
    let review = review(&state)?;
    review
        .database
        .sign_out(&who.token)
        .await
        .map_err(database_error)?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, review.cookie("", 0));
    Ok(response)
}

/// The query of `GET /v1/queue`.
#[derive(Deserialize)]
pub struct QueueQuery {
    verdict: Option<String>,
    claimed: Option<String>,
    from: Option<String>,
    to: Option<String>,
    /// `yes` or `no`.
    decided: Option<String>,
    after_doubt: Option<f64>,
    after_id: Option<String>,
    limit: Option<i64>,
}

#[derive(Serialize)]
pub struct QueuePage {
    records: Vec<QueueEntry>,
    /// Where the next page starts (`after_doubt`, `after_id`), if this one was full.
    next: Option<(f64, String)>,
}

/// A JSON body, or a 400 in the API's error shape saying what is wrong with it.
fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(value)| value).map_err(|why| {
        if why.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the request body is larger than this server takes; a decision is a few hundred bytes",
            );
        }
        bad_request(
            "bad_json",
            format!(
                "{}; send a JSON object with Content-Type: application/json",
                why.body_text()
            ),
        )
    })
}

fn bad_request(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// `GET /v1/queue`: a page of records, most doubtful first.
pub async fn queue(
    State(state): State<Arc<AppState>>,
    _who: Validator,
    q: Result<Query<QueueQuery>, QueryRejection>,
) -> Result<Json<QueuePage>, ApiError> {
    let review = review(&state)?;
    let Query(q) = q.map_err(|why| {
        bad_request(
            "bad_query",
            format!(
                "{}; limit is a number from 1 to 500, from and to are dates (2021-05-12)",
                why.body_text()
            ),
        )
    })?;
    let date = |text: &Option<String>, name: &str| -> Result<Option<String>, ApiError> {
        match text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            None => Ok(None),
            Some(t) => Date::parse(t)
                .map(|d| Some(d.to_string()))
                .map_err(|why| bad_request("bad_date", format!("{name}={t:?}: {why}"))),
        }
    };
    let decided = match q.decided.as_deref().unwrap_or_default() {
        "" => None,
        "yes" => Some(true),
        "no" => Some(false),
        other => {
            return Err(bad_request(
                "bad_decided",
                format!("decided={other:?}: give yes or no"),
            ));
        }
    };
    let empty_none = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    let filter = QueueFilter {
        verdict: empty_none(q.verdict),
        claimed: empty_none(q.claimed),
        from: date(&q.from, "from")?,
        to: date(&q.to, "to")?,
        decided,
        after: match (q.after_doubt, q.after_id) {
            (Some(d), Some(id)) => Some((d, id)),
            (None, None) => None,
            _ => {
                return Err(bad_request(
                    "bad_cursor",
                    "give after_doubt and after_id together, as `next` of the last page".into(),
                ));
            }
        },
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let records = review
        .database
        .queue(&filter, limit)
        .await
        .map_err(database_error)?;
    let next = (records.len() as i64 == limit)
        .then(|| records.last().map(|r| (r.doubt, r.id.clone())))
        .flatten();
    Ok(Json(QueuePage { records, next }))
}

fn no_such_record(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_such_record",
        format!("no record with id {id:?} in the queue"),
    )
}

/// A record named in the query (`?id=`), for the ids a URL path cannot carry: a browser
/// takes `.` and `..` (written so or as `%2E`) for steps between folders.
#[derive(Debug, Deserialize)]
pub struct RecordId {
    id: String,
}

fn record_id(q: Result<Query<RecordId>, QueryRejection>) -> Result<String, ApiError> {
    q.map(|Query(q)| q.id).map_err(|why| {
        bad_request(
            "bad_query",
            format!("{}; name the record as ?id=", why.body_text()),
        )
    })
}

/// `GET /v1/record?id=`: the same as `GET /v1/records/{id}`.
pub async fn record_by_query(
    state: State<Arc<AppState>>,
    who: Validator,
    q: Result<Query<RecordId>, QueryRejection>,
) -> Result<Json<RecordView>, ApiError> {
    record(state, who, Path(record_id(q)?)).await
}

/// `GET /v1/record/photo?id=`: the same as `GET /v1/records/{id}/photo`.
pub async fn photo_by_query(
    state: State<Arc<AppState>>,
    who: Validator,
    q: Result<Query<RecordId>, QueryRejection>,
) -> Result<Response, ApiError> {
    photo(state, who, Path(record_id(q)?)).await
}

/// `GET /v1/record/photos/{seq}?id=`: the same as `GET /v1/records/{id}/photos/{seq}`.
pub async fn nth_photo_by_query(
    state: State<Arc<AppState>>,
    who: Validator,
    Path(seq): Path<u32>,
    q: Result<Query<RecordId>, QueryRejection>,
) -> Result<Response, ApiError> {
    nth_photo(state, who, Path((record_id(q)?, seq))).await
}

/// `POST /v1/record/decisions?id=`: the same as `POST /v1/records/{id}/decisions`.
pub async fn decide_by_query(
    state: State<Arc<AppState>>,
    who: Validator,
    q: Result<Query<RecordId>, QueryRejection>,
    new: Result<Json<NewDecision>, JsonRejection>,
) -> Result<Response, ApiError> {
    decide(state, who, Path(record_id(q)?), new).await
}

/// `GET /v1/records/{id}`: everything the model said and every decision.
pub async fn record(
    State(state): State<Arc<AppState>>,
    _who: Validator,
    Path(id): Path<String>,
) -> Result<Json<RecordView>, ApiError> {
    let review = review(&state)?;
    let view = review.database.record(&id).await.map_err(database_error)?;
    view.map(Json).ok_or_else(|| no_such_record(&id))
}

/// `GET /v1/records/{id}/photo`: the record's thumbnail (of the first photo its verdict used).
pub async fn photo(
    State(state): State<Arc<AppState>>,
    _who: Validator,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let review = review(&state)?;
    let Some(jpeg) = review
        .database
        .thumbnail(&id)
        .await
        .map_err(database_error)?
    else {
        return Err(
            match review.database.record(&id).await.map_err(database_error)? {
                Some(_) => no_photo(&id, 0),
                None => no_such_record(&id),
            },
        );
    };
    Ok(jpeg_response(jpeg))
}

/// `GET /v1/records/{id}/photos/{seq}`: the thumbnail of the record's photo `seq` (from 0, in
/// the order of `photos` in its result).
pub async fn nth_photo(
    State(state): State<Arc<AppState>>,
    _who: Validator,
    Path((id, seq)): Path<(String, u32)>,
) -> Result<Response, ApiError> {
    let review = review(&state)?;
    let jpeg = review
        .database
        .photo(&id, i64::from(seq))
        .await
        .map_err(database_error)?
        .ok_or_else(|| no_photo(&id, seq))?;
    Ok(jpeg_response(jpeg))
}

fn no_photo(id: &str, seq: u32) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_such_photo",
        format!(
            "no photo {seq} of a record with id {id:?} in the queue (photos count from 0; a photo that could not be read has none)"
        ),
    )
}

fn jpeg_response(jpeg: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            // A validator's photo: not kept once they sign out.
            (header::CACHE_CONTROL, "private, no-store"),
        ],
        jpeg,
    )
        .into_response()
}

/// `POST /v1/records/{id}/decisions`: stores a decision, or answers 409 with the decision that
/// came first.
pub async fn decide(
    State(state): State<Arc<AppState>>,
    who: Validator,
    Path(id): Path<String>,
    new: Result<Json<NewDecision>, JsonRejection>,
) -> Result<Response, ApiError> {
    let review = review(&state)?;
    let mut new = json_body(new)?;
    let species = state.card.species.names();
    match (new.decision, new.species.as_deref()) {
        (DecisionKind::Correct, None) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "missing_species",
                "a correction names the species the photo shows",
            ));
        }
        (DecisionKind::Correct, Some(s)) if !species.iter().any(|k| k == s) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_species",
                format!(
                    "{s:?} is not one of the model's species: {}",
                    species.join(", ")
                ),
            ));
        }
        (DecisionKind::Correct, _) => {}
        _ => new.species = None,
    }
    if [&new.comment, &new.species]
        .iter()
        .any(|t| t.as_deref().is_some_and(|t| t.contains('\0')))
    {
        return Err(bad_request(
            "bad_text",
            "a comment or species has a NUL character (\\u0000) in it; remove it".into(),
        ));
    }
    if new
        .comment
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_COMMENT)
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "comment_too_long",
            format!("a comment has at most {MAX_COMMENT} characters"),
        ));
    }
    if new.replaces < 0 {
        return Err(bad_request(
            "bad_replaces",
            "replaces is the number of decisions seen, 0 or more".into(),
        ));
    }
    let decided = review
        .database
        .decide(&id, &who.name, &new)
        .await
        .map_err(database_error)?;
    match decided {
        Ok(decision) => Ok((StatusCode::CREATED, Json(decision)).into_response()),
        Err(DecisionRefused::NoSuchRecord) => Err(no_such_record(&id)),
        Err(DecisionRefused::Conflict(other)) => {
            let body = serde_json::json!({
                "error": {
                    "code": "conflict",
                    "message": format!(
                        "{} decided this record first ({}); send replaces={} to replace it",
                        other.validator, other.decision.as_str(), other.seq
                    ),
                },
                "decision": other,
            });
            Ok((StatusCode::CONFLICT, Json(body)).into_response())
        }
        Err(DecisionRefused::Stale { decisions }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "stale",
            format!("the record has {decisions} decisions; reload it"),
        )),
    }
}

/// `GET /v1/export`: every record with its latest decision as CSV, for admins; streamed a page
/// at a time.
pub async fn export_csv(
    State(state): State<Arc<AppState>>,
    who: Validator,
) -> Result<Response, ApiError> {
    let review = review(&state)?;
    if who.role != Role::Admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admins_only",
            "only admins export the decisions",
        ));
    }
    use futures_util::StreamExt;
    let header = format!("{}\n", export::HEADER.join(","));
    let lines = review.database.clone().pages().map(|page| {
        page.map(|page| {
            page.iter()
                .map(|r| export::csv_line(r) + "\n")
                .collect::<String>()
        })
        // The client sees a cut-off download rather than a file that looks complete.
        .map_err(|e| std::io::Error::other(e.to_string()))
    });
    let pages = futures_util::stream::once(async { Ok(header) }).chain(lines);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"decisions.csv\"",
            ),
        ],
        Body::from_stream(pages),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_speaks_the_language_the_browser_prefers() {
        assert_eq!(preferred_language("nl-NL,nl;q=0.9,en;q=0.8"), "nl");
        assert_eq!(preferred_language("en-GB,en;q=0.9,nl;q=0.8"), "en");
        assert_eq!(preferred_language("de-DE,nl;q=0.5"), "nl");
        assert_eq!(preferred_language("fr"), "en");
        assert_eq!(preferred_language(""), "en");
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; vlinder_session=abc123; x=y"),
        );
        assert_eq!(session_token(&headers).as_deref(), Some("abc123"));
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
    }
}
