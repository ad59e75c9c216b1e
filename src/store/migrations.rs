//! Schema migrations: plain SQL files in `migrations/`, embedded at build time and applied in
//! order under a PostgreSQL advisory lock, so replicas starting together apply each one once.

use tokio_postgres::Client;

/// Every migration, in order. A migration is never edited once released: add a new one.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial", include_str!("../../migrations/V1__initial.sql")),
    (2, "callbacks", include_str!("../../migrations/V2__callbacks.sql")),
    (3, "recordings", include_str!("../../migrations/V3__recordings.sql")),
    (4, "hot_path", include_str!("../../migrations/V4__hot_path.sql")),
];

/// Arbitrary constant naming dialback's migration lock.
const MIGRATION_LOCK: i64 = 0x6469_616c_6261_636b; // "dialback"

/// Applies the migrations not yet applied; returns the versions it applied.
pub async fn run(client: &mut Client) -> anyhow::Result<Vec<i32>> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let result = apply_pending(client).await;
    // Release even when a migration failed; the session ending would release it too.
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
    result
}

async fn apply_pending(client: &mut Client) -> anyhow::Result<Vec<i32>> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let applied: Vec<i32> =
        client.query("SELECT version FROM schema_migrations", &[]).await?.iter().map(|r| r.get(0)).collect();
    let mut done = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        if applied.contains(&version) {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await.map_err(|e| anyhow::anyhow!("migration V{version}__{name} failed: {e}"))?;
        tx.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[&version, &name]).await?;
        tx.commit().await?;
        tracing::info!(version, name, "applied migration");
        done.push(version);
    }
    Ok(done)
}

/// Connects once (outside the pool) and migrates; used by `dialback migrate` and `serve`.
pub async fn run_url(database_url: &secrecy::SecretString) -> anyhow::Result<Vec<i32>> {
    use secrecy::ExposeSecret;
    let (mut client, connection) = tokio_postgres::connect(database_url.expose_secret(), tokio_postgres::NoTls).await?;
    let conn = tokio::spawn(connection);
    let result = run(&mut client).await;
    drop(client);
    let _ = conn.await;
    result
}

/// The version the schema has once every migration is applied.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}
