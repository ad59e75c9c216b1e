//! `/v1/callbacks`: couriers place, read and cancel their callbacks; admins read and list their
//! company's. A tap retried with the same `Idempotency-Key` never originates twice (the protocol
//! is `callbacks::idempotency`'s).

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::body::JsonObject;
use super::extract::{query_time, Admin, Courier, Page, Principal};
use super::journal_csv;
use super::problem::{idempotency_in_progress, place_problem, ApiError, Audience, PROBLEM_JSON};
use super::state::AppState;
use crate::callbacks::idempotency::{Claim, NextAction};
use crate::callbacks::view::view;
use crate::domain::callback::{Leg, Reason, Status, Target};
use crate::domain::company::TenantId;
use crate::domain::destination::CallRequest;
use crate::domain::{check_id, phone};
use crate::store::{self, callbacks::CallbackRow};
use crate::view::Viewer;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackBody {
    target: String,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    order_id: Option<String>,
}

impl CallbackBody {
    fn call_request(&self) -> Result<CallRequest, ApiError> {
        match self.target.as_str() {
            "client" => {
                let to =
                    self.to.clone().ok_or_else(|| ApiError::invalid_field("to", "to is required for target client"))?;
                if let Some(order) = &self.order_id {
                    check_id("order_id", order)?;
                }
                Ok(CallRequest::Client { to, order_id: self.order_id.clone() })
            }
            "office" => Ok(CallRequest::Office),
            _ => Err(ApiError::invalid_field("target", "target must be client or office")),
        }
    }
}

fn viewer(principal: &Principal) -> Viewer {
    if principal.is_admin() {
        Viewer::Admin
    } else {
        Viewer::Courier
    }
}

/// `POST /v1/callbacks`: the courier's tap.
pub async fn create(
    req: HttpRequest,
    Courier(principal): Courier,
    state: web::Data<AppState>,
    body: JsonObject<CallbackBody>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, courier) = (principal.tenant(), principal.sub());
    let request = body.call_request()?;
    let claim = match req.headers().get("idempotency-key") {
        None => None,
        Some(value) => Some(Claim::new(value.to_str().unwrap_or(""), &*body)?),
    };
    // The one success is 202 with the call; everything else (a company without a PBX too) is a
    // problem, so a generated client has one type to return.
    let error = match state.callbacks.tap(tenant, courier, request, claim.as_ref().map(Claim::as_store).as_ref()).await
    {
        Ok(row) => return Ok(HttpResponse::Accepted().json(view(&row, None, Viewer::Courier))),
        Err(error) => error,
    };
    let problem = place_problem(&error, Audience::Courier);
    let Some(claim) = claim else { return Err(problem) };
    let answer = (problem.status.as_u16(), &problem.to_json());
    match state.callbacks.next_action(tenant, courier, &claim, &error, answer).await? {
        NextAction::AnswerThis => Err(problem),
        NextAction::Replay { status, body } => Ok(replay(status, body)),
        NextAction::ReplayPlaced(row) => Ok(replay(StatusCode::ACCEPTED.as_u16(), view(&row, None, Viewer::Courier))),
        NextAction::KeyReused => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "Idempotency key reused",
            "this Idempotency-Key was used for a different request; use a new key",
        )),
        NextAction::InProgress => Err(idempotency_in_progress()),
    }
}

/// The first answer to a request, given again to its retry.
fn replay(status: u16, body: Value) -> HttpResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let content_type = if status.is_success() { "application/json" } else { PROBLEM_JSON };
    HttpResponse::build(status).content_type(content_type).insert_header(("Idempotent-Replayed", "true")).json(body)
}

pub(super) fn callback_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found("callback"))
}

/// Loads a callback the caller may see: a courier their own, an admin their company's.
pub(super) async fn visible(state: &AppState, principal: &Principal, id: Uuid) -> Result<CallbackRow, ApiError> {
    let db = store::client(&state.db).await?;
    let row =
        store::callbacks::get(&db, principal.tenant(), id).await?.ok_or_else(|| ApiError::not_found("callback"))?;
    if !principal.is_admin() && row.courier_id != principal.sub() {
        return Err(ApiError::not_found("callback"));
    }
    Ok(row)
}

/// The callbacks' views, each with its recording's link when one is bound.
async fn views(
    state: &AppState,
    tenant: &TenantId,
    rows: &[CallbackRow],
    viewer: Viewer,
) -> Result<Vec<Value>, ApiError> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let db = store::client(&state.db).await?;
    let links = store::recordings::for_callbacks(&**db, tenant, &ids).await?;
    drop(db);
    let mut links: HashMap<Uuid, Value> =
        links.iter().map(|link| (link.callback_id, state.recordings.link(tenant, link))).collect();
    Ok(rows.iter().map(|row| view(row, links.remove(&row.id), viewer)).collect())
}

pub async fn get(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let row = visible(&state, &principal, callback_id(&path)?).await?;
    let mut one = views(&state, principal.tenant(), std::slice::from_ref(&row), viewer(&principal)).await?;
    Ok(HttpResponse::Ok().json(one.remove(0)))
}

pub async fn cancel(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let row = visible(&state, &principal, callback_id(&path)?).await?;
    if !row.state.status.is_ringing() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_cancelable",
            "Not cancelable",
            format!("the callback is {} and can no longer be canceled", row.state.status.as_str()),
        ));
    }
    let audience = if principal.is_admin() { Audience::Admin } else { Audience::Courier };
    let row = state.callbacks.cancel(&row).await.map_err(|e| place_problem(&e, audience))?;
    Ok(HttpResponse::Ok().json(view(&row, None, viewer(&principal))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    order_id: Option<String>,
    courier_id: Option<String>,
    status: Option<String>,
    kind: Option<String>,
    failed_leg: Option<String>,
    reason: Option<String>,
    /// The client's (or the office's) number, in any form the courier or the office would type.
    phone: Option<String>,
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// One of `parse`'s names, or a 422 listing them.
fn one_of<T>(
    field: &'static str,
    value: Option<&str>,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    value
        .map(|v| {
            parse(v).ok_or_else(|| ApiError::invalid_field(field, format!("{field} {v:?} is not one the API knows")))
        })
        .transpose()
}

impl ListQuery {
    /// The filter it asks for; `phone` is read in the company's default region.
    async fn filter(
        self,
        state: &AppState,
        tenant: &TenantId,
        page: &Page,
    ) -> Result<store::callbacks::ListFilter, ApiError> {
        for (field, value) in [("order_id", &self.order_id), ("courier_id", &self.courier_id)] {
            if let Some(value) = value {
                check_id(field, value)?;
            }
        }
        let to_number = match self.phone.as_deref() {
            None => None,
            // An office extension is looked up as written.
            Some(digits) if digits.len() <= 6 && digits.bytes().all(|b| b.is_ascii_digit()) => Some(digits.to_owned()),
            Some(raw) => {
                let region =
                    state.callbacks.default_region(tenant).await.map_err(|e| place_problem(&e, Audience::Admin))?;
                let parsed = phone::parse(raw, &region)
                    .map_err(|e| ApiError::invalid_field("phone", format!("phone is not a phone number: {e}")))?;
                Some(parsed.e164)
            }
        };
        Ok(store::callbacks::ListFilter {
            order_id: self.order_id,
            courier_id: self.courier_id,
            status: one_of("status", self.status.as_deref(), Status::parse)?,
            target: one_of("kind", self.kind.as_deref(), Target::parse)?,
            failed_leg: one_of("failed_leg", self.failed_leg.as_deref(), Leg::parse)?,
            reason: one_of("reason", self.reason.as_deref(), Reason::parse)?,
            to_number,
            since: query_time("since", self.since.as_deref())?,
            until: query_time("until", self.until.as_deref())?,
            before: page.before,
            limit: page.limit,
        })
    }
}

/// `GET /v1/callbacks`: the company's journal, newest first, as JSON pages. `Accept: text/csv`
/// gets [`export`]'s answer (with `cursor`), as it did before `/v1/callbacks.csv` existed; the
/// spec documents only JSON here, so a generated client's method returns one type.
pub async fn list(
    req: HttpRequest,
    admin: Admin,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let page = Page::parse(query.cursor.as_deref(), query.limit)?;
    let filter = query.filter(&state, admin.tenant(), &page).await?;
    if wants_csv(&req) {
        return Ok(journal_csv::response(state.into_inner(), admin.tenant().clone(), filter));
    }
    let db = store::client(&state.db).await?;
    let rows = store::callbacks::list(&db, admin.tenant(), &filter).await?;
    drop(db);
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let items = views(&state, admin.tenant(), &rows, Viewer::Admin).await?;
    Ok(HttpResponse::Ok().json(json!({ "items": items, "next_cursor": page.next_cursor(&ids) })))
}

/// `GET /v1/callbacks.csv`: every call the filters match, as one CSV file (see [`journal_csv`]).
pub async fn export(
    admin: Admin,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    // The list's filters; the export has no pages.
    if query.cursor.is_some() || query.limit.is_some() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "the export has no pages: cursor and limit are not parameters of /v1/callbacks.csv",
        ));
    }
    let page = Page::parse(None, None)?;
    let filter = query.filter(&state, admin.tenant(), &page).await?;
    Ok(journal_csv::response(state.into_inner(), admin.tenant().clone(), filter))
}

/// Whether the client asks for CSV rather than JSON.
fn wants_csv(req: &HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.split(',').any(|t| t.trim().starts_with("text/csv")))
}
