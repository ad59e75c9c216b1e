//! Companies (the `tenants` table) as the operator manages them: name, state, token issuer, and
//! the company's own HS256 secret (encrypted). Removing a company removes everything of it.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;

use super::StoreError;
use crate::domain::company::{CompanyState, Issuer};

/// A company as stored. `name` is None for a company that came into being with its first admin
/// write and that the operator has not named yet.
#[derive(Debug, Clone)]
pub struct CompanyRow {
    pub id: String,
    pub name: Option<String>,
    pub state: CompanyState,
    pub issuer: Option<Issuer>,
    pub hs256_secret_enc: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

const COLUMNS: &str = "id, name, state, issuer, hs256_secret_enc, created_at, updated_at";

fn row(r: &tokio_postgres::Row) -> Result<CompanyRow, StoreError> {
    let issuer: Option<serde_json::Value> = r.get(3);
    let issuer = issuer
        .map(crate::domain::from_stored::<Issuer>)
        .transpose()
        .map_err(|cause| StoreError::Unreadable { what: "the company's token issuer", cause })?;
    Ok(CompanyRow {
        id: r.get(0),
        name: r.get(1),
        // A state a later release added is not one this release lets act.
        state: CompanyState::parse(r.get(2)).unwrap_or(CompanyState::Suspended),
        issuer,
        hs256_secret_enc: r.get(4),
        created_at: r.get(5),
        updated_at: r.get(6),
    })
}

pub async fn get(db: &impl GenericClient, id: &str) -> Result<Option<CompanyRow>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM tenants WHERE id = $1");
    db.query_opt(&db.prepare_cached(&sql).await?, &[&id]).await?.as_ref().map(row).transpose()
}

pub async fn list(db: &impl GenericClient) -> Result<Vec<CompanyRow>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM tenants ORDER BY id");
    db.query(&db.prepare_cached(&sql).await?, &[]).await?.iter().map(row).collect()
}

/// Creates or replaces the company's name, state and issuer; its HS256 secret is replaced only
/// when `hs256_secret_enc` is `Some` (a new one), dropped when the issuer no longer wants one.
/// Returns the row and whether it was created.
pub async fn put(
    db: &impl GenericClient,
    id: &str,
    name: &str,
    state: CompanyState,
    issuer: Option<&Issuer>,
    hs256_secret_enc: Option<&str>,
) -> Result<(CompanyRow, bool), StoreError> {
    let issuer_json = issuer.map(|i| serde_json::to_value(i).expect("an issuer serialises"));
    let keeps_secret = issuer.is_some_and(|i| i.hs256);
    let sql = format!(
        "INSERT INTO tenants (id, name, state, issuer, hs256_secret_enc) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO UPDATE SET name = $2, state = $3, issuer = $4,
             hs256_secret_enc = CASE WHEN NOT $6 THEN NULL ELSE coalesce($5, tenants.hs256_secret_enc) END,
             updated_at = now()
         RETURNING {COLUMNS}, (xmax = 0)"
    );
    let r = db
        .query_one(
            &db.prepare_cached(&sql).await?,
            &[&id, &name, &state.as_str(), &issuer_json, &hs256_secret_enc, &keeps_secret],
        )
        .await?;
    Ok((row(&r)?, r.get(7)))
}

/// Calls and return calls of the company still in progress.
pub async fn calls_in_flight(db: &impl GenericClient, id: &str) -> Result<i64, StoreError> {
    let sql = "SELECT (SELECT count(*) FROM callbacks WHERE tenant_id = $1 AND ended_at IS NULL
                           AND status IN ('queued', 'ringing_courier', 'ringing_client', 'connected'))
                    + (SELECT count(*) FROM return_calls WHERE tenant_id = $1 AND ended_at IS NULL
                           AND agi_uniqueid IS NOT NULL)";
    Ok(db.query_one(&db.prepare_cached(sql).await?, &[&id]).await?.get(0))
}

/// Every table that holds a company's rows, in an order that deletes children first. A test
/// (tests/it/companies.rs) checks that it names every table with a `tenant_id`.
pub const TABLES: &[&str] = &[
    "callback_hours",
    "courier_days",
    "dashboard_rollups",
    "pbx_tests",
    "webhook_deliveries",
    "webhook_endpoints",
    "events",
    "recordings",
    "idempotency_keys",
    "callbacks",
    "return_calls",
    "return_call_settings",
    "orders",
    "couriers",
    "pbx_settings",
];

/// Deletes the company and everything of it, in the caller's transaction; the storage keys of
/// its recordings (to remove from storage once committed). None when there was no such company.
pub async fn remove(db: &impl GenericClient, id: &str) -> Result<Option<Vec<String>>, StoreError> {
    let keys: Vec<String> = db
        .query(
            &db.prepare_cached("SELECT storage_key FROM recordings WHERE tenant_id = $1 AND storage_key IS NOT NULL")
                .await?,
            &[&id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    db.execute(
        &db.prepare_cached(
            "DELETE FROM callback_transitions WHERE callback_id IN (SELECT id FROM callbacks WHERE tenant_id = $1)",
        )
        .await?,
        &[&id],
    )
    .await?;
    for table in TABLES {
        db.execute(&db.prepare_cached(&format!("DELETE FROM {table} WHERE tenant_id = $1")).await?, &[&id]).await?;
    }
    let removed = db.execute(&db.prepare_cached("DELETE FROM tenants WHERE id = $1").await?, &[&id]).await?;
    Ok((removed == 1).then_some(keys))
}
