//! `POST /v1/admin/pbx/test`: the admin's Test button. Two numbers in, a real test callback out,
//! and a step-by-step diagnosis back (see `callbacks::diagnose`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;

use super::body::JsonObject;
use super::extract::{Admin, Language};
use super::problem::{place_problem, ApiError, Audience};
use super::settings_input::SettingsInput;
use super::state::AppState;
use crate::callbacks::diagnose::Diagnosis;
use crate::domain::destination::check_number_allowed;
use crate::domain::phone;
use crate::i18n::Lang;
use crate::store;
use crate::telemetry::Chain;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
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

/// The diagnosis as the API shows it: each hint in the admin's language.
fn diagnosis_view(diagnosis: &Diagnosis, lang: Lang) -> Value {
    let mut view = serde_json::to_value(diagnosis).expect("a diagnosis serialises");
    for (step, shown) in diagnosis.steps.iter().zip(view["steps"].as_array_mut().into_iter().flatten()) {
        shown["hint"] = step.hint.as_ref().map_or(Value::Null, |hint| Value::String(hint.render(lang)));
    }
    view
}

pub async fn test_pbx(
    admin: Admin,
    Language(lang): Language,
    state: web::Data<AppState>,
    body: JsonObject<TestRequest>,
) -> Result<HttpResponse, ApiError> {
    let tenant = admin.tenant();
    let request = body.into_inner();
    let stored = state.callbacks.settings(tenant).await.map_err(|e| place_problem(&e, Audience::Admin))?;
    let (settings, secret) = match request.settings {
        Some(unsaved) => {
            let input = SettingsInput::parse(unsaved).map_err(in_settings)?;
            if !input.settings.has_pbx() {
                return Err(ApiError::invalid_field(
                    "settings.host",
                    "the Test calls through the PBX: give host, username and channel_template",
                ));
            }
            let given = input.secret.map(SecretString::from);
            let stored = stored.as_ref().map(|(saved, secret)| (saved, secret.clone()));
            let secret = input.settings.ami_secret(given, stored).ok_or_else(|| {
                ApiError::invalid_field(
                    "settings.secret",
                    "give the AMI secret: none is saved for this host, port and username",
                )
            })?;
            (input.settings, secret)
        }
        None => stored.filter(|(saved, _)| saved.has_pbx()).ok_or_else(|| {
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
    state.cluster.limiters.callback(tenant, admin.sub())?;
    let expected = super::pbx::generated_dialplan(&state, tenant, &settings).await?;
    let diagnosis = state
        .callbacks
        .diagnose(tenant, admin.sub(), settings, secret, expected.as_ref(), request.from, request.to)
        .await
        .map_err(|e| place_problem(&e, Audience::Admin))?;
    tracing::info!(%tenant, ok = diagnosis.ok, callback_id = ?diagnosis.callback_id, "PBX test run");
    // Kept for the dashboard and the guided set-up; the admin still gets the diagnosis without it.
    let steps: Vec<(&str, bool)> = diagnosis.steps.iter().map(|s| (s.step, s.ok)).collect();
    let kept = match store::client(&state.db).await {
        Ok(db) => store::dashboard::record_test(&db, tenant, &steps, diagnosis.ok, diagnosis.callback_id).await,
        Err(e) => Err(e),
    };
    if let Err(e) = kept {
        tracing::error!(%tenant, callback_id = ?diagnosis.callback_id, error = %Chain(&e), "the Test's outcome could not be kept");
    }
    Ok(HttpResponse::Ok().insert_header(("Content-Language", lang.tag())).json(diagnosis_view(&diagnosis, lang)))
}
