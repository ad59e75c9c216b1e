//! dialback's AMI client against the PBX simulator, over TCP and TLS.

use std::sync::Arc;
use std::time::Duration;

use dialback::ami::client::{AmiClient, ClientConfig};
use dialback::ami::message::{reason, Originate};
use dialback::ami::transport::Endpoint;
use dialback::ami::{AmiError, AmiEvent, ConnState};
use secrecy::SecretString;

use crate::support::{self, proxy::ChaosProxy};

fn config(port: u16, secret: &str) -> ClientConfig {
    ClientConfig {
        label: Arc::from("acme"),
        endpoint: Endpoint { host: "127.0.0.1".into(), port, tls: false, ca_pem: None },
        username: "dialback".into(),
        secret: SecretString::from(secret.to_owned()),
        connect_timeout: Duration::from_secs(3),
        action_timeout: Duration::from_secs(3),
        ping_interval: Duration::from_secs(20),
        max_inflight_originates: 500,
        backoff_max: Duration::from_millis(500),
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
    client.wait_up(Duration::from_secs(5)).await.expect("logged in");
    client
}

#[tokio::test]
async fn logs_in_pings_and_logs_off() {
    let sim = support::quick_sim().await;
    let client = up(sim.addr().port()).await;
    assert!(client.ping().await.unwrap() < Duration::from_secs(1));
    client.close().await;
}

#[tokio::test]
async fn a_wrong_secret_is_reported_as_authentication_failed() {
    let sim = support::quick_sim().await;
    let client = AmiClient::start(config(sim.addr().port(), "wrong"), None);
    assert_eq!(client.wait_up(Duration::from_secs(5)).await, Err(AmiError::AuthFailed));
    client.close().await;
}

#[tokio::test]
async fn a_closed_port_and_a_non_ami_server_are_told_apart() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = AmiClient::start(config(closed, "x"), None);
    assert!(matches!(client.wait_up(Duration::from_secs(5)).await, Err(AmiError::Refused { .. })));
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
    let err = client.wait_up(Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(&err, AmiError::NotAmi(m) if m.contains("HTTP/1.1")), "{err}");
    client.close().await;
}

#[tokio::test]
async fn a_user_without_originate_permission_gets_permission_denied() {
    let sim =
        support::sim_with(|c| c.users.push(dialback::pbx_sim::SimUser::without_originate("limited", "limited"))).await;
    let mut cfg = config(sim.addr().port(), "limited");
    cfg.username = "limited".into();
    let client = AmiClient::start(cfg, None);
    client.wait_up(Duration::from_secs(5)).await.unwrap();
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
        let r = handle.outcome(Duration::from_secs(10)).await.unwrap();
        assert_eq!((r.success, r.reason, r.uniqueid.as_str()), (want_success, want_reason, id.as_str()), "{courier}");
    }
    let mut o = originate("79001112233", "79161234567", "tech-1");
    o.channel = "Foo/79001112233".into();
    let r = client.originate(&o).await.unwrap().outcome(Duration::from_secs(5)).await.unwrap();
    assert_eq!((r.success, r.reason), (false, reason::FAILED), "an unknown technology fails with Reason 0");
    client.close().await;
}

#[tokio::test]
async fn leg_two_events_carry_the_channel_id_as_linkedid() {
    let sim = support::quick_sim().await;
    let client = up(sim.addr().port()).await;
    let mut events = client.subscribe();
    client.originate(&originate("79001112233", "79161234560", "leg2-busy")).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut dial_status = None;
    while dial_status.is_none() {
        let ev = tokio::time::timeout_at(deadline, events.recv()).await.expect("events in time").unwrap();
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
        let r = h.expect("queued").outcome(Duration::from_secs(20)).await.expect("answered");
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
    let started = std::time::Instant::now();
    assert_eq!(handle.outcome(Duration::from_secs(10)).await.unwrap_err(), AmiError::Disconnected);
    assert!(started.elapsed() < Duration::from_secs(2), "pending originates fail at once");
    assert!(client.ping().await.is_err());
    proxy.restore();
    let mut state = client.state();
    for _ in 0..100 {
        if state == ConnState::Up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        state = client.state();
    }
    assert_eq!(state, ConnState::Up, "reconnected without help");
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ev = tokio::time::timeout_at(deadline, events.recv()).await.expect("a Shutdown event").unwrap();
        if matches!(*ev, AmiEvent::Shutdown { restart: false }) {
            break;
        }
    }
    // Asterisk comes back on the same port.
    let _again = support::sim_with(|c| c.listen = format!("127.0.0.1:{port}").parse().unwrap()).await;
    client.wait_up(Duration::from_secs(1)).await.ok();
    for _ in 0..100 {
        if client.ping().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.ping().await.unwrap();
    client.close().await;
}

#[tokio::test]
async fn a_slow_subscriber_does_not_stall_the_reader() {
    let sim = support::quick_sim().await;
    let client = up(sim.addr().port()).await;
    let _never_read = client.subscribe();
    for i in 0..60 {
        let h = client.originate(&originate("79001112233", "79161234567", &format!("slow-{i}"))).await.unwrap();
        h.outcome(Duration::from_secs(10)).await.unwrap();
    }
    assert!(client.ping().await.unwrap() < Duration::from_secs(1));
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
    let tls = dialback::pbx_sim::SimConfig::tls_from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap();
    let sim = support::sim_with(|c| c.tls = Some(tls)).await;
    let mut cfg = config(sim.addr().port(), "dialback");
    cfg.endpoint.tls = true;
    cfg.endpoint.ca_pem = Some(cert_pem.clone());
    let client = AmiClient::start(cfg.clone(), None);
    client.wait_up(Duration::from_secs(5)).await.unwrap();
    let r = client.originate(&originate("79001112233", "79161234567", "tls-1")).await.unwrap();
    assert!(r.outcome(Duration::from_secs(5)).await.unwrap().success);
    client.close().await;

    cfg.endpoint.ca_pem = None;
    let untrusted = AmiClient::start(cfg, None);
    let err = untrusted.wait_up(Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(&err, AmiError::Tls(m) if m.contains("not trusted")), "{err}");
    untrusted.close().await;
}

/// A PBX that stops reading for a while: the socket fills up, the client keeps queueing, and once
/// the PBX reads again every action arrives, whole and once.
#[tokio::test]
async fn actions_sent_while_the_pbx_is_not_reading_all_arrive_whole() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    const PINGS: usize = 100_000; // about 6 MB: more than both sockets' buffers hold
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
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
                    "Login" => tokio::time::sleep(Duration::from_millis(1500)).await,
                    "Ping" => assert!(pings.insert(id), "each action arrives once"),
                    "Logoff" => break,
                    other => panic!("unexpected action {other}"),
                }
            }
        }
        pings.len()
    });
    let mut cfg = config(port, "dialback");
    cfg.action_timeout = Duration::from_secs(20);
    let client = AmiClient::start(cfg, None);
    client.wait_up(Duration::from_secs(5)).await.unwrap();
    let answered = futures_util::future::join_all((0..PINGS).map(|_| client.ping())).await;
    assert_eq!(answered.iter().filter(|r| r.is_ok()).count(), PINGS);
    client.close().await;
    assert_eq!(server.await.unwrap(), PINGS);
}
