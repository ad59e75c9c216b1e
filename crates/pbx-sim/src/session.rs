//! AMI connections: the accept loop, and one task per connection that sends the banner, runs the
//! client's actions in the order they arrive, and writes the events its `Events:` mask lets
//! through. Replies and events share that one writer, so their order on the wire is the order the
//! session produced them.
//!
//! A session keeps little while idle (a small read buffer, an empty write buffer, its place on
//! the event ring), so ten thousand logged-in sessions stay cheap. A client that stops reading is
//! dropped after `write_timeout` or once it is a whole event ring behind, as Asterisk drops slow
//! clients.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, oneshot};
use tokio_rustls::rustls;
use tokio_util::codec::Decoder;

use dialback_ami::codec::{encode_banner, AmiCodec, Frame, Message};

use super::call;
use super::dialplan::Dialplan;
use super::originate::OriginateRequest;
use super::pbx::{unix_now, Pbx};
use super::wire::{class, parse_event_mask, Event, Wire};
use super::SimUser;
use dialback_logging::Chain;

/// The AMI version a real Asterisk 22 announces.
const AMI_VERSION: &str = "11.0.0";
/// Asterisk answers a wrong secret or user after about a second, then hangs up.
const LOGIN_FAILURE_DELAY: Duration = Duration::from_secs(1);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Read in steps this small; a pipelined burst grows the buffer, which shrinks back when idle.
const READ_STEP: usize = 1024;
const KEEP_INPUT_CAPACITY: usize = 2 * 1024;
/// Write out once this much is queued.
const FLUSH_AT: usize = 64 * 1024;
/// Idle buffers larger than this are given back: a burst of events must not leave every one of
/// thousands of sessions holding its peak.
const KEEP_OUTPUT_CAPACITY: usize = 2 * 1024;

pub(crate) async fn accept_loop(listener: TcpListener, pbx: Arc<Pbx>) {
    pbx.accept(listener, "AMI", |stream, peer| serve(stream, peer, pbx.clone())).await
}

/// Counts a connected session for `Simulator::sessions()`.
struct Connected(Arc<Pbx>);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve(stream: TcpStream, peer: SocketAddr, pbx: Arc<Pbx>) {
    pbx.sessions.fetch_add(1, Ordering::Relaxed);
    let _connected = Connected(pbx.clone());
    tracing::debug!(%peer, "AMI session connected");
    match pbx.config.tls.clone() {
        None => Session::new(stream, peer, pbx).run().await,
        // Boxed: a TLS connection's state is several kilobytes, and plain sessions should not
        // reserve room for it.
        Some(tls) => Box::pin(serve_tls(stream, tls, peer, pbx)).await,
    }
}

/// A session over an in-memory pipe (see `Simulator::connect_in_memory`).
pub(crate) async fn serve_in_memory(stream: tokio::io::DuplexStream, pbx: Arc<Pbx>) {
    pbx.sessions.fetch_add(1, Ordering::Relaxed);
    let _connected = Connected(pbx.clone());
    Session::new(stream, SocketAddr::from(([0, 0, 0, 0], 0)), pbx).run().await
}

async fn serve_tls(stream: TcpStream, tls: Arc<rustls::ServerConfig>, peer: SocketAddr, pbx: Arc<Pbx>) {
    let handshake = tokio::select! {
        _ = pbx.stop.cancelled() => return,
        handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tokio_rustls::TlsAcceptor::from(tls).accept(stream)) => handshake,
    };
    match handshake {
        Ok(Ok(stream)) => Session::new(stream, peer, pbx).run().await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %Chain(&e), "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

pub(super) enum Next {
    Continue,
    Close,
}

enum Wake {
    Stop,
    Event(Result<Event, RecvError>),
    Read(std::io::Result<usize>),
}

struct Session<S> {
    stream: S,
    codec: AmiCodec,
    input: BytesMut,
    manager: Manager,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    fn new(stream: S, peer: SocketAddr, pbx: Arc<Pbx>) -> Self {
        Session { stream, codec: AmiCodec::server(), input: BytesMut::new(), manager: Manager::new(pbx, peer, false) }
    }

    async fn run(mut self) {
        encode_banner(AMI_VERSION, &mut self.manager.output);
        loop {
            let next = self.run_buffered_actions().await;
            if self.flush().await.is_err() || matches!(next, Next::Close) {
                break;
            }
            self.shrink_idle_buffers();
            if self.input.capacity() - self.input.len() < READ_STEP / 4 {
                self.input.reserve(READ_STEP);
            }
            let wake = tokio::select! {
                _ = self.manager.pbx.stop.cancelled() => Wake::Stop,
                event = next_event(&mut self.manager.events) => Wake::Event(event),
                read = self.stream.read_buf(&mut self.input) => Wake::Read(read),
            };
            match wake {
                Wake::Stop => return self.say_shutdown().await,
                Wake::Event(Ok(event)) => {
                    self.manager.push_event(&event);
                    if self.manager.drain_events(FLUSH_AT).is_err() {
                        break;
                    }
                }
                Wake::Event(Err(RecvError::Lagged(missed))) => {
                    tracing::warn!(peer = %self.manager.peer, missed, "AMI session too slow for the event stream; dropping it");
                    break;
                }
                Wake::Event(Err(RecvError::Closed)) | Wake::Read(Ok(0)) => break,
                Wake::Read(Ok(_)) => {}
                Wake::Read(Err(e)) => {
                    tracing::debug!(peer = %self.manager.peer, error = %Chain(&e), "AMI session read failed");
                    break;
                }
            }
        }
        tracing::debug!(peer = %self.manager.peer, "AMI session closed");
    }

    /// Runs every complete action already received, in order (a pipelined batch is answered in
    /// the order it was sent).
    async fn run_buffered_actions(&mut self) -> Next {
        while !self.manager.pbx.stop.is_cancelled() {
            let message = match self.codec.decode(&mut self.input) {
                Ok(Some(Frame::Message(message))) => message,
                Ok(Some(Frame::Banner(_))) => continue,
                Ok(None) => break,
                // Asterisk's limits: a line over 1024 bytes or a message over 128 lines.
                Err(e) => {
                    tracing::debug!(peer = %self.manager.peer, error = %Chain(&e), "malformed AMI input; closing the session");
                    return Next::Close;
                }
            };
            if let Next::Close = self.manager.handle(&message).await {
                return Next::Close;
            }
            if self.manager.output.len() >= FLUSH_AT && self.flush().await.is_err() {
                return Next::Close;
            }
        }
        Next::Continue
    }

    /// Writes what is queued; a client that does not take it within `write_timeout` is dropped.
    async fn flush(&mut self) -> Result<(), ()> {
        if self.manager.output.is_empty() {
            return Ok(());
        }
        let limit = self.manager.pbx.config.write_timeout;
        let write = async {
            self.stream.write_all(&self.manager.output).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(limit, write).await {
            Ok(Ok(())) => {
                self.manager.output.clear();
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.manager.peer, error = %Chain(&e), "AMI session write failed");
                Err(())
            }
            Err(_) => {
                tracing::warn!(peer = %self.manager.peer, ?limit, "AMI client stopped reading; dropping it");
                Err(())
            }
        }
    }

    fn shrink_idle_buffers(&mut self) {
        if self.manager.output.capacity() > KEEP_OUTPUT_CAPACITY {
            self.manager.output = BytesMut::new();
        }
        // An empty buffer holds no partial message, so the codec has nothing to lose.
        if self.input.is_empty() && self.input.capacity() > KEEP_INPUT_CAPACITY {
            self.input = BytesMut::new();
        }
    }

    /// Asterisk stopping: `Event: Shutdown` to a session that reads system events, then close.
    /// A killed simulator just drops the connection.
    async fn say_shutdown(mut self) {
        if !self.manager.pbx.graceful.load(Ordering::Acquire) || self.manager.user.is_none() {
            return;
        }
        if self.manager.mask & class::SYSTEM != 0 {
            let mut wire = Wire::event("Shutdown", class::SYSTEM);
            wire.header("Shutdown", "Cleanly").header("Restart", "False");
            self.manager.output.extend_from_slice(&wire.into_bytes());
        }
        if self.flush().await.is_ok() {
            let _ = tokio::time::timeout(self.manager.pbx.config.write_timeout, self.stream.shutdown()).await;
        }
    }
}

/// What an AMI session is apart from its connection: who logged in, which events it takes, and
/// the replies and events waiting to be written. A session on the AMI port writes them to its
/// socket; an AJAM session (`ajam.rs`) answers each HTTP request with them.
pub(super) struct Manager {
    pub(super) pbx: Arc<Pbx>,
    peer: SocketAddr,
    pub(super) output: BytesMut,
    /// Index into the configured users once logged in.
    user: Option<usize>,
    /// The classes this session receives: the user's read permission and its `Events:` mask.
    pub(super) mask: u32,
    /// Its place on the event ring; none while it receives no events.
    pub(super) events: Option<broadcast::Receiver<Event>>,
    /// Over HTTP events wait for `waitevent` (never in an action's answer), and the login answer
    /// has no FullyBooted (Asterisk 22's transcript shows none).
    over_http: bool,
}

impl Manager {
    pub(super) fn new(pbx: Arc<Pbx>, peer: SocketAddr, over_http: bool) -> Self {
        Manager { pbx, peer, output: BytesMut::new(), user: None, mask: 0, events: None, over_http }
    }

    pub(super) fn logged_in(&self) -> bool {
        self.user.is_some()
    }

    pub(super) async fn handle(&mut self, message: &Message) -> Next {
        let id = message.action_id();
        let Some(action) = message.action().filter(|a| !a.is_empty()) else {
            self.reply_error(id, "Missing action in request");
            return Next::Continue;
        };
        let name = action.to_ascii_lowercase();
        if self.user.is_none() && !matches!(name.as_str(), "login" | "logoff" | "challenge") {
            self.reply_error(id, "Permission denied");
            return Next::Continue;
        }
        match name.as_str() {
            "login" => return self.login(message).await,
            "logoff" => {
                self.reply("Goodbye", id, "Thanks for all the fish.");
                return Next::Close;
            }
            "ping" => {
                // Asterisk writes a session's pending events before it reads the next action
                // (manager.c, `do_message`), so whatever happened before a Ping arrives is on the
                // wire before its Pong: a client can use a Ping as a barrier.
                if self.drain_events(usize::MAX).is_err() {
                    return Next::Close;
                }
                let now = unix_now();
                let mut wire = Wire::reply("Success", id);
                wire.header("Ping", "Pong")
                    .header("Timestamp", &format!("{}.{:06}", now.as_secs(), now.subsec_micros()));
                self.output.extend_from_slice(&wire.into_bytes());
            }
            "events" => self.set_events(message),
            "coreshowchannels" => self.core_show_channels(id),
            "showdialplan" => self.show_dialplan(message),
            "originate" => self.originate(message).await,
            "hangup" => self.hang_up(message),
            "dbput" | "dbget" | "dbgettree" | "dbdel" | "dbdeltree" => self.astdb(&name, message),
            _ => self.reply_error(
                id,
                &format!("Invalid/unknown command: {action}. Use Action: ListCommands to show available commands."),
            ),
        }
        Next::Continue
    }

    async fn login(&mut self, message: &Message) -> Next {
        let id = message.action_id();
        if self.user.is_some() {
            self.reply("Success", id, "Already authenticated");
            return Next::Continue;
        }
        let username = message.get("Username").unwrap_or_default();
        let secret = message.get("Secret").unwrap_or_default();
        let users = &self.pbx.config.users;
        let Some(index) = users.iter().position(|u| u.name.eq_ignore_ascii_case(username) && u.secret == secret) else {
            tracing::info!(peer = %self.peer, username, "AMI login refused");
            if !self.pbx.sleep(LOGIN_FAILURE_DELAY).await {
                return Next::Close;
            }
            self.reply_error(id, "Authentication failed");
            return Next::Close;
        };
        let read_mask = users[index].read_mask();
        self.user = Some(index);
        self.pbx.logins.fetch_add(1, Ordering::Relaxed);
        self.reply("Success", id, "Authentication accepted");
        self.set_mask(read_mask & message.get("Events").map_or(class::ALL, parse_event_mask));
        if self.mask & class::SYSTEM != 0 && !self.over_http {
            let uptime = self.pbx.uptime_seconds().to_string();
            let mut booted = Wire::event("FullyBooted", class::SYSTEM);
            booted.header("Uptime", &uptime).header("LastReload", &uptime).header("Status", "Fully Booted");
            self.output.extend_from_slice(&booted.into_bytes());
        }
        Next::Continue
    }

    /// `Action: Events` changes the mask mid-session.
    fn set_events(&mut self, message: &Message) {
        let requested = parse_event_mask(message.get("EventMask").unwrap_or_default());
        self.set_mask(self.user.map_or(0, |i| self.pbx.config.users[i].read_mask()) & requested);
        let mut wire = Wire::reply("Success", message.action_id());
        wire.header("Events", if self.mask == 0 { "Off" } else { "On" });
        self.output.extend_from_slice(&wire.into_bytes());
    }

    fn set_mask(&mut self, mask: u32) {
        self.mask = mask;
        if mask == 0 {
            self.events = None;
        } else if self.events.is_none() {
            self.events = Some(self.pbx.subscribe());
        }
    }

    async fn originate(&mut self, message: &Message) {
        if let (Some(log), Some(channel_id)) = (&self.pbx.originate_log, message.get("ChannelId")) {
            log.record(channel_id);
        }
        let id = message.action_id();
        if !self.user.is_some_and(|i| self.pbx.config.users[i].can_originate) {
            self.reply_error(id, "Permission denied");
            return;
        }
        let request = match OriginateRequest::parse(message, |context, exten| self.pbx.extension_exists(context, exten))
        {
            Ok(request) => request,
            Err(refusal) => {
                self.reply_error(id, &refusal);
                return;
            }
        };
        self.pbx.originates.fetch_add(1, Ordering::Relaxed);
        if request.is_async && super::inbound::is_inbound(&self.pbx, &request) {
            self.reply("Success", id, "Originate successfully queued");
            return super::inbound::start(self.pbx.clone(), request);
        }
        if request.is_async {
            self.reply("Success", id, "Originate successfully queued");
            return call::start(self.pbx.clone(), request, None);
        }
        // A synchronous Originate holds the session (no replies, no events) until the courier
        // answers or the leg fails, and then says only "Originate failed" (d7_sync_busy).
        let (answered_tx, answered_rx) = oneshot::channel();
        call::start(self.pbx.clone(), request, Some(answered_tx));
        let answered = tokio::select! {
            _ = self.pbx.stop.cancelled() => return,
            answered = answered_rx => answered.unwrap_or(false),
        };
        if answered {
            self.reply("Success", id, "Originate successfully queued");
        } else {
            self.reply_error(id, "Originate failed");
        }
    }

    /// `CoreShowChannels`: a list written straight to this session, never interleaved with
    /// events (manager.c `action_coreshowchannels`): the Response, one `CoreShowChannel` per
    /// channel (no Privilege), then `CoreShowChannelsComplete`.
    fn core_show_channels(&mut self, id: Option<&str>) {
        let mut wire = Wire::reply("Success", id);
        wire.header("EventList", "start").header("Message", "Channels will follow");
        self.output.extend_from_slice(&wire.into_bytes());
        let channels = self.pbx.channels();
        for (channel, age) in &channels {
            let mut wire = Wire::bare("Event", "CoreShowChannel");
            if let Some(id) = id {
                wire.header("ActionID", id);
            }
            channel.write_block(&mut wire, "");
            let secs = age.as_secs();
            wire.header("Application", &channel.cdr.last_app)
                .header("ApplicationData", &channel.cdr.last_data)
                .header("Duration", &format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60))
                .header("BridgeId", "");
            self.output.extend_from_slice(&wire.into_bytes());
        }
        let mut wire = Wire::bare("Event", "CoreShowChannelsComplete");
        if let Some(id) = id {
            wire.header("ActionID", id);
        }
        wire.header("EventList", "Complete").header("ListItems", &channels.len().to_string());
        self.output.extend_from_slice(&wire.into_bytes());
    }

    /// The AstDB actions (main/db.c `manager_db*`): `DBGet` and `DBGetTree` need `write` with
    /// system or reporting, the others system; a list is written straight to this session like
    /// `CoreShowChannels`, its items' `ActionID` last.
    fn astdb(&mut self, action: &str, message: &Message) {
        let id = message.action_id();
        let write = self.user.map_or(0, |i| write_mask(&self.pbx.config.users[i]));
        let needs = if matches!(action, "dbget" | "dbgettree") { "system,reporting" } else { "system" };
        if write & parse_event_mask(needs) == 0 {
            return self.reply_error(id, "Permission denied");
        }
        let family = message.get("Family").unwrap_or_default();
        let key = message.get("Key").filter(|k| !k.is_empty());
        if family.is_empty() && action != "dbgettree" {
            return self.reply_error(id, "No family specified.");
        }
        let db = &self.pbx.astdb;
        match (action, key) {
            ("dbput", Some(key)) => {
                db.put(family, key, message.get("Val").unwrap_or_default());
                self.reply("Success", id, "Updated database successfully");
            }
            ("dbget", Some(key)) => match db.get(family, key) {
                Some(value) => {
                    let mut item = Wire::bare("Event", "DBGetResponse");
                    item.header("Family", family).header("Key", key).header("Val", &value);
                    self.write_list(id, "DBGetComplete", vec![item]);
                }
                None => self.reply_error(id, "Database entry not found"),
            },
            ("dbdel", Some(key)) => match db.del(family, key) {
                true => self.reply("Success", id, "Key deleted successfully"),
                false => self.reply_error(id, "Database entry could not be deleted"),
            },
            ("dbgettree", key) => {
                let items = db
                    .tree(family, key)
                    .into_iter()
                    .map(|(key, value)| {
                        let mut item = Wire::bare("Event", "DBGetTreeResponse");
                        item.header("Key", &key).header("Val", &value);
                        item
                    })
                    .collect();
                self.write_list(id, "DBGetTreeComplete", items);
            }
            ("dbdeltree", key) => match db.del_tree(family, key) {
                0 => self.reply_error(id, "Database entry not found"),
                _ => self.reply("Success", id, "Key tree deleted successfully"),
            },
            _ => self.reply_error(id, "No key specified."),
        }
    }

    /// A list's Response ("Result will follow"), its items, then its `complete` event.
    fn write_list(&mut self, id: Option<&str>, complete: &str, items: Vec<Wire>) {
        let mut wire = Wire::reply("Success", id);
        wire.header("EventList", "start").header("Message", "Result will follow");
        self.output.extend_from_slice(&wire.into_bytes());
        let count = items.len();
        for mut item in items {
            if let Some(id) = id {
                item.header("ActionID", id);
            }
            self.output.extend_from_slice(&item.into_bytes());
        }
        let mut wire = Wire::bare("Event", complete);
        if let Some(id) = id {
            wire.header("ActionID", id);
        }
        wire.header("EventList", "Complete").header("ListItems", &count.to_string());
        self.output.extend_from_slice(&wire.into_bytes());
    }

    /// `ShowDialPlan` (pbx.c `manager_show_dialplan`), written straight to this session like
    /// `CoreShowChannels`: the list's Response, one `ListDialplan` per priority (no Privilege),
    /// then `ShowDialPlanComplete` with its counts (k1, k2 in tests/fixtures/asterisk-22/dialplan/).
    /// Without a loaded dialplan it lists the reference one in each configured context.
    fn show_dialplan(&mut self, message: &Message) {
        let id = message.action_id();
        // Registered with EVENT_FLAG_CONFIG | EVENT_FLAG_REPORTING, which manager.c checks
        // against the user's write permission.
        let write = self.user.map_or(0, |i| write_mask(&self.pbx.config.users[i]));
        if write & parse_event_mask("config,reporting") == 0 {
            return self.reply_error(id, "Permission denied");
        }
        let reference;
        let dialplan = match &self.pbx.config.dialplan {
            Some(dialplan) => dialplan.as_ref(),
            None => {
                reference = Dialplan::reference(&self.pbx.config.contexts);
                &reference
            }
        };
        let context = message.get("Context").filter(|c| !c.is_empty());
        let exten = message.get("Extension").filter(|e| !e.is_empty());
        let listing = match dialplan.show(context, exten) {
            Ok(listing) => listing,
            Err(refusal) => return self.reply_error(id, &refusal),
        };
        let mut wire = Wire::reply("Success", id);
        wire.header("EventList", "start").header("Message", "DialPlan list will follow");
        self.output.extend_from_slice(&wire.into_bytes());
        for row in &listing.rows {
            let mut wire = Wire::bare("Event", "ListDialplan");
            if let Some(id) = id {
                wire.header("ActionID", id);
            }
            wire.header("Context", row.context).header("Extension", row.extension);
            if let Some(label) = &row.priority.label {
                wire.header("ExtensionLabel", label);
            }
            wire.header("Priority", &row.priority.number.to_string())
                .header("Application", &row.priority.app_as_written)
                .header("AppData", &row.priority.data)
                .header("Registrar", "pbx_config");
            self.output.extend_from_slice(&wire.into_bytes());
        }
        let mut wire = Wire::bare("Event", "ShowDialPlanComplete");
        if let Some(id) = id {
            wire.header("ActionID", id);
        }
        let items = listing.rows.len().to_string();
        wire.header("EventList", "Complete")
            .header("ListItems", &items)
            .header("ListExtensions", &listing.extensions.to_string())
            .header("ListPriorities", &items)
            .header("ListContexts", &listing.contexts.to_string());
        self.output.extend_from_slice(&wire.into_bytes());
    }

    fn hang_up(&mut self, message: &Message) {
        let id = message.action_id();
        let Some(channel) = message.get("Channel").filter(|c| !c.is_empty()) else {
            return self.reply_error(id, "No channel specified");
        };
        let cause = message.get("Cause").and_then(|c| c.trim().parse::<u16>().ok()).filter(|&c| c > 0);
        if self.pbx.hang_up(channel, cause.unwrap_or(16)) {
            self.reply("Success", id, "Channel Hungup");
        } else {
            self.reply_error(id, "No such channel");
        }
    }

    fn reply(&mut self, status: &str, action_id: Option<&str>, text: &str) {
        let mut wire = Wire::reply(status, action_id);
        wire.header("Message", text);
        self.output.extend_from_slice(&wire.into_bytes());
    }

    fn reply_error(&mut self, action_id: Option<&str>, text: &str) {
        self.reply("Error", action_id, text);
    }

    fn push_event(&mut self, event: &Event) {
        if self.mask & event.class != 0 {
            self.output.extend_from_slice(&event.bytes);
        }
    }

    /// Takes what else is waiting on the ring until `limit` bytes are queued; `Err` when this
    /// session has fallen a whole ring behind.
    pub(super) fn drain_events(&mut self, limit: usize) -> Result<(), ()> {
        let Some(events) = &mut self.events else { return Ok(()) };
        while self.output.len() < limit {
            match events.try_recv() {
                Ok(event) => {
                    if self.mask & event.class != 0 {
                        self.output.extend_from_slice(&event.bytes);
                    }
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                Err(TryRecvError::Lagged(missed)) => {
                    tracing::warn!(peer = %self.peer, missed, "AMI session too slow for the event stream; dropping it");
                    return Err(());
                }
            }
        }
        Ok(())
    }
}

/// The classes a user may run actions of (manager.conf `write`): all for a user who may
/// originate, `system` for one like the transcripts' `limited` user (a_login), who may not.
fn write_mask(user: &SimUser) -> u32 {
    if user.can_originate {
        class::ALL
    } else {
        class::SYSTEM
    }
}

pub(super) async fn next_event(events: &mut Option<broadcast::Receiver<Event>>) -> Result<Event, RecvError> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}
