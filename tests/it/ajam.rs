//! AMI over Asterisk's HTTP server (issue 17): callbacks, their tracking and the Test button over
//! `transport: http` / `https`, against the simulator's `/rawman` (which answers as the Asterisk
//! 22 transcript does); sessions that expire mid-call, a PBX restart, and what is not AJAM.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::callbacks::{check_outcomes, client_call, place, slow_call, slow_courier};
use crate::pbx_test::{run, summary, FROM, TO};
use crate::support::wait::until;
use crate::support::{self, spawn_app, AmiObserver, TestApp};
use dialback_pbx_sim::ajam::HttpConfig;
use dialback_pbx_sim::{SimConfig, Simulator};

const PREFIX: &str = "asterisk";

/// A simulator serving AJAM under `/asterisk/rawman` (and AMI on its port), changed by `tweak`.
async fn http_sim(tweak: impl FnOnce(&mut SimConfig)) -> Simulator {
    support::sim_with(|c| {
        c.http = Some(HttpConfig { prefix: PREFIX.into(), ..HttpConfig::new("127.0.0.1:0".parse().unwrap()) });
        tweak(c)
    })
    .await
}

/// Settings that reach `sim` over HTTP.
fn over_http(sim: &Simulator) -> Value {
    json!({"transport": "http", "port": sim.http_addr().unwrap().port(), "http_prefix": PREFIX})
}

/// Company `acme` on `sim` over HTTP, with courier-1 and order A-1001.
async fn company(app: &TestApp, sim: &Simulator) {
    app.seed("acme", sim.http_addr().unwrap().port()).await;
    app.configure_pbx("acme", sim.http_addr().unwrap().port(), over_http(sim)).await;
}

#[tokio::test]
async fn every_outcome_on_each_leg_is_right_over_http() {
    let sim = http_sim(|_| {}).await;
    let app = spawn_app().await;
    company(&app, &sim).await;
    let saved: Value = app.get_as("/v1/admin/pbx", &app.admin("acme")).await.json().await.unwrap();
    assert_eq!((saved["transport"].as_str(), saved["tls"].as_bool()), (Some("http"), Some(false)), "{saved}");
    assert_eq!(saved["http_prefix"], PREFIX);

    let courier = app.courier("acme", "courier-1");
    let res = place(&app, &courier, client_call(TO)).await;
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let done = app.wait_terminal(&id, &courier).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done["talk_seconds"].as_i64() >= Some(1), "{done}");
    assert_eq!(sim.sessions(), 0, "nothing went to the AMI port");
    check_outcomes(&app).await;
}

#[tokio::test]
async fn a_session_that_expires_mid_call_logs_in_again_and_the_call_ends_with_its_real_outcome() {
    // The courier talks until the call is hung up on the PBX.
    let sim = http_sim(|c| c.talk = Duration::from_secs(3600)).await;
    let app = spawn_app().await;
    company(&app, &sim).await;
    let observer = AmiObserver::start(sim.addr().port()).await;
    let courier = app.courier("acme", "courier-1");
    let res = place(&app, &courier, client_call(TO)).await;
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    app.wait_status(&id, &courier, "connected").await;

    // Asterisk forgets the session (as after httptimeout idle): dialback's next request answers
    // `Permission denied` under a new cookie, and dialback logs in again.
    let logins = sim.logins();
    assert!(sim.expire_http_sessions() >= 1);
    until("dialback to log in again", || sim.logins() > logins).await;
    observer.hangup(&id).await;
    let done = app.wait_terminal(&id, &courier).await;
    assert_eq!(done["status"], "completed", "followed to its end after the new login: {done}");
    assert!(done["detail"].is_null(), "{done}");
}

#[tokio::test]
async fn a_pbx_restart_leaves_its_calls_unknown_and_the_next_calls_work() {
    let sim = http_sim(|_| {}).await;
    let http_port = sim.http_addr().unwrap().port();
    let app = spawn_app().await;
    company(&app, &sim).await;
    let slow = slow_courier(&app, http_port).await;
    app.configure_pbx(
        "acme",
        http_port,
        json!({"transport": "http", "http_prefix": PREFIX, "originate_timeout_s": 120}),
    )
    .await;
    let res = place(&app, &slow, slow_call()).await;
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    app.wait_status(&id, &slow, "ringing_courier").await;

    // Asterisk restarts: its calls are gone, and so is every HTTP session.
    sim.shutdown().await;
    let restarted = http_sim(|c| {
        c.http.as_mut().unwrap().listen = format!("127.0.0.1:{http_port}").parse().unwrap();
    })
    .await;
    let done = app.wait_status(&id, &app.admin("acme"), "unknown").await;
    assert!(done["detail"].as_str().unwrap().contains("channels were gone"), "{done}");

    let courier = app.courier("acme", "courier-1");
    let res = place(&app, &courier, client_call(TO)).await;
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_terminal(&id, &courier).await["status"], "completed");
    assert_eq!(restarted.originates(), 1);
}

fn test_settings(port: u16, extra: Value) -> Value {
    let mut settings = json!({
        "host": "127.0.0.1", "port": port, "username": "dialback", "secret": "dialback", "transport": "http",
        "http_prefix": PREFIX, "channel_template": "PJSIP/{NUMBER}@trunk", "context": "from-courier",
        "originate_timeout_s": 5
    });
    for (k, v) in extra.as_object().unwrap() {
        settings[k] = v.clone();
    }
    settings
}

#[tokio::test]
async fn the_test_button_goes_over_http_step_by_step() {
    let sim = http_sim(|_| {}).await;
    let port = sim.http_addr().unwrap().port();
    let app = spawn_app().await;
    let d = run(&app, json!({"from": FROM, "to": TO, "settings": test_settings(port, json!({}))})).await;
    let (names, failed) = summary(&d);
    assert_eq!(names, ["connect", "http", "login", "dialplan", "originate", "first_leg", "second_leg"]);
    assert!(failed.is_none(), "{d}");
    assert!(d["steps"][1]["detail"].as_str().unwrap().contains("/asterisk/rawman"), "{d}");

    // A wrong secret: the login step, naming manager.conf.
    let d =
        run(&app, json!({"from": FROM, "to": TO, "settings": test_settings(port, json!({"secret": "wrong"}))})).await;
    let (names, failed) = summary(&d);
    assert_eq!(names, ["connect", "http", "login"]);
    assert!(failed.unwrap().2.contains("manager.conf"), "{d}");

    // The AMI port given as if it were the HTTP server, and the HTTP server as if it were AMI.
    let d = run(&app, json!({"from": FROM, "to": TO, "settings": test_settings(sim.addr().port(), json!({}))})).await;
    let (names, failed) = summary(&d);
    assert_eq!(names, ["connect", "http"], "{d}");
    assert!(failed.unwrap().1.contains("choose transport tcp"), "{d}");
    let d = run(
        &app,
        json!({"from": FROM, "to": TO, "settings": test_settings(port, json!({"transport": "tcp", "http_prefix": ""}))}),
    )
    .await;
    let (names, failed) = summary(&d);
    assert_eq!(names, ["connect", "banner"]);
    assert!(failed.unwrap().2.contains("transport http"), "{d}");
}

/// What each kind of answer that is not AJAM tells the admin to change.
#[tokio::test]
async fn answers_that_are_not_ajam_fail_the_http_step_with_what_to_change() {
    let sim = http_sim(|_| {}).await;
    let port = sim.http_addr().unwrap().port();
    let disabled = support::sim_with(|c| {
        c.http = Some(HttpConfig { web_enabled: false, ..HttpConfig::new("127.0.0.1:0".parse().unwrap()) })
    })
    .await;
    let redirect =
        FixedHttp::start("302 Found", "Location: https://pbx.example.com/asterisk/rawman\r\n", "text/html", "").await;
    let proxy_page = FixedHttp::start(
        "502 Bad Gateway",
        "",
        "text/html",
        "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
    )
    .await;
    let app = spawn_app().await;
    let cases = [
        (port, json!({"http_prefix": "wrong"}), "404", "prefix"),
        (port, json!({"http_prefix": ""}), "404", "webenabled"),
        (disabled.http_addr().unwrap().port(), json!({"http_prefix": ""}), "404", "webenabled = yes"),
        (redirect.port, json!({}), "https://pbx.example.com/asterisk/rawman", "redirect"),
        (proxy_page.port, json!({}), "502 Bad Gateway", "reverse proxy"),
    ];
    for (port, extra, detail, hint) in cases {
        let d = run(&app, json!({"from": FROM, "to": TO, "settings": test_settings(port, extra.clone())})).await;
        let (names, failed) = summary(&d);
        assert_eq!(names, ["connect", "http"], "{extra}: {d}");
        let (_, got_detail, got_hint) = failed.unwrap();
        assert!(got_detail.contains(detail), "{extra}: {got_detail}");
        assert!(got_hint.contains(hint), "{extra}: {got_hint}");
    }
}

#[tokio::test]
async fn https_works_with_the_company_ca_and_names_an_untrusted_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let tls = SimConfig::tls_from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap();
    let sim = http_sim(|c| c.http.as_mut().unwrap().tls = Some(tls)).await;
    let port = sim.http_addr().unwrap().port();
    let app = spawn_app().await;
    let https = json!({"transport": "https", "tls": true});
    let d = run(&app, json!({"from": FROM, "to": TO, "settings": test_settings(port, https.clone())})).await;
    let (names, failed) = summary(&d);
    assert_eq!(names, ["connect", "tls"]);
    let (_, detail, hint) = failed.unwrap();
    assert!(detail.contains("not trusted") && hint.contains("ca_pem") && hint.contains("http.conf"), "{d}");

    let mut with_ca = test_settings(port, https);
    with_ca["ca_pem"] = json!(cert_pem);
    let d = run(&app, json!({"from": FROM, "to": TO, "settings": with_ca})).await;
    let (names, failed) = summary(&d);
    assert_eq!(names, ["connect", "tls", "http", "login", "dialplan", "originate", "first_leg", "second_leg"]);
    assert!(failed.is_none(), "{d}");

    // Couriers' calls go the same way once saved.
    app.seed("acme", port).await;
    app.configure_pbx(
        "acme",
        port,
        json!({"transport": "https", "tls": true, "http_prefix": PREFIX, "ca_pem": cert_pem}),
    )
    .await;
    let courier = app.courier("acme", "courier-1");
    let res = place(&app, &courier, client_call(TO)).await;
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_terminal(&id, &courier).await["status"], "completed");
}

#[tokio::test]
async fn the_transport_is_validated_and_the_old_tls_flag_still_means_ami_over_tls() {
    let app = spawn_app().await;
    let admin = app.admin("acme");
    let base = test_settings(8088, json!({}));
    let put = |body: Value| {
        let (app, admin) = (&app, admin.clone());
        async move { app.put("/v1/admin/pbx", &admin, body).await }
    };
    // `tls: true` alone is AMI over TLS on 5039 unless a port is given.
    let mut old = base.clone();
    old.as_object_mut().unwrap().remove("transport");
    old.as_object_mut().unwrap().remove("http_prefix");
    old.as_object_mut().unwrap().remove("port");
    old["tls"] = json!(true);
    let saved: Value = put(old).await.json().await.unwrap();
    assert_eq!((saved["transport"].as_str(), saved["port"].as_u64()), (Some("tls"), Some(5039)), "{saved}");
    // Without a port, HTTP is 8088.
    let mut http = base.clone();
    http.as_object_mut().unwrap().remove("port");
    let saved: Value = put(http).await.json().await.unwrap();
    assert_eq!((saved["transport"].as_str(), saved["port"].as_u64()), (Some("http"), Some(8088)), "{saved}");
    for (change, field) in [
        (json!({"transport": "http", "tls": true}), "tls"),
        (json!({"transport": "tcp"}), "http_prefix"),
        (json!({"http_prefix": "a b"}), "http_prefix"),
        (json!({"http_prefix": "../x"}), "http_prefix"),
        (json!({"transport": "smoke-signals"}), ""),
    ] {
        let mut body = base.clone();
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let res = put(body).await;
        if field.is_empty() {
            support::assert_problem(res, 422, "invalid_body").await;
        } else {
            let problem = support::assert_problem(res, 422, "invalid_field").await;
            assert_eq!(problem["field"], field, "{change}: {problem}");
        }
    }
}

/// An HTTP server that answers every request the same way (a redirect, a proxy's error page).
struct FixedHttp {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl FixedHttp {
    async fn start(status: &str, headers: &str, content_type: &str, body: &str) -> FixedHttp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { return };
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        FixedHttp { port, task }
    }
}

impl Drop for FixedHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}
