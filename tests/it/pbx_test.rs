//! The admin's Test button: each failure produced for real (closed port, a non-AMI listener,
//! wrong secret, no originate permission, unknown context, a dead channel technology, TLS with
//! an untrusted certificate, busy and unanswered phones) and the success path.

use serde_json::{json, Value};

use crate::support::{self, assert_problem, spawn_app, TestApp};

pub(crate) const FROM: &str = "+79001112233";
pub(crate) const TO: &str = "+79161234567";

fn settings(port: u16) -> Value {
    json!({
        "host": "127.0.0.1", "port": port, "username": "dialback", "secret": "dialback",
        "channel_template": "PJSIP/{NUMBER}@trunk", "context": "from-courier", "originate_timeout_s": 5
    })
}

pub(crate) async fn run(app: &TestApp, body: Value) -> Value {
    let res = app.post("/v1/admin/pbx/test", &app.admin("acme"), body).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    res.json().await.unwrap()
}

/// The step names in order, and the first failed step (name, detail, hint).
pub(crate) fn summary(d: &Value) -> (Vec<String>, Option<(String, String, String)>) {
    let steps = d["steps"].as_array().unwrap();
    let names = steps.iter().map(|s| s["step"].as_str().unwrap().to_owned()).collect();
    let failed = steps.iter().find(|s| s["ok"] == false).map(|s| {
        (
            s["step"].as_str().unwrap().to_owned(),
            s["detail"].as_str().unwrap().to_owned(),
            s["hint"].as_str().unwrap().to_owned(),
        )
    });
    (names, failed)
}

#[tokio::test]
async fn a_working_pbx_shows_every_step_green_and_logs_a_test_attempt() {
    let sim = support::quick_sim().await;
    let app = spawn_app().await;
    app.configure_pbx("acme", sim.addr().port(), json!({})).await;
    let d = run(&app, json!({"from": FROM, "to": TO})).await;
    let (names, failed) = summary(&d);
    assert_eq!(names, ["connect", "banner", "login", "dialplan", "originate", "first_leg", "second_leg"]);
    assert!(failed.is_none(), "{d}");
    assert_eq!(d["ok"], true);
    let steps = d["steps"].as_array().unwrap();
    assert!(steps.iter().all(|s| s["ms"].is_u64() && (s["step"] == "dialplan" || s["hint"].is_null())), "{d}");
    // The simulator runs its reference [from-courier], not dialback's; nothing these settings turn
    // on needs dialback's, so that is a warning, not a failure.
    let dialplan = steps.iter().find(|s| s["step"] == "dialplan").unwrap();
    assert_eq!(dialplan["ok"], true, "{dialplan}");
    assert!(dialplan["hint"].as_str().unwrap().contains("Calls work without it"), "{dialplan}");
    let id = d["callback_id"].as_str().unwrap();
    let call = app.wait_terminal(id, &app.admin("acme")).await;
    assert_eq!((call["target"].as_str(), call["status"].as_str()), (Some("test"), Some("completed")), "{call}");
    assert_eq!(sim.originates(), 1);
}

/// A company's first Test has no other connection to its PBX than the Test's own, which must stay
/// for the CDRs: a Local courier channel's phone half posts its record before the courier
/// channel's, and closing at the first one lost `cdr.courier` (seen on a real Asterisk 22).
#[tokio::test]
async fn a_companys_first_test_call_gets_the_cdr_of_each_courier_channel() {
    let sim = support::quick_sim().await;
    let app = spawn_app().await;
    app.configure_pbx("acme", sim.addr().port(), json!({"channel_template": "Local/{NUMBER}@phones"})).await;
    let d = run(&app, json!({"from": FROM, "to": TO})).await;
    assert_eq!(d["ok"], true, "{d}");
    let id = d["callback_id"].as_str().unwrap();
    let call = app.callback_with_cdr("acme", id).await;
    assert_eq!(call["status"], "completed", "{call}");
    assert!(call["cdr"]["courier_phone"].is_object(), "{call}");
    assert_eq!(call["cdr"]["courier"]["last_application"], "Dial", "{call}");
    assert!(call["billable_seconds"].is_number(), "{call}");
}

#[tokio::test]
async fn unsaved_settings_are_tested_with_the_saved_secret_only_for_the_same_server() {
    let sim = support::quick_sim().await;
    let app = spawn_app().await;
    app.configure_pbx("acme", sim.addr().port(), json!({"context": "from-nowhere"})).await;
    let mut unsaved = settings(sim.addr().port());
    unsaved.as_object_mut().unwrap().remove("secret");
    let d = run(&app, json!({"from": FROM, "to": TO, "settings": unsaved.clone()})).await;
    assert_eq!(d["ok"], true, "{d}");
    // Saving was not part of it.
    let saved: Value = app.get_as("/v1/admin/pbx", &app.admin("acme")).await.json().await.unwrap();
    assert_eq!(saved["context"], "from-nowhere");
    // The saved secret is never sent to another server.
    unsaved["host"] = json!("localhost");
    let res =
        app.post("/v1/admin/pbx/test", &app.admin("acme"), json!({"from": FROM, "to": TO, "settings": unsaved})).await;
    assert_eq!(assert_problem(res, 422, "invalid_field").await["field"], "settings.secret");
    assert_eq!(sim.originates(), 1);
}

#[tokio::test]
async fn a_closed_port_fails_the_connect_step_with_an_address_hint() {
    let app = spawn_app().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let d = run(&app, json!({"from": FROM, "to": TO, "settings": settings(closed)})).await;
    let (names, failed) = summary(&d);
    assert_eq!(names, ["connect"]);
    let (_, detail, hint) = failed.unwrap();
    assert!(detail.contains("refused"), "{detail}");
    assert!(hint.contains("5038") && hint.contains("bindaddr") && hint.contains("firewall"), "{hint}");
    assert_eq!(d["ok"], false);
}

#[tokio::test]
async fn a_server_that_is_not_ami_fails_the_banner_step() {
    let app = spawn_app().await;
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = http.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = http.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await;
        }
    });
    let d = run(&app, json!({"from": FROM, "to": TO, "settings": settings(port)})).await;
    let (names, failed) = summary(&d);
    assert_eq!(names, ["connect", "banner"]);
    let (_, detail, hint) = failed.unwrap();
    assert!(detail.contains("SSH-2.0"), "{detail}");
    assert!(hint.contains("SIP (5060) or HTTP (8088)"), "{hint}");
}

#[tokio::test]
async fn a_wrong_secret_fails_the_login_step_naming_manager_conf() {
    let sim = support::quick_sim().await;
    let app = spawn_app().await;
    let mut s = settings(sim.addr().port());
    s["secret"] = json!("wrong");
    let d = run(&app, json!({"from": FROM, "to": TO, "settings": s})).await;
    let (names, failed) = summary(&d);
    assert_eq!(names, ["connect", "banner", "login"]);
    let (_, detail, hint) = failed.unwrap();
    assert!(detail.contains("Authentication failed"), "{detail}");
    assert!(hint.contains("manager.conf") && hint.contains("manager reload"), "{hint}");
    assert!(!d.to_string().contains("wrong"), "the secret never appears in the diagnosis");
}

#[tokio::test]
async fn the_hints_come_in_the_language_the_admin_reads() {
    let sim = support::quick_sim().await;
    let app = spawn_app().await;
    let mut s = settings(sim.addr().port());
    s["secret"] = json!("wrong");
    let request = app
        .http
        .post(app.url("/v1/admin/pbx/test"))
        .bearer_auth(app.admin("acme"))
        .header("Accept-Language", "ru-RU,ru;q=0.9,en;q=0.8")
        .json(&json!({"from": FROM, "to": TO, "settings": s}));
    let res = app.exec(request).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-language"], "ru");
    let d: Value = res.json().await.unwrap();
    let (_, failed) = summary(&d);
    let (_, detail, hint) = failed.unwrap();
    assert!(hint.contains("АТС отвергла пользователя «dialback»") && hint.contains("manager.conf"), "{hint}");
    assert!(detail.contains("Authentication failed"), "what the PBX said stays as it said it: {detail}");

    // The dialplan check kept with the settings reads in the reader's language too.
    app.configure_pbx("acme", sim.addr().port(), json!({})).await;
    let check = support::wait::eventually("the dialplan check after the save", || async {
        let request =
            app.http.get(app.url("/v1/admin/pbx")).bearer_auth(app.admin("acme")).header("Accept-Language", "ru");
        let view: Value = app.exec(request).await.json().await.unwrap();
        match view["dialplan_check"].clone() {
            Value::Null => Err(view),
            check => Ok(check),
        }
    })
    .await;
    let hint = check["hint"].as_str().unwrap_or_default();
    assert!(hint.contains("Звонки работают и так") || hint.contains("скачайте диалплан"), "{check}");
    assert!(check.get("hint_text").is_none(), "{check}");
    let english: Value = app.get_as("/v1/admin/pbx", &app.admin("acme")).await.json().await.unwrap();
    assert!(english["dialplan_check"]["hint"].as_str().unwrap().contains("download the dialplan"), "{english}");
}

#[tokio::test]
async fn a_user_without_originate_permission_fails_the_originate_step() {
    let sim =
        support::sim_with(|c| c.users.push(dialback_pbx_sim::SimUser::without_originate("limited", "limited"))).await;
    let app = spawn_app().await;
    let mut s = settings(sim.addr().port());
    s["username"] = json!("limited");
    s["secret"] = json!("limited");
    let d = run(&app, json!({"from": FROM, "to": TO, "settings": s})).await;
    let (names, failed) = summary(&d);
    assert_eq!(names.last().unwrap(), "originate");
    let (_, _, hint) = failed.unwrap();
    assert!(hint.contains("write=") && hint.contains("originate"), "{hint}");
}

#[tokio::test]
async fn an_unknown_context_fails_the_originate_step_naming_the_context() {
    let sim = support::quick_sim().await;
    let app = spawn_app().await;
    let mut s = settings(sim.addr().port());
    s["context"] = json!("from-nowhere");
    let d = run(&app, json!({"from": FROM, "to": TO, "settings": s})).await;
    let (_, failed) = summary(&d);
    let (step, detail, hint) = failed.unwrap();
    assert_eq!(step, "originate");
    assert!(detail.contains("Extension does not exist."), "{detail}");
    assert!(hint.contains("from-nowhere") && hint.contains("client_prefix"), "{hint}");
    assert!(hint.contains("GET /v1/admin/pbx/dialplan"), "the hint points to the generated dialplan: {hint}");
}

#[tokio::test]
async fn a_chan_sip_template_fails_the_first_leg_with_the_pjsip_hint() {
    let sim = support::quick_sim().await;
    let app = spawn_app().await;
    let mut s = settings(sim.addr().port());
    s["channel_template"] = json!("SIP/trunk");
    let d = run(&app, json!({"from": FROM, "to": TO, "settings": s})).await;
    let (_, failed) = summary(&d);
    let (step, _, hint) = failed.unwrap();
    assert_eq!(step, "first_leg");
    assert!(hint.contains("chan_sip") && hint.contains("PJSIP/{NUMBER}@"), "{hint}");
}

#[tokio::test]
async fn busy_and_unanswered_phones_fail_the_leg_they_are_on() {
    let sim = support::quick_sim().await;
    let app = spawn_app().await;
    app.configure_pbx("acme", sim.addr().port(), json!({})).await;
    for (from, to, step, reason) in [
        ("+79001112230", TO, "first_leg", "busy"),
        ("+79001112239", TO, "first_leg", "no_answer"),
        (FROM, "+79161234560", "second_leg", "busy"),
        (FROM, "+79161234569", "second_leg", "no_answer"),
    ] {
        let d = run(&app, json!({"from": from, "to": to})).await;
        let (_, failed) = summary(&d);
        let (failed_step, detail, hint) = failed.unwrap_or_else(|| panic!("{from}->{to}: {d}"));
        assert_eq!(failed_step, step, "{from}->{to}: {d}");
        assert!(detail.contains(reason), "{detail}");
        assert!(!hint.is_empty());
        assert_eq!(d["ok"], false);
    }
}

#[tokio::test]
async fn tls_with_an_untrusted_certificate_fails_the_tls_step_and_works_with_the_ca() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let tls = dialback_pbx_sim::SimConfig::tls_from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap();
    let sim = support::sim_with(|c| c.tls = Some(tls)).await;
    let app = spawn_app().await;
    let mut s = settings(sim.addr().port());
    s["tls"] = json!(true);
    let d = run(&app, json!({"from": FROM, "to": TO, "settings": s.clone()})).await;
    let (names, failed) = summary(&d);
    assert_eq!(names, ["connect", "tls"]);
    assert!(failed.unwrap().2.contains("ca_pem"));
    s["ca_pem"] = json!(cert_pem);
    let d = run(&app, json!({"from": FROM, "to": TO, "settings": s})).await;
    let (names, failed) = summary(&d);
    assert_eq!(names, ["connect", "tls", "banner", "login", "dialplan", "originate", "first_leg", "second_leg"]);
    assert!(failed.is_none(), "{d}");
}

#[tokio::test]
async fn the_test_obeys_the_number_allow_list_and_needs_an_admin() {
    let sim = support::quick_sim().await;
    let app = spawn_app().await;
    app.configure_pbx("acme", sim.addr().port(), json!({})).await;
    let token = app.admin("acme");
    let res = app.post("/v1/admin/pbx/test", &token, json!({"from": "8 809 123 45 67", "to": TO})).await;
    let body = assert_problem(res, 403, "destination_forbidden").await;
    assert_eq!(body["field"], "from");
    let res = app.post("/v1/admin/pbx/test", &token, json!({"from": FROM, "to": "12"})).await;
    assert_problem(res, 422, "invalid_number").await;
    let res = app.post("/v1/admin/pbx/test", &token, json!({"from": FROM, "to": TO, "settings": {"host": "x"}})).await;
    assert_eq!(assert_problem(res, 422, "invalid_field").await["field"], "settings.username");
    // Settings without a PBX have nothing to test.
    let res = app
        .post(
            "/v1/admin/pbx/test",
            &token,
            json!({"from": FROM, "to": TO, "settings": {"office_phone": "+74951234567"}}),
        )
        .await;
    assert_eq!(assert_problem(res, 422, "invalid_field").await["field"], "settings.host");
    let mut bad = settings(5038);
    bad["context"] = json!("from courier");
    let res = app.post("/v1/admin/pbx/test", &token, json!({"from": FROM, "to": TO, "settings": bad})).await;
    assert_eq!(assert_problem(res, 422, "invalid_field").await["field"], "settings.context");
    let courier = app.courier("acme", "courier-1");
    assert_problem(app.post("/v1/admin/pbx/test", &courier, json!({"from": FROM, "to": TO})).await, 403, "forbidden")
        .await;
    assert_eq!(sim.originates(), 0);
}
