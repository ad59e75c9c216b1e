//! The `Caller` extractor: a verified JWT, or a 401 problem with `WWW-Authenticate: Bearer`.
//! Failed attempts count against the client IP's limit (then 429).

use std::future::{ready, Ready};

use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest};

use crate::auth::{Claims, Role};
use crate::error::ApiError;
use crate::startup::AppState;

/// The authenticated caller.
pub struct Caller(pub Claims);

impl Caller {
    pub fn tenant(&self) -> &str {
        &self.0.tenant
    }

    pub fn sub(&self) -> &str {
        &self.0.sub
    }

    pub fn require(&self, role: Role) -> Result<&Self, ApiError> {
        if self.0.role == role {
            Ok(self)
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                format!("this needs the {} role", if role == Role::Admin { "admin" } else { "courier" }),
            ))
        }
    }

    pub fn is_admin(&self) -> bool {
        self.0.role == Role::Admin
    }
}

fn unauthorized(description: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", description.to_owned()).with_header(
        header::WWW_AUTHENTICATE,
        format!("Bearer realm=\"dialback\", error=\"invalid_token\", error_description=\"{description}\""),
    )
}

/// Tenant ids as the `tenants` table accepts them.
fn valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty() && tenant.len() <= 64 && tenant.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Verifies the request's bearer token (the `Caller` extractor; also called directly where a
/// token is one of several ways in).
pub fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let state = req.app_data::<web::Data<AppState>>().expect("AppState is registered");
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let result = match token {
        None => Err("missing bearer token"),
        Some(token) => state.verifier.verify(token).map_err(|e| {
            tracing::info!(error = %e, "token refused");
            "the token is invalid, expired, or not for this service"
        }),
    };
    match result {
        Ok(claims) if !valid_tenant(&claims.tenant) || crate::http::admin::valid_id("sub", &claims.sub).is_err() => {
            Err(unauthorized(
                "the token's tenant or subject is empty or has characters outside A-Z, a-z, 0-9, '-', '_', '.'",
            ))
        }
        Ok(claims) => Ok(Caller(claims)),
        Err(description) => {
            let ip = req.peer_addr().map(|a| a.ip()).unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
            state.limiters.auth_failure(ip)?;
            metrics::counter!("dialback_auth_failures_total").increment(1);
            Err(unauthorized(description))
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(authenticate(req))
    }
}
