//! Webhook endpoints and their deliveries (migrations/V6__events.sql). The deliveries table is
//! the outbox: rows are queued by the statements that write events (store::events), claimed here
//! by locking them for the sender's transaction (`FOR UPDATE SKIP LOCKED`: each goes to one
//! process, and back to the others when that process dies), and kept with their outcome.

use deadpool_postgres::GenericClient;
use strum::{EnumString, IntoStaticStr, VariantArray};
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::StoreError;
use crate::domain::company::TenantId;
use crate::domain::event::EndpointSpec;

/// An endpoint as stored (its secrets encrypted).
#[derive(Debug, Clone)]
pub struct EndpointRow {
    pub tenant_id: TenantId,
    pub id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<OffsetDateTime>,
    pub secret_enc: String,
    pub previous_secret_enc: Option<String>,
    pub previous_secret_until: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

const ENDPOINT_COLUMNS: &str =
    "tenant_id, id, url, event_types, description, enabled, disabled_reason, failing_since, \
    secret_enc, previous_secret_enc, previous_secret_until, created_at, updated_at";

fn endpoint(r: &Row) -> EndpointRow {
    EndpointRow {
        tenant_id: super::tenant_at(r, 0),
        id: r.get(1),
        url: r.get(2),
        event_types: r.get(3),
        description: r.get(4),
        enabled: r.get(5),
        disabled_reason: r.get(6),
        failing_since: r.get(7),
        secret_enc: r.get(8),
        previous_secret_enc: r.get(9),
        previous_secret_until: r.get(10),
        created_at: r.get(11),
        updated_at: r.get(12),
    }
}

/// Creates the endpoint with `secret_enc`, or updates its URL, types, description and switch (its
/// secret stays); turning it on clears why it was off. Returns it and whether it was created.
pub async fn put_endpoint(
    db: &impl GenericClient,
    tenant: &TenantId,
    id: &str,
    spec: &EndpointSpec,
    secret_enc: &str,
) -> Result<(EndpointRow, bool), StoreError> {
    let types: Vec<&str> = spec.event_types.iter().map(|t| t.as_str()).collect();
    let row = db
        .query_one(
            &format!(
                "INSERT INTO webhook_endpoints (tenant_id, id, url, event_types, description, enabled, secret_enc)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (tenant_id, id) DO UPDATE SET url = EXCLUDED.url, event_types = EXCLUDED.event_types,
                     description = EXCLUDED.description, enabled = EXCLUDED.enabled,
                     disabled_reason = CASE WHEN EXCLUDED.enabled THEN NULL ELSE webhook_endpoints.disabled_reason END,
                     failing_since = CASE WHEN EXCLUDED.enabled THEN NULL ELSE webhook_endpoints.failing_since END,
                     updated_at = now()
                 RETURNING {ENDPOINT_COLUMNS}, (xmax = 0)"
            ),
            &[&tenant.as_str(), &id, &spec.url, &types, &spec.description, &spec.enabled, &secret_enc],
        )
        .await?;
    Ok((endpoint(&row), row.get(13)))
}

pub async fn get_endpoint(
    db: &impl GenericClient,
    tenant: &TenantId,
    id: &str,
) -> Result<Option<EndpointRow>, StoreError> {
    let row = db
        .query_opt(
            &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2"),
            &[&tenant.as_str(), &id],
        )
        .await?;
    Ok(row.as_ref().map(endpoint))
}

pub async fn list_endpoints(db: &impl GenericClient, tenant: &TenantId) -> Result<Vec<EndpointRow>, StoreError> {
    let rows = db
        .query(
            &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 ORDER BY id"),
            &[&tenant.as_str()],
        )
        .await?;
    Ok(rows.iter().map(endpoint).collect())
}

/// Deletes the endpoint and its deliveries, in one transaction; false (and nothing deleted) when
/// there was none. The deliveries go first: a round sending some of them holds them, then locks
/// the endpoint to record its health, so locking the endpoint first could wait in a cycle with it.
pub async fn delete_endpoint(db: &mut super::Client, tenant: &TenantId, id: &str) -> Result<bool, StoreError> {
    let tx = db.transaction().await?;
    tx.execute("DELETE FROM webhook_deliveries WHERE tenant_id = $1 AND endpoint_id = $2", &[&tenant.as_str(), &id])
        .await?;
    let gone =
        tx.execute("DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2", &[&tenant.as_str(), &id]).await?;
    if gone == 0 {
        return Ok(false); // the transaction rolls back as it is dropped
    }
    tx.commit().await?;
    Ok(true)
}

/// Makes `secret_enc` the signing secret; the one it replaces keeps signing until `overlap_until`.
pub async fn rotate_secret(
    db: &impl GenericClient,
    tenant: &TenantId,
    id: &str,
    secret_enc: &str,
    overlap_until: OffsetDateTime,
) -> Result<Option<EndpointRow>, StoreError> {
    let row = db
        .query_opt(
            &format!(
                "UPDATE webhook_endpoints SET previous_secret_enc = secret_enc, previous_secret_until = $4,
                     secret_enc = $3, updated_at = now()
                 WHERE tenant_id = $1 AND id = $2 RETURNING {ENDPOINT_COLUMNS}"
            ),
            &[&tenant.as_str(), &id, &secret_enc, &overlap_until],
        )
        .await?;
    Ok(row.as_ref().map(endpoint))
}

/// A delivery claimed for sending, with what it needs: the endpoint and the event.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub key: DeliveryKey,
    /// This attempt's number (1 for the first).
    pub attempt: i32,
    pub url: String,
    pub secret_enc: String,
    pub previous_secret_enc: Option<String>,
    pub previous_secret_until: Option<OffsetDateTime>,
    pub event_type: String,
    pub event_at: OffsetDateTime,
    pub data: String,
}

/// Which delivery: an event (subject, sequence) for an endpoint of a company.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryKey {
    pub tenant_id: TenantId,
    pub endpoint_id: String,
    pub subject_id: Uuid,
    pub sequence: i32,
}

/// Begins a deliverer's round: a transaction whose statements find their rows by an index
/// (`by_index!`), the due ones in the due index's order. Planned by lagging statistics, while
/// deliveries were queued by thousands a second, the claim read every due row and sorted them to
/// take 256 (29 ms with 12,000 due), and the outcomes were matched by scanning the whole table
/// (21 ms for 350 outcomes among 30,000 rows; BENCHMARKS.md, "The write path").
pub async fn begin_round(db: &mut super::Client) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    let tx = db.transaction().await?;
    tx.batch_execute(concat!(super::by_index!(), "; SET LOCAL enable_bitmapscan = off")).await?;
    Ok(tx)
}

/// Claims what is due for up to `subjects` subjects, locking the rows (`FOR UPDATE SKIP LOCKED`)
/// for the transaction `db` is in: another process skips them, and takes them over at once if this
/// one dies (PostgreSQL ends its transaction with its connection). A subject's events go to each
/// endpoint in order, so what is claimed is chains: for each (endpoint, subject), the pending
/// deliveries from the first, in sequence order, when that first one is due, up to the first one
/// this transaction could not lock. A delivery another sender holds is a gap the chain stops at:
/// its later ones wait for it however due they are (`held` is the chain's locked sequences up to
/// each row), or a call's `ringing_courier` could arrive after its `completed`. Rows come grouped
/// by chain. Disabled endpoints' deliveries wait.
///
/// The due rows are found by walking `webhook_deliveries_due` in time order and stopping at
/// `subjects` rows: asking PostgreSQL for "due and first of its chain" in one condition let it
/// plan a scan and sort of every pending row (169 ms with 49,000 pending; BENCHMARKS.md).
pub async fn claim_due(db: &tokio_postgres::Transaction<'_>, subjects: i64) -> Result<Vec<DueDelivery>, StoreError> {
    // Sent unnamed, so it is planned for the table as it is now: a plan cached while the queue was
    // empty looked for earlier pending deliveries by scanning every pending one (see
    // `record_outcomes`).
    let rows = db
        .query_typed(
            "WITH due AS MATERIALIZED (
                     SELECT d.tenant_id, d.endpoint_id, d.subject_id
                     FROM webhook_deliveries d
                     JOIN webhook_endpoints w ON w.tenant_id = d.tenant_id AND w.id = d.endpoint_id AND w.enabled
                     WHERE d.status = 'pending' AND d.next_attempt_at <= now()
                     ORDER BY d.next_attempt_at
                     LIMIT $1
                     FOR UPDATE OF d SKIP LOCKED),
                 locked AS MATERIALIZED (
                     SELECT d.tenant_id, d.endpoint_id, d.subject_id, d.sequence, d.attempts, d.next_attempt_at
                     FROM webhook_deliveries d
                     WHERE (d.tenant_id, d.endpoint_id, d.subject_id) IN (SELECT tenant_id, endpoint_id, subject_id FROM due)
                       AND d.status = 'pending'
                     FOR UPDATE OF d SKIP LOCKED),
                 chains AS (
                     SELECT l.*, first_value(l.next_attempt_at) OVER chain AS head_due,
                            array_agg(l.sequence) OVER chain AS held
                     FROM locked l
                     WINDOW chain AS (PARTITION BY l.tenant_id, l.endpoint_id, l.subject_id ORDER BY l.sequence)),
                 -- A chain whose first delivery waits for its retry: the rest wait with it (events
                 -- written after that delivery failed were due at once), or they would fill every
                 -- later walk's first rows and hold back every company's deliveries behind them.
                 deferred AS (
                     UPDATE webhook_deliveries d SET next_attempt_at = c.head_due
                     FROM chains c
                     WHERE d.tenant_id = c.tenant_id AND d.endpoint_id = c.endpoint_id AND d.subject_id = c.subject_id
                       AND d.sequence = c.sequence AND c.head_due > now() AND d.next_attempt_at < c.head_due)
                 SELECT c.tenant_id, c.endpoint_id, c.subject_id, c.sequence, c.attempts + 1, w.url, w.secret_enc,
                        w.previous_secret_enc, w.previous_secret_until, e.type, e.created_at, e.data
                 FROM chains c
                 JOIN webhook_endpoints w ON w.tenant_id = c.tenant_id AND w.id = c.endpoint_id
                 JOIN events e ON e.subject_id = c.subject_id AND e.sequence = c.sequence
                 WHERE c.head_due <= now()
                   AND NOT EXISTS (
                       SELECT FROM webhook_deliveries p
                       WHERE p.tenant_id = c.tenant_id AND p.endpoint_id = c.endpoint_id AND p.subject_id = c.subject_id
                         AND p.sequence < c.sequence AND p.status = 'pending' AND p.sequence <> ALL (c.held))
                 ORDER BY c.tenant_id, c.endpoint_id, c.subject_id, c.sequence",
            &[(&subjects, tokio_postgres::types::Type::INT8)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| DueDelivery {
            key: DeliveryKey {
                tenant_id: super::tenant_at(r, 0),
                endpoint_id: r.get(1),
                subject_id: r.get(2),
                sequence: r.get(3),
            },
            attempt: r.get(4),
            url: r.get(5),
            secret_enc: r.get(6),
            previous_secret_enc: r.get(7),
            previous_secret_until: r.get(8),
            event_type: r.get(9),
            event_at: r.get(10),
            data: r.get(11),
        })
        .collect())
}

/// What came of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoStaticStr, EnumString, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum DeliveryStatus {
    Delivered,
    /// Failed for now: tried again at `next_attempt_at`.
    Pending,
    /// Given up (an answer that retrying cannot change, or the retries ran out).
    Failed,
}

crate::domain::enum_names!(DeliveryStatus);

#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub key: DeliveryKey,
    pub status: DeliveryStatus,
    pub next_attempt_at: Option<OffsetDateTime>,
    pub http_status: Option<i32>,
    pub error: Option<String>,
}

/// Records a batch of attempts' outcomes (counting each attempt) and each endpoint's health: a
/// delivery that succeeds clears `failing_since`, one that fails sets it if unset. A delivery to
/// be tried again holds the later ones of its chain back until then. Nothing here waits for a
/// delivery another round holds (see `later`), so rounds never deadlock one another.
pub async fn record_outcomes(
    db: &tokio_postgres::Transaction<'_>,
    outcomes: &[AttemptOutcome],
) -> Result<(), StoreError> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let tenants: Vec<&str> = outcomes.iter().map(|o| o.key.tenant_id.as_str()).collect();
    let endpoints: Vec<&str> = outcomes.iter().map(|o| o.key.endpoint_id.as_str()).collect();
    let subjects: Vec<Uuid> = outcomes.iter().map(|o| o.key.subject_id).collect();
    let sequences: Vec<i32> = outcomes.iter().map(|o| o.key.sequence).collect();
    let statuses: Vec<&str> = outcomes.iter().map(|o| o.status.as_str()).collect();
    let next: Vec<Option<OffsetDateTime>> = outcomes.iter().map(|o| o.next_attempt_at).collect();
    let codes: Vec<Option<i32>> = outcomes.iter().map(|o| o.http_status).collect();
    let errors: Vec<Option<&str>> = outcomes.iter().map(|o| o.error.as_deref()).collect();
    use tokio_postgres::types::Type;
    // Sent unnamed, so it is planned for this batch and the table as it is now: a plan cached
    // while the table was small would scan it (BENCHMARKS.md, "What was fixed").
    db.query_typed(
        "WITH o AS (
                 SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::int[], $5::text[], $6::timestamptz[],
                                      $7::int[], $8::text[])
                     AS o(tenant_id, endpoint_id, subject_id, sequence, status, next_attempt_at, http_status, error)),
             recorded AS (
                 UPDATE webhook_deliveries d
                 SET status = o.status, next_attempt_at = COALESCE(o.next_attempt_at, d.next_attempt_at),
                     attempts = d.attempts + 1, last_attempt_at = now(), last_status = o.http_status, last_error = o.error,
                     delivered_at = CASE WHEN o.status = 'delivered' THEN now() END
                 FROM o
                 WHERE d.tenant_id = o.tenant_id AND d.endpoint_id = o.endpoint_id AND d.subject_id = o.subject_id
                   AND d.sequence = o.sequence),
             -- The rest of a chain waits for its retried delivery: not due before it, so the next
             -- claims do not walk past them. A row another sender holds is left as it is (it is not
             -- sent before this one anyway): waiting for it could close a cycle with that sender
             -- waiting for one of ours, and PostgreSQL would end one of the rounds, its outcomes
             -- unrecorded and its delivered messages sent again.
             later AS (
                 SELECT d.tenant_id, d.endpoint_id, d.subject_id, d.sequence, o.next_attempt_at
                 FROM webhook_deliveries d
                 JOIN o ON d.tenant_id = o.tenant_id AND d.endpoint_id = o.endpoint_id AND d.subject_id = o.subject_id
                     AND d.sequence > o.sequence
                 WHERE o.status = 'pending' AND d.status = 'pending' AND d.next_attempt_at < o.next_attempt_at
                 FOR UPDATE OF d SKIP LOCKED),
             held_back AS (
                 UPDATE webhook_deliveries d SET next_attempt_at = l.next_attempt_at
                 FROM later l
                 WHERE d.tenant_id = l.tenant_id AND d.endpoint_id = l.endpoint_id AND d.subject_id = l.subject_id
                   AND d.sequence = l.sequence),
             -- The endpoints whose health changes, locked in one order, so that rounds waiting for
             -- each other's endpoints never wait in a cycle.
             changed AS (
                 SELECT w.tenant_id, w.id, h.ok
                 FROM webhook_endpoints w
                 JOIN (SELECT tenant_id, endpoint_id, bool_or(status = 'delivered') AS ok FROM o GROUP BY 1, 2) h
                     ON w.tenant_id = h.tenant_id AND w.id = h.endpoint_id
                 WHERE h.ok = (w.failing_since IS NOT NULL)
                 ORDER BY w.tenant_id, w.id
                 FOR UPDATE OF w)
             UPDATE webhook_endpoints w SET failing_since = CASE WHEN c.ok THEN NULL ELSE now() END
             FROM changed c
             WHERE w.tenant_id = c.tenant_id AND w.id = c.id",
        &[
            (&tenants, Type::TEXT_ARRAY),
            (&endpoints, Type::TEXT_ARRAY),
            (&subjects, Type::UUID_ARRAY),
            (&sequences, Type::INT4_ARRAY),
            (&statuses, Type::TEXT_ARRAY),
            (&next, Type::TIMESTAMPTZ_ARRAY),
            (&codes, Type::INT4_ARRAY),
            (&errors, Type::TEXT_ARRAY),
        ],
    )
    .await?;
    Ok(())
}

/// Disables the endpoints whose every delivery has failed since before `failing_before`, saying
/// why; returns them as (tenant, endpoint).
pub async fn disable_failing(
    db: &impl GenericClient,
    failing_before: OffsetDateTime,
    reason: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    let rows = db
        .query(
            // Locked in the order `record_outcomes` locks endpoints, so neither waits in a cycle.
            "UPDATE webhook_endpoints w SET enabled = false, disabled_reason = $2, updated_at = now()
             FROM (SELECT tenant_id, id FROM webhook_endpoints WHERE enabled AND failing_since < $1
                   ORDER BY tenant_id, id FOR UPDATE) failing
             WHERE w.tenant_id = failing.tenant_id AND w.id = failing.id
             RETURNING w.tenant_id, w.id",
            &[&failing_before, &reason],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Deliveries waiting to be sent (all companies): the queue's depth.
pub async fn pending_count(db: &impl GenericClient) -> Result<i64, StoreError> {
    Ok(db.query_one("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'", &[]).await?.get(0))
}

/// Deletes deliveries delivered before `before`; returns how many.
pub async fn prune_delivered(db: &impl GenericClient, before: OffsetDateTime) -> Result<u64, StoreError> {
    Ok(db
        .execute("DELETE FROM webhook_deliveries WHERE status = 'delivered' AND delivered_at < $1", &[&before])
        .await?)
}

/// A delivery as the admin lists it.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub key: DeliveryKey,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub next_attempt_at: OffsetDateTime,
    pub last_attempt_at: Option<OffsetDateTime>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub delivered_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

const DELIVERY_COLUMNS: &str = "d.tenant_id, d.endpoint_id, d.subject_id, d.sequence, e.type, d.status, d.attempts, \
    d.next_attempt_at, d.last_attempt_at, d.last_status, d.last_error, d.delivered_at, d.created_at";

fn delivery(r: &Row) -> DeliveryRow {
    DeliveryRow {
        key: DeliveryKey {
            tenant_id: super::tenant_at(r, 0),
            endpoint_id: r.get(1),
            subject_id: r.get(2),
            sequence: r.get(3),
        },
        event_type: r.get(4),
        // The column's CHECK admits only these.
        status: DeliveryStatus::parse(r.get(5)).unwrap_or(DeliveryStatus::Failed),
        attempts: r.get(6),
        next_attempt_at: r.get(7),
        last_attempt_at: r.get(8),
        last_status: r.get(9),
        last_error: r.get(10),
        delivered_at: r.get(11),
        created_at: r.get(12),
    }
}

/// An endpoint's deliveries, newest subject first (then its latest event first), after `before`
/// (a (subject, sequence) cursor), optionally of one status.
pub async fn list_deliveries(
    db: &impl GenericClient,
    tenant: &TenantId,
    endpoint_id: &str,
    status: Option<DeliveryStatus>,
    before: Option<(Uuid, i32)>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, StoreError> {
    let rows = db
        .query(
            &format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d
                 JOIN events e ON e.subject_id = d.subject_id AND e.sequence = d.sequence
                 WHERE d.tenant_id = $1 AND d.endpoint_id = $2 AND ($3::text IS NULL OR d.status = $3)
                   AND ($4::uuid IS NULL OR (d.subject_id, d.sequence) < ($4, $5))
                 ORDER BY d.subject_id DESC, d.sequence DESC LIMIT $6"
            ),
            &[
                &tenant.as_str(),
                &endpoint_id,
                &status.map(DeliveryStatus::as_str),
                &before.map(|(subject, _)| subject),
                &before.map_or(0, |(_, sequence)| sequence),
                &limit,
            ],
        )
        .await?;
    Ok(rows.iter().map(delivery).collect())
}

/// Queues a delivery again now, its retries counted afresh (it may have failed or been
/// delivered); None when there is no such delivery.
pub async fn retry_delivery(db: &impl GenericClient, key: &DeliveryKey) -> Result<Option<DeliveryRow>, StoreError> {
    let row = db
        .query_opt(
            &format!(
                "WITH again AS (
                     UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(), attempts = 0,
                         delivered_at = NULL
                     WHERE tenant_id = $1 AND endpoint_id = $2 AND subject_id = $3 AND sequence = $4
                     RETURNING *)
                 SELECT {DELIVERY_COLUMNS} FROM again d JOIN events e ON e.subject_id = d.subject_id AND e.sequence = d.sequence"
            ),
            &[&key.tenant_id.as_str(), &key.endpoint_id, &key.subject_id, &key.sequence],
        )
        .await?;
    Ok(row.as_ref().map(delivery))
}
