//! The protocol-faithful PBX simulator (`pbx-sim`, this crate's binary): an AMI server that answers the way a
//! real Asterisk 22.10.1 (AMI 11.0.0) was observed to over loopback, so dialback can be demonstrated
//! and tested without a PBX. What was observed is pinned in `tests/fixtures/asterisk-22/ami/` (raw wire
//! transcripts of whole calls) and `tests/it/pbx_sim.rs` replays them against the simulator: the
//! banner, login and its one-second refusal, permissions, the Originate checks, every phone
//! outcome's events in Asterisk's order, CDRs, injection through CR/LF, shutdown.
//!
//! - `session`: the listener and one task per AMI connection (login, actions, event delivery).
//! - `ajam`: AMI over the HTTP server (`/rawman`): cookies, sessions that expire, `waitevent`.
//! - `originate`: how an Originate is read and validated.
//! - `call`: an originated two-leg callback and the event sequences it produces.
//! - `phones`: what a number does when dialled (by its last digit).
//! - `channel`: the channel snapshot every channel event carries, and its CDR.
//! - `wire`: privilege classes, event masks, replies and events as bytes.
//! - `wav`: the recordings written for connected calls.
//! - `pbx`: state shared by sessions and calls.
//! - `originate_log`: `--originate-log`, when each Originate was read (benchmarks).

pub mod ajam;
mod astdb;
mod call;
mod channel;
pub mod dialplan;
mod inbound;
mod originate;
mod originate_log;
mod pbx;
mod phones;
mod session;
mod wav;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_rustls::rustls;

use pbx::Pbx;
use wire::class;

/// How long `shutdown()` waits for sessions to say goodbye and calls to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// `pbx-sim` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address to listen on for AMI.
    #[arg(long, default_value = "127.0.0.1:5038")]
    pub listen: SocketAddr,
    /// An AMI user, NAME:SECRET; NAME:SECRET:noorig makes one without originate permission
    /// (repeatable).
    #[arg(long = "user", value_name = "NAME:SECRET[:noorig]", default_value = "dialback:dialback")]
    pub users: Vec<SimUser>,
    /// How long an answered callback talks before the courier hangs up.
    #[arg(long, default_value_t = 3)]
    pub talk_seconds: u64,
    /// How long an answering phone rings first.
    #[arg(long, default_value_t = 300)]
    pub ring_ms: u64,
    /// Leg 2's Dial timeout, like `Dial(...,30)` in the dialplan.
    #[arg(long = "dial-timeout-s", default_value_t = 30)]
    pub dial_timeout_s: u64,
    /// Hold each CDR back this long, as cdr.conf's `batch = yes` does.
    #[arg(long, default_value_t = 0)]
    pub cdr_delay_ms: u64,
    /// Where to write a WAV recording for every connected call.
    #[arg(long)]
    pub recordings_dir: Option<PathBuf>,
    /// A dialplan context that exists (repeatable); ignored with --dialplan.
    #[arg(long = "context", value_name = "NAME", default_values = ["from-courier", "from-internal"])]
    pub contexts: Vec<String>,
    /// An extensions.conf to run instead of the reference dialplan: the contexts an Originate may
    /// name, and what the answered courier's channel runs (dialback writes one for each company).
    #[arg(long, value_name = "FILE")]
    pub dialplan: Option<PathBuf>,
    /// The prompt files the simulated Asterisk has installed (a `Read` of another fails at once).
    #[arg(long = "sound", value_name = "NAME", default_values = ["beep"])]
    pub sounds: Vec<String>,
    /// PEM certificate chain: the listener speaks TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Drop a client that does not read what it is sent within this time (Asterisk's per-user
    /// `writetimeout`, default 100 ms).
    #[arg(long, default_value_t = 100)]
    pub write_timeout_ms: u64,
    /// Append `<ChannelId> <unix_time_nanos>` for every Originate as it is read (benchmarks
    /// measure tap-to-originate latency with it).
    #[arg(long, value_name = "FILE")]
    pub originate_log: Option<PathBuf>,
    /// Also serve AMI over HTTP (AJAM: `/rawman`, as `http.conf` enabled and `manager.conf`
    /// webenabled) on this address, e.g. 127.0.0.1:8088.
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// `http.conf` prefix: `asterisk` serves `/asterisk/rawman`.
    #[arg(long, default_value = "", requires = "http_listen")]
    pub http_prefix: String,
    /// `manager.conf` httptimeout: an AJAM session idle this long is gone.
    #[arg(long, default_value_t = 60, requires = "http_listen")]
    pub http_timeout_s: u64,
    /// The HTTP listener speaks TLS (HTTPS) with --tls-cert and --tls-key.
    #[arg(long, requires_all = ["http_listen", "tls_cert"])]
    pub http_tls: bool,
}

/// An AMI user of the simulator.
#[derive(Clone, PartialEq, Eq)]
pub struct SimUser {
    pub name: String,
    pub secret: String,
    pub can_originate: bool,
}

impl SimUser {
    pub fn new(name: &str, secret: &str) -> SimUser {
        SimUser { name: name.into(), secret: secret.into(), can_originate: true }
    }

    /// A user like the transcripts' `limited` one: may log in and ping, may not originate.
    pub fn without_originate(name: &str, secret: &str) -> SimUser {
        SimUser { can_originate: false, ..SimUser::new(name, secret) }
    }

    /// Event classes the user may read. The transcripts' user without originate permission saw
    /// system and call events but no CDRs (h_event_delivery).
    fn read_mask(&self) -> u32 {
        if self.can_originate {
            class::ALL
        } else {
            class::SYSTEM | class::CALL
        }
    }
}

impl FromStr for SimUser {
    type Err = String;

    /// `NAME:SECRET` or `NAME:SECRET:noorig`.
    fn from_str(value: &str) -> Result<SimUser, String> {
        let (name, rest) = value.split_once(':').ok_or("expected NAME:SECRET[:noorig]")?;
        let (secret, can_originate) = match rest.rsplit_once(':') {
            Some((secret, "noorig")) => (secret, false),
            _ => (rest, true),
        };
        if name.is_empty() || secret.is_empty() {
            return Err("expected NAME:SECRET[:noorig] with a non-empty name and secret".into());
        }
        Ok(SimUser { name: name.into(), secret: secret.into(), can_originate })
    }
}

impl std::fmt::Debug for SimUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimUser")
            .field("name", &self.name)
            .field("secret", &"[REDACTED]")
            .field("can_originate", &self.can_originate)
            .finish()
    }
}

/// Everything a simulator needs; `Default` suits tests (port 0, short rings and talks).
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub listen: SocketAddr,
    pub users: Vec<SimUser>,
    /// Talk time of an answered callback.
    pub talk: Duration,
    /// Ring time of an answering phone (0: answers at once, as in the transcripts).
    pub ring: Duration,
    /// Leg 2's Dial timeout.
    pub dial_timeout: Duration,
    pub recordings_dir: Option<PathBuf>,
    /// Dialplan contexts that exist; each matches extensions `_X.` (without a `dialplan`).
    pub contexts: Vec<String>,
    /// A loaded dialplan: it decides which extensions exist and what the answered courier's
    /// channel runs. None: the reference `[from-courier]` (userfield, recording, Dial, Hangup).
    pub dialplan: Option<Arc<dialplan::Dialplan>>,
    /// Prompt files that exist for `Read`.
    pub sounds: Vec<String>,
    /// How long after answering a phone presses 1 when asked (a real one took 1.6 s: Answer's
    /// half second, a second's wait, then the digit).
    pub confirm_press: Duration,
    /// When set, the listener speaks TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub write_timeout: Duration,
    /// Where to append `<ChannelId> <unix_time_nanos>` per Originate read (off when `None`).
    pub originate_log: Option<PathBuf>,
    /// AMI over HTTP beside the AMI port (off when `None`).
    pub http: Option<ajam::HttpConfig>,
    /// How long each `Cdr` event is held back (zero: posted as the channel ends). cdr.conf's
    /// `batch = yes` posts CDRs this way, often after everything else of the call.
    pub cdr_delay: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            users: vec![SimUser::new("dialback", "dialback")],
            talk: Duration::from_millis(300),
            ring: Duration::from_millis(50),
            dial_timeout: Duration::from_secs(1),
            recordings_dir: None,
            contexts: vec!["from-courier".into(), "from-internal".into()],
            dialplan: None,
            sounds: vec!["beep".into()],
            confirm_press: Duration::from_millis(1600),
            tls: None,
            // Generous: a loaded test machine must not look like a client that stopped reading.
            write_timeout: Duration::from_secs(2),
            originate_log: None,
            http: None,
            cdr_delay: Duration::ZERO,
        }
    }
}

impl SimConfig {
    pub fn from_args(args: &SimArgs) -> anyhow::Result<Self> {
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                let cert_pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
                let key_pem = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
                Some(Self::tls_from_pem(&cert_pem, &key_pem)?)
            }
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        anyhow::ensure!(!args.users.is_empty(), "at least one --user is needed");
        let dialplan = match &args.dialplan {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                let plan = dialplan::Dialplan::parse(&text).with_context(|| format!("in {}", path.display()))?;
                Some(Arc::new(plan))
            }
            None => None,
        };
        let http = args.http_listen.map(|listen| ajam::HttpConfig {
            prefix: args.http_prefix.clone(),
            session_timeout: Duration::from_secs(args.http_timeout_s),
            tls: if args.http_tls { tls.clone() } else { None },
            ..ajam::HttpConfig::new(listen)
        });
        Ok(SimConfig {
            listen: args.listen,
            users: args.users.clone(),
            talk: Duration::from_secs(args.talk_seconds),
            ring: Duration::from_millis(args.ring_ms),
            dial_timeout: Duration::from_secs(args.dial_timeout_s),
            recordings_dir: args.recordings_dir.clone(),
            contexts: args.contexts.clone(),
            dialplan,
            sounds: args.sounds.clone(),
            confirm_press: Duration::from_millis(1600),
            tls,
            write_timeout: Duration::from_millis(args.write_timeout_ms),
            originate_log: args.originate_log.clone(),
            http,
            cdr_delay: Duration::from_millis(args.cdr_delay_ms),
        })
    }

    /// A TLS server configuration from a PEM certificate chain and a PEM private key.
    pub fn tls_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let certs = rustls_pemfile::certs(&mut &cert_pem[..])
            .collect::<Result<Vec<_>, _>>()
            .context("reading the TLS certificate PEM")?;
        anyhow::ensure!(!certs.is_empty(), "no certificate in the TLS certificate PEM");
        let key = rustls_pemfile::private_key(&mut &key_pem[..])
            .context("reading the TLS key PEM")?
            .context("no private key in the TLS key PEM")?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("the TLS certificate and key do not fit together")?;
        Ok(Arc::new(config))
    }
}

/// A running simulator. Dropping it stops it abruptly, like [`Simulator::kill`].
pub struct Simulator {
    pbx: Arc<Pbx>,
    addr: SocketAddr,
    http_addr: Option<SocketAddr>,
}

impl Simulator {
    /// Binds `config.listen` (port 0 picks a free port) and starts serving on the current runtime.
    pub async fn start(config: SimConfig) -> anyhow::Result<Simulator> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("pbx-sim cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let tls = config.tls.is_some();
        let (originate_log, log_writer) = match &config.originate_log {
            Some(path) => originate_log::OriginateLog::open(path).map(|(log, writer)| (Some(log), Some(writer)))?,
            None => (None, None),
        };
        let pbx = Arc::new(Pbx::new(config, originate_log));
        if let Some(writer) = log_writer {
            writer.spawn(&pbx);
        }
        pbx.tasks.spawn(session::accept_loop(listener, pbx.clone()));
        tracing::info!(%addr, tls, "pbx-sim listening");
        let http_addr = match pbx.config.http.clone() {
            Some(http) => {
                let listener = tokio::net::TcpListener::bind(http.listen)
                    .await
                    .with_context(|| format!("pbx-sim cannot listen for HTTP on {}", http.listen))?;
                let http_addr = listener.local_addr()?;
                let path = format!("/{}/rawman", http.prefix.trim_matches('/')).replace("//", "/");
                tracing::info!(addr = %http_addr, tls = http.tls.is_some(), path, "pbx-sim serving AMI over HTTP");
                pbx.tasks.spawn(ajam::accept_loop(listener, pbx.clone(), Arc::new(http)));
                Some(http_addr)
            }
            None => None,
        };
        Ok(Simulator { pbx, addr, http_addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where AMI over HTTP listens (with `SimConfig::http`).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Ends every AMI-over-HTTP session, as Asterisk does with one idle past `httptimeout`: its
    /// next request is `Permission denied` under a new cookie. Returns how many there were.
    pub fn expire_http_sessions(&self) -> usize {
        self.pbx.http_sessions.expire_all()
    }

    /// Live AMI-over-HTTP sessions (logged in or not).
    pub fn http_sessions(&self) -> usize {
        self.pbx.http_sessions.count()
    }

    /// A connection to the simulator over an in-memory pipe of `buffer` bytes each way instead
    /// of TCP: for tests in paused time, where tokio's clock jumps ahead whenever every task waits,
    /// which a real socket's peer cannot be part of.
    pub fn connect_in_memory(&self, buffer: usize) -> tokio::io::DuplexStream {
        let (client, server) = tokio::io::duplex(buffer);
        self.pbx.tasks.spawn(session::serve_in_memory(server, self.pbx.clone()));
        client
    }

    /// Stops like Asterisk shutting down: `Event: Shutdown` (Shutdown: Cleanly, Restart: False)
    /// to every logged-in session that reads system events, sessions closed, calls dropped, the
    /// listener closed. Returns when every task has ended.
    pub async fn shutdown(self) {
        self.pbx.graceful.store(true, Ordering::Release);
        self.pbx.stop.cancel();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.pbx.tasks.wait_idle()).await.is_err() {
            tracing::warn!("pbx-sim tasks still running after shutdown");
        }
        tracing::info!(addr = %self.addr, "pbx-sim stopped");
    }

    /// Stops like a killed process: every connection and call dropped at once, nothing said.
    pub fn kill(&self) {
        self.pbx.stop.cancel();
    }

    /// Originate actions accepted so far (queued or run synchronously).
    pub fn originates(&self) -> u64 {
        self.pbx.originates.load(Ordering::Relaxed)
    }

    /// Second legs dialled so far: a client (or the office) rung from an answered courier channel.
    pub fn client_dials(&self) -> u64 {
        self.pbx.client_dials.load(Ordering::Relaxed)
    }

    /// Dials made by inbound calls (a return call's courier, or the office it fell back to).
    pub fn inbound_dials(&self) -> u64 {
        self.pbx.inbound_dials.load(Ordering::Relaxed)
    }

    /// Calls still going on: once this is 0, every event of the calls placed so far has been
    /// published (a `Ping` answered after that comes after them on every session).
    pub fn calls_in_progress(&self) -> usize {
        self.pbx.calls_in_progress.load(Ordering::Acquire)
    }

    /// Successful logins so far, on the AMI port and over HTTP.
    pub fn logins(&self) -> u64 {
        self.pbx.logins.load(Ordering::Relaxed)
    }

    /// Connected AMI sessions (logged in or not).
    pub fn sessions(&self) -> usize {
        self.pbx.sessions.load(Ordering::Relaxed)
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.pbx.stop.cancel();
    }
}

/// `pbx-sim`: serve until SIGINT or SIGTERM, then shut down like Asterisk.
pub async fn run_cli(args: SimArgs) -> anyhow::Result<()> {
    let config = SimConfig::from_args(&args)?;
    // Catch the signals before accepting anyone, so every connected client hears the Shutdown.
    let stop_requested = stop_signal().context("installing the SIGINT/SIGTERM handlers")?;
    let simulator = Simulator::start(config).await?;
    tracing::info!(addr = %simulator.addr(), users = args.users.len(), "pbx-sim ready");
    stop_requested.await;
    simulator.shutdown().await;
    Ok(())
}

fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "pbx-sim stopping");
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_parse_with_and_without_originate() {
        assert_eq!("gw:s3cret".parse::<SimUser>().unwrap(), SimUser::new("gw", "s3cret"));
        assert_eq!("lim:pw:noorig".parse::<SimUser>().unwrap(), SimUser::without_originate("lim", "pw"));
        assert_eq!("gw:a:b".parse::<SimUser>().unwrap(), SimUser::new("gw", "a:b"));
        assert!("gw".parse::<SimUser>().is_err());
        assert!(":x".parse::<SimUser>().is_err());
        assert!(!format!("{:?}", SimUser::new("gw", "hunter2")).contains("hunter2"));
    }
}
