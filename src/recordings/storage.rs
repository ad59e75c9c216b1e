//! Where fetched recordings are kept: an interface (object storage is in s3.rs), and the
//! filesystem implementation under `DIALBACK_RECORDINGS_DIR`.
//!
//! A recording is visible under its key only once complete: its bytes go to a temporary file in
//! `.partial/`, which is fsynced and then renamed into place (and the directory fsynced), so a
//! crash or a cut download never leaves half a file where a reader could find it. Whatever a
//! crash leaves in `.partial/` is swept later.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// The bytes of an object, in chunks.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// Storage of recordings by key (`2026/11/<recording id>-<attempt>.wav`).
pub trait RecordingStorage: Send + Sync {
    /// Starts writing `key`; nothing is visible under it until [`ObjectWriter::commit`]. Dropping
    /// the writer abandons the object.
    fn create<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<Box<dyn ObjectWriter>>>;
    /// `len` bytes of `key` from `start`.
    fn read<'a>(&'a self, key: &'a str, start: u64, len: u64) -> BoxFuture<'a, io::Result<ByteStream>>;
    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<()>>;
    /// Deletes abandoned partial objects untouched for `idle`; returns how many.
    fn sweep(&self, idle: Duration) -> BoxFuture<'_, io::Result<usize>>;
}

pub trait ObjectWriter: Send {
    fn write<'a>(&'a mut self, chunk: &'a [u8]) -> BoxFuture<'a, io::Result<()>>;
    /// Makes the object durable and visible under its key.
    fn commit(self: Box<Self>) -> BoxFuture<'static, io::Result<()>>;
}

/// Recordings as files under a root directory.
pub struct FsStorage {
    root: PathBuf,
}

const PARTIAL: &str = ".partial";

impl FsStorage {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// The file of `key`; keys are relative paths of plain names (no `..`, no hidden parts).
    fn path(&self, key: &str) -> io::Result<PathBuf> {
        let relative = Path::new(key);
        let plain =
            relative.components().all(|c| matches!(c, Component::Normal(p) if !p.to_string_lossy().starts_with('.')));
        if key.is_empty() || !plain {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid storage key {key:?}")));
        }
        Ok(self.root.join(relative))
    }
}

impl RecordingStorage for FsStorage {
    fn create<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<Box<dyn ObjectWriter>>> {
        Box::pin(async move {
            let target = self.path(key)?;
            let partial_dir = self.root.join(PARTIAL);
            tokio::fs::create_dir_all(&partial_dir).await?;
            let partial = partial_dir.join(format!("{}.part", uuid::Uuid::new_v4().simple()));
            let file = tokio::fs::File::create(&partial).await?;
            Ok(Box::new(FsWriter { file: Some(file), partial, target }) as Box<dyn ObjectWriter>)
        })
    }

    fn read<'a>(&'a self, key: &'a str, start: u64, len: u64) -> BoxFuture<'a, io::Result<ByteStream>> {
        Box::pin(async move {
            let mut file = tokio::fs::File::open(self.path(key)?).await?;
            file.seek(io::SeekFrom::Start(start)).await?;
            let chunks = futures_util::stream::unfold((file.take(len), false), |(mut body, done)| async move {
                if done {
                    return None;
                }
                let mut buf = vec![0u8; 64 * 1024];
                match body.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok(Bytes::from(buf)), (body, false)))
                    }
                    Err(e) => Some((Err(e), (body, true))),
                }
            });
            Ok(Box::pin(chunks) as ByteStream)
        })
    }

    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            match tokio::fs::remove_file(self.path(key)?).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
    }

    fn sweep(&self, idle: Duration) -> BoxFuture<'_, io::Result<usize>> {
        Box::pin(async move {
            let mut entries = match tokio::fs::read_dir(self.root.join(PARTIAL)).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(e),
            };
            let mut removed = 0;
            while let Some(entry) = entries.next_entry().await? {
                let modified = entry.metadata().await?.modified()?;
                if SystemTime::now().duration_since(modified).unwrap_or_default() >= idle {
                    tokio::fs::remove_file(entry.path()).await?;
                    removed += 1;
                }
            }
            Ok(removed)
        })
    }
}

struct FsWriter {
    file: Option<tokio::fs::File>,
    partial: PathBuf,
    target: PathBuf,
}

impl ObjectWriter for FsWriter {
    fn write<'a>(&'a mut self, chunk: &'a [u8]) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move { self.file.as_mut().expect("open until committed").write_all(chunk).await })
    }

    fn commit(mut self: Box<Self>) -> BoxFuture<'static, io::Result<()>> {
        Box::pin(async move {
            let mut file = self.file.take().expect("committed once");
            file.flush().await?;
            file.sync_all().await?;
            drop(file);
            let dir = self.target.parent().expect("keys have a parent directory").to_owned();
            tokio::fs::create_dir_all(&dir).await?;
            tokio::fs::rename(&self.partial, &self.target).await?;
            // The rename is durable once the directory is.
            tokio::fs::File::open(&dir).await?.sync_all().await?;
            self.partial = PathBuf::new();
            Ok(())
        })
    }
}

impl Drop for FsWriter {
    /// An abandoned (failed, cancelled) download leaves nothing behind.
    fn drop(&mut self) {
        if !self.partial.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    fn temp_root() -> PathBuf {
        std::env::temp_dir().join(format!("dialback-storage-{}", uuid::Uuid::new_v4().simple()))
    }

    async fn read_all(storage: &FsStorage, key: &str, start: u64, len: u64) -> Vec<u8> {
        let chunks: Vec<Bytes> = storage.read(key, start, len).await.unwrap().try_collect().await.unwrap();
        chunks.concat()
    }

    #[tokio::test]
    async fn an_object_appears_only_when_committed_and_reads_back_by_range() {
        let root = temp_root();
        let storage = FsStorage::new(root.clone());
        let mut writer = storage.create("2026/11/a-1.wav").await.unwrap();
        writer.write(b"RIFF\r\n\0\0").await.unwrap();
        writer.write(b"data").await.unwrap();
        assert!(!root.join("2026/11/a-1.wav").exists(), "not visible before commit");
        writer.commit().await.unwrap();
        assert_eq!(std::fs::read(root.join("2026/11/a-1.wav")).unwrap(), b"RIFF\r\n\0\0data");
        assert_eq!(read_all(&storage, "2026/11/a-1.wav", 4, 4).await, b"\r\n\0\0");
        assert_eq!(std::fs::read_dir(root.join(PARTIAL)).unwrap().count(), 0);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test]
    async fn an_abandoned_write_leaves_nothing_and_old_partials_are_swept() {
        let root = temp_root();
        let storage = FsStorage::new(root.clone());
        let mut writer = storage.create("x/b.wav").await.unwrap();
        writer.write(b"half").await.unwrap();
        drop(writer);
        assert_eq!(std::fs::read_dir(root.join(PARTIAL)).unwrap().count(), 0);
        assert!(!root.join("x/b.wav").exists());
        std::fs::write(root.join(PARTIAL).join("crashed.part"), b"half").unwrap();
        assert_eq!(storage.sweep(Duration::from_secs(3600)).await.unwrap(), 0, "recent partials stay");
        assert_eq!(storage.sweep(Duration::ZERO).await.unwrap(), 1);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn keys_cannot_leave_the_root() {
        let storage = FsStorage::new(PathBuf::from("/srv/rec"));
        for key in ["../etc/passwd", "/etc/passwd", "a/../../b", ".partial/x", "", "a/.hidden"] {
            assert!(storage.path(key).is_err(), "{key}");
        }
        assert_eq!(storage.path("2026/11/a.wav").unwrap(), PathBuf::from("/srv/rec/2026/11/a.wav"));
    }
}
