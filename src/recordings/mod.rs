//! Call recordings: fetched from each company's FTP server and bound to the callbacks (and so the
//! orders) they record.
//!
//! - [`source`]: the PBX side whatever the protocol: endpoint, listing, failures, a session.
//! - [`ftp`]: one FTP/FTPS session, binary mode, a timeout around every step.
//! - [`sftp`]: one SFTP session, the server's host key pinned, password or key login.
//! - [`storage`]: where fetched files are kept (a trait; the filesystem implementation).
//! - [`s3`]: the S3-compatible implementation every host shares, and which of the two to open.
//! - [`migrate`]: copying one host's files into the object store (`dialback recordings migrate`).
//! - [`retention`]: deleting recordings on the company's schedule or an admin's word.
//! - [`sync`]: one run for one company: list, note new files, download once, bind.
//! - [`scheduler`]: the background task that runs each company's sync every poll interval, with
//!   backoff while its FTP server is failing.
//!
//! Everything that must hold across restarts, concurrent runs and replicas (what was seen, who is
//! downloading what, what was fetched) is in the `recordings` table, never in memory.

pub mod ftp;
pub mod migrate;
pub mod retention;
pub mod s3;
pub mod scheduler;
pub mod sftp;
pub mod source;
pub mod storage;
pub mod sync;

use std::sync::Arc;

use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::RecordingsConfig;
use crate::crypto::SecretsKey;
use crate::domain::company::TenantId;
use crate::events::Bus;
use crate::store::recordings::RecordingLink;
use storage::RecordingStorage;
pub use sync::{SyncError, SyncReport};

/// What an audio URL's signature is for (see [`SecretsKey::sign`]).
const AUDIO_URL_PURPOSE: &str = "recording-audio-url";
/// How long a signed audio URL plays: enough to listen and seek, short enough to be no lasting
/// credential if it leaks.
const AUDIO_URL_TTL_S: i64 = 3600;

/// Why a signed audio URL does not play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioUrlRefused {
    /// Not signed by us for this recording and company (tampered with, or made up).
    BadSignature,
    Expired,
}

/// The recordings service: shared by the HTTP handlers and the scheduler.
pub struct Recordings {
    db: deadpool_postgres::Pool,
    storage: Arc<dyn RecordingStorage>,
    secrets: SecretsKey,
    config: RecordingsConfig,
    /// Told when a binding queued webhook deliveries (`recording.bound`).
    bus: Bus,
}

impl Recordings {
    pub fn new(
        db: deadpool_postgres::Pool,
        storage: Arc<dyn RecordingStorage>,
        secrets: SecretsKey,
        config: RecordingsConfig,
        bus: Bus,
    ) -> Arc<Self> {
        Arc::new(Self { db, storage, secrets, config, bus })
    }

    pub fn storage(&self) -> &dyn RecordingStorage {
        self.storage.as_ref()
    }

    /// The context a company's FTP password is encrypted under: the tenant and the purpose, so it
    /// neither decrypts for another company nor passes for the AMI secret.
    pub fn password_context(tenant: &TenantId) -> String {
        format!("{tenant}/recordings")
    }

    /// A URL that plays the recording without a bearer token until it expires: a browser's
    /// `<audio>` element cannot send an Authorization header. Only someone allowed to hear the
    /// recording is ever given one.
    pub fn audio_url(&self, tenant: &TenantId, id: Uuid) -> String {
        let expires = OffsetDateTime::now_utc().unix_timestamp() + AUDIO_URL_TTL_S;
        let sig = self.secrets.sign(AUDIO_URL_PURPOSE, &audio_url_message(tenant, id, expires));
        format!("/v1/recordings/{id}/audio?tenant={tenant}&expires={expires}&sig={sig}")
    }

    /// Checks a signed audio URL's parts.
    pub fn check_audio_url(&self, tenant: &TenantId, id: Uuid, expires: i64, sig: &str) -> Result<(), AudioUrlRefused> {
        if !self.secrets.verify(AUDIO_URL_PURPOSE, &audio_url_message(tenant, id, expires), sig) {
            return Err(AudioUrlRefused::BadSignature);
        }
        if expires < OffsetDateTime::now_utc().unix_timestamp() {
            return Err(AudioUrlRefused::Expired);
        }
        Ok(())
    }

    /// The recording as shown inside a callback of `tenant`.
    pub fn link(&self, tenant: &TenantId, recording: &RecordingLink) -> Value {
        let (deleted_at, deleted_because) = match &recording.deleted {
            Some((at, because)) => (json!(crate::view::rfc3339(*at)), json!(because)),
            None => (Value::Null, Value::Null),
        };
        json!({
            "id": recording.id,
            "size_bytes": recording.size_bytes,
            "sha256": recording.sha256,
            "audio_url": if recording.deleted.is_none() { json!(self.audio_url(tenant, recording.id)) } else { Value::Null },
            "deleted_at": deleted_at,
            "deleted_because": deleted_because,
        })
    }
}

fn audio_url_message(tenant: &TenantId, id: Uuid, expires: i64) -> String {
    format!("{tenant}\n{id}\n{expires}")
}
