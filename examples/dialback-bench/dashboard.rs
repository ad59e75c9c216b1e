//! `dashboard`: GET /v1/admin/dashboard for a company with a large journal. `--rows` finished calls
//! (a mix of outcomes, 300 couriers) are written straight to PostgreSQL, spread evenly over the
//! last `--days` days; then the dashboard is read once (the first read rolls up every ended hour)
//! and `--reads` times more (the hours since the roll-up counted live), each timed from request to
//! the whole answer.

use std::time::Instant;

use dialback::auth::Role;
use secrecy::ExposeSecret;

use crate::load::Api;
use crate::stats::Figures;

async fn read(http: &reqwest::Client, api: &Api, token: &str) -> anyhow::Result<u64> {
    let started = Instant::now();
    let url = format!("http://{}/v1/admin/dashboard?tz=Europe/Moscow", api.addr);
    let response = http.execute(http.get(url).bearer_auth(token).build()?).await?;
    let status = response.status();
    let body = response.bytes().await?;
    anyhow::ensure!(status.is_success(), "the dashboard answered {status}: {}", String::from_utf8_lossy(&body));
    Ok(started.elapsed().as_micros() as u64)
}

pub async fn run(
    api: &Api,
    tenant: &str,
    rows: u64,
    days: u64,
    reads: usize,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    let (db, connection) =
        tokio_postgres::connect(api.config.database_url.expose_secret(), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let started = Instant::now();
    // Ids are UUIDv7 of the call's creation, as dialback makes them: the first 48 bits its
    // millisecond. Outcomes cycle through a mix an office sees.
    db.execute(
        "INSERT INTO callbacks (id, tenant_id, courier_id, target, to_number, status, failed_leg, reason, \
                                created_at, updated_at, connected_at, ended_at, talk_seconds) \
         SELECT (lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0') || '7' \
                 || substr(md5(g::text), 1, 19))::uuid, \
                $1, 'courier-' || (g % 300), CASE WHEN g % 10 = 0 THEN 'office' ELSE 'client' END, \
                '+7916' || lpad((g % 9999999)::text, 7, '0'), o.status, o.leg, o.reason, at, at, \
                CASE WHEN o.status = 'completed' THEN at END, at + interval '1 minute', \
                CASE WHEN o.status = 'completed' THEN 60 END \
         FROM (SELECT g, now() - g * ($3::float8 * 86400 / $2::float8) * interval '1 second' AS at \
               FROM generate_series(1, $2::bigint) g) calls \
         CROSS JOIN LATERAL (SELECT * FROM (VALUES ('completed', NULL, NULL), ('completed', NULL, NULL), \
               ('completed', NULL, NULL), ('failed', 'client', 'busy'), ('failed', 'courier', 'no_answer'), \
               ('failed', 'courier', 'not_confirmed'), ('failed', 'client', 'no_answer'), ('completed', NULL, NULL)) \
               v(status, leg, reason) OFFSET calls.g % 8 LIMIT 1) o",
        &[&tenant, &(rows as i64), &(days as f64)],
    )
    .await?;
    db.execute("VACUUM ANALYZE callbacks", &[]).await?;
    let seeded = started.elapsed().as_secs_f64();
    eprintln!("dashboard: {rows} calls over {days} days written in {seeded:.1} s");

    let token = api.token(tenant, Role::Admin, "bench-admin")?;
    let http = reqwest::Client::new();
    let first = read(&http, api, &token).await?;
    let mut micros = Vec::with_capacity(reads);
    for _ in 0..reads {
        micros.push(read(&http, api, &token).await?);
    }
    let rolled: i64 = db
        .query_one("SELECT coalesce(sum(calls), 0)::bigint FROM callback_hours WHERE tenant_id = $1", &[&tenant])
        .await?
        .get(0);
    figures.count("rows", rows);
    figures.count("rolled_up_calls", rolled as u64);
    figures.num("seed_s", seeded);
    figures.num("first_read_ms", first as f64 / 1000.0);
    figures.latencies("read_", &mut micros);
    eprintln!("dashboard: first read {:.1} ms (rolls up {rolled} calls), then {reads} reads", first as f64 / 1000.0);
    Ok(())
}
