//! The PBX side of recordings, whatever the protocol: where and as whom to log in, what a
//! listing holds, and why a step failed. ftp.rs (FTP, FTPS) and sftp.rs (SFTP) are the sessions;
//! [`Session`] is either, for the sync.

use std::time::Duration;

use secrecy::SecretString;
use time::OffsetDateTime;

use super::ftp::{self, FtpSession};
use super::sftp::{self, SftpSession};
use crate::domain::settings::{RecordingsProtocol, RecordingsSource};

/// Where and as whom to log in.
#[derive(Clone)]
pub struct Endpoint {
    pub protocol: RecordingsProtocol,
    pub host: String,
    pub port: u16,
    pub ftps: bool,
    pub ca_pem: Option<String>,
    /// SFTP: the pinned host key fingerprint.
    pub host_key: Option<String>,
    pub username: String,
    /// The password, or for SFTP an SSH private key (PEM).
    pub password: SecretString,
    /// The limit on every step (connect, TLS, login, one command, silence during a transfer).
    pub timeout: Duration,
}

impl Endpoint {
    pub fn new(source: &RecordingsSource, password: SecretString, timeout: Duration) -> Self {
        Self {
            protocol: source.protocol,
            host: source.host.clone(),
            port: source.port,
            ftps: source.ftps,
            ca_pem: source.ca_pem.clone(),
            host_key: source.host_key.clone(),
            username: source.username.clone(),
            password,
            timeout,
        }
    }
}

/// Why a step with the recordings server failed; `kind` is the stable name used in metrics and
/// problem codes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceFailure {
    #[error("cannot reach the recordings server {addr}: {detail}")]
    Unreachable { addr: String, detail: String },
    #[error("FTPS failed: {detail}")]
    Tls { detail: String },
    #[error("the SFTP server's host key is {actual}, not the {pinned} recordings.host_key pins: if the PBX's key really \
             changed (reinstalled), put the new fingerprint in recordings.host_key; otherwise something else answers at that address")]
    HostKey { pinned: String, actual: String },
    #[error("the recordings server refused the login of user {user:?} ({reply}); check recordings.username and {credential}")]
    LoginFailed { user: String, reply: String, credential: &'static str },
    #[error("the recordings server did not finish {step} within {seconds} s")]
    Timeout { step: String, seconds: u64 },
    #[error("{step} failed: {detail}")]
    Refused { step: String, detail: String, code: Option<u32> },
}

impl SourceFailure {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceFailure::Unreachable { .. } => "unreachable",
            SourceFailure::Tls { .. } => "tls",
            SourceFailure::HostKey { .. } => "host_key",
            SourceFailure::LoginFailed { .. } => "login",
            SourceFailure::Timeout { .. } => "timeout",
            SourceFailure::Refused { .. } => "refused",
        }
    }

    /// The directory or file is not there (FTP's 550 or 450, SFTP's no such file: 2).
    pub fn is_missing(&self) -> bool {
        matches!(self, SourceFailure::Refused { code: Some(550 | 450 | sftp::NO_SUCH_FILE), .. })
    }
}

/// A file in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub path: String,
    pub name: String,
    pub size: u64,
    /// From the listing (minute precision at best); `None` when the server did not say.
    pub modified: Option<OffsetDateTime>,
}

/// The next bytes of `path` from `reader`, or `None` at its end; silence longer than `timeout` is a
/// failure. Both protocols' downloads read this way.
pub(super) async fn next_chunk<'b, R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    buf: &'b mut [u8],
    timeout: Duration,
    path: &str,
) -> Result<Option<&'b [u8]>, SourceFailure> {
    use tokio::io::AsyncReadExt;
    let step = || format!("receiving {path}");
    match tokio::time::timeout(timeout, reader.read(buf)).await {
        Ok(Ok(0)) => Ok(None),
        Ok(Ok(n)) => Ok(Some(&buf[..n])),
        Ok(Err(e)) => {
            Err(SourceFailure::Refused { step: step(), detail: format!("the transfer broke: {e}"), code: None })
        }
        Err(_) => Err(SourceFailure::Timeout { step: step(), seconds: timeout.as_secs().max(1) }),
    }
}

/// `dir/name` without a doubled slash.
pub fn join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

/// A logged-in session with the company's recordings server.
pub enum Session {
    Ftp(FtpSession),
    Sftp(SftpSession),
}

/// One file being received.
pub enum Download {
    Ftp(ftp::Download),
    Sftp(Box<sftp::Download>),
}

impl Session {
    pub async fn open(endpoint: &Endpoint) -> Result<Self, SourceFailure> {
        Ok(match endpoint.protocol {
            RecordingsProtocol::Ftp => Session::Ftp(FtpSession::open(endpoint).await?),
            RecordingsProtocol::Sftp => Session::Sftp(SftpSession::open(endpoint).await?),
        })
    }

    /// The regular files of `dir`.
    pub async fn list(&mut self, dir: &str) -> Result<Vec<RemoteFile>, SourceFailure> {
        match self {
            Session::Ftp(s) => s.list(dir).await,
            Session::Sftp(s) => s.list(dir).await,
        }
    }

    /// A file's current size (to tell a recording still being written).
    pub async fn size(&mut self, path: &str) -> Result<u64, SourceFailure> {
        match self {
            Session::Ftp(s) => s.size(path).await,
            Session::Sftp(s) => s.size(path).await,
        }
    }

    /// Starts receiving `path`; read it with [`Download::chunk`], then [`Download::finish`].
    pub async fn download(&mut self, path: &str) -> Result<Download, SourceFailure> {
        Ok(match self {
            Session::Ftp(s) => Download::Ftp(s.download(path).await?),
            Session::Sftp(s) => Download::Sftp(Box::new(s.download(path).await?)),
        })
    }

    /// Says goodbye (best effort).
    pub async fn close(self) {
        match self {
            Session::Ftp(s) => s.close().await,
            Session::Sftp(s) => s.close().await,
        }
    }
}

impl Download {
    /// The next bytes, or `None` at the end. Silence longer than the timeout is a failure.
    pub async fn chunk(&mut self) -> Result<Option<&[u8]>, SourceFailure> {
        match self {
            Download::Ftp(d) => d.chunk().await,
            Download::Sftp(d) => d.chunk().await,
        }
    }

    /// Ends the transfer; FTP reads the server's verdict (226 when the whole file was sent).
    pub async fn finish(self) -> Result<(), SourceFailure> {
        match self {
            Download::Ftp(d) => d.finish().await,
            Download::Sftp(d) => (*d).finish().await,
        }
    }
}
