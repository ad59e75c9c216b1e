//! The PBX side: one session with a company's FTP server, plain or explicit FTPS (`AUTH TLS`,
//! control and data connections encrypted, verified against the company's CA), always in binary
//! mode (suppaftp starts in ASCII, which rewrites line ends and corrupts audio), with a timeout
//! around every step and errors that say which step failed and what the server answered.

use std::time::Duration;

use secrecy::ExposeSecret;
use suppaftp::list::File as ListedFile;
use suppaftp::tokio::{AsyncRustlsConnector, AsyncRustlsFtpStream, AsyncRustlsStream, TransferStream};
use suppaftp::types::FileType;
use suppaftp::FtpError;
use time::OffsetDateTime;
use tokio::net::TcpStream;

use super::source::{join, next_chunk, Endpoint, RemoteFile, SourceFailure};

fn from_ftp(step: &str, error: FtpError) -> SourceFailure {
    match error {
        FtpError::UnexpectedResponse(reply) => SourceFailure::Refused {
            step: step.to_owned(),
            detail: format!("the server answered {}", reply_text(&reply)),
            code: Some(reply.status.code()),
        },
        FtpError::SecureError(detail) => SourceFailure::Tls { detail: describe_tls(&detail) },
        other => SourceFailure::Refused { step: step.to_owned(), detail: other.to_string(), code: None },
    }
}

fn reply_text(reply: &suppaftp::types::Response) -> String {
    let text = String::from_utf8_lossy(&reply.body);
    let text = text.trim();
    let code = reply.status.code().to_string();
    if text.starts_with(&code) {
        text.to_owned()
    } else {
        format!("{code} {text}")
    }
}

fn describe_tls(text: &str) -> String {
    if text.contains("UnknownIssuer") {
        "the FTP server's certificate is not trusted: paste the CA certificate that signed it (recordings.ca_pem)"
            .into()
    } else if text.contains("NotValidForName") {
        "the FTP server's certificate does not name this host: connect by the name in the certificate".into()
    } else if text.contains("Expired") {
        "the FTP server's certificate has expired".into()
    } else if text.contains("CaUsedAsEndEntity") {
        // What a plain `openssl req -x509` makes: self-signed, but marked as a CA.
        "the FTP server's certificate is a CA certificate (CA:TRUE) used as the server's own: reissue it with \
         basicConstraints CA:FALSE, or sign a server certificate with that CA"
            .into()
    } else {
        format!("TLS handshake failed: {text}")
    }
}

/// A logged-in session in binary mode.
pub struct FtpSession {
    ftp: AsyncRustlsFtpStream,
    timeout: Duration,
}

async fn within<T>(
    timeout: Duration,
    step: &str,
    fut: impl std::future::Future<Output = Result<T, FtpError>>,
) -> Result<T, SourceFailure> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result.map_err(|e| from_ftp(step, e)),
        Err(_) => Err(SourceFailure::Timeout { step: step.to_owned(), seconds: timeout.as_secs().max(1) }),
    }
}

impl FtpSession {
    /// Connects, upgrades to TLS when `ftps`, logs in and switches to binary mode.
    pub async fn open(endpoint: &Endpoint) -> Result<Self, SourceFailure> {
        let addr = format!("{}:{}", endpoint.host, endpoint.port);
        let unreachable = |detail: String| SourceFailure::Unreachable { addr: addr.clone(), detail };
        let tcp =
            match tokio::time::timeout(endpoint.timeout, TcpStream::connect((endpoint.host.as_str(), endpoint.port)))
                .await
            {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(e)) => return Err(unreachable(e.to_string())),
                Err(_) => return Err(unreachable(format!("no answer within {} s", endpoint.timeout.as_secs().max(1)))),
            };
        let mut ftp =
            within(endpoint.timeout, "reading the FTP greeting", AsyncRustlsFtpStream::connect_with_stream(tcp))
                .await
                .map_err(|e| match e {
                    SourceFailure::Refused { detail, .. } => unreachable(format!("not an FTP server? {detail}")),
                    other => other,
                })?;
        if endpoint.ftps {
            let connector =
                tls_connector(endpoint.ca_pem.as_deref()).map_err(|detail| SourceFailure::Tls { detail })?;
            ftp = within(endpoint.timeout, "AUTH TLS", ftp.into_secure(connector, &endpoint.host)).await.map_err(
                |e| match e {
                    SourceFailure::Refused { detail, .. } => {
                        SourceFailure::Tls { detail: format!("the server does not offer explicit FTPS ({detail})") }
                    }
                    other => other,
                },
            )?;
        }
        // Behind NAT a server often announces its private address for passive data connections:
        // connect data to the address the control connection reached instead.
        ftp.set_passive_nat_workaround(true);
        let login = ftp.login(endpoint.username.as_str(), endpoint.password.expose_secret());
        within(endpoint.timeout, "login", login).await.map_err(|e| match e {
            SourceFailure::Refused { code: Some(code), detail, .. } if code == 530 || code == 430 || code == 331 => {
                SourceFailure::LoginFailed {
                    user: endpoint.username.clone(),
                    reply: detail,
                    credential: "recordings.password",
                }
            }
            other => other,
        })?;
        within(endpoint.timeout, "TYPE I (binary mode)", ftp.transfer_type(FileType::Binary)).await?;
        Ok(Self { ftp, timeout: endpoint.timeout })
    }

    /// The regular files of `dir` (`LIST`, understood in Unix and DOS formats).
    pub async fn list(&mut self, dir: &str) -> Result<Vec<RemoteFile>, SourceFailure> {
        let lines = within(self.timeout, &format!("listing {dir}"), self.ftp.list(Some(dir))).await?;
        Ok(lines
            .iter()
            .filter_map(|line| ListedFile::try_from(line.as_str()).ok())
            .filter(|f| f.is_file())
            .map(|f| {
                let modified = Some(OffsetDateTime::from(f.modified())).filter(|t| t.unix_timestamp() > 0);
                RemoteFile { path: join(dir, f.name()), name: f.name().to_owned(), size: f.size() as u64, modified }
            })
            .collect())
    }

    /// `SIZE`: a file's current size (to tell a recording still being written).
    pub async fn size(&mut self, path: &str) -> Result<u64, SourceFailure> {
        Ok(within(self.timeout, &format!("SIZE {path}"), self.ftp.size(path)).await? as u64)
    }

    /// Starts `RETR path`; read it with [`Download::chunk`], then [`Download::finish`].
    pub async fn download(&mut self, path: &str) -> Result<Download, SourceFailure> {
        let stream = within(self.timeout, &format!("RETR {path}"), self.ftp.retr_as_stream(path)).await?;
        Ok(Download { stream, timeout: self.timeout, buf: vec![0; 64 * 1024], path: path.to_owned() })
    }

    /// Says goodbye (best effort).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(self.timeout, self.ftp.quit()).await;
    }
}

/// One file being received.
pub struct Download {
    stream: TransferStream<AsyncRustlsStream>,
    timeout: Duration,
    buf: Vec<u8>,
    path: String,
}

impl Download {
    /// The next bytes, or `None` at the end. Silence longer than the timeout is a failure.
    pub async fn chunk(&mut self) -> Result<Option<&[u8]>, SourceFailure> {
        next_chunk(&mut self.stream, &mut self.buf, self.timeout, &self.path).await
    }

    /// Closes the data connection and reads the server's verdict (226 when the whole file was sent).
    pub async fn finish(self) -> Result<(), SourceFailure> {
        within(self.timeout, &format!("completing RETR {}", self.path), self.stream.finish()).await
    }
}

/// One TLS configuration per session, so data connections can resume the control connection's
/// TLS session (vsftpd requires it by default).
fn tls_connector(ca_pem: Option<&str>) -> Result<AsyncRustlsConnector, String> {
    let config = crate::tls::client_config(ca_pem).map_err(|e| format!("recordings.ca_pem: {e}"))?;
    Ok(AsyncRustlsConnector::from(tokio_rustls::TlsConnector::from(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_without_double_slashes() {
        assert_eq!(join("/", "a.wav"), "/a.wav");
        assert_eq!(join("/rec/2026/11/22/", "a.wav"), "/rec/2026/11/22/a.wav");
    }

    #[test]
    fn failures_name_their_kind() {
        let login = SourceFailure::LoginFailed {
            user: "rec".into(),
            reply: "530 Login incorrect.".into(),
            credential: "recordings.password",
        };
        assert_eq!(login.kind(), "login");
        assert!(login.to_string().contains("\"rec\"") && login.to_string().contains("530"));
        assert!(
            SourceFailure::Refused { step: "listing /x".into(), detail: String::new(), code: Some(550) }.is_missing()
        );
    }
}
