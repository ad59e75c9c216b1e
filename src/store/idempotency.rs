//! `Idempotency-Key` records: the first answer to (tenant, courier, key) is kept for 24 hours and
//! replayed, so a flaky mobile network retrying a tap never rings anyone twice.
//!
//! A key is claimed by the statement that writes the attempt ([`super::callbacks::inserts`]), so
//! of concurrent duplicates exactly one writes an attempt and reaches the PBX; the record names
//! that attempt. A call that was placed needs nothing more: a retry is answered with the attempt
//! as it is by then (no write on the hot path). An answer that was not "placed" (a refusal, a PBX
//! error after which the PBX may still have the call) is stored (`complete`) and replayed; when
//! nothing reached the PBX the key is given back (`release`).

use deadpool_postgres::GenericClient;

use super::StoreError;
use crate::domain::company::TenantId;

/// The key a request claims, and the hash of the request it was sent with.
pub struct IdempotencyClaim<'a> {
    pub key: &'a str,
    pub request_hash: &'a str,
}

/// Placeholders (or SQL expressions) for the claim's values.
pub struct ClaimSql<'a> {
    pub tenant: &'a str,
    pub courier: &'a str,
    pub key: &'a str,
    pub request_hash: &'a str,
    pub callback_id: &'a str,
    /// Where the values come from: `FROM …`, or empty when they are all placeholders.
    pub from: &'a str,
    /// The order several claims are made in (`ORDER BY …`, or empty for one): every statement
    /// claiming several keys locks them in the same order, so two of them never wait for each other.
    pub order: &'a str,
    /// The claim is made only when this is true.
    pub when: &'a str,
}

/// The claim as SQL: `INSERT … RETURNING callback_id` (a row for each request that owns its key,
/// none for one whose key someone holds); nothing for a NULL key or where `when` is false. A key
/// older than 24 hours is free again. Two claims of one free key in one statement are an error
/// (PostgreSQL updates a row once per statement): the caller claims them one by one.
pub fn claim_sql(p: &ClaimSql<'_>) -> String {
    let ClaimSql { tenant, courier, key, request_hash, callback_id, from, order, when } = p;
    format!(
        "INSERT INTO idempotency_keys (tenant_id, courier_id, key, request_hash, callback_id)
         SELECT {tenant}, {courier}, {key}, {request_hash}, {callback_id} {from}
         WHERE {key}::text IS NOT NULL AND {when} {order}
         ON CONFLICT (tenant_id, courier_id, key) DO UPDATE
             SET request_hash = EXCLUDED.request_hash, callback_id = EXCLUDED.callback_id, response_status = NULL,
                 response_body = NULL, created_at = now()
             WHERE idempotency_keys.created_at < now() - interval '24 hours'
         RETURNING callback_id"
    )
}

/// A key someone already used: the request it came with, its attempt, and its answer if stored.
pub struct Earlier {
    pub request_hash: String,
    pub callback_id: Option<uuid::Uuid>,
    pub response: Option<(u16, serde_json::Value)>,
}

/// The key's record, unless it is free (never used, or older than 24 hours).
pub async fn lookup(
    db: &impl GenericClient,
    tenant: &TenantId,
    courier: &str,
    key: &str,
) -> Result<Option<Earlier>, StoreError> {
    let row = db
        .query_opt(
            &db.prepare_cached(
                "SELECT request_hash, response_status, response_body, callback_id FROM idempotency_keys
                 WHERE tenant_id = $1 AND courier_id = $2 AND key = $3 AND created_at >= now() - interval '24 hours'",
            )
            .await?,
            &[&tenant.as_str(), &courier, &key],
        )
        .await?;
    Ok(row.map(|row| {
        let status: Option<i32> = row.get(1);
        let body: Option<serde_json::Value> = row.get(2);
        Earlier {
            request_hash: row.get(0),
            callback_id: row.get(3),
            response: status.zip(body).map(|(s, b)| (s as u16, b)),
        }
    }))
}

pub async fn complete(
    db: &impl GenericClient,
    tenant: &TenantId,
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
        &[&tenant.as_str(), &courier, &key, &(status as i32), body],
    )
    .await?;
    Ok(())
}

/// Gives the key back (the request failed before anything reached the PBX): a retry may try again.
pub async fn release(db: &impl GenericClient, tenant: &TenantId, courier: &str, key: &str) -> Result<(), StoreError> {
    db.execute(&db.prepare_cached("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND courier_id = $2 AND key = $3 AND response_status IS NULL").await?,
        &[&tenant.as_str(), &courier, &key],
    )
    .await?;
    Ok(())
}

/// Whether the key is taken. A concurrent request may be claiming it right now, and a plain read
/// would not see its claim until it commits: this claims the key in a transaction that is rolled
/// back, so it waits for such a request and never keeps the key.
pub async fn is_taken(
    db: &mut deadpool_postgres::Client,
    tenant: &TenantId,
    courier: &str,
    claim: &IdempotencyClaim<'_>,
) -> Result<bool, StoreError> {
    let tx = db.transaction().await?;
    let sql = claim_sql(&ClaimSql {
        tenant: "$1",
        courier: "$2",
        key: "$3",
        request_hash: "$4",
        callback_id: "NULL::uuid",
        from: "",
        order: "",
        when: "true",
    });
    let claimed = tx.query_opt(&sql, &[&tenant.as_str(), &courier, &claim.key, &claim.request_hash]).await?.is_some();
    tx.rollback().await?;
    Ok(!claimed)
}
