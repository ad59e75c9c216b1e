//! One logged-in AMI session per PBX, kept up by a supervisor task.
//!
//! The session is carried by the AMI port's own protocol (TCP or TLS) or by Asterisk's HTTP
//! server ([`super::ajam`]); either way it is a [`Link`]: replies and events coming in, actions
//! going out, and everything here is the same for both.
//!
//! The reader never waits on anyone: replies go to the caller's oneshot by ActionID, the
//! OriginateResponse *event* (which also carries `Response:` and the ActionID) goes to the
//! originate's waiter, and events fan out through a broadcast channel (a slow subscriber lags, it
//! does not stall the socket: Asterisk drops readers slower than its `writetimeout`) and a sink
//! that hands them to the call tracker's queues without waiting. Writes go through a writer task
//! that coalesces whatever is queued into one `write`. On disconnect every pending action fails at
//! once; the supervisor reconnects with capped exponential backoff and jitter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::stream::BoxStream as BoxedStream;
use futures_util::StreamExt;
use secrecy::SecretString;
use tokio::io::{AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::ajam::AjamSession;
use super::codec::{AmiCodec, Frame, Message, Outgoing};
use super::message::{self, AmiEvent, Originate, OriginateResponse};
use super::slots::{Slot, Slots};
use super::transport::{self, BoxStream, Endpoint};
use super::AmiError;
use dialback_logging::Chain;

#[derive(Clone)]
pub struct ClientConfig {
    /// Whose PBX this is (the tenant id): in every log line and event.
    pub label: Arc<str>,
    pub endpoint: Endpoint,
    pub username: String,
    pub secret: SecretString,
    pub connect_timeout: Duration,
    pub action_timeout: Duration,
    pub ping_interval: Duration,
    pub max_inflight_originates: usize,
    pub backoff_max: Duration,
    /// Opens the byte stream to the PBX instead of TCP or TLS to `endpoint` (tests in paused time
    /// use an in-memory pipe to the simulator); `None` in production.
    pub connector: Option<Connector>,
}

/// See [`ClientConfig::connector`].
pub type Connector =
    Arc<dyn Fn() -> futures_util::future::BoxFuture<'static, Result<BoxStream, AmiError>> + Send + Sync>;

/// What the call tracker hears from a PBX.
#[derive(Debug, Clone)]
pub enum PbxSignal {
    Event(Arc<AmiEvent>),
    /// Logged in (again): calls in flight before a drop may need reconciling, through this
    /// client (e.g. [`AmiClient::core_show_channels`]).
    Up(AmiClient),
    Down(AmiError),
}

/// Where a connection's signals go, called from its reader task with the connection's label (the
/// tenant). It must not block: the call tracker routes each signal straight to the queue of the
/// worker that owns the call, so no task in between has to wake up.
pub type EventSink = Arc<dyn Fn(&Arc<str>, PbxSignal) + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnState {
    Connecting,
    Up,
    Down(AmiError),
    Closed,
}

type Reply = oneshot::Sender<Result<Message, AmiError>>;

/// Events a subscriber may fall behind before it starts missing them.
const EVENT_RING: usize = 256;

struct PendingOriginate {
    tx: oneshot::Sender<OriginateResponse>,
    /// Held until leg 1 resolves: Asterisk runs one thread per async originate.
    _slot: Slot,
    deadline: Instant,
}

/// One established session: its writer queue and the actions waiting for an answer.
struct Live {
    writer: mpsc::UnboundedSender<Outgoing>,
    pending: Mutex<HashMap<String, Reply>>,
    originates: Mutex<HashMap<String, PendingOriginate>>,
    /// Lists being read (`CoreShowChannels`): their events by the action's ActionID.
    lists: Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>,
    /// Cancelled when this session ends (read error, ping timeout, writer failure).
    ended: CancellationToken,
}

impl Live {
    fn fail_all(&self) {
        for (_, tx) in self.pending.lock().expect("pending lock").drain() {
            let _ = tx.send(Err(AmiError::Disconnected));
        }
        // Dropping the senders wakes the waiters with "disconnected" and frees their slots.
        self.originates.lock().expect("originates lock").clear();
        self.lists.lock().expect("lists lock").clear();
    }
}

struct Shared {
    config: ClientConfig,
    live: RwLock<Option<Arc<Live>>>,
    state: watch::Sender<ConnState>,
    events: broadcast::Sender<Arc<AmiEvent>>,
    originate_slots: Arc<Slots>,
    stop: CancellationToken,
    /// Set by [`AmiClient::close`] before its Logoff: Asterisk then closes the socket, and that end
    /// is the close asked for, not a lost session (nothing to reconnect, no `Down` to report).
    closing: AtomicBool,
    sink: Option<EventSink>,
}

/// A handle to a PBX connection; cheap to clone. Dropping the last handle does not stop the
/// supervisor: call [`AmiClient::close`].
#[derive(Clone)]
pub struct AmiClient {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AmiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AmiClient({}, {:?})", self.shared.config.label, self.shared.config.endpoint)
    }
}

/// A channel as `CoreShowChannels` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveChannel {
    pub channel: String,
    pub uniqueid: String,
    /// The call's first channel's Uniqueid: the ChannelId dialback gave the call.
    pub linkedid: String,
}

/// One priority of a context as `ShowDialPlan` lists it (its `ListDialplan` event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialplanLine {
    pub extension: String,
    pub priority: u32,
    pub application: String,
    /// The application's arguments as written in the dialplan (not expanded).
    pub app_data: String,
}

/// An originate Asterisk has queued; its outcome (leg 1) arrives as an OriginateResponse.
pub struct OriginateHandle {
    pub action_id: String,
    rx: oneshot::Receiver<OriginateResponse>,
}

impl OriginateHandle {
    /// Waits for the OriginateResponse.
    pub async fn outcome(self, timeout: Duration) -> Result<OriginateResponse, AmiError> {
        match tokio::time::timeout(timeout, self.rx).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) => Err(AmiError::Disconnected),
            Err(_) => Err(AmiError::Timeout(timeout.as_millis() as u64)),
        }
    }
}

impl AmiClient {
    /// Starts the supervisor, which connects and logs in at once and stays connected until
    /// [`close`](Self::close).
    pub fn start(config: ClientConfig, sink: Option<EventSink>) -> Self {
        let (state, _) = watch::channel(ConnState::Connecting);
        // Subscribers (the Test button's follower, tests) read as events come; a small ring keeps
        // an idle tenant's connection cheap (each slot is allocated up front for every tenant).
        let (events, _) = broadcast::channel(EVENT_RING);
        let shared = Arc::new(Shared {
            originate_slots: Slots::new(config.max_inflight_originates),
            config,
            live: RwLock::new(None),
            state,
            events,
            stop: CancellationToken::new(),
            closing: AtomicBool::new(false),
            sink,
        });
        let span = tracing::info_span!("ami", tenant = %shared.config.label, pbx = ?shared.config.endpoint);
        tokio::spawn(supervise(shared.clone()).instrument(span));
        Self { shared }
    }

    pub fn label(&self) -> &str {
        &self.shared.config.label
    }

    pub fn state(&self) -> ConnState {
        self.shared.state.borrow().clone()
    }

    /// Waits until the session is up; fails at once with the last error when the latest attempt
    /// failed (callers answer fast and let the supervisor retry in the background).
    pub async fn wait_up(&self, timeout: Duration) -> Result<(), AmiError> {
        let mut rx = self.shared.state.subscribe();
        let wait = async {
            loop {
                match rx.borrow_and_update().clone() {
                    ConnState::Up => return Ok(()),
                    ConnState::Down(e) => return Err(e),
                    ConnState::Closed => return Err(AmiError::NotConnected("the client is closed".into())),
                    ConnState::Connecting => {}
                }
                if rx.changed().await.is_err() {
                    return Err(AmiError::NotConnected("the client is closed".into()));
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(Err(AmiError::Timeout(timeout.as_millis() as u64)))
    }

    /// Every event dialback consumes, as it arrives.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AmiEvent>> {
        self.shared.events.subscribe()
    }

    fn live(&self) -> Result<Arc<Live>, AmiError> {
        self.shared.live.read().expect("live lock").clone().ok_or_else(|| match self.state() {
            ConnState::Down(e) => AmiError::NotConnected(e.to_string()),
            ConnState::Closed => AmiError::NotConnected("the client is closed".into()),
            _ => AmiError::NotConnected("still connecting".into()),
        })
    }

    /// Sends an action (it must carry an `ActionID`) and waits for its reply.
    pub async fn send(&self, action: &Outgoing) -> Result<Message, AmiError> {
        let live = self.live()?;
        let action_id = action.get("ActionID").ok_or_else(|| AmiError::Encode("action without ActionID".into()))?;
        action.validate().map_err(|e| AmiError::Encode(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        live.pending.lock().expect("pending lock").insert(action_id.to_owned(), tx);
        let started = Instant::now();
        let name = action.get("Action").unwrap_or("?").to_owned();
        if live.writer.send(action.clone()).is_err() {
            live.pending.lock().expect("pending lock").remove(action_id);
            return Err(AmiError::Disconnected);
        }
        let timeout = self.shared.config.action_timeout;
        let result = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(AmiError::Disconnected),
            Err(_) => {
                live.pending.lock().expect("pending lock").remove(action_id);
                Err(AmiError::Timeout(timeout.as_millis() as u64))
            }
        };
        metrics::histogram!("dialback_ami_action_seconds", "action" => name.clone())
            .record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            metrics::counter!("dialback_ami_errors_total", "kind" => e.kind()).increment(1);
            tracing::warn!(action = %name, action_id, error = %Chain(&e), "AMI action failed");
        }
        result
    }

    /// Sends an action and maps `Response: Error` to an error.
    pub async fn call(&self, action: &Outgoing) -> Result<Message, AmiError> {
        let reply = self.send(action).await?;
        match reply.response() {
            Some(r) if r.eq_ignore_ascii_case("Success") || r.eq_ignore_ascii_case("Goodbye") => Ok(reply),
            _ => Err(error_reply(&reply)),
        }
    }

    /// Queues an asynchronous originate. Fails fast when the PBX is down, when the per-PBX cap on
    /// in-flight originates is reached, or when Asterisk refuses it (permission, unknown context).
    pub async fn originate(&self, originate: &Originate) -> Result<OriginateHandle, AmiError> {
        let slot = self.shared.originate_slots.take().map_err(AmiError::Saturated)?;
        let live = self.live()?;
        let action_id = message::new_action_id();
        let action = originate.to_action(&action_id);
        action.validate().map_err(|e| AmiError::Encode(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        // Registered before sending: the OriginateResponse may follow the reply immediately.
        let deadline = Instant::now() + Duration::from_millis(originate.timeout_ms) + Duration::from_secs(60);
        live.originates
            .lock()
            .expect("originates lock")
            .insert(action_id.clone(), PendingOriginate { tx, _slot: slot, deadline });
        match self.call(&action).await {
            Ok(_) => Ok(OriginateHandle { action_id, rx }),
            Err(e) => {
                live.originates.lock().expect("originates lock").remove(&action_id);
                Err(e)
            }
        }
    }

    /// The channels up on the PBX now (`CoreShowChannels`; the AMI user needs `system` or
    /// `reporting` in its write= line).
    pub async fn core_show_channels(&self) -> Result<Vec<LiveChannel>, AmiError> {
        let items = self.list(Outgoing::action("CoreShowChannels"), "CoreShowChannelsComplete").await?;
        Ok(items
            .iter()
            .map(|item| {
                let field = |name: &str| item.get(name).unwrap_or_default().to_owned();
                LiveChannel { channel: field("Channel"), uniqueid: field("Uniqueid"), linkedid: field("Linkedid") }
            })
            .collect())
    }

    /// The priorities of `context` as the PBX runs it now (`ShowDialPlan`; the AMI user needs
    /// `config` or `reporting` in its write= line), in the order Asterisk lists them; `None` when
    /// the PBX has no such context. A context defined twice is listed as it runs: each priority
    /// from the first definition that has it (tests/fixtures/asterisk-22/dialplan/).
    pub async fn show_dialplan(&self, context: &str) -> Result<Option<Vec<DialplanLine>>, AmiError> {
        let action = Outgoing::action("ShowDialPlan").with("Context", context);
        let items = match self.list(action, "ShowDialPlanComplete").await {
            Err(AmiError::Rejected(text)) if text.starts_with("Did not find context") => return Ok(None),
            other => other?,
        };
        Ok(Some(
            items
                .iter()
                .map(|item| {
                    let field = |name: &str| item.get(name).unwrap_or_default().to_owned();
                    DialplanLine {
                        extension: field("Extension"),
                        priority: item.get("Priority").and_then(|p| p.trim().parse().ok()).unwrap_or(0),
                        application: field("Application"),
                        app_data: field("AppData"),
                    }
                })
                .collect(),
        ))
    }

    /// The value of AstDB entry `family`/`key` (`DBGet`; the AMI user needs `system` or
    /// `reporting` in its write= line); `None` when there is no such entry
    /// (tests/fixtures/asterisk-22/dialplan/k3_astdb_outcome_record.raw.txt).
    pub async fn db_get(&self, family: &str, key: &str) -> Result<Option<String>, AmiError> {
        let action = Outgoing::action("DBGet").with("Family", family).with("Key", key);
        let items = match self.list(action, "DBGetComplete").await {
            Err(AmiError::Rejected(text)) if text.starts_with("Database entry not found") => return Ok(None),
            other => other?,
        };
        Ok(items.iter().find_map(|item| item.get("Val").map(str::to_owned)))
    }

    /// Sends a list action (an ActionID is added) and reads its items up to the event `complete`.
    async fn list(&self, action: Outgoing, complete: &str) -> Result<Vec<Message>, AmiError> {
        let live = self.live()?;
        let action_id = message::new_action_id();
        let (tx, mut rx) = mpsc::unbounded_channel();
        live.lists.lock().expect("lists lock").insert(action_id.clone(), tx);
        let timeout = self.shared.config.action_timeout;
        let listed = async {
            self.call(&action.with("ActionID", action_id.clone())).await?;
            let mut items = Vec::new();
            loop {
                let item = match tokio::time::timeout(timeout, rx.recv()).await {
                    Ok(Some(item)) => item,
                    Ok(None) => return Err(AmiError::Disconnected),
                    Err(_) => return Err(AmiError::Timeout(timeout.as_millis() as u64)),
                };
                if item.event().is_some_and(|e| e.eq_ignore_ascii_case(complete)) {
                    return Ok(items);
                }
                items.push(item);
            }
        };
        let result = listed.await;
        live.lists.lock().expect("lists lock").remove(&action_id);
        result
    }

    /// Hangs up a channel (cancelling a ringing callback).
    pub async fn hangup(&self, channel: &str) -> Result<(), AmiError> {
        self.call(&message::hangup(channel, &message::new_action_id())).await.map(|_| ())
    }

    /// Round trip time of a `Ping`.
    pub async fn ping(&self) -> Result<Duration, AmiError> {
        let started = Instant::now();
        self.call(&message::ping(&message::new_action_id())).await?;
        Ok(started.elapsed())
    }

    /// Actions sent and not answered yet (0 while disconnected).
    pub fn pending_actions(&self) -> usize {
        self.live().map_or(0, |live| live.pending.lock().expect("pending lock").len())
    }

    pub fn inflight_originates(&self) -> usize {
        self.shared.originate_slots.taken()
    }

    /// Sets this session's share of the PBX's cap on originates in flight (it starts at
    /// [`ClientConfig::max_inflight_originates`]), for the originates sent from now on.
    pub fn set_max_inflight_originates(&self, limit: usize) {
        self.shared.originate_slots.set_limit(limit);
    }

    /// Logs off (when up) and stops the supervisor; pending actions fail with "disconnected".
    pub async fn close(&self) {
        self.shared.closing.store(true, Ordering::Release);
        if self.live().is_ok() {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), self.send(&message::logoff(&message::new_action_id())))
                    .await;
        }
        self.shared.stop.cancel();
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Maps a `Response: Error` reply to an error.
pub fn error_reply(reply: &Message) -> AmiError {
    let text = reply.get("Message").unwrap_or("error without a message");
    if text.eq_ignore_ascii_case("Permission denied") {
        AmiError::PermissionDenied
    } else if text.eq_ignore_ascii_case("Authentication failed") {
        AmiError::AuthFailed
    } else {
        AmiError::Rejected(text.to_owned())
    }
}

type Reader = FramedRead<ReadHalf<BoxStream>, AmiCodec>;

/// Reads the banner line: proof that an AMI server answered.
pub async fn read_banner(reader: &mut Reader, timeout: Duration) -> Result<String, AmiError> {
    let not_ami = |what: String| AmiError::NotAmi(what);
    match tokio::time::timeout(timeout, reader.next()).await {
        Err(_) => Err(not_ami(format!(
            "no AMI banner within {} ms (is this the AMI port, 5038 or 5039 for TLS, and not SIP or HTTP?)",
            timeout.as_millis()
        ))),
        Ok(None) => Err(not_ami(
            "the server closed the connection before any banner (manager.conf deny/permit may reject this address)"
                .into(),
        )),
        Ok(Some(Err(e))) => Err(not_ami(format!("unreadable greeting: {e}"))),
        Ok(Some(Ok(Frame::Banner(line)))) if line.starts_with("Asterisk Call Manager/") => Ok(line),
        Ok(Some(Ok(Frame::Banner(line)))) => {
            let shown: String = line.chars().take(60).collect();
            Err(not_ami(format!("it greeted with {shown:?}, not \"Asterisk Call Manager/...\"")))
        }
        Ok(Some(Ok(Frame::Message(_)))) => Err(not_ami("no banner line".into())),
    }
}

/// Logs in on a fresh session and waits for the reply (events before it are skipped).
pub async fn login<W: AsyncWrite + Unpin>(
    reader: &mut Reader,
    writer: &mut W,
    username: &str,
    secret: &SecretString,
    timeout: Duration,
) -> Result<(), AmiError> {
    let action_id = message::new_action_id();
    let mut wire = BytesMut::new();
    message::login(username, secret, &action_id).encode_into(&mut wire).map_err(|e| AmiError::Encode(e.to_string()))?;
    writer.write_all(&wire).await.map_err(|e| AmiError::Io(e.to_string()))?;
    let wait = async {
        loop {
            match reader.next().await {
                None => return Err(AmiError::Disconnected),
                Some(Err(e)) => return Err(AmiError::Io(e.to_string())),
                Some(Ok(Frame::Message(m))) if m.response().is_some() && m.action_id() == Some(&action_id) => {
                    return match m.response() {
                        Some(r) if r.eq_ignore_ascii_case("Success") => Ok(()),
                        _ => Err(error_reply(&m)),
                    };
                }
                Some(Ok(_)) => continue,
            }
        }
    };
    // Asterisk answers a wrong secret after ~1 s; allow for that beyond the action timeout.
    tokio::time::timeout(timeout + Duration::from_secs(2), wait)
        .await
        .unwrap_or(Err(AmiError::Timeout(timeout.as_millis() as u64)))
}

/// A logged-in session, whatever carries it.
pub enum Link {
    /// The AMI port: one byte stream, TCP or TLS.
    Stream { reader: Reader, writer: WriteHalf<BoxStream> },
    /// Asterisk's HTTP server.
    Http(AjamSession),
}

impl Link {
    /// Starts the session's traffic: actions sent from `actions`, replies and events read into the
    /// returned stream (an error ends it), until `ended` is cancelled.
    fn start(
        self,
        actions: mpsc::UnboundedReceiver<Outgoing>,
        ended: CancellationToken,
    ) -> BoxedStream<'static, Result<Message, AmiError>> {
        match self {
            Link::Stream { reader, writer } => {
                tokio::spawn(write_loop(writer, actions, ended).in_current_span());
                reader
                    .filter_map(|frame| async move {
                        match frame {
                            Ok(Frame::Message(m)) => Some(Ok(m)),
                            Ok(Frame::Banner(_)) => None,
                            Err(e) => Some(Err(AmiError::Io(e.to_string()))),
                        }
                    })
                    .boxed()
            }
            Link::Http(session) => {
                let mut incoming = session.run(actions, ended);
                futures_util::stream::poll_fn(move |cx| incoming.poll_recv(cx)).boxed()
            }
        }
    }
}

/// Transport, banner and login (or, over HTTP, login): a ready session.
pub async fn establish(config: &ClientConfig) -> Result<Link, AmiError> {
    if config.endpoint.http_prefix.is_some() {
        let session = AjamSession::establish(
            &config.endpoint,
            &config.username,
            &config.secret,
            config.connect_timeout,
            config.action_timeout,
        )
        .await?;
        return Ok(Link::Http(session));
    }
    let stream = match &config.connector {
        Some(connect) => connect().await?,
        None => transport::connect(&config.endpoint, config.connect_timeout).await?,
    };
    let (rd, mut wr) = tokio::io::split(stream);
    let mut reader = FramedRead::new(rd, AmiCodec::client());
    read_banner(&mut reader, config.connect_timeout).await?;
    login(&mut reader, &mut wr, &config.username, &config.secret, config.action_timeout).await?;
    Ok(Link::Stream { reader, writer: wr })
}

fn backoff(attempt: u32, cap: Duration) -> Duration {
    let base = Duration::from_millis(250).saturating_mul(1u32 << attempt.min(16));
    let ceiling = base.min(cap);
    // "Equal jitter": half fixed, half random, so a fleet does not reconnect in lockstep.
    let half = ceiling / 2;
    half + half.mul_f64(rand::random::<f64>())
}

async fn supervise(shared: Arc<Shared>) {
    let mut attempt = 0u32;
    while !shared.stop.is_cancelled() {
        shared.state.send_replace(ConnState::Connecting);
        let result = tokio::select! {
            r = establish(&shared.config) => r,
            _ = shared.stop.cancelled() => break,
        };
        match result {
            Ok(link) => {
                attempt = 0;
                tracing::info!("AMI session up");
                metrics::gauge!("dialback_ami_connections").increment(1.0);
                let reason = run_session(&shared, link).await;
                metrics::gauge!("dialback_ami_connections").decrement(1.0);
                if shared.stop.is_cancelled() || shared.closing.load(Ordering::Acquire) {
                    tracing::info!(how = %reason, "AMI session closed by dialback (logged off)");
                    break;
                }
                tracing::warn!(error = %Chain(&reason), "AMI session lost; reconnecting");
                metrics::counter!("dialback_ami_reconnects_total").increment(1);
                notify(&shared, PbxSignal::Down(reason.clone()));
                shared.state.send_replace(ConnState::Down(reason));
            }
            Err(e) => {
                metrics::counter!("dialback_ami_errors_total", "kind" => e.kind()).increment(1);
                tracing::warn!(error = %Chain(&e), attempt, "AMI connect failed");
                notify(&shared, PbxSignal::Down(e.clone()));
                shared.state.send_replace(ConnState::Down(e));
                attempt += 1;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff(attempt, shared.config.backoff_max)) => {}
            _ = shared.stop.cancelled() => break,
        }
    }
    shared.state.send_replace(ConnState::Closed);
    tracing::info!("AMI client closed");
}

fn notify(shared: &Shared, signal: PbxSignal) {
    if let Some(sink) = &shared.sink {
        sink(&shared.config.label, signal);
    }
}

/// Serves one session until it ends; returns why it ended.
async fn run_session(shared: &Arc<Shared>, link: Link) -> AmiError {
    let (writer_tx, writer_rx) = mpsc::unbounded_channel();
    let live = Arc::new(Live {
        writer: writer_tx,
        pending: Mutex::new(HashMap::new()),
        originates: Mutex::new(HashMap::new()),
        lists: Mutex::new(HashMap::new()),
        ended: CancellationToken::new(),
    });
    let mut incoming = link.start(writer_rx, live.ended.clone());
    *shared.live.write().expect("live lock") = Some(live.clone());
    shared.state.send_replace(ConnState::Up);
    notify(shared, PbxSignal::Up(AmiClient { shared: shared.clone() }));

    let mut ping = tokio::time::interval(shared.config.ping_interval);
    ping.tick().await;
    let reason = loop {
        tokio::select! {
            message = incoming.next() => match message {
                Some(Ok(m)) => dispatch(shared, &live, m),
                Some(Err(e)) => break e,
                None => break AmiError::Disconnected,
            },
            _ = ping.tick() => {
                prune_originates(&live);
                let client = AmiClient { shared: shared.clone() };
                let ended = live.ended.clone();
                tokio::spawn(async move {
                    if let Err(e) = client.ping().await {
                        tracing::warn!(error = %Chain(&e), "keepalive ping failed; dropping the session");
                        ended.cancel();
                    }
                }.in_current_span());
            }
            _ = live.ended.cancelled() => break AmiError::Disconnected,
            _ = shared.stop.cancelled() => break AmiError::NotConnected("closed".into()),
        }
    };
    *shared.live.write().expect("live lock") = None;
    live.ended.cancel();
    live.fail_all();
    reason
}

fn dispatch(shared: &Shared, live: &Live, m: Message) {
    if m.event().is_some() {
        // An item of a list this session asked for: it goes to the asker only.
        if let Some(list) = m.action_id().and_then(|id| live.lists.lock().expect("lists lock").get(id).cloned()) {
            let _ = list.send(m);
            return;
        }
        let Some(event) = AmiEvent::parse(&m) else { return };
        if let AmiEvent::OriginateResponse(r) = &event {
            if let Some(waiter) = live.originates.lock().expect("originates lock").remove(&r.action_id) {
                let _ = waiter.tx.send(r.clone());
            }
        }
        if let AmiEvent::Shutdown { restart } = &event {
            tracing::warn!(restart, "Asterisk is shutting down; calls in flight will be lost");
        }
        let event = Arc::new(event);
        let _ = shared.events.send(event.clone());
        notify(shared, PbxSignal::Event(event));
    } else if let Some(id) = m.action_id() {
        let waiter = live.pending.lock().expect("pending lock").remove(id);
        if let Some(tx) = waiter {
            let _ = tx.send(Ok(m));
        }
    }
}

/// Drops originate waiters whose OriginateResponse never came (e.g. the PBX filters events).
fn prune_originates(live: &Live) {
    let now = Instant::now();
    live.originates.lock().expect("originates lock").retain(|_, p| p.deadline > now);
}

/// Writes queued actions, coalescing whatever is queued into one write. They were validated when
/// queued ([`AmiClient::send`]), so encoding them cannot fail.
async fn write_loop(
    mut writer: WriteHalf<BoxStream>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    ended: CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let first = tokio::select! {
            item = rx.recv() => match item { Some(action) => action, None => break },
            _ = ended.cancelled() => break,
        };
        let _ = first.encode_into(&mut buf);
        while buf.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(more) => {
                    let _ = more.encode_into(&mut buf);
                }
                Err(_) => break,
            }
        }
        if let Err(e) = writer.write_all(&buf).await {
            tracing::warn!(error = %Chain(&e), "AMI write failed");
            ended.cancel();
            break;
        }
        buf.clear();
    }
    let _ = writer.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped_with_jitter() {
        let cap = Duration::from_secs(30);
        for attempt in 0..40 {
            let d = backoff(attempt, cap);
            assert!(d <= cap);
        }
        assert!(backoff(0, cap) <= Duration::from_millis(250));
        assert!(backoff(10, cap) >= Duration::from_secs(15));
    }
}
