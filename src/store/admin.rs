//! Tenants, PBX settings (with the encrypted AMI secret and FTP password), couriers and orders:
//! the admin-managed data.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;

use super::StoreError;
use crate::domain::company::TenantId;
use crate::domain::registry::{Courier, Order, OrderState};
use crate::domain::settings::PbxSettings;

/// Creates the tenant row on first use (tenants come from JWTs; there is no signup).
pub async fn ensure_tenant(db: &impl GenericClient, tenant: &TenantId) -> Result<(), StoreError> {
    db.execute(
        &db.prepare_cached("INSERT INTO tenants (id) VALUES ($1) ON CONFLICT DO NOTHING").await?,
        &[&tenant.as_str()],
    )
    .await?;
    Ok(())
}

pub struct StoredSettings {
    pub settings: PbxSettings,
    pub secret_enc: String,
    pub updated_at: OffsetDateTime,
    /// The last check of the PBX's dialplan, by whichever process made it.
    pub dialplan_check: Option<serde_json::Value>,
}

pub async fn get_settings(db: &impl GenericClient, tenant: &TenantId) -> Result<Option<StoredSettings>, StoreError> {
    let row = db
        .query_opt(
            &db.prepare_cached(
                "SELECT settings, secret_enc, updated_at, dialplan_check FROM pbx_settings WHERE tenant_id = $1",
            )
            .await?,
            &[&tenant.as_str()],
        )
        .await?;
    let Some(r) = row else { return Ok(None) };
    let settings = PbxSettings::from_stored(r.get(0))
        .map_err(|cause| StoreError::Unreadable { what: "the company's PBX settings", cause })?;
    Ok(Some(StoredSettings { settings, secret_enc: r.get(1), updated_at: r.get(2), dialplan_check: r.get(3) }))
}

/// Keeps the last check of the company's dialplan (a company without settings has none to keep).
pub async fn put_dialplan_check(
    db: &impl GenericClient,
    tenant: &TenantId,
    check: &serde_json::Value,
) -> Result<(), StoreError> {
    db.execute(
        &db.prepare_cached("UPDATE pbx_settings SET dialplan_check = $2 WHERE tenant_id = $1").await?,
        &[&tenant.as_str(), check],
    )
    .await?;
    Ok(())
}

/// Saves a company's settings; the last check of its dialplan is dropped with the settings it
/// checked (the next check is of these).
pub async fn put_settings(
    db: &impl GenericClient,
    tenant: &TenantId,
    settings: &PbxSettings,
    secret_enc: &str,
) -> Result<OffsetDateTime, StoreError> {
    ensure_tenant(db, tenant).await?;
    let json = serde_json::to_value(settings).expect("settings serialise");
    let row = db
        .query_one(
            &db.prepare_cached(
                "INSERT INTO pbx_settings (tenant_id, settings, secret_enc) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id) DO UPDATE SET settings = $2, secret_enc = $3, updated_at = now(),
                 dialplan_check = NULL
             RETURNING updated_at",
            )
            .await?,
            &[&tenant.as_str(), &json, &secret_enc],
        )
        .await?;
    Ok(row.get(0))
}

/// The courier in columns `at..at + 5` of `r` (id, phone, name, active, updated_at).
fn courier_at(r: &tokio_postgres::Row, at: usize) -> Courier {
    Courier {
        id: r.get(at),
        phone: r.get(at + 1),
        name: r.get(at + 2),
        active: r.get(at + 3),
        updated_at: r.get(at + 4),
    }
}

fn courier(r: &tokio_postgres::Row) -> Courier {
    courier_at(r, 0)
}

pub async fn get_courier(db: &impl GenericClient, tenant: &TenantId, id: &str) -> Result<Option<Courier>, StoreError> {
    let row = db
        .query_opt(
            &db.prepare_cached(
                "SELECT id, phone, name, active, updated_at FROM couriers WHERE tenant_id = $1 AND id = $2",
            )
            .await?,
            &[&tenant.as_str(), &id],
        )
        .await?;
    Ok(row.as_ref().map(courier))
}

pub async fn list_couriers(db: &impl GenericClient, tenant: &TenantId) -> Result<Vec<Courier>, StoreError> {
    let rows = db
        .query(
            &db.prepare_cached(
                "SELECT id, phone, name, active, updated_at FROM couriers WHERE tenant_id = $1 ORDER BY id",
            )
            .await?,
            &[&tenant.as_str()],
        )
        .await?;
    Ok(rows.iter().map(courier).collect())
}

/// Inserts or replaces; returns the stored courier and whether it was created.
pub async fn put_courier(
    db: &impl GenericClient,
    tenant: &TenantId,
    id: &str,
    phone: &str,
    name: &str,
    active: bool,
) -> Result<(Courier, bool), StoreError> {
    ensure_tenant(db, tenant).await?;
    let row = db
        .query_one(
            &db.prepare_cached(
                "INSERT INTO couriers (tenant_id, id, phone, name, active) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant_id, id) DO UPDATE SET phone = $3, name = $4, active = $5, updated_at = now()
             RETURNING id, phone, name, active, updated_at, (xmax = 0)",
            )
            .await?,
            &[&tenant.as_str(), &id, &phone, &name, &active],
        )
        .await?;
    Ok((courier(&row), row.get(5)))
}

pub async fn delete_courier(db: &impl GenericClient, tenant: &TenantId, id: &str) -> Result<bool, StoreError> {
    Ok(db
        .execute(
            &db.prepare_cached("DELETE FROM couriers WHERE tenant_id = $1 AND id = $2").await?,
            &[&tenant.as_str(), &id],
        )
        .await?
        > 0)
}

/// The order in columns `at..at + 5` of `r` (id, courier_id, phones, state, updated_at).
fn order_at(r: &tokio_postgres::Row, at: usize) -> Order {
    Order {
        id: r.get(at),
        courier_id: r.get(at + 1),
        phones: r.get(at + 2),
        // The column's CHECK admits only the states there are.
        state: OrderState::parse(r.get(at + 3)).unwrap_or(OrderState::Closed),
        updated_at: r.get(at + 4),
    }
}

fn order(r: &tokio_postgres::Row) -> Order {
    order_at(r, 0)
}

/// The courier and (when `order_id` is given) the order a tap is checked against, in one round
/// trip: the hot path reads both for every call to a client.
pub async fn courier_and_order(
    db: &impl GenericClient,
    tenant: &TenantId,
    courier_id: &str,
    order_id: Option<&str>,
) -> Result<(Option<Courier>, Option<Order>), StoreError> {
    let row = db
        .query_one(
            &db.prepare_cached(
                "SELECT c.id, c.phone, c.name, c.active, c.updated_at, o.id, o.courier_id, o.phones, o.state, o.updated_at
                 FROM (SELECT) AS one
                 LEFT JOIN couriers c ON c.tenant_id = $1 AND c.id = $2
                 LEFT JOIN orders o ON o.tenant_id = $1 AND o.id = $3",
            )
            .await?,
            &[&tenant.as_str(), &courier_id, &order_id],
        )
        .await?;
    let found = |at: usize| row.get::<_, Option<String>>(at).is_some();
    Ok((found(0).then(|| courier_at(&row, 0)), found(5).then(|| order_at(&row, 5))))
}

pub async fn get_order(db: &impl GenericClient, tenant: &TenantId, id: &str) -> Result<Option<Order>, StoreError> {
    let row = db
        .query_opt(
            &db.prepare_cached(
                "SELECT id, courier_id, phones, state, updated_at FROM orders WHERE tenant_id = $1 AND id = $2",
            )
            .await?,
            &[&tenant.as_str(), &id],
        )
        .await?;
    Ok(row.as_ref().map(order))
}

pub async fn put_order(
    db: &impl GenericClient,
    tenant: &TenantId,
    id: &str,
    courier_id: Option<&str>,
    phones: &[String],
    state: OrderState,
) -> Result<(Order, bool), StoreError> {
    ensure_tenant(db, tenant).await?;
    let row = db
        .query_one(
            &db.prepare_cached(
                "INSERT INTO orders (tenant_id, id, courier_id, phones, state) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant_id, id) DO UPDATE SET courier_id = $3, phones = $4, state = $5, updated_at = now()
             RETURNING id, courier_id, phones, state, updated_at, (xmax = 0)",
            )
            .await?,
            &[&tenant.as_str(), &id, &courier_id, &phones, &state.as_str()],
        )
        .await?;
    Ok((order(&row), row.get(5)))
}

pub async fn delete_order(db: &impl GenericClient, tenant: &TenantId, id: &str) -> Result<bool, StoreError> {
    Ok(db
        .execute(
            &db.prepare_cached("DELETE FROM orders WHERE tenant_id = $1 AND id = $2").await?,
            &[&tenant.as_str(), &id],
        )
        .await?
        > 0)
}

/// Stores (or with `None` clears) the encrypted FTP password of the company's recordings source.
pub async fn set_recordings_password(
    db: &impl GenericClient,
    tenant: &TenantId,
    password_enc: Option<&str>,
) -> Result<(), StoreError> {
    db.execute(
        "UPDATE pbx_settings SET recordings_password_enc = $2 WHERE tenant_id = $1",
        &[&tenant.as_str(), &password_enc],
    )
    .await?;
    Ok(())
}

/// The encrypted FTP password of the company's recordings source, if one is stored.
pub async fn recordings_password(db: &impl GenericClient, tenant: &TenantId) -> Result<Option<String>, StoreError> {
    let row = db
        .query_opt("SELECT recordings_password_enc FROM pbx_settings WHERE tenant_id = $1", &[&tenant.as_str()])
        .await?;
    Ok(row.and_then(|r| r.get(0)))
}
