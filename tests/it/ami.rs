//! dialback's AMI client against the PBX simulator, over TCP and TLS.

use std::sync::Arc;
use std::time::Duration;

use dialback::ami::client::{AmiClient, ClientConfig};
use dialback::ami::message::{reason, Originate};
use dialback::ami::transport::Endpoint;
use dialback::ami::{AmiError, AmiEvent, ConnState};
use secrecy::SecretString;

use crate::support::wait::{eventually, patience, until, within_patience};
use crate::support::{self, proxy::ChaosProxy};

/// Timeouts are hang guards here (what is tested fails for other reasons than a timeout).
fn config(port: u16, secret: &str) -> ClientConfig {
    ClientConfig {
        label: Arc::from("acme"),
        endpoint: Endpoint { host: "127.0.0.1".into(), port, tls: false, ca_pem: None, http_prefix: None },
        username: "dialback".into(),
        secret: SecretString::from(secret.to_owned()),
        connect_timeout: patience(),
        action_timeout: patience(),
        ping_interval: Duration::from_secs(20),
        max_inflight_originates: 500,
        backoff_max: Duration::from_millis(500),
        connector: None,
    }
}

fn originate(courier: &str, client: &str, id: &str) -> Originate {
    Originate {
        channel: format!("PJSIP/{courier}@trunk"),
        context: "from-courier".into(),
        exten: client.into(),
        timeout_ms: 3000,
        caller_id: Some("\"Dialback\" <74950000000>".into()),
        channel_id: id.into(),
        variables: vec![("DIALBACK_CALL_ID".into(), id.into())],
    }
}

async fn up(port: u16) -> AmiClient {
    let client = AmiClient::start(config(port, "dialback"), None);
    client.wait_up(patience()).await.expect("logged in");
    client
}

#[tokio::test]
async fn logs_in_pings_and_logs_off_without_calling_it_a_loss() {
    let sim = support::quick_sim().await;
    // What the call trackers would hear: a session closed on purpose is no lost PBX (a `Down`
    // makes them wait for calls to come back, and return calls be marked lost).
    let signals = Arc::new(std::sync::Mutex::new(Vec::new()));
    let heard = signals.clone();
    let sink: dialback::ami::client::EventSink = Arc::new(move |_, signal| {
        let name = match signal {
            dialback::ami::client::PbxSignal::Up(_) => "up".to_owned(),
            dialback::ami::client::PbxSignal::Down(e) => format!("down: {e}"),
            dialback::ami::client::PbxSignal::Event(_) => return,
        };
        heard.lock().unwrap().push(name);
    });
    let client = AmiClient::start(config(sim.addr().port(), "dialback"), Some(sink));
    client.wait_up(patience()).await.expect("logged in");
    client.ping().await.unwrap();
    client.close().await;
    until("the client to stop", || client.state() == ConnState::Closed).await;
    assert_eq!(*signals.lock().unwrap(), ["up"], "a close asked for is not a lost session");
}

#[tokio::test]
async fn a_wrong_secret_is_reported_as_authentication_failed() {
    let sim = support::quick_sim().await;
    let client = AmiClient::start(config(sim.addr().port(), "wrong"), None);
    assert_eq!(client.wait_up(patience()).await, Err(AmiError::AuthFailed));
    client.close().await;
}

#[tokio::test]
async fn a_closed_port_and_a_non_ami_server_are_told_apart() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = AmiClient::start(config(closed, "x"), None);
    assert!(matches!(client.wait_up(patience()).await, Err(AmiError::Refused { .. })));
    client.close().await;

    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = http.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = http.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let client = AmiClient::start(config(port, "x"), None);
    let err = client.wait_up(patience()).await.unwrap_err();
    assert!(matches!(&err, AmiError::NotAmi(m) if m.contains("HTTP/1.1")), "{err}");
    client.close().await;
}

#[tokio::test]
async fn a_user_without_originate_permission_gets_permission_denied() {
    let sim =
        support::sim_with(|c| c.users.push(dialback_pbx_sim::SimUser::without_originate("limited", "limited"))).await;
    let mut cfg = config(sim.addr().port(), "limited");
    cfg.username = "limited".into();
    let client = AmiClient::start(cfg, None);
    client.wait_up(patience()).await.unwrap();
    let err = client.originate(&originate("79001112233", "79161234567", "perm-1")).await.err().unwrap();
    assert_eq!(err, AmiError::PermissionDenied);
    client.close().await;
}

#[tokio::test]
async fn an_unknown_context_is_refused_at_once() {
    let sim = support::quick_sim().await;
    let client = up(sim.addr().port()).await;
    let mut o = originate("79001112233", "79161234567", "ctx-1");
    o.context = "no-such-context".into();
    let err = client.originate(&o).await.err().unwrap();
    assert_eq!(err, AmiError::Rejected("Extension does not exist.".into()));
    client.close().await;
}

#[tokio::test]
async fn each_courier_outcome_arrives_as_its_originate_response() {
    let sim = support::quick_sim().await;
    let client = up(sim.addr().port()).await;
    for (courier, want_success, want_reason) in [
        ("79001112233", true, reason::ANSWERED),
        ("79001112230", false, reason::BUSY),
        ("79001112239", false, reason::NO_ANSWER),
        ("79001112238", false, reason::CONGESTION),
        ("79001112236", false, reason::FAILED),
    ] {
        let id = format!("out-{courier}");
        let handle = client.originate(&originate(courier, "79161234567", &id)).await.unwrap();
        let r = handle.outcome(patience()).await.unwrap();
        assert_eq!((r.success, r.reason, r.uniqueid.as_str()), (want_success, want_reason, id.as_str()), "{courier}");
    }
    let mut o = originate("79001112233", "79161234567", "tech-1");
    o.channel = "Foo/79001112233".into();
    let r = client.originate(&o).await.unwrap().outcome(patience()).await.unwrap();
    assert_eq!((r.success, r.reason), (false, reason::FAILED), "an unknown technology fails with Reason 0");
    client.close().await;
}

#[tokio::test]
async fn leg_two_events_carry_the_channel_id_as_linkedid() {
    let sim = support::quick_sim().await;
    let client = up(sim.addr().port()).await;
    let mut events = client.subscribe();
    client.originate(&originate("79001112233", "79161234560", "leg2-busy")).await.unwrap();
    let mut dial_status = None;
    while dial_status.is_none() {
        let ev = within_patience("the call's DialEnd", events.recv()).await.unwrap();
        if let AmiEvent::DialEnd(d) = &*ev {
            if d.uniqueid.as_deref() == Some("leg2-busy") {
                assert_eq!(d.dest_linkedid, "leg2-busy");
                dial_status = d.dial_status.clone();
            }
        }
    }
    assert_eq!(dial_status.as_deref(), Some("BUSY"));
    client.close().await;
}

#[tokio::test]
async fn two_hundred_concurrent_originates_on_one_connection_are_all_matched() {
    let sim = support::quick_sim().await;
    let client = up(sim.addr().port()).await;
    let handles = futures_util::future::join_all((0..200).map(|i| {
        let client = client.clone();
        async move { client.originate(&originate("79001112233", "79161234567", &format!("bulk-{i}"))).await }
    }))
    .await;
    let mut outcomes = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        let r = h.expect("queued").outcome(patience()).await.expect("answered");
        assert_eq!(r.uniqueid, format!("bulk-{i}"), "each OriginateResponse reached its own originate");
        outcomes.push(r);
    }
    assert!(outcomes.iter().all(|r| r.success));
    assert_eq!(sim.originates(), 200);
    client.close().await;
}

#[tokio::test]
async fn when_the_pbx_dies_pending_actions_fail_fast_and_the_client_reconnects() {
    let sim = support::quick_sim().await;
    let proxy = ChaosProxy::start(sim.addr().to_string()).await;
    let client = up(proxy.port).await;
    let handle = client.originate(&originate("79001112239", "79161234567", "dies-1")).await.unwrap();
    proxy.cut();
    // Failing at once shows in the error: after a whole hour it would be a timeout.
    let outcome = within_patience("the pending originate to fail", handle.outcome(Duration::from_secs(3600))).await;
    assert_eq!(outcome.unwrap_err(), AmiError::Disconnected, "pending originates fail when the link drops");
    assert!(client.ping().await.is_err());
    proxy.restore();
    until("the client to reconnect without help", || client.state() == ConnState::Up).await;
    client.ping().await.unwrap();
    client.close().await;
}

#[tokio::test]
async fn a_simulator_shutdown_is_seen_and_survived() {
    let sim = support::quick_sim().await;
    let port = sim.addr().port();
    let client = up(port).await;
    let mut events = client.subscribe();
    sim.shutdown().await;
    loop {
        let ev = within_patience("a Shutdown event", events.recv()).await.unwrap();
        if matches!(*ev, AmiEvent::Shutdown { restart: false }) {
            break;
        }
    }
    // Asterisk comes back on the same port.
    let _again = support::sim_with(|c| c.listen = format!("127.0.0.1:{port}").parse().unwrap()).await;
    eventually("the client to be back", || client.ping()).await;
    client.close().await;
}

#[tokio::test]
async fn a_slow_subscriber_does_not_stall_the_reader() {
    let sim = support::quick_sim().await;
    let client = up(sim.addr().port()).await;
    let _never_read = client.subscribe();
    for i in 0..60 {
        let h = client.originate(&originate("79001112233", "79161234567", &format!("slow-{i}"))).await.unwrap();
        h.outcome(patience()).await.unwrap();
    }
    client.ping().await.expect("the reader kept reading");
    client.close().await;
}

#[tokio::test]
async fn crlf_in_any_originate_field_is_refused_before_anything_is_written() {
    let sim = support::quick_sim().await;
    let client = up(sim.addr().port()).await;
    let bad = [
        Originate { exten: "79161234567\r\nExten: 79161234560".into(), ..originate("79001112233", "1", "crlf-1") },
        Originate { channel: "PJSIP/1@trunk\n\nAction: Logoff".into(), ..originate("79001112233", "1", "crlf-2") },
        Originate { caller_id: Some("x\0".into()), ..originate("79001112233", "1", "crlf-3") },
        Originate { variables: vec![("A".into(), "1,B=2".into())], ..originate("79001112233", "1", "crlf-4") },
    ];
    for o in bad {
        assert!(matches!(client.originate(&o).await.err().unwrap(), AmiError::Encode(_)));
    }
    assert_eq!(sim.originates(), 0);
    client.ping().await.unwrap();
    client.close().await;
}

#[tokio::test]
async fn tls_works_with_the_pbx_ca_and_refuses_an_untrusted_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let tls = dialback_pbx_sim::SimConfig::tls_from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap();
    let sim = support::sim_with(|c| c.tls = Some(tls)).await;
    let mut cfg = config(sim.addr().port(), "dialback");
    cfg.endpoint.tls = true;
    cfg.endpoint.ca_pem = Some(cert_pem.clone());
    let client = AmiClient::start(cfg.clone(), None);
    client.wait_up(patience()).await.unwrap();
    let r = client.originate(&originate("79001112233", "79161234567", "tls-1")).await.unwrap();
    assert!(r.outcome(patience()).await.unwrap().success);
    client.close().await;

    cfg.endpoint.ca_pem = None;
    let untrusted = AmiClient::start(cfg, None);
    let err = untrusted.wait_up(patience()).await.unwrap_err();
    assert!(matches!(&err, AmiError::Tls(m) if m.contains("not trusted")), "{err}");
    untrusted.close().await;
}

/// A PBX that stops reading: the socket fills up, the client keeps queueing, and once the PBX
/// reads again every action arrives, whole and once.
#[tokio::test]
async fn actions_sent_while_the_pbx_is_not_reading_all_arrive_whole() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    const PINGS: usize = 100_000; // about 6 MB: more than both sockets' buffers hold
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let port = listener.local_addr().unwrap().port();
    let read_again = Arc::new(tokio::sync::Notify::new());
    let server = tokio::spawn({
        let read_again = read_again.clone();
        async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (rd, mut wr) = stream.into_split();
            wr.write_all(b"Asterisk Call Manager/9.0.0\r\n").await.unwrap();
            let mut lines = BufReader::new(rd).lines();
            let (mut action, mut id, mut pings) = (None, None, std::collections::HashSet::new());
            while let Some(line) = lines.next_line().await.unwrap() {
                let line = line.trim_end_matches('\r');
                if let Some(v) = line.strip_prefix("Action: ") {
                    action = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("ActionID: ") {
                    id = Some(v.to_owned());
                } else if line.is_empty() {
                    let (action, id) = (action.take().expect("an Action line"), id.take().expect("an ActionID line"));
                    let reply = format!("Response: Success\r\nActionID: {id}\r\n\r\n");
                    wr.write_all(reply.as_bytes()).await.unwrap();
                    match action.as_str() {
                        "Login" => read_again.notified().await,
                        "Ping" => assert!(pings.insert(id), "each action arrives once"),
                        "Logoff" => break,
                        other => panic!("unexpected action {other}"),
                    }
                }
            }
            pings.len()
        }
    });
    let client = AmiClient::start(config(port, "dialback"), None);
    client.wait_up(patience()).await.unwrap();
    let pinging = tokio::spawn({
        let client = client.clone();
        async move { futures_util::future::join_all((0..PINGS).map(|_| client.ping())).await }
    });
    // Every ping is queued while the PBX reads nothing: 6 MB cannot all be in the sockets.
    until("every ping to be waiting for its answer", || client.pending_actions() == PINGS).await;
    read_again.notify_one();
    let answered = within_patience("every ping to be answered", pinging).await.unwrap();
    assert_eq!(answered.iter().filter(|r| r.is_ok()).count(), PINGS);
    client.close().await;
    assert_eq!(server.await.unwrap(), PINGS);
}

/// In paused time, over an in-memory pipe to the simulator: the reconnect schedule is the
/// capped exponential backoff with jitter, attempt after attempt.
#[tokio::test(start_paused = true)]
async fn a_lost_pbx_is_retried_on_a_capped_exponential_backoff() {
    let sim = Arc::new(support::sim_with(|_| {}).await);
    let attempts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let pbx_up = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut cfg = config(0, "dialback");
    cfg.backoff_max = Duration::from_secs(4);
    cfg.connector = Some({
        let (sim, attempts, pbx_up) = (sim.clone(), attempts.clone(), pbx_up.clone());
        Arc::new(move || {
            attempts.lock().unwrap().push(tokio::time::Instant::now());
            let up = pbx_up.load(std::sync::atomic::Ordering::SeqCst);
            let stream = up.then(|| sim.connect_in_memory(64 * 1024));
            futures_util::FutureExt::boxed(async move {
                match stream {
                    Some(stream) => Ok(Box::new(stream) as dialback::ami::transport::BoxStream),
                    None => Err(AmiError::Refused { addr: "in-memory".into() }),
                }
            })
        })
    });
    let client = AmiClient::start(cfg, None);
    client.wait_up(patience()).await.unwrap();
    pbx_up.store(false, std::sync::atomic::Ordering::SeqCst);
    let handle = client.originate(&originate("79001112239", "79161234567", "gone-1")).await.unwrap();
    let dropped_at = tokio::time::Instant::now();
    sim.kill();
    assert_eq!(handle.outcome(patience()).await.unwrap_err(), AmiError::Disconnected);
    assert_eq!(dropped_at.elapsed(), Duration::ZERO, "a pending originate fails the moment the link drops");
    until("eight failed attempts", || attempts.lock().unwrap().len() >= 9).await;
    let times = attempts.lock().unwrap().clone();
    // Attempt n waits 250 ms × 2^n, half fixed and half random, at most backoff_max.
    for (n, pair) in times[1..].windows(2).enumerate() {
        let ceiling = Duration::from_millis(250).saturating_mul(1 << (n + 1).min(16)).min(Duration::from_secs(4));
        let waited = pair[1] - pair[0];
        assert!(
            waited >= ceiling / 2 && waited <= ceiling,
            "attempt {}: waited {waited:?}, ceiling {ceiling:?}",
            n + 2
        );
    }
    client.close().await;
}
