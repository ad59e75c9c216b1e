//! One sync run for one company: list the recordings directory (and its recent date
//! subdirectories), note the new files, download those that are finished (each claimed in the
//! database first, so it is fetched once however many runs overlap), then bind what can be bound.
//!
//! A file is finished when the call its name refers to has ended, or else when its size stays
//! the same between two looks (MixMonitor writes under the final name while the call goes on).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use secrecy::SecretString;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::source::{join, Endpoint, RemoteFile, Session, SourceFailure};
use super::Recordings;
use crate::domain::callback::Status;
use crate::domain::company::TenantId;
use crate::domain::recording::{content_type, DateSubdirs, NameFields, NamePattern};
use crate::domain::settings::RecordingsSource;
use crate::store::recordings::{Candidate, Claim, ListedFile};
use crate::store::{self, StoreError};
use crate::telemetry::Chain;

/// How long a new file must keep its size to count as finished when no ended call vouches for it.
const SETTLE: Duration = Duration::from_secs(2);
/// A file that failed this many times is not tried again (it stays listed with its error).
const MAX_ATTEMPTS: i32 = 10;

/// What a run did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SyncReport {
    /// Recording files listed: names matching the pattern, not older than `keep_looking_h`.
    pub seen: u64,
    /// Of those, seen for the first time.
    pub new: u64,
    pub fetched: u64,
    /// Recordings bound to their callback (fetched by this run or earlier).
    pub bound: u64,
    /// Fetched by this run and bound to no callback yet (kept; bound when their call appears).
    pub unmatched: u64,
    pub failed: u64,
    /// Left for a later run: their call is still going on, or the file is still growing.
    pub waiting: u64,
    pub bytes: u64,
    /// Recordings deleted by the company's retention in this run.
    pub deleted: u64,
    pub duration_ms: u64,
    pub failures: Vec<FileFailure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileFailure {
    pub file: String,
    pub error: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("this company has no recordings source; save one with PUT /v1/admin/pbx (recordings)")]
    NotConfigured,
    #[error("the stored FTP password cannot be decrypted (was DIALBACK_SECRETS_KEY changed?); save it again")]
    PasswordUndecryptable,
    #[error(transparent)]
    Ftp(#[from] SourceFailure),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SyncError {
    pub fn kind(&self) -> &'static str {
        match self {
            SyncError::NotConfigured => "not_configured",
            SyncError::PasswordUndecryptable => "password_undecryptable",
            SyncError::Ftp(e) => e.kind(),
            SyncError::Store(_) => "database",
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Ftp(#[from] SourceFailure),
    #[error("storing the recording failed: {0}")]
    Storage(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("another run took the download over (its claim lapsed)")]
    ClaimLost,
}

/// What the download workers add up.
#[derive(Default)]
struct Tally {
    report: SyncReport,
    fetched: Vec<Uuid>,
}

impl Recordings {
    /// Runs one sync for `tenant` now; logs and counts its outcome.
    pub async fn sync(&self, tenant: &TenantId) -> Result<SyncReport, SyncError> {
        let started = Instant::now();
        // Retention holds whether or not the FTP server answers.
        let deleted = match self.apply_retention(tenant).await {
            Ok(deleted) => deleted,
            Err(e) => {
                tracing::warn!(%tenant, error = %Chain(&e), "recordings retention could not run; the next sync tries again");
                0
            }
        };
        let result = self.run(tenant).await.map(|report| SyncReport { deleted, ..report });
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        metrics::counter!("dialback_recordings_sync_runs_total", "tenant" => tenant.to_string(), "outcome" => outcome)
            .increment(1);
        let ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(mut report) => {
                report.duration_ms = ms;
                let r = &report;
                tracing::info!(
                    %tenant,
                    seen = r.seen,
                    new = r.new,
                    fetched = r.fetched,
                    bound = r.bound,
                    unmatched = r.unmatched,
                    failed = r.failed,
                    waiting = r.waiting,
                    bytes = r.bytes,
                    ms,
                    "recordings synced"
                );
                Ok(report)
            }
            Err(e) => {
                tracing::warn!(%tenant, kind = e.kind(), error = %Chain(&e), ms, "recordings sync failed");
                Err(e)
            }
        }
    }

    async fn run(&self, tenant: &TenantId) -> Result<SyncReport, SyncError> {
        let now = OffsetDateTime::now_utc();
        let (source, endpoint) = self.source(tenant).await?;
        let pattern = NamePattern::compile(&source.filename_pattern).map_err(|_| SyncError::NotConfigured)?;
        self.sweep_partials().await;
        let mut session = Session::open(&endpoint).await?;
        let listed = match list_recordings(&mut session, &source, &pattern, now).await {
            Ok(listed) => listed,
            Err(e) => {
                session.close().await;
                return Err(e.into());
            }
        };
        let mut report = SyncReport { seen: listed.len() as u64, ..SyncReport::default() };
        let files: Vec<ListedFile> = listed.iter().map(|(f, fields)| listed_file(f, fields)).collect();
        let db = store::client(&self.db).await?;
        report.new = store::recordings::discover(&**db, tenant, &files).await?.len() as u64;
        metrics::counter!("dialback_recordings_seen_total").increment(report.new);
        let paths: Vec<&str> = files.iter().map(|f| f.remote_path).collect();
        let candidates = store::recordings::candidates(&**db, tenant, &paths, SETTLE).await?;
        drop(db);
        let sizes: HashMap<&str, u64> = listed.iter().map(|(f, _)| (f.path.as_str(), f.size)).collect();
        let ready = self.finished(&mut session, candidates, &sizes, &mut report).await?;
        let fetched = self.download_all(tenant, &endpoint, session, ready, &mut report).await;
        self.bind_pending(tenant, &source, now, &fetched, &mut report).await?;
        Ok(report)
    }

    /// The company's source and an endpoint with its decrypted password.
    async fn source(&self, tenant: &TenantId) -> Result<(RecordingsSource, Endpoint), SyncError> {
        let db = store::client(&self.db).await?;
        let configured = store::recordings::source(&**db, tenant).await?.ok_or(SyncError::NotConfigured)?;
        let encrypted = configured.password_enc.ok_or(SyncError::NotConfigured)?;
        let password = self
            .secrets
            .decrypt(&encrypted, &Self::password_context(tenant))
            .map_err(|_| SyncError::PasswordUndecryptable)?;
        let timeout = Duration::from_millis(self.config.ftp_timeout_ms);
        let endpoint = Endpoint::new(&configured.source, SecretString::from(password), timeout);
        Ok((configured.source, endpoint))
    }

    fn lease(&self) -> Duration {
        Duration::from_secs(self.config.claim_lease_s)
    }

    /// Removes what crashed downloads left behind. A live download writes far more often than
    /// this, and its claim would have lapsed by then anyway.
    pub async fn sweep_partials(&self) {
        let idle = (self.lease() * 2).max(Duration::from_millis(self.config.ftp_timeout_ms * 2));
        match self.storage.sweep(idle).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(files = n, "removed partial recordings left by interrupted downloads"),
            Err(e) => tracing::warn!(error = %Chain(&e), "cannot sweep partial recordings"),
        }
    }

    /// Splits the claimable files into those finished now and those to leave for later.
    async fn finished(
        &self,
        session: &mut Session,
        candidates: Vec<Candidate>,
        sizes: &HashMap<&str, u64>,
        report: &mut SyncReport,
    ) -> Result<Vec<Candidate>, StoreError> {
        let db = store::client(&self.db).await?;
        let (mut ready, mut unsettled) = (Vec::new(), Vec::new());
        for c in candidates {
            let listed = sizes.get(c.remote_path.as_str()).copied().unwrap_or_default() as i64;
            match c.call_status.as_deref().and_then(Status::parse) {
                Some(status) if !status.is_terminal() => report.waiting += 1,
                Some(Status::Completed | Status::Failed | Status::Canceled) => ready.push(c),
                _ if listed != c.remote_size => {
                    store::recordings::note_size(&**db, c.id, listed).await?;
                    report.waiting += 1;
                }
                _ if c.seen_before => ready.push(c),
                _ => unsettled.push(c),
            }
        }
        if !unsettled.is_empty() {
            tokio::time::sleep(SETTLE).await;
            for c in unsettled {
                match session.size(&c.remote_path).await {
                    Ok(size) if size as i64 == c.remote_size => ready.push(c),
                    Ok(size) => {
                        store::recordings::note_size(&**db, c.id, size as i64).await?;
                        report.waiting += 1;
                    }
                    Err(e) => {
                        tracing::debug!(file = %c.remote_path, error = %Chain(&e), "cannot check the size; later");
                        report.waiting += 1;
                    }
                }
            }
        }
        Ok(ready)
    }

    /// Downloads `ready` on up to `parallel_downloads` FTP sessions; returns the ids fetched.
    async fn download_all(
        &self,
        tenant: &TenantId,
        endpoint: &Endpoint,
        session: Session,
        ready: Vec<Candidate>,
        report: &mut SyncReport,
    ) -> Vec<Uuid> {
        if ready.is_empty() {
            session.close().await;
            return Vec::new();
        }
        let workers = self.config.parallel_downloads.min(ready.len());
        let queue = Mutex::new(VecDeque::from(ready));
        let tally = Mutex::new(Tally { report: std::mem::take(report), fetched: Vec::new() });
        let mut listing_session = Some(session);
        let all = (0..workers).map(|_| self.worker(tenant, endpoint, listing_session.take(), &queue, &tally));
        futures_util::future::join_all(all).await;
        let tally = tally.into_inner().expect("tally lock");
        *report = tally.report;
        tally.fetched
    }

    async fn worker(
        &self,
        tenant: &TenantId,
        endpoint: &Endpoint,
        mut session: Option<Session>,
        queue: &Mutex<VecDeque<Candidate>>,
        tally: &Mutex<Tally>,
    ) {
        loop {
            let Some(file) = queue.lock().expect("queue lock").pop_front() else { break };
            if session.is_none() {
                match Session::open(endpoint).await {
                    Ok(opened) => session = Some(opened),
                    Err(e) => {
                        // The file is not claimed yet: it stays for the next run.
                        tracing::warn!(%tenant, error = %Chain(&e), "cannot open an FTP session for downloading");
                        return;
                    }
                }
            }
            let claim = match self.claim(tenant, &file).await {
                Ok(Some(claim)) => claim,
                Ok(None) => continue, // another run has it, or had it already
                Err(e) => {
                    tracing::warn!(%tenant, file = %file.remote_path, error = %Chain(&e), "cannot claim the download");
                    continue;
                }
            };
            let ftp = session.as_mut().expect("opened above");
            let started = Instant::now();
            match self.fetch(ftp, &file, &claim).await {
                Ok(bytes) => {
                    metrics::counter!("dialback_recordings_fetched_total", "tenant" => tenant.to_string()).increment(1);
                    metrics::counter!("dialback_recordings_bytes_total", "tenant" => tenant.to_string())
                        .increment(bytes);
                    tracing::info!(%tenant, file = %file.remote_path, bytes, attempt = claim.attempt,
                        ms = started.elapsed().as_millis() as u64, "recording fetched");
                    let mut tally = tally.lock().expect("tally lock");
                    tally.report.fetched += 1;
                    tally.report.bytes += bytes;
                    tally.fetched.push(file.id);
                }
                Err(e) => {
                    // After a failed transfer the control connection's state is unknown: start afresh.
                    session = None;
                    self.record_failure(tenant, &file, &claim, e, tally).await;
                }
            }
        }
        if let Some(session) = session {
            session.close().await;
        }
    }

    async fn claim(&self, tenant: &TenantId, file: &Candidate) -> Result<Option<Claim>, StoreError> {
        let db = store::client(&self.db).await?;
        store::recordings::claim(&**db, tenant, file.id, self.lease()).await
    }

    /// Streams one file into storage, hashing it and keeping the claim alive; records it stored.
    async fn fetch(&self, ftp: &mut Session, file: &Candidate, claim: &Claim) -> Result<u64, FetchError> {
        let key = storage_key(file, claim);
        let mut object = self.storage.create(&key).await.map_err(FetchError::Storage)?;
        let mut download = ftp.download(&file.remote_path).await?;
        let mut sha256 = digest::Context::new(&digest::SHA256);
        let mut size = 0u64;
        let mut last_heartbeat = Instant::now();
        while let Some(chunk) = download.chunk().await? {
            sha256.update(chunk);
            size += chunk.len() as u64;
            object.write(chunk).await.map_err(FetchError::Storage)?;
            if last_heartbeat.elapsed() >= self.lease() / 3 {
                let db = store::client(&self.db).await?;
                if !store::recordings::heartbeat(&**db, file.id, claim, self.lease()).await? {
                    return Err(FetchError::ClaimLost);
                }
                last_heartbeat = Instant::now();
            }
        }
        // Only the server's 226 says the whole file came; a cut transfer fails here.
        download.finish().await?;
        object.commit().await.map_err(FetchError::Storage)?;
        let sha256 = hex::encode(sha256.finish().as_ref());
        let db = store::client(&self.db).await?;
        if !store::recordings::complete(&**db, file.id, claim, &key, size as i64, &sha256).await? {
            let _ = self.storage.remove(&key).await;
            return Err(FetchError::ClaimLost);
        }
        Ok(size)
    }

    async fn record_failure(
        &self,
        tenant: &TenantId,
        file: &Candidate,
        claim: &Claim,
        error: FetchError,
        tally: &Mutex<Tally>,
    ) {
        if matches!(error, FetchError::ClaimLost) {
            tracing::info!(%tenant, file = %file.remote_path, "download taken over by another run");
            return;
        }
        let kind = match &error {
            FetchError::Ftp(e) => e.kind(),
            FetchError::Storage(_) => "storage",
            _ => "database",
        };
        let retry_after = retry_delay(claim.attempt);
        tracing::warn!(%tenant, file = %file.remote_path, attempt = claim.attempt, kind, error = %Chain(&error),
            retry_in_s = retry_after.map(|d| d.as_secs()), "recording download failed");
        metrics::counter!("dialback_recordings_failed_total", "kind" => kind).increment(1);
        let message = error.to_string();
        match store::client(&self.db).await {
            Ok(db) => {
                if let Err(e) = store::recordings::fail(&**db, file.id, claim, &message, retry_after).await {
                    tracing::warn!(%tenant, file = %file.remote_path, error = %Chain(&e), "cannot record the failure; the claim will lapse");
                }
            }
            Err(e) => tracing::warn!(%tenant, error = %Chain(&e), "cannot record the failure; the claim will lapse"),
        }
        let mut tally = tally.lock().expect("tally lock");
        tally.report.failed += 1;
        tally.report.failures.push(FileFailure { file: file.remote_path.clone(), error: message });
    }

    /// Binds stored, unbound recordings of the last `keep_looking_h`: by the callback id in their
    /// name, else by numbers and time.
    async fn bind_pending(
        &self,
        tenant: &TenantId,
        source: &RecordingsSource,
        now: OffsetDateTime,
        fetched: &[Uuid],
        report: &mut SyncReport,
    ) -> Result<(), StoreError> {
        let since = now - time::Duration::hours(i64::from(source.keep_looking_h));
        let db = store::client(&self.db).await?;
        let mut bound = store::recordings::bind_by_call_ref(&**db, tenant, since).await?;
        for file in store::recordings::unbound_with_numbers(&**db, tenant, since).await? {
            let found = store::recordings::find_by_numbers(
                &**db,
                tenant,
                file.exten.as_deref(),
                file.src.as_deref(),
                file.recorded_at,
            )
            .await?;
            if let Some(callback) = found {
                bound.extend(store::recordings::bind(&**db, tenant, file.id, callback, "numbers_time").await?);
            }
        }
        if bound.iter().any(|b| b.deliveries > 0) {
            self.bus.deliveries_queued();
        }
        let now = OffsetDateTime::now_utc();
        for b in &bound {
            metrics::counter!("dialback_recordings_bound_total", "tenant" => tenant.to_string(), "matched_by" => b.matched_by.clone())
                .increment(1);
            if let Some(ended) = b.call_ended_at {
                metrics::gauge!("dialback_recordings_lag_seconds").set((now - ended).as_seconds_f64().max(0.0));
            }
            tracing::info!(%tenant, file = %b.file_name, callback_id = %b.callback_id, matched_by = %b.matched_by,
                "recording bound to its callback");
        }
        report.bound = bound.len() as u64;
        report.unmatched = fetched.iter().filter(|id| !bound.iter().any(|b| b.id == **id)).count() as u64;
        metrics::counter!("dialback_recordings_unmatched_total").increment(report.unmatched);
        Ok(())
    }
}

/// The recording files of the directory and its recent date subdirectories: names that match
/// the pattern, not hidden (temporary), not older than `keep_looking_h`.
async fn list_recordings(
    session: &mut Session,
    source: &RecordingsSource,
    pattern: &NamePattern,
    now: OffsetDateTime,
) -> Result<Vec<(RemoteFile, NameFields)>, SourceFailure> {
    let clock = source.pbx_clock();
    let oldest = now - time::Duration::hours(i64::from(source.keep_looking_h));
    // Listing the directory itself first also tells a wrong directory from an empty day.
    let mut files = session.list(&source.directory).await?;
    if let Some(layout) = source.date_subdirs.as_deref().and_then(|l| DateSubdirs::parse(l).ok()) {
        for dir in layout.recent(now, source.keep_looking_h, clock) {
            match session.list(&join(&source.directory, &dir)).await {
                Ok(more) => files.extend(more),
                Err(e) if e.is_missing() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(files
        .into_iter()
        .filter(|f| !f.name.starts_with('.'))
        .filter_map(|f| {
            let fields = pattern.parse(&f.name, clock)?;
            let when = fields.recorded_at.or(f.modified);
            when.is_none_or(|t| t >= oldest).then_some((f, fields))
        })
        .collect())
}

fn listed_file<'a>(file: &'a RemoteFile, fields: &'a NameFields) -> ListedFile<'a> {
    ListedFile {
        remote_path: &file.path,
        file_name: &file.name,
        size: file.size as i64,
        content_type: content_type(&file.name),
        call_ref: fields.call_ref,
        exten: fields.exten.as_deref(),
        src: fields.src.as_deref(),
        recorded_at: fields.recorded_at,
    }
}

/// `2026/11/<recording id>-<attempt>.wav`: each attempt writes its own object, so a run that lost
/// its claim can remove what it wrote without touching the winner's.
fn storage_key(file: &Candidate, claim: &Claim) -> String {
    let extension = file
        .file_name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .filter(|e| !e.is_empty() && e.len() <= 8 && e.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "bin".into());
    let month = file.first_seen_at;
    format!("{:04}/{:02}/{}-{}.{extension}", month.year(), month.month() as u8, file.id, claim.attempt)
}

/// 0 s after the first failure (the next run tries again), then 30 s, 90 s, 210 s, ... up to an
/// hour; after [`MAX_ATTEMPTS`] never.
fn retry_delay(attempt: i32) -> Option<Duration> {
    if attempt >= MAX_ATTEMPTS {
        return None;
    }
    let steps = (1u64 << (attempt.clamp(1, 16) - 1)) - 1;
    Some(Duration::from_secs((30 * steps).min(3600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_and_stop() {
        let delays: Vec<_> = (1..=4).map(|a| retry_delay(a).unwrap().as_secs()).collect();
        assert_eq!(delays, [0, 30, 90, 210]);
        assert_eq!(retry_delay(9), Some(Duration::from_secs(3600)));
        assert_eq!(retry_delay(MAX_ATTEMPTS), None);
    }

    #[test]
    fn storage_keys_are_plain_and_per_attempt() {
        let file = Candidate {
            id: Uuid::nil(),
            remote_path: "/r/x.WAV".into(),
            file_name: "x.WAV".into(),
            remote_size: 1,
            first_seen_at: time::macros::datetime!(2026-03-07 10:00 UTC),
            seen_before: false,
            call_status: None,
        };
        let claim = Claim { token: Uuid::nil(), attempt: 2 };
        assert_eq!(storage_key(&file, &claim), format!("2026/03/{}-2.wav", Uuid::nil()));
        let odd = Candidate { file_name: "noext".into(), ..file };
        assert!(storage_key(&odd, &claim).ends_with(".bin"));
    }
}
