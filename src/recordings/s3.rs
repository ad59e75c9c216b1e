//! Recordings in an S3-compatible store (`recordings.url = s3://BUCKET/PREFIX`), shared by every
//! dialback host: whichever process fetched a recording, any process serves it.
//!
//! Complete-or-absent as on the filesystem: an object is written as a multipart upload that is
//! completed only on commit; a writer dropped before (a cut download) aborts its upload, so
//! nothing is visible under the key. An upload a crash left open is the store's to expire: set
//! the bucket's lifecycle rule "abort incomplete multipart uploads after N days" (README).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart};
use secrecy::ExposeSecret;

use super::storage::{ByteStream, ObjectWriter, RecordingStorage};
use crate::config::{s3_location, RecordingsConfig};

/// Parts of a multipart upload (S3's smallest part but the last).
const PART_BYTES: usize = 5 * 1024 * 1024;
/// Parts in flight per upload.
const PARTS_IN_FLIGHT: usize = 2;

pub struct S3Storage {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// `s3://BUCKET/PREFIX`, for messages.
    url: String,
}

fn io_error(e: object_store::Error) -> io::Error {
    let kind = match e {
        object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("{:#}", anyhow::Error::from(e)))
}

impl S3Storage {
    /// The store `config.url` names, connected as `config.s3` says (each empty field from the AWS
    /// variables). Nothing is asked of the store until it is used: see [`S3Storage::check`].
    pub fn open(config: &RecordingsConfig) -> anyhow::Result<Self> {
        let (bucket, prefix) = s3_location(&config.url).map_err(anyhow::Error::msg)?;
        let s3 = &config.s3;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&bucket);
        if !s3.endpoint.is_empty() {
            builder = builder.with_endpoint(&s3.endpoint);
        }
        if !s3.region.is_empty() {
            builder = builder.with_region(&s3.region);
        }
        if !s3.access_key_id.is_empty() {
            builder = builder.with_access_key_id(&s3.access_key_id);
        }
        if let Some(secret) = &s3.secret_access_key {
            builder = builder.with_secret_access_key(secret.expose_secret());
        }
        if let Some(allow) = s3.allow_http {
            builder = builder.with_allow_http(allow);
        }
        let store = builder.build().map_err(|e| anyhow::anyhow!("recordings.url {}: {e}", config.url))?;
        Ok(Self { store: Arc::new(store), prefix, url: config.url.clone() })
    }

    fn path(&self, key: &str) -> io::Result<Path> {
        let plain = !key.is_empty() && key.split('/').all(|part| !part.is_empty() && !part.starts_with('.'));
        if !plain {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid storage key {key:?}")));
        }
        let full = if self.prefix.is_empty() { key.to_owned() } else { format!("{}/{key}", self.prefix) };
        Path::parse(&full).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
    }

    /// Whether the bucket answers with these credentials (a listing of the prefix): what start-up
    /// logs, so a wrong endpoint or key shows at once rather than at the first recording.
    pub async fn check(&self, limit: Duration) -> Result<(), String> {
        let prefix = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()));
        match tokio::time::timeout(limit, self.store.list_with_delimiter(prefix.as_ref())).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("{}: {:#}", self.url, anyhow::Error::from(e))),
            Err(_) => Err(format!("{}: no answer within {limit:?}", self.url)),
        }
    }

    /// The object's size, if it exists (for `recordings migrate`).
    pub async fn size(&self, key: &str) -> io::Result<Option<u64>> {
        match self.store.head(&self.path(key)?).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(io_error(e)),
        }
    }
}

impl RecordingStorage for S3Storage {
    fn create<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<Box<dyn ObjectWriter>>> {
        Box::pin(async move {
            let upload = self.store.put_multipart(&self.path(key)?).await.map_err(io_error)?;
            let writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            Ok(Box::new(S3Writer { upload: Some(writer) }) as Box<dyn ObjectWriter>)
        })
    }

    fn read<'a>(&'a self, key: &'a str, start: u64, len: u64) -> BoxFuture<'a, io::Result<ByteStream>> {
        Box::pin(async move {
            let path = self.path(key)?;
            if len == 0 {
                // S3 refuses an empty range; there is nothing to read.
                self.store.head(&path).await.map_err(io_error)?;
                return Ok(Box::pin(futures_util::stream::empty()) as ByteStream);
            }
            let options = GetOptions { range: Some(GetRange::Bounded(start..start + len)), ..Default::default() };
            let result = self.store.get_opts(&path, options).await.map_err(io_error)?;
            Ok(Box::pin(result.into_stream().map_err(io_error)) as ByteStream)
        })
    }

    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            match self.store.delete(&self.path(key)?).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(io_error(e)),
            }
        })
    }

    /// Uploads a crash left open are the bucket's lifecycle rule's to abort; none to sweep here.
    fn sweep(&self, _idle: Duration) -> BoxFuture<'_, io::Result<usize>> {
        Box::pin(async { Ok(0) })
    }
}

struct S3Writer {
    upload: Option<WriteMultipart>,
}

impl ObjectWriter for S3Writer {
    fn write<'a>(&'a mut self, chunk: &'a [u8]) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let upload = self.upload.as_mut().expect("open until committed");
            upload.put(Bytes::copy_from_slice(chunk));
            // Bounds what is held in memory: at most a few parts per download.
            upload.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(io_error)
        })
    }

    fn commit(mut self: Box<Self>) -> BoxFuture<'static, io::Result<()>> {
        let upload = self.upload.take().expect("committed once");
        Box::pin(async move { upload.finish().await.map(drop).map_err(io_error) })
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(e) = upload.abort().await {
                        tracing::warn!(error = %crate::telemetry::Chain(&e), "an abandoned recording upload could not be aborted; the bucket's lifecycle rule will");
                    }
                });
            }
        }
    }
}

/// Opens where recordings are kept: the object store `recordings.url` names (asking it once
/// whether it answers, and logging what it said), else the directory.
pub async fn open_storage(config: &crate::config::Config) -> anyhow::Result<Arc<dyn RecordingStorage>> {
    if !config.recordings.url.is_empty() {
        let s3 = S3Storage::open(&config.recordings)?;
        match s3.check(Duration::from_secs(10)).await {
            Ok(()) => tracing::info!(url = config.recordings.url, "recordings are kept in the object store"),
            Err(why) => tracing::error!(
                error = why,
                "the recordings' object store does not answer; recordings fail to store until it does"
            ),
        }
        return Ok(Arc::new(s3));
    }
    let dir = config.recordings_dir.clone().ok_or_else(|| anyhow::anyhow!("recordings_dir is not set"))?;
    Ok(Arc::new(super::storage::FsStorage::new(dir)))
}
