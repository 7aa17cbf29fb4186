//! Reading an uploaded photo: the raw body, or a multipart form with a `photo` file and the
//! optional fields `species`, `date`, `latitude` and `longitude`; limited in size.

use std::error::Error as _;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};

use super::ApiError;

/// A photo and, from a form, the claimed species and the observation's date and place.
#[derive(Default)]
pub struct Upload {
    pub photo: Bytes,
    pub species: Option<String>,
    pub date: Option<String>,
    pub latitude: Option<String>,
    pub longitude: Option<String>,
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the upload exceeds the limit of {limit} bytes"),
    )
}

pub async fn read(headers: &HeaderMap, body: Body, limit: usize) -> Result<Upload, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&dyn std::error::Error> = e.source();
        while let Some(s) = source {
            if s.to_string().contains("length limit exceeded") {
                return too_large(limit);
            }
            source = s.source();
        }
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("cannot read the request body: {e}"),
        )
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("multipart/form-data") {
        if bytes.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "empty",
                "the request has no photo; send it as the body or as a multipart field `photo`",
            ));
        }
        return Ok(Upload {
            photo: bytes,
            ..Upload::default()
        });
    }
    let malformed = |e: multer::Error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_multipart",
            format!("malformed multipart form: {e}"),
        )
    };
    let boundary = multer::parse_boundary(content_type).map_err(malformed)?;
    let stream =
        futures_util::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(bytes) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut upload = Upload::default();
    let mut photo = None;
    while let Some(field) = form.next_field().await.map_err(malformed)? {
        let slot = match field.name() {
            Some("photo") => {
                photo = Some(field.bytes().await.map_err(malformed)?);
                continue;
            }
            Some("species") => &mut upload.species,
            Some("date") => &mut upload.date,
            Some("latitude") => &mut upload.latitude,
            Some("longitude") => &mut upload.longitude,
            _ => continue,
        };
        *slot = Some(field.text().await.map_err(malformed)?);
    }
    let photo = photo.filter(|p| !p.is_empty()).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_photo",
            "the form has no (non-empty) field `photo`",
        )
    })?;
    upload.photo = photo;
    Ok(upload)
}
