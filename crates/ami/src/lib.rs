//! The AMI (Asterisk Manager Interface) client.
//!
//! - [`codec`]: framing (banner, `Key: Value` messages), with injection-proof encoding.
//! - [`message`]: typed actions (Login, Originate, ...) and typed views of the events we use.
//! - [`transport`]: TCP or TLS to the PBX, each failure named by its step.
//! - [`ajam`]: AMI over Asterisk's HTTP server (`/rawman`), the other way to carry a session.
//! - [`client`]: one logged-in session per PBX, owned by tasks that read continuously, match
//!   replies by ActionID, fan events out, ping, and reconnect with capped backoff.
//! - [`pool`]: one client per tenant, created lazily, closed when idle.
//! - `slots`: a session's share of its PBX's cap on originates in flight, changed as processes come
//!   and go.
//! - [`tls`]: the TLS client set-up (the company's CA or the system roots); FTPS uses it too.

pub mod ajam;
pub mod client;
pub mod codec;
pub mod message;
pub mod pool;
mod slots;
pub mod tls;
pub mod transport;

pub use client::{AmiClient, ClientConfig, ConnState, OriginateHandle};
pub use message::AmiEvent;

/// What can go wrong talking to a PBX; each variant names the step, for logs and the Test button.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmiError {
    #[error("cannot resolve {host}: {detail}")]
    Resolve { host: String, detail: String },
    #[error("connection to {addr} refused (nothing listens there)")]
    Refused { addr: String },
    #[error("connecting to {addr} timed out (host down, firewall, or manager.conf bindaddr)")]
    ConnectTimeout { addr: String },
    #[error("network error: {0}")]
    Io(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the server is not Asterisk AMI: {0}")]
    NotAmi(String),
    #[error("the server is not AMI over HTTP: {0}")]
    NotAjam(String),
    #[error("the AMI-over-HTTP session was lost: {0}")]
    SessionLost(String),
    #[error("AMI login failed: Authentication failed (check the username and secret in manager.conf)")]
    AuthFailed,
    #[error("AMI permission denied (the AMI user lacks the needed write permission)")]
    PermissionDenied,
    #[error("Asterisk refused the action: {0}")]
    Rejected(String),
    #[error("no reply from Asterisk within {0} ms")]
    Timeout(u64),
    #[error("the AMI connection was lost")]
    Disconnected,
    #[error("not connected to the PBX: {0}")]
    NotConnected(String),
    #[error("too many calls in progress on this PBX (limit {0})")]
    Saturated(usize),
    #[error("refusing to send: {0}")]
    Encode(String),
}

impl AmiError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AmiError::Resolve { .. } => "resolve",
            AmiError::Refused { .. } => "refused",
            AmiError::ConnectTimeout { .. } => "connect_timeout",
            AmiError::Io(_) => "io",
            AmiError::Tls(_) => "tls",
            AmiError::NotAmi(_) => "not_ami",
            AmiError::NotAjam(_) => "not_ajam",
            AmiError::SessionLost(_) => "session_lost",
            AmiError::AuthFailed => "auth_failed",
            AmiError::PermissionDenied => "permission_denied",
            AmiError::Rejected(_) => "action_error",
            AmiError::Timeout(_) => "timeout",
            AmiError::Disconnected => "disconnected",
            AmiError::NotConnected(_) => "not_connected",
            AmiError::Saturated(_) => "saturated",
            AmiError::Encode(_) => "encode",
        }
    }

    /// True when the PBX could not be reached or logged into (as opposed to refusing a call).
    pub fn is_unreachable(&self) -> bool {
        !matches!(
            self,
            AmiError::Rejected(_) | AmiError::PermissionDenied | AmiError::Encode(_) | AmiError::Saturated(_)
        )
    }
}
