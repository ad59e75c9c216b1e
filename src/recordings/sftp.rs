//! The PBX side over SSH: one SFTP session with a company's server, its host key checked against
//! the fingerprint pinned in the settings before anything is sent, a password or a private key
//! to log in, a timeout around every step, errors that say which step failed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, AuthResult};
use russh::keys::{decode_secret_key, HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelMsg;
use russh_sftp::client::fs::File;
use russh_sftp::client::SftpSession as Sftp;
use secrecy::ExposeSecret;
use time::OffsetDateTime;

use super::source::{join, next_chunk, Endpoint, RemoteFile, SourceFailure};

/// SFTP's status for a missing file or directory (SSH_FX_NO_SUCH_FILE), as a failure's code.
pub const NO_SUCH_FILE: u32 = 2;

/// Checks the server's key against the pinned fingerprint and notes what it was.
struct PinnedHostKey {
    pinned: String,
    seen: Arc<Mutex<Option<String>>>,
}

impl client::Handler for PinnedHostKey {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let key = key.public_key();
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let matches = fingerprint == self.pinned.trim();
        *self.seen.lock().expect("seen lock") = Some(format!("{fingerprint} ({})", key.algorithm()));
        Ok(matches)
    }
}

pub struct SftpSession {
    ssh: client::Handle<PinnedHostKey>,
    sftp: Sftp,
    timeout: Duration,
}

fn seconds(timeout: Duration) -> u64 {
    timeout.as_secs().max(1)
}

/// Runs `fut` within `timeout`, naming `step` when it fails.
async fn within<T, E: std::fmt::Display>(
    timeout: Duration,
    step: &str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, SourceFailure> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(SourceFailure::Refused { step: step.to_owned(), detail: e.to_string(), code: None }),
        Err(_) => Err(SourceFailure::Timeout { step: step.to_owned(), seconds: seconds(timeout) }),
    }
}

/// An SFTP request's failure, with the status code when the server answered one.
fn sftp_failure(step: String, error: russh_sftp::client::error::Error) -> SourceFailure {
    let code = match &error {
        russh_sftp::client::error::Error::Status(status) => Some(status.status_code as u32),
        _ => None,
    };
    SourceFailure::Refused { step, detail: error.to_string(), code }
}

impl SftpSession {
    /// Connects, checks the host key, logs in (a PEM credential is a private key, anything else a
    /// password) and opens the SFTP subsystem.
    pub async fn open(endpoint: &Endpoint) -> Result<Self, SourceFailure> {
        let addr = format!("{}:{}", endpoint.host, endpoint.port);
        let pinned = endpoint.host_key.clone().unwrap_or_default();
        let seen = Arc::new(Mutex::new(None));
        let handler = PinnedHostKey { pinned: pinned.clone(), seen: seen.clone() };
        let config = Arc::new(client::Config { inactivity_timeout: Some(endpoint.timeout * 4), ..Default::default() });
        let connect = client::connect(config, (endpoint.host.as_str(), endpoint.port), handler);
        // connect() returns once the key exchange (and the host key check) is done.
        let mut ssh = match tokio::time::timeout(endpoint.timeout, connect).await {
            Err(_) => {
                return Err(SourceFailure::Unreachable {
                    addr,
                    detail: format!("no SSH handshake within {} s", seconds(endpoint.timeout)),
                })
            }
            Ok(Err(russh::Error::UnknownKey)) => {
                let actual = seen.lock().expect("seen lock").clone().unwrap_or_else(|| "unknown".into());
                return Err(SourceFailure::HostKey { pinned, actual });
            }
            Ok(Err(e)) => {
                return Err(SourceFailure::Unreachable { addr, detail: format!("{e} (is it an SSH server?)") })
            }
            Ok(Ok(ssh)) => ssh,
        };
        let user = endpoint.username.clone();
        let credential = endpoint.password.expose_secret().trim();
        let (result, credential_field) = if credential.starts_with("-----BEGIN ") {
            let key = decode_secret_key(credential, None).map_err(|e| SourceFailure::Refused {
                step: "reading recordings.private_key".into(),
                detail: format!("{e} (an unencrypted OpenSSH or PEM private key is needed)"),
                code: None,
            })?;
            let key = Arc::new(key);
            let hash = if key.algorithm().is_rsa() {
                // OpenSSH 8.8+ refuses RSA signatures over SHA-1: ask what the server takes.
                within(endpoint.timeout, "asking the server's RSA signature algorithms", ssh.best_supported_rsa_hash())
                    .await?
                    .unwrap_or(Some(HashAlg::Sha256))
            } else {
                None
            };
            let login = ssh.authenticate_publickey(user.clone(), PrivateKeyWithHashAlg::new(key, hash));
            (within(endpoint.timeout, "login", login).await?, "recordings.private_key")
        } else {
            let login = ssh.authenticate_password(user.clone(), credential.to_owned());
            (within(endpoint.timeout, "login", login).await?, "recordings.password")
        };
        if let AuthResult::Failure { remaining_methods, .. } = result {
            return Err(SourceFailure::LoginFailed {
                user,
                reply: format!("it accepts {remaining_methods:?}"),
                credential: credential_field,
            });
        }
        let channel = within(endpoint.timeout, "opening an SSH session", ssh.channel_open_session()).await?;
        within(endpoint.timeout, "asking for the sftp subsystem", channel.request_subsystem(true, "sftp")).await?;
        let mut channel = channel;
        // The answer to the subsystem request: a server without SFTP says so at once.
        loop {
            match tokio::time::timeout(endpoint.timeout, channel.wait()).await {
                Ok(Some(ChannelMsg::Success)) => break,
                Ok(Some(ChannelMsg::Failure)) | Ok(None) => {
                    return Err(SourceFailure::Refused {
                        step: "starting SFTP".into(),
                        detail: "the server has no sftp subsystem (sshd_config: Subsystem sftp internal-sftp)".into(),
                        code: None,
                    })
                }
                Ok(Some(_)) => continue,
                Err(_) => {
                    return Err(SourceFailure::Timeout {
                        step: "starting SFTP".into(),
                        seconds: seconds(endpoint.timeout),
                    })
                }
            }
        }
        let config =
            russh_sftp::client::Config { request_timeout_secs: seconds(endpoint.timeout), ..Default::default() };
        let sftp =
            within(endpoint.timeout, "starting SFTP", Sftp::new_with_config(channel.into_stream(), config)).await?;
        Ok(Self { ssh, sftp, timeout: endpoint.timeout })
    }

    /// The regular files of `dir`.
    pub async fn list(&mut self, dir: &str) -> Result<Vec<RemoteFile>, SourceFailure> {
        let step = format!("listing {dir}");
        let entries = match tokio::time::timeout(self.timeout, self.sftp.read_dir(dir)).await {
            Ok(result) => result.map_err(|e| sftp_failure(step, e))?,
            Err(_) => return Err(SourceFailure::Timeout { step, seconds: seconds(self.timeout) }),
        };
        Ok(entries
            .filter(|entry| entry.metadata().is_regular())
            .map(|entry| {
                let metadata = entry.metadata();
                let name = entry.file_name();
                let modified = metadata.mtime.and_then(|s| OffsetDateTime::from_unix_timestamp(i64::from(s)).ok());
                RemoteFile { path: join(dir, &name), name, size: metadata.size.unwrap_or(0), modified }
            })
            .collect())
    }

    pub async fn size(&mut self, path: &str) -> Result<u64, SourceFailure> {
        let step = format!("stat {path}");
        match tokio::time::timeout(self.timeout, self.sftp.metadata(path)).await {
            Ok(result) => Ok(result.map_err(|e| sftp_failure(step, e))?.size.unwrap_or(0)),
            Err(_) => Err(SourceFailure::Timeout { step, seconds: seconds(self.timeout) }),
        }
    }

    pub async fn download(&mut self, path: &str) -> Result<Download, SourceFailure> {
        let step = format!("opening {path}");
        let file = match tokio::time::timeout(self.timeout, self.sftp.open(path)).await {
            Ok(result) => result.map_err(|e| sftp_failure(step, e))?,
            Err(_) => return Err(SourceFailure::Timeout { step, seconds: seconds(self.timeout) }),
        };
        Ok(Download { file, timeout: self.timeout, buf: vec![0; 64 * 1024], path: path.to_owned() })
    }

    pub async fn close(self) {
        let _ = tokio::time::timeout(self.timeout, self.sftp.close()).await;
        let _ =
            tokio::time::timeout(self.timeout, self.ssh.disconnect(russh::Disconnect::ByApplication, "", "en")).await;
    }
}

/// One file being received.
pub struct Download {
    file: File,
    timeout: Duration,
    buf: Vec<u8>,
    path: String,
}

impl Download {
    pub async fn chunk(&mut self) -> Result<Option<&[u8]>, SourceFailure> {
        next_chunk(&mut self.file, &mut self.buf, self.timeout, &self.path).await
    }

    /// SFTP has no verdict to read (the file was read to its end): closes the file.
    pub async fn finish(self) -> Result<(), SourceFailure> {
        let _ = tokio::time::timeout(self.timeout, self.file.close()).await;
        Ok(())
    }
}
