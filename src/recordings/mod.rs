//! Call recordings: fetched from each company's FTP server and bound to the callbacks (and so the
//! orders) they record.
//!
//! - [`ftp`]: one FTP/FTPS session, binary mode, a timeout around every step.
//! - [`matcher`]: what a file name says (callback id, numbers, time) and the date subdirectories.
//! - [`storage`]: where fetched files are kept (a trait; the filesystem implementation).
//! - [`sync`]: one run for one company: list, note new files, download once, bind.
//! - [`scheduler`]: the background task that runs each company's sync every poll interval, with
//!   backoff while its FTP server is failing.
//!
//! Everything that must hold across restarts, concurrent runs and replicas (what was seen, who is
//! downloading what, what was fetched) is in the `recordings` table, never in memory.

pub mod ftp;
pub mod matcher;
pub mod scheduler;
pub mod storage;
pub mod sync;

use std::sync::Arc;

use crate::config::RecordingsConfig;
use crate::crypto::SecretsKey;
use storage::RecordingStorage;
pub use sync::{SyncError, SyncReport};

/// The recordings service: shared by the HTTP handlers and the scheduler.
pub struct Recordings {
    db: deadpool_postgres::Pool,
    storage: Arc<dyn RecordingStorage>,
    secrets: SecretsKey,
    config: RecordingsConfig,
}

impl Recordings {
    pub fn new(
        db: deadpool_postgres::Pool,
        storage: Arc<dyn RecordingStorage>,
        secrets: SecretsKey,
        config: RecordingsConfig,
    ) -> Arc<Self> {
        Arc::new(Self { db, storage, secrets, config })
    }

    pub fn storage(&self) -> &dyn RecordingStorage {
        self.storage.as_ref()
    }

    /// The context a company's FTP password is encrypted under: the tenant and the purpose, so it
    /// neither decrypts for another company nor passes for the AMI secret.
    pub fn password_context(tenant: &str) -> String {
        format!("{tenant}/recordings")
    }
}
