//! PostgreSQL access: the connection pool, migrations, and SQL as free functions per table.
//!
//! Handlers never write SQL; they call the functions of these modules with a pooled client.

pub mod admin;
pub mod callbacks;
pub mod companies;
pub mod dashboard;
pub mod events;
pub mod idempotency;
pub mod migrations;
pub mod notify;
pub mod processes;
pub mod recordings;
pub mod return_calls;
pub mod webhooks;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use secrecy::ExposeSecret;

use crate::config::DbConfig;
use crate::domain::company::TenantId;

pub type Client = deadpool_postgres::Client;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not get a database connection")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database query failed")]
    Query(#[from] tokio_postgres::Error),
    /// A write handed to another task (`callbacks::writer`) ended without its answer (the process
    /// stopping, or a panic): it may or may not be committed. A retry of a request with an
    /// `Idempotency-Key` meets its key if it was.
    #[error("the database write was cut off before its answer")]
    Interrupted,
    /// One error answered to each of several callers whose writes went in one statement.
    #[error(transparent)]
    Shared(std::sync::Arc<StoreError>),
    /// A stored row this release cannot read (not a panic: the rest of the process goes on).
    #[error("{what} as stored cannot be read")]
    Unreadable {
        what: &'static str,
        #[source]
        cause: serde_json::Error,
    },
}

impl StoreError {
    /// True when the database is unreachable rather than the query being wrong: the caller answers
    /// 503 and the client may retry. A server that is shutting down (57P), a lost connection (08),
    /// and a server that turned read-only (25006: a primary demoted in a failover, reached before
    /// the pool found the new one) are all that.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Pool(_) | StoreError::Interrupted => true,
            StoreError::Shared(e) => e.is_unavailable(),
            StoreError::Unreadable { .. } => false,
            StoreError::Query(e) => {
                e.is_closed()
                    || e.as_db_error().is_none_or(|db| {
                        let code = db.code().code();
                        code.starts_with("57P") || code.starts_with("08") || code == "25006"
                    })
            }
        }
    }
}

/// Settings (for one transaction: `SET LOCAL`) under which a statement finds every row by an
/// index: sequential scans, hash and merge joins off. Statements that look up rows by key were
/// planned by the table's statistics, which lag behind a table that grows by thousands of rows a
/// second: a plan made while `callbacks` was nearly empty scanned it, 8 ms a batch once
/// the table had grown, and one made with 1,000 couriers looked them all up at once by scanning
/// them (BENCHMARKS.md, "The write path").
macro_rules! by_index {
    () => {
        "SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"
    };
}
use by_index;

/// Runs one of the hot statements (`callbacks::inserts`, `callbacks::transitions`,
/// `return_calls::caller_facts`), prepared on `db`, in a transaction of its own, sent with its
/// `BEGIN` and `COMMIT` in one round trip. Its plan is the one kept for the connection
/// (`plan_cache_mode`): planned for each execution, because a plan for the values at hand looked
/// cheaper than one for any, it cost more than it saved. And that plan finds every row by an
/// index (`by_index!`).
async fn in_keyed_transaction(
    db: &Client,
    statement: &tokio_postgres::Statement,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    let (begun, rows, committed) = futures_util::future::join3(
        db.batch_execute(concat!("BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; ", by_index!())),
        db.query(statement, params),
        db.batch_execute("COMMIT"),
    )
    .await;
    begun?;
    let rows = rows?;
    committed?;
    Ok(rows)
}

/// Builds the pool; no connection is made until first use, so the service starts while the
/// database is still coming up and `/readyz` tells the truth meanwhile.
pub fn pool(database_url: &secrecy::SecretString, cfg: &DbConfig) -> anyhow::Result<Pool> {
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let crate::pg_tls::Connect { config: mut pg, tls, .. } = connect_config(database_url, cfg)?;
    pg.connect_timeout(timeout);
    pg.application_name("dialback");
    let connect = OnPoolRuntime { tls, runtime: tokio::runtime::Handle::try_current().ok() };
    let manager = Manager::from_connect(pg, connect, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Ok(Pool::builder(manager)
        .max_size(cfg.pool_size)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(Runtime::Tokio1)
        .build()?)
}

/// Opens the pool's connections on the runtime the pool was made on. A connection is often
/// opened while an HTTP request is served, on a server worker's own runtime; its socket and the
/// task that drives it would belong to that worker, and a graceful stop ends idle workers first:
/// the connection closed under whichever request or tracker shard held it next ("database query
/// failed: connection closed", a 503 in scripts/rolling-upgrade). The same reason as the AMI
/// pool's (crates/ami/src/pool.rs).
struct OnPoolRuntime {
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    runtime: Option<tokio::runtime::Handle>,
}

impl deadpool_postgres::Connect for OnPoolRuntime {
    fn connect(
        &self,
        pg: &tokio_postgres::Config,
    ) -> futures_util::future::BoxFuture<
        '_,
        Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        let (tls, pg) = (self.tls.clone(), pg.clone());
        let runtime = self.runtime.clone().unwrap_or_else(tokio::runtime::Handle::current);
        Box::pin(async move {
            let opened = runtime.spawn(async move { pg.connect(tls).await });
            let (client, connection) = match opened.await {
                Ok(opened) => opened?,
                Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
                Err(_) => panic!("the runtime the database pool was made on has stopped"),
            };
            let driver = runtime.spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %crate::telemetry::Chain(&e), "database connection ended");
                }
            });
            Ok((client, driver))
        })
    }
}

/// How to reach the database: the URL's settings, with TLS as its `sslmode` asks (pg_tls.rs).
pub fn connect_config(database_url: &secrecy::SecretString, cfg: &DbConfig) -> anyhow::Result<crate::pg_tls::Connect> {
    crate::pg_tls::connect(database_url.expose_secret(), cfg.ssl_root_cert.as_deref()).map_err(anyhow::Error::msg)
}

/// A pooled client, or a `StoreError` that maps to 503. The wait (for a connection to be free, or
/// opened) is `dialback_db_pool_wait_seconds`.
pub async fn client(pool: &Pool) -> Result<Client, StoreError> {
    let asked = std::time::Instant::now();
    let client = pool.get().await;
    metrics::histogram!("dialback_db_pool_wait_seconds").record(asked.elapsed().as_secs_f64());
    Ok(client?)
}

/// Sets the pool's gauges to what it holds now (called as `/metrics` is scraped): connections
/// busy and idle, the most it may open, and callers waiting for one.
pub fn record_pool_status(pool: &Pool) {
    let status = pool.status();
    let busy = status.size.saturating_sub(status.available);
    metrics::gauge!("dialback_db_pool_connections", "state" => "busy").set(busy as f64);
    metrics::gauge!("dialback_db_pool_connections", "state" => "idle").set(status.available as f64);
    metrics::gauge!("dialback_db_pool_max_connections").set(status.max_size as f64);
    metrics::gauge!("dialback_db_pool_waiting").set(status.waiting as f64);
}

/// The company id in column `at` of a row (dialback wrote it, checked, when the row was made).
fn tenant_at(r: &tokio_postgres::Row, at: usize) -> TenantId {
    TenantId::stored(r.get::<_, &str>(at))
}

/// The time now, to the microsecond as PostgreSQL keeps it: a time shown (in an event, an answer)
/// before its row is read back reads the same as it will afterwards.
pub fn now() -> time::OffsetDateTime {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000).unwrap_or(now)
}

/// `SELECT 1`: the readiness probe.
pub async fn ping(pool: &Pool) -> Result<(), StoreError> {
    client(pool).await?.simple_query("SELECT 1").await?;
    Ok(())
}
