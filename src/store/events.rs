//! Events and the webhook outbox (see migrations/V6__events.sql): the SQL that writes a change's
//! events in the same statement as the change, and reads a subject's events back.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use uuid::Uuid;

use super::StoreError;
use crate::domain::company::TenantId;
use crate::domain::event::EventType;

/// Two CTEs for a statement that writes a change: they store the rows of the CTE `source`
/// (columns `subject_id`, `tenant_id`, `sequence`, `data`) as events of type `kind`, and queue a
/// delivery of each for every enabled endpoint of the company that subscribes to `kind`. The
/// statement can report `(SELECT count(*) FROM deliveries_written)` (its rows are the deliveries'
/// `subject_id`s): deliveries to wake the deliverer for.
pub fn outbox_ctes(source: &str, kind: EventType) -> String {
    let kind = kind.as_str();
    format!(
        "events_written AS (
             INSERT INTO events (subject_id, sequence, tenant_id, type, data)
             SELECT subject_id, sequence, tenant_id, '{kind}', data FROM {source}
             RETURNING subject_id, sequence, tenant_id),
         deliveries_written AS (
             INSERT INTO webhook_deliveries (tenant_id, endpoint_id, subject_id, sequence)
             SELECT e.tenant_id, w.id, e.subject_id, e.sequence
             FROM events_written e
             JOIN webhook_endpoints w ON w.tenant_id = e.tenant_id AND w.enabled AND '{kind}' = ANY (w.event_types)
             RETURNING subject_id)"
    )
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub subject_id: Uuid,
    pub sequence: i32,
    pub tenant_id: TenantId,
    pub kind: String,
    pub created_at: OffsetDateTime,
    /// The `data` JSON, as sent.
    pub data: String,
}

/// A subject's events after `after` (0: all of them), oldest first.
pub async fn after(
    db: &impl GenericClient,
    tenant: &TenantId,
    subject: Uuid,
    after: i32,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = db
        .query(
            "SELECT subject_id, sequence, tenant_id, type, created_at, data FROM events
             WHERE subject_id = $1 AND tenant_id = $2 AND sequence > $3 ORDER BY sequence",
            &[&subject, &tenant.as_str(), &after],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| StoredEvent {
            subject_id: r.get(0),
            sequence: r.get(1),
            tenant_id: super::tenant_at(r, 2),
            kind: r.get(3),
            created_at: r.get(4),
            data: r.get(5),
        })
        .collect())
}
