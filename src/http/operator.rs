//! `/v1/operator/companies`: the deployment's operator creates, lists, suspends and removes
//! companies, and says how each company's tokens are verified (its issuer); and a company admin
//! reads its own (`/v1/admin/company`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::json;

use super::body::JsonObject;
use super::extract::{Admin, Operator};
use super::problem::ApiError;
use super::state::AppState;
use crate::companies::CompanyError;
use crate::domain::company::{CompanyInput, TenantId};

impl From<CompanyError> for ApiError {
    fn from(err: CompanyError) -> Self {
        match err {
            CompanyError::Invalid(e) => e.into(),
            CompanyError::NotFound(_) => ApiError::not_found("company"),
            CompanyError::Conflict(detail) => {
                ApiError::new(StatusCode::CONFLICT, "company_in_use", "The company cannot be removed yet", detail)
            }
            CompanyError::Store(e) => e.into(),
        }
    }
}

fn company_id(id: &str) -> Result<TenantId, ApiError> {
    Ok(TenantId::parse("company_id", id)?)
}

pub async fn list(_: Operator, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({ "items": state.companies.list().await? })))
}

pub async fn get(_: Operator, state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.companies.get(&company_id(&path)?).await?))
}

/// Creates (201) or replaces (200) a company. With `issuer.hs256` newly on, the answer carries the
/// company's HS256 secret, this once.
pub async fn put(
    operator: Operator,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: JsonObject<CompanyInput>,
) -> Result<HttpResponse, ApiError> {
    let id = company_id(&path)?;
    let (company, created) = state.companies.put(&id, &body).await?;
    tracing::info!(operator = operator.0.sub, tenant = %id, "company saved");
    let status = if created { HttpResponse::Created() } else { HttpResponse::Ok() };
    Ok({ status }.json(company))
}

/// Removes a suspended company with no call in progress, and everything of it.
pub async fn delete(
    operator: Operator,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = company_id(&path)?;
    state.companies.remove(&id).await?;
    tracing::info!(operator = operator.0.sub, tenant = %id, "company removed");
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /v1/admin/company`: the caller's own company as the operator set it up (how its tokens
/// are verified), for its admin page.
pub async fn own_company(admin: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.companies.get(admin.tenant()).await?))
}
