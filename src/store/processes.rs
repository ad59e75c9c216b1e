//! The dialback processes sharing this database and their heartbeats (`dialback_processes`):
//! who is alive, so a dead process's calls are taken over (`callbacks::takeover`).

use std::time::Duration;

use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::StoreError;

/// A process beating.
pub struct Beat<'a> {
    pub id: Uuid,
    pub host: &'a str,
    pub pid: u32,
    pub version: &'a str,
    /// It does not accept requests yet (V18): the others do not count it in their shares.
    pub starting: bool,
    /// It was told to stop (V18): the others count it out of their shares from now on.
    pub stopping: bool,
}

/// Records that a process is alive now (registering it when it is not, e.g. after it was deemed
/// dead and removed), and since when it is stopping, once it is.
pub async fn beat(db: &impl GenericClient, beat: &Beat<'_>) -> Result<(), StoreError> {
    let statement = db
        .prepare_cached(
            "INSERT INTO dialback_processes (id, host, pid, version, starting, stopping_since)
             VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN now() END)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), starting = EXCLUDED.starting,
                 stopping_since = COALESCE(dialback_processes.stopping_since, EXCLUDED.stopping_since)",
        )
        .await?;
    let pid = beat.pid as i32;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
        [&beat.id, &beat.host, &pid, &beat.version, &beat.starting, &beat.stopping];
    db.execute(&statement, &params).await?;
    Ok(())
}

/// A process alive: it beat within `dead_after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alive {
    pub id: Uuid,
    /// It accepts requests: started, and not told to stop.
    pub serving: bool,
}

/// What a beat learns of the processes sharing the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survey {
    /// Processes that beat within `dead_after`.
    pub alive: Vec<Alive>,
    /// The companies with calls (callbacks or return calls) in flight.
    pub tenants_in_flight: Vec<String>,
    /// Whether a call in flight waits for a process to follow it: its process is dead, or let it
    /// go (stopping, or its AMI link lost). Only then does a process look for orphans (`claim`).
    pub orphans_waiting: bool,
}

/// Surveys the processes, and forgets the dead ones that follow no call in flight any more (their
/// calls were all claimed). Cheap whatever the calls in flight: it reads the processes and probes
/// the in-flight indexes (V10, V11) for a dead process's calls and for calls without an owner; it
/// reads no call that has a live owner. A dead process is kept while it owns a call in flight, so
/// such a call always has either no owner or a dead one, which this finds.
pub async fn survey(db: &impl GenericClient, dead_after: Duration) -> Result<Survey, StoreError> {
    let (callbacks, return_calls) = (super::callbacks::IN_FLIGHT, super::return_calls::IN_FLIGHT);
    let statement = db
        .prepare_cached(&format!(
            "WITH dead AS (
                 SELECT p.id,
                        EXISTS (SELECT FROM callbacks WHERE owner = p.id AND {callbacks})
                        OR EXISTS (SELECT FROM return_calls WHERE owner = p.id AND {return_calls}) AS owns_calls
                 FROM dialback_processes p WHERE p.heartbeat_at < now() - make_interval(secs => $1)),
             forgotten AS (DELETE FROM dialback_processes p USING dead WHERE p.id = dead.id AND NOT dead.owns_calls)
             SELECT EXISTS (SELECT FROM dead WHERE owns_calls)
                    OR EXISTS (SELECT FROM callbacks WHERE owner IS NULL AND {callbacks})
                    OR EXISTS (SELECT FROM return_calls WHERE owner IS NULL AND {return_calls})"
        ))
        .await?;
    let row = db.query_one(&statement, &[&dead_after.as_secs_f64()]).await?;
    // One probe of an in-flight index per company (a skip scan), whatever the calls in flight.
    let skip_scan = |table: &str| {
        format!(
            "(WITH RECURSIVE t AS (
                 (SELECT tenant_id FROM {table} WHERE ended_at IS NULL ORDER BY tenant_id LIMIT 1)
                 UNION ALL
                 SELECT (SELECT tenant_id FROM {table} WHERE ended_at IS NULL AND tenant_id > t.tenant_id
                         ORDER BY tenant_id LIMIT 1)
                 FROM t WHERE t.tenant_id IS NOT NULL)
             SELECT tenant_id FROM t WHERE tenant_id IS NOT NULL)"
        )
    };
    let tenants = db.prepare_cached(&format!("{} UNION {}", skip_scan("callbacks"), skip_scan("return_calls"))).await?;
    let tenants_in_flight = db.query(&tenants, &[]).await?.iter().map(|r| r.get(0)).collect();
    Ok(Survey { alive: alive(db, dead_after).await?, tenants_in_flight, orphans_waiting: row.get(0) })
}

/// The processes alive: each beat within `dead_after`.
pub async fn alive(db: &impl GenericClient, dead_after: Duration) -> Result<Vec<Alive>, StoreError> {
    let alive = db
        .prepare_cached(
            "SELECT id, NOT starting AND stopping_since IS NULL FROM dialback_processes
             WHERE heartbeat_at >= now() - make_interval(secs => $1)",
        )
        .await?;
    let rows = db.query(&alive, &[&dead_after.as_secs_f64()]).await?;
    Ok(rows.iter().map(|r| Alive { id: r.get(0), serving: r.get(1) }).collect())
}

/// Leaves: the process stopped (its calls were released first).
pub async fn leave(db: &impl GenericClient, id: Uuid) -> Result<(), StoreError> {
    db.execute("DELETE FROM dialback_processes WHERE id = $1", &[&id]).await?;
    Ok(())
}

/// What a process claims: calls in flight that nobody alive follows.
pub struct Orphans<'a> {
    /// The process claiming.
    pub me: Uuid,
    /// Heartbeats older than this are a dead process's.
    pub dead_after: Duration,
    /// Tenants this process has an AMI session up with: it has heard their calls' events, so it
    /// claims their orphans at once; the others' after `grace` more.
    pub tenants_up: &'a [String],
    pub grace: Duration,
    pub limit: i64,
}

/// Claims, for `o.me`, rows of `table` (calls whose `owner` names their process) matching
/// `in_flight` whose owner is dead or that were released; rows another claimer holds are skipped,
/// so each goes to one process. Each returned row holds `columns`, then why nobody was following
/// it. The one claim rule for every kind of call.
pub(super) async fn claim(
    db: &impl GenericClient,
    table: &str,
    in_flight: &str,
    columns: &str,
    o: &Orphans<'_>,
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    let returning = columns.split(", ").map(|c| format!("{table}.{}", c.trim())).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "WITH orphans AS (
             SELECT c.id, CASE
                 WHEN c.owner IS NULL THEN COALESCE(c.orphaned_because, 'dialback was restarting')
                 WHEN p.id IS NULL THEN 'the dialback process following it had stopped'
                 ELSE format('the dialback process following it (on %s, pid %s) was not answering', p.host, p.pid)
               END AS why
             FROM {table} c LEFT JOIN dialback_processes p ON p.id = c.owner
             WHERE c.{in_flight}
               -- Not the join's `p`: a row another claimer took after this statement began is
               -- checked again with its new owner against the `p` first joined, which no longer
               -- matches and reads as absent. A join PostgreSQL makes of a NOT EXISTS is checked
               -- the same way; OFFSET 0 keeps this one a subquery, run again for the new owner.
               AND NOT EXISTS (SELECT FROM dialback_processes alive
                               WHERE alive.id = c.owner AND alive.heartbeat_at >= now() - make_interval(secs => $2)
                               OFFSET 0)
               AND c.owner IS DISTINCT FROM $1
               AND (c.tenant_id = ANY($3) OR COALESCE(c.orphaned_at, p.heartbeat_at + make_interval(secs => $2),
                                                      '-infinity') < now() - make_interval(secs => $4))
             ORDER BY c.created_at
             LIMIT $5
             FOR UPDATE OF c SKIP LOCKED)
         UPDATE {table} SET owner = $1, orphaned_at = NULL, orphaned_because = NULL
         FROM orphans WHERE {table}.id = orphans.id
         RETURNING {returning}, orphans.why"
    );
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [&o.me, &o.dead_after.as_secs_f64(), &o.tenants_up, &o.grace.as_secs_f64(), &o.limit];
    Ok(db.query(&sql, &params).await?)
}

/// Releases `me`'s rows of `table` in flight (all, or those among `ids`) `because`: orphaned now.
/// The ids released.
pub(super) async fn release(
    db: &impl GenericClient,
    table: &str,
    in_flight: &str,
    me: Uuid,
    ids: Option<&[Uuid]>,
    because: &str,
) -> Result<Vec<Uuid>, StoreError> {
    let sql = format!(
        "UPDATE {table} SET owner = NULL, orphaned_at = now(), orphaned_because = $3
         WHERE owner = $1 AND {in_flight} AND ($2::uuid[] IS NULL OR id = ANY($2))
         RETURNING id"
    );
    Ok(db.query(&sql, &[&me, &ids, &because]).await?.iter().map(|r| r.get(0)).collect())
}

/// How many of `ids` (rows of `table`) are still in flight with no process following them.
pub(super) async fn unclaimed(
    db: &impl GenericClient,
    table: &str,
    in_flight: &str,
    ids: &[Uuid],
) -> Result<i64, StoreError> {
    let sql = format!("SELECT count(*) FROM {table} WHERE id = ANY($1) AND owner IS NULL AND {in_flight}");
    Ok(db.query_one(&sql, &[&ids]).await?.get(0))
}
