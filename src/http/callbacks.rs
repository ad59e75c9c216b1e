//! `/v1/callbacks`: couriers place, read and cancel their callbacks; admins read and list their
//! tenant's. Retries with the same `Idempotency-Key` never originate twice: they are answered with
//! the same callback (or the first answer, when that was a refusal or an error).

use std::collections::HashMap;
use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::ami::AmiError;
use crate::auth::Role;
use crate::callbacks::{PlaceError, Target, Via};
use crate::domain::callback::{Reason, Status};
use crate::error::ApiError;
use crate::http::admin::{parse_body, valid_id};
use crate::http::auth::Caller;
use crate::http::recordings::link;
use crate::http::rfc3339;
use crate::startup::AppState;
use crate::store::{self, callbacks::CallbackRow, idempotency::IdempotencyClaim, recordings::RecordingLink};

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct CallbackRequest {
    target: String,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    order_id: Option<String>,
}

/// `+79161234567` → `+7916***4567` (couriers see their calls, not a copy of the client base).
fn mask(number: &str) -> String {
    if number.len() <= 8 {
        return "***".into();
    }
    format!("{}***{}", &number[..5], &number[number.len() - 4..])
}

/// The callback resource, without its recording (a callback being placed or cancelled has none yet).
pub fn view(row: &CallbackRow, for_courier: bool) -> Value {
    view_with_recording(row, None, for_courier)
}

/// The callback resource with its recording, when one was fetched and bound to it.
/// `recording` is its rendered link (see `recordings::link`).
pub fn view_with_recording(row: &CallbackRow, recording: Option<Value>, for_courier: bool) -> Value {
    let s = &row.state;
    let number = |n: &Option<String>| match n {
        Some(n) if for_courier && row.target != "office" => json!(mask(n)),
        Some(n) => json!(n),
        None => Value::Null,
    };
    json!({
        "id": row.id,
        "target": row.target,
        "status": s.status.as_str(),
        "failed_leg": s.failed_leg.map(|l| l.as_str()),
        "reason": s.reason.map(|r| r.as_str()),
        "hangup_cause": s.hangup_cause,
        "detail": row.detail,
        "courier_id": row.courier_id,
        "order_id": row.order_id,
        "to": number(&row.to_number),
        "courier_number": if for_courier { row.courier_number.as_deref().map(mask).map(Value::String).unwrap_or(Value::Null) } else { json!(row.courier_number) },
        "created_at": rfc3339(Some(row.created_at)),
        "updated_at": rfc3339(Some(row.updated_at)),
        "courier_answered_at": rfc3339(s.courier_answered_at),
        "connected_at": rfc3339(s.connected_at),
        "ended_at": rfc3339(s.ended_at),
        "talk_seconds": s.talk_seconds,
        "billable_seconds": s.cdr_billable_seconds,
        "recording": recording,
    })
}

/// The recordings of these callbacks, by callback id.
async fn recordings_of(state: &AppState, tenant: &str, ids: &[Uuid]) -> Result<HashMap<Uuid, RecordingLink>, ApiError> {
    let db = store::client(&state.db).await?;
    let links = store::recordings::for_callbacks(&**db, tenant, ids).await?;
    Ok(links.into_iter().map(|link| (link.callback_id, link)).collect())
}

fn pbx_problem(error: &AmiError) -> ApiError {
    let (status, code, title) = match error {
        AmiError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "pbx_timeout", "The PBX did not answer in time"),
        AmiError::AuthFailed => (StatusCode::BAD_GATEWAY, "pbx_login_failed", "The PBX refused dialback's login"),
        AmiError::PermissionDenied | AmiError::Rejected(_) | AmiError::Encode(_) => {
            (StatusCode::BAD_GATEWAY, "pbx_refused", "The PBX refused the call")
        }
        AmiError::Saturated(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "pbx_busy", "Too many calls in progress on the PBX")
        }
        _ => (StatusCode::SERVICE_UNAVAILABLE, "pbx_unreachable", "The PBX cannot be reached"),
    };
    let mut problem = ApiError::new(status, code, title, error.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        problem = problem.with_header(header::RETRY_AFTER, "5");
    }
    problem
}

pub(crate) fn place_problem(err: PlaceError) -> ApiError {
    match err {
        PlaceError::NotConfigured => {
            ApiError::new(StatusCode::CONFLICT, "pbx_not_configured", "PBX not configured", err.to_string())
        }
        PlaceError::OfficeNotConfigured => {
            ApiError::new(StatusCode::CONFLICT, "office_not_configured", "Office not configured", err.to_string())
        }
        PlaceError::CourierNotRegistered(_) => {
            ApiError::new(StatusCode::FORBIDDEN, "courier_not_registered", "Courier not registered", err.to_string())
        }
        PlaceError::InvalidNumber { detail, callback } => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_number", "Invalid number", detail)
                .with("callback_id", callback.id.to_string())
        }
        PlaceError::Forbidden { detail, callback } => {
            ApiError::new(StatusCode::FORBIDDEN, "destination_forbidden", "Destination forbidden", detail)
                .with("callback_id", callback.id.to_string())
        }
        PlaceError::Pbx { error, callback, fallback } => pbx_problem(&error)
            .with("callback_id", callback.id.to_string())
            .with("fallback", serde_json::to_value(fallback).unwrap_or(Value::Null)),
        PlaceError::KeyTaken => in_progress(),
        PlaceError::RegistryChanging => {
            ApiError::new(StatusCode::CONFLICT, "registry_changing", "Courier or order changing", err.to_string())
                .with_header(header::RETRY_AFTER, "1")
        }
        PlaceError::SecretUndecryptable => ApiError::internal(anyhow::anyhow!(err)),
        PlaceError::Store(e) => e.into(),
    }
}

/// True when the attempt may have reached Asterisk (so a retry must replay, not try again).
fn may_have_originated(err: &PlaceError) -> bool {
    !matches!(err, PlaceError::Pbx { error, .. } if !matches!(error, AmiError::Timeout(_) | AmiError::Disconnected))
}

/// How a tap that was not accepted ended, for its idempotency record.
enum Failed {
    /// The Idempotency-Key is taken: the request is answered as a retry.
    KeyTaken,
    /// Refused before the attempt was written: nothing was claimed or sent.
    BeforeWrite(ApiError),
    /// After the attempt and its claim were written; `sent` when the PBX may have the call.
    AfterWrite { problem: ApiError, sent: bool },
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else { return Ok(None) };
    let key = value.to_str().unwrap_or("");
    if key.is_empty() || key.len() > 200 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid_field(
            "Idempotency-Key",
            "Idempotency-Key must be 1-200 printable ASCII characters",
        ));
    }
    Ok(Some(key.to_owned()))
}

fn request_hash(body: &CallbackRequest) -> String {
    let canonical = serde_json::to_vec(body).expect("request serialises");
    crate::crypto::encode_hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &canonical).as_ref())
}

fn replay(status: u16, body: Value) -> HttpResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let content_type = if status.is_success() { "application/json" } else { crate::error::PROBLEM_JSON };
    HttpResponse::build(status).content_type(content_type).insert_header(("Idempotent-Replayed", "true")).json(body)
}

/// The answer as (status, body), so it can be stored for replays.
async fn place(
    state: &AppState,
    caller: &Caller,
    request: &CallbackRequest,
    claim: Option<&IdempotencyClaim<'_>>,
) -> Result<(StatusCode, Value), Failed> {
    let target = match request.target.as_str() {
        "client" => {
            let to = request.to.clone().ok_or_else(|| {
                Failed::BeforeWrite(ApiError::invalid_field("to", "to is required for target client"))
            })?;
            if let Some(order) = &request.order_id {
                valid_id("order_id", order).map_err(Failed::BeforeWrite)?;
            }
            Target::Client { to, order_id: request.order_id.clone() }
        }
        "office" => Target::Office,
        _ => return Err(Failed::BeforeWrite(ApiError::invalid_field("target", "target must be client or office"))),
    };
    let (tenant, courier) = (caller.tenant(), caller.sub());
    let attempt = async {
        let prepared = state.callbacks.prepare(tenant, courier, target, Via::Pool, claim).await?;
        // Limits are checked once the attempt is written: a retry or a duplicate of a request
        // already taken ends in `prepare` (`KeyTaken`) and never counts.
        if let Err(limited) = state.limiters.callback(tenant, courier) {
            let row = state.callbacks.refuse(prepared, Reason::RateLimited, &limited.detail).await?;
            return Ok(Err((limited, row)));
        }
        state.callbacks.originate(prepared).await.map(Ok)
    };
    match attempt.await {
        Ok(Ok(row)) => Ok((StatusCode::ACCEPTED, view(&row, true))),
        Ok(Err((limited, row))) => {
            Err(Failed::AfterWrite { problem: limited.with("callback_id", row.id.to_string()), sent: false })
        }
        Err(PlaceError::KeyTaken) => Err(Failed::KeyTaken),
        Err(e @ (PlaceError::InvalidNumber { .. } | PlaceError::Forbidden { .. } | PlaceError::Pbx { .. })) => {
            let sent = may_have_originated(&e);
            Err(Failed::AfterWrite { problem: place_problem(e), sent })
        }
        Err(e) => Err(Failed::BeforeWrite(place_problem(e))),
    }
}

/// Answers a request whose Idempotency-Key was used before: the first answer, once there is one.
async fn answer_retry(
    state: &AppState,
    tenant: &str,
    courier: &str,
    claim: &IdempotencyClaim<'_>,
) -> Result<HttpResponse, ApiError> {
    // The first request may still be placing the call: wait for its answer (up to 15 s).
    for attempt in 0..150 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let db = store::client(&state.db).await?;
        // Released meanwhile (its PBX could not be reached): the client may try again.
        let Some(earlier) = store::idempotency::lookup(&db, tenant, courier, claim.key).await? else { break };
        if earlier.request_hash != claim.request_hash {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency key reused",
                "this Idempotency-Key was used for a different request; use a new key",
            ));
        }
        if let Some((status, body)) = earlier.response {
            return Ok(replay(status, body));
        }
        // Placed (202): the attempt as it is now. It was placed once the tracker has recorded
        // the Originate's ActionID, milliseconds after the first answer.
        if let Some(id) = earlier.callback_id {
            if let Some(row) = store::callbacks::get(&db, tenant, id).await?.filter(|row| row.action_id.is_some()) {
                return Ok(replay(StatusCode::ACCEPTED.as_u16(), view(&row, true)));
            }
        }
    }
    Err(in_progress())
}

fn in_progress() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_in_progress",
        "Request in progress",
        "a request with this Idempotency-Key is still in progress; retry later",
    )
    .with_header(header::RETRY_AFTER, "2")
}

pub async fn create(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Courier)?;
    let request: CallbackRequest = parse_body(body.into_inner())?;
    let key = idempotency_key(&req)?;
    // Hashed only when there is a key to hold it against.
    let hash = key.as_ref().map(|_| request_hash(&request));
    let claim = key.as_deref().zip(hash.as_deref()).map(|(key, request_hash)| IdempotencyClaim { key, request_hash });
    let (tenant, courier) = (caller.tenant(), caller.sub());
    let (claim, failed) = match (place(&state, &caller, &request, claim.as_ref()).await, claim) {
        (Ok((status, body)), _) => return Ok(HttpResponse::build(status).json(body)),
        (Err(Failed::BeforeWrite(problem) | Failed::AfterWrite { problem, .. }), None) => return Err(problem),
        (Err(Failed::KeyTaken), Some(claim)) => return answer_retry(&state, tenant, courier, &claim).await,
        (Err(failed), Some(claim)) => (claim, failed),
        (Err(Failed::KeyTaken), None) => unreachable!("no key was claimed"),
    };
    // Placed calls need no more (the key's record names the attempt, see `answer_retry`); the
    // other answers are stored for retries, or the key given back.
    let mut db = store::client(&state.db).await?;
    match failed {
        Failed::AfterWrite { problem, sent: true } => {
            store::idempotency::complete(&db, tenant, courier, claim.key, problem.status.as_u16(), &problem.to_json())
                .await?;
            Err(problem)
        }
        Failed::AfterWrite { problem, sent: false } => {
            store::idempotency::release(&db, tenant, courier, claim.key).await?;
            Err(problem)
        }
        // A retry is answered as one even when this request would be refused now (the courier or
        // the settings changed): its first answer stands.
        Failed::BeforeWrite(problem) => {
            if store::idempotency::is_taken(&mut db, tenant, courier, &claim).await? {
                drop(db);
                return answer_retry(&state, tenant, courier, &claim).await;
            }
            Err(problem)
        }
        Failed::KeyTaken => unreachable!("answered above"),
    }
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found("callback"))
}

/// Loads a callback the caller may see: a courier their own, an admin their tenant's.
async fn visible(state: &AppState, caller: &Caller, id: Uuid) -> Result<CallbackRow, ApiError> {
    let db = store::client(&state.db).await?;
    let row = store::callbacks::get(&db, caller.tenant(), id).await?.ok_or_else(|| ApiError::not_found("callback"))?;
    if !caller.is_admin() && row.courier_id != caller.sub() {
        return Err(ApiError::not_found("callback"));
    }
    Ok(row)
}

pub async fn get(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let row = visible(&state, &caller, parse_id(&path)?).await?;
    let recordings = recordings_of(&state, caller.tenant(), &[row.id]).await?;
    let key = state.config.secrets_key();
    let recording = recordings.get(&row.id).map(|r| link(&key, &row.tenant_id, r));
    Ok(HttpResponse::Ok().json(view_with_recording(&row, recording, !caller.is_admin())))
}

pub async fn cancel(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let row = visible(&state, &caller, parse_id(&path)?).await?;
    if !row.state.status.is_ringing() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_cancelable",
            "Not cancelable",
            format!("the callback is {} and can no longer be canceled", row.state.status.as_str()),
        ));
    }
    let row = state.callbacks.cancel(&row).await.map_err(place_problem)?;
    Ok(HttpResponse::Ok().json(view(&row, !caller.is_admin())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    order_id: Option<String>,
    courier_id: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

fn parse_time(field: &str, value: &Option<String>) -> Result<Option<OffsetDateTime>, ApiError> {
    value
        .as_deref()
        .map(|v| {
            OffsetDateTime::parse(v, &Rfc3339)
                .map_err(|_| ApiError::invalid_field(field, format!("{field} must be an RFC 3339 time")))
        })
        .transpose()
}

pub async fn list(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let q = query.into_inner();
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => {
            Some(Status::parse(s).ok_or_else(|| ApiError::invalid_field("status", format!("unknown status {s:?}")))?)
        }
    };
    let before = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            Uuid::parse_str(c)
                .map_err(|_| ApiError::invalid_field("cursor", "cursor is the next_cursor of a previous page"))?,
        ),
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid_field("limit", "limit must be 1-200"));
    }
    for (field, value) in [("order_id", &q.order_id), ("courier_id", &q.courier_id)] {
        if let Some(value) = value {
            valid_id(field, value)?;
        }
    }
    let filter = store::callbacks::ListFilter {
        order_id: q.order_id,
        courier_id: q.courier_id,
        status,
        since: parse_time("since", &q.since)?,
        until: parse_time("until", &q.until)?,
        before,
        limit,
    };
    let db = store::client(&state.db).await?;
    let rows = store::callbacks::list(&db, caller.tenant(), &filter).await?;
    drop(db);
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let recordings = recordings_of(&state, caller.tenant(), &ids).await?;
    let key = state.config.secrets_key();
    let next = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.id.to_string())).flatten();
    Ok(HttpResponse::Ok().json(json!({
        "items": rows
            .iter()
            .map(|r| view_with_recording(r, recordings.get(&r.id).map(|rec| link(&key, caller.tenant(), rec)), false))
            .collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}
