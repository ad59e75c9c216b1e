//! Return calls (migrations/V7__return_calls.sql): the companies' rules and keys, the one-statement
//! lookup a decision needs, and the journal of return calls with their events.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::events::outbox_ctes;
use super::StoreError;
use crate::domain::callback::{CdrRecord, Reason};
use crate::domain::company::TenantId;
use crate::domain::event::EventType;
use crate::domain::return_call::{
    AllowedAddresses, CandidateOrder, ReturnCallSettings, ReturnLeg, ReturnState, ReturnStatus, RouteKind, RouteReason,
};

/// A company's return-call rules and its key (hashed to find it, encrypted to show it).
#[derive(Debug, Clone)]
pub struct StoredRules {
    pub tenant_id: TenantId,
    pub rules: ReturnCallSettings,
    /// `rules.allowed_addresses`, parsed.
    pub allowed: AllowedAddresses,
    pub key_hash: String,
    pub key_enc: String,
    pub updated_at: OffsetDateTime,
}

/// A row as stored, by this release or a later one; one this release cannot read is an error (the
/// company's return calls go to the office and the error is logged), never rules of its own making.
fn stored_rules(r: &Row) -> Result<StoredRules, StoreError> {
    let rules = ReturnCallSettings::from_stored(r.get(1))
        .map_err(|cause| StoreError::Unreadable { what: "the company's return-call rules", cause })?;
    Ok(StoredRules {
        tenant_id: super::tenant_at(r, 0),
        allowed: rules.allowed(),
        rules,
        key_hash: r.get(2),
        key_enc: r.get(3),
        updated_at: r.get(4),
    })
}

const RULES_COLUMNS: &str = "tenant_id, settings, key_hash, key_enc, updated_at";

pub async fn rules(db: &impl GenericClient, tenant: &TenantId) -> Result<Option<StoredRules>, StoreError> {
    let row = db
        .query_opt(
            &format!("SELECT {RULES_COLUMNS} FROM return_call_settings WHERE tenant_id = $1"),
            &[&tenant.as_str()],
        )
        .await?;
    row.as_ref().map(stored_rules).transpose()
}

/// The company whose key hashes to `key_hash`, with its rules.
pub async fn rules_by_key(db: &impl GenericClient, key_hash: &str) -> Result<Option<StoredRules>, StoreError> {
    let row = db
        .query_opt(
            &db.prepare_cached(&format!("SELECT {RULES_COLUMNS} FROM return_call_settings WHERE key_hash = $1"))
                .await?,
            &[&key_hash],
        )
        .await?;
    row.as_ref().map(stored_rules).transpose()
}

/// Saves the rules; a company saving them the first time gets the key given (`key_hash`,
/// `key_enc`), which later saves keep.
pub async fn put_rules(
    db: &impl GenericClient,
    tenant: &TenantId,
    rules: &ReturnCallSettings,
    key_hash: &str,
    key_enc: &str,
) -> Result<StoredRules, StoreError> {
    let row = db
        .query_one(
            &format!(
                "INSERT INTO return_call_settings (tenant_id, settings, key_hash, key_enc) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tenant_id) DO UPDATE SET settings = EXCLUDED.settings, updated_at = now()
                 RETURNING {RULES_COLUMNS}"
            ),
            &[&tenant.as_str(), &serde_json::to_value(rules).expect("rules serialise"), &key_hash, &key_enc],
        )
        .await?;
    stored_rules(&row)
}

/// Gives the company a new key (the old one stops working).
pub async fn rotate_key(
    db: &impl GenericClient,
    tenant: &TenantId,
    key_hash: &str,
    key_enc: &str,
) -> Result<Option<StoredRules>, StoreError> {
    let row = db
        .query_opt(
            &format!(
                "UPDATE return_call_settings SET key_hash = $2, key_enc = $3, updated_at = now()
                 WHERE tenant_id = $1 RETURNING {RULES_COLUMNS}"
            ),
            &[&tenant.as_str(), &key_hash, &key_enc],
        )
        .await?;
    row.as_ref().map(stored_rules).transpose()
}

/// What the decision needs to know about `caller` (E.164) at `tenant`, in one statement: the orders
/// with it among their clients' phones (active, or closed less than `window_hours` ago) with their
/// courier and the latest callback from that courier to it, and the active courier with that phone.
/// The latest callback is the first in `callbacks_by_number`'s order (ids are UUIDv7, so by time)
/// from that courier: a number called a hundred times is not read a hundred times.
///
/// Run with the plan kept for the connection, every row found by an index
/// (`super::in_keyed_transaction`): planned for each call it spent 0.29 ms planning a 0.05 ms
/// lookup. The orders are found by their phones alone, so that the one plan kept uses the phones'
/// index whatever the statistics said when it was made: one made right after a company's orders
/// were imported read all of that company's orders for every call (BENCHMARKS.md, "The write path").
pub async fn caller_facts(
    db: &super::Client,
    tenant: &TenantId,
    caller: &str,
    window_hours: u32,
) -> Result<(Vec<CandidateOrder>, Option<String>), StoreError> {
    let rows = super::in_keyed_transaction(
        db,
        &db.prepare_cached(
            "WITH called AS MATERIALIZED (
                 SELECT tenant_id, id, courier_id, state, updated_at FROM orders WHERE phones @> ARRAY[$2::text])
             SELECT o.id, c.id, c.phone, c.active, o.state = 'active', o.updated_at,
                 (SELECT cb.created_at FROM callbacks cb
                  WHERE cb.tenant_id = o.tenant_id AND cb.to_number = $2 AND cb.courier_id = c.id
                  ORDER BY cb.id DESC LIMIT 1),
                 NULL::text
             FROM called o JOIN couriers c ON c.tenant_id = o.tenant_id AND c.id = o.courier_id
             WHERE o.tenant_id = $1 AND (o.state = 'active' OR o.updated_at > now() - make_interval(hours => $3))
             UNION ALL
             SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, id FROM couriers
             WHERE tenant_id = $1 AND phone = $2 AND active",
        )
        .await?,
        &[&tenant.as_str(), &caller, &(window_hours as i32)],
    )
    .await?;
    let mut orders = Vec::new();
    let mut courier = None;
    for r in &rows {
        match r.get::<_, Option<String>>(7) {
            Some(id) => courier = Some(id),
            None => orders.push(CandidateOrder {
                order_id: r.get(0),
                courier_id: r.get(1),
                courier_phone: r.get(2),
                courier_active: r.get(3),
                active: r.get(4),
                updated_at: r.get(5),
                last_callback_at: r.get(6),
            }),
        }
    }
    Ok((orders, courier))
}

/// A return call as stored.
#[derive(Debug, Clone)]
pub struct ReturnCallRow {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub caller: Option<String>,
    pub did: Option<String>,
    pub kind: RouteKind,
    pub reason: RouteReason,
    pub route: String,
    pub order_id: Option<String>,
    pub courier_id: Option<String>,
    pub agi_uniqueid: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub sequence: i32,
    pub state: ReturnState,
}

const COLUMNS: &str = "id, tenant_id, caller, did, route_kind, route_reason, route, order_id, courier_id, \
    agi_uniqueid, status, failed_leg, reason, created_at, updated_at, answered_at, ended_at, talk_seconds, cdr, \
    last_sequence";

fn from_row(r: &Row) -> ReturnCallRow {
    ReturnCallRow {
        id: r.get(0),
        tenant_id: super::tenant_at(r, 1),
        caller: r.get(2),
        did: r.get(3),
        // The columns' CHECKs and the writers admit only these.
        kind: RouteKind::parse(r.get(4)).unwrap_or(RouteKind::Office),
        reason: RouteReason::parse(r.get(5)).unwrap_or(RouteReason::UnknownCaller),
        route: r.get(6),
        order_id: r.get(7),
        courier_id: r.get(8),
        agi_uniqueid: r.get(9),
        created_at: r.get(13),
        updated_at: r.get(14),
        sequence: r.get(19),
        state: ReturnState {
            status: ReturnStatus::parse(r.get(10)).unwrap_or(ReturnStatus::Office),
            failed_leg: r.get::<_, Option<&str>>(11).and_then(ReturnLeg::parse),
            reason: r.get::<_, Option<&str>>(12).and_then(Reason::parse),
            answered_at: r.get(15),
            ended_at: r.get(16),
            talk_seconds: r.get(17),
            cdr: r
                .get::<_, Option<serde_json::Value>>(18)
                .and_then(|v| serde_json::from_value::<CdrRecord>(v).ok())
                .map(Box::new),
        },
    }
}

/// Writes a return call just decided, followed by process `owner`, and its first event (`event`,
/// its data); how many webhook deliveries that queued.
pub async fn insert(db: &impl GenericClient, row: &ReturnCallRow, event: &str, owner: Uuid) -> Result<i64, StoreError> {
    let sql = format!(
        "WITH rc AS (
             INSERT INTO return_calls (id, tenant_id, caller, did, route_kind, route_reason, route, order_id,
                 courier_id, agi_uniqueid, status, created_at, updated_at, ended_at, last_sequence, owner)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13, 1, $15)
             RETURNING id, tenant_id),
         first_event AS (SELECT id AS subject_id, tenant_id, 1 AS sequence, $14::text AS data FROM rc),
         {}
         SELECT count(*) FROM deliveries_written",
        outbox_ctes("first_event", EventType::ReturnCallStatusChanged)
    );
    let result = db
        .query_one(
            &db.prepare_cached(&sql).await?,
            &[
                &row.id,
                &row.tenant_id.as_str(),
                &row.caller,
                &row.did,
                &row.kind.as_str(),
                &row.reason.as_str(),
                &row.route,
                &row.order_id,
                &row.courier_id,
                &row.agi_uniqueid,
                &row.state.status.as_str(),
                &row.created_at,
                &row.state.ended_at,
                &event,
                &owner,
            ],
        )
        .await?;
    Ok(result.get(0))
}

/// Moves a return call from `from` (with its event number `sequence`) to `to`, with the new
/// state's event when its status or reason changed; None when it had moved meanwhile.
pub async fn transition(
    db: &impl GenericClient,
    id: Uuid,
    sequence: i32,
    from: &ReturnState,
    to: &ReturnState,
    event: Option<&str>,
) -> Result<Option<i64>, StoreError> {
    let sql = format!(
        "WITH moved AS (
             UPDATE return_calls SET status = $2, failed_leg = $3, reason = $4, answered_at = $5, ended_at = $6,
                 talk_seconds = $7, cdr = $8, last_sequence = $9 + CASE WHEN $10::text IS NULL THEN 0 ELSE 1 END,
                 updated_at = now()
             WHERE id = $1 AND status = $11 AND last_sequence = $9
             RETURNING id, tenant_id),
         step_event AS (
             SELECT id AS subject_id, tenant_id, $9 + 1 AS sequence, $10::text AS data FROM moved
             WHERE $10::text IS NOT NULL),
         {}
         SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM deliveries_written)",
        outbox_ctes("step_event", EventType::ReturnCallStatusChanged)
    );
    let row = db
        .query_one(
            &db.prepare_cached(&sql).await?,
            &[
                &id,
                &to.status.as_str(),
                &to.failed_leg.map(ReturnLeg::as_str),
                &to.reason.map(Reason::as_str),
                &to.answered_at,
                &to.ended_at,
                &to.talk_seconds,
                &to.cdr.as_ref().map(|c| serde_json::to_value(c).expect("a CDR serialises")),
                &sequence,
                &event,
                &from.status.as_str(),
            ],
        )
        .await?;
    Ok((row.get::<_, i64>(0) == 1).then(|| row.get(1)))
}

pub async fn get(db: &impl GenericClient, tenant: &TenantId, id: Uuid) -> Result<Option<ReturnCallRow>, StoreError> {
    let row = db
        .query_opt(
            &format!("SELECT {COLUMNS} FROM return_calls WHERE tenant_id = $1 AND id = $2"),
            &[&tenant.as_str(), &id],
        )
        .await?;
    Ok(row.as_ref().map(from_row))
}

/// A return call in flight: followed by the Uniqueid of its inbound channel until it ends.
pub(super) const IN_FLIGHT: &str = "ended_at IS NULL AND agi_uniqueid IS NOT NULL";
/// How many columns [`COLUMNS`] names.
const COLUMN_COUNT: usize = 20;

/// Claims return calls in flight that nobody alive follows, for `o.me`, each with why nobody was
/// (the rule is `store::processes::claim`, as for callbacks).
pub async fn claim_orphans(
    db: &impl GenericClient,
    o: &super::processes::Orphans<'_>,
) -> Result<Vec<(ReturnCallRow, String)>, StoreError> {
    let rows = super::processes::claim(db, "return_calls", IN_FLIGHT, COLUMNS, o).await?;
    Ok(rows.iter().map(|r| (from_row(r), r.get(COLUMN_COUNT))).collect())
}

/// Gives up following `me`'s return calls in flight `because` (the process is stopping); their ids.
pub async fn release(db: &impl GenericClient, me: Uuid, because: &str) -> Result<Vec<Uuid>, StoreError> {
    super::processes::release(db, "return_calls", IN_FLIGHT, me, None, because).await
}

/// How many of the return calls `ids` are still in flight with no process following them.
pub async fn unclaimed(db: &impl GenericClient, ids: &[Uuid]) -> Result<i64, StoreError> {
    super::processes::unclaimed(db, "return_calls", IN_FLIGHT, ids).await
}

/// The company's return calls still being followed, by the Uniqueid of their inbound channel.
pub async fn in_flight(db: &impl GenericClient, tenant: &TenantId) -> Result<Vec<ReturnCallRow>, StoreError> {
    let rows = db
        .query(
            &format!(
                "SELECT {COLUMNS} FROM return_calls
                 WHERE tenant_id = $1 AND ended_at IS NULL AND agi_uniqueid IS NOT NULL"
            ),
            &[&tenant.as_str()],
        )
        .await?;
    Ok(rows.iter().map(from_row).collect())
}

#[derive(Debug, Default)]
pub struct ListFilter {
    pub caller: Option<String>,
    pub courier_id: Option<String>,
    pub order_id: Option<String>,
    pub status: Option<ReturnStatus>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// Newest first.
pub async fn list(
    db: &impl GenericClient,
    tenant: &TenantId,
    f: &ListFilter,
) -> Result<Vec<ReturnCallRow>, StoreError> {
    let rows = db
        .query(
            &format!(
                "SELECT {COLUMNS} FROM return_calls WHERE tenant_id = $1
                   AND ($2::text IS NULL OR caller = $2)
                   AND ($3::text IS NULL OR courier_id = $3)
                   AND ($4::text IS NULL OR order_id = $4)
                   AND ($5::text IS NULL OR status = $5)
                   AND ($6::timestamptz IS NULL OR created_at >= $6)
                   AND ($7::timestamptz IS NULL OR created_at < $7)
                   AND ($8::uuid IS NULL OR id < $8)
                 ORDER BY id DESC LIMIT $9"
            ),
            &[
                &tenant.as_str(),
                &f.caller,
                &f.courier_id,
                &f.order_id,
                &f.status.map(ReturnStatus::as_str),
                &f.since,
                &f.until,
                &f.before,
                &f.limit,
            ],
        )
        .await?;
    Ok(rows.iter().map(from_row).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn column_count_counts_the_columns() {
        assert_eq!(super::COLUMNS.split(", ").count(), super::COLUMN_COUNT);
    }
}
