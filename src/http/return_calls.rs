//! Return calls over HTTP: the company's rules and key (`/v1/admin/return-calls`), the journal
//! (`/v1/return-calls`), and the route itself for PBXs that ask over HTTP (`/v1/pbx/route`, the
//! same decision as FastAGI's, authenticated by the company's key rather than a token).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::body::JsonObject;
use super::extract::{query_time, Admin, Page, Principal};
use super::problem::ApiError;
use super::state::AppState;
use crate::domain::phone;
use crate::domain::return_call::{ReturnCallSettings, ReturnStatus};
use crate::return_calls::view::view;
use crate::return_calls::{RouteError, RouteRequest, RulesView};
use crate::store::return_calls::ListFilter;
use crate::view::{rfc3339, Viewer};

pub(super) fn problem(err: RouteError) -> ApiError {
    match err {
        RouteError::BadKey => ApiError::new(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "invalid_key",
            "Invalid key",
            "no company has this key: take it from GET /v1/admin/return-calls (agi_url, route_url)",
        ),
        RouteError::AddressNotAllowed(peer) => ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "address_not_allowed",
            "Address not allowed",
            format!("the company does not allow requests from {peer} (allowed_addresses)"),
        ),
        RouteError::Store(e) => e.into(),
        RouteError::Settings(e) => super::problem::place_problem(&e, super::problem::Audience::Admin),
    }
}

/// The rules with the key and the URLs to paste into the PBX.
fn rules_view(req: &HttpRequest, state: &AppState, rules: &RulesView) -> Value {
    let info = req.connection_info();
    let route_url = format!("{}://{}/v1/pbx/route?key={}", info.scheme(), info.host(), rules.key);
    let agi_url = state.agi_address.as_ref().map(|address| format!("agi://{address}/route?key={}", rules.key));
    let mut v = serde_json::to_value(&rules.rules).expect("rules serialise");
    v["key"] = json!(rules.key);
    v["agi_url"] = json!(agi_url);
    v["route_url"] = json!(route_url);
    v["updated_at"] = rfc3339(Some(rules.updated_at));
    v
}

pub async fn get_rules(req: HttpRequest, admin: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let rules = state.return_calls.rules(admin.tenant()).await.map_err(problem)?;
    Ok(HttpResponse::Ok().json(rules_view(&req, &state, &rules)))
}

pub async fn put_rules(
    req: HttpRequest,
    admin: Admin,
    state: web::Data<AppState>,
    body: JsonObject<ReturnCallSettings>,
) -> Result<HttpResponse, ApiError> {
    body.validate()?;
    let rules = state.return_calls.put_rules(admin.tenant(), &body).await.map_err(problem)?;
    Ok(HttpResponse::Ok().json(rules_view(&req, &state, &rules)))
}

pub async fn rotate_key(req: HttpRequest, admin: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let rules = state.return_calls.rotate_key(admin.tenant()).await.map_err(problem)?;
    Ok(HttpResponse::Ok().json(rules_view(&req, &state, &rules)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteQuery {
    key: Option<String>,
    caller: Option<String>,
    did: Option<String>,
    uniqueid: Option<String>,
}

/// `GET /v1/pbx/route`: the route for a caller, as JSON, or (`Accept: text/plain`) the dial string
/// alone, which a dialplan's `CURL()` can use as it is (empty: the office). A request without a
/// valid key is refused (401); with `text/plain` its body is empty, so the dialplan still sends
/// the call to the office.
pub async fn route(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<RouteQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let plain = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.split(',').any(|t| t.trim().starts_with("text/plain")));
    let request = RouteRequest {
        key: query.key,
        caller: query.caller.unwrap_or_default(),
        did: query.did,
        uniqueid: query.uniqueid,
        peer: req.peer_addr().map(|p| p.ip()),
    };
    match state.return_calls.route(&request).await {
        Ok(route) if plain => Ok(HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(route.route)),
        Ok(route) => Ok(HttpResponse::Ok().json(json!({
            "route": route.route,
            "route_kind": route.kind,
            "call_id": route.call_id,
            "order_id": route.order_id,
            "courier_id": route.courier_id,
        }))),
        Err(refused) => {
            refused.count_and_log(&state.cluster.limiters, &request);
            let problem = problem(refused);
            if plain {
                return Ok(HttpResponse::build(problem.status).content_type("text/plain; charset=utf-8").finish());
            }
            Err(problem)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    phone: Option<String>,
    courier_id: Option<String>,
    order_id: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/return-calls`: the company's return calls, newest first.
pub async fn list(
    admin: Admin,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let page = Page::parse(q.cursor.as_deref(), q.limit)?;
    let tenant = admin.tenant();
    let caller_number = match q.phone.as_deref() {
        None => None,
        Some(raw) => {
            let region = state
                .callbacks
                .default_region(tenant)
                .await
                .map_err(|e| super::problem::place_problem(&e, super::problem::Audience::Admin))?;
            Some(
                phone::parse(raw, &region)
                    .map_err(|e| ApiError::invalid_field("phone", format!("phone is not a phone number: {e}")))?
                    .e164,
            )
        }
    };
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(
            ReturnStatus::parse(s)
                .ok_or_else(|| ApiError::invalid_field("status", format!("status {s:?} is not one the API knows")))?,
        ),
    };
    for (field, value) in [("courier_id", &q.courier_id), ("order_id", &q.order_id)] {
        if let Some(value) = value {
            crate::domain::check_id(field, value)?;
        }
    }
    let filter = ListFilter {
        caller: caller_number,
        courier_id: q.courier_id,
        order_id: q.order_id,
        status,
        since: query_time("since", q.since.as_deref())?,
        until: query_time("until", q.until.as_deref())?,
        before: page.before,
        limit: page.limit,
    };
    let rows = state.return_calls.list(tenant, &filter).await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    Ok(HttpResponse::Ok().json(json!({
        "items": rows.iter().map(|r| view(r, Viewer::Admin)).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor(&ids),
    })))
}

/// `GET /v1/return-calls/{id}`: for admins, and for the courier it was routed to (caller masked).
pub async fn get(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&path).map_err(|_| ApiError::not_found("return call"))?;
    let row =
        state.return_calls.get(principal.tenant(), id).await?.ok_or_else(|| ApiError::not_found("return call"))?;
    let viewer = if principal.is_admin() { Viewer::Admin } else { Viewer::Courier };
    if viewer == Viewer::Courier && row.courier_id.as_deref() != Some(principal.sub()) {
        return Err(ApiError::not_found("return call"));
    }
    Ok(HttpResponse::Ok().json(view(&row, viewer)))
}
