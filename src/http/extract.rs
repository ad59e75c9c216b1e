//! What handlers take from a request besides their body: who is calling (a verified JWT, or a 401
//! problem with `WWW-Authenticate: Bearer`; failed attempts count against the client IP's limit,
//! then 429), in which role ([`Admin`], [`Courier`], [`Operator`]: a 403 otherwise), and a page of
//! a list.

use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use uuid::Uuid;

use super::problem::ApiError;
use super::state::AppState;
use crate::auth::{AuthError, Claims, Role};
use crate::domain::check_id;
use crate::domain::company::{check_company_id, TenantId};
use crate::i18n::Lang;

/// Who calls the API for a company (a courier or one of its admins), as their token says; not the
/// phone caller of a return call (`domain::return_call::Caller`).
pub struct Principal {
    pub claims: Claims,
    tenant: TenantId,
}

impl Principal {
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    pub fn sub(&self) -> &str {
        &self.claims.sub
    }

    pub fn is_admin(&self) -> bool {
        self.claims.role == Role::Admin
    }

    fn require(self, role: Role) -> Result<Self, ApiError> {
        if self.claims.role == role {
            Ok(self)
        } else {
            Err(forbidden(role))
        }
    }
}

fn forbidden(role: Role) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", format!("this needs the {} role", role.as_str()))
}

/// A caller with the admin role (a company's administrator or its main system).
pub struct Admin(pub Principal);

/// A caller with the courier role.
pub struct Courier(pub Principal);

/// The deployment's operator: manages companies, acts for none.
pub struct Operator(pub Claims);

impl std::ops::Deref for Admin {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.0
    }
}

impl std::ops::Deref for Courier {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.0
    }
}

fn unauthorized(description: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", description.to_owned()).with_header(
        header::WWW_AUTHENTICATE,
        format!("Bearer realm=\"dialback\", error=\"invalid_token\", error_description=\"{description}\""),
    )
}

/// The request's bearer token, verified with the keys of whoever it says issued it (auth/issuers.rs).
/// A refused token is a 401 that counts against the client IP's limit; a suspended company is a
/// 403; keys that cannot be had right now (the company's identity provider, the database) a 503.
async fn verified(req: &HttpRequest) -> Result<Claims, ApiError> {
    let state = req.app_data::<web::Data<AppState>>().expect("AppState is registered");
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let result = match token {
        None => Err("missing bearer token"),
        Some(token) => match state.verifier.verify(token).await {
            Ok(claims) => Ok(claims),
            Err(AuthError::Suspended(tenant)) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "company_suspended",
                    "Company suspended",
                    format!(
                    "company {tenant} is suspended: its admins and couriers cannot act until the operator restores it"
                ),
                ))
            }
            Err(e @ AuthError::IssuerUnavailable { .. }) => {
                tracing::warn!(error = %crate::telemetry::Chain(&e), "token not verifiable now");
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "issuer_unavailable",
                    "Token issuer unavailable",
                    "the keys of the company's identity provider cannot be fetched right now; retry shortly",
                )
                .with_header(header::RETRY_AFTER, "5"));
            }
            Err(AuthError::Store(e)) => return Err(e.into()),
            Err(e) => {
                tracing::info!(error = %crate::telemetry::Chain(&e), "token refused");
                Err("the token is invalid, expired, or not for this service")
            }
        },
    };
    match result {
        Ok(claims) if check_id("sub", &claims.sub).is_err() => {
            Err(unauthorized("the token's subject is empty or has characters outside A-Z, a-z, 0-9, '-', '_', '.'"))
        }
        Ok(claims) if claims.role != Role::Operator && check_company_id("tenant", &claims.tenant).is_err() => {
            Err(unauthorized("the token's tenant is empty or has characters outside A-Z, a-z, 0-9, '-', '_', '.'"))
        }
        Ok(claims) => Ok(claims),
        Err(description) => {
            let ip = req.peer_addr().map(|a| a.ip()).unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
            state.cluster.limiters.auth_failure(ip)?;
            metrics::counter!("dialback_auth_failures_total").increment(1);
            Err(unauthorized(description))
        }
    }
}

/// The caller acting for a company (the `Principal` extractor; also called directly where a token is
/// one of several ways in). An operator's token acts for no company: 403.
pub async fn authenticate(req: &HttpRequest) -> Result<Principal, ApiError> {
    let claims = verified(req).await?;
    if claims.role == Role::Operator {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            "an operator's token acts for no company: use a company admin's token",
        ));
    }
    // `verified` checked it (and counted a bad one as a failed authentication).
    let tenant = TenantId::stored(claims.tenant.as_str());
    Ok(Principal { claims, tenant })
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticate(&req).await })
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticate(&req).await.and_then(|caller| caller.require(Role::Admin)).map(Admin) })
    }
}

impl FromRequest for Courier {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticate(&req).await.and_then(|caller| caller.require(Role::Courier)).map(Courier) })
    }
}

impl FromRequest for Operator {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let claims = verified(&req).await?;
            if claims.role != Role::Operator {
                return Err(forbidden(Role::Operator));
            }
            Ok(Operator(claims))
        })
    }
}

/// The language a person reads the answer in, from `Accept-Language` (the admin page sends its
/// own): hints and other texts for people come in it; problem titles and details stay English.
pub struct Language(pub Lang);

impl FromRequest for Language {
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let header = req.headers().get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok());
        std::future::ready(Ok(Language(Lang::from_accept_language(header))))
    }
}

/// A path id (courier, order): checked like every id, a 422 naming `field` otherwise.
pub fn path_id<'a>(field: &'static str, id: &'a str) -> Result<&'a str, ApiError> {
    Ok(check_id(field, id)?)
}

/// A page of a list, newest first: the `cursor` and `limit` query parameters checked.
pub struct Page {
    /// Only items older than this (the `next_cursor` of the page before; ids are uuid v7, so
    /// time-ordered).
    pub before: Option<Uuid>,
    /// 1-200, 50 when not given.
    pub limit: i64,
}

impl Page {
    pub fn parse(cursor: Option<&str>, limit: Option<i64>) -> Result<Page, ApiError> {
        let before = match cursor {
            None => None,
            Some(c) => Some(
                Uuid::parse_str(c)
                    .map_err(|_| ApiError::invalid_field("cursor", "cursor is the next_cursor of a previous page"))?,
            ),
        };
        Ok(Page { before, limit: page_limit(limit)? })
    }
}

/// A list's `limit` query parameter: 1-200, 50 when not given.
/// A time in a query (`since`, `until`): RFC 3339, or a 422 naming the field.
pub fn query_time(field: &'static str, value: Option<&str>) -> Result<Option<time::OffsetDateTime>, ApiError> {
    value
        .map(|v| {
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                .map_err(|_| ApiError::invalid_field(field, format!("{field} must be an RFC 3339 time")))
        })
        .transpose()
}

pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid_field("limit", "limit must be 1-200"));
    }
    Ok(limit)
}

impl Page {
    /// The cursor of the next page: the last item's id when this page is full.
    pub fn next_cursor(&self, ids: &[Uuid]) -> Option<String> {
        (ids.len() as i64 == self.limit).then(|| ids.last().map(Uuid::to_string)).flatten()
    }
}
