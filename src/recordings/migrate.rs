//! `dialback recordings migrate`: copies the recordings a host kept under `recordings_dir` to the
//! object store `recordings.url` names, so every host can serve them. Resumable: an object already
//! in the store whose bytes hash to what the journal recorded is left alone; each copied object is
//! read back and hashed before it counts. The journal's keys stay as they are (the same keys name
//! the objects), so once it is done the processes switch by setting `recordings.url`.

use aws_lc_rs::digest;
use futures_util::StreamExt;

use super::s3::S3Storage;
use super::storage::{FsStorage, RecordingStorage};
use crate::store;

/// What a run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub total: usize,
    /// Copied and verified in this run.
    pub copied: usize,
    /// In the store already, with the right bytes.
    pub present: usize,
    /// Not on this host's disk (another host's, or deleted): left for the run on that host.
    pub missing: usize,
    pub bytes: u64,
}

/// The SHA-256 (hex) of `len` bytes of `key` in `storage`.
async fn sha256_of(storage: &dyn RecordingStorage, key: &str, len: u64) -> std::io::Result<String> {
    let mut stream = storage.read(key, 0, len).await?;
    let mut hasher = digest::Context::new(&digest::SHA256);
    while let Some(chunk) = stream.next().await {
        hasher.update(&chunk?);
    }
    Ok(hex::encode(hasher.finish()))
}

/// Copies every stored recording from `from` to `to`; `progress` hears each object's outcome.
pub async fn migrate(
    db: &deadpool_postgres::Pool,
    from: &FsStorage,
    to: &S3Storage,
    mut progress: impl FnMut(usize, &Migrated, &str, &str),
) -> anyhow::Result<Migrated> {
    let client = store::client(db).await?;
    let objects = store::recordings::stored_objects(&**client).await?;
    drop(client);
    let mut done = Migrated { total: objects.len(), ..Default::default() };
    for (n, object) in objects.iter().enumerate() {
        let (key, size) = (object.storage_key.as_str(), object.size_bytes as u64);
        if to.size(key).await? == Some(size) && sha256_of(to, key, size).await? == object.sha256 {
            done.present += 1;
            progress(n + 1, &done, key, "already in the store");
            continue;
        }
        let mut source = match from.read(key, 0, size).await {
            Ok(source) => source,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                done.missing += 1;
                progress(n + 1, &done, key, "not on this host: copy it from the host that has it");
                continue;
            }
            Err(e) => return Err(anyhow::Error::from(e).context(format!("reading {key}"))),
        };
        let mut writer = to.create(key).await?;
        while let Some(chunk) = source.next().await {
            writer.write(&chunk?).await?;
        }
        writer.commit().await?;
        let copied = sha256_of(to, key, size).await?;
        anyhow::ensure!(
            copied == object.sha256,
            "{key}: the object store holds bytes whose SHA-256 is {copied}, not the journal's {}: the file on this host \
             differs from what was fetched; it was left in the store for you to look at",
            object.sha256
        );
        done.copied += 1;
        done.bytes += size;
        progress(n + 1, &done, key, "copied and verified");
    }
    Ok(done)
}
