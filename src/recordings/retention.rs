//! Deleting recordings: on the company's schedule (`recordings.retention_days`, applied at each
//! sync run, whether or not its FTP server answers) and one at a time by an admin. Recordings are
//! personal data; the journal keeps that there was one, when it was deleted and why.
//!
//! Crash-safe in three steps: the row is marked `deleting` (no longer served), the object is
//! removed, the row is marked `deleted` without a key. A run that dies between leaves `deleting`
//! rows that the next run finishes; the object is never left without a row that names it, and no
//! `stored` row ever names a missing object.

use time::OffsetDateTime;
use uuid::Uuid;

use super::Recordings;
use crate::domain::company::TenantId;
use crate::store::{self, StoreError};
use crate::telemetry::Chain;

/// Rows marked per statement.
const BATCH: i64 = 200;

impl Recordings {
    /// Deletes `tenant`'s recordings older than its `retention_days`, if it set them, and finishes
    /// deletions a run left half done (whatever the setting); how many.
    pub async fn apply_retention(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let db = store::client(&self.db).await?;
        let days = store::recordings::source(&**db, tenant).await?.and_then(|c| c.source.retention_days);
        let before = match days {
            Some(days) => OffsetDateTime::now_utc() - time::Duration::days(i64::from(days)),
            // Nothing is old enough: only the `deleting` rows are due.
            None => OffsetDateTime::UNIX_EPOCH,
        };
        let mut deleted = 0;
        loop {
            let due = store::recordings::due_for_deletion(&**db, tenant, before, BATCH).await?;
            let full = due.len() as i64 == BATCH;
            for (id, key) in due {
                if self.remove_object(tenant, id, key.as_deref(), "retention").await? {
                    deleted += 1;
                }
            }
            if !full {
                break;
            }
        }
        if deleted > 0 {
            tracing::info!(%tenant, deleted, days, "recordings deleted (retention, or deletions finished)");
        }
        Ok(deleted)
    }

    /// An admin deletes one recording now. False: the company has no such recording.
    pub async fn delete_recording(&self, tenant: &TenantId, id: Uuid) -> Result<bool, StoreError> {
        let db = store::client(&self.db).await?;
        let Some(key) = store::recordings::delete_one(&**db, tenant, id).await? else { return Ok(false) };
        drop(db);
        match key {
            Some(key) => {
                self.remove_object(tenant, id, Some(&key), "admin").await?;
            }
            None => tracing::info!(%tenant, recording = %id, "recording deleted by an admin (nothing was stored)"),
        }
        Ok(true)
    }

    /// Removes a `deleting` recording's object, then marks it `deleted`. False when the store
    /// refused (logged; the row stays `deleting` for the next run).
    async fn remove_object(
        &self,
        tenant: &TenantId,
        id: Uuid,
        key: Option<&str>,
        because: &'static str,
    ) -> Result<bool, StoreError> {
        if let Some(key) = key {
            if let Err(e) = self.storage.remove(key).await {
                tracing::warn!(%tenant, recording = %id, key, error = %Chain(&e), because,
                    "a recording's object could not be deleted; the next run tries again");
                metrics::counter!("dialback_recordings_delete_failures_total", "tenant" => tenant.to_string())
                    .increment(1);
                return Ok(false);
            }
        }
        let db = store::client(&self.db).await?;
        store::recordings::deleted(&**db, id).await?;
        metrics::counter!("dialback_recordings_deleted_total", "tenant" => tenant.to_string(), "because" => because)
            .increment(1);
        tracing::info!(%tenant, recording = %id, key, because, "recording deleted");
        Ok(true)
    }
}
