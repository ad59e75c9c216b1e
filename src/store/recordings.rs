//! Recording files seen on the companies' FTP servers, their download claims and their binding
//! to callbacks; and each company's recordings source as read for a sync (the settings themselves
//! are written by [`super::admin`]).
//!
//! Once-only fetching rests on [`claim`]: a single `UPDATE ... WHERE state allows it` that only
//! one run can win, whatever the number of runs, processes or replicas.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use super::events::outbox_ctes;
use super::StoreError;
use crate::domain::company::TenantId;
use crate::domain::event::EventType;
use crate::domain::recording::RecordingState;
use crate::domain::settings::RecordingsSource;

/// One recording file as stored, with its callback's order and courier when bound.
#[derive(Debug, Clone)]
pub struct RecordingRow {
    pub id: Uuid,
    pub remote_path: String,
    pub file_name: String,
    pub call_ref: Option<Uuid>,
    pub recorded_at: Option<OffsetDateTime>,
    pub remote_size: i64,
    pub content_type: String,
    pub state: RecordingState,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub storage_key: Option<String>,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub fetched_at: Option<OffsetDateTime>,
    pub callback_id: Option<Uuid>,
    pub matched_by: Option<String>,
    pub bound_at: Option<OffsetDateTime>,
    pub first_seen_at: OffsetDateTime,
    pub order_id: Option<String>,
    pub courier_id: Option<String>,
    pub deleted_at: Option<OffsetDateTime>,
    /// `retention` or `admin`.
    pub deleted_because: Option<String>,
}

const COLUMNS: &str = "r.id, r.remote_path, r.file_name, r.call_ref, r.recorded_at, r.remote_size, r.content_type, \
    r.state, r.attempts, r.last_error, r.storage_key, r.size_bytes, r.sha256, r.fetched_at, r.callback_id, \
    r.matched_by, r.bound_at, r.first_seen_at, c.order_id, c.courier_id, r.deleted_at, r.deleted_because";

fn from_row(r: &Row) -> RecordingRow {
    RecordingRow {
        id: r.get(0),
        remote_path: r.get(1),
        file_name: r.get(2),
        call_ref: r.get(3),
        recorded_at: r.get(4),
        remote_size: r.get(5),
        content_type: r.get(6),
        // The column's CHECK admits only the states there are.
        state: RecordingState::parse(r.get(7)).unwrap_or(RecordingState::Failed),
        attempts: r.get(8),
        last_error: r.get(9),
        storage_key: r.get(10),
        size_bytes: r.get(11),
        sha256: r.get(12),
        fetched_at: r.get(13),
        callback_id: r.get(14),
        matched_by: r.get(15),
        bound_at: r.get(16),
        first_seen_at: r.get(17),
        order_id: r.get(18),
        deleted_at: r.get(20),
        deleted_because: r.get(21),
        courier_id: r.get(19),
    }
}

/// A file from a listing, with what its name says.
pub struct ListedFile<'a> {
    pub remote_path: &'a str,
    pub file_name: &'a str,
    pub size: i64,
    pub content_type: &'a str,
    pub call_ref: Option<(Uuid, &'static str)>,
    pub exten: Option<&'a str>,
    pub src: Option<&'a str>,
    pub recorded_at: Option<OffsetDateTime>,
}

/// Records the files not seen before (others are left as they are); returns the new ones' paths.
pub async fn discover(
    db: &impl GenericClient,
    tenant: &TenantId,
    files: &[ListedFile<'_>],
) -> Result<Vec<String>, StoreError> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = files.iter().map(|_| Uuid::now_v7()).collect();
    let paths: Vec<&str> = files.iter().map(|f| f.remote_path).collect();
    let names: Vec<&str> = files.iter().map(|f| f.file_name).collect();
    let refs: Vec<Option<Uuid>> = files.iter().map(|f| f.call_ref.map(|r| r.0)).collect();
    let ref_groups: Vec<Option<&str>> = files.iter().map(|f| f.call_ref.map(|r| r.1)).collect();
    let extens: Vec<Option<&str>> = files.iter().map(|f| f.exten).collect();
    let srcs: Vec<Option<&str>> = files.iter().map(|f| f.src).collect();
    let times: Vec<Option<OffsetDateTime>> = files.iter().map(|f| f.recorded_at).collect();
    let sizes: Vec<i64> = files.iter().map(|f| f.size).collect();
    let types: Vec<&str> = files.iter().map(|f| f.content_type).collect();
    let inserted = db
        .query(
            "INSERT INTO recordings (id, tenant_id, remote_path, file_name, call_ref, call_ref_group, exten, src,
                 recorded_at, remote_size, content_type)
             SELECT u.id, $1, u.path, u.name, u.ref, u.ref_group, u.exten, u.src, u.at, u.size, u.type
             FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::uuid[], $6::text[], $7::text[], $8::text[],
                         $9::timestamptz[], $10::bigint[], $11::text[])
                  AS u(id, path, name, ref, ref_group, exten, src, at, size, type)
             ON CONFLICT (tenant_id, remote_path) DO NOTHING
             RETURNING remote_path",
            &[&tenant.as_str(), &ids, &paths, &names, &refs, &ref_groups, &extens, &srcs, &times, &sizes, &types],
        )
        .await?;
    Ok(inserted.iter().map(|r| r.get(0)).collect())
}

/// A listed file that may be downloaded now (new, failed and due for a retry, or claimed by a run
/// whose lease lapsed), with the status of the callback its name refers to.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: Uuid,
    pub remote_path: String,
    pub file_name: String,
    pub remote_size: i64,
    pub first_seen_at: OffsetDateTime,
    /// First listed more than the given settle time ago (by this run or another).
    pub seen_before: bool,
    /// `None` when the name refers to no callback of this company (or to none at all).
    pub call_status: Option<String>,
}

const CLAIMABLE: &str = "(state = 'pending' OR (state = 'fetching' AND claimed_until < now())
    OR (state = 'failed' AND retry_at <= now()))";

pub async fn candidates(
    db: &impl GenericClient,
    tenant: &TenantId,
    paths: &[&str],
    settle: Duration,
) -> Result<Vec<Candidate>, StoreError> {
    let rows = db
        .query(
            &format!(
                "SELECT r.id, r.remote_path, r.file_name, r.remote_size, r.first_seen_at, c.status,
                        r.first_seen_at < now() - make_interval(secs => $3)
                 FROM recordings r LEFT JOIN callbacks c ON c.id = r.call_ref AND c.tenant_id = r.tenant_id
                 WHERE r.tenant_id = $1 AND r.remote_path = ANY($2) AND {CLAIMABLE}
                 ORDER BY r.id"
            ),
            &[&tenant.as_str(), &paths, &settle.as_secs_f64()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Candidate {
            id: r.get(0),
            remote_path: r.get(1),
            file_name: r.get(2),
            remote_size: r.get(3),
            first_seen_at: r.get(4),
            call_status: r.get(5),
            seen_before: r.get(6),
        })
        .collect())
}

/// The file changed size since it was first listed (still being written): remember the new size.
pub async fn note_size(db: &impl GenericClient, id: Uuid, size: i64) -> Result<(), StoreError> {
    db.execute("UPDATE recordings SET remote_size = $2 WHERE id = $1", &[&id, &size]).await?;
    Ok(())
}

/// The right to download one file, until the lease lapses without a heartbeat.
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    pub token: Uuid,
    /// The how-many-th attempt this is (1 for the first).
    pub attempt: i32,
}

/// Claims a file for download; `None` when another run holds it or it is no longer claimable.
pub async fn claim(
    db: &impl GenericClient,
    tenant: &TenantId,
    id: Uuid,
    lease: Duration,
) -> Result<Option<Claim>, StoreError> {
    let token = Uuid::new_v4();
    let row = db
        .query_opt(
            &format!(
                "UPDATE recordings SET state = 'fetching', claim_token = $3, claimed_until = now() + make_interval(secs => $4),
                     attempts = attempts + 1, retry_at = NULL
                 WHERE tenant_id = $1 AND id = $2 AND {CLAIMABLE}
                 RETURNING attempts"
            ),
            &[&tenant.as_str(), &id, &token, &lease.as_secs_f64()],
        )
        .await?;
    Ok(row.map(|r| Claim { token, attempt: r.get(0) }))
}

/// Extends a claim; false when it was lost (it lapsed and another run took the file).
pub async fn heartbeat(db: &impl GenericClient, id: Uuid, claim: &Claim, lease: Duration) -> Result<bool, StoreError> {
    let updated = db
        .execute(
            "UPDATE recordings SET claimed_until = now() + make_interval(secs => $3)
             WHERE id = $1 AND claim_token = $2 AND state = 'fetching'",
            &[&id, &claim.token, &lease.as_secs_f64()],
        )
        .await?;
    Ok(updated == 1)
}

/// Records a finished download; false when the claim was lost meanwhile.
pub async fn complete(
    db: &impl GenericClient,
    id: Uuid,
    claim: &Claim,
    storage_key: &str,
    size: i64,
    sha256: &str,
) -> Result<bool, StoreError> {
    let updated = db
        .execute(
            "UPDATE recordings SET state = 'stored', storage_key = $3, size_bytes = $4, sha256 = $5, fetched_at = now(),
                 claim_token = NULL, claimed_until = NULL, last_error = NULL
             WHERE id = $1 AND claim_token = $2 AND state = 'fetching'",
            &[&id, &claim.token, &storage_key, &size, &sha256],
        )
        .await?;
    Ok(updated == 1)
}

/// Records a failed download; it is tried again after `retry_after` (never when `None`).
pub async fn fail(
    db: &impl GenericClient,
    id: Uuid,
    claim: &Claim,
    error: &str,
    retry_after: Option<Duration>,
) -> Result<(), StoreError> {
    let retry = retry_after.map(|d| d.as_secs_f64());
    db.execute(
        "UPDATE recordings SET state = 'failed', last_error = $3, retry_at = now() + make_interval(secs => $4),
             claim_token = NULL, claimed_until = NULL
         WHERE id = $1 AND claim_token = $2",
        &[&id, &claim.token, &error, &retry],
    )
    .await?;
    Ok(())
}

/// A recording just bound to its callback.
#[derive(Debug, Clone)]
pub struct Bound {
    pub id: Uuid,
    pub file_name: String,
    pub callback_id: Uuid,
    pub matched_by: String,
    pub call_ended_at: Option<OffsetDateTime>,
    /// Webhook deliveries its `recording.bound` event queued.
    pub deliveries: i64,
}

fn bound(r: &Row) -> Bound {
    Bound {
        id: r.get(0),
        file_name: r.get(1),
        callback_id: r.get(2),
        matched_by: r.get(3),
        call_ended_at: r.get(4),
        deliveries: r.get(5),
    }
}

/// A statement binding recordings: `binding` is an `UPDATE recordings r ... FROM callbacks c`
/// without its `RETURNING`; each recording it binds gets its `recording.bound` event (its data:
/// the recording, its callback and order, JSON built here as the API shows a recording).
fn bind_statement(binding: &str) -> String {
    format!(
        "WITH bound AS (
             {binding}
             RETURNING r.id, r.file_name, c.id AS callback_id, r.matched_by, c.ended_at, r.tenant_id, c.order_id,
                 r.size_bytes, r.sha256, r.content_type, r.recorded_at, r.bound_at),
         bound_events AS (
             SELECT id AS subject_id, tenant_id, 1 AS sequence,
                 json_build_object('id', id, 'callback_id', callback_id, 'order_id', order_id,
                     'file_name', file_name, 'matched_by', matched_by, 'size_bytes', size_bytes,
                     'sha256', sha256, 'content_type', content_type,
                     'recorded_at', to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                     'bound_at', to_char(bound_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))::text AS data
             FROM bound),
         {}
         SELECT id, file_name, callback_id, matched_by, ended_at,
             (SELECT count(*) FROM deliveries_written) FROM bound",
        outbox_ctes("bound_events", EventType::RecordingBound)
    )
}

/// Binds every stored, unbound recording first seen since `since` whose name carries the id of one
/// of the company's callbacks.
pub async fn bind_by_call_ref(
    db: &impl GenericClient,
    tenant: &TenantId,
    since: OffsetDateTime,
) -> Result<Vec<Bound>, StoreError> {
    let rows = db
        .query(
            &bind_statement(
                "UPDATE recordings r SET callback_id = c.id, matched_by = r.call_ref_group, bound_at = now()
                 FROM callbacks c
                 WHERE r.tenant_id = $1 AND r.callback_id IS NULL AND r.state = 'stored' AND r.first_seen_at >= $2
                   AND c.id = r.call_ref AND c.tenant_id = r.tenant_id",
            ),
            &[&tenant.as_str(), &since],
        )
        .await?;
    Ok(rows.iter().map(bound).collect())
}

/// A stored, unbound recording whose name gives numbers and a time.
#[derive(Debug, Clone)]
pub struct ByNumbers {
    pub id: Uuid,
    pub exten: Option<String>,
    pub src: Option<String>,
    pub recorded_at: OffsetDateTime,
}

pub async fn unbound_with_numbers(
    db: &impl GenericClient,
    tenant: &TenantId,
    since: OffsetDateTime,
) -> Result<Vec<ByNumbers>, StoreError> {
    let rows = db
        .query(
            "SELECT id, exten, src, recorded_at FROM recordings
             WHERE tenant_id = $1 AND callback_id IS NULL AND state = 'stored' AND first_seen_at >= $2
               AND recorded_at IS NOT NULL AND (exten IS NOT NULL OR src IS NOT NULL)
             ORDER BY id",
            &[&tenant.as_str(), &since],
        )
        .await?;
    Ok(rows.iter().map(|r| ByNumbers { id: r.get(0), exten: r.get(1), src: r.get(2), recorded_at: r.get(3) }).collect())
}

/// The comparable part of a number: its last ten digits (so `8 916...`, `+7 916...` and a trunk
/// prefix all agree), or all of a short one (an extension).
pub fn number_key(number: &str) -> String {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    digits[digits.len().saturating_sub(10)..].to_owned()
}

/// The company's callback that a recording of `exten`/`src` made at `at` belongs to: a call to one
/// of those numbers that was going on then (two minutes' slack for the PBX clock), without a
/// recording yet, the closest in time.
pub async fn find_by_numbers(
    db: &impl GenericClient,
    tenant: &TenantId,
    exten: Option<&str>,
    src: Option<&str>,
    at: OffsetDateTime,
) -> Result<Option<Uuid>, StoreError> {
    let (exten, src) = (exten.map(number_key), src.map(number_key));
    let row = db
        .query_opt(
            "SELECT c.id FROM callbacks c
             CROSS JOIN LATERAL (SELECT regexp_replace(COALESCE(c.to_number, ''), '[^0-9]', '', 'g') AS d) n
             WHERE c.tenant_id = $1 AND c.status <> 'refused'
               AND c.created_at <= $4::timestamptz + interval '2 minutes'
               AND COALESCE(c.ended_at, c.created_at + interval '4 hours') >= $4::timestamptz - interval '2 minutes'
               AND right(n.d, 10) <> '' AND right(n.d, 10) IN ($2::text, $3::text)
               AND NOT EXISTS (SELECT 1 FROM recordings r WHERE r.callback_id = c.id)
             ORDER BY abs(extract(epoch FROM c.created_at - $4::timestamptz)) LIMIT 1",
            &[&tenant.as_str(), &exten, &src, &at],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Binds one recording (unless it was bound meanwhile) to a callback of the same company.
pub async fn bind(
    db: &impl GenericClient,
    tenant: &TenantId,
    id: Uuid,
    callback_id: Uuid,
    matched_by: &str,
) -> Result<Option<Bound>, StoreError> {
    let row = db
        .query_opt(
            &bind_statement(
                "UPDATE recordings r SET callback_id = c.id, matched_by = $4, bound_at = now()
                 FROM callbacks c
                 WHERE r.tenant_id = $1 AND r.id = $2 AND r.callback_id IS NULL AND c.id = $3 AND c.tenant_id = $1",
            ),
            &[&tenant.as_str(), &id, &callback_id, &matched_by],
        )
        .await?;
    Ok(row.as_ref().map(bound))
}

pub async fn get(db: &impl GenericClient, tenant: &TenantId, id: Uuid) -> Result<Option<RecordingRow>, StoreError> {
    let row = db
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM recordings r LEFT JOIN callbacks c ON c.id = r.callback_id
                 WHERE r.tenant_id = $1 AND r.id = $2"
            ),
            &[&tenant.as_str(), &id],
        )
        .await?;
    Ok(row.as_ref().map(from_row))
}

#[derive(Debug, Default)]
pub struct ListFilter {
    pub order_id: Option<String>,
    pub callback_id: Option<Uuid>,
    /// `Some(true)`: only files bound to no callback; `Some(false)`: only bound ones.
    pub unmatched: Option<bool>,
    /// Only ids older than this (ids are uuid v7, so time-ordered).
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// Newest first.
pub async fn list(db: &impl GenericClient, tenant: &TenantId, f: &ListFilter) -> Result<Vec<RecordingRow>, StoreError> {
    let rows = db
        .query(
            &format!(
                "SELECT {COLUMNS} FROM recordings r LEFT JOIN callbacks c ON c.id = r.callback_id
                 WHERE r.tenant_id = $1
                   AND ($2::text IS NULL OR c.order_id = $2)
                   AND ($3::uuid IS NULL OR r.callback_id = $3)
                   AND ($4::bool IS NULL OR (r.callback_id IS NULL) = $4)
                   AND ($5::uuid IS NULL OR r.id < $5)
                 ORDER BY r.id DESC LIMIT $6"
            ),
            &[&tenant.as_str(), &f.order_id, &f.callback_id, &f.unmatched, &f.before, &f.limit],
        )
        .await?;
    Ok(rows.iter().map(from_row).collect())
}

/// The recording shown with a callback: the first one fetched and bound to it.
#[derive(Debug, Clone)]
pub struct RecordingLink {
    pub id: Uuid,
    pub callback_id: Uuid,
    pub size_bytes: i64,
    pub sha256: String,
    /// When it was deleted (or is being), and why: `retention` or `admin`.
    pub deleted: Option<(Option<OffsetDateTime>, String)>,
}

pub async fn for_callbacks(
    db: &impl GenericClient,
    tenant: &TenantId,
    callback_ids: &[Uuid],
) -> Result<Vec<RecordingLink>, StoreError> {
    let rows = db
        .query(
            "SELECT DISTINCT ON (callback_id) id, callback_id, size_bytes, sha256, state, deleted_at, deleted_because
             FROM recordings
             WHERE tenant_id = $1 AND callback_id = ANY($2) AND state IN ('stored', 'deleting', 'deleted')
                   AND sha256 IS NOT NULL
             ORDER BY callback_id, id",
            &[&tenant.as_str(), &callback_ids],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let state: &str = r.get(4);
            let because: Option<String> = r.get(6);
            RecordingLink {
                id: r.get(0),
                callback_id: r.get(1),
                size_bytes: r.get(2),
                sha256: r.get(3),
                deleted: (state != "stored").then(|| (r.get(5), because.unwrap_or_else(|| "retention".into()))),
            }
        })
        .collect())
}

/// A company's configured recordings source and its encrypted FTP password.
pub struct ConfiguredSource {
    pub tenant: TenantId,
    pub source: RecordingsSource,
    pub password_enc: Option<String>,
}

fn configured(r: &Row) -> Option<ConfiguredSource> {
    let tenant = super::tenant_at(r, 0);
    match crate::domain::from_stored(r.get(1)) {
        Ok(source) => Some(ConfiguredSource { tenant, source, password_enc: r.get(2) }),
        Err(e) => {
            tracing::error!(%tenant, error = %crate::telemetry::Chain(&e), "stored recordings settings do not parse; skipped");
            None
        }
    }
}

/// Every company with a recordings source.
pub async fn sources(db: &impl GenericClient) -> Result<Vec<ConfiguredSource>, StoreError> {
    let rows = db
        .query(
            "SELECT tenant_id, settings->'recordings', recordings_password_enc FROM pbx_settings
             WHERE jsonb_typeof(settings->'recordings') = 'object' ORDER BY tenant_id",
            &[],
        )
        .await?;
    Ok(rows.iter().filter_map(configured).collect())
}

pub async fn source(db: &impl GenericClient, tenant: &TenantId) -> Result<Option<ConfiguredSource>, StoreError> {
    let row = db
        .query_opt(
            "SELECT tenant_id, settings->'recordings', recordings_password_enc FROM pbx_settings
             WHERE tenant_id = $1 AND jsonb_typeof(settings->'recordings') = 'object'",
            &[&tenant.as_str()],
        )
        .await?;
    Ok(row.as_ref().and_then(configured))
}

#[cfg(test)]
mod tests {
    use super::number_key;

    #[test]
    fn numbers_compare_by_their_last_ten_digits() {
        assert_eq!(number_key("+7 (916) 123-45-67"), "9161234567");
        assert_eq!(number_key("989161234567"), "9161234567");
        assert_eq!(number_key("101"), "101");
        assert_eq!(number_key("anonymous"), "");
    }
}

/// A stored recording's object: its key, size and SHA-256 (hex), as `recordings migrate` copies it.
#[derive(Debug, Clone)]
pub struct StoredObject {
    pub storage_key: String,
    pub size_bytes: i64,
    pub sha256: String,
}

/// Every stored recording's object, oldest first.
pub async fn stored_objects(db: &impl GenericClient) -> Result<Vec<StoredObject>, StoreError> {
    let rows = db
        .query(
            "SELECT storage_key, size_bytes, sha256 FROM recordings
             WHERE state = 'stored' AND storage_key IS NOT NULL ORDER BY id",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| StoredObject { storage_key: r.get(0), size_bytes: r.get(1), sha256: r.get(2) }).collect())
}

/// Marks for deletion the company's stored recordings older than `before` (by the time in their
/// name, else when first seen), and takes over those a run left `deleting`; at most `limit`.
/// Returns each one's id and storage key, to remove and then [`deleted`].
pub async fn due_for_deletion(
    db: &impl GenericClient,
    tenant: &TenantId,
    before: OffsetDateTime,
    limit: i64,
) -> Result<Vec<(Uuid, Option<String>)>, StoreError> {
    let rows = db
        .query(
            "UPDATE recordings SET state = 'deleting', deleted_because = coalesce(deleted_because, 'retention')
             WHERE id IN (SELECT id FROM recordings
                          WHERE tenant_id = $1 AND (state = 'deleting'
                                OR (state = 'stored' AND coalesce(recorded_at, first_seen_at) < $2))
                          ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING id, storage_key",
            &[&tenant.as_str(), &before, &limit],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Marks one recording for deletion by an admin: its storage key when it has an object to remove
/// (then [`deleted`]); a recording never fetched is deleted at once. None: no such recording.
pub async fn delete_one(
    db: &impl GenericClient,
    tenant: &TenantId,
    id: Uuid,
) -> Result<Option<Option<String>>, StoreError> {
    let row = db
        .query_opt(
            "UPDATE recordings
             SET state = CASE WHEN storage_key IS NULL THEN 'deleted' ELSE 'deleting' END,
                 deleted_at = coalesce(deleted_at, CASE WHEN storage_key IS NULL THEN now() END),
                 deleted_because = coalesce(deleted_because, 'admin'), claim_token = NULL
             WHERE tenant_id = $1 AND id = $2
             RETURNING storage_key, state",
            &[&tenant.as_str(), &id],
        )
        .await?;
    Ok(row.map(|r| r.get::<_, Option<String>>(0).filter(|_| r.get::<_, &str>(1) == "deleting")))
}

/// The recording's object is gone: the row says so, and keeps saying why.
pub async fn deleted(db: &impl GenericClient, id: Uuid) -> Result<(), StoreError> {
    db.execute(
        "UPDATE recordings SET state = 'deleted', storage_key = NULL, deleted_at = now()
         WHERE id = $1 AND state = 'deleting'",
        &[&id],
    )
    .await?;
    Ok(())
}
