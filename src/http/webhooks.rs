//! `/v1/admin/webhooks`: a company's webhook endpoints (their signing secret shown once, when
//! created or rotated), and each endpoint's deliveries with a way to send one again.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::JsonObject;
use super::extract::{page_limit, path_id, Admin};
use super::problem::ApiError;
use super::state::AppState;
use crate::domain::event::EndpointSpec;
use crate::store::webhooks::{DeliveryRow, DeliveryStatus, EndpointRow};
use crate::view::rfc3339;
use crate::webhooks::{message_id, parse_message_id, Written};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointBody {
    url: String,
    event_types: Vec<String>,
    #[serde(default)]
    description: String,
    #[serde(default = "enabled")]
    enabled: bool,
}

fn enabled() -> bool {
    true
}

fn endpoint_view(e: &EndpointRow) -> Value {
    json!({
        "id": e.id,
        "url": e.url,
        "event_types": e.event_types,
        "description": e.description,
        "enabled": e.enabled,
        "disabled_reason": e.disabled_reason,
        "failing_since": rfc3339(e.failing_since),
        "previous_secret_until": rfc3339(e.previous_secret_until),
        "created_at": rfc3339(Some(e.created_at)),
        "updated_at": rfc3339(Some(e.updated_at)),
    })
}

/// The endpoint, with its secret when this answer is the one that gives it.
fn written_view(written: &Written) -> Value {
    let mut view = endpoint_view(&written.endpoint);
    if let Some(secret) = &written.secret {
        view["secret"] = json!(secret);
    }
    view
}

fn delivery_view(d: &DeliveryRow) -> Value {
    json!({
        "message_id": message_id(d.key.subject_id, d.key.sequence),
        "event_type": d.event_type,
        "subject_id": d.key.subject_id,
        "sequence": d.key.sequence,
        "status": d.status.as_str(),
        "attempts": d.attempts,
        "next_attempt_at": if d.status == DeliveryStatus::Pending { rfc3339(Some(d.next_attempt_at)) } else { Value::Null },
        "last_attempt_at": rfc3339(d.last_attempt_at),
        "last_status": d.last_status,
        "last_error": d.last_error,
        "delivered_at": rfc3339(d.delivered_at),
        "created_at": rfc3339(Some(d.created_at)),
    })
}

pub async fn list(admin: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let endpoints = state.webhooks.endpoints(admin.tenant()).await?;
    Ok(HttpResponse::Ok().json(json!({ "items": endpoints.iter().map(endpoint_view).collect::<Vec<_>>() })))
}

pub async fn get(admin: Admin, state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = path_id("endpoint_id", &path)?;
    Ok(HttpResponse::Ok().json(endpoint_view(&state.webhooks.endpoint(admin.tenant(), id).await?)))
}

/// Creates (201, with its `secret`, shown this once) or updates (200) an endpoint.
pub async fn put(
    admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: JsonObject<EndpointBody>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id("endpoint_id", &path)?;
    let spec = EndpointSpec::new(&body.url, &body.event_types, &body.description, body.enabled)?;
    let written = state.webhooks.put_endpoint(admin.tenant(), id, &spec).await?;
    let status = if written.created { HttpResponse::Created() } else { HttpResponse::Ok() };
    Ok({ status }.json(written_view(&written)))
}

pub async fn delete(
    admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id("endpoint_id", &path)?;
    state.webhooks.delete_endpoint(admin.tenant(), id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A new signing secret, shown in this answer; the previous one signs too until
/// `previous_secret_until`.
pub async fn rotate_secret(
    admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id("endpoint_id", &path)?;
    Ok(HttpResponse::Ok().json(written_view(&state.webhooks.rotate_secret(admin.tenant(), id).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

pub async fn deliveries(
    admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<DeliveriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id("endpoint_id", &path)?;
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            ApiError::invalid_field("status", format!("status {s:?} is not one of pending, delivered, failed"))
        })?),
    };
    let before = match query.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            parse_message_id(c)
                .ok_or_else(|| ApiError::invalid_field("cursor", "cursor is the next_cursor of a previous page"))?,
        ),
    };
    let limit = page_limit(query.limit)?;
    let rows = state.webhooks.deliveries(admin.tenant(), id, status, before, limit).await?;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|d| message_id(d.key.subject_id, d.key.sequence)))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({
        "items": rows.iter().map(delivery_view).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    })))
}

/// Sends a delivery again now (whatever became of it), its retries counted afresh.
pub async fn retry(
    admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (endpoint, message) = path.into_inner();
    let id = path_id("endpoint_id", &endpoint)?;
    let (subject, sequence) = parse_message_id(&message).ok_or_else(|| ApiError::not_found("delivery"))?;
    let row = state.webhooks.retry(admin.tenant(), id, subject, sequence).await.map_err(|e| match e {
        crate::webhooks::WebhookError::NotFound => ApiError::not_found("delivery"),
        other => other.into(),
    })?;
    Ok(HttpResponse::Accepted().json(delivery_view(&row)))
}
