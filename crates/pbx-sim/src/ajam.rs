//! AMI over the simulator's HTTP server, answering like Asterisk 22's `/rawman` (the AJAM
//! transcript in the reference set, and `main/manager.c`, `main/http.c`):
//!
//! - `{prefix}/rawman` (prefix and name matched case-insensitively) takes `GET` parameters from
//!   the query or a `POST` form body (which then replaces the query); any other path, or every
//!   path with `webenabled` off, is a 404 page; methods other than GET, HEAD, POST are a 501.
//! - Every AMI answer is `200`, `Content-type: text/plain`, with `Set-Cookie: mansession_id="%08x";
//!   Version=1; Max-Age=<httptimeout>`. A request without a live session's cookie runs in a new,
//!   unauthenticated session (it lives 5 s; a logged-in one `httptimeout` after its last request
//!   ended, never while one runs). A failed login waits a second and destroys its session.
//! - Action answers never carry events; `waitevent` answers every event queued for the session
//!   since login (by its mask), or waits up to its timeout (capped at the session's remaining
//!   life minus 10 s) for one. A second poll on the session ends the first with an empty body.
//! - Connections stay open between requests for `session_keep_alive` (15 s).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

use super::pbx::Pbx;
use super::session::{Manager, Next};
use super::wire::Wire;
use dialback_ami::codec::Message;
use dialback_logging::Chain;

/// An unauthenticated session lives this long after its last request (manager.c).
const UNAUTHENTICATED_LIFE: Duration = Duration::from_secs(5);
/// `waitevent` waits at most the session's remaining life minus this (manager.c).
const POLL_MARGIN: Duration = Duration::from_secs(10);
/// http.conf `session_keep_alive`: how long a connection waits for its next request.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// main/http.c: `MAX_CONTENT_LENGTH` and the longest request head it reads.
const MAX_BODY: usize = 40_960;
const MAX_HEAD: usize = 8 * 1024;
const SERVER: &str = "Asterisk/22.10.1";

/// The simulator's HTTP server as `http.conf` and `manager.conf` configure it.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// `http.conf` `prefix` (empty: none).
    pub prefix: String,
    /// `manager.conf` `httptimeout`.
    pub session_timeout: Duration,
    /// `manager.conf` `webenabled`: off, `/rawman` is not there (404).
    pub web_enabled: bool,
    /// `http.conf` `tlsenable`: the listener speaks TLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl HttpConfig {
    pub fn new(listen: SocketAddr) -> Self {
        HttpConfig {
            listen,
            prefix: String::new(),
            session_timeout: Duration::from_secs(60),
            web_enabled: true,
            tls: None,
        }
    }
}

struct Session {
    manager: Manager,
    expires_at: Instant,
    /// Requests of this session running now: it is never purged while one runs.
    in_use: usize,
}

/// A session's `waitevent`s: the one running (a newer one ends it) and whose turn it is.
#[derive(Default)]
struct Polls {
    /// The running poll's number and its token.
    current: Option<(u64, CancellationToken)>,
    started: u64,
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// The AJAM sessions of a simulator.
#[derive(Default)]
pub(crate) struct Sessions {
    by_id: Mutex<HashMap<u32, Arc<tokio::sync::Mutex<Session>>>>,
    polls: Mutex<HashMap<u32, Polls>>,
}

impl Sessions {
    /// Forgets every session, as Asterisk does with ones idle past `httptimeout` (or a restart):
    /// their next request gets `Permission denied` under a new cookie.
    pub(crate) fn expire_all(&self) -> usize {
        let gone = self.by_id.lock().expect("sessions lock").drain().count();
        // A poll running on one sees it gone (as Asterisk's sees `needdestroy`) and answers.
        for (_, polls) in self.polls.lock().expect("polls lock").drain() {
            if let Some((_, poll)) = polls.current {
                poll.cancel();
            }
        }
        gone
    }

    fn forget(&self, id: u32) {
        self.by_id.lock().expect("sessions lock").remove(&id);
        self.polls.lock().expect("polls lock").remove(&id);
    }

    pub(crate) fn count(&self) -> usize {
        self.by_id.lock().expect("sessions lock").len()
    }
}

pub(crate) async fn accept_loop(listener: TcpListener, pbx: Arc<Pbx>, config: Arc<HttpConfig>) {
    pbx.accept(listener, "HTTP", |stream, peer| serve(stream, peer, pbx.clone(), config.clone())).await
}

async fn serve(stream: TcpStream, peer: SocketAddr, pbx: Arc<Pbx>, config: Arc<HttpConfig>) {
    match config.tls.clone() {
        None => Connection { pbx, config, peer }.run(stream).await,
        Some(tls) => {
            let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
            match tokio::time::timeout(Duration::from_secs(10), accept).await {
                Ok(Ok(stream)) => Box::pin(Connection { pbx, config, peer }.run(stream)).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %Chain(&e), "HTTPS handshake failed"),
                Err(_) => tracing::debug!(%peer, "HTTPS handshake timed out"),
            }
        }
    }
}

/// One request as read off the connection.
struct Request {
    method: String,
    path: String,
    query: String,
    cookie: Option<u32>,
    content_type: String,
    close: bool,
    body: Vec<u8>,
}

/// What to write back.
struct Reply {
    status: &'static str,
    content_type: &'static str,
    /// The session's id and its `Max-Age` (`httptimeout`).
    cookie: Option<(u32, u64)>,
    body: Vec<u8>,
}

struct Connection {
    pbx: Arc<Pbx>,
    config: Arc<HttpConfig>,
    peer: SocketAddr,
}

impl Connection {
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(self, mut stream: S) {
        let mut input = BytesMut::new();
        loop {
            let request = tokio::select! {
                _ = self.pbx.stop.cancelled() => return,
                request = tokio::time::timeout(KEEP_ALIVE, read_request(&mut stream, &mut input)) => request,
            };
            let request = match request {
                Err(_) | Ok(Ok(None)) => return,
                Ok(Ok(Some(request))) => request,
                Ok(Err(status)) => {
                    let _ = write_reply(&mut stream, &page(status, "Bad request"), true).await;
                    return;
                }
            };
            let close = request.close;
            let reply = tokio::select! {
                _ = self.pbx.stop.cancelled() => return,
                reply = self.answer(request) => reply,
            };
            if write_reply(&mut stream, &reply, close).await.is_err() || close {
                return;
            }
        }
    }

    async fn answer(&self, request: Request) -> Reply {
        if !["GET", "HEAD", "POST"].contains(&request.method.as_str()) {
            return page("501 Not Implemented", "Attempt to use unimplemented / unsupported method");
        }
        if !self.config.web_enabled || !is_rawman(&request.path, &self.config.prefix) {
            return page("404 Not Found", "The requested URL was not found on this server.");
        }
        // A POST's form body replaces the query; another body type leaves no parameters at all.
        let params = if request.method == "POST" {
            if request.content_type.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
                decode(&request.body)
            } else {
                Vec::new()
            }
        } else {
            decode(request.query.as_bytes())
        };
        let message = Message::from_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let (id, session) = self.session(request.cookie);
        let body = self.run_action(id, &session, &message).await;
        let max_age = self.config.session_timeout.as_secs();
        Reply { status: "200 OK", content_type: "text/plain", cookie: Some((id, max_age)), body }
    }

    /// The live session named by the cookie, else a new unauthenticated one.
    fn session(&self, cookie: Option<u32>) -> (u32, Arc<tokio::sync::Mutex<Session>>) {
        let sessions = &self.pbx.http_sessions;
        let mut by_id = sessions.by_id.lock().expect("sessions lock");
        let now = Instant::now();
        // Purge what expired, as Asterisk's purge does (never one in use).
        let before = by_id.len();
        by_id.retain(|_, s| s.try_lock().map_or(true, |s| s.in_use > 0 || s.expires_at > now));
        if by_id.len() < before {
            sessions.polls.lock().expect("polls lock").retain(|id, _| by_id.contains_key(id));
        }
        if let Some(session) = cookie.and_then(|id| by_id.get(&id).map(|s| (id, s.clone()))) {
            return session;
        }
        let id = loop {
            let id: u32 = rand::random();
            if id != 0 && !by_id.contains_key(&id) {
                break id;
            }
        };
        let session = Session {
            manager: Manager::new(self.pbx.clone(), self.peer, true),
            expires_at: now + UNAUTHENTICATED_LIFE,
            in_use: 0,
        };
        let session = Arc::new(tokio::sync::Mutex::new(session));
        by_id.insert(id, session.clone());
        (id, session)
    }

    async fn run_action(&self, id: u32, session: &Arc<tokio::sync::Mutex<Session>>, message: &Message) -> Vec<u8> {
        let waitevent = message.action().is_some_and(|a| a.eq_ignore_ascii_case("waitevent"));
        let body = {
            let mut s = session.lock().await;
            s.in_use += 1;
            if waitevent && s.manager.logged_in() {
                drop(s);
                self.wait_event(id, session, message).await
            } else {
                let next = s.manager.handle(message).await;
                let body = s.manager.output.split().to_vec();
                if let Next::Close = next {
                    // Logoff, or a failed login: the session is gone.
                    self.pbx.http_sessions.forget(id);
                }
                drop(s);
                body
            }
        };
        let mut s = session.lock().await;
        s.in_use -= 1;
        let life = if s.manager.logged_in() { self.config.session_timeout } else { UNAUTHENTICATED_LIFE };
        s.expires_at = Instant::now() + life;
        body
    }

    /// `waitevent`: the Response block, the session's queued events (waiting for one up to the
    /// timeout), then `WaitEventComplete`.
    async fn wait_event(&self, id: u32, session: &Arc<tokio::sync::Mutex<Session>>, message: &Message) -> Vec<u8> {
        let action_id = message.action_id();
        let ended = CancellationToken::new();
        let turn = {
            let mut polls = self.pbx.http_sessions.polls.lock().expect("polls lock");
            let polls = polls.entry(id).or_default();
            polls.started += 1;
            if let Some((_, previous)) = polls.current.replace((polls.started, ended.clone())) {
                previous.cancel();
            }
            (polls.started, polls.turn.clone())
        };
        let (number, turn) = turn;
        // The poll it ended gives the session's events back before this one takes them.
        let _turn = turn.lock().await;
        let (events, timeout, mask) = {
            let mut s = session.lock().await;
            let cap = s.expires_at.saturating_duration_since(Instant::now()).saturating_sub(POLL_MARGIN);
            let asked = message.get("Timeout").and_then(|t| t.trim().parse::<i64>().ok());
            let timeout = match asked {
                Some(t) if t >= 0 && Duration::from_secs(t as u64) <= cap => Duration::from_secs(t as u64),
                _ => cap,
            };
            (s.manager.events.take(), timeout, s.manager.mask)
        };
        let Some(mut events) = events else {
            return self.complete(action_id, BytesMut::new());
        };
        let mut queued = BytesMut::new();
        let deadline = Instant::now() + timeout;
        let mut lost = false;
        loop {
            loop {
                match events.try_recv() {
                    Ok(event) if mask & event.class != 0 => queued.extend_from_slice(&event.bytes),
                    Ok(_) => {}
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                    Err(TryRecvError::Lagged(_)) => {
                        lost = true;
                        break;
                    }
                }
            }
            if !queued.is_empty() || lost || Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                _ = ended.cancelled() => {
                    session.lock().await.manager.events = Some(events);
                    if self.pbx.http_sessions.by_id.lock().expect("sessions lock").contains_key(&id) {
                        // A newer poll took over: this one answers with an empty body.
                        return Vec::new();
                    }
                    // The session was destroyed: the poll answers what it has.
                    return self.complete(action_id, queued);
                }
                _ = tokio::time::sleep_until(deadline) => {}
                event = events.recv() => match event {
                    Ok(event) if mask & event.class != 0 => queued.extend_from_slice(&event.bytes),
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => lost = true,
                    Err(RecvError::Closed) => break,
                },
            }
        }
        if lost {
            // Asterisk queues without bound; the simulator's ring is finite, and a session that
            // fell a whole ring behind is dropped, as on the AMI port.
            tracing::warn!(peer = %self.peer, "AJAM session too slow for the event stream; dropping it");
            self.pbx.http_sessions.forget(id);
        } else {
            session.lock().await.manager.events = Some(events);
        }
        let mut polls = self.pbx.http_sessions.polls.lock().expect("polls lock");
        if let Some(polls) = polls.get_mut(&id).filter(|p| p.current.as_ref().is_some_and(|(n, _)| *n == number)) {
            polls.current = None;
        }
        drop(polls);
        self.complete(action_id, queued)
    }

    fn complete(&self, action_id: Option<&str>, events: BytesMut) -> Vec<u8> {
        let mut reply = Wire::reply("Success", action_id);
        reply.header("Message", "Waiting for Event completed.");
        let mut body = reply.into_bytes().to_vec();
        body.extend_from_slice(&events);
        let mut complete = Wire::bare("Event", "WaitEventComplete");
        if let Some(id) = action_id {
            complete.header("ActionID", id);
        }
        body.extend_from_slice(&complete.into_bytes());
        body
    }
}

/// `/{prefix}/rawman`, compared as Asterisk does (case-insensitively, a trailing `/` allowed).
fn is_rawman(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_matches('/');
    let rest = if prefix.is_empty() {
        Some(path)
    } else {
        path.get(..prefix.len() + 1)
            .filter(|head| head.eq_ignore_ascii_case(&format!("/{prefix}")))
            .map(|_| &path[prefix.len() + 1..])
    };
    rest.is_some_and(|rest| rest.eq_ignore_ascii_case("/rawman") || rest.eq_ignore_ascii_case("/rawman/"))
}

/// Form decoding as Asterisk's (`+` is a space, `%XX` a byte, `%00` ends the value).
fn decode(bytes: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(bytes)
        .map(|(k, v)| {
            let cut = |s: &str| s.split('\0').next().unwrap_or_default().to_owned();
            (cut(&k), cut(&v))
        })
        .collect()
}

fn page(status: &'static str, text: &str) -> Reply {
    let title = status;
    let heading = status.split_once(' ').map_or(status, |(_, h)| h);
    let body = format!(
        "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\r\n<html><head>\r\n<title>{title}</title>\r\n</head><body>\r\n\
         <h1>{heading}</h1>\r\n<p>{text}</p>\r\n<hr />\r\n<address>{SERVER}</address>\r\n</body></html>\r\n"
    );
    Reply { status, content_type: "text/html", cookie: None, body: body.into_bytes() }
}

/// Reads one request (None: the client closed the connection between requests); an error is the
/// status to answer before closing.
async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    input: &mut BytesMut,
) -> Result<Option<Request>, &'static str> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(input) {
            Ok(httparse::Status::Complete(head_len)) => {
                let header = |name: &str| {
                    parsed
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).into_owned())
                };
                let length: usize = header("Content-Length").and_then(|l| l.trim().parse().ok()).unwrap_or(0);
                if length > MAX_BODY {
                    return Err("413 Request Entity Too Large");
                }
                let target = parsed.path.unwrap_or("/").to_owned();
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let cookie = header("Cookie").and_then(|c| {
                    c.split(';').find_map(|part| {
                        let value = part.trim().strip_prefix("mansession_id=")?;
                        u32::from_str_radix(value.trim_matches('"'), 16).ok()
                    })
                });
                let mut request = Request {
                    method: parsed.method.unwrap_or_default().to_owned(),
                    path: path.to_owned(),
                    query: query.to_owned(),
                    cookie,
                    content_type: header("Content-Type").unwrap_or_default(),
                    close: header("Connection").is_some_and(|c| c.eq_ignore_ascii_case("close")),
                    body: Vec::new(),
                };
                input.advance(head_len);
                while input.len() < length {
                    if stream.read_buf(input).await.map_err(|_| "400 Bad Request")? == 0 {
                        return Err("400 Bad Request");
                    }
                }
                request.body = input.split_to(length).to_vec();
                return Ok(Some(request));
            }
            Ok(httparse::Status::Partial) if input.len() > MAX_HEAD => return Err("400 Bad Request"),
            Ok(httparse::Status::Partial) => {}
            Err(_) => return Err("400 Bad Request"),
        }
        match stream.read_buf(input).await {
            Ok(0) if input.is_empty() => return Ok(None),
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

async fn write_reply<S: AsyncWrite + Unpin>(stream: &mut S, reply: &Reply, close: bool) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {}\r\nServer: {SERVER}\r\nDate: {}\r\n",
        reply.status,
        httpdate::fmt_http_date(std::time::SystemTime::now())
    );
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("Cache-Control: no-cache, no-store\r\n");
    head.push_str(&format!("Content-type: {}\r\n", reply.content_type));
    if let Some((id, max_age)) = reply.cookie {
        head.push_str(&format!("Set-Cookie: mansession_id=\"{id:08x}\"; Version=1; Max-Age={max_age}\r\n"));
        head.push_str("Pragma: SuppressEvents\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", reply.body.len()));
    let mut out = head.into_bytes();
    out.extend_from_slice(&reply.body);
    stream.write_all(&out).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rawman_is_found_under_its_prefix_only() {
        assert!(is_rawman("/rawman", ""));
        assert!(is_rawman("/RawMan/", ""));
        assert!(!is_rawman("/asterisk/rawman", ""));
        assert!(is_rawman("/asterisk/rawman", "asterisk"));
        assert!(is_rawman("/Asterisk/rawman", "/asterisk/"));
        assert!(!is_rawman("/rawman", "asterisk"));
        assert!(!is_rawman("/asteriskx/rawman", "asterisk"));
    }

    #[test]
    fn values_decode_as_asterisk_reads_them() {
        let got = decode(b"action=originate&callerid=Dialback+%3C%2B7495%3E&variable=A%3D1&variable=B%3D2&x=a%00b");
        let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            [
                ("action", "originate"),
                ("callerid", "Dialback <+7495>"),
                ("variable", "A=1"),
                ("variable", "B=2"),
                ("x", "a")
            ]
        );
    }
}
