//! Callback attempts; their history is their events (`store::events`).

use std::sync::OnceLock;

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::events::outbox_ctes;
use super::idempotency::{claim_sql, ClaimSql, IdempotencyClaim};
use super::StoreError;
use crate::domain::callback::{CallState, Confirming, Leg, Reason, Status, Target};
use crate::domain::company::TenantId;
use crate::domain::event::EventType;
use crate::domain::registry::Order;

/// One attempt as stored.
#[derive(Debug, Clone)]
pub struct CallbackRow {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub courier_id: String,
    pub target: Target,
    pub order_id: Option<String>,
    pub to_number: Option<String>,
    pub courier_number: Option<String>,
    pub detail: Option<String>,
    pub action_id: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// The number of its last event (`callback.status_changed`): one per status it passed through.
    pub sequence: i32,
    pub state: CallState,
}

const COLUMNS: &str = "id, tenant_id, courier_id, target, order_id, to_number, courier_number, status, failed_leg, \
    reason, hangup_cause, detail, action_id, courier_channel, created_at, updated_at, courier_answered_at, \
    connected_at, ended_at, talk_seconds, cdr_billable_seconds, cdr, last_sequence, confirmation";
/// How many columns [`COLUMNS`] names (what a query adds comes after them).
const COLUMN_COUNT: usize = 24;

fn leg(s: Option<String>) -> Option<Leg> {
    match s.as_deref() {
        Some("courier") => Some(Leg::Courier),
        Some("client") => Some(Leg::Client),
        _ => None,
    }
}

fn from_row(r: &Row) -> CallbackRow {
    let status: String = r.get(7);
    CallbackRow {
        id: r.get(0),
        tenant_id: super::tenant_at(r, 1),
        courier_id: r.get(2),
        // The column's CHECK admits only the targets there are.
        target: Target::parse(r.get(3)).unwrap_or(Target::Client),
        order_id: r.get(4),
        to_number: r.get(5),
        courier_number: r.get(6),
        detail: r.get(11),
        action_id: r.get(12),
        created_at: r.get(14),
        updated_at: r.get(15),
        sequence: r.get(22),
        state: CallState {
            status: Status::parse(&status).unwrap_or(Status::Unknown),
            failed_leg: leg(r.get(8)),
            reason: r.get::<_, Option<String>>(9).as_deref().and_then(Reason::parse),
            hangup_cause: r.get(10),
            courier_channel: r.get(13),
            courier_answered_at: r.get(16),
            connected_at: r.get(17),
            ended_at: r.get(18),
            talk_seconds: r.get(19),
            cdr_billable_seconds: r.get(20),
            cdr: r
                .get::<_, Option<serde_json::Value>>(21)
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default(),
            // A value this version does not know (written by a newer one) reads as none asked.
            confirmation: r.get::<_, Option<String>>(23).as_deref().and_then(Confirming::parse),
            reason_provisional: false,
        },
    }
}

pub struct NewCallback<'a> {
    /// The attempt as it is to be stored: `queued`, or `refused` with its reason and detail, its
    /// first event numbered 1.
    pub row: &'a CallbackRow,
    /// That first event's data (the row as the API shows it).
    pub event: &'a str,
    /// The request's `Idempotency-Key`, claimed by the same statement: the attempt is written only
    /// if the key is free.
    pub claim: Option<&'a IdempotencyClaim<'a>>,
    /// The registry facts the tap was decided on (None for a test call: there are none).
    pub decided_on: Option<DecidedOn<'a>>,
    /// The process that follows the call (None: any process may claim it).
    pub owner: Option<Uuid>,
}

/// What a tap was checked against, possibly read a while ago: the attempt is written only if the
/// stored courier and order still say exactly this, so a decision made on stale facts is never
/// written (the caller reads them again and decides anew).
#[derive(Clone, Copy)]
pub struct DecidedOn<'a> {
    /// The phone of the courier, who was active.
    pub courier_phone: &'a str,
    /// The order the request named (`NewCallback::order_id`), None if it did not exist.
    pub order: Option<&'a Order>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Written, with how many webhook deliveries its event queued.
    Written { deliveries: i64 },
    /// The Idempotency-Key is taken: nothing was written.
    KeyTaken,
    /// The courier or the order changed since they were read: nothing was written.
    Stale,
}

/// Writes a new attempt (before the PBX is contacted) and its first event, claiming the request's
/// idempotency key and checking the facts it was decided on: [`inserts`] of one.
pub async fn insert(db: &deadpool_postgres::Client, new: &NewCallback<'_>) -> Result<Inserted, StoreError> {
    let inserted = inserts(db, std::slice::from_ref(new)).await?;
    Ok(inserted.into_iter().next().expect("one answer for each attempt"))
}

/// Writes new attempts, each with its first event, claiming each request's idempotency key and
/// checking the facts each was decided on, in one statement (one round trip, one commit, atomic;
/// see [`super::idempotency`] for the claim's rules). Each [`Inserted`] is for the attempt at the
/// same place in `news`. A statement per attempt cost PostgreSQL more in its setup than in its
/// writes (BENCHMARKS.md, "The write path"). Each tenant row exists: its courier does (or, for a
/// test call, the caller made sure). When the statement fails nothing is written (unless only its
/// answer was lost): two attempts claiming one free key are such a failure, so the caller may write
/// them one by one.
pub async fn inserts(db: &deadpool_postgres::Client, news: &[NewCallback<'_>]) -> Result<Vec<Inserted>, StoreError> {
    if news.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<&CallbackRow> = news.iter().map(|n| n.row).collect();
    let orders: Vec<Option<&Order>> = news.iter().map(|n| n.decided_on.and_then(|d| d.order)).collect();
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let tenants: Vec<&str> = rows.iter().map(|r| r.tenant_id.as_str()).collect();
    let couriers: Vec<&str> = rows.iter().map(|r| r.courier_id.as_str()).collect();
    let targets: Vec<&str> = rows.iter().map(|r| r.target.as_str()).collect();
    let order_ids: Vec<Option<&str>> = rows.iter().map(|r| r.order_id.as_deref()).collect();
    let to_numbers: Vec<Option<&str>> = rows.iter().map(|r| r.to_number.as_deref()).collect();
    let courier_numbers: Vec<Option<&str>> = rows.iter().map(|r| r.courier_number.as_deref()).collect();
    let statuses: Vec<&str> = rows.iter().map(|r| r.state.status.as_str()).collect();
    let reasons: Vec<Option<&str>> = rows.iter().map(|r| r.state.reason.map(Reason::as_str)).collect();
    let details: Vec<Option<&str>> = rows.iter().map(|r| r.detail.as_deref()).collect();
    let keys: Vec<Option<&str>> = news.iter().map(|n| n.claim.map(|c| c.key)).collect();
    let request_hashes: Vec<Option<&str>> = news.iter().map(|n| n.claim.map(|c| c.request_hash)).collect();
    let courier_phones: Vec<Option<&str>> = news.iter().map(|n| n.decided_on.map(|d| d.courier_phone)).collect();
    let order_found: Vec<bool> = orders.iter().map(Option::is_some).collect();
    let order_states: Vec<Option<&str>> = orders.iter().map(|o| o.map(|o| o.state.as_str())).collect();
    let order_couriers: Vec<Option<&str>> = orders.iter().map(|o| o.and_then(|o| o.courier_id.as_deref())).collect();
    // An array of arrays of any lengths is not a PostgreSQL array: each order's phones go as JSON.
    let order_phones: Vec<Option<serde_json::Value>> =
        orders.iter().map(|o| o.map(|o| serde_json::json!(o.phones))).collect();
    let created_at: Vec<OffsetDateTime> = rows.iter().map(|r| r.created_at).collect();
    let ended_at: Vec<Option<OffsetDateTime>> = rows.iter().map(|r| r.state.ended_at).collect();
    let events: Vec<&str> = news.iter().map(|n| n.event).collect();
    let owners: Vec<Option<Uuid>> = news.iter().map(|n| n.owner).collect();
    let confirmations: Vec<Option<&str>> = rows.iter().map(|r| r.state.confirmation.map(Confirming::as_str)).collect();
    // Each attempt's values, column by column (`INSERT_COLUMNS`' order): as arrays for a batch, and
    // the first of each for one attempt alone.
    macro_rules! columns {
        ($($column:ident),*) => {
            (
                [$(&$column as &(dyn tokio_postgres::types::ToSql + Sync)),*],
                [$(&$column[0] as &(dyn tokio_postgres::types::ToSql + Sync)),*],
            )
        };
    }
    let (arrays, firsts) = columns!(
        ids,
        tenants,
        couriers,
        targets,
        order_ids,
        to_numbers,
        courier_numbers,
        statuses,
        reasons,
        details,
        keys,
        request_hashes,
        courier_phones,
        order_found,
        order_states,
        order_couriers,
        order_phones,
        created_at,
        ended_at,
        events,
        owners,
        confirmations
    );
    // One attempt alone (a tap when few come) has a statement of its own, with plain values: its
    // plan for one row is the one PostgreSQL keeps for the connection by itself, so it runs without
    // the batch's settings, and the values cost less to send and read than arrays do.
    // Written once: they are on every tap's path.
    static SQL: OnceLock<[String; 2]> = OnceLock::new();
    let [alone_sql, batch_sql] = SQL.get_or_init(|| [inserts_sql(false), inserts_sql(true)]);
    let answers = match news.len() {
        1 => db.query(&db.prepare_cached(alone_sql).await?, &firsts).await?,
        _ => super::in_keyed_transaction(db, &db.prepare_cached(batch_sql).await?, &arrays).await?,
    };
    let by_id: std::collections::HashMap<Uuid, Inserted> = answers
        .iter()
        .map(|r| {
            let inserted = if r.get::<_, bool>(2) {
                Inserted::Written { deliveries: r.get(3) }
            } else if r.get::<_, bool>(1) {
                Inserted::KeyTaken
            } else {
                Inserted::Stale
            };
            (r.get(0), inserted)
        })
        .collect();
    // Every attempt has its row of the answer (`fresh` has one for each).
    Ok(ids.iter().map(|id| by_id.get(id).copied().unwrap_or(Inserted::Stale)).collect())
}

/// The attempt's columns as [`inserts`] sends them, with their types.
const INSERT_COLUMNS: [(&str, &str); 22] = [
    ("id", "uuid"),
    ("tenant_id", "text"),
    ("courier_id", "text"),
    ("target", "text"),
    ("order_id", "text"),
    ("to_number", "text"),
    ("courier_number", "text"),
    ("status", "text"),
    ("reason", "text"),
    ("detail", "text"),
    ("key", "text"),
    ("request_hash", "text"),
    ("courier_phone", "text"),
    ("order_found", "boolean"),
    ("order_state", "text"),
    ("order_courier", "text"),
    ("order_phones", "jsonb"),
    ("created_at", "timestamptz"),
    ("ended_at", "timestamptz"),
    ("event", "text"),
    ("owner", "uuid"),
    ("confirmation", "text"),
];

/// The statement of [`inserts`]: for each attempt, its id, whether the facts it was decided on
/// still hold, whether it was written, and how many webhook deliveries its event queued. `batch`:
/// each column an array, one element for each attempt; else one attempt's values.
fn inserts_sql(batch: bool) -> String {
    let placeholders = INSERT_COLUMNS.iter().enumerate();
    let attempts = match batch {
        true => format!(
            "SELECT * FROM unnest({}) AS i({})",
            placeholders.map(|(n, (_, kind))| format!("${}::{kind}[]", n + 1)).collect::<Vec<_>>().join(", "),
            INSERT_COLUMNS.map(|(name, _)| name).join(", ")
        ),
        false => format!(
            "SELECT {}",
            placeholders
                .map(|(n, (name, kind))| format!("${}::{kind} AS {name}", n + 1))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!(
        "WITH i AS ({attempts}),
         fresh AS (
             SELECT i.*, i.courier_phone IS NULL OR (
                 EXISTS (SELECT FROM couriers c WHERE c.tenant_id = i.tenant_id AND c.id = i.courier_id
                                                  AND c.active AND c.phone = i.courier_phone)
                 AND (i.order_id IS NULL OR CASE WHEN i.order_found
                     THEN EXISTS (SELECT FROM orders o WHERE o.tenant_id = i.tenant_id AND o.id = i.order_id
                                    AND o.state = i.order_state AND o.courier_id IS NOT DISTINCT FROM i.order_courier
                                    AND to_jsonb(o.phones) = i.order_phones)
                     ELSE NOT EXISTS (SELECT FROM orders o WHERE o.tenant_id = i.tenant_id AND o.id = i.order_id)
                     END)) AS ok
             FROM i),
         claim AS ({}),
         cb AS (
             INSERT INTO callbacks (id, tenant_id, courier_id, target, order_id, to_number, courier_number,
                 status, reason, detail, created_at, updated_at, ended_at, last_sequence, owner, confirmation)
             SELECT f.id, f.tenant_id, f.courier_id, f.target, f.order_id, f.to_number, f.courier_number, f.status,
                 f.reason, f.detail, f.created_at, f.created_at, f.ended_at, 1, f.owner, f.confirmation
             FROM fresh f
             WHERE f.ok AND (f.key IS NULL OR f.id IN (SELECT callback_id FROM claim))
             RETURNING id, tenant_id),
         first_event AS (
             SELECT cb.id AS subject_id, cb.tenant_id, 1 AS sequence, f.event AS data FROM cb JOIN fresh f ON f.id = cb.id),
         {}
         SELECT f.id, f.ok, EXISTS (SELECT FROM cb WHERE cb.id = f.id),
                (SELECT count(*) FROM deliveries_written d WHERE d.subject_id = f.id)
         FROM fresh f",
        claim_sql(&ClaimSql {
            tenant: "f.tenant_id",
            courier: "f.courier_id",
            key: "f.key",
            request_hash: "f.request_hash",
            callback_id: "f.id",
            from: "FROM fresh f",
            order: "ORDER BY f.tenant_id, f.courier_id, f.key",
            when: "f.ok",
        }),
        outbox_ctes("first_event", EventType::CallbackStatusChanged),
    )
}

pub async fn get(db: &impl GenericClient, tenant: &TenantId, id: Uuid) -> Result<Option<CallbackRow>, StoreError> {
    let row = db
        .query_opt(
            &format!("SELECT {COLUMNS} FROM callbacks WHERE tenant_id = $1 AND id = $2"),
            &[&tenant.as_str(), &id],
        )
        .await?;
    Ok(row.as_ref().map(from_row))
}

/// Loads by id alone (the tracker knows the id from the ChannelId, and the tenant from its PBX).
pub async fn get_any(db: &deadpool_postgres::Client, id: Uuid) -> Result<Option<CallbackRow>, StoreError> {
    let statement = db.prepare_cached(&format!("SELECT {COLUMNS} FROM callbacks WHERE id = $1")).await?;
    let row = db.query_opt(&statement, &[&id]).await?;
    Ok(row.as_ref().map(from_row))
}

#[derive(Debug, Default)]
pub struct ListFilter {
    pub order_id: Option<String>,
    pub courier_id: Option<String>,
    pub status: Option<Status>,
    pub target: Option<Target>,
    pub failed_leg: Option<Leg>,
    pub reason: Option<Reason>,
    /// The called number, E.164 (the office extension for calls to the office).
    pub to_number: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    /// Only ids older than this (ids are uuid v7, so time-ordered).
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// Newest first.
pub async fn list(db: &impl GenericClient, tenant: &TenantId, f: &ListFilter) -> Result<Vec<CallbackRow>, StoreError> {
    let rows = db
        .query(
            &format!(
                "SELECT {COLUMNS} FROM callbacks WHERE tenant_id = $1
                   AND ($2::text IS NULL OR order_id = $2)
                   AND ($3::text IS NULL OR courier_id = $3)
                   AND ($4::text IS NULL OR status = $4)
                   AND ($5::timestamptz IS NULL OR created_at >= $5)
                   AND ($6::timestamptz IS NULL OR created_at < $6)
                   AND ($7::uuid IS NULL OR id < $7)
                   AND ($9::text IS NULL OR target = $9)
                   AND ($10::text IS NULL OR failed_leg = $10)
                   AND ($11::text IS NULL OR reason = $11)
                   AND ($12::text IS NULL OR to_number = $12)
                 ORDER BY id DESC LIMIT $8"
            ),
            &[
                &tenant.as_str(),
                &f.order_id,
                &f.courier_id,
                &f.status.map(Status::as_str),
                &f.since,
                &f.until,
                &f.before,
                &f.limit,
                &f.target.map(Target::as_str),
                &f.failed_leg.map(Leg::as_str),
                &f.reason.map(Reason::as_str),
                &f.to_number,
            ],
        )
        .await?;
    Ok(rows.iter().map(from_row).collect())
}

/// One status (or reason) change and what caused it, written as one event: the events are the
/// attempt's history. (Releases before this one also wrote each step to `callback_transitions`;
/// that table is no longer written, and is kept only while such a release may still run.)
pub struct Step {
    pub from: Status,
    pub to: Status,
    /// What caused it, for the log (the fact as read from the PBX).
    pub cause: String,
    /// The event's data: the callback as the API shows it after this step (numbered after the
    /// callback's last event and the steps before this one).
    pub event: String,
}

/// One attempt's move from `from` to `to`, with the changes on the way (`steps`, several when a
/// burst of events was applied at once), each written as an event.
pub struct Transition<'a> {
    pub id: Uuid,
    /// The number of the attempt's last event, as read with `from`.
    pub sequence: i32,
    pub from: &'a CallState,
    pub to: &'a CallState,
    pub steps: &'a [Step],
    pub detail: Option<&'a str>,
    pub action_id: Option<&'a str>,
}

/// What writing a [`Transition`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// Written, with how many webhook deliveries its events queued.
    Yes { deliveries: i64 },
    /// The stored attempt was no longer as read (a concurrent writer won): nothing was written.
    No,
}

/// Moves an attempt from `from` to `to` if nobody moved it meanwhile and records its steps as
/// events: one statement, so one round trip and atomic.
pub async fn transition(db: &deadpool_postgres::Client, t: &Transition<'_>) -> Result<Moved, StoreError> {
    let moved = transitions(db, std::slice::from_ref(t)).await?;
    Ok(moved.into_iter().next().unwrap_or(Moved::No))
}

/// Several attempts' transitions in one statement: one execution and one commit for the batch,
/// where a statement per call cost PostgreSQL its setup each time (BENCHMARKS.md, "The write
/// path"), run as `super::in_keyed_transaction` says. Each
/// [`Moved`] is [`transition`]'s, in `ts`' order; a call that was moved meanwhile is left alone.
/// When the statement fails nothing is written and the error is returned: the caller may write
/// them one by one to find the one that fails. The calls must be distinct.
pub async fn transitions(db: &deadpool_postgres::Client, ts: &[Transition<'_>]) -> Result<Vec<Moved>, StoreError> {
    if ts.is_empty() {
        return Ok(Vec::new());
    }
    let to: Vec<&CallState> = ts.iter().map(|t| t.to).collect();
    let from_status: Vec<&str> = ts.iter().map(|t| t.from.status.as_str()).collect();
    let ids: Vec<Uuid> = ts.iter().map(|t| t.id).collect();
    let status: Vec<&str> = to.iter().map(|s| s.status.as_str()).collect();
    let failed_leg: Vec<Option<&str>> = to.iter().map(|s| s.failed_leg.map(Leg::as_str)).collect();
    let reason: Vec<Option<&str>> = to.iter().map(|s| s.reason.map(Reason::as_str)).collect();
    let hangup_cause: Vec<Option<i32>> = to.iter().map(|s| s.hangup_cause).collect();
    let courier_channel: Vec<Option<&str>> = to.iter().map(|s| s.courier_channel.as_deref()).collect();
    let courier_answered_at: Vec<Option<OffsetDateTime>> = to.iter().map(|s| s.courier_answered_at).collect();
    let connected_at: Vec<Option<OffsetDateTime>> = to.iter().map(|s| s.connected_at).collect();
    let ended_at: Vec<Option<OffsetDateTime>> = to.iter().map(|s| s.ended_at).collect();
    let talk_seconds: Vec<Option<i32>> = to.iter().map(|s| s.talk_seconds).collect();
    let cdr_billable_seconds: Vec<Option<i32>> = to.iter().map(|s| s.cdr_billable_seconds).collect();
    let detail: Vec<Option<&str>> = ts.iter().map(|t| t.detail).collect();
    let action_id: Vec<Option<&str>> = ts.iter().map(|t| t.action_id).collect();
    let cdr: Vec<Option<serde_json::Value>> = to
        .iter()
        .map(|s| (!s.cdr.is_empty()).then(|| serde_json::to_value(&s.cdr).expect("a CDR serialises")))
        .collect();
    let sequence: Vec<i32> = ts.iter().map(|t| t.sequence).collect();
    let confirmation: Vec<Option<&str>> = to.iter().map(|s| s.confirmation.map(Confirming::as_str)).collect();
    // The steps' events, flattened: (call, its number within the transition, data).
    let steps = ts.iter().flat_map(|t| t.steps.iter().enumerate().map(move |(n, step)| (t.id, n as i32 + 1, step)));
    let (step_ids, step_numbers, step_events): (Vec<Uuid>, Vec<i32>, Vec<&str>) =
        steps.fold(Default::default(), |(mut ids, mut numbers, mut events), (id, n, step)| {
            ids.push(id);
            numbers.push(n);
            events.push(step.event.as_str());
            (ids, numbers, events)
        });
    let step_counts: Vec<i32> = ts.iter().map(|t| t.steps.len() as i32).collect();
    // Written once: it is on the path of every batch the tracker writes.
    static SQL: OnceLock<String> = OnceLock::new();
    let statement = db.prepare_cached(SQL.get_or_init(transitions_sql)).await?;
    let rows = super::in_keyed_transaction(
        db,
        &statement,
        &[
            &ids,
            &status,
            &failed_leg,
            &reason,
            &hangup_cause,
            &courier_channel,
            &courier_answered_at,
            &connected_at,
            &ended_at,
            &talk_seconds,
            &cdr_billable_seconds,
            &from_status,
            &detail,
            &action_id,
            &cdr,
            &sequence,
            &step_counts,
            &confirmation,
            &step_ids,
            &step_numbers,
            &step_events,
        ],
    )
    .await?;
    let moved: std::collections::HashMap<Uuid, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(ids.iter().map(|id| moved.get(id).map_or(Moved::No, |&deliveries| Moved::Yes { deliveries })).collect())
}

/// The statement of [`transitions`]: each update is guarded by the status and the event number
/// read, so of two writers that read the same attempt one moves it and the other is told to read
/// again. It returns the calls moved, each with the webhook deliveries its events queued.
/// Its plan finds each row by the primary key (`super::in_keyed_transaction`).
fn transitions_sql() -> String {
    format!(
        "WITH i AS (
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[],
                                  $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::int[], $11::int[],
                                  $12::text[], $13::text[], $14::text[], $15::jsonb[], $16::int[], $17::int[],
                                  $18::text[])
                 AS i(id, status, failed_leg, reason, hangup_cause, courier_channel, courier_answered_at,
                      connected_at, ended_at, talk_seconds, cdr_billable_seconds, from_status, detail, action_id,
                      cdr, sequence, steps, confirmation)),
         moved AS (
             UPDATE callbacks c SET status = i.status, failed_leg = i.failed_leg, reason = i.reason,
                 hangup_cause = i.hangup_cause, courier_channel = i.courier_channel,
                 courier_answered_at = i.courier_answered_at, connected_at = i.connected_at, ended_at = i.ended_at,
                 talk_seconds = i.talk_seconds, cdr_billable_seconds = i.cdr_billable_seconds,
                 detail = COALESCE(i.detail, c.detail), action_id = COALESCE(i.action_id, c.action_id), cdr = i.cdr,
                 last_sequence = i.sequence + i.steps, confirmation = i.confirmation, updated_at = now()
             FROM i
             WHERE c.id = i.id AND c.status = i.from_status AND c.last_sequence = i.sequence
             RETURNING c.id, c.tenant_id, i.sequence),
         step_events AS (
             SELECT m.id AS subject_id, m.tenant_id, m.sequence + e.n AS sequence, e.data
             FROM moved m JOIN unnest($19::uuid[], $20::int[], $21::text[]) AS e(id, n, data) ON e.id = m.id),
         {}
         SELECT m.id, (SELECT count(*) FROM deliveries_written d WHERE d.subject_id = m.id) FROM moved m",
        outbox_ctes("step_events", EventType::CallbackStatusChanged)
    )
}

/// A call in flight: what a process follows, and what is taken over when it stops.
pub(super) const IN_FLIGHT: &str =
    "ended_at IS NULL AND status IN ('queued', 'ringing_courier', 'ringing_client', 'connected')";

/// Claims calls in flight that nobody alive follows (their process died or released them), for
/// `o.me` (the rule is `store::processes::claim`), each with why nobody was following it.
pub async fn claim_orphans(
    db: &impl GenericClient,
    o: &super::processes::Orphans<'_>,
) -> Result<Vec<(CallbackRow, String)>, StoreError> {
    let rows = super::processes::claim(db, "callbacks", IN_FLIGHT, COLUMNS, o).await?;
    Ok(rows.iter().map(|r| (from_row(r), r.get(COLUMN_COUNT))).collect())
}

/// Gives up following calls in flight (all of `me`'s, or those among `ids`) `because`: they are
/// orphaned now, for another process (or this one, later) to claim. The calls released.
pub async fn release(
    db: &impl GenericClient,
    me: Uuid,
    ids: Option<&[Uuid]>,
    because: &str,
) -> Result<Vec<Uuid>, StoreError> {
    super::processes::release(db, "callbacks", IN_FLIGHT, me, ids, because).await
}

/// How many of `ids` are still in flight and followed by no process.
pub async fn unclaimed(db: &impl GenericClient, ids: &[Uuid]) -> Result<i64, StoreError> {
    super::processes::unclaimed(db, "callbacks", IN_FLIGHT, ids).await
}

/// The companies with a PBX that placed a callback since `since` or have one in flight: those a
/// starting process logs in to before it takes requests. Callback ids are UUIDv7, so "since" is
/// an id range on `callbacks_by_tenant`.
pub async fn active_tenants(db: &impl GenericClient, since: OffsetDateTime) -> Result<Vec<TenantId>, StoreError> {
    // The least UUIDv7 of that millisecond.
    let millis = u64::try_from(since.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let floor = uuid::Builder::from_unix_timestamp_millis(millis, &[0; 10]).into_uuid();
    let rows = db
        .query(
            &db.prepare_cached(
                "SELECT s.tenant_id FROM pbx_settings s \
                 WHERE EXISTS (SELECT FROM callbacks c WHERE c.tenant_id = s.tenant_id AND c.id >= $1) \
                    OR EXISTS (SELECT FROM callbacks c WHERE c.tenant_id = s.tenant_id AND c.ended_at IS NULL)",
            )
            .await?,
            &[&floor],
        )
        .await?;
    Ok(rows.iter().map(|r| super::tenant_at(r, 0)).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn column_count_counts_the_columns() {
        assert_eq!(super::COLUMNS.split(", ").count(), super::COLUMN_COUNT);
    }
}
