//! Schema migrations: the SQL files in `migrations/` (`V{n}__{name}.sql`), embedded at build time
//! by refinery and applied in order under a PostgreSQL advisory lock (refinery takes none of its
//! own), so processes starting together apply each one once.
//!
//! refinery keeps each applied migration's checksum and refuses to start when a file was edited
//! after it was applied, or when one the database has applied is missing: a migration is never
//! edited once released; add a new one.

use tokio_postgres::Client;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Arbitrary constant naming dialback's migration lock.
const MIGRATION_LOCK: i64 = 0x6469_616c_6261_636b; // "dialback"

/// Where refinery keeps what it applied.
const HISTORY: &str = "refinery_schema_history";

/// Every migration, as embedded from `migrations/`.
pub fn runner() -> refinery::Runner {
    embedded::migrations::runner()
}

/// Applies the migrations not yet applied; returns the versions it applied.
pub async fn run(client: &mut Client) -> anyhow::Result<Vec<i32>> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let result = apply_pending(client).await;
    // Release even when a migration failed; the session ending would release it too.
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
    result
}

async fn apply_pending(client: &mut Client) -> anyhow::Result<Vec<i32>> {
    adopt_earlier_history(client).await?;
    // A migration this build does not have was applied by a later release (they only expand the
    // schema, so this one still runs on it): a rollback, or both releases serving during an
    // upgrade. An edited migration (divergent) still stops start-up.
    let mut runner = runner().set_abort_missing(false);
    let report = runner.set_migration_table_name(HISTORY).run_async(client).await?;
    let applied: Vec<i32> = report.applied_migrations().iter().map(|m| m.version()).collect();
    for migration in report.applied_migrations() {
        tracing::info!(version = migration.version(), name = migration.name(), "applied migration");
    }
    Ok(applied)
}

/// Databases migrated before dialback used refinery recorded their migrations in
/// `schema_migrations` (version and name, no checksum): their history moves to refinery's table,
/// with the checksums of the files as they are now (they were never edited: that was the rule
/// already), so refinery does not apply them again.
async fn adopt_earlier_history(client: &mut Client) -> anyhow::Result<()> {
    let tx = client.transaction().await?;
    let tables: Vec<String> = tx
        .query("SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !tables.iter().any(|t| t == "schema_migrations") || tables.iter().any(|t| t == HISTORY) {
        return Ok(());
    }
    tx.batch_execute(&format!(
        "CREATE TABLE {HISTORY} (version int4 PRIMARY KEY, name VARCHAR(255), applied_on VARCHAR(255),
             checksum VARCHAR(255))"
    ))
    .await?;
    let applied = tx.query("SELECT version, to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM schema_migrations", &[]).await?;
    let embedded = runner();
    for row in applied {
        let (version, applied_on): (i32, String) = (row.get(0), row.get(1));
        let migration = embedded.get_migrations().iter().find(|m| m.version() == version).ok_or_else(|| {
            anyhow::anyhow!("the database has migration V{version} applied, which this build does not have")
        })?;
        tx.execute(
            &format!("INSERT INTO {HISTORY} (version, name, applied_on, checksum) VALUES ($1, $2, $3, $4)"),
            &[&version, &migration.name(), &applied_on, &migration.checksum().to_string()],
        )
        .await?;
    }
    tx.batch_execute("DROP TABLE schema_migrations").await?;
    tx.commit().await?;
    tracing::info!("migration history moved to {HISTORY}");
    Ok(())
}

/// Connects once (outside the pool) and migrates; used by `dialback migrate` and `serve`.
pub async fn run_url(database_url: &secrecy::SecretString, db: &crate::config::DbConfig) -> anyhow::Result<Vec<i32>> {
    let crate::pg_tls::Connect { config, tls, mode } = super::connect_config(database_url, db)?;
    let (mut client, connection) = config
        .connect(tls)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to PostgreSQL (sslmode {mode:?}): {}", crate::telemetry::Chain(&e)))?;
    let conn = tokio::spawn(connection);
    let result = run(&mut client).await;
    drop(client);
    let _ = conn.await;
    result
}

/// The version the schema has once every migration is applied.
pub fn latest_version() -> i32 {
    runner().get_migrations().iter().map(|m| m.version()).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_sql_file_in_migrations_is_a_migration() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        let mut embedded: Vec<String> =
            super::runner().get_migrations().iter().map(|m| format!("V{}__{}.sql", m.version(), m.name())).collect();
        embedded.sort();
        assert_eq!(files, embedded, "a file in migrations/ that is not named V<n>__<name>.sql is never applied");
    }
}
