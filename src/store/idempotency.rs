//! `Idempotency-Key` records: the first answer to (tenant, courier, key) is kept for 24 hours and
//! replayed, so a flaky mobile network retrying a tap never rings anyone twice.
//!
//! A key is claimed by the statement that writes the attempt ([`super::callbacks::insert`]), so
//! of concurrent duplicates exactly one writes an attempt and reaches the PBX. The claimant then
//! stores its answer (`complete`) or gives the key back when nothing reached the PBX (`release`).

use deadpool_postgres::GenericClient;

use super::StoreError;

/// The key a request claims, and the hash of the request it was sent with.
pub struct IdempotencyClaim<'a> {
    pub key: &'a str,
    pub request_hash: &'a str,
}

/// The claim as SQL: `INSERT … RETURNING 1` (one row when this request owns the key, none when
/// someone does), for the given placeholders; nothing when the key placeholder is NULL or the
/// condition `when` is false. A key older than 24 hours is free again.
pub fn claim_sql(tenant: &str, courier: &str, key: &str, request_hash: &str, when: &str) -> String {
    format!(
        "INSERT INTO idempotency_keys (tenant_id, courier_id, key, request_hash)
         SELECT {tenant}, {courier}, {key}, {request_hash} WHERE {key}::text IS NOT NULL AND {when}
         ON CONFLICT (tenant_id, courier_id, key) DO UPDATE
             SET request_hash = EXCLUDED.request_hash, response_status = NULL, response_body = NULL, created_at = now()
             WHERE idempotency_keys.created_at < now() - interval '24 hours'
         RETURNING 1"
    )
}

/// A key someone already used: the request it came with, and its answer once stored.
pub struct Earlier {
    pub request_hash: String,
    pub response: Option<(u16, serde_json::Value)>,
}

/// The key's record, unless it is free (never used, or older than 24 hours).
pub async fn lookup(
    db: &impl GenericClient,
    tenant: &str,
    courier: &str,
    key: &str,
) -> Result<Option<Earlier>, StoreError> {
    let row = db
        .query_opt(
            &db.prepare_cached(
                "SELECT request_hash, response_status, response_body FROM idempotency_keys
                 WHERE tenant_id = $1 AND courier_id = $2 AND key = $3 AND created_at >= now() - interval '24 hours'",
            )
            .await?,
            &[&tenant, &courier, &key],
        )
        .await?;
    Ok(row.map(|row| {
        let status: Option<i32> = row.get(1);
        let body: Option<serde_json::Value> = row.get(2);
        Earlier { request_hash: row.get(0), response: status.zip(body).map(|(s, b)| (s as u16, b)) }
    }))
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

/// Whether the key is taken. A concurrent request may be claiming it right now, and a plain read
/// would not see its claim until it commits: this claims the key in a transaction that is rolled
/// back, so it waits for such a request and never keeps the key.
pub async fn is_taken(
    db: &mut deadpool_postgres::Client,
    tenant: &str,
    courier: &str,
    claim: &IdempotencyClaim<'_>,
) -> Result<bool, StoreError> {
    let tx = db.transaction().await?;
    let sql = claim_sql("$1", "$2", "$3", "$4", "true");
    let claimed = tx.query_opt(&sql, &[&tenant, &courier, &claim.key, &claim.request_hash]).await?.is_some();
    tx.rollback().await?;
    Ok(!claimed)
}
