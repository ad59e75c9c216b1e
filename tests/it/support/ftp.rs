//! A real FTP server for the recordings tests: pyftpdlib (`tests/fixtures/ftp_server.py`) run by
//! the project venv's Python on a free port of 127.0.0.1, one read-only user chrooted to a fresh
//! directory, optionally explicit FTPS or throttled downloads. Killed when dropped; can be stopped
//! and started again on the same port (an outage).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const USER: &str = "recordings";
pub const PASSWORD: &str = "ftp-pass-0123";

#[derive(Clone, Default)]
pub struct FtpOptions {
    /// Certificate and key PEM files: the server requires explicit FTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Bytes per second per download (0: no limit).
    pub throttle: u32,
}

pub struct FtpServer {
    /// What the FTP user sees as `/`.
    pub root: PathBuf,
    pub port: u16,
    options: FtpOptions,
    /// Holds the root, the log (and the certificate); removed on drop.
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl FtpServer {
    pub async fn start() -> Self {
        Self::start_with(FtpOptions::default()).await
    }

    pub async fn start_with(options: FtpOptions) -> Self {
        Self::start_in(fresh_dir(), options).await
    }

    async fn start_in(dir: PathBuf, options: FtpOptions) -> Self {
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let log = dir.join("server.log");
        let mut server = Self { root, port: 0, options, dir, log, child: None };
        server.launch().await;
        server
    }

    /// Explicit FTPS with a fresh self-signed certificate for 127.0.0.1; returns its PEM (the CA
    /// the company would paste into `recordings.ca_pem`).
    pub async fn start_ftps() -> (Self, String) {
        let dir = fresh_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
        std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), &key_pem).unwrap();
        let options = FtpOptions { tls: Some((dir.join("cert.pem"), dir.join("key.pem"))), throttle: 0 };
        (Self::start_in(dir, options).await, cert_pem)
    }

    async fn launch(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ftp_server.py");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut command = Command::new(super::venv_python("pyftpdlib"));
        command
            .arg(script)
            .arg("--root")
            .arg(&self.root)
            .args(["--user", USER, "--password", PASSWORD, "--port", &self.port.to_string()])
            .args(["--throttle", &self.options.throttle.to_string()])
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        if let Some((cert, key)) = &self.options.tls {
            command.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        let mut child = command.spawn().expect("the venv's python runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(super::wait::patience(), lines.next_line()).await;
        let port = match first {
            Ok(Ok(Some(line))) => line.strip_prefix("LISTENING ").and_then(|p| p.trim().parse().ok()),
            _ => None,
        };
        let Some(port) = port else {
            panic!("the FTP server did not start; its log:\n{}", self.log());
        };
        self.port = port;
        self.child = Some(child);
    }

    /// Kills the server (an outage, or a crash mid-transfer).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port, with `throttle` from now on.
    pub async fn restart(&mut self, throttle: u32) {
        self.stop().await;
        self.options.throttle = throttle;
        self.launch().await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many times `name` (a path under the root) was downloaded to the end.
    pub fn downloads_of(&self, name: &str) -> usize {
        let needle = format!("RETR {} completed=1", self.root.join(name).display());
        self.log().lines().filter(|line| line.contains(&needle)).count()
    }

    /// Puts a file on the server (written aside and renamed, as a PBX finishing a recording).
    pub fn put(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let partial = path.with_file_name(format!(".{}.part", path.file_name().unwrap().to_string_lossy()));
        std::fs::write(&partial, bytes).unwrap();
        std::fs::rename(&partial, &path).unwrap();
        path
    }

    /// The `recordings` object of the PBX settings pointing at this server (manual syncs only:
    /// the background poll is an hour away), merged with `overrides`.
    pub fn source(&self, overrides: serde_json::Value) -> serde_json::Value {
        let mut source = serde_json::json!({
            "host": "127.0.0.1", "port": self.port, "ftps": self.options.tls.is_some(),
            "username": USER, "password": PASSWORD, "directory": "/", "poll_interval_s": 3600,
        });
        for (k, v) in overrides.as_object().unwrap() {
            source[k] = v.clone();
        }
        source
    }
}

impl Drop for FtpServer {
    fn drop(&mut self) {
        // The child is killed by `kill_on_drop`; its files go too.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fresh_dir() -> PathBuf {
    std::env::temp_dir().join(format!("dialback-ftp-{}", uuid::Uuid::new_v4().simple()))
}

/// Every file under `dir`, recursively (to prove what is and is not in the recordings store).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}
