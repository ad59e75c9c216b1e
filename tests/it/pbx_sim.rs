//! The PBX simulator over raw AMI (plain TCP and TLS), checked against what a real Asterisk 22 did:
//! login and permissions, every phone outcome on both legs, validation errors, event delivery by
//! mask, a burst of 200 originates, injection, recordings, shutdown, and transcript tests that
//! pin the wire output of whole scenarios to the recordings in `tests/fixtures/asterisk-22/ami/`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dialback::ami::codec::{AmiCodec, Frame, Message};
use dialback_pbx_sim::{SimConfig, SimUser, Simulator};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_util::codec::Framed;

use crate::support::init_test_logging;
use crate::support::transcript;
use crate::support::wait::{patience, until, within_patience};

fn quick_config() -> SimConfig {
    SimConfig {
        users: vec![SimUser::new("gateway", "gatewaysecret"), SimUser::without_originate("limited", "limitedsecret")],
        ring: Duration::from_millis(20),
        talk: Duration::from_millis(200),
        dial_timeout: Duration::from_millis(300),
        ..SimConfig::default()
    }
}

async fn start(config: SimConfig) -> Simulator {
    init_test_logging();
    Simulator::start(config).await.expect("simulator starts")
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Debug)]
enum Read {
    Message(Message),
    Timeout,
    Closed,
}

/// A raw AMI client: whatever bytes the test writes, and the messages the server sends.
struct Ami {
    framed: Framed<Box<dyn Io>, AmiCodec>,
}

impl Ami {
    async fn connect(addr: SocketAddr) -> Ami {
        Ami::over(Box::new(TcpStream::connect(addr).await.expect("connect to the simulator"))).await
    }

    /// Connects and checks the banner.
    async fn over(io: Box<dyn Io>) -> Ami {
        let mut framed = Framed::new(io, AmiCodec::client());
        match tokio::time::timeout(patience(), framed.next()).await {
            Ok(Some(Ok(Frame::Banner(banner)))) => assert_eq!(banner, "Asterisk Call Manager/11.0.0"),
            other => panic!("expected the banner, got {other:?}"),
        }
        Ami { framed }
    }

    /// Connects and logs in as the user with all permissions.
    async fn logged_in(addr: SocketAddr, events: &str) -> Ami {
        let mut ami = Ami::connect(addr).await;
        ami.login("gateway", "gatewaysecret", events).await;
        ami
    }

    async fn login(&mut self, user: &str, secret: &str, events: &str) {
        self.action(&[
            ("Action", "Login"),
            ("Username", user),
            ("Secret", secret),
            ("Events", events),
            ("ActionID", "login-1"),
        ])
        .await;
        let reply = self.reply().await;
        assert_eq!(reply.get("Response"), Some("Success"), "{reply:?}");
        assert_eq!(reply.get("Message"), Some("Authentication accepted"));
    }

    async fn send(&mut self, raw: &str) {
        self.framed.get_mut().write_all(raw.as_bytes()).await.expect("write to the simulator");
    }

    async fn action(&mut self, headers: &[(&str, &str)]) {
        self.send(&wire(headers)).await;
    }

    async fn read(&mut self, limit: Duration) -> Read {
        match tokio::time::timeout(limit, self.framed.next()).await {
            Err(_) => Read::Timeout,
            Ok(None | Some(Err(_))) => Read::Closed,
            Ok(Some(Ok(Frame::Message(message)))) => Read::Message(message),
            Ok(Some(Ok(Frame::Banner(banner)))) => panic!("a second banner: {banner}"),
        }
    }

    async fn next(&mut self) -> Message {
        match self.read(patience()).await {
            Read::Message(message) => message,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The next reply, skipping events.
    async fn reply(&mut self) -> Message {
        loop {
            let message = self.next().await;
            if message.event().is_none() {
                return message;
            }
        }
    }

    /// Reads until an event of this name arrives.
    async fn event(&mut self, name: &str) -> Message {
        loop {
            let message = self.next().await;
            if message.event() == Some(name) {
                return message;
            }
        }
    }

    /// Everything the server sends until it closes the connection.
    async fn until_closed(&mut self) -> Vec<Message> {
        let mut messages = Vec::new();
        loop {
            match self.read(patience()).await {
                Read::Message(message) => messages.push(message),
                Read::Closed => return messages,
                Read::Timeout => panic!("the server did not close the connection; so far: {messages:#?}"),
            }
        }
    }

    /// True once the server closes the connection (messages before that are skipped).
    async fn closed(&mut self) -> bool {
        self.until_closed().await;
        true
    }

    /// Everything that arrives before the answer to a `Ping` sent now: the simulator (like
    /// Asterisk) writes a session's pending events before it runs the next action, so this is
    /// exactly what had happened by the time the Ping was read.
    async fn barrier(&mut self) -> Vec<Message> {
        static BARRIERS: AtomicU64 = AtomicU64::new(0);
        let id = format!("barrier-{}", BARRIERS.fetch_add(1, Ordering::Relaxed));
        self.action(&[("Action", "Ping"), ("ActionID", &id)]).await;
        let mut before = Vec::new();
        loop {
            let message = self.next().await;
            if message.event().is_none() && message.action_id() == Some(id.as_str()) {
                return before;
            }
            before.push(message);
        }
    }

    /// Everything one callback produced, once it is over: events whose Linkedid is its
    /// ChannelId, the Cdr events of its channels, and its OriginateResponse. Over means every
    /// channel hung up and the simulator has no call left running (its trailing Cdr events are
    /// then published), read up to a barrier.
    async fn callback(&mut self, sim: &Simulator, action_id: &str, channel_id: &str) -> Callback {
        let mut call = Following { action_id, channel_id, ..Following::default() };
        while !call.over() {
            match self.read(patience()).await {
                Read::Message(message) => call.take(message),
                other => panic!("callback {action_id} did not finish ({other:?}); so far: {:#?}", call.events),
            }
        }
        until("the simulator's calls to end", || sim.calls_in_progress() == 0).await;
        for message in self.barrier().await {
            call.take(message);
        }
        Callback { events: call.events }
    }
}

/// One callback's events, picked out of a session's stream.
#[derive(Default)]
struct Following<'a> {
    action_id: &'a str,
    channel_id: &'a str,
    channels: HashSet<String>,
    hung_up: HashSet<String>,
    responded: bool,
    events: Vec<Message>,
}

impl Following<'_> {
    /// Keeps `message` if it is about this callback.
    fn take(&mut self, message: Message) {
        let ours = match message.event() {
            Some("OriginateResponse") => message.action_id() == Some(self.action_id),
            Some("Cdr") => self.channels.contains(message.get("UniqueID").unwrap_or_default()),
            // Leg 1's DialBegin/DialEnd name the courier only as the destination.
            Some(_) => {
                ["Linkedid", "DestLinkedid", "LocalOneLinkedid"].iter().any(|k| message.get(k) == Some(self.channel_id))
            }
            None => false,
        };
        if !ours {
            return;
        }
        let uniqueid = message.get("Uniqueid").unwrap_or_default().to_owned();
        match message.event() {
            Some("Newchannel") => {
                self.channels.insert(uniqueid);
            }
            Some("Hangup") => {
                self.hung_up.insert(uniqueid);
            }
            Some("OriginateResponse") => self.responded = true,
            _ => {}
        }
        self.events.push(message);
    }

    /// Answered, and every channel it opened hung up.
    fn over(&self) -> bool {
        self.responded && self.channels.len() == self.hung_up.len()
    }
}

/// An AMI message as bytes.
fn wire(headers: &[(&str, &str)]) -> String {
    headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect::<String>() + "\r\n"
}

/// A callback Originate like dialback sends.
fn originate(action_id: &str, channel: &str, exten: &str, channel_id: &str) -> String {
    wire(&[
        ("Action", "Originate"),
        ("ActionID", action_id),
        ("Channel", channel),
        ("Context", "from-courier"),
        ("Exten", exten),
        ("Priority", "1"),
        ("Timeout", "300"),
        ("ChannelId", channel_id),
        ("CallerID", "\"Dialback\" <74950000000>"),
        ("Variable", &format!("DIALBACK_CALL_ID={action_id}")),
        ("Async", "true"),
    ])
}

/// The events of one callback.
struct Callback {
    events: Vec<Message>,
}

impl Callback {
    fn all(&self, event: &str) -> Vec<&Message> {
        self.events.iter().filter(|m| m.event() == Some(event)).collect()
    }

    fn one(&self, event: &str, key: &str, value: &str) -> &Message {
        let found: Vec<_> = self.all(event).into_iter().filter(|m| m.get(key) == Some(value)).collect();
        assert_eq!(found.len(), 1, "one {event} with {key}: {value} expected in {:#?}", self.events);
        found[0]
    }

    fn response(&self) -> &Message {
        let responses = self.all("OriginateResponse");
        assert_eq!(responses.len(), 1, "{:#?}", self.events);
        responses[0]
    }

    fn hangup_cause(&self, uniqueid: &str) -> &str {
        self.one("Hangup", "Uniqueid", uniqueid).get("Cause").unwrap()
    }
}

#[tokio::test]
async fn login_is_accepted_with_the_asterisk_banner_and_fully_booted() {
    let sim = start(quick_config()).await;
    let mut ami = Ami::logged_in(sim.addr(), "on").await;
    let booted = ami.next().await;
    assert_eq!(booted.event(), Some("FullyBooted"));
    assert_eq!(booted.get("Privilege"), Some("system,all"));
    assert_eq!(booted.get("Status"), Some("Fully Booted"));
    ami.action(&[("Action", "Ping"), ("ActionID", "p1")]).await;
    let pong = ami.reply().await;
    assert_eq!((pong.get("Response"), pong.action_id(), pong.get("Ping")), (Some("Success"), Some("p1"), Some("Pong")));
    let (secs, micros) = pong.get("Timestamp").unwrap().split_once('.').unwrap();
    assert!(secs.parse::<u64>().is_ok() && micros.len() == 6, "{pong:?}");
    assert_eq!(sim.sessions(), 1);
}

#[tokio::test]
async fn a_wrong_secret_or_user_is_refused_after_a_second_and_the_connection_closes() {
    let sim = start(quick_config()).await;
    let addr = sim.addr();
    let refused = |user: &'static str, secret: &'static str| async move {
        let mut ami = Ami::connect(addr).await;
        let started = tokio::time::Instant::now();
        ami.action(&[("Action", "Login"), ("Username", user), ("Secret", secret), ("ActionID", "login-1")]).await;
        let reply = ami.reply().await;
        let waited = started.elapsed();
        assert_eq!(reply.get("Response"), Some("Error"));
        assert_eq!(reply.action_id(), Some("login-1"));
        assert_eq!(reply.get("Message"), Some("Authentication failed"));
        // A lower bound only: how much longer a loaded machine takes is not the simulator's
        // business (the exact second is pinned in paused time below).
        assert!(waited >= Duration::from_secs(1), "{waited:?}");
        assert!(ami.closed().await, "the socket closes after a failed login");
    };
    tokio::join!(refused("gateway", "wrong"), refused("nosuchuser", "x"));
}

#[tokio::test]
async fn actions_before_login_are_denied_and_unknown_actions_are_named() {
    let sim = start(quick_config()).await;
    let mut ami = Ami::connect(sim.addr()).await;
    for action in ["Ping", "Originate"] {
        ami.action(&[("Action", action), ("ActionID", "early"), ("Channel", "Local/1@phones")]).await;
        let reply = ami.reply().await;
        assert_eq!((reply.get("Response"), reply.get("Message")), (Some("Error"), Some("Permission denied")));
    }
    ami.login("gateway", "gatewaysecret", "off").await;
    ami.action(&[("Action", "NoSuchAction"), ("ActionID", "u1")]).await;
    let reply = ami.reply().await;
    assert_eq!(
        reply.get("Message"),
        Some("Invalid/unknown command: NoSuchAction. Use Action: ListCommands to show available commands.")
    );
    ami.action(&[("Action", "Logoff"), ("ActionID", "lo")]).await;
    let reply = ami.reply().await;
    assert_eq!((reply.get("Response"), reply.get("Message")), (Some("Goodbye"), Some("Thanks for all the fish.")));
    assert!(ami.closed().await);
    assert_eq!(sim.originates(), 0);
}

#[tokio::test]
async fn a_user_without_originate_permission_may_ping_but_not_originate() {
    let sim = start(quick_config()).await;
    let mut ami = Ami::connect(sim.addr()).await;
    ami.login("limited", "limitedsecret", "on").await;
    ami.send(&originate("lim-1", "Local/79001112233@phones", "79161234567", "lim-1")).await;
    let reply = ami.reply().await;
    assert_eq!((reply.action_id(), reply.get("Message")), (Some("lim-1"), Some("Permission denied")));
    ami.action(&[("Action", "Ping"), ("ActionID", "lim-ping")]).await;
    assert_eq!(ami.reply().await.get("Ping"), Some("Pong"));
    assert_eq!(sim.originates(), 0);
}

/// The courier's phone fails: (channel, Reason, DialEnd status, Hangup causes of `;1` and `;2`,
/// Cdr disposition).
#[tokio::test]
async fn each_failing_courier_phone_gives_asterisks_reason_status_causes_and_disposition() {
    let sim = start(quick_config()).await;
    let cases = [
        ("Local/79001112230@phones", "5", Some("BUSY"), "0", Some("17"), "BUSY"),
        ("Local/79001112238@phones", "8", Some("CONGESTION"), "0", Some("34"), "CONGESTION"),
        ("Local/79001112236@phones", "0", Some("NOANSWER"), "21", Some("21"), "NO ANSWER"),
        ("Local/79001112239@phones", "3", None, "19", Some("19"), "NO ANSWER"),
        // One channel per leg for PJSIP: it carries the phone's own cause.
        ("PJSIP/79001112230@trunk", "5", Some("BUSY"), "17", None, "BUSY"),
        ("PJSIP/trunk/79001112239", "3", None, "19", None, "NO ANSWER"),
    ];
    let addr = sim.addr();
    let sim = &sim;
    let runs = cases.iter().enumerate().map(|(i, &(channel, reason, status, outer, inner, disposition))| async move {
        let (action_id, channel_id) = (format!("l1-{i}"), format!("cb-l1-{i}"));
        let mut ami = Ami::logged_in(addr, "on").await;
        ami.send(&originate(&action_id, channel, "79161234567", &channel_id)).await;
        assert_eq!(ami.reply().await.get("Message"), Some("Originate successfully queued"));
        let call = ami.callback(sim, &action_id, &channel_id).await;
        let response = call.response();
        assert_eq!(response.get("Response"), Some("Failure"), "{channel}");
        assert_eq!(response.get("Reason"), Some(reason), "{channel}");
        assert_eq!(response.get("Uniqueid"), Some(channel_id.as_str()), "a failure carries the ChannelId");
        assert_eq!(response.get("Channel"), Some(channel), "a failure names the requested channel");
        let dial_ends: Vec<_> = call.all("DialEnd").iter().map(|m| m.get("DialStatus").unwrap().to_owned()).collect();
        assert_eq!(dial_ends, status.map(str::to_owned).into_iter().collect::<Vec<_>>(), "{channel}");
        assert_eq!(call.hangup_cause(&channel_id), outer, "{channel}: courier channel cause");
        if let Some(inner) = inner {
            assert_eq!(call.hangup_cause(&format!("{channel_id};2")), inner, "{channel}: phone half cause");
        }
        let cdr = call.one("Cdr", "UniqueID", &channel_id);
        assert_eq!(cdr.get("Disposition"), Some(disposition), "{channel}");
        assert_eq!(cdr.get("UserField"), Some(""), "the dialplan that sets the userfield never ran");
        assert!(call.all("Newchannel").iter().all(|m| m.get("Linkedid") == Some(channel_id.as_str())));
    });
    futures_util::future::join_all(runs).await;
    assert_eq!(sim.originates(), cases.len() as u64);
}

/// The courier answers and the client's phone decides: (client number, DialEnd status, cause of
/// the client's phone channel, the courier Cdr's first disposition).
#[tokio::test]
async fn each_client_phone_gives_the_right_dial_status_cause_and_courier_cdr() {
    let sim = start(quick_config()).await;
    let cases = [
        ("79161234560", "BUSY", "17", "BUSY"),
        ("79161234568", "CONGESTION", "34", "CONGESTION"),
        ("79161234566", "NOANSWER", "21", "NO ANSWER"),
        ("79161234569", "NOANSWER", "19", "NO ANSWER"),
        ("79161234567", "ANSWER", "0", "ANSWERED"),
    ];
    let addr = sim.addr();
    let sim = &sim;
    let runs = cases.iter().enumerate().map(|(i, &(exten, status, client_cause, disposition))| async move {
        let (action_id, channel_id) = (format!("l2-{i}"), format!("cb-l2-{i}"));
        let mut ami = Ami::logged_in(addr, "on").await;
        ami.send(&originate(&action_id, "Local/79001112233@from-internal", exten, &channel_id)).await;
        let call = ami.callback(sim, &action_id, &channel_id).await;
        let response = call.response();
        assert_eq!((response.get("Response"), response.get("Reason")), (Some("Success"), Some("4")));
        assert_eq!(response.get("Uniqueid"), Some(channel_id.as_str()));
        assert_eq!(response.get("Channel"), call.one("Newchannel", "Uniqueid", &channel_id).get("Channel"));
        let dial_end = call.one("DialEnd", "Uniqueid", &channel_id);
        assert_eq!(dial_end.get("DialStatus"), Some(status), "{exten}");
        assert!(dial_end.get("DestChannel").unwrap().starts_with(&format!("Local/{exten}@phones-")));
        let client_phone = dial_end.get("DestUniqueid").unwrap();
        let client_half = call.all("Newchannel").iter().map(|m| m.get("Uniqueid").unwrap().to_owned()).nth(3).unwrap();
        assert_eq!(call.hangup_cause(&client_half), client_cause, "{exten}: the client's phone channel");
        assert_eq!(call.all("Hangup").len(), 4, "every channel hangs up: {:#?}", call.events);
        // The courier's first Cdr is the Dial's; a failed Dial forks a second one.
        let courier_cdr = call.all("Cdr").into_iter().find(|m| m.get("UniqueID") == Some(&channel_id)).unwrap();
        assert_eq!(courier_cdr.get("Disposition"), Some(disposition), "{exten}");
        assert_eq!(courier_cdr.get("UserField"), Some(action_id.as_str()), "DIALBACK_CALL_ID becomes the userfield");
        assert_eq!(courier_cdr.get("DestinationChannel"), dial_end.get("DestChannel"));
        let bridged = call.all("BridgeEnter");
        if status == "ANSWER" {
            assert_eq!(bridged.len(), 2);
            assert_eq!(call.hangup_cause(&channel_id), "16");
            assert_eq!(call.hangup_cause(client_phone), "16");
        } else {
            assert!(bridged.is_empty());
        }
        let linked: Vec<_> = call.events.iter().filter_map(|m| m.get("Linkedid")).collect();
        assert!(
            linked.len() >= 10 && linked.iter().all(|&l| l == channel_id),
            "every channel shares Linkedid = ChannelId"
        );
    });
    futures_util::future::join_all(runs).await;
}

#[tokio::test]
async fn a_pjsip_callback_has_one_channel_per_leg_and_one_courier_cdr() {
    let sim = start(quick_config()).await;
    let mut ami = Ami::logged_in(sim.addr(), "on").await;
    ami.send(&originate("pj-1", "PJSIP/79001112233@trunk", "79161234567", "cb-pj-1")).await;
    let call = ami.callback(&sim, "pj-1", "cb-pj-1").await;
    let names: Vec<_> = call.all("Newchannel").iter().map(|m| m.get("Channel").unwrap().to_owned()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("PJSIP/trunk-") && n.len() == "PJSIP/trunk-".len() + 8), "{names:?}");
    let dial_begin = call.one("DialBegin", "Uniqueid", "cb-pj-1");
    assert_eq!(dial_begin.get("DialString"), Some("79161234567@trunk"));
    assert_eq!(call.one("DialEnd", "Uniqueid", "cb-pj-1").get("DialStatus"), Some("ANSWER"));
    assert_eq!(call.all("BridgeEnter").len(), 2);
    assert_eq!(call.all("Hangup").iter().map(|m| m.get("Cause").unwrap()).collect::<Vec<_>>(), ["16", "16"]);
    let cdrs = call.all("Cdr");
    assert_eq!(cdrs.len(), 1, "{cdrs:#?}");
    assert_eq!((cdrs[0].get("Disposition"), cdrs[0].get("UserField")), (Some("ANSWERED"), Some("pj-1")));
}

#[tokio::test]
async fn an_application_originate_runs_the_app_on_the_answered_courier_without_a_second_leg() {
    let sim = start(quick_config()).await;
    let mut ami = Ami::logged_in(sim.addr(), "on").await;
    ami.action(&[
        ("Action", "Originate"),
        ("ActionID", "app-1"),
        ("Channel", "Local/79001112233@phones"),
        ("Application", "Wait"),
        ("Data", "0.1"),
        ("ChannelId", "cb-app"),
        ("Async", "true"),
    ])
    .await;
    assert_eq!(ami.reply().await.get("Message"), Some("Originate successfully queued"));
    let call = ami.callback(&sim, "app-1", "cb-app").await;
    let response = call.response();
    assert_eq!((response.get("Response"), response.get("Reason")), (Some("Success"), Some("4")));
    assert_eq!((response.get("Application"), response.get("Data")), (Some("Wait"), Some("0.1")));
    assert_eq!(call.all("Newchannel").len(), 2, "no second leg");
    assert_eq!(call.hangup_cause("cb-app"), "16");
    assert_eq!(call.one("Cdr", "UniqueID", "cb-app").get("LastApplication"), Some("Wait"));
}

#[tokio::test]
async fn validation_errors_answer_at_once_like_asterisk() {
    let sim = start(quick_config()).await;
    let mut ami = Ami::logged_in(sim.addr(), "off").await;
    let cases = [
        ("Local/79001112233@phones", "no-such-context", "79161234567", "Extension does not exist."),
        ("Local/79001112233@phones", "from-courier", "abc", "Extension does not exist."),
        ("Local/79001112233@phones", "from-courier", "", "Extension does not exist."),
        ("NoSlash", "from-courier", "79161234567", "Invalid channel"),
        ("", "from-courier", "79161234567", "Channel not specified"),
    ];
    for (channel, context, exten, refusal) in cases {
        let headers = [
            ("Action", "Originate"),
            ("ActionID", "bad"),
            ("Channel", channel),
            ("Context", context),
            ("Exten", exten),
            ("Priority", "1"),
            ("Async", "true"),
        ];
        ami.action(&headers).await;
        let reply = ami.reply().await;
        assert_eq!(
            (reply.get("Response"), reply.get("Message")),
            (Some("Error"), Some(refusal)),
            "{channel} {context} {exten}"
        );
    }
    let long_id = "x".repeat(150);
    ami.send(&originate("long", "Local/79001112233@phones", "79161234567", &long_id)).await;
    assert_eq!(ami.reply().await.get("Message"), Some("Uniqueid length exceeds maximum of 149"));
    assert_eq!(sim.originates(), 0);
}

#[tokio::test]
async fn unknown_technologies_and_chan_sip_are_queued_then_fail_with_reason_0() {
    let sim = start(quick_config()).await;
    let mut ami = Ami::logged_in(sim.addr(), "on").await;
    for (i, channel) in ["Foo/123", "SIP/trunk/79001112233", "SIP/79001112233@trunk"].into_iter().enumerate() {
        let action_id = format!("tech-{i}");
        ami.send(&originate(&action_id, channel, "79161234567", &format!("cb-tech-{i}"))).await;
        assert_eq!(ami.reply().await.get("Message"), Some("Originate successfully queued"));
        let response = ami.event("OriginateResponse").await;
        assert_eq!(response.action_id(), Some(action_id.as_str()));
        assert_eq!((response.get("Response"), response.get("Reason")), (Some("Failure"), Some("0")));
        assert_eq!(response.get("Channel"), Some(channel));
        assert_eq!(response.get("Uniqueid"), Some(format!("cb-tech-{i}").as_str()));
    }
    // Without a ChannelId a failure carries no uniqueid.
    ami.action(&[("Action", "Originate"), ("ActionID", "bare"), ("Channel", "Foo/1"), ("Async", "yes")]).await;
    let response = ami.event("OriginateResponse").await;
    assert_eq!((response.get("Uniqueid"), response.get("CallerIDNum")), (Some("<unknown>"), Some("<unknown>")));
}

#[tokio::test]
async fn events_reach_every_session_their_mask_allows() {
    let sim = start(quick_config()).await;
    let mut caller = Ami::logged_in(sim.addr(), "on").await;
    let mut other = Ami::logged_in(sim.addr(), "on").await;
    let mut silent = Ami::logged_in(sim.addr(), "off").await;
    let mut calls_only = Ami::logged_in(sim.addr(), "call").await;
    let mut cdrs_only = Ami::logged_in(sim.addr(), "cdr").await;
    caller.send(&originate("h-orig-A", "Local/79001112233@phones", "79161234567", "cb-h")).await;
    let seen_by_caller = caller.callback(&sim, "h-orig-A", "cb-h").await;
    let seen_by_other = other.callback(&sim, "h-orig-A", "cb-h").await;
    assert_eq!(seen_by_other.response().action_id(), Some("h-orig-A"), "another session sees our OriginateResponse");
    assert_eq!(seen_by_other.events.len(), seen_by_caller.events.len());

    let calls = calls_only.barrier().await;
    assert!(calls.iter().any(|m| m.event() == Some("OriginateResponse")));
    assert!(calls.iter().all(|m| m.get("Privilege") == Some("call,all")), "{calls:#?}");
    let cdrs = cdrs_only.barrier().await;
    assert_eq!(cdrs.len(), 3, "three Cdr events for a Local callback: {cdrs:#?}");
    assert!(cdrs.iter().all(|m| m.event() == Some("Cdr")));
    assert!(silent.barrier().await.is_empty(), "Events: off receives nothing, not even the OriginateResponse");

    // `Action: Events` turns them on later.
    silent.action(&[("Action", "Events"), ("EventMask", "on"), ("ActionID", "ev-on")]).await;
    assert_eq!(silent.reply().await.get("Events"), Some("On"));
}

#[tokio::test]
async fn two_hundred_originates_in_one_write_are_answered_in_order_then_all_respond() {
    let sim = start(SimConfig { talk: Duration::from_millis(100), ring: Duration::ZERO, ..quick_config() }).await;
    let mut ami = Ami::logged_in(sim.addr(), "call").await;
    let burst: String = (0..200)
        .map(|i| originate(&format!("burst-{i}"), "Local/79001112233@phones", "79161234567", &format!("cb-b-{i}")))
        .collect();
    ami.send(&burst).await;
    let (mut replies, mut responses) = (Vec::new(), HashSet::new());
    while responses.len() < 200 {
        let message = ami.next().await;
        match message.event() {
            None => replies.push(message.action_id().unwrap().to_owned()),
            Some("OriginateResponse") => {
                assert_eq!((message.get("Response"), message.get("Reason")), (Some("Success"), Some("4")));
                responses.insert(message.action_id().unwrap().to_owned());
            }
            Some(_) => {}
        }
    }
    let expected: Vec<_> = (0..200).map(|i| format!("burst-{i}")).collect();
    assert_eq!(replies, expected, "every reply, in the order sent");
    assert_eq!(sim.originates(), 200);
}

/// In paused time over in-memory pipes: the clock only moves when every task waits, so the
/// reader that keeps reading is never mistaken for a stalled one, however slow the machine.
#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_dropped_without_slowing_the_others() {
    let sim = start(SimConfig {
        ring: Duration::ZERO,
        talk: Duration::from_millis(50),
        write_timeout: Duration::from_millis(200),
        ..quick_config()
    })
    .await;
    // Logs in through a 4 KiB pipe, then never reads again.
    let mut stalled = sim.connect_in_memory(4096);
    let login = wire(&[("Action", "Login"), ("Username", "gateway"), ("Secret", "gatewaysecret"), ("Events", "on")]);
    stalled.write_all(login.as_bytes()).await.unwrap();
    let mut busy = Ami::over(Box::new(sim.connect_in_memory(1 << 20))).await;
    busy.login("gateway", "gatewaysecret", "call").await;
    let calls = 400;
    let burst: String = (0..calls)
        .map(|i| originate(&format!("s-{i}"), "Local/79001112233@phones", "79161234567", &format!("cb-s-{i}")))
        .collect();
    busy.send(&burst).await;
    let mut responses = 0;
    while responses < calls {
        if busy.next().await.event() == Some("OriginateResponse") {
            responses += 1;
        }
    }
    // Keep reading (in steps of virtual time) until the stalled one is gone.
    let deadline = tokio::time::Instant::now() + patience();
    while sim.sessions() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "the stalled session is still connected");
        if let Read::Closed = busy.read(Duration::from_millis(10)).await {
            panic!("the reading session was dropped");
        }
    }
    busy.barrier().await;
}

/// The failed login's delay, exactly, in paused time.
#[tokio::test(start_paused = true)]
async fn a_wrong_secret_is_answered_one_second_after_the_login() {
    let sim = start(quick_config()).await;
    let mut ami = Ami::over(Box::new(sim.connect_in_memory(64 * 1024))).await;
    let started = tokio::time::Instant::now();
    ami.action(&[("Action", "Login"), ("Username", "gateway"), ("Secret", "wrong"), ("ActionID", "l")]).await;
    assert_eq!(ami.reply().await.get("Message"), Some("Authentication failed"));
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert!(ami.closed().await);
}

#[tokio::test]
async fn a_smuggled_header_wins_and_a_smuggled_blank_line_runs_a_second_action() {
    let sim = start(quick_config()).await;
    let mut ami = Ami::logged_in(sim.addr(), "on").await;
    // What a client that does not refuse CR/LF would send for Exten = "79161234560\r\nExten: ..."
    // placed first: Asterisk takes the first Exten (f_injection, f2-orig).
    let smuggled = "Action: Originate\r\nActionID: inj-1\r\nChannel: Local/79001112233@phones\r\nExten: 79161234560\r\n\
                    Context: from-courier\r\nExten: 79161234567\r\nPriority: 1\r\nChannelId: cb-inj\r\nAsync: true\r\n\r\n";
    ami.send(smuggled).await;
    let call = ami.callback(&sim, "inj-1", "cb-inj").await;
    let dial_end = call.one("DialEnd", "Uniqueid", "cb-inj");
    assert!(dial_end.get("DestChannel").unwrap().starts_with("Local/79161234560@phones-"), "{dial_end:?}");
    assert_eq!(dial_end.get("DialStatus"), Some("BUSY"));
    // A value carrying CRLF CRLF ends the message: what follows is a second action (f1-orig).
    ami.send("Action: Ping\r\nActionID: p1\r\nX-Note: a\r\n\r\nAction: Ping\r\nActionID: injected\r\n\r\n").await;
    assert_eq!(ami.reply().await.action_id(), Some("p1"));
    assert_eq!(ami.reply().await.action_id(), Some("injected"));
    // Bare LF ends lines too; a bare CR does not, and comes back as sent (f4).
    ami.send("Action: Ping\nActionID: lf\n\nAction: Ping\r\nActionID: f4-ping\rAction: Originate\r\n\r\n").await;
    assert_eq!(ami.reply().await.action_id(), Some("lf"));
    assert_eq!(ami.reply().await.action_id(), Some("f4-ping\rAction: Originate"));
    assert_eq!(sim.originates(), 1);
}

#[tokio::test]
async fn overlong_lines_close_the_session() {
    let sim = start(quick_config()).await;
    let mut ami = Ami::logged_in(sim.addr(), "off").await;
    ami.send(&format!("Action: Ping\r\nActionID: {}\r\n\r\n", "x".repeat(2000))).await;
    assert!(ami.closed().await);
}

#[tokio::test]
async fn a_synchronous_originate_blocks_until_the_courier_answers_or_fails() {
    let sim = start(quick_config()).await;
    let mut ami = Ami::logged_in(sim.addr(), "on").await;
    let sync = |action_id: &str, channel: &str| {
        originate(action_id, channel, "79161234567", &format!("cb-{action_id}")).replace("Async: true\r\n", "")
    };
    ami.send(&sync("sync-busy", "Local/79001112230@phones")).await;
    let reply = ami.reply().await;
    assert_eq!((reply.action_id(), reply.get("Message")), (Some("sync-busy"), Some("Originate failed")));
    ami.send(&sync("sync-ok", "Local/79001112233@phones")).await;
    let reply = ami.reply().await;
    assert_eq!((reply.action_id(), reply.get("Message")), (Some("sync-ok"), Some("Originate successfully queued")));
    let mut rest = Vec::new();
    loop {
        let message = ami.next().await;
        let last = message.event() == Some("Hangup") && message.get("Uniqueid") == Some("cb-sync-ok");
        rest.push(message);
        if last {
            break;
        }
    }
    until("the simulator's calls to end", || sim.calls_in_progress() == 0).await;
    rest.extend(ami.barrier().await);
    assert!(
        rest.iter().all(|m| m.event() != Some("OriginateResponse")),
        "no OriginateResponse for a synchronous originate"
    );
    assert!(rest.iter().any(|m| m.event() == Some("BridgeEnter")), "the answered one still runs the dialplan");
}

#[tokio::test]
async fn the_hangup_action_ends_a_call_with_its_cause() {
    let sim = start(SimConfig { talk: Duration::from_secs(30), ..quick_config() }).await;
    let mut ami = Ami::logged_in(sim.addr(), "on").await;
    ami.action(&[("Action", "Hangup"), ("ActionID", "h0"), ("Channel", "Local/nobody-00000000;1")]).await;
    assert_eq!(ami.reply().await.get("Message"), Some("No such channel"));
    ami.send(&originate("hang-1", "Local/79001112233@phones", "79161234567", "cb-hang")).await;
    let entered = loop {
        let message = ami.event("BridgeEnter").await;
        if message.get("Uniqueid") == Some("cb-hang") {
            break message;
        }
    };
    let courier = entered.get("Channel").unwrap();
    ami.action(&[("Action", "Hangup"), ("ActionID", "h1"), ("Channel", courier), ("Cause", "17")]).await;
    assert_eq!(ami.reply().await.get("Message"), Some("Channel Hungup"));
    loop {
        let hangup = ami.event("Hangup").await;
        if hangup.get("Uniqueid") == Some("cb-hang") {
            assert_eq!(hangup.get("Cause"), Some("17"));
            break;
        }
    }
}

#[tokio::test]
async fn an_answered_call_leaves_a_freepbx_named_wav_recording() {
    let dir = std::env::temp_dir().join(format!("pbx-sim-rec-{}", uuid::Uuid::new_v4().simple()));
    let sim = start(SimConfig { recordings_dir: Some(dir.clone()), ..quick_config() }).await;
    let mut ami = Ami::logged_in(sim.addr(), "on").await;
    ami.send(&originate("rec-1", "Local/79001112233@phones", "79161234567", "cb-rec-1")).await;
    ami.callback(&sim, "rec-1", "cb-rec-1").await;
    ami.send(&originate("rec-2", "Local/79001112233@phones", "79161234560", "cb-rec-2")).await;
    ami.callback(&sim, "rec-2", "cb-rec-2").await;
    let files = recordings(&dir);
    assert_eq!(files.len(), 1, "only the connected call is recorded: {files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap().to_owned();
    let parts: Vec<&str> = name.trim_end_matches(".wav").splitn(6, '-').collect();
    assert_eq!(parts[..3], ["out", "79161234567", "74950000000"], "{name}");
    assert!(parts[3].len() == 8 && parts[4].len() == 6, "YYYYMMDD-HHMMSS in {name}");
    assert_eq!(parts[5], "cb-rec-1", "named by the courier leg's uniqueid (the ChannelId)");
    let wav = std::fs::read(&files[0]).unwrap();
    assert_eq!((&wav[0..4], &wav[8..12]), (&b"RIFF"[..], &b"WAVE"[..]));
    assert_eq!(u32::from_le_bytes(wav[4..8].try_into().unwrap()) as usize, wav.len() - 8);
    assert_eq!(u16::from_le_bytes(wav[20..22].try_into().unwrap()), 1, "PCM");
    assert_eq!(u32::from_le_bytes(wav[24..28].try_into().unwrap()), 8000);
    assert!(wav.len() > 44);
    let _ = std::fs::remove_dir_all(&dir);
}

fn recordings(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default()
}

#[tokio::test]
async fn tls_serves_the_same_sessions() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_pem, key_pem) = (certified.cert.pem(), certified.signing_key.serialize_pem());
    let tls = SimConfig::tls_from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap();
    let sim = start(SimConfig { tls: Some(tls), ..quick_config() }).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(sim.addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, tcp).await.expect("TLS handshake");
    let mut ami = Ami::over(Box::new(stream)).await;
    ami.login("gateway", "gatewaysecret", "on").await;
    ami.send(&originate("tls-1", "Local/79001112230@phones", "79161234567", "cb-tls")).await;
    assert_eq!(ami.callback(&sim, "tls-1", "cb-tls").await.response().get("Reason"), Some("5"));

    // A plain-TCP client gets no banner from a TLS listener.
    let mut plain = TcpStream::connect(sim.addr()).await.unwrap();
    plain.write_all(b"Action: Ping\r\n\r\n").await.unwrap();
    let mut framed = Framed::new(plain, AmiCodec::client());
    let got = within_patience("the listener to answer or close", framed.next()).await;
    assert!(!matches!(got, Some(Ok(Frame::Banner(_)))), "{got:?}");
}

#[tokio::test]
async fn shutdown_says_goodbye_like_asterisk_and_kill_just_drops_everyone() {
    let sim = start(quick_config()).await;
    let mut listening = Ami::logged_in(sim.addr(), "on").await;
    let mut deaf = Ami::logged_in(sim.addr(), "off").await;
    listening.event("FullyBooted").await;
    sim.shutdown().await;
    let goodbye = listening.event("Shutdown").await;
    assert_eq!((goodbye.get("Shutdown"), goodbye.get("Restart")), (Some("Cleanly"), Some("False")));
    assert_eq!(goodbye.get("Privilege"), Some("system,all"));
    assert!(listening.closed().await);
    assert!(deaf.until_closed().await.is_empty(), "Events: off hears no Shutdown");

    let sim = start(quick_config()).await;
    let addr = sim.addr();
    let mut ami = Ami::logged_in(addr, "on").await;
    ami.send(&originate("k-1", "Local/79001112233@phones", "79161234567", "cb-k")).await;
    ami.event("DialBegin").await;
    sim.kill();
    let rest = ami.until_closed().await;
    assert!(rest.iter().all(|m| m.event() != Some("Shutdown") && m.event() != Some("Cdr")), "{rest:#?}");
    assert_eq!(sim.sessions(), 0);
    assert!(TcpStream::connect(addr).await.is_err(), "the listener is gone");
}

// --- Transcript tests: the simulator's wire output pinned to a real Asterisk's ----------------

/// The events the simulator emits (the noisier VarSet, Newexten, NewCallerid, DeviceStateChange
/// and security events are left out of the comparison).
const PINNED_EVENTS: [&str; 16] = [
    "Newchannel",
    "Newstate",
    "LocalBridge",
    "DialBegin",
    "DialState",
    "DialEnd",
    "OriginateResponse",
    "MixMonitorStart",
    "BridgeCreate",
    "BridgeEnter",
    "BridgeLeave",
    "BridgeDestroy",
    "SoftHangupRequest",
    "HangupRequest",
    "Hangup",
    "Cdr",
];

/// Headers compared, in this order; times, durations and LastData (which carries the Dial
/// timeout) vary between runs and are left out.
const PINNED_HEADERS: [&str; 26] = [
    "Response",
    "Message",
    "ActionID",
    "Channel",
    "ChannelState",
    "CallerIDNum",
    "Context",
    "Exten",
    "Uniqueid",
    "Linkedid",
    "DestChannel",
    "DestChannelState",
    "DestUniqueid",
    "DestLinkedid",
    "DialString",
    "DialStatus",
    "Reason",
    "Cause",
    "Cause-txt",
    "BridgeNumChannels",
    "Source",
    "Destination",
    "DestinationContext",
    "DestinationChannel",
    "LastApplication",
    "Disposition",
];
/// Cdr-only headers compared too (the channel block has `Uniqueid`, the Cdr `UniqueID`).
const PINNED_CDR_HEADERS: [&str; 2] = ["UniqueID", "UserField"];

/// Rewrites what changes between runs, in order of first appearance: Asterisk's numeric
/// uniqueids become `U0`, `U1`…, channel sequence numbers `S0`, `S1`…; ChannelIds chosen by the
/// client stay as they are.
#[derive(Default)]
struct Normaliser {
    uniqueids: HashMap<String, usize>,
    sequences: HashMap<String, usize>,
}

impl Normaliser {
    fn line(&mut self, message: &Message) -> String {
        let mut line = match message.event() {
            Some(event) => format!("Event={event}"),
            None => "Reply".to_owned(),
        };
        let keys =
            PINNED_HEADERS.iter().chain(if message.event() == Some("Cdr") { &PINNED_CDR_HEADERS[..] } else { &[] });
        for key in keys {
            if let Some(value) = message.headers().find(|(k, _)| k == key).map(|(_, v)| v) {
                line.push_str(&format!(" {key}={}", self.value(key, value)));
            }
        }
        line
    }

    fn value(&mut self, key: &str, value: &str) -> String {
        if key.eq_ignore_ascii_case("uniqueid") || key.ends_with("Uniqueid") || key.ends_with("Linkedid") {
            let numeric = value.split_once('.').is_some_and(|(a, b)| {
                !a.is_empty() && !b.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
            });
            if numeric {
                let next = self.uniqueids.len();
                return format!("U{}", self.uniqueids.entry(value.to_owned()).or_insert(next));
            }
        }
        if key.ends_with("Channel") {
            if let Some((base, sequence, half)) = split_channel_sequence(value) {
                let next = self.sequences.len();
                return format!("{base}-S{}{half}", self.sequences.entry(sequence.to_owned()).or_insert(next));
            }
        }
        value.to_owned()
    }
}

/// `Local/1@phones-0000000a;2` → (`Local/1@phones`, `0000000a`, `;2`).
fn split_channel_sequence(name: &str) -> Option<(&str, &str, &str)> {
    let (base, tail) = name.rsplit_once('-')?;
    let (sequence, half) = tail.split_at(tail.find(';').unwrap_or(tail.len()));
    (sequence.len() == 8 && sequence.bytes().all(|b| b.is_ascii_hexdigit())).then_some((base, sequence, half))
}

fn pinned(message: &Message) -> bool {
    message.event().is_none_or(|event| PINNED_EVENTS.contains(&event))
}

/// Replays the Originate with `action_id` from a transcript and compares what the simulator
/// sends back with what Asterisk sent up to the client's next action. `rewrites` apply to the
/// whole transcript (a shorter Timeout, a number that picks the same phone behaviour).
async fn replay(file: &str, action_id: &str, rewrites: &[(&str, &str)]) {
    let blocks = transcript::blocks(&format!("ami/{file}"), rewrites);
    let at = blocks
        .iter()
        .position(|b| b.dir == transcript::Dir::ToAsterisk && b.text.contains(&format!("ActionID: {action_id}\n")))
        .unwrap_or_else(|| panic!("{file} has no action {action_id}"));
    let mut normaliser = Normaliser::default();
    let expected: Vec<String> = blocks[at + 1..]
        .iter()
        .take_while(|b| b.dir != transcript::Dir::ToAsterisk)
        .flat_map(|b| transcript::ami_messages(&b.text))
        .filter(pinned)
        .map(|m| normaliser.line(&m))
        .collect();
    assert!(!expected.is_empty(), "{file} {action_id}: nothing to compare");
    let action = format!("{}\r\n\r\n", blocks[at].text.replace('\n', "\r\n"));

    let sim = start(SimConfig { ring: Duration::ZERO, talk: Duration::from_millis(200), ..quick_config() }).await;
    let mut ami = Ami::logged_in(sim.addr(), "on").await;
    ami.event("FullyBooted").await;
    ami.send(&action).await;
    let mut normaliser = Normaliser::default();
    let mut actual = Vec::new();
    while actual.len() < expected.len() {
        match ami.read(patience()).await {
            Read::Message(message) if pinned(&message) => actual.push(normaliser.line(&message)),
            Read::Message(_) => {}
            other => {
                actual.push(format!("-- {other:?} --"));
                break;
            }
        }
    }
    // Anything more the call sent before it ended is an extra.
    until("the simulator's calls to end", || sim.calls_in_progress() == 0).await;
    let extras = ami.barrier().await;
    actual.extend(extras.iter().filter(|m| pinned(m)).map(|m| format!("extra: {}", normaliser.line(m))));
    if actual != expected {
        let width = expected.len().max(actual.len());
        let mut report = String::new();
        for i in 0..width {
            let (want, got) = (expected.get(i).map_or("", String::as_str), actual.get(i).map_or("", String::as_str));
            let mark = if want == got { "  " } else { "≠ " };
            report.push_str(&format!("{mark}{i:>3} want {want}\n{mark}{i:>3}  got {got}\n"));
        }
        panic!("{file} {action_id}: the simulator differs from Asterisk\n{report}");
    }
}

#[tokio::test]
async fn transcript_answered_callback() {
    replay("b_answered.raw.txt", "cb-answered-1", &[]).await;
}

#[tokio::test]
async fn transcript_courier_busy_with_channel_id() {
    replay("c7_leg1_busy_channelid.raw.txt", "cb-l1busy-chid", &[]).await;
}

#[tokio::test]
async fn transcript_courier_does_not_answer() {
    replay("c2_leg1_noanswer.raw.txt", "cb-l1noans", &[("Timeout: 5000", "Timeout: 300")]).await;
}

#[tokio::test]
async fn transcript_courier_congestion() {
    replay("c4_leg1_congestion.raw.txt", "cb-l1cong", &[]).await;
}

#[tokio::test]
async fn transcript_courier_rejects() {
    // The reference dialplan rejected in a context of its own; here the number's last digit does.
    replay("c12_leg1_rejected.raw.txt", "cb-l1rej", &[("79001112233", "79001112236")]).await;
}

#[tokio::test]
async fn transcript_client_busy_dialled_through_an_injected_exten() {
    replay("f_injection.raw.txt", "f2-orig", &[]).await;
}

#[tokio::test]
async fn transcript_bad_context_bad_exten_and_bad_technology() {
    replay("d1_bad_context.raw.txt", "cb-badctx", &[]).await;
    replay("d6_bad_exten.raw.txt", "cb-badexten", &[]).await;
    replay("d4_bad_tech.raw.txt", "cb-badtech", &[]).await;
}

#[tokio::test]
async fn transcript_unknown_context_without_priority_answers_then_hangs_up() {
    replay("d2_bad_context_nopri.raw.txt", "cb-badctx-nopri", &[]).await;
}

#[tokio::test]
async fn thousands_of_idle_sessions_stay_cheap_and_all_hear_events() {
    // Each session costs two descriptors here (both ends live in this process).
    let sessions = (open_files_limit().saturating_sub(256) / 2).min(2_000);
    let sim = start(quick_config()).await;
    let rss_before = resident_kib();
    let login = wire(&[("Action", "Login"), ("Username", "gateway"), ("Secret", "gatewaysecret"), ("Events", "on")]);
    let mut clients = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let mut client = TcpStream::connect(sim.addr()).await.unwrap();
        client.write_all(login.as_bytes()).await.unwrap();
        clients.push(client);
    }
    for client in &mut clients {
        read_until(client, "Fully Booted").await;
    }
    assert_eq!(sim.sessions(), sessions);
    // Only meaningful when this test has its process to itself (nextest runs each test alone).
    if std::env::var_os("NEXTEST").is_some() {
        let per_session = (resident_kib() - rss_before) * 1024 / sessions as u64;
        assert!(per_session < 16 * 1024, "{per_session} bytes per idle session (both ends)");
    }
    let mut ami = Ami::logged_in(sim.addr(), "on").await;
    ami.send(&originate("many-1", "Local/79001112230@phones", "79161234567", "cb-many")).await;
    ami.callback(&sim, "many-1", "cb-many").await;
    for client in clients.iter_mut().step_by(97) {
        read_until(client, "ActionID: many-1").await;
    }
}

/// Reads raw bytes until `marker` has gone by (no framing state kept per client).
async fn read_until(client: &mut TcpStream, marker: &str) {
    use tokio::io::AsyncReadExt;
    let (mut seen, mut chunk) = (Vec::new(), [0u8; 4096]);
    while !String::from_utf8_lossy(&seen).contains(marker) {
        let n = within_patience("the session to answer", client.read(&mut chunk)).await.unwrap();
        assert!(n > 0, "the session closed");
        seen.extend_from_slice(&chunk[..n]);
    }
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).unwrap_or(0)
}

fn open_files_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap_or("");
    line.split_whitespace().nth(3).and_then(|soft| soft.parse().ok()).unwrap_or(1024)
}

#[derive(clap::Parser)]
struct PbxSimCommand {
    #[command(flatten)]
    args: dialback_pbx_sim::SimArgs,
}

#[tokio::test]
async fn the_cli_serves_until_sigterm_then_says_shutdown() {
    use clap::Parser;
    init_test_logging();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let command =
        PbxSimCommand::parse_from(["pbx-sim", "--listen", &listen, "--user", "ops:pw", "--user", "ro:pw:noorig"]);
    assert_eq!(command.args.contexts, ["from-courier", "from-internal"]);
    assert_eq!((command.args.talk_seconds, command.args.ring_ms, command.args.dial_timeout_s), (3, 300, 30));
    let cli = tokio::spawn(dialback_pbx_sim::run_cli(command.args));
    let stream = crate::support::wait::eventually("pbx-sim to listen", || TcpStream::connect(&listen)).await;
    let mut ami = Ami::over(Box::new(stream)).await;
    ami.login("ops", "pw", "system").await;
    ami.event("FullyBooted").await;
    // A connected client means the signal handlers are in place (they are installed first).
    let killed = std::process::Command::new("kill").args(["-TERM", &std::process::id().to_string()]).status();
    assert!(killed.unwrap().success());
    assert_eq!(ami.event("Shutdown").await.get("Shutdown"), Some("Cleanly"));
    assert!(ami.closed().await);
    within_patience("run_cli to return", cli).await.unwrap().expect("run_cli succeeds");
}

/// The simulator's FastAGI client against the conversations a real Asterisk 22 had (i1: the
/// environment, a read and two variables set, the half-close; i9: unknown, malformed and oddly
/// quoted commands, an over-long line): a server that sends what the recorded server sent gets
/// back, byte for byte, what Asterisk answered, after the environment Asterisk sent.
#[tokio::test]
async fn transcript_fastagi_conversations() {
    replay_agi("i1_inbound_courier_answers.raw.txt").await;
    replay_agi("i9_agi_malformed_commands.raw.txt").await;
}

/// What Asterisk (here the simulator) sends next, as many lines as `want` has (ids differ in
/// length from the recording's).
async fn read_agi(socket: &mut tokio::net::TcpStream, want: &str) -> String {
    use tokio::io::AsyncReadExt;
    let lines = want.matches('\n').count();
    let mut got = Vec::new();
    while got.iter().filter(|b| **b == b'\n').count() < lines {
        let byte = within_patience(format!("Asterisk's {want:?} (so far {got:?})"), socket.read_u8()).await;
        got.push(byte.expect("the answer's bytes"));
    }
    String::from_utf8(got).unwrap()
}

async fn replay_agi(file: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::support::transcript::Dir;

    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = server.local_addr().unwrap().port();
    // The recording's dialplan (tests/fixtures/asterisk-22/agi/README.md), up to its AGI line.
    let dialplan = format!(
        "[dialback-inbound]\nexten => _X.,1,NoOp(inbound to ${{EXTEN}} from ${{CALLERID(num)}})\n \
         same => n,Set(CDR(userfield)=inbound)\n \
         same => n,AGI(agi://127.0.0.1:{port}/route?tenant=demo,${{EXTEN}})\n \
         same => n,Hangup()\n"
    );
    let dialplan = dialback_pbx_sim::dialplan::Dialplan::parse(&dialplan).expect("the dialplan loads");
    let sim = crate::support::sim_with(|c| c.dialplan = Some(Arc::new(dialplan))).await;
    let observer = crate::support::AmiObserver::start(sim.addr().port()).await;
    observer.call_in("74951234567", "79161234567", "agi-replay-caller").await;
    let (mut socket, _) = within_patience("the simulator's FastAGI connection", server.accept()).await.unwrap();

    // What varies from run to run: the channel's sequence, its ids, Asterisk's thread, where the
    // server listens.
    let normalise = |text: &str| {
        let text = text.replace(&format!("127.0.0.1:{port}"), "127.0.0.1:4573");
        let ids = regex::Regex::new(r"-[0-9a-f]{8};2|\b\d{10}\.\d+\b|agi-replay-caller|agi_threadid: \d+").unwrap();
        ids.replace_all(&text, "<id>").into_owned()
    };
    // The recording's context was `from-trunk`; `call_in` dials dialback's.
    let blocks: Vec<_> =
        crate::support::transcript::blocks(&format!("agi/{file}"), &[("from-trunk", "dialback-inbound")])
            .into_iter()
            .filter(|b| b.who == "agi#1")
            .collect();
    let mut at = 0;
    // Asterisk speaks first: the environment.
    let mut expected = String::new();
    while blocks[at].dir != Dir::ToAsterisk {
        if blocks[at].dir == Dir::FromAsterisk {
            expected.push_str(&blocks[at].text);
        }
        at += 1;
    }
    let env = read_agi(&mut socket, &expected).await;
    assert_eq!(normalise(&env), normalise(&expected), "{file}: the environment");
    let mut exchanges = 0;
    let mut sent = "";
    while at < blocks.len() {
        let block = &blocks[at];
        at += 1;
        match block.dir {
            Dir::ToAsterisk => {
                sent = &block.text;
                socket.write_all(block.text.as_bytes()).await.unwrap()
            }
            Dir::Note if block.text.starts_with("server shutdown") => socket.shutdown().await.unwrap(),
            Dir::Note => {}
            Dir::FromAsterisk => {
                let answer = read_agi(&mut socket, &block.text).await;
                assert_eq!(normalise(&answer), normalise(&block.text), "{file}: the answer to {sent:?}");
                exchanges += 1;
            }
        }
    }
    let mut rest = Vec::new();
    within_patience("Asterisk to close", socket.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty(), "{file}: more than Asterisk sent: {:?}", String::from_utf8_lossy(&rest));
    assert!(exchanges >= 3, "{file}: only {exchanges} answers compared");
}

// --- ShowDialPlan: the dialplan as Asterisk lists it (tests/fixtures/asterisk-22/dialplan/) ------

/// k1's `[from-courier]`, rebuilt line by line from the `ListDialplan` events Asterisk sent.
const K1_FROM_COURIER: &str = r#"[from-courier]
exten => _X.,1,NoOp(callback leg2 -> ${EXTEN}, DIALBACK_CALL_ID=${DIALBACK_CALL_ID})
 same => n,ExecIf($["${DIALBACK_CALL_ID}" != ""]?Set(CDR(userfield)=${DIALBACK_CALL_ID}))
 same => n,MixMonitor(/var/spool/asterisk/monitor/dialback/${UNIQUEID}.wav)
 same => n,Dial(Local/${EXTEN}@phones,${IF($["${DIAL_TIMEOUT}" != ""]?${DIAL_TIMEOUT}:30)})
 same => n,NoOp(DIALSTATUS=${DIALSTATUS} HANGUPCAUSE=${HANGUPCAUSE})
 same => n,Hangup()
"#;

/// k2's second definition, as dialback's `#include`d file would add it after k1's: 7 priorities,
/// a marker NoOp first and a Hangup last (the transcript shows only its 7th, which Asterisk added).
const K2_DIALBACK_FROM_COURIER: &str = r#"
#include extensions_custom.conf
[from-courier]
; dialback: callbacks of company "acme" (CHANGE the trunk if it is another)
exten => _X.,1,NoOp(dialback callback context)
 same => n,Set(CDR(userfield)=${DIALBACK_CALL_ID})
 same => n,MixMonitor(${UNIQUEID}.wav)
 same => n,GotoIf($["${DIALBACK_CONFIRM}" != "dtmf"]?dial)
 same => n,Read(CONFIRM,beep,1,,1,${DIALBACK_CONFIRM_TIMEOUT})
 same => n(dial),Dial(PJSIP/${EXTEN}@trunk,30)
 same => n,Hangup()
"#;

async fn sim_with_dialplan(text: &str) -> Simulator {
    // Before loading: what Asterisk would log about the file shows with TEST_LOG set.
    init_test_logging();
    let dialplan = dialback_pbx_sim::dialplan::Dialplan::parse(text).expect("the dialplan loads");
    start(SimConfig { dialplan: Some(Arc::new(dialplan)), ..quick_config() }).await
}

fn headers(message: &Message) -> Vec<(String, String)> {
    message.headers().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// Sends every action of a `dialplan/` transcript as written and compares each message the
/// simulator answers with Asterisk's: the same headers with the same values, in the same order.
/// Returns how many messages were compared.
async fn replay_dialplan(file: &str, ami: &mut Ami) -> usize {
    replay_with_calls(file, ami, None).await
}

/// [`replay_dialplan`] of a transcript that places calls on `sim` and then reads what they left in
/// AstDB: a `DBGet` sent after an Originate waits until the simulator's calls have ended (as the
/// recording did), and the times in a record (an answer time, an `EPOCH`) are compared by shape.
async fn replay_with_calls(file: &str, ami: &mut Ami, calls_on: Option<&Simulator>) -> usize {
    let blocks =
        transcript::dashed_blocks(&format!("dialplan/{file}"), &[("Secret: ********", "Secret: gatewaysecret")]);
    let mut compared = 0;
    let (mut sent, mut originated) = (false, false);
    for block in &blocks {
        match block.dir {
            transcript::Dir::ToAsterisk => {
                sent = true;
                originated |= block.text.contains("Action: Originate");
                if let (Some(sim), true) = (calls_on, originated && block.text.contains("Action: DBGet")) {
                    until("the calls to end", || sim.calls_in_progress() == 0).await;
                }
                ami.send(&format!("{}\r\n\r\n", block.text.replace('\n', "\r\n"))).await;
            }
            // The banner (`Ami` checked it on connecting).
            transcript::Dir::FromAsterisk if !sent => {
                assert_eq!(block.text, "Asterisk Call Manager/11.0.0", "{file}");
            }
            transcript::Dir::FromAsterisk => {
                for want in transcript::ami_messages(&block.text) {
                    let got = ami.next().await;
                    let shape = |m: &Message| headers(m).into_iter().map(|(k, v)| (k, times_as_shapes(&v))).collect();
                    let (got, want): (Vec<_>, Vec<_>) =
                        if calls_on.is_some() { (shape(&got), shape(&want)) } else { (headers(&got), headers(&want)) };
                    assert_eq!(got, want, "{file}: message {compared} differs from Asterisk's");
                    compared += 1;
                }
            }
            transcript::Dir::Note => {}
        }
    }
    compared
}

/// An AstDB record's `|` fields with a date-time or a Unix time in their place named instead.
fn times_as_shapes(value: &str) -> String {
    if !value.contains('|') {
        return value.to_owned();
    }
    let shape = |field: &str| match field {
        f if f.len() == 19 && f.as_bytes()[4] == b'-' && f.as_bytes()[13] == b':' => "<date-time>".to_owned(),
        f if f.len() == 10 && f.parse::<u64>().is_ok() => "<unix time>".to_owned(),
        f => f.to_owned(),
    };
    value.split('|').map(shape).collect::<Vec<_>>().join("|")
}

#[tokio::test]
async fn transcript_show_dialplan_of_a_context_and_of_one_that_does_not_exist() {
    let sim = sim_with_dialplan(K1_FROM_COURIER).await;
    let mut ami = Ami::connect(sim.addr()).await;
    // Login, the list (answer, 6 priorities, completion), the error, the goodbye.
    assert_eq!(replay_dialplan("k1_showdialplan.raw.txt", &mut ami).await, 11);
    assert!(ami.until_closed().await.is_empty(), "nothing after the goodbye");
}

#[tokio::test]
async fn without_a_loaded_dialplan_show_dialplan_lists_the_reference_context() {
    let sim = start(quick_config()).await;
    let mut ami = Ami::connect(sim.addr()).await;
    assert_eq!(replay_dialplan("k1_showdialplan.raw.txt", &mut ami).await, 11);
}

#[tokio::test]
async fn transcript_show_dialplan_of_a_context_defined_twice() {
    let sim = sim_with_dialplan(&format!("{K1_FROM_COURIER}{K2_DIALBACK_FROM_COURIER}")).await;
    let mut ami = Ami::logged_in(sim.addr(), "off").await;
    assert_eq!(replay_dialplan("k2_showdialplan_shadowed.raw.txt", &mut ami).await, 9);
    assert!(ami.barrier().await.is_empty(), "nothing more than Asterisk sent");
}

#[tokio::test]
async fn show_dialplan_lists_every_context_without_one_and_needs_config_or_reporting_write() {
    let sim = sim_with_dialplan(&format!("{K1_FROM_COURIER}\n[phones]\nexten => _X.,1,Answer()\n")).await;
    let mut ami = Ami::logged_in(sim.addr(), "off").await;
    ami.action(&[("Action", "ShowDialPlan"), ("ActionID", "all")]).await;
    assert_eq!(ami.reply().await.get("Message"), Some("DialPlan list will follow"));
    let complete = ami.event("ShowDialPlanComplete").await;
    let counts: Vec<_> = ["ListItems", "ListExtensions", "ListPriorities", "ListContexts"]
        .iter()
        .map(|k| complete.get(k).unwrap().to_owned())
        .collect();
    assert_eq!(counts, ["7", "2", "7", "2"]);
    ami.action(&[("Action", "ShowDialPlan"), ("ActionID", "x"), ("Context", "phones"), ("Extension", "abc")]).await;
    assert_eq!(ami.reply().await.get("Message"), Some("Did not find extension abc@phones"));
    // manager.c checks an action's class (config, reporting) against the user's write permission:
    // the transcripts' `limited` user has write=system.
    let mut limited = Ami::connect(sim.addr()).await;
    limited.login("limited", "limitedsecret", "off").await;
    limited.action(&[("Action", "ShowDialPlan"), ("ActionID", "lim"), ("Context", "from-courier")]).await;
    let reply = limited.reply().await;
    assert_eq!((reply.get("Response"), reply.get("Message")), (Some("Error"), Some("Permission denied")));
}

#[tokio::test]
async fn a_call_through_a_context_defined_twice_runs_the_first_definition() {
    let sim = sim_with_dialplan(&format!("{K1_FROM_COURIER}{K2_DIALBACK_FROM_COURIER}")).await;
    let mut ami = Ami::logged_in(sim.addr(), "on").await;
    ami.send(&originate("shadow-1", "Local/79001112233@phones", "79161234567", "cb-shadow")).await;
    let call = ami.callback(&sim, "shadow-1", "cb-shadow").await;
    // Priority 4 is the first definition's Dial(Local/${EXTEN}@phones,...), not dialback's
    // Dial(PJSIP/${EXTEN}@trunk,30), which Asterisk refused.
    let dial = call.one("DialBegin", "Uniqueid", "cb-shadow");
    assert_eq!(dial.get("DialString"), Some("79161234567@phones"), "{dial:?}");
    assert!(dial.get("DestChannel").unwrap().starts_with("Local/79161234567@phones-"), "{dial:?}");
    assert_eq!(call.one("DialEnd", "Uniqueid", "cb-shadow").get("DialStatus"), Some("ANSWER"));
    assert_eq!(call.all("MixMonitorStart").len(), 1);
    assert_eq!(sim.client_dials(), 1);
}

/// k3's dialplan: leg 2 pushes a hangup handler that keeps the call's outcome in AstDB.
const K3_DIALPLAN: &str = "\
[astdb-leg2]
exten => _X.,1,Set(CHANNEL(hangup_handler_push)=astdb-record,s,1)
 same => n,Dial(Local/${EXTEN}@phones,20)
 same => n,Hangup()

[astdb-record]
exten => s,1,Set(DB(dialback/${DIALBACK_CALL_ID})=${DIALSTATUS}|${HANGUPCAUSE}|${CDR(answer)}|${CDR(billsec)}|${EPOCH})
 same => n,Return()
";

#[tokio::test]
async fn transcript_astdb_actions_and_the_outcomes_a_hangup_handler_keeps() {
    init_test_logging();
    let dialplan = dialback_pbx_sim::dialplan::Dialplan::parse(K3_DIALPLAN).expect("the dialplan loads");
    // k3's phones talked 3 s (billsec 3).
    let config = SimConfig { dialplan: Some(Arc::new(dialplan)), talk: Duration::from_secs(3), ..quick_config() };
    let sim = start(config).await;
    let mut ami = Ami::connect(sim.addr()).await;
    // Login; DBPut, DBGet (3), DBGet missing, DBGetTree (3), DBDel twice; 3 Originates; the
    // answered and client-busy records (3 each), none for the busy courier; DBDelTree; goodbye.
    let compared = replay_with_calls("k3_astdb_outcome_record.raw.txt", &mut ami, Some(&sim)).await;
    assert_eq!(compared, 23);
}

/// k5's dialplan (tests/fixtures/asterisk-22/ami-k5/README.md): leg 1 rings through
/// `[dbk-courier]` (no `Hangup()` after its `Dial`, as dialback generates it), whose hangup handler
/// keeps leg 1's outcome; leg 2's context keeps the call's.
const K5_DIALPLAN: &str = "\
[dbk-courier]
exten => _X.,1,NoOp(dialback leg 1, no Hangup after Dial)
 same => n,Set(CHANNEL(hangup_handler_push)=dbk-outcome,courier,1)
 same => n,Dial(Local/${EXTEN}@phones)

[from-courier-rec]
exten => _X.,1,Set(CHANNEL(hangup_handler_push)=dbk-outcome,s,1)
 same => n,Set(CDR(userfield)=${DIALBACK_CALL_ID})
 same => n,Dial(Local/${EXTEN}@phones,20)
 same => n,Hangup()

[dbk-outcome]
exten => s,1,Set(DB(dialback/${DIALBACK_CALL_ID})=${DIALSTATUS}|${HANGUPCAUSE}|${CDR(answer)}|${CDR(billsec)}|${EPOCH})
 same => n,Return()
exten => courier,1,Set(DB(dialback-courier/${DIALBACK_CALL_ID})=${DIALSTATUS}|${HANGUPCAUSE}|${CDR(answer)}|${CDR(billsec)}|${EPOCH})
 same => n,Return()
";

impl Ami {
    /// AstDB entry `family`/`key`, if there is one.
    async fn db_get(&mut self, family: &str, key: &str) -> Option<String> {
        self.action(&[("Action", "DBGet"), ("ActionID", "db"), ("Family", family), ("Key", key)]).await;
        if self.reply().await.get("Response") != Some("Success") {
            return None;
        }
        let value = self.event("DBGetResponse").await.get("Val").map(str::to_owned);
        self.event("DBGetComplete").await;
        value
    }
}

/// Each courier and client outcome through k5's dialplan, against what Asterisk 22 did
/// (tests/fixtures/asterisk-22/ami-k5): the Originate's reason, the causes of the `;1` and `;2`
/// halves, the `DIALSTATUS|HANGUPCAUSE` each handler kept (with an answer time only once the
/// courier answered), and the courier's answer bridging the `;2` half with their phone, while
/// the `;1` half (the call's id) enters a bridge only once the client answered.
#[tokio::test]
async fn leg_1_through_the_dialplan_keeps_how_it_ended_as_asterisk_does() {
    let dialplan = dialback_pbx_sim::dialplan::Dialplan::parse(K5_DIALPLAN).expect("the dialplan loads");
    init_test_logging();
    let config = SimConfig { dialplan: Some(Arc::new(dialplan)), talk: Duration::from_millis(300), ..quick_config() };
    let sim = start(config).await;
    let mut ami = Ami::logged_in(sim.addr(), "on").await;
    // (courier, client, Response, Reason, causes of ;1 and ;2, leg 1's record, the call's record)
    let cases = [
        ("79001112233", "79161234567", "Success", "4", ["16", "16"], "ANSWER|16|+", Some("ANSWER|16|+")),
        ("79001112230", "79161234567", "Failure", "5", ["0", "17"], "BUSY|17|", None),
        ("79001112238", "79161234567", "Failure", "8", ["0", "34"], "CONGESTION|34|", None),
        ("79001112239", "79161234567", "Failure", "3", ["19", "19"], "CANCEL|19|", None),
        ("79001112233", "79161234560", "Success", "4", ["16", "16"], "ANSWER|16|+", Some("BUSY|16|+")),
    ];
    for (i, (courier, client, response, reason, causes, leg1, call)) in cases.into_iter().enumerate() {
        let id = format!("k5-{i}");
        ami.send(&wire(&[
            ("Action", "Originate"),
            ("ActionID", &id),
            ("Channel", &format!("Local/{courier}@dbk-courier/n")),
            ("Context", "from-courier-rec"),
            ("Exten", client),
            ("Priority", "1"),
            ("Timeout", "500"),
            ("ChannelId", &id),
            ("CallerID", "\"Dialback\" <74950000000>"),
            ("Variable", &format!("DIALBACK_CALL_ID={id}")),
            ("Async", "true"),
        ]))
        .await;
        let events = ami.callback(&sim, &id, &id).await;
        let got = events.response();
        assert_eq!((got.get("Response"), got.get("Reason")), (Some(response), Some(reason)), "{id}");
        assert_eq!([events.hangup_cause(&id), events.hangup_cause(&format!("{id};2"))], causes, "{id}");
        // Only the fields that do not depend on the clock: `+` stands for an answer time.
        let kept = |value: Option<String>| {
            value.map(|v| {
                let fields: Vec<&str> = v.split('|').collect();
                let answer = if fields[2].is_empty() { "" } else { "+" };
                format!("{}|{}|{answer}", fields[0], fields[1])
            })
        };
        assert_eq!(kept(ami.db_get("dialback-courier", &id).await).as_deref(), Some(leg1), "{id}");
        assert_eq!(kept(ami.db_get("dialback", &id).await).as_deref(), call, "{id}");
        let entered: Vec<&str> =
            events.all("BridgeEnter").iter().map(|m| m.get("Uniqueid").unwrap_or_default()).collect();
        let courier_answered = leg1.starts_with("ANSWER");
        assert_eq!(entered.contains(&format!("{id};2").as_str()), courier_answered, "{id}: {entered:?}");
        assert_eq!(entered.contains(&id.as_str()), call == Some("ANSWER|16|+"), "{id}: {entered:?}");
        if courier_answered {
            let leg1_dial = events.one("DialEnd", "Uniqueid", &format!("{id};2"));
            assert_eq!(leg1_dial.get("DialStatus"), Some("ANSWER"), "{id}");
        }
    }
}
