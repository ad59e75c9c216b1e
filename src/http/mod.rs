//! The HTTP API: the route table, request ids and access logs, and the extractor error handlers
//! that make every failure a problem+json body.
//!
//! Handlers translate HTTP to service calls and back, nothing more: one file per resource; what
//! they share is in [`extract`] (who calls, pages), [`body`] (a body that must be a JSON object),
//! [`problem`] (every error as problem+json) and [`state`].

pub mod admin_page;
pub mod body;
pub mod callback_events;
pub mod callbacks;
pub mod dashboard;
pub mod docs;
pub mod extract;
pub mod health;
pub mod journal_csv;
pub mod me;
pub mod operator;
pub mod pbx;
pub mod pbx_test;
pub mod problem;
pub mod recordings;
pub mod registry;
pub mod return_calls;
pub mod settings_input;
pub mod state;
pub mod webhooks;

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, Handler, HttpRequest, Resource, Responder};
use tracing::Instrument;

use problem::ApiError;

/// One path and the handlers for its methods. Building the app and listing the served routes
/// (for the spec-coverage test) both come from [`endpoints`], so they cannot disagree.
pub struct Endpoint {
    pub path: &'static str,
    pub methods: Vec<Method>,
    resource: Resource,
}

impl Endpoint {
    fn new(path: &'static str) -> Self {
        Self { path, methods: Vec::new(), resource: web::resource(path) }
    }

    fn on<F, Args>(mut self, method: Method, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.resource = self.resource.route(web::method(method.clone()).to(handler));
        self.methods.push(method);
        self
    }

    pub fn get<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.on(Method::GET, handler)
    }

    pub fn post<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.on(Method::POST, handler)
    }

    pub fn put<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.on(Method::PUT, handler)
    }

    pub fn delete<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.on(Method::DELETE, handler)
    }

    /// The resource, answering 405 problem+json with `Allow` for methods it does not serve.
    fn into_resource(self) -> Resource {
        let allow = self.methods.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
        self.resource.default_service(web::to(move |req: HttpRequest| {
            let allow = allow.clone();
            async move { Err::<actix_web::HttpResponse, _>(ApiError::method_not_allowed(req.method().as_str(), &allow)) }
        }))
    }
}

/// Every route the server serves.
pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new("/healthz").get(health::healthz),
        Endpoint::new("/readyz").get(health::readyz),
        Endpoint::new("/metrics").get(health::metrics),
        Endpoint::new("/openapi.yaml").get(docs::openapi_yaml),
        Endpoint::new("/docs").get(docs::docs_page),
        Endpoint::new("/admin").get(admin_page::admin_page),
        Endpoint::new("/v1/admin/company").get(operator::own_company),
        Endpoint::new("/v1/admin/dashboard").get(dashboard::dashboard),
        Endpoint::new("/v1/admin/pbx").get(pbx::get_pbx).put(pbx::put_pbx),
        Endpoint::new("/v1/admin/pbx/test").post(pbx_test::test_pbx),
        Endpoint::new("/v1/admin/pbx/dialplan").get(pbx::get_dialplan),
        Endpoint::new("/v1/admin/couriers").get(registry::list_couriers),
        Endpoint::new("/v1/admin/couriers/{courier_id}")
            .get(registry::get_courier)
            .put(registry::put_courier)
            .delete(registry::delete_courier),
        Endpoint::new("/v1/admin/orders/{order_id}")
            .get(registry::get_order)
            .put(registry::put_order)
            .delete(registry::delete_order),
        Endpoint::new("/v1/me").get(me::me),
        Endpoint::new("/v1/callbacks").post(callbacks::create).get(callbacks::list),
        Endpoint::new("/v1/callbacks.csv").get(callbacks::export),
        Endpoint::new("/v1/callbacks/{callback_id}").get(callbacks::get).delete(callbacks::cancel),
        Endpoint::new("/v1/callbacks/{callback_id}/events").get(callback_events::stream),
        Endpoint::new("/v1/recordings").get(recordings::list),
        Endpoint::new("/v1/recordings/{recording_id}").delete(recordings::delete),
        Endpoint::new("/v1/recordings/{recording_id}/audio").get(recordings::audio),
        Endpoint::new("/v1/admin/recordings/sync").post(recordings::sync),
        Endpoint::new("/v1/admin/return-calls").get(return_calls::get_rules).put(return_calls::put_rules),
        Endpoint::new("/v1/admin/return-calls/rotate-key").post(return_calls::rotate_key),
        Endpoint::new("/v1/return-calls").get(return_calls::list),
        Endpoint::new("/v1/return-calls/{return_call_id}").get(return_calls::get),
        Endpoint::new("/v1/pbx/route").get(return_calls::route),
        Endpoint::new("/v1/admin/webhooks").get(webhooks::list),
        Endpoint::new("/v1/admin/webhooks/{endpoint_id}")
            .get(webhooks::get)
            .put(webhooks::put)
            .delete(webhooks::delete),
        Endpoint::new("/v1/admin/webhooks/{endpoint_id}/rotate-secret").post(webhooks::rotate_secret),
        Endpoint::new("/v1/admin/webhooks/{endpoint_id}/deliveries").get(webhooks::deliveries),
        Endpoint::new("/v1/admin/webhooks/{endpoint_id}/deliveries/{message_id}/retry").post(webhooks::retry),
        Endpoint::new("/v1/operator/companies").get(operator::list),
        Endpoint::new("/v1/operator/companies/{company_id}")
            .get(operator::get)
            .put(operator::put)
            .delete(operator::delete),
    ]
}

/// Registers every endpoint and the problem+json error handlers for extractors.
pub fn configure(cfg: &mut web::ServiceConfig, body_limit: usize) {
    cfg.app_data(web::JsonConfig::default().limit(body_limit).error_handler(|err, _req| json_error(err).into()))
        .app_data(
            web::PathConfig::default()
                .error_handler(|err, _req| ApiError::bad_request("invalid_path", err.to_string()).into()),
        )
        .app_data(
            web::QueryConfig::default()
                .error_handler(|err, _req| ApiError::bad_request("invalid_query", err.to_string()).into()),
        )
        .app_data(web::PayloadConfig::default().limit(body_limit));
    for endpoint in endpoints() {
        cfg.service(endpoint.into_resource());
    }
    cfg.default_service(web::to(|req: HttpRequest| async move {
        Err::<actix_web::HttpResponse, _>(ApiError::route_not_found(req.path()))
    }));
}

fn json_error(err: actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError as E;
    use actix_web::http::StatusCode;
    match &err {
        E::OverflowKnownLength { .. } | E::Overflow { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "Payload too large", err.to_string())
        }
        E::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
            "send the body as Content-Type: application/json",
        ),
        E::Deserialize(e) if e.is_data() => ApiError::invalid_body(e),
        _ => ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {err}")),
    }
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Gives every request an id (the client's `X-Request-Id` when it is sane, else a new UUID), runs
/// the request inside a span carrying it so every log line has it, echoes it back, logs one
/// access line and records metrics.
///
/// Written here rather than taken from tracing-actix-web: that crate always makes its own id
/// (a caller's `X-Request-Id` would need a custom span builder), does not echo it, and logs the
/// access line only through span-close events; these few lines do all three, and the metrics,
/// in one place.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let span = tracing::info_span!("http", request_id = %request_id, method = %req.method(), path = %req.path());
    let started = Instant::now();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let mut res = next.call(req).instrument(span.clone()).await?;
    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    let ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3;
    span.in_scope(|| tracing::info!(status, ms, "request"));
    metrics::counter!("dialback_http_requests_total", "route" => route.clone(), "method" => method, "status" => status.to_string()).increment(1);
    metrics::histogram!("dialback_http_request_duration_seconds", "route" => route).record(elapsed.as_secs_f64());
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    Ok(res)
}
