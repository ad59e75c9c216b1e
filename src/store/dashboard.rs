//! The dashboard's counts (migrations/V16__dashboard.sql). Hours whose calls have all ended are
//! rolled up into `callback_hours` and `courier_days` when the dashboard is read; what came after
//! is counted from `callbacks` itself, through its `(tenant_id, id)` index: ids are UUIDv7, so a
//! time is an id range. A look at a company with a million calls reads a few thousand rows.

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;
use time::{Duration, OffsetDateTime};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::StoreError;
use crate::domain::company::TenantId;
use crate::domain::dashboard::{CourierTally, Outcome, Tally, STEPS_BEFORE_ORIGINATE};

/// The dashboard looks back this far: hourly for a day, daily for 30 days, couriers over 7.
pub const DAYS: i64 = 30;
pub const COURIER_DAYS: i64 = 7;
/// A call still going after this long no longer holds the roll-up back; it is counted as it stands.
const LONGEST_CALL: Duration = Duration::days(1);

/// The smallest UUIDv7 made at `at` or later: ids of calls created before `at` sort below it.
fn id_at(at: OffsetDateTime) -> Uuid {
    let ms = (at.unix_timestamp_nanos() / 1_000_000).max(0) as u128;
    Uuid::from_u128(ms << 80)
}

/// Whether PostgreSQL knows this time zone name (`Europe/Moscow`, `UTC`, ...).
pub async fn time_zone_known(db: &impl GenericClient, tz: &str) -> Result<bool, StoreError> {
    match db.query_one(&db.prepare_cached("SELECT now() AT TIME ZONE $1").await?, &[&tz]).await {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some(&SqlState::INVALID_PARAMETER_VALUE) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Where the counting stands after [`roll_up`]: rows before these instants are in the roll-up tables.
#[derive(Debug, Clone, Copy)]
pub struct Rolled {
    pub now: OffsetDateTime,
    pub hours_until: OffsetDateTime,
    pub days_until: OffsetDateTime,
}

/// Rolls up the company's hours (and days) whose calls have all ended, once: concurrent readers of
/// one company wait for each other, and a later one finds the work done.
pub async fn roll_up(db: &mut deadpool_postgres::Client, tenant: &TenantId) -> Result<Rolled, StoreError> {
    let tx = db.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('dashboard:' || $1))", &[&tenant.as_str()]).await?;
    let row = tx
        .query_one(
            &tx.prepare_cached(
                "SELECT now(), (SELECT min(created_at) FROM callbacks WHERE tenant_id = $1 AND ended_at IS NULL), \
                 r.hours_until, r.days_until \
                 FROM (SELECT 1) one LEFT JOIN dashboard_rollups r ON r.tenant_id = $1",
            )
            .await?,
            &[&tenant.as_str()],
        )
        .await?;
    let now: OffsetDateTime = row.get(0);
    let oldest_going: Option<OffsetDateTime> = row.get(1);
    // Hours end on the hour; an hour is rolled once it is over and no call of it is still going.
    let mut frontier = truncate(now - Duration::hours(1), Duration::hours(1));
    if let Some(going) = oldest_going.filter(|at| *at > now - LONGEST_CALL) {
        frontier = frontier.min(truncate(going, Duration::hours(1)));
    }
    let day_frontier = truncate(frontier, Duration::days(1));
    let hours_floor = truncate(now - Duration::days(DAYS + 1), Duration::hours(1));
    let days_floor = truncate(now - Duration::days(COURIER_DAYS + 1), Duration::days(1));
    let hours_from = row.get::<_, Option<OffsetDateTime>>(2).map_or(hours_floor, |at| at.max(hours_floor));
    let days_from = row.get::<_, Option<OffsetDateTime>>(3).map_or(days_floor, |at| at.max(days_floor));
    if frontier > hours_from {
        tx.execute(
            &tx.prepare_cached(
                "INSERT INTO callback_hours \
                 SELECT $1, date_trunc('hour', created_at), target, status, coalesce(failed_leg, ''), \
                        coalesce(reason, ''), count(*), count(connected_at) \
                 FROM callbacks WHERE tenant_id = $1 AND id >= $2 AND id < $3 AND target <> 'test' \
                 GROUP BY 2, 3, 4, 5, 6 \
                 ON CONFLICT (tenant_id, hour, target, status, failed_leg, reason) DO UPDATE \
                 SET calls = callback_hours.calls + excluded.calls, \
                     reached_client = callback_hours.reached_client + excluded.reached_client",
            )
            .await?,
            &[&tenant.as_str(), &id_at(hours_from), &id_at(frontier)],
        )
        .await?;
    }
    if day_frontier > days_from {
        tx.execute(
            &tx.prepare_cached(
                "INSERT INTO courier_days \
                 SELECT $1, (created_at AT TIME ZONE 'UTC')::date, courier_id, coalesce(failed_leg, ''), \
                        coalesce(reason, ''), count(*) \
                 FROM callbacks WHERE tenant_id = $1 AND id >= $2 AND id < $3 AND target <> 'test' \
                 GROUP BY 2, 3, 4, 5 \
                 ON CONFLICT (tenant_id, day, courier_id, failed_leg, reason) DO UPDATE \
                 SET calls = courier_days.calls + excluded.calls",
            )
            .await?,
            &[&tenant.as_str(), &id_at(days_from), &id_at(day_frontier)],
        )
        .await?;
    }
    let hours_until = frontier.max(hours_from);
    let days_until = day_frontier.max(days_from);
    let stored = (row.get::<_, Option<OffsetDateTime>>(2), row.get::<_, Option<OffsetDateTime>>(3));
    // Most reads find the hour already rolled up: they write nothing.
    if stored == (Some(hours_until), Some(days_until)) {
        tx.commit().await?;
        return Ok(Rolled { now, hours_until, days_until });
    }
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO dashboard_rollups (tenant_id, hours_until, days_until) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET hours_until = $2, days_until = $3",
        )
        .await?,
        &[&tenant.as_str(), &hours_until, &days_until],
    )
    .await?;
    // What the dashboard no longer shows.
    tx.execute(
        &tx.prepare_cached("DELETE FROM callback_hours WHERE tenant_id = $1 AND hour < $2").await?,
        &[&tenant.as_str(), &(now - Duration::days(DAYS + 2))],
    )
    .await?;
    tx.execute(
        &tx.prepare_cached("DELETE FROM courier_days WHERE tenant_id = $1 AND day < ($2 AT TIME ZONE 'UTC')::date")
            .await?,
        &[&tenant.as_str(), &(now - Duration::days(COURIER_DAYS + 2))],
    )
    .await?;
    tx.commit().await?;
    Ok(Rolled { now, hours_until, days_until })
}

/// `at` rounded down to a whole `step` (an hour or a day, UTC).
pub fn truncate(at: OffsetDateTime, step: Duration) -> OffsetDateTime {
    let secs = at.unix_timestamp();
    let step = step.whole_seconds();
    OffsetDateTime::from_unix_timestamp(secs - secs.rem_euclid(step)).expect("a time the database gave")
}

/// Calls per bucket since `since`: hourly (`by_day` false, the buckets are UTC hours) or per day of
/// the time zone `tz` (each bucket the day's local midnight). Roll-up and live rows together.
pub async fn tallies(
    db: &impl GenericClient,
    tenant: &TenantId,
    rolled: &Rolled,
    since: OffsetDateTime,
    tz: &str,
    by_day: bool,
) -> Result<BTreeMap<OffsetDateTime, Tally>, StoreError> {
    let bucket = if by_day { "date_trunc('day', at AT TIME ZONE $5) AT TIME ZONE $5" } else { "at" };
    let sql = format!(
        "SELECT {bucket}, status, failed_leg, sum(calls)::bigint, sum(reached)::bigint FROM ( \
           SELECT hour AS at, status, failed_leg, calls, reached_client AS reached FROM callback_hours \
           WHERE tenant_id = $1 AND hour >= $2 AND hour < $3 \
           UNION ALL \
           SELECT date_trunc('hour', created_at), status, coalesce(failed_leg, ''), 1, \
                  (connected_at IS NOT NULL)::int \
           FROM callbacks WHERE tenant_id = $1 AND id >= $4 AND target <> 'test' AND created_at >= $2 \
         ) counted WHERE $5::text IS NOT NULL GROUP BY 1, 2, 3"
    );
    let rows = db
        .query(
            &db.prepare_cached(&sql).await?,
            &[&tenant.as_str(), &since, &rolled.hours_until, &id_at(rolled.hours_until.min(rolled.now)), &tz],
        )
        .await?;
    let mut out: BTreeMap<OffsetDateTime, Tally> = BTreeMap::new();
    for r in rows {
        let (status, leg): (String, String) = (r.get(1), r.get(2));
        let (calls, reached): (i64, i64) = (r.get(3), r.get(4));
        out.entry(r.get(0)).or_default().add(Outcome::of(&status, &leg), calls as u64, reached as u64);
    }
    Ok(out)
}

/// The starts of the last `days` days in the time zone `tz`, today's last: each the local midnight.
pub async fn local_days(db: &impl GenericClient, tz: &str, days: i64) -> Result<Vec<OffsetDateTime>, StoreError> {
    let rows = db
        .query(
            &db.prepare_cached(
                "SELECT generate_series(date_trunc('day', now() AT TIME ZONE $1) - ($2::int - 1) * interval '1 day',                  date_trunc('day', now() AT TIME ZONE $1), interval '1 day') AT TIME ZONE $1",
            )
            .await?,
            &[&tz, &(days as i32)],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Each courier's calls since `since` (whole UTC days from the roll-up, then live rows).
pub async fn couriers(
    db: &impl GenericClient,
    tenant: &TenantId,
    rolled: &Rolled,
    since: OffsetDateTime,
) -> Result<BTreeMap<String, CourierTally>, StoreError> {
    let rows = db
        .query(
            &db.prepare_cached(
                "SELECT courier_id, failed_leg, reason, sum(calls)::bigint FROM ( \
                   SELECT courier_id, failed_leg, reason, calls FROM courier_days \
                   WHERE tenant_id = $1 AND day >= ($2 AT TIME ZONE 'UTC')::date AND day < ($3 AT TIME ZONE 'UTC')::date \
                   UNION ALL \
                   SELECT courier_id, coalesce(failed_leg, ''), coalesce(reason, ''), 1 FROM callbacks \
                   WHERE tenant_id = $1 AND id >= $4 AND target <> 'test' \
                 ) counted GROUP BY 1, 2, 3",
            )
            .await?,
            &[&tenant.as_str(), &since, &rolled.days_until, &id_at(rolled.days_until.min(rolled.now))],
        )
        .await?;
    let mut out: BTreeMap<String, CourierTally> = BTreeMap::new();
    for r in rows {
        let (leg, reason): (String, String) = (r.get(1), r.get(2));
        // A refused call names a reason but no leg: the courier's calls failed, not the courier.
        let failed = if leg.is_empty() { String::new() } else { reason };
        out.entry(r.get(0)).or_default().add(&leg, &failed, r.get::<_, i64>(3) as u64);
    }
    Ok(out)
}

/// Courier names by id, for those listed.
pub async fn courier_names(
    db: &impl GenericClient,
    tenant: &TenantId,
    ids: &[String],
) -> Result<BTreeMap<String, String>, StoreError> {
    let rows = db
        .query(
            &db.prepare_cached("SELECT id, name FROM couriers WHERE tenant_id = $1 AND id = ANY($2)").await?,
            &[&tenant.as_str(), &ids],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Return calls since `since` by where they were sent and how they ended.
pub struct ReturnCallCount {
    pub route_kind: String,
    pub route_reason: String,
    pub status: String,
    pub calls: u64,
}

pub async fn return_calls(
    db: &impl GenericClient,
    tenant: &TenantId,
    since: OffsetDateTime,
) -> Result<Vec<ReturnCallCount>, StoreError> {
    let rows = db
        .query(
            &db.prepare_cached(
                "SELECT route_kind, route_reason, status, count(*) FROM return_calls \
                 WHERE tenant_id = $1 AND id >= $2 GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2, 3",
            )
            .await?,
            &[&tenant.as_str(), &id_at(since)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ReturnCallCount {
            route_kind: r.get(0),
            route_reason: r.get(1),
            status: r.get(2),
            calls: r.get::<_, i64>(3) as u64,
        })
        .collect())
}

/// A webhook endpoint as the dashboard shows it: whether it is enabled, failing, and behind.
pub struct EndpointHealth {
    pub id: String,
    pub url: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<OffsetDateTime>,
    pub pending: u64,
    pub oldest_pending_at: Option<OffsetDateTime>,
}

pub async fn endpoint_health(db: &impl GenericClient, tenant: &TenantId) -> Result<Vec<EndpointHealth>, StoreError> {
    let rows = db
        .query(
            &db.prepare_cached(
                "SELECT e.id, e.url, e.enabled, e.disabled_reason, e.failing_since, \
                        coalesce(p.pending, 0), p.oldest \
                 FROM webhook_endpoints e LEFT JOIN ( \
                   SELECT endpoint_id, count(*) AS pending, min(created_at) AS oldest FROM webhook_deliveries \
                   WHERE tenant_id = $1 AND status = 'pending' GROUP BY endpoint_id \
                 ) p ON p.endpoint_id = e.id \
                 WHERE e.tenant_id = $1 ORDER BY e.id",
            )
            .await?,
            &[&tenant.as_str()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| EndpointHealth {
            id: r.get(0),
            url: r.get(1),
            enabled: r.get(2),
            disabled_reason: r.get(3),
            failing_since: r.get(4),
            pending: r.get::<_, i64>(5) as u64,
            oldest_pending_at: r.get(6),
        })
        .collect())
}

/// The company's last Test, as `record_test` kept it.
pub struct LastTest {
    pub at: OffsetDateTime,
    pub ok: bool,
    pub failed_step: Option<String>,
    pub reached_originate: bool,
    pub callback_id: Option<Uuid>,
    /// When a Test last connected both legs.
    pub connected_at: Option<OffsetDateTime>,
}

/// Keeps the outcome of a Test that just ran: `steps` as (step, ok), in order.
pub async fn record_test(
    db: &impl GenericClient,
    tenant: &TenantId,
    steps: &[(&str, bool)],
    ok: bool,
    callback_id: Option<Uuid>,
) -> Result<(), StoreError> {
    let failed_step = steps.iter().find(|(_, ok)| !ok).map(|(step, _)| step.to_string());
    let steps: serde_json::Value = steps.iter().map(|(step, ok)| serde_json::json!({"step": step, "ok": ok})).collect();
    db.execute(
        &db.prepare_cached(
            "INSERT INTO pbx_tests (tenant_id, at, ok, failed_step, steps, callback_id, connected_at) \
             VALUES ($1, now(), $2, $3, $4, $5, CASE WHEN $2 THEN now() END) \
             ON CONFLICT (tenant_id) DO UPDATE SET at = now(), ok = $2, failed_step = $3, steps = $4, \
             callback_id = $5, connected_at = CASE WHEN $2 THEN now() ELSE pbx_tests.connected_at END",
        )
        .await?,
        &[&tenant.as_str(), &ok, &failed_step, &steps, &callback_id],
    )
    .await?;
    Ok(())
}

pub async fn last_test(db: &impl GenericClient, tenant: &TenantId) -> Result<Option<LastTest>, StoreError> {
    let row = db
        .query_opt(
            &db.prepare_cached(
                "SELECT at, ok, failed_step, steps, callback_id, connected_at FROM pbx_tests WHERE tenant_id = $1",
            )
            .await?,
            &[&tenant.as_str()],
        )
        .await?;
    Ok(row.map(|r| {
        let steps: serde_json::Value = r.get(3);
        let passed = |name: &str| steps.as_array().into_iter().flatten().any(|s| s["step"] == name && s["ok"] == true);
        let failed_before_originate = steps
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["ok"] == false && STEPS_BEFORE_ORIGINATE.contains(&s["step"].as_str().unwrap_or_default()));
        LastTest {
            at: r.get(0),
            ok: r.get(1),
            failed_step: r.get(2),
            reached_originate: passed("login") && !failed_before_originate,
            callback_id: r.get(4),
            connected_at: r.get(5),
        }
    }))
}

/// Whether the company has turned return calls on (its rules exist, off, once its dialplan is made).
pub async fn return_calls_enabled(db: &impl GenericClient, tenant: &TenantId) -> Result<bool, StoreError> {
    let row = db
        .query_one(
            &db.prepare_cached(
                "SELECT coalesce(bool_or((settings->>'enabled')::boolean), false) FROM return_call_settings \
                 WHERE tenant_id = $1",
            )
            .await?,
            &[&tenant.as_str()],
        )
        .await?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instant_bounds_the_ids_made_from_it_on() {
        let at = OffsetDateTime::now_utc();
        let before = Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            (at - Duration::milliseconds(1)).unix_timestamp() as u64,
            (at - Duration::milliseconds(1)).nanosecond(),
        ));
        let after =
            Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, at.unix_timestamp() as u64, at.nanosecond()));
        assert!(before < id_at(at), "{before} < {}", id_at(at));
        assert!(after >= id_at(at), "{after} >= {}", id_at(at));
    }

    #[test]
    fn times_round_down_to_the_hour_and_day() {
        let at = time::macros::datetime!(2026-03-01 13:45:10 UTC);
        assert_eq!(truncate(at, Duration::hours(1)), time::macros::datetime!(2026-03-01 13:00 UTC));
        assert_eq!(truncate(at, Duration::days(1)), time::macros::datetime!(2026-03-01 00:00 UTC));
    }
}
