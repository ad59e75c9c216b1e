//! One error type for the HTTP API, rendered as RFC 7807 `application/problem+json`, and the one
//! place that says which problem each error of the services is.
//!
//! Every error a client can see has a stable machine-readable `code` (documented in openapi.yaml)
//! and a human `detail`. Internal causes are logged with their chain and never sent to the client.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::ami::AmiError;
use crate::callbacks::PlaceError;
use crate::domain::FieldError;
use crate::limits::Limited;
use crate::recordings::source::SourceFailure;
use crate::recordings::SyncError;
use crate::store::StoreError;
use crate::telemetry::Chain;
use crate::webhooks::WebhookError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// Extra members of the problem object (e.g. `field`, `fallback`).
    pub extra: Map<String, Value>,
    /// Extra response headers (e.g. `Retry-After`, `Allow`, `WWW-Authenticate`).
    pub headers: Vec<(header::HeaderName, String)>,
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    type_: String,
    title: &'a str,
    status: u16,
    code: &'a str,
    detail: &'a str,
    #[serde(flatten)]
    extra: &'a Map<String, Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self { status, code, title, detail: detail.into(), extra: Map::new(), headers: Vec::new() }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    pub fn with_header(mut self, name: header::HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, "Bad request", detail)
    }

    /// 422: the body is JSON but not shaped as the operation's schema says.
    pub fn invalid_body(detail: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "Invalid body",
            format!("the JSON body does not match the schema: {detail}"),
        )
    }

    /// 422 naming the offending field.
    pub fn invalid_field(field: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "Invalid field", detail).with("field", field)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Not found", format!("{what} not found"))
    }

    pub fn route_not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "route_not_found",
            "No such route",
            format!("no route for {path}; see /openapi.yaml or /docs"),
        )
    }

    pub fn method_not_allowed(method: &str, allow: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method not allowed",
            format!("{method} is not allowed here; allowed: {allow}"),
        )
        .with_header(header::ALLOW, allow)
    }

    /// The database could not be reached (pool timeout, connection refused, restart in progress).
    pub fn database_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "Database unavailable",
            "the database cannot be reached right now; retry shortly",
        )
        .with_header(header::RETRY_AFTER, "2")
    }

    /// Logs `cause` with its whole chain and answers an opaque 500.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        let cause = cause.into();
        tracing::error!(error = format!("{cause:#}"), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "an internal error occurred; it has been logged",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl std::error::Error for ApiError {}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header((header::CONTENT_TYPE, PROBLEM_JSON));
        for (name, value) in &self.headers {
            response.insert_header((name.clone(), value.as_str()));
        }
        response.body(serde_json::to_vec(&self.to_json()).unwrap_or_default())
    }
}

impl ApiError {
    /// The problem object (also stored to replay an idempotent request's answer).
    pub fn to_json(&self) -> Value {
        let body = ProblemBody {
            type_: format!("https://dialback.dev/problems/{}", self.code.replace('_', "-")),
            title: self.title,
            status: self.status.as_u16(),
            code: self.code,
            detail: &self.detail,
            extra: &self.extra,
        };
        serde_json::to_value(body).unwrap_or_default()
    }
}

/// Database errors: connection-level trouble is a 503 the client may retry, the rest is a 500.
impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        if err.is_unavailable() {
            tracing::warn!(error = %Chain(&err), "database unavailable");
            Self::database_unavailable()
        } else {
            Self::internal(err)
        }
    }
}

/// A field that failed validation: 422 naming it.
impl From<FieldError> for ApiError {
    fn from(err: FieldError) -> Self {
        Self::invalid_field(err.field, err.message)
    }
}

/// A settings body that is not acceptable: 422, naming the field when one is at fault.
/// A webhook endpoint's URL it may not call is a 422 on `url`; a missing endpoint a 404.
impl From<WebhookError> for ApiError {
    fn from(err: WebhookError) -> Self {
        match err {
            WebhookError::Target(why) => Self::invalid_field("url", why),
            WebhookError::NotFound => Self::not_found("webhook endpoint"),
            WebhookError::Store(e) => e.into(),
        }
    }
}

/// A rate limit: 429 with `Retry-After`.
impl From<Limited> for ApiError {
    fn from(limited: Limited) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "Too many requests", limited.to_string())
            .with_header(header::RETRY_AFTER, limited.retry_after_s().to_string())
    }
}

/// Who reads a problem about the PBX: an admin gets the PBX's own words (its address, what to
/// change in manager.conf); a courier gets what they can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Courier,
    Admin,
}

/// The problem for a PBX that could not be used.
pub fn pbx_problem(error: &AmiError, audience: Audience) -> ApiError {
    let (status, code, title, for_courier) = match error {
        AmiError::Timeout(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            "pbx_timeout",
            "The PBX did not answer in time",
            "the company's phone system did not answer in time",
        ),
        AmiError::AuthFailed => (
            StatusCode::BAD_GATEWAY,
            "pbx_login_failed",
            "The PBX refused dialback's login",
            "the company's phone system refused dialback; the office has to fix its settings",
        ),
        AmiError::PermissionDenied | AmiError::Rejected(_) | AmiError::Encode(_) => (
            StatusCode::BAD_GATEWAY,
            "pbx_refused",
            "The PBX refused the call",
            "the company's phone system refused the call; the office has to fix its settings",
        ),
        AmiError::Saturated(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "pbx_busy",
            "Too many calls in progress on the PBX",
            "the company's phone system has too many calls in progress right now",
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "pbx_unreachable",
            "The PBX cannot be reached",
            "the company's phone system cannot be reached right now",
        ),
    };
    let detail = match audience {
        Audience::Admin => error.to_string(),
        Audience::Courier => for_courier.to_owned(),
    };
    let mut problem = ApiError::new(status, code, title, detail);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        problem = problem.with_header(header::RETRY_AFTER, "5");
    }
    problem
}

/// The problem for a request with an Idempotency-Key whose first request has not answered yet.
pub fn idempotency_in_progress() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_in_progress",
        "Request in progress",
        "a request with this Idempotency-Key is still in progress; retry later",
    )
    .with_header(header::RETRY_AFTER, "2")
}

/// The problem for a callback that could not be placed (refused, or the PBX could not take it).
pub fn place_problem(err: &PlaceError, audience: Audience) -> ApiError {
    let with_callback = |problem: ApiError| match err.callback() {
        Some(callback) => problem.with("callback_id", callback.id.to_string()),
        None => problem,
    };
    match err {
        PlaceError::NotConfigured => {
            ApiError::new(StatusCode::CONFLICT, "pbx_not_configured", "PBX not configured", err.to_string())
        }
        PlaceError::OfficeNotConfigured => {
            ApiError::new(StatusCode::CONFLICT, "office_not_configured", "Office not configured", err.to_string())
        }
        // The same code as for a client without a PBX (and getMe's `why_not`), with the fallback a
        // PBX that is down gives: one rule in the app, "a problem with a fallback: offer to dial it".
        PlaceError::NoPbx { fallback } => {
            ApiError::new(StatusCode::CONFLICT, "pbx_not_configured", "PBX not configured", err.to_string())
                .with("fallback", serde_json::to_value(fallback).unwrap_or(Value::Null))
        }
        PlaceError::CourierNotRegistered(_) => {
            ApiError::new(StatusCode::FORBIDDEN, "courier_not_registered", "Courier not registered", err.to_string())
        }
        PlaceError::InvalidNumber { detail, .. } => with_callback(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_number",
            "Invalid number",
            detail.clone(),
        )),
        PlaceError::Forbidden { detail, .. } => with_callback(ApiError::new(
            StatusCode::FORBIDDEN,
            "destination_forbidden",
            "Destination forbidden",
            detail.clone(),
        )),
        PlaceError::Pbx { error, fallback, .. } => with_callback(
            pbx_problem(error, audience).with("fallback", serde_json::to_value(fallback).unwrap_or(Value::Null)),
        ),
        PlaceError::RateLimited { limited, .. } => with_callback(ApiError::from(limited.clone())),
        PlaceError::KeyTaken => idempotency_in_progress(),
        PlaceError::RegistryChanging => {
            ApiError::new(StatusCode::CONFLICT, "registry_changing", "Courier or order changing", err.to_string())
                .with_header(header::RETRY_AFTER, "1")
        }
        PlaceError::SecretUndecryptable => ApiError::internal(anyhow::anyhow!(err.to_string())),
        PlaceError::Store(e) => match e {
            e if e.is_unavailable() => {
                tracing::warn!(error = %Chain(e), "database unavailable");
                ApiError::database_unavailable()
            }
            e => ApiError::internal(anyhow::anyhow!("{}", Chain(e))),
        },
    }
}

/// The problem for a recordings sync that failed.
pub fn sync_problem(error: SyncError) -> ApiError {
    let detail = error.to_string();
    match error {
        SyncError::NotConfigured => {
            ApiError::new(StatusCode::CONFLICT, "recordings_not_configured", "Recordings not configured", detail)
        }
        SyncError::PasswordUndecryptable => ApiError::internal(anyhow::anyhow!(detail)),
        SyncError::Store(e) => e.into(),
        SyncError::Ftp(failure) => match failure {
            SourceFailure::Unreachable { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ftp_unreachable",
                "Recordings server unreachable",
                detail,
            )
            .with_header(header::RETRY_AFTER, "30"),
            SourceFailure::Timeout { .. } => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "ftp_timeout", "Recordings server too slow", detail)
            }
            SourceFailure::LoginFailed { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "ftp_login_failed", "Recordings server login refused", detail)
            }
            SourceFailure::Tls { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "ftp_tls_failed", "FTPS failed", detail)
            }
            SourceFailure::HostKey { .. } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "sftp_host_key_mismatch",
                "SFTP server's host key is not the pinned one",
                detail,
            ),
            SourceFailure::Refused { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "ftp_error", "Recordings server refused", detail)
            }
        },
    }
}
