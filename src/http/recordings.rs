//! `/v1/recordings`: the company's call recordings. Admins list them; admins and the courier whose
//! call it was play them (`/audio`, with single-range HTTP Range support so a browser's audio
//! element can seek). `POST /v1/admin/recordings/sync` runs a sync now and says what it did.

use actix_web::http::header::{self, ByteRangeSpec, Range};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::extract::{authenticate, Admin, Page, Principal};
use super::problem::{sync_problem, ApiError};
use super::state::AppState;
use crate::domain::check_id;
use crate::domain::company::TenantId;
use crate::domain::recording::RecordingState;
use crate::recordings::{AudioUrlRefused, Recordings};
use crate::store::{self, recordings::RecordingRow};
use crate::view::rfc3339;

/// The recording resource.
fn view(recordings: &Recordings, tenant: &TenantId, row: &RecordingRow) -> Value {
    let stored = row.state == RecordingState::Stored;
    json!({
        "id": row.id,
        "state": row.state.as_str(),
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
        "audio_url": if stored { json!(recordings.audio_url(tenant, row.id)) } else { Value::Null },
        "deleted_at": rfc3339(row.deleted_at),
        "deleted_because": row.deleted_because,
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
    admin: Admin,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    if let Some(order) = &q.order_id {
        check_id("order_id", order)?;
    }
    let page = Page::parse(q.cursor.as_deref(), q.limit)?;
    let filter = store::recordings::ListFilter {
        order_id: q.order_id,
        callback_id: uuid_field("callback_id", q.callback_id.as_deref())?,
        unmatched: q.unmatched,
        before: page.before,
        limit: page.limit,
    };
    let db = store::client(&state.db).await?;
    let rows = store::recordings::list(&**db, admin.tenant(), &filter).await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let items: Vec<Value> = rows.iter().map(|r| view(&state.recordings, admin.tenant(), r)).collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items, "next_cursor": page.next_cursor(&ids) })))
}

/// What a `Range` header asks of a `size`-byte file.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    Whole,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// Reads one `bytes=` range (actix-web parses it; RFC 9110 decides what it means). Anything
/// else (other units, several ranges, a malformed or backwards range) asks for the whole file,
/// which RFC 9110 allows a server to answer instead.
fn wanted(range: Option<&str>, size: u64) -> Wanted {
    // Positions are digits only (a `+` that Rust's integer parsing would take is not one).
    let digits_only = |r: &str| {
        r.trim().strip_prefix("bytes=").is_some_and(|set| set.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
    };
    let Some(range) = range.filter(|r| digits_only(r)) else { return Wanted::Whole };
    let Ok(Range::Bytes(specs)) = range.parse::<Range>() else { return Wanted::Whole };
    let [spec] = specs.as_slice() else { return Wanted::Whole };
    if let ByteRangeSpec::FromTo(first, last) = spec {
        if last < first {
            return Wanted::Whole;
        }
    }
    match spec.to_satisfiable_range(size) {
        Some((first, last)) => Wanted::Part(first, last),
        None => Wanted::Unsatisfiable,
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
    SignedUrl { tenant: TenantId },
    Principal(Principal),
}

impl Listener {
    async fn identify(req: &HttpRequest, state: &AppState, id: Uuid, query: AudioQuery) -> Result<Listener, ApiError> {
        match query {
            AudioQuery { tenant: None, expires: None, sig: None } => Ok(Listener::Principal(authenticate(req).await?)),
            AudioQuery { tenant: Some(tenant), expires: Some(expires), sig: Some(sig) } => {
                // A malformed company in the URL is a URL dialback did not sign.
                let tenant = TenantId::parse("tenant", &tenant).map_err(|_| ApiError::not_found("recording"))?;
                match state.recordings.check_audio_url(&tenant, id, expires, &sig) {
                    Ok(()) => Ok(Listener::SignedUrl { tenant }),
                    Err(AudioUrlRefused::BadSignature) => Err(ApiError::not_found("recording")),
                    Err(AudioUrlRefused::Expired) => Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "url_expired",
                        "Link expired",
                        "this audio link has expired: fetch the callback or recording again for a fresh one",
                    )),
                }
            }
            _ => Err(ApiError::bad_request("invalid_query", "a signed audio URL needs tenant, expires and sig")),
        }
    }

    fn tenant(&self) -> &TenantId {
        match self {
            Listener::SignedUrl { tenant } => tenant,
            Listener::Principal(caller) => caller.tenant(),
        }
    }

    /// Admins and signed URLs hear any recording of the tenant; a courier only their own calls'.
    fn may_hear(&self, row: &RecordingRow) -> bool {
        match self {
            Listener::SignedUrl { .. } => true,
            Listener::Principal(caller) => caller.is_admin() || row.courier_id.as_deref() == Some(caller.sub()),
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
    let listener = Listener::identify(&req, &state, id, query.into_inner()).await?;
    let db = store::client(&state.db).await?;
    let row = store::recordings::get(&**db, listener.tenant(), id)
        .await?
        .filter(|r| listener.may_hear(r))
        .ok_or_else(|| ApiError::not_found("recording"))?;
    if matches!(row.state, RecordingState::Deleting | RecordingState::Deleted) {
        let why = match row.deleted_because.as_deref() {
            Some("admin") => "by an admin",
            _ => "by the company's retention (recordings.retention_days)",
        };
        return Err(ApiError::new(
            StatusCode::GONE,
            "recording_deleted",
            "Recording deleted",
            format!("the recording was deleted {why}"),
        ));
    }
    if row.state != RecordingState::Stored {
        return Err(ApiError::not_found("recording"));
    }
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
pub async fn sync(admin: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (service, tenant) = (state.recordings.clone(), admin.tenant().to_owned());
    // Its own task: a client that hangs up does not abandon downloads half-way.
    let result = tokio::spawn(async move { service.sync(&tenant).await })
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?;
    match result {
        Ok(report) => Ok(HttpResponse::Ok().json(report)),
        Err(e) => Err(sync_problem(e)),
    }
}

/// `DELETE /v1/recordings/{id}`: an admin deletes a recording now (its object; the row stays, saying
/// so). Deleting one already deleted changes nothing.
pub async fn delete(
    admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&path).map_err(|_| ApiError::not_found("recording"))?;
    if !state.recordings.delete_recording(admin.tenant(), id).await? {
        return Err(ApiError::not_found("recording"));
    }
    Ok(HttpResponse::NoContent().finish())
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
