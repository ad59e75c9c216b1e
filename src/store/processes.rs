//! The dialback processes sharing this database and their heartbeats (`dialback_processes`):
//! who is alive, so a dead process's calls are taken over (`callbacks::takeover`).

use std::time::Duration;

use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::StoreError;

/// Records that `id` is alive now (registering it when it is not, e.g. after it was deemed
/// dead and removed).
pub async fn beat(db: &impl GenericClient, id: Uuid, host: &str, pid: u32, version: &str) -> Result<(), StoreError> {
    let statement = db
        .prepare_cached(
            "INSERT INTO dialback_processes (id, host, pid, version) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
        )
        .await?;
    db.execute(&statement, &[&id, &host, &(pid as i32), &version]).await?;
    Ok(())
}

/// How many processes beat within `dead_after`; processes silent for a day are forgotten.
pub async fn alive(db: &impl GenericClient, dead_after: Duration) -> Result<i64, StoreError> {
    let statement = db
        .prepare_cached(
            "WITH forgotten AS (DELETE FROM dialback_processes WHERE heartbeat_at < now() - interval '1 day')
             SELECT count(*) FROM dialback_processes WHERE heartbeat_at >= now() - make_interval(secs => $1)",
        )
        .await?;
    Ok(db.query_one(&statement, &[&dead_after.as_secs_f64()]).await?.get(0))
}

/// Leaves: the process stopped (its calls were released first).
pub async fn leave(db: &impl GenericClient, id: Uuid) -> Result<(), StoreError> {
    db.execute("DELETE FROM dialback_processes WHERE id = $1", &[&id]).await?;
    Ok(())
}
