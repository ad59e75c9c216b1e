//! `/v1/admin/couriers` and `/v1/admin/orders`: the courier registry and the orders, as the
//! company's main system pushes them.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::body::JsonObject;
use super::extract::{path_id, Admin};
use super::problem::{place_problem, ApiError, Audience};
use super::state::AppState;
use crate::domain::company::TenantId;
use crate::domain::registry::OrderState;
use crate::domain::{check_id, check_text, phone};
use crate::store;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CourierBody {
    phone: String,
    #[serde(default)]
    name: String,
    #[serde(default = "yes")]
    active: bool,
}

fn yes() -> bool {
    true
}

/// The company's default region (how national numbers are read), RU until settings say otherwise.
async fn default_region(state: &AppState, tenant: &TenantId) -> Result<String, ApiError> {
    state.callbacks.default_region(tenant).await.map_err(|e| place_problem(&e, Audience::Admin))
}

pub async fn list_couriers(admin: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let db = store::client(&state.db).await?;
    let couriers = store::admin::list_couriers(&db, admin.tenant()).await?;
    Ok(HttpResponse::Ok().json(json!({ "items": couriers })))
}

pub async fn get_courier(
    admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id("courier_id", &path)?;
    let db = store::client(&state.db).await?;
    let courier =
        store::admin::get_courier(&db, admin.tenant(), id).await?.ok_or_else(|| ApiError::not_found("courier"))?;
    Ok(HttpResponse::Ok().json(courier))
}

pub async fn put_courier(
    admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: JsonObject<CourierBody>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id("courier_id", &path)?;
    check_text("name", &body.name)?;
    if body.name.chars().count() > 200 {
        return Err(ApiError::invalid_field("name", "name must be at most 200 characters"));
    }
    let region = default_region(&state, admin.tenant()).await?;
    let phone = phone::parse(&body.phone, &region)
        .map_err(|e| ApiError::invalid_field("phone", format!("phone is not a valid number: {e}")))?;
    if !phone.kind.is_ordinary() {
        return Err(ApiError::invalid_field(
            "phone",
            format!("phone is {}; a courier needs a mobile or fixed-line number", phone.kind.describe()),
        ));
    }
    let db = store::client(&state.db).await?;
    let (courier, created) =
        store::admin::put_courier(&db, admin.tenant(), id, &phone.e164, &body.name, body.active).await?;
    Ok(if created { HttpResponse::Created() } else { HttpResponse::Ok() }.json(courier))
}

pub async fn delete_courier(
    admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id("courier_id", &path)?;
    let db = store::client(&state.db).await?;
    if !store::admin::delete_courier(&db, admin.tenant(), id).await? {
        return Err(ApiError::not_found("courier"));
    }
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderBody {
    #[serde(default)]
    courier_id: Option<String>,
    #[serde(default)]
    phones: Vec<String>,
    #[serde(default = "active")]
    state: OrderState,
}

fn active() -> OrderState {
    OrderState::Active
}

pub async fn get_order(
    admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id("order_id", &path)?;
    let db = store::client(&state.db).await?;
    let order = store::admin::get_order(&db, admin.tenant(), id).await?.ok_or_else(|| ApiError::not_found("order"))?;
    Ok(HttpResponse::Ok().json(order))
}

pub async fn put_order(
    admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: JsonObject<OrderBody>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id("order_id", &path)?;
    if let Some(courier) = &body.courier_id {
        check_id("courier_id", courier)?;
    }
    if body.phones.len() > 10 {
        return Err(ApiError::invalid_field("phones", "an order has at most 10 phone numbers"));
    }
    let region = default_region(&state, admin.tenant()).await?;
    let mut phones = Vec::with_capacity(body.phones.len());
    for p in &body.phones {
        let parsed = phone::parse(p, &region)
            .map_err(|e| ApiError::invalid_field("phones", format!("{p:?} is not a valid number: {e}")))?;
        phones.push(parsed.e164);
    }
    let db = store::client(&state.db).await?;
    let (order, created) =
        store::admin::put_order(&db, admin.tenant(), id, body.courier_id.as_deref(), &phones, body.state).await?;
    Ok(if created { HttpResponse::Created() } else { HttpResponse::Ok() }.json(order))
}

pub async fn delete_order(
    admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id("order_id", &path)?;
    let db = store::client(&state.db).await?;
    if !store::admin::delete_order(&db, admin.tenant(), id).await? {
        return Err(ApiError::not_found("order"));
    }
    Ok(HttpResponse::NoContent().finish())
}
