//! Answer confirmation on the courier's leg (issue 19): with `confirm_courier_answer: dtmf` the
//! downloaded dialplan asks the courier to press 1 before the client is dialled, so a voicemail
//! that answers leg 1 never gets the client rung. In the simulator a courier number ending in 5
//! is a voicemail (answers, never presses); other answering phones press 1 when asked.

use std::time::Duration;

use serde_json::json;

use crate::support::{self, spawn_app, wait, AmiObserver, TestApp, CLIENT_PHONE};

const HUMAN: &str = "+79001112233";
const VOICEMAIL: &str = "+79001112235";

/// A company whose PBX runs the dialplan it downloaded, with couriers `human` and `voicemail`
/// each delivering an order to the client. Named for this test alone: its confirmations are
/// counted in process-wide metrics.
struct Company {
    app: TestApp,
    sim: dialback_pbx_sim::Simulator,
    name: String,
}

async fn company(confirm: &str, timeout_s: u32, tweak: impl FnOnce(&mut dialback_pbx_sim::SimConfig)) -> Company {
    let app = spawn_app().await;
    let name = support::unique_tenant("acme");
    let settings = json!({"confirm_courier_answer": confirm, "confirm_timeout_s": timeout_s});
    let (sim, _) = support::sim_running_the_downloaded_dialplan(&app, &name, settings, tweak).await;
    for (courier, phone) in [("human", HUMAN), ("voicemail", VOICEMAIL)] {
        app.add_courier(&name, courier, phone).await;
        app.add_order(&name, &format!("O-{courier}"), courier, &[CLIENT_PHONE]).await;
    }
    Company { app, sim, name }
}

impl Company {
    /// The courier's tap, followed to its end.
    async fn call(&self, courier: &str) -> serde_json::Value {
        let token = self.app.courier(&self.name, courier);
        let res = self
            .app
            .post(
                "/v1/callbacks",
                &token,
                json!({"target": "client", "to": CLIENT_PHONE, "order_id": format!("O-{courier}")}),
            )
            .await;
        assert_eq!(res.status(), 202);
        let id = res.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        self.app.wait_terminal(&id, &token).await;
        // The admin's view, with Asterisk's record once it has come.
        self.app.callback_with_cdr(&self.name, &id).await
    }

    /// This company's `dialback_confirmations_total` with `outcome`.
    async fn confirmations(&self, outcome: &str) -> Option<f64> {
        let text = self.app.get("/metrics").await.text().await.unwrap();
        support::metric(&text, "dialback_confirmations_total", &[("tenant", &self.name), ("outcome", outcome)])
    }
}

fn outcome(call: &serde_json::Value) -> (&str, Option<&str>, Option<&str>) {
    (call["status"].as_str().unwrap(), call["failed_leg"].as_str(), call["reason"].as_str())
}

#[tokio::test]
async fn with_confirmation_a_voicemail_never_gets_the_client_dialled_and_a_person_does() {
    let acme = company("dtmf", 2, |_| {}).await;

    let voicemail = acme.call("voicemail").await;
    assert_eq!(outcome(&voicemail), ("failed", Some("courier"), Some("not_confirmed")), "{voicemail}");
    assert_eq!((acme.sim.originates(), acme.sim.client_dials()), (1, 0), "the client never rang");
    assert_eq!(voicemail["cdr"]["courier"]["last_application"], "Hangup", "{voicemail}");
    assert!(voicemail["courier_answered_at"].is_string(), "leg 1 was answered (by the voicemail)");
    assert!(voicemail["detail"].as_str().unwrap_or_default().contains("voicemail"), "{voicemail}");
    // The courier reads why too.
    let id = voicemail["id"].as_str().unwrap();
    let seen = acme.app.callback(id, &acme.app.courier(&acme.name, "voicemail")).await;
    assert_eq!(seen["reason"], "not_confirmed");

    let person = acme.call("human").await;
    assert_eq!(outcome(&person), ("completed", None, None), "{person}");
    assert_eq!((acme.sim.originates(), acme.sim.client_dials()), (2, 1));
    assert_eq!(person["cdr"]["courier"]["last_application"], "Dial");

    for (outcome, count) in [("asked", 2.0), ("confirmed", 1.0), ("not_confirmed", 1.0)] {
        assert_eq!(acme.confirmations(outcome).await, Some(count), "{outcome} confirmations of {}", acme.name);
    }
}

#[tokio::test]
async fn with_confirmation_off_every_answer_dials_the_client_as_before() {
    let acme = company("off", 5, |_| {}).await;
    for courier in ["voicemail", "human"] {
        let done = acme.call(courier).await;
        assert_eq!(outcome(&done), ("completed", None, None), "{courier}: {done}");
    }
    assert_eq!((acme.sim.originates(), acme.sim.client_dials()), (2, 2));
    assert_eq!(acme.confirmations("asked").await, None, "nothing was asked");
}

#[tokio::test]
async fn a_key_pressed_at_the_last_moment_confirms_and_one_a_moment_too_late_does_not() {
    // The phone presses 1 ten milliseconds before Read's 2 s run out.
    let acme = company("dtmf", 2, |c| c.confirm_press = Duration::from_millis(1_990)).await;
    let just_in_time = acme.call("human").await;
    assert_eq!(outcome(&just_in_time), ("completed", None, None), "{just_in_time}");
    assert_eq!(acme.sim.client_dials(), 1);

    let acme = company("dtmf", 2, |c| c.confirm_press = Duration::from_millis(2_000)).await;
    let too_late = acme.call("human").await;
    assert_eq!(outcome(&too_late), ("failed", Some("courier"), Some("not_confirmed")), "{too_late}");
    assert_eq!(acme.sim.client_dials(), 0);
}

#[tokio::test]
async fn a_courier_who_hangs_up_during_the_prompt_ends_the_call_before_the_client_rings() {
    // A long prompt: the voicemail-like phone would wait 30 s for the key.
    let acme = company("dtmf", 30, |_| {}).await;
    let (app, sim) = (&acme.app, &acme.sim);
    let observer = AmiObserver::start(sim.addr().port()).await;
    let token = app.courier(&acme.name, "voicemail");
    let res = app
        .post("/v1/callbacks", &token, json!({"target": "client", "to": CLIENT_PHONE, "order_id": "O-voicemail"}))
        .await;
    let id = res.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    // Leg 1 answered: the dialplan is in its Read, waiting for the key.
    app.wait_status(&id, &token, "ringing_client").await;
    observer.hangup(&id).await;
    app.wait_terminal(&id, &token).await;
    let done = app.callback_with_cdr(&acme.name, &id).await;
    assert_eq!(outcome(&done), ("failed", Some("courier"), Some("not_confirmed")), "{done}");
    assert_eq!(done["cdr"]["courier"]["last_application"], "Read", "{done}");
    assert_eq!((sim.originates(), sim.client_dials()), (1, 0));
}

#[tokio::test]
async fn a_prompt_the_pbx_cannot_play_is_a_pbx_fault_not_a_voicemail() {
    // An Asterisk without its core sounds: Read("beep") fails at once (ReadStatus ERROR).
    let acme = company("dtmf", 5, |c| c.sounds.clear()).await;
    let done = acme.call("human").await;
    assert_eq!(outcome(&done), ("failed", Some("courier"), Some("pbx_error")), "{done}");
    assert_eq!(acme.sim.client_dials(), 0);
}

#[tokio::test]
async fn the_test_button_shows_the_confirmation_as_its_own_step() {
    let acme = company("dtmf", 2, |_| {}).await;
    let app = &acme.app;
    let admin = app.admin(&acme.name);
    let steps = |d: &serde_json::Value| {
        d["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| format!("{}:{}", s["step"].as_str().unwrap(), s["ok"]))
            .collect::<Vec<_>>()
    };

    let res = app.post("/v1/admin/pbx/test", &admin, json!({"from": HUMAN, "to": CLIENT_PHONE})).await;
    let d: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        steps(&d),
        [
            "connect:true",
            "banner:true",
            "login:true",
            "dialplan:true",
            "originate:true",
            "first_leg:true",
            "confirm:true",
            "second_leg:true"
        ],
        "{d}"
    );
    let confirm = d["steps"].as_array().unwrap().iter().find(|s| s["step"] == "confirm").unwrap();
    assert!(confirm["detail"].as_str().unwrap().contains("pressed 1"), "{confirm}");

    let res = app.post("/v1/admin/pbx/test", &admin, json!({"from": VOICEMAIL, "to": CLIENT_PHONE})).await;
    let d: serde_json::Value = res.json().await.unwrap();
    assert_eq!(d["ok"], false);
    assert_eq!(steps(&d).last().unwrap(), "confirm:false", "{d}");
    let failed = d["steps"].as_array().unwrap().iter().find(|s| s["step"] == "confirm").unwrap();
    assert!(failed["hint"].as_str().unwrap().contains("voicemail"), "{failed}");
}

/// A PBX that already had a `[from-courier]` of its own (an earlier integration's) gets
/// dialback's file included after it, with the settings naming that same context: Asterisk keeps
/// the older definition priority by priority, so the courier is never asked to confirm. The Test
/// says so at its dialplan step, and a courier's call is hung up the moment the PBX dials the
/// client, before the client can answer.
#[tokio::test]
async fn a_context_shadowed_by_an_older_one_is_named_and_never_lets_a_voicemail_reach_the_client() {
    let app = spawn_app().await;
    let acme = support::unique_tenant("acme");
    let settings = json!({"context": "from-courier", "confirm_courier_answer": "dtmf", "confirm_timeout_s": 2});
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    app.configure_pbx(&acme, nowhere, settings.clone()).await;
    let downloaded = app.get_as("/v1/admin/pbx/dialplan", &app.admin(&acme)).await.text().await.unwrap();
    let old = "[from-courier]\n\
               exten => _X.,1,NoOp(old courier context)\n \
               same => n,Set(CDR(userfield)=${DIALBACK_CALL_ID})\n \
               same => n,Dial(PJSIP/${EXTEN}@trunk,30)\n \
               same => n,Hangup()\n";
    let dialplan = dialback_pbx_sim::dialplan::Dialplan::parse(&format!("{old}\n{downloaded}")).unwrap();
    // Phones ring a second: long enough for dialback to hang up before the client answers.
    let sim = support::sim_with(|c| {
        c.dialplan = Some(std::sync::Arc::new(dialplan));
        c.ring = Duration::from_secs(1);
    })
    .await;
    app.configure_pbx(&acme, sim.addr().port(), settings).await;
    app.add_courier(&acme, "voicemail", VOICEMAIL).await;
    app.add_order(&acme, "O-voicemail", "voicemail", &[CLIENT_PHONE]).await;

    let res = app.post("/v1/admin/pbx/test", &app.admin(&acme), json!({"from": VOICEMAIL, "to": CLIENT_PHONE})).await;
    let d: serde_json::Value = res.json().await.unwrap();
    assert_eq!(d["ok"], false, "{d}");
    let last = d["steps"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["step"].as_str(), last["ok"].as_bool()), (Some("dialplan"), Some(false)), "{d}");
    let detail = last["detail"].as_str().unwrap();
    assert!(detail.contains("answer confirmation needs dialback's context [from-courier]"), "{detail}");
    // None of its four priorities is dialback's (dialback's 2 pushes the outcome's hangup handler).
    assert!(detail.contains("priorities 1-4 of extension _X."), "{detail}");
    assert!(detail.contains("NoOp(old courier context)"), "{detail}");
    let hint = last["hint"].as_str().unwrap();
    assert!(hint.contains("Rename or remove that older [from-courier]") && hint.contains("dialback-courier"), "{hint}");
    assert_eq!(sim.originates(), 0, "the Test stopped before calling anyone");
    // Saving the settings checked the PBX too; every process shows that check, not only the one
    // that made it.
    let replica = support::app().existing_database(app.database_url.clone()).spawn().await;
    let shown = wait::eventually("the check made on save, shown by another process", || async {
        let view: serde_json::Value =
            replica.get_as("/v1/admin/pbx", &replica.admin(&acme)).await.json().await.unwrap();
        match view["dialplan_check"]["result"].as_str() {
            Some("failing") => Ok(view["dialplan_check"].clone()),
            _ => Err(view["dialplan_check"].clone()),
        }
    })
    .await;
    assert!(shown["hint"].as_str().unwrap().contains("Rename or remove that older [from-courier]"), "{shown}");

    let token = app.courier(&acme, "voicemail");
    let res = app
        .post("/v1/callbacks", &token, json!({"target": "client", "to": CLIENT_PHONE, "order_id": "O-voicemail"}))
        .await;
    assert_eq!(res.status(), 202);
    let id = res.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    app.wait_terminal(&id, &token).await;
    let done = app.callback(&id, &app.admin(&acme)).await;
    assert_eq!(
        (done["status"].as_str(), done["reason"].as_str()),
        (Some("failed"), Some("dialplan_not_run")),
        "{done}"
    );
    assert!(done["connected_at"].is_null(), "the client never answered: {done}");
    assert!(done["detail"].as_str().unwrap().contains("dialback hung the call up"), "{done}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let not_asked =
        support::metric(&metrics, "dialback_confirmations_total", &[("tenant", &acme), ("outcome", "not_asked")]);
    assert_eq!(not_asked, Some(1.0), "{metrics}");
}
