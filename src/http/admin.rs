//! Admin resources (role `admin`): the tenant's PBX settings (with its recordings source), its
//! courier registry and its orders.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Role;
use crate::domain::phone;
use crate::domain::settings::{check_ftp_password, check_text, PbxSettings};
use crate::error::ApiError;
use crate::http::auth::Caller;
use crate::startup::AppState;
use crate::store;

/// Path ids (courier, order): short, printable, no separators that could confuse logs or AMI.
pub fn valid_id<'a>(field: &str, id: &'a str) -> Result<&'a str, ApiError> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
        return Err(ApiError::invalid_field(
            field,
            format!("{field} must be 1-64 characters of A-Z, a-z, 0-9, '-', '_', '.', ':'"),
        ));
    }
    Ok(id)
}

/// Parses a JSON body into `T`, naming the problem (unknown field, wrong type) in a 422.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: Value) -> Result<T, ApiError> {
    serde_json::from_value(body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "Invalid body",
            format!("the body does not match the schema: {e}"),
        )
    })
}

async fn default_region(state: &AppState, tenant: &str) -> Result<String, ApiError> {
    let db = store::client(&state.db).await?;
    Ok(store::admin::get_settings(&db, tenant).await?.map(|s| s.settings.default_region).unwrap_or_else(|| "RU".into()))
}

fn settings_view(settings: &PbxSettings, updated_at: time::OffsetDateTime, recordings_password_set: bool) -> Value {
    let mut v = serde_json::to_value(settings).expect("settings serialise");
    v["secret_set"] = json!(true);
    if let Some(recordings) = v.get_mut("recordings").filter(|r| r.is_object()) {
        recordings["password_set"] = json!(recordings_password_set);
    }
    v["updated_at"] = json!(updated_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default());
    v
}

pub async fn get_pbx(caller: Caller, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let db = store::client(&state.db).await?;
    let stored =
        store::admin::get_settings(&db, caller.tenant()).await?.ok_or_else(|| ApiError::not_found("PBX settings"))?;
    let password_set = store::recordings::source_password(&**db, caller.tenant()).await?.is_some();
    Ok(HttpResponse::Ok().json(settings_view(&stored.settings, stored.updated_at, password_set)))
}

/// Takes the write-only `recordings.password` out of a settings body (before the body is parsed
/// as settings, which have no such field).
pub fn recordings_password_from_body(body: &mut Value) -> Result<Option<String>, ApiError> {
    let Some(recordings) = body.get_mut("recordings").and_then(Value::as_object_mut) else { return Ok(None) };
    match recordings.remove("password") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(password)) => {
            check_ftp_password(&password).map_err(|e| ApiError::invalid_field(e.field, e.message))?;
            Ok(Some(password))
        }
        Some(_) => Err(ApiError::invalid_field("recordings.password", "recordings.password must be a string")),
    }
}

/// Splits the write-only `secret` from the settings and validates both. A `recordings.password`
/// is validated and dropped: callers that store it take it out first
/// ([`recordings_password_from_body`]).
pub fn settings_from_body(mut body: Value) -> Result<(PbxSettings, Option<String>), ApiError> {
    recordings_password_from_body(&mut body)?;
    let secret = match body.as_object_mut().and_then(|o| o.remove("secret")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(ApiError::invalid_field("secret", "secret must be a string")),
    };
    let settings: PbxSettings = parse_body(body)?;
    settings.validate().map_err(|e| ApiError::invalid_field(e.field, e.message))?;
    if let Some(secret) = &secret {
        check_text("secret", secret).map_err(|e| ApiError::invalid_field(e.field, e.message))?;
        if secret.is_empty() || secret.len() > 256 {
            return Err(ApiError::invalid_field("secret", "secret must be 1-256 characters"));
        }
    }
    Ok((settings, secret))
}

pub async fn put_pbx(
    caller: Caller,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let tenant = caller.tenant();
    let mut body = body.into_inner();
    let recordings_password = recordings_password_from_body(&mut body)?;
    let (settings, secret) = settings_from_body(body)?;
    let mut db = store::client(&state.db).await?;
    let secret_enc = match secret {
        Some(secret) => state.config.secrets_key().encrypt(&secret, tenant),
        None => store::admin::get_settings(&db, tenant)
            .await?
            .filter(|stored| stored.settings.same_ami_login(&settings))
            .map(|s| s.secret_enc)
            .ok_or_else(|| {
                ApiError::invalid_field(
                    "secret",
                    "secret is required the first time settings are saved, and when host, port or username change",
                )
            })?,
    };
    let recordings_password_enc = match (&settings.recordings, recordings_password) {
        // No source: no password kept either.
        (None, _) => None,
        (Some(_), Some(password)) => Some(
            state.config.secrets_key().encrypt(&password, &crate::recordings::Recordings::password_context(tenant)),
        ),
        (Some(source), None) => {
            // The stored password only ever goes to the server it was given for.
            let before = store::admin::get_settings(&db, tenant).await?.and_then(|s| s.settings.recordings);
            let same_server =
                before.is_some_and(|b| (&b.host, b.port, &b.username) == (&source.host, source.port, &source.username));
            let stored = store::recordings::source_password(&**db, tenant).await?.filter(|_| same_server);
            Some(stored.ok_or_else(|| {
                ApiError::invalid_field(
                    "recordings.password",
                    "recordings.password is required the first time a recordings source is saved, and when its \
                     host, port or username change",
                )
            })?)
        }
    };
    let tx = db.transaction().await.map_err(store::StoreError::from)?;
    let updated_at = store::admin::put_settings(&tx, tenant, &settings, &secret_enc).await?;
    store::recordings::set_source_password(&*tx, tenant, recordings_password_enc.as_deref()).await?;
    tx.commit().await.map_err(store::StoreError::from)?;
    // The next call logs in with the new settings.
    state.callbacks.settings_cache.invalidate(tenant);
    state.callbacks.pool.invalidate(tenant);
    tracing::info!(tenant, host = %settings.host, port = settings.port, recordings = settings.recordings.is_some(),
        "PBX settings saved");
    Ok(HttpResponse::Ok().json(settings_view(&settings, updated_at, recordings_password_enc.is_some())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CourierBody {
    phone: String,
    #[serde(default)]
    name: String,
    #[serde(default = "yes")]
    active: bool,
}

fn yes() -> bool {
    true
}

pub async fn list_couriers(caller: Caller, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let db = store::client(&state.db).await?;
    let couriers = store::admin::list_couriers(&db, caller.tenant()).await?;
    Ok(HttpResponse::Ok().json(json!({ "items": couriers })))
}

pub async fn get_courier(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let id = valid_id("courier_id", &path)?;
    let db = store::client(&state.db).await?;
    let courier =
        store::admin::get_courier(&db, caller.tenant(), id).await?.ok_or_else(|| ApiError::not_found("courier"))?;
    Ok(HttpResponse::Ok().json(courier))
}

pub async fn put_courier(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let id = valid_id("courier_id", &path)?;
    let body: CourierBody = parse_body(body.into_inner())?;
    check_text("name", &body.name).map_err(|e| ApiError::invalid_field(e.field, e.message))?;
    if body.name.chars().count() > 200 {
        return Err(ApiError::invalid_field("name", "name must be at most 200 characters"));
    }
    let region = default_region(&state, caller.tenant()).await?;
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
        store::admin::put_courier(&db, caller.tenant(), id, &phone.e164, &body.name, body.active).await?;
    Ok(if created { HttpResponse::Created() } else { HttpResponse::Ok() }.json(courier))
}

pub async fn delete_courier(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let id = valid_id("courier_id", &path)?;
    let db = store::client(&state.db).await?;
    if !store::admin::delete_courier(&db, caller.tenant(), id).await? {
        return Err(ApiError::not_found("courier"));
    }
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderBody {
    #[serde(default)]
    courier_id: Option<String>,
    #[serde(default)]
    phones: Vec<String>,
    #[serde(default = "active")]
    state: String,
}

fn active() -> String {
    "active".into()
}

pub async fn get_order(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let id = valid_id("order_id", &path)?;
    let db = store::client(&state.db).await?;
    let order = store::admin::get_order(&db, caller.tenant(), id).await?.ok_or_else(|| ApiError::not_found("order"))?;
    Ok(HttpResponse::Ok().json(order))
}

pub async fn put_order(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let id = valid_id("order_id", &path)?;
    let body: OrderBody = parse_body(body.into_inner())?;
    if let Some(courier) = &body.courier_id {
        valid_id("courier_id", courier)?;
    }
    if body.state != "active" && body.state != "closed" {
        return Err(ApiError::invalid_field("state", "state must be active or closed"));
    }
    if body.phones.len() > 10 {
        return Err(ApiError::invalid_field("phones", "an order has at most 10 phone numbers"));
    }
    let region = default_region(&state, caller.tenant()).await?;
    let mut phones = Vec::with_capacity(body.phones.len());
    for p in &body.phones {
        let parsed = phone::parse(p, &region)
            .map_err(|e| ApiError::invalid_field("phones", format!("{p:?} is not a valid number: {e}")))?;
        phones.push(parsed.e164);
    }
    let db = store::client(&state.db).await?;
    let (order, created) =
        store::admin::put_order(&db, caller.tenant(), id, body.courier_id.as_deref(), &phones, &body.state).await?;
    Ok(if created { HttpResponse::Created() } else { HttpResponse::Ok() }.json(order))
}

pub async fn delete_order(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let id = valid_id("order_id", &path)?;
    let db = store::client(&state.db).await?;
    if !store::admin::delete_order(&db, caller.tenant(), id).await? {
        return Err(ApiError::not_found("order"));
    }
    Ok(HttpResponse::NoContent().finish())
}
