//! `POST /v1/admin/pbx/test`: the admin's Test button. Two numbers in, a real test callback out,
//! and a step-by-step diagnosis back (see `callbacks::diagnose`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::Role;
use crate::callbacks::check_number_allowed;
use crate::domain::phone;
use crate::error::ApiError;
use crate::http::admin::{parse_body, settings_from_body};
use crate::http::auth::Caller;
use crate::http::callbacks::place_problem;
use crate::startup::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    /// Rung first (stands in for the courier's phone).
    from: String,
    /// Dialled by the context once the first answers (stands in for the client).
    to: String,
    /// Unsaved settings to test before saving; the stored secret is used when this omits it.
    #[serde(default)]
    settings: Option<Value>,
}

/// Prefixes the `field` of a settings validation error with `settings.`.
fn in_settings(mut err: ApiError) -> ApiError {
    if let Some(Value::String(field)) = err.extra.get("field").cloned() {
        err.extra.insert("field".into(), Value::String(format!("settings.{field}")));
    }
    err
}

pub async fn test_pbx(
    caller: Caller,
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let tenant = caller.tenant();
    let request: TestRequest = parse_body(body.into_inner())?;
    let stored = state.callbacks.settings(tenant).await.map_err(place_problem)?;
    let (settings, secret) = match request.settings {
        Some(unsaved) => {
            let (settings, secret) = settings_from_body(unsaved).map_err(in_settings)?;
            let secret = match (secret, &stored) {
                (Some(secret), _) => SecretString::from(secret),
                // The saved secret only ever goes to the server it was saved for.
                (None, Some((saved, stored_secret))) if saved.same_ami_login(&settings) => stored_secret.clone(),
                (None, _) => {
                    return Err(ApiError::invalid_field(
                        "settings.secret",
                        "give the AMI secret: none is saved for this host, port and username",
                    ))
                }
            };
            (settings, secret)
        }
        None => stored.ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "pbx_not_configured",
                "PBX not configured",
                "save the PBX settings first, or send them with the test",
            )
        })?,
    };
    // Both numbers obey the same allow-list as any callback: the Test button is no way around it.
    for (field, number) in [("from", &request.from), ("to", &request.to)] {
        let parsed = phone::parse(number, &settings.default_region).map_err(|e| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_number", "Invalid number", format!("{field}: {e}"))
                .with("field", field)
        })?;
        check_number_allowed(&settings, &parsed).map_err(|why| {
            ApiError::new(StatusCode::FORBIDDEN, "destination_forbidden", "Destination forbidden", why)
                .with("field", field)
        })?;
    }
    state.limiters.callback(tenant, caller.sub())?;
    let diagnosis = state
        .callbacks
        .diagnose(tenant, caller.sub(), settings, secret, request.from, request.to)
        .await
        .map_err(place_problem)?;
    tracing::info!(tenant, ok = diagnosis.ok, callback_id = ?diagnosis.callback_id, "PBX test run");
    Ok(HttpResponse::Ok().json(diagnosis))
}
