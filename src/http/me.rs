//! `GET /v1/me`: the courier app's start-up call. Who the courier is, the office's city number
//! (dialled over cellular when calls cannot go through the PBX), whether callbacks through the
//! PBX are available right now, and the limits that apply. Cheap (the courier's row, cached
//! settings and the AMI link's state; the PBX is not asked, though a link not yet open is opened)
//! and cacheable for a short while.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::extract::Courier;
use super::problem::{place_problem, ApiError, Audience};
use super::state::AppState;
use crate::callbacks::PbxAvailability;
use crate::store;

/// How long the app may use its copy before asking again.
const MAX_AGE_S: u32 = 30;

pub async fn me(
    req: HttpRequest,
    Courier(principal): Courier,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let tenant = principal.tenant();
    let db = store::client(&state.db).await?;
    let courier = store::admin::get_courier(&db, tenant, principal.sub()).await?;
    drop(db);
    let settings = state.callbacks.settings(tenant).await.map_err(|e| place_problem(&e, Audience::Courier))?;
    let pbx = state.callbacks.pbx_availability(tenant).await.map_err(|e| place_problem(&e, Audience::Courier))?;
    let (available, why_not) = match (&courier, pbx) {
        (None, _) => (false, Some("courier_not_registered")),
        (Some(c), _) if !c.active => (false, Some("courier_inactive")),
        (_, PbxAvailability::NotConfigured) => (false, Some("pbx_not_configured")),
        // A link that is down is being retried; taps fail fast meanwhile.
        (_, PbxAvailability::Unreachable(_)) => (false, Some("pbx_unreachable")),
        (_, PbxAvailability::Available) => (true, None),
    };
    let rate = &state.config.rate;
    let body = json!({
        "courier": courier.map(|c| json!({"id": c.id, "name": c.name, "phone": c.phone, "active": c.active})),
        "office_phone": settings.as_ref().and_then(|(s, _)| s.office_phone_e164()),
        "callbacks": { "available": available, "why_not": why_not },
        "limits": { "callbacks_per_minute": rate.courier_per_minute },
    });
    let bytes = serde_json::to_vec(&body).expect("JSON");
    let tag = format!("\"{}\"", &hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes))[..32]);
    let cache = (header::CACHE_CONTROL, format!("private, max-age={MAX_AGE_S}"));
    let unchanged = req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v == tag);
    if unchanged {
        return Ok(HttpResponse::NotModified().insert_header(cache).insert_header((header::ETAG, tag)).finish());
    }
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(cache)
        .insert_header((header::ETAG, tag))
        .body(bytes))
}
