//! Reaching a PBX: TCP or TLS (same code path after the handshake), with errors that say which
//! step failed, so the Test button and the logs can tell the admin what to change. AMI over
//! Asterisk's HTTP server (`super::ajam`) opens its connections here too.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;

use super::AmiError;

/// A byte stream to the PBX, plain or TLS.
pub trait AmiStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AmiStream for T {}
pub type BoxStream = Box<dyn AmiStream>;

/// Where a PBX listens and how to talk to it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// PEM of the CA that signed the PBX certificate (PBX certificates are often self-signed).
    /// Without it the system roots are used.
    pub ca_pem: Option<String>,
    /// AMI over Asterisk's HTTP server (`super::ajam`) under this `http.conf` prefix (empty: none)
    /// instead of the AMI port's own protocol.
    pub http_prefix: Option<String>,
}

impl Endpoint {
    /// The AJAM path, e.g. `/asterisk/rawman` (with the prefix) or `/rawman`.
    pub fn rawman_path(&self) -> Option<String> {
        let prefix = self.http_prefix.as_deref()?.trim_matches('/');
        Some(if prefix.is_empty() { "/rawman".to_owned() } else { format!("/{prefix}/rawman") })
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.rawman_path(), self.tls) {
            (None, tls) => write!(f, "{}://{}:{}", if tls { "tls" } else { "tcp" }, self.host, self.port),
            (Some(path), tls) => {
                write!(f, "{}://{}:{}{path}", if tls { "https" } else { "http" }, self.host, self.port)
            }
        }
    }
}

/// Resolves the host (first step on its own, so a DNS failure is told apart from a refusal).
pub async fn resolve(endpoint: &Endpoint) -> Result<Vec<SocketAddr>, AmiError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| AmiError::Resolve { host: endpoint.host.clone(), detail: e.to_string() })?
        .collect();
    if addrs.is_empty() {
        return Err(AmiError::Resolve { host: endpoint.host.clone(), detail: "no addresses".into() });
    }
    Ok(addrs)
}

/// Opens TCP to the first address that accepts.
pub async fn connect_tcp(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, AmiError> {
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Some(AmiError::Refused { addr: addr.to_string() })
            }
            Ok(Err(e)) => last = Some(AmiError::Io(format!("connecting to {addr}: {e}"))),
            Err(_) => last = Some(AmiError::ConnectTimeout { addr: addr.to_string() }),
        }
    }
    Err(last.unwrap_or(AmiError::Io("no address to connect to".into())))
}

/// Runs the TLS handshake, verifying the PBX certificate against `ca_pem` (or the system roots)
/// and the host name (or IP address) it was reached by.
pub async fn tls_handshake(
    endpoint: &Endpoint,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, AmiError> {
    let config = crate::tls::client_config(endpoint.ca_pem.as_deref()).map_err(AmiError::Tls)?;
    let name = ServerName::try_from(endpoint.host.clone())
        .map_err(|_| AmiError::Tls(format!("{} is not a valid TLS server name", endpoint.host)))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(AmiError::Tls(describe_tls(&e))),
        Err(_) => {
            Err(AmiError::Tls("the TLS handshake timed out (is the port really AMI over TLS, e.g. 5039?)".into()))
        }
    }
}

fn describe_tls(e: &std::io::Error) -> String {
    let text = e.to_string();
    if text.contains("UnknownIssuer") {
        "the PBX certificate is not trusted: paste the CA certificate that signed it (ca_pem)".into()
    } else if text.contains("NotValidForName") {
        "the PBX certificate does not name this host: connect by the name in the certificate or reissue it".into()
    } else if text.contains("Expired") {
        "the PBX certificate has expired".into()
    } else if text.contains("InvalidContentType") || text.contains("corrupt message") {
        "the server did not answer TLS (is TLS really enabled on this port?)".into()
    } else {
        format!("TLS handshake failed: {text}")
    }
}

/// Resolve, connect and (when enabled) TLS: the whole transport in one call.
pub async fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<BoxStream, AmiError> {
    let addrs = resolve(endpoint).await?;
    let tcp = connect_tcp(&addrs, timeout).await?;
    if endpoint.tls {
        Ok(Box::new(tls_handshake(endpoint, tcp, timeout).await?))
    } else {
        Ok(Box::new(tcp))
    }
}
