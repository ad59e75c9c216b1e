//! Liveness, readiness and metrics.

use actix_web::{web, HttpResponse};

use super::problem::ApiError;
use super::state::AppState;

/// The process is alive and serving HTTP.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// Ready to serve: the database answers. 503 problem+json when it does not.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    crate::store::ping(&state.db).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "ready", "database": "ok" })))
}

/// Prometheus text exposition.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    crate::store::record_pool_status(&state.db);
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}
