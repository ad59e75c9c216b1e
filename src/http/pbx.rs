//! `/v1/admin/pbx`: the company's PBX settings (with its recordings source). The AMI secret and the
//! FTP password are write-only: stored encrypted, never returned, and reused on a later save only
//! for the server they were given for.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::body::JsonObject;
use super::extract::{Admin, Language};
use super::problem::ApiError;
use super::settings_input::SettingsInput;
use super::state::AppState;
use crate::domain::company::TenantId;
use crate::domain::dialplan;
use crate::domain::settings::PbxSettings;
use crate::i18n::{Lang, Text};
use crate::recordings::Recordings;
use crate::store;
use crate::view::rfc3339;

fn settings_view(settings: &PbxSettings, updated_at: time::OffsetDateTime, recordings_password_set: bool) -> Value {
    let mut v = serde_json::to_value(settings).expect("settings serialise");
    v["secret_set"] = json!(settings.has_pbx());
    if let Some(recordings) = v.get_mut("recordings").filter(|r| r.is_object()) {
        recordings["password_set"] = json!(recordings_password_set);
    }
    v["updated_at"] = rfc3339(Some(updated_at));
    v
}

/// The stored dialplan check as the API shows it: its hint in the reader's language (checks stored
/// before hints were kept as messages show their English hint).
pub fn dialplan_check_view(stored: Option<Value>, lang: Lang) -> Value {
    let Some(mut check) = stored.filter(Value::is_object) else { return Value::Null };
    if let Some(text) = check.as_object_mut().and_then(|c| c.remove("hint_text")) {
        if let Ok(text) = serde_json::from_value::<Text>(text) {
            check["hint"] = Value::String(text.render(lang));
        }
    }
    check
}

pub async fn get_pbx(
    admin: Admin,
    Language(lang): Language,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let db = store::client(&state.db).await?;
    let stored =
        store::admin::get_settings(&db, admin.tenant()).await?.ok_or_else(|| ApiError::not_found("PBX settings"))?;
    let password_set = store::admin::recordings_password(&db, admin.tenant()).await?.is_some();
    let mut view = settings_view(&stored.settings, stored.updated_at, password_set);
    view["dialplan_check"] = dialplan_check_view(stored.dialplan_check, lang);
    Ok(HttpResponse::Ok().json(view))
}

pub async fn put_pbx(
    admin: Admin,
    state: web::Data<AppState>,
    body: JsonObject<Value>,
) -> Result<HttpResponse, ApiError> {
    let tenant = admin.tenant();
    let SettingsInput { settings, secret, recordings_password } = SettingsInput::parse(body.into_inner())?;
    let key = state.config.secrets_key();
    let mut db = store::client(&state.db).await?;
    let before = store::admin::get_settings(&db, tenant).await?;
    let before_password = store::admin::recordings_password(&db, tenant).await?;
    let given_secret = secret.map(|s| key.encrypt(&s, tenant));
    // Without a PBX there is no AMI secret to keep.
    let secret_enc = match settings.has_pbx() {
        false => String::new(),
        true => settings
            .ami_secret(
                given_secret,
                before.as_ref().filter(|b| b.settings.has_pbx()).map(|b| (&b.settings, b.secret_enc.clone())),
            )
            .ok_or_else(|| {
                ApiError::invalid_field(
                    "secret",
                    "secret is required the first time the PBX is saved, and when host, port or username change",
                )
            })?,
    };
    let recordings_password_enc = match &settings.recordings {
        // No source: no password kept either.
        None => None,
        Some(_) => {
            let given = recordings_password.map(|p| key.encrypt(&p, &Recordings::password_context(tenant)));
            let stored = before.as_ref().zip(before_password).map(|(b, password)| (&b.settings, password));
            Some(settings.recordings_password(given, stored).ok_or_else(|| {
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
    store::admin::set_recordings_password(&tx, tenant, recordings_password_enc.as_deref()).await?;
    // Sent with the commit: every process drops its copy of the settings.
    store::notify::announce(&tx, &store::notify::Change::PbxSettings { tenant: tenant.clone() }).await?;
    tx.commit().await.map_err(store::StoreError::from)?;
    // The next call logs in with the new settings.
    state.callbacks.forget_settings(tenant);
    state.cluster.ami.invalidate(tenant);
    tracing::info!(%tenant, host = %settings.host, port = settings.port, recordings = settings.recordings.is_some(),
        "PBX settings saved");
    if settings.has_pbx() {
        // Does the PBX run the dialplan these settings generate? The admin page shows the answer.
        let (watch, tenant) = (state.dialplan_watch.clone(), tenant.to_owned());
        tokio::spawn(async move { watch.check(&tenant).await });
    }
    Ok(HttpResponse::Ok().json(settings_view(&settings, updated_at, recordings_password_enc.is_some())))
}

/// `GET /v1/admin/pbx/dialplan`: the company's `extensions_custom.conf`, from its saved settings.
pub async fn get_dialplan(admin: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let db = store::client(&state.db).await?;
    let stored =
        store::admin::get_settings(&db, admin.tenant()).await?.ok_or_else(|| ApiError::not_found("PBX settings"))?;
    drop(db);
    let generated = generated_dialplan(&state, admin.tenant(), &stored.settings).await?.ok_or_else(|| {
        ApiError::new(
            actix_web::http::StatusCode::CONFLICT,
            "pbx_not_configured",
            "PBX not configured",
            "the settings hold no PBX (host, username, channel_template): there is no dialplan to write",
        )
    })?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header(("Content-Disposition", "attachment; filename=\"extensions_custom.conf\""))
        .body(dialplan::render(&generated, time::OffsetDateTime::now_utc())))
}

/// The dialplan dialback generates for `tenant` with `settings` (`DialplanWatch::expected`).
pub(super) async fn generated_dialplan(
    state: &AppState,
    tenant: &TenantId,
    settings: &PbxSettings,
) -> Result<Option<dialplan::Generated>, ApiError> {
    state.dialplan_watch.expected(tenant, settings).await.map_err(super::return_calls::problem)
}
