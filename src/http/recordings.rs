//! `/v1/recordings`: the company's call recordings. Admins list them; admins and the courier whose
//! call it was play them (`/audio`, with single-range HTTP Range support so a browser's audio
//! element can seek). `POST /v1/admin/recordings/sync` runs a sync now and says what it did.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::Role;
use crate::crypto::SecretsKey;
use crate::error::ApiError;
use crate::http::admin::valid_id;
use crate::http::auth::{authenticate, Caller};
use crate::http::rfc3339;
use crate::recordings::ftp::FtpFailure;
use crate::recordings::SyncError;
use crate::startup::AppState;
use crate::store::{self, recordings::RecordingLink, recordings::RecordingRow};

/// What an audio URL's signature is for (see [`SecretsKey::sign`]).
const AUDIO_URL_PURPOSE: &str = "recording-audio-url";
/// How long a signed audio URL plays: enough to listen and seek, short enough to be no lasting
/// credential if it leaks.
const AUDIO_URL_TTL_S: i64 = 3600;

fn audio_url_message(tenant: &str, id: Uuid, expires: i64) -> String {
    format!("{tenant}\n{id}\n{expires}")
}

/// A URL that plays the recording without a bearer token until it expires: a browser's `<audio>`
/// element cannot send an Authorization header. Only someone allowed to see the recording is
/// ever given one.
pub fn audio_url(key: &SecretsKey, tenant: &str, id: Uuid) -> String {
    let expires = OffsetDateTime::now_utc().unix_timestamp() + AUDIO_URL_TTL_S;
    let sig = key.sign(AUDIO_URL_PURPOSE, &audio_url_message(tenant, id, expires));
    format!("/v1/recordings/{id}/audio?tenant={tenant}&expires={expires}&sig={sig}")
}

/// The recording as shown inside a callback of `tenant`.
pub fn link(key: &SecretsKey, tenant: &str, recording: &RecordingLink) -> Value {
    json!({
        "id": recording.id,
        "size_bytes": recording.size_bytes,
        "sha256": recording.sha256,
        "audio_url": audio_url(key, tenant, recording.id),
    })
}

/// The recording resource.
fn view(key: &SecretsKey, tenant: &str, row: &RecordingRow) -> Value {
    let stored = row.state == "stored";
    json!({
        "id": row.id,
        "state": row.state,
        "callback_id": row.callback_id,
        "order_id": row.order_id,
        "matched_by": row.matched_by,
        "file_name": row.file_name,
        "remote_path": row.remote_path,
        "content_type": row.content_type,
        "size_bytes": row.size_bytes,
        "sha256": row.sha256,
        "recorded_at": rfc3339(row.recorded_at),
        "first_seen_at": rfc3339(Some(row.first_seen_at)),
        "fetched_at": rfc3339(row.fetched_at),
        "bound_at": rfc3339(row.bound_at),
        "attempts": row.attempts,
        "last_error": row.last_error,
        "audio_url": if stored { json!(audio_url(key, tenant, row.id)) } else { Value::Null },
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    order_id: Option<String>,
    callback_id: Option<String>,
    unmatched: Option<bool>,
    cursor: Option<String>,
    limit: Option<i64>,
}

fn uuid_field(field: &str, value: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    value
        .map(|v| Uuid::parse_str(v).map_err(|_| ApiError::invalid_field(field, format!("{field} must be a uuid"))))
        .transpose()
}

pub async fn list(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let q = query.into_inner();
    if let Some(order) = &q.order_id {
        valid_id("order_id", order)?;
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid_field("limit", "limit must be 1-200"));
    }
    let filter = store::recordings::ListFilter {
        order_id: q.order_id,
        callback_id: uuid_field("callback_id", q.callback_id.as_deref())?,
        unmatched: q.unmatched,
        before: uuid_field("cursor", q.cursor.as_deref())?,
        limit,
    };
    let db = store::client(&state.db).await?;
    let rows = store::recordings::list(&**db, caller.tenant(), &filter).await?;
    let next = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.id.to_string())).flatten();
    let key = state.config.secrets_key();
    let items: Vec<Value> = rows.iter().map(|r| view(&key, caller.tenant(), r)).collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items, "next_cursor": next })))
}

/// What a `Range` header asks of a `size`-byte file.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    Whole,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// Reads one `bytes=` range. Anything else (other units, several ranges, malformed) asks for the
/// whole file, which RFC 9110 allows a server to answer instead.
fn wanted(range: Option<&str>, size: u64) -> Wanted {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else { return Wanted::Whole };
    let Some((first, last)) = spec.split_once('-').filter(|_| !spec.contains(',')) else { return Wanted::Whole };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| s.parse::<u64>().ok().filter(|_| s.bytes().all(|b| b.is_ascii_digit()));
    if first.is_empty() {
        return match number(last) {
            None => Wanted::Whole,
            Some(0) => Wanted::Unsatisfiable,
            Some(_) if size == 0 => Wanted::Unsatisfiable,
            Some(n) => Wanted::Part(size - n.min(size), size - 1),
        };
    }
    let Some(start) = number(first) else { return Wanted::Whole };
    let end = match last {
        "" => u64::MAX,
        last => match number(last) {
            Some(end) if end >= start => end,
            _ => return Wanted::Whole,
        },
    };
    if start >= size {
        Wanted::Unsatisfiable
    } else {
        Wanted::Part(start, end.min(size - 1))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioQuery {
    tenant: Option<String>,
    expires: Option<i64>,
    sig: Option<String>,
}

/// Who may play: the holder of a valid signed URL (for its tenant), or a bearer token's caller.
enum Listener {
    SignedUrl { tenant: String },
    Caller(Caller),
}

impl Listener {
    fn identify(req: &HttpRequest, state: &AppState, id: Uuid, query: AudioQuery) -> Result<Listener, ApiError> {
        match query {
            AudioQuery { tenant: None, expires: None, sig: None } => Ok(Listener::Caller(authenticate(req)?)),
            AudioQuery { tenant: Some(tenant), expires: Some(expires), sig: Some(sig) } => {
                let valid = state.config.secrets_key().verify(
                    AUDIO_URL_PURPOSE,
                    &audio_url_message(&tenant, id, expires),
                    &sig,
                );
                if !valid {
                    return Err(ApiError::not_found("recording"));
                }
                if expires < OffsetDateTime::now_utc().unix_timestamp() {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "url_expired",
                        "Link expired",
                        "this audio link has expired: fetch the callback or recording again for a fresh one",
                    ));
                }
                Ok(Listener::SignedUrl { tenant })
            }
            _ => Err(ApiError::bad_request("invalid_query", "a signed audio URL needs tenant, expires and sig")),
        }
    }

    fn tenant(&self) -> &str {
        match self {
            Listener::SignedUrl { tenant } => tenant,
            Listener::Caller(caller) => caller.tenant(),
        }
    }

    /// Admins and signed URLs hear any recording of the tenant; a courier only their own calls'.
    fn may_hear(&self, row: &RecordingRow) -> bool {
        match self {
            Listener::SignedUrl { .. } => true,
            Listener::Caller(caller) => caller.is_admin() || row.courier_id.as_deref() == Some(caller.sub()),
        }
    }
}

pub async fn audio(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<AudioQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&path).map_err(|_| ApiError::not_found("recording"))?;
    let listener = Listener::identify(&req, &state, id, query.into_inner())?;
    let db = store::client(&state.db).await?;
    let row = store::recordings::get(&**db, listener.tenant(), id)
        .await?
        .filter(|r| r.state == "stored")
        .filter(|r| listener.may_hear(r))
        .ok_or_else(|| ApiError::not_found("recording"))?;
    drop(db);
    let (Some(key), Some(size), Some(sha256)) = (&row.storage_key, row.size_bytes, &row.sha256) else {
        return Err(ApiError::internal(anyhow::anyhow!("stored recording {id} has no storage key, size or hash")));
    };
    let size = size as u64;
    let etag = format!("\"{sha256}\"");
    let header_of = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let range = match header_of(header::IF_RANGE) {
        // The client's copy is another version: it gets the whole file.
        Some(tag) if tag != etag => None,
        _ => header_of(header::RANGE),
    };
    let (status, start, end) = match wanted(range, size) {
        Wanted::Whole => (StatusCode::OK, 0, size.saturating_sub(1)),
        Wanted::Part(start, end) => (StatusCode::PARTIAL_CONTENT, start, end),
        Wanted::Unsatisfiable => {
            return Err(ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                "Range not satisfiable",
                format!("the recording has {size} bytes; the requested range is outside it"),
            )
            .with_header(header::CONTENT_RANGE, format!("bytes */{size}"))
            .with_header(header::ACCEPT_RANGES, "bytes"));
        }
    };
    let length = if size == 0 { 0 } else { end - start + 1 };
    let body = state
        .recordings
        .storage()
        .read(key, start, length)
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("reading recording {id} ({key}): {e}")))?;
    let mut response = HttpResponse::build(status);
    response
        .content_type(row.content_type.as_str())
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "private, max-age=3600"))
        .insert_header((header::CONTENT_DISPOSITION, format!("inline; filename=\"{id}.{}\"", extension(&row))));
    if status == StatusCode::PARTIAL_CONTENT {
        response.insert_header((header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}")));
    }
    Ok(response.body(actix_web::body::SizedStream::new(length, body)))
}

fn extension(row: &RecordingRow) -> &str {
    row.storage_key.as_deref().and_then(|k| k.rsplit_once('.')).map(|(_, e)| e).unwrap_or("bin")
}

/// `POST /v1/admin/recordings/sync`: a sync of the caller's company now.
pub async fn sync(caller: Caller, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let (service, tenant) = (state.recordings.clone(), caller.tenant().to_owned());
    // Its own task: a client that hangs up does not abandon downloads half-way.
    let result = tokio::spawn(async move { service.sync(&tenant).await })
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?;
    match result {
        Ok(report) => Ok(HttpResponse::Ok().json(report)),
        Err(e) => Err(sync_problem(e)),
    }
}

fn sync_problem(error: SyncError) -> ApiError {
    let detail = error.to_string();
    match error {
        SyncError::NotConfigured => {
            ApiError::new(StatusCode::CONFLICT, "recordings_not_configured", "Recordings not configured", detail)
        }
        SyncError::PasswordUndecryptable => ApiError::internal(anyhow::anyhow!(detail)),
        SyncError::Store(e) => e.into(),
        SyncError::Ftp(failure) => match failure {
            FtpFailure::Unreachable { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ftp_unreachable", "FTP server unreachable", detail)
                    .with_header(header::RETRY_AFTER, "30")
            }
            FtpFailure::Timeout { .. } => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "ftp_timeout", "FTP server too slow", detail)
            }
            FtpFailure::LoginFailed { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "ftp_login_failed", "FTP login refused", detail)
            }
            FtpFailure::Tls { .. } => ApiError::new(StatusCode::BAD_GATEWAY, "ftp_tls_failed", "FTPS failed", detail),
            FtpFailure::Refused { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "ftp_error", "FTP server refused", detail)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges_are_read_and_everything_else_is_the_whole_file() {
        let size = 1000;
        assert_eq!(wanted(Some("bytes=0-99"), size), Wanted::Part(0, 99));
        assert_eq!(wanted(Some("bytes=100-"), size), Wanted::Part(100, 999));
        assert_eq!(wanted(Some("bytes=-100"), size), Wanted::Part(900, 999));
        assert_eq!(wanted(Some("bytes=-5000"), size), Wanted::Part(0, 999));
        assert_eq!(wanted(Some("bytes=900-5000"), size), Wanted::Part(900, 999));
        assert_eq!(wanted(Some("bytes=1000-"), size), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=-0"), size), Wanted::Unsatisfiable);
        for whole in
            [None, Some("items=0-1"), Some("bytes=0-1,5-6"), Some("bytes=5-1"), Some("bytes=x-"), Some("bytes=+1-2")]
        {
            assert_eq!(wanted(whole, size), Wanted::Whole, "{whole:?}");
        }
        assert_eq!(wanted(Some("bytes=0-"), 0), Wanted::Unsatisfiable);
    }
}
