//! `Idempotency-Key` records: the first answer to (tenant, courier, key) is kept for 24 hours and
//! replayed, so a flaky mobile network retrying a tap never rings anyone twice.

use deadpool_postgres::GenericClient;

use super::StoreError;

pub enum Claim {
    /// This request owns the key: do the work, then `complete` (or `release`).
    Owned,
    /// Someone already used the key.
    Taken { request_hash: String, response: Option<(u16, serde_json::Value)> },
}

/// Claims the key atomically (concurrent duplicates: exactly one gets `Owned`).
pub async fn claim(
    db: &impl GenericClient,
    tenant: &str,
    courier: &str,
    key: &str,
    request_hash: &str,
) -> Result<Claim, StoreError> {
    let inserted = db
        .query_opt(
            &db.prepare_cached(
                "INSERT INTO idempotency_keys (tenant_id, courier_id, key, request_hash) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, courier_id, key) DO UPDATE
                 SET request_hash = $4, response_status = NULL, response_body = NULL, created_at = now()
                 WHERE idempotency_keys.created_at < now() - interval '24 hours'
             RETURNING 1",
            )
            .await?,
            &[&tenant, &courier, &key, &request_hash],
        )
        .await?;
    if inserted.is_some() {
        return Ok(Claim::Owned);
    }
    let row = db
        .query_one(
            &db.prepare_cached(
                "SELECT request_hash, response_status, response_body FROM idempotency_keys
             WHERE tenant_id = $1 AND courier_id = $2 AND key = $3",
            )
            .await?,
            &[&tenant, &courier, &key],
        )
        .await?;
    let status: Option<i32> = row.get(1);
    let body: Option<serde_json::Value> = row.get(2);
    Ok(Claim::Taken { request_hash: row.get(0), response: status.zip(body).map(|(s, b)| (s as u16, b)) })
}

pub async fn complete(
    db: &impl GenericClient,
    tenant: &str,
    courier: &str,
    key: &str,
    status: u16,
    body: &serde_json::Value,
) -> Result<(), StoreError> {
    db.execute(
        &db.prepare_cached(
            "UPDATE idempotency_keys SET response_status = $4, response_body = $5
         WHERE tenant_id = $1 AND courier_id = $2 AND key = $3",
        )
        .await?,
        &[&tenant, &courier, &key, &(status as i32), body],
    )
    .await?;
    Ok(())
}

/// Gives the key back (the request failed before anything reached the PBX): a retry may try again.
pub async fn release(db: &impl GenericClient, tenant: &str, courier: &str, key: &str) -> Result<(), StoreError> {
    db.execute(&db.prepare_cached("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND courier_id = $2 AND key = $3 AND response_status IS NULL").await?,
        &[&tenant, &courier, &key],
    )
    .await?;
    Ok(())
}
