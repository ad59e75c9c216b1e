//! AMI over Asterisk's HTTP server ("AJAM", `{prefix}/rawman`): the same actions, replies and
//! events as a session on the AMI port, carried by HTTP requests. What it follows (Asterisk 22's
//! `main/manager.c` and `main/http.c`; the simulator, `crates/pbx-sim/src/ajam.rs`, answers the same way):
//!
//! - Every answer is `HTTP 200` with `Content-type: text/plain`, errors included: the AMI result is
//!   in `Response:`. Anything else (a 404 because `webenabled` is off or the prefix is wrong, a
//!   redirect, a reverse proxy's page) is not AJAM.
//! - Login sets the cookie `mansession_id`, sent with every later request. A cookie that names no
//!   live session (idle longer than `httptimeout`, logged off, Asterisk restarted) silently gets a
//!   new unauthenticated session: `Permission denied` under a *different* id. That changed id is
//!   the only sign the session is gone; then the client logs in again and the tracker reconciles.
//! - Events come only through `action=waitevent`, a long poll answering every event queued since
//!   the last one. One runs per session at all times (a second would end the first).
//! - Parameters are form-encoded in a POST body (secrets stay out of URLs and proxy logs); `+`
//!   must be `%2B`, as Asterisk reads `+` as a space. Repeated headers (`Variable`) are repeated
//!   parameters. The CR/LF/NUL rule of the AMI encoder holds for every value.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{header, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use secrecy::SecretString;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::client::error_reply;
use super::codec::{AmiCodec, Frame, Limits, Message, Outgoing, Side};
use super::message;
use super::transport::{self, BoxStream, Endpoint};
use super::AmiError;
use dialback_logging::Chain;

/// How long one `waitevent` waits for events, in seconds. Asterisk caps it at `httptimeout - 10`
/// (50 s by default) and a reverse proxy's read timeout is often 60 s (nginx): well below both.
pub const POLL_SECONDS: u64 = 20;
/// Actions in flight at once, each on a connection of its own (HTTP/1.1 runs one request per
/// connection). With the poll's that stays far below `http.conf` `sessionlimit` (100
/// connections for every client of the PBX).
const ACTION_CONNECTIONS: usize = 8;
/// Idle connections are not reused after this long: Asterisk closes them after
/// `session_keep_alive` (15 s by default).
const IDLE_REUSE: Duration = Duration::from_secs(10);

/// One HTTP/1.1 connection: where requests go, and why the connection ended when it did (a
/// server that is not HTTP, like the AMI port's banner, fails it before any request).
pub struct Sender {
    requests: SendRequest<Full<Bytes>>,
    failure: Arc<Mutex<Option<AmiError>>>,
}

impl Sender {
    fn is_closed(&self) -> bool {
        self.requests.is_closed()
    }

    /// Why the connection failed, else `error` (what the request saw).
    fn explain(&self, error: AmiError) -> AmiError {
        self.failure.lock().expect("failure lock").clone().unwrap_or(error)
    }
}

fn http_error(e: &hyper::Error) -> AmiError {
    // A server that speaks first (AMI's banner) is "unexpected message", which hyper names only
    // in its text.
    if e.is_parse() || e.is_parse_status() || e.to_string().contains("unexpected message") {
        AmiError::NotAjam(format!(
            "the server does not answer HTTP ({e}): is this the AMI port (5038)? Then choose transport tcp"
        ))
    } else {
        AmiError::Io(format!("HTTP: {e}"))
    }
}

/// What an HTTP answer carried.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    /// The `mansession_id` it set, without quotes.
    pub session_id: Option<String>,
    pub location: Option<String>,
    pub body: Bytes,
}

impl Answer {
    /// Checks that an AMI server answered (not a 404, a redirect, a proxy's page).
    fn ajam(self) -> Result<Answer, AmiError> {
        if self.status == StatusCode::OK && self.content_type.to_ascii_lowercase().starts_with("text/plain") {
            return Ok(self);
        }
        Err(AmiError::NotAjam(self.describe()))
    }

    /// What the server answered instead of AJAM, in words an admin can act on.
    fn describe(&self) -> String {
        let status = self.status;
        if status == StatusCode::NOT_FOUND {
            return "HTTP 404 Not Found: Asterisk's HTTP server has no AMI there (manager.conf webenabled = no, or the \
                    http_prefix does not match http.conf prefix)"
                .into();
        }
        if status.is_redirection() {
            let to = self.location.as_deref().unwrap_or("elsewhere");
            return format!(
                "HTTP {status}: redirected to {to} (a reverse proxy or http.conf redirect; give the final address)"
            );
        }
        let title = title_of(&self.body);
        if status == StatusCode::OK {
            return format!("HTTP 200 with {:?} instead of AMI's text/plain{title}", self.content_type);
        }
        format!("HTTP {status}{title}")
    }
}

/// The first words of an HTML error page, for the message.
fn title_of(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(2048)]);
    let lower = text.to_ascii_lowercase();
    let title = lower
        .find("<title>")
        .and_then(|start| lower[start + 7..].find("</title>").map(|len| text[start + 7..start + 7 + len].trim()));
    match title {
        Some(title) if !title.is_empty() => format!(" ({:?})", title.chars().take(80).collect::<String>()),
        _ => String::new(),
    }
}

/// The session id in a `Set-Cookie: mansession_id="1a2b3c4d"; Version=1; Max-Age=60`.
fn session_id(set_cookie: &str) -> Option<String> {
    let value = set_cookie.split(';').next()?.trim().strip_prefix("mansession_id=")?;
    Some(value.trim_matches('"').to_owned())
}

/// An action as a form body: lowercase names as Asterisk's examples use (any case works), every
/// value checked by the AMI encoder's rule first.
pub fn form(action: &Outgoing) -> Result<String, AmiError> {
    action.validate().map_err(|e| AmiError::Encode(e.to_string()))?;
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in action.headers() {
        form.append_pair(&name.to_ascii_lowercase(), value);
    }
    Ok(form.finish())
}

/// The messages of an answer's body: the action's `Response:` block, then (for `waitevent`) the
/// events.
pub fn messages(body: &[u8]) -> Result<Vec<Message>, AmiError> {
    let mut codec = AmiCodec::new(Side::Server, Limits::CLIENT);
    let mut buf = BytesMut::from(body);
    if !buf.ends_with(b"\n\n") && !buf.ends_with(b"\r\n\r\n") {
        buf.extend_from_slice(b"\r\n\r\n");
    }
    let mut out = Vec::new();
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(Frame::Message(m))) => out.push(m),
            Ok(Some(Frame::Banner(_))) => {}
            Ok(None) => return Ok(out),
            Err(e) => return Err(AmiError::NotAjam(format!("unreadable AMI answer: {e}"))),
        }
    }
}

/// The HTTP connections to one PBX's AJAM: opened through `transport` (so a refusal, a timeout
/// and a TLS failure are told apart like on the AMI port), kept alive and reused.
pub struct Connections {
    endpoint: Endpoint,
    path: String,
    host: String,
    connect_timeout: Duration,
    idle: Mutex<Vec<(Sender, Instant)>>,
}

impl Connections {
    pub fn new(endpoint: &Endpoint, connect_timeout: Duration) -> Arc<Self> {
        let path = endpoint.rawman_path().unwrap_or_else(|| "/rawman".into());
        let host = if endpoint.host.contains(':') {
            format!("[{}]:{}", endpoint.host.trim_matches(|c| c == '[' || c == ']'), endpoint.port)
        } else {
            format!("{}:{}", endpoint.host, endpoint.port)
        };
        Arc::new(Self { endpoint: endpoint.clone(), path, host, connect_timeout, idle: Mutex::new(Vec::new()) })
    }

    /// Starts HTTP/1.1 on a connection opened (and TLS-handshaken) already.
    pub async fn adopt(&self, stream: BoxStream) -> Result<Sender, AmiError> {
        let (requests, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| AmiError::Io(format!("starting HTTP: {e}")))?;
        let failure = Arc::new(Mutex::new(None));
        let failed = failure.clone();
        tokio::spawn(
            async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %Chain(&e), "AJAM connection ended");
                    *failed.lock().expect("failure lock") = Some(http_error(&e));
                }
            }
            .in_current_span(),
        );
        Ok(Sender { requests, failure })
    }

    async fn take(&self) -> Result<Sender, AmiError> {
        loop {
            let Some((sender, since)) = self.idle.lock().expect("idle lock").pop() else { break };
            if !sender.is_closed() && since.elapsed() < IDLE_REUSE {
                return Ok(sender);
            }
        }
        let stream = transport::connect(&self.endpoint, self.connect_timeout).await?;
        self.adopt(stream).await
    }

    fn give_back(&self, sender: Sender) {
        if !sender.is_closed() {
            let mut idle = self.idle.lock().expect("idle lock");
            if idle.len() < ACTION_CONNECTIONS + 1 {
                idle.push((sender, Instant::now()));
            }
        }
    }

    /// Sends one request on a pooled connection (a new one when none is idle).
    pub async fn post(&self, form: String, cookie: Option<&str>, timeout: Duration) -> Result<Answer, AmiError> {
        let mut sender = self.take().await?;
        let answer = self.send_on(&mut sender, Method::POST, &self.path, form, cookie, timeout).await;
        if answer.is_ok() {
            self.give_back(sender);
        }
        answer
    }

    /// Sends one request on `sender` and reads the whole answer (Asterisk never streams one).
    pub async fn send_on(
        &self,
        sender: &mut Sender,
        method: Method,
        path: &str,
        form: String,
        cookie: Option<&str>,
        timeout: Duration,
    ) -> Result<Answer, AmiError> {
        let exchange = async {
            if let Err(e) = sender.requests.ready().await {
                return Err(sender.explain(AmiError::Io(format!("HTTP connection: {e}"))));
            }
            let mut request = Request::builder().method(method.clone()).uri(path).header(header::HOST, &self.host);
            if let Some(id) = cookie {
                request = request.header(header::COOKIE, format!("mansession_id=\"{id}\""));
            }
            let body = if method == Method::POST {
                request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Full::new(Bytes::from(form))
            } else {
                Full::new(Bytes::new())
            };
            let request = request.body(body).map_err(|e| AmiError::Encode(e.to_string()))?;
            let response = match sender.requests.send_request(request).await {
                Ok(response) => response,
                Err(e) => return Err(sender.explain(http_error(&e))),
            };
            let headers = response.headers();
            let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let status = response.status();
            let content_type = text(header::CONTENT_TYPE).unwrap_or_default();
            let location = text(header::LOCATION);
            let session_id =
                headers.get_all(header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(session_id);
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| AmiError::Io(format!("reading the HTTP answer: {e}")))?
                .to_bytes();
            Ok(Answer { status, content_type, session_id, location, body })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(AmiError::Timeout(timeout.as_millis() as u64)),
        }
    }

    /// The Test button's `http` step: `GET {prefix}/rawman?action=ping` without a cookie, which
    /// Asterisk answers `Permission denied` in a new (throwaway, 5 s) session: proof that AMI
    /// listens there without logging in.
    pub async fn probe(&self, sender: &mut Sender, timeout: Duration) -> Result<String, AmiError> {
        let path = format!("{}?action=ping", self.path);
        let answer = self.send_on(sender, Method::GET, &path, String::new(), None, timeout).await?.ajam()?;
        let first = messages(&answer.body)?.into_iter().next();
        match (&answer.session_id, first.as_ref().and_then(|m| m.response())) {
            (Some(_), Some(_)) => {
                Ok(format!("{} answers as Asterisk's AJAM (HTTP 200, text/plain, mansession_id)", self.path))
            }
            (None, _) => Err(AmiError::NotAjam(format!(
                "{} answered text/plain without the mansession_id cookie: a proxy in between strips cookies?",
                self.path
            ))),
            (_, None) => Err(AmiError::NotAjam(format!("{} answered text/plain that is not AMI", self.path))),
        }
    }

    /// Logs in on `sender`: the new session's id.
    pub async fn login(
        &self,
        sender: &mut Sender,
        username: &str,
        secret: &SecretString,
        timeout: Duration,
    ) -> Result<String, AmiError> {
        let form = form(&message::login(username, secret, &message::new_action_id()))?;
        // Asterisk answers a wrong secret after ~1 s; allow for that beyond the action timeout.
        let answer =
            self.send_on(sender, Method::POST, &self.path, form, None, timeout + Duration::from_secs(2)).await?;
        let answer = answer.ajam()?;
        let reply = messages(&answer.body)?
            .into_iter()
            .find(|m| m.response().is_some())
            .ok_or_else(|| AmiError::NotAjam("the login answer holds no Response".into()))?;
        if !reply.response().is_some_and(|r| r.eq_ignore_ascii_case("Success")) {
            return Err(error_reply(&reply));
        }
        answer.session_id.ok_or_else(|| {
            AmiError::NotAjam(
                "the login answer set no mansession_id cookie (a proxy in between strips cookies?)".into(),
            )
        })
    }

    /// Ends the session `id` (best effort: an unended one expires after `httptimeout` anyway).
    pub async fn logoff(&self, sender: &mut Sender, id: &str, timeout: Duration) {
        if let Ok(form) = form(&message::logoff(&message::new_action_id())) {
            let _ = self.send_on(sender, Method::POST, &self.path, form, Some(id), timeout).await;
        }
    }
}

/// A logged-in AJAM session.
pub struct AjamSession {
    connections: Arc<Connections>,
    id: String,
    action_timeout: Duration,
}

impl AjamSession {
    /// Connects and logs in.
    pub async fn establish(
        endpoint: &Endpoint,
        username: &str,
        secret: &SecretString,
        connect_timeout: Duration,
        action_timeout: Duration,
    ) -> Result<AjamSession, AmiError> {
        let connections = Connections::new(endpoint, connect_timeout);
        let mut sender = connections.take().await?;
        let id = connections.login(&mut sender, username, secret, action_timeout).await?;
        connections.give_back(sender);
        Ok(AjamSession { connections, id, action_timeout })
    }

    /// Serves the session: sends `actions` (each answer's messages come back on the returned
    /// channel), keeps one `waitevent` running and passes its events on. The channel gets an
    /// error, and the session stops, when a request fails or the session turns out lost; it
    /// stops quietly when `ended` is cancelled.
    pub fn run(
        self,
        actions: mpsc::UnboundedReceiver<Outgoing>,
        ended: CancellationToken,
    ) -> mpsc::UnboundedReceiver<Result<Message, AmiError>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let session = Arc::new(self);
        tokio::spawn(session.clone().poll(tx.clone(), ended.clone()).in_current_span());
        tokio::spawn(session.send_actions(actions, tx, ended).in_current_span());
        rx
    }

    /// The answer's messages, or why the session is over.
    fn read(&self, answer: Result<Answer, AmiError>) -> Result<Vec<Message>, AmiError> {
        let answer = answer?.ajam()?;
        if let Some(id) = answer.session_id.as_deref().filter(|id| *id != self.id) {
            return Err(AmiError::SessionLost(format!(
                "Asterisk answered in a new session {id} instead of {}: the old one expired (idle longer than \
                 manager.conf httptimeout) or Asterisk restarted",
                self.id
            )));
        }
        messages(&answer.body)
    }

    async fn poll(self: Arc<Self>, tx: mpsc::UnboundedSender<Result<Message, AmiError>>, ended: CancellationToken) {
        let timeout = Duration::from_secs(POLL_SECONDS) + self.action_timeout;
        loop {
            let action = Outgoing::action("WaitEvent")
                .with("ActionID", message::new_action_id())
                .with("Timeout", POLL_SECONDS.to_string());
            let Ok(form) = form(&action) else { return };
            let answer = tokio::select! {
                answer = self.connections.post(form, Some(&self.id), timeout) => answer,
                _ = ended.cancelled() => return,
            };
            match self.read(answer) {
                Ok(messages) => {
                    metrics::counter!("dialback_ajam_polls_total").increment(1);
                    // An empty answer: another poll on this session took over (never ours).
                    for m in messages {
                        if m.event().is_some_and(|e| !e.eq_ignore_ascii_case("WaitEventComplete")) {
                            let _ = tx.send(Ok(m));
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    }

    async fn send_actions(
        self: Arc<Self>,
        mut actions: mpsc::UnboundedReceiver<Outgoing>,
        tx: mpsc::UnboundedSender<Result<Message, AmiError>>,
        ended: CancellationToken,
    ) {
        let slots = Arc::new(Semaphore::new(ACTION_CONNECTIONS));
        loop {
            let action = tokio::select! {
                action = actions.recv() => match action { Some(a) => a, None => return },
                _ = ended.cancelled() => return,
            };
            let Ok(permit) = slots.clone().acquire_owned().await else { return };
            let (session, tx) = (self.clone(), tx.clone());
            tokio::spawn(
                async move {
                    let answer = match form(&action) {
                        Ok(form) => session.connections.post(form, Some(&session.id), session.action_timeout).await,
                        Err(e) => Err(e),
                    };
                    drop(permit);
                    match session.read(answer) {
                        Ok(messages) => {
                            for m in messages {
                                let _ = tx.send(Ok(m));
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                }
                .in_current_span(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_read_quoted_or_not() {
        assert_eq!(session_id("mansession_id=\"81e2e205\"; Version=1; Max-Age=60").as_deref(), Some("81e2e205"));
        assert_eq!(session_id("mansession_id=81e2e205").as_deref(), Some("81e2e205"));
        assert_eq!(session_id("other=1; mansession_id=2"), None);
    }

    #[test]
    fn values_are_form_encoded_with_plus_kept_and_injection_refused() {
        let action = Outgoing::action("Originate")
            .with("Channel", "Local/79001112233@phones")
            .with("CallerID", "Dialback <+74950000000>")
            .with("Variable", "A=1")
            .with("Variable", "B=2");
        assert_eq!(
            form(&action).unwrap(),
            "action=Originate&channel=Local%2F79001112233%40phones&callerid=Dialback+%3C%2B74950000000%3E&variable=A%3D1&variable=B%3D2"
        );
        let bad = Outgoing::action("Ping").with("ActionID", "a\r\nEvent: Fake");
        assert!(matches!(form(&bad), Err(AmiError::Encode(_))));
    }

    #[test]
    fn a_waitevent_body_splits_into_its_reply_and_events() {
        let body = b"Response: Success\r\nActionID: we\r\nMessage: Waiting for Event completed.\r\n\r\n\
            Event: Newchannel\r\nPrivilege: call,all\r\nUniqueid: 1.1\r\n\r\n\
            Event: WaitEventComplete\r\nActionID: we\r\n\r\n";
        let got = messages(body).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].response(), Some("Success"));
        assert_eq!(got[1].event(), Some("Newchannel"));
        assert_eq!(got[2].event(), Some("WaitEventComplete"));
        assert!(messages(b"").unwrap().is_empty());
    }

    #[test]
    fn what_is_not_ajam_is_named() {
        let answer = |status: u16, content_type: &str, body: &str| Answer {
            status: StatusCode::from_u16(status).unwrap(),
            content_type: content_type.into(),
            session_id: None,
            location: Some("https://pbx.example/login".into()),
            body: Bytes::from(body.to_owned()),
        };
        let text = |a: Answer| a.ajam().unwrap_err().to_string();
        assert!(text(answer(404, "text/html", "")).contains("webenabled"));
        assert!(text(answer(302, "text/html", "")).contains("https://pbx.example/login"));
        assert!(text(answer(502, "text/html", "<html><title>502 Bad Gateway</title>")).contains("502 Bad Gateway"));
        assert!(text(answer(200, "text/html", "<title>Welcome to nginx!</title>")).contains("Welcome to nginx!"));
        assert!(answer(200, "text/plain", "Response: Success\r\n\r\n").ajam().is_ok());
    }
}
