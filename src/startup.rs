//! Builds the application from a config: pool, migrations, HTTP server bound to its port.
//! Tests bind port 0 and read the real port back.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;

/// Shared by every handler.
pub struct AppState {
    pub config: Arc<Config>,
    pub db: deadpool_postgres::Pool,
    pub metrics: PrometheusHandle,
}

pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Migrates the database (under the advisory lock), builds the pool and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let applied = crate::store::migrations::run_url(&config.database_url)
            .await
            .map_err(|e| anyhow::anyhow!("migrating {}: {e:#}", crate::config::redact_url(&config.database_url)))?;
        if !applied.is_empty() {
            tracing::info!(?applied, "database migrated");
        }
        let db = crate::store::pool(&config.database_url, &config.db)?;
        let listener = TcpListener::bind(config.listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {} (DIALBACK_LISTEN): {e}", config.listen))?;
        let port = listener.local_addr()?.port();
        let config = Arc::new(config);
        let state = web::Data::new(AppState { config: config.clone(), db, metrics: crate::telemetry::metrics() });
        let body_limit = config.http.body_limit_bytes;
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(crate::http::request_context))
                .configure(|cfg| crate::http::configure(cfg, body_limit))
        })
        .shutdown_timeout(config.http.shutdown_timeout_s)
        .client_request_timeout(Duration::from_secs(10));
        if config.http.workers > 0 {
            server = server.workers(config.http.workers);
        }
        let server = server.listen(listener)?.run();
        tracing::info!(listen = %config.listen, port, "dialback listening");
        Ok(Self { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT/SIGTERM, then finishes in-flight requests (up to the shutdown timeout).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
