//! An S3-compatible server for the tests: s3s-fs (built by scripts/test into the project's cache),
//! a real HTTP S3 API over a directory of its own, on a port it picks.

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const ACCESS_KEY: &str = "dialback-test";
pub const SECRET_KEY: &str = "dialback-test-secret";

pub struct S3Server {
    pub endpoint: String,
    /// Where it keeps buckets (a directory each) and objects (files).
    pub root: PathBuf,
    _child: Child,
}

fn binary() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache"));
    let bin = cache.join("dialback/s3s/bin/s3s-fs");
    assert!(
        bin.exists(),
        "these tests need s3s-fs and {} does not exist: run scripts/test (it builds it), or \
         `source scripts/lib.sh && ensure_s3_server`",
        bin.display()
    );
    bin
}

impl S3Server {
    /// A server with bucket `bucket`.
    pub async fn start(bucket: &str) -> S3Server {
        let root = std::env::temp_dir().join(format!("dialback-s3-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(root.join(bucket)).unwrap();
        let mut child = Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", "0", "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&root)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("s3s-fs runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let endpoint = super::wait::within_patience("s3s-fs to listen", async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(at) = line.find("server is running at ") {
                    return line[at + "server is running at ".len()..].trim().to_owned();
                }
            }
            panic!("s3s-fs exited before it listened");
        })
        .await;
        // Keep reading its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        S3Server { endpoint, root, _child: child }
    }

    /// dialback's `recordings` settings for `s3://BUCKET/PREFIX` on this server.
    pub fn settings(&self, url: &str) -> Value {
        json!({
            "url": url,
            "s3": {"endpoint": self.endpoint, "region": "us-east-1", "access_key_id": ACCESS_KEY,
                   "secret_access_key": SECRET_KEY, "allow_http": true}
        })
    }

    /// The objects' files under `bucket`, as the server keeps them.
    pub fn objects(&self, bucket: &str) -> Vec<PathBuf> {
        super::ftp::files_under(&self.root.join(bucket))
            .into_iter()
            .filter(|p| !p.components().any(|c| c.as_os_str().to_string_lossy().starts_with('.')))
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
