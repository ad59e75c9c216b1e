//! Webhooks (issue 14): a real receiver verifies every message with the Standard Webhooks
//! reference library; every status of each outcome arrives in order; 500s, timeouts and 429s are
//! retried with the same webhook-id; a delivery another sender holds keeps its call's later events
//! waiting; a receiver down for a while, a dialback killed mid-delivery and two dialbacks on one
//! database lose nothing and send each message once; SSRF targets are refused.

use std::collections::HashMap;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::process::DialbackProcess;
use crate::support::receiver::Receiver;
use crate::support::{self, assert_problem, spawn_app, wait, TestApp, CLIENT_PHONE};

/// Creates endpoint `id` for `tenant` posting `types` to the receiver's `name`; the secret.
async fn subscribe(app: &TestApp, tenant: &str, id: &str, url: &str, types: &[&str]) -> String {
    let res = app
        .put(&format!("/v1/admin/webhooks/{id}"), &app.admin(tenant), json!({"url": url, "event_types": types}))
        .await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    body["secret"].as_str().expect("a new endpoint's secret").to_owned()
}

/// acme's endpoint `id`, as its admin reads it.
async fn endpoint(app: &TestApp, id: &str) -> Value {
    app.get_as(&format!("/v1/admin/webhooks/{id}"), &app.admin("acme")).await.json().await.unwrap()
}

/// acme's deliveries to `endpoint` with `status`, as its admin reads them.
async fn deliveries(app: &TestApp, endpoint: &str, status: &str) -> Value {
    let path = format!("/v1/admin/webhooks/{endpoint}/deliveries?status={status}");
    app.get_as(&path, &app.admin("acme")).await.json().await.unwrap()
}

/// The messages `name` received whose bodies are callback events, by the callback's id, in the
/// order they arrived; panics on any message the reference library could not verify.
fn by_callback(received: &[Value]) -> HashMap<String, Vec<Value>> {
    let mut calls: HashMap<String, Vec<Value>> = HashMap::new();
    for message in received {
        assert_eq!(message["verified_by"], json!(0), "every message verifies: {message}");
        assert_eq!(message["content_type"], "application/json");
        let body: Value = serde_json::from_str(message["body"].as_str().unwrap()).unwrap();
        if body["type"] == "callback.status_changed" {
            let id = body["data"]["id"].as_str().unwrap().to_owned();
            calls.entry(id).or_default().push(json!({"id": message["id"], "body": body}));
        }
    }
    calls
}

/// Waits until `name` has received at least `n` messages (answered 2xx or not).
async fn received_at_least(receiver: &Receiver, name: &str, n: usize) -> Vec<Value> {
    wait::eventually(format!("{n} messages at {name}"), || async {
        let got = receiver.received(name).await;
        if got.len() >= n {
            Ok(got)
        } else {
            Err(got.len())
        }
    })
    .await
}

fn statuses(messages: &[Value]) -> Vec<String> {
    messages.iter().map(|m| m["body"]["data"]["status"].as_str().unwrap().to_owned()).collect()
}

async fn company_with_sim() -> (TestApp, dialback_pbx_sim::Simulator) {
    company_named("acme").await
}

async fn company_named(tenant: &str) -> (TestApp, dialback_pbx_sim::Simulator) {
    let sim = support::quick_sim().await;
    let app = spawn_app().await;
    app.seed(tenant, sim.addr().port()).await;
    (app, sim)
}

async fn tap(app: &TestApp, courier: &str, body: Value) -> String {
    tap_as(app, "acme", courier, body).await
}

async fn tap_as(app: &TestApp, tenant: &str, courier: &str, body: Value) -> String {
    let res = app.post("/v1/callbacks", &app.courier(tenant, courier), body).await;
    let body: Value = res.json().await.unwrap();
    body["id"].as_str().or(body["callback_id"].as_str()).expect("the attempt's id").to_owned()
}

#[tokio::test]
async fn every_status_of_each_outcome_arrives_signed_and_in_order() {
    // Named for this test alone: it reads the company's metrics.
    let acme = support::unique_tenant("acme");
    let receiver = Receiver::start().await;
    let (app, _sim) = company_named(&acme).await;
    let admin = app.admin(&acme);
    let secret = subscribe(&app, &acme, "erp", &receiver.url("erp"), &["callback.status_changed"]).await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    receiver.script("erp", &[secret.as_str()], json!([])).await;
    // The secret is shown once: reading or changing the endpoint never shows it again.
    let read: Value = app.get_as("/v1/admin/webhooks/erp", &admin).await.json().await.unwrap();
    assert!(read.get("secret").is_none(), "{read}");
    let res = app
        .put(
            "/v1/admin/webhooks/erp",
            &admin,
            json!({"url": receiver.url("erp"), "event_types": ["callback.status_changed"], "description": "ERP"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.json::<Value>().await.unwrap().get("secret").is_none());

    app.add_order(&acme, "B-1", "courier-1", &["+79161234560"]).await; // the client is busy
    app.add_courier(&acme, "busy-courier", "+79001112230").await; // the courier is busy
    app.add_order(&acme, "B-2", "busy-courier", &[CLIENT_PHONE]).await;
    let completed =
        tap_as(&app, &acme, "courier-1", json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1001"})).await;
    let client_busy =
        tap_as(&app, &acme, "courier-1", json!({"target": "client", "to": "+79161234560", "order_id": "B-1"})).await;
    let courier_busy =
        tap_as(&app, &acme, "busy-courier", json!({"target": "client", "to": CLIENT_PHONE, "order_id": "B-2"})).await;
    let refused =
        tap_as(&app, &acme, "courier-1", json!({"target": "client", "to": "+78005553535", "order_id": "A-1001"})).await;
    let office = tap_as(&app, &acme, "courier-1", json!({"target": "office"})).await;
    let expected: [(&str, &[&str]); 5] = [
        (&completed, &["queued", "ringing_courier", "ringing_client", "connected", "completed"]),
        (&client_busy, &["queued", "ringing_courier", "ringing_client", "failed"]),
        (&courier_busy, &["queued", "ringing_courier", "failed"]),
        (&refused, &["refused"]),
        (&office, &["queued", "ringing_courier", "ringing_client", "connected", "completed"]),
    ];
    let total = expected.iter().map(|(_, s)| s.len()).sum();
    let calls = by_callback(&received_at_least(&receiver, "erp", total).await);
    for (id, want) in expected {
        let messages = &calls[id];
        assert_eq!(statuses(messages), want, "{id}");
        for (n, message) in messages.iter().enumerate() {
            let data = &message["body"]["data"];
            assert_eq!(data["sequence"], json!(n + 1), "numbered in turn: {data}");
            assert_eq!(message["id"], format!("msg_{}_{}", id.replace('-', ""), n + 1), "one webhook-id per event");
            assert_eq!(message["body"]["type"], "callback.status_changed");
            support::spec::spec().assert_valid(
                "a webhook's data",
                &json!({"$ref": "#/components/schemas/CallbackEvent"}),
                support::spec::Direction::Response,
                data,
            );
        }
    }
    let busy = calls[client_busy.as_str()].last().unwrap()["body"]["data"].clone();
    assert_eq!((busy["failed_leg"].as_str(), busy["reason"].as_str()), (Some("client"), Some("busy")));
    assert_eq!(busy["to"], "+79161234560", "the company's own systems see the numbers");
    let done = calls[completed.as_str()].last().unwrap()["body"]["data"].clone();
    assert!(done["talk_seconds"].as_i64() >= Some(1), "{done}");
    // Billing reaches the company: the completed call's last event carries Asterisk's CDR.
    assert!(done["billable_seconds"].is_number() && done["cdr"]["courier"].is_object(), "{done}");

    // The deliveries, as the admin sees them: every one delivered at the first attempt.
    let page: Value = app.get_as("/v1/admin/webhooks/erp/deliveries?limit=200", &admin).await.json().await.unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), total);
    assert!(
        items.iter().all(|d| d["status"] == "delivered" && d["attempts"] == 1 && d["last_status"] == 204),
        "{page}"
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let delivered =
        support::metric(&metrics, "dialback_webhook_deliveries_total", &[("tenant", &acme), ("outcome", "delivered")]);
    assert_eq!(delivered, Some(total as f64), "{metrics}");
}

#[tokio::test]
async fn a_cdr_posted_after_the_call_ended_reaches_the_company_in_one_more_event() {
    // cdr.conf's `batch = yes` posts CDRs well after the call's last Hangup, so `completed` is
    // written before Asterisk says what it billed.
    let receiver = Receiver::start().await;
    let sim = support::sim_with(|config| config.cdr_delay = std::time::Duration::from_secs(2)).await;
    let app = spawn_app().await;
    let tenant = support::unique_tenant("late-cdr");
    app.seed(&tenant, sim.addr().port()).await;
    let secret = subscribe(&app, &tenant, "billing", &receiver.url("billing"), &["callback.status_changed"]).await;
    receiver.script("billing", &[secret.as_str()], json!([])).await;

    let id =
        tap_as(&app, &tenant, "courier-1", json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1001"})).await;
    let messages = wait::eventually("the completed call's billed seconds at the receiver", || async {
        let calls = by_callback(&receiver.received("billing").await);
        let messages = calls.get(&id).cloned().unwrap_or_default();
        match messages.last() {
            Some(last) if last["body"]["data"]["billable_seconds"].is_number() => Ok(messages),
            _ => Err(statuses(&messages)),
        }
    })
    .await;
    let seen = statuses(&messages);
    let first_completed = seen.iter().position(|s| s == "completed").expect("a completed event");
    assert_eq!(
        seen[..=first_completed],
        ["queued", "ringing_courier", "ringing_client", "connected", "completed"],
        "{seen:?}"
    );
    assert!(seen[first_completed..].iter().all(|s| s == "completed"), "the CDR changes no status: {seen:?}");
    let last = &messages.last().unwrap()["body"]["data"];
    assert!(last["cdr"]["courier"]["disposition"] == "ANSWERED" && last["talk_seconds"].as_i64() >= Some(1), "{last}");
    assert_eq!(last["sequence"], json!(messages.len()), "numbered in turn: {last}");
    support::spec::spec().assert_valid(
        "the billed event",
        &json!({"$ref": "#/components/schemas/CallbackEvent"}),
        support::spec::Direction::Response,
        last,
    );
    // The journal holds the same.
    let call: Value = app.get_as(&format!("/v1/callbacks/{id}"), &app.admin(&tenant)).await.json().await.unwrap();
    assert_eq!(call["billable_seconds"], last["billable_seconds"], "{call}");
}

/// An app whose deliveries are retried after a second or two, and give up after `retries`.
async fn app_with_quick_retries(retries: usize) -> TestApp {
    app_with_retries(vec![1; retries]).await
}

/// An app whose failed deliveries are tried again after `schedule_s`, one delay per retry.
async fn app_with_retries(schedule_s: Vec<u64>) -> TestApp {
    support::app()
        .set("webhooks.retry_schedule_s", schedule_s)
        .set("webhooks.request_timeout_ms", 1_000)
        .set("webhooks.connect_timeout_ms", 1_000)
        .spawn()
        .await
}

/// A call's events are sent as a chain, one after another: one that fails in the middle holds the
/// rest back until it is delivered, and none is sent twice.
#[tokio::test]
async fn a_failure_inside_a_call_holds_its_later_events_back_until_it_is_delivered() {
    let receiver = Receiver::start().await;
    let sim = support::quick_sim().await;
    let app = app_with_quick_retries(5).await;
    app.seed("acme", sim.addr().port()).await;
    let secret = subscribe(&app, "acme", "erp", &receiver.url("erp"), &["callback.status_changed"]).await;
    // The first message is not answered in time, so the call's next events queue behind it and are
    // claimed with it when it is retried; then the second meets a 503.
    receiver.script("erp", &[secret.as_str()], json!([{"delay_s": 3}, {"status": 204}, {"status": 503}])).await;
    let id = tap(&app, "courier-1", json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1001"})).await;
    let received = received_at_least(&receiver, "erp", 2 + 5).await;
    let calls = by_callback(&received);
    let sequences: Vec<i64> = calls[&id].iter().map(|m| m["body"]["data"]["sequence"].as_i64().unwrap()).collect();
    assert_eq!(sequences, [1, 1, 2, 2, 3, 4, 5], "{received:?}");
    let answers: Vec<Value> = received.iter().map(|m| m["answered"].clone()).collect();
    assert_eq!(answers[..4], [json!("timeout"), json!(204), json!(503), json!(204)]);
    let second = format!("msg_{}_2", id.replace('-', ""));
    // Recorded once the round that sent the last one commits.
    let delivered = wait::eventually("five deliveries recorded", || async {
        let page = deliveries(&app, "erp", "delivered").await;
        let items = page["items"].as_array().unwrap().clone();
        if items.len() == 5 {
            Ok(items)
        } else {
            Err(page)
        }
    })
    .await;
    let second = delivered.iter().find(|d| d["message_id"] == second.as_str()).unwrap();
    assert_eq!((second["attempts"].as_i64(), second["last_status"].as_i64()), (Some(2), Some(204)), "{second}");
}

#[tokio::test]
async fn failures_are_retried_with_the_same_id_and_a_4xx_stops_at_once() {
    let receiver = Receiver::start().await;
    let sim = support::quick_sim().await;
    let app = app_with_quick_retries(5).await;
    app.seed("acme", sim.addr().port()).await;
    let admin = app.admin("acme");
    let secret = subscribe(&app, "acme", "erp", &receiver.url("erp"), &["callback.status_changed"]).await;
    // The first message meets a 500, no answer in time, then a 429 asking for a second's pause.
    receiver
        .script("erp", &[secret.as_str()], json!([{"status": 500}, {"delay_s": 3}, {"status": 429, "retry_after": 1}]))
        .await;
    let id = tap(&app, "courier-1", json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1001"})).await;
    let received = received_at_least(&receiver, "erp", 3 + 5).await;
    let first_id = format!("msg_{}_1", id.replace('-', ""));
    let attempts_of_first: Vec<&Value> = received.iter().filter(|m| m["id"] == first_id.as_str()).collect();
    assert_eq!(attempts_of_first.len(), 4, "three failures, then delivered: {received:?}");
    assert_eq!(
        attempts_of_first.iter().map(|m| m["answered"].clone()).collect::<Vec<_>>(),
        [json!(500), json!("timeout"), json!(429), json!(204)]
    );
    // Each attempt is signed anew with its own timestamp, under the same id.
    assert!(attempts_of_first.iter().all(|m| m["verified_by"] == 0));
    // The call's later events waited for the first: they arrived after it, in order.
    let calls = by_callback(&received);
    let sequences: Vec<i64> = calls[&id].iter().map(|m| m["body"]["data"]["sequence"].as_i64().unwrap()).collect();
    assert_eq!(sequences, [1, 1, 1, 1, 2, 3, 4, 5]);
    let page: Value =
        app.get_as("/v1/admin/webhooks/erp/deliveries?status=delivered", &admin).await.json().await.unwrap();
    let first =
        page["items"].as_array().unwrap().iter().find(|d| d["message_id"] == first_id.as_str()).unwrap().clone();
    assert_eq!((first["attempts"].as_i64(), first["last_status"].as_i64()), (Some(4), Some(204)), "{first}");

    // A 400 is the receiver's final word: recorded, not retried; the next event is not held up.
    receiver.script("erp", &[secret.as_str()], json!([{"status": 400}])).await;
    let second = tap(&app, "courier-1", json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1001"})).await;
    let failed_id = format!("msg_{}_1", second.replace('-', ""));
    let failed = wait::eventually("the 400 to be recorded", || async {
        let page: Value =
            app.get_as("/v1/admin/webhooks/erp/deliveries?status=failed", &admin).await.json().await.unwrap();
        page["items"].as_array().unwrap().iter().find(|d| d["message_id"] == failed_id.as_str()).cloned().ok_or(page)
    })
    .await;
    assert_eq!((failed["attempts"].as_i64(), failed["last_status"].as_i64()), (Some(1), Some(400)));
    assert!(failed["last_error"].as_str().unwrap().contains("answered 400"), "{failed}");
    received_at_least(&receiver, "erp", 8 + 5).await;
    // Sent again on request, it is delivered.
    let res = app.post(&format!("/v1/admin/webhooks/erp/deliveries/{failed_id}/retry"), &admin, json!({})).await;
    assert_eq!(res.status(), 202);
    wait::eventually("the retried message delivered", || async {
        let got = receiver.received("erp").await;
        let attempts = got.iter().filter(|m| m["id"] == failed_id.as_str()).count();
        if attempts == 2 {
            Ok(())
        } else {
            Err(attempts)
        }
    })
    .await;
    assert_problem(
        app.post("/v1/admin/webhooks/erp/deliveries/msg_nope/retry", &admin, json!({})).await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn a_receiver_down_for_a_while_gets_every_message_when_it_is_back() {
    let mut receiver = Receiver::start().await;
    let sim = support::quick_sim().await;
    let app = app_with_quick_retries(20).await;
    app.seed("acme", sim.addr().port()).await;
    let secret = subscribe(&app, "acme", "erp", &receiver.url("erp"), &["callback.status_changed"]).await;
    receiver.stop().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(tap(&app, "courier-1", json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1001"})).await);
    }
    for id in &ids {
        app.wait_terminal(id, &app.courier("acme", "courier-1")).await;
    }
    // While it is down, the deliveries wait and say why.
    let pending = wait::eventually("a failed attempt recorded", || async {
        let page = deliveries(&app, "erp", "pending").await;
        page["items"].as_array().unwrap().iter().find(|d| !d["last_error"].is_null()).cloned().ok_or(page)
    })
    .await;
    assert!(pending["last_error"].as_str().unwrap().contains("connect"), "{pending}");
    // Back with the secret it had: nothing arriving is taken for a forgery.
    receiver.restart(json!({"erp": {"secrets": [secret]}})).await;
    let calls = by_callback(&received_at_least(&receiver, "erp", 15).await);
    for id in &ids {
        assert_eq!(statuses(&calls[id]), ["queued", "ringing_courier", "ringing_client", "connected", "completed"]);
    }
}

/// One call made while acme's receiver was down: its five deliveries are queued and failing.
struct QueuedWhileDown {
    receiver: Receiver,
    secret: String,
    app: TestApp,
    _sim: dialback_pbx_sim::Simulator,
    call: String,
    subject: Uuid,
}

impl QueuedWhileDown {
    /// `retry_schedule_s` as `app_with_retries` takes it.
    async fn start(retry_schedule_s: Vec<u64>) -> QueuedWhileDown {
        let mut receiver = Receiver::start().await;
        let sim = support::quick_sim().await;
        let app = app_with_retries(retry_schedule_s).await;
        app.seed("acme", sim.addr().port()).await;
        let secret = subscribe(&app, "acme", "erp", &receiver.url("erp"), &["callback.status_changed"]).await;
        receiver.stop().await;
        let call = tap(&app, "courier-1", json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1001"})).await;
        app.wait_terminal(&call, &app.courier("acme", "courier-1")).await;
        let subject = Uuid::parse_str(&call).unwrap();
        let db = support::connect(&app.database_url).await;
        wait::eventually("the call's five deliveries queued", || async {
            let sql = "SELECT count(*) FROM webhook_deliveries WHERE subject_id = $1 AND status = 'pending'";
            match db.query_one(sql, &[&subject]).await.unwrap().get::<_, i64>(0) {
                5 => Ok(()),
                n => Err(n),
            }
        })
        .await;
        QueuedWhileDown { receiver, secret, app, _sim: sim, call, subject }
    }

    /// Locks the call's delivery `sequence` on `db` as another sender's round would, until the
    /// transaction ends.
    async fn hold<'a>(&self, db: &'a mut tokio_postgres::Client, sequence: i32) -> tokio_postgres::Transaction<'a> {
        let other_sender = db.transaction().await.unwrap();
        let sql = "SELECT FROM webhook_deliveries WHERE subject_id = $1 AND sequence = $2 FOR UPDATE";
        assert_eq!(other_sender.query(sql, &[&self.subject, &sequence]).await.unwrap().len(), 1);
        other_sender
    }

    async fn receiver_back(&mut self) {
        self.receiver.restart(json!({"erp": {"secrets": [self.secret.as_str()]}})).await;
    }

    /// Waits for the call's five messages and checks they arrived in order.
    async fn all_received_in_order(&self) {
        let calls = by_callback(&received_at_least(&self.receiver, "erp", 5).await);
        assert_eq!(
            statuses(&calls[&self.call]),
            ["queued", "ringing_courier", "ringing_client", "connected", "completed"]
        );
    }
}

/// A delivery in the middle of a chain that another sender holds (a round of this process or of
/// another one that locked it) is a gap the claim stops at: the events after it wait, however due.
/// Sending past it delivered a call's `ringing_courier` after its `completed`.
#[tokio::test]
async fn a_delivery_another_sender_holds_keeps_the_rest_of_its_call_waiting() {
    let mut queued = QueuedWhileDown::start(vec![1; 20]).await;
    let mut db = support::connect(&queued.app.database_url).await;
    let other_sender = queued.hold(&mut db, 2).await;
    queued.receiver_back().await;
    received_at_least(&queued.receiver, "erp", 1).await;
    other_sender.commit().await.unwrap();
    queued.all_received_in_order().await;
}

/// A failed attempt is recorded without waiting for a later delivery of its call that another
/// sender holds: rounds that waited for each other's rows could wait in a cycle, and PostgreSQL
/// would end one of them with its outcomes unrecorded (its delivered messages sent again).
#[tokio::test]
async fn a_failed_attempt_is_recorded_while_another_sender_holds_a_later_delivery() {
    let mut queued = QueuedWhileDown::start(vec![1; 20]).await;
    let mut db = support::connect(&queued.app.database_url).await;
    let other_sender = queued.hold(&mut db, 3).await;
    let attempts = || async {
        let sql = "SELECT attempts FROM webhook_deliveries WHERE subject_id = $1 AND sequence = 1";
        other_sender.query_one(sql, &[&queued.subject]).await.unwrap().get::<_, i32>(0)
    };
    let before = attempts().await;
    wait::eventually("two more failed attempts recorded while the third delivery is held", || async {
        match attempts().await {
            n if n >= before + 2 => Ok(()),
            n => Err(n),
        }
    })
    .await;
    other_sender.commit().await.unwrap();
    // The endpoint's health was recorded with the failures, and is cleared by the next delivery.
    let failing = endpoint(&queued.app, "erp").await;
    assert!(failing["failing_since"].is_string(), "{failing}");
    queued.receiver_back().await;
    queued.all_received_in_order().await;
    wait::eventually("the endpoint healthy again", || async {
        let healthy = endpoint(&queued.app, "erp").await;
        if healthy["failing_since"].is_null() {
            Ok(())
        } else {
            Err(healthy)
        }
    })
    .await;
}

/// A call's events written after its first delivery failed wait for that delivery's retry: left
/// due, they filled the first rows of every claim's walk (256 of them: 64 calls to one endpoint
/// that is down) and every company's deliveries waited behind them until those retries came.
#[tokio::test]
async fn the_rest_of_a_call_waits_with_its_failed_first_delivery() {
    let queued = QueuedWhileDown::start(vec![600]).await;
    let db = support::connect(&queued.app.database_url).await;
    // As if the call's later events were written after its first delivery failed.
    let sql = "UPDATE webhook_deliveries SET next_attempt_at = now() WHERE subject_id = $1 AND sequence > 1";
    assert_eq!(db.execute(sql, &[&queued.subject]).await.unwrap(), 4);
    wait::eventually("the later deliveries due with the first one's retry", || async {
        let sql = "SELECT sequence, next_attempt_at >= (SELECT next_attempt_at FROM webhook_deliveries
                          WHERE subject_id = $1 AND sequence = 1)
                   FROM webhook_deliveries WHERE subject_id = $1 AND sequence > 1 ORDER BY sequence";
        let early: Vec<i32> = db
            .query(sql, &[&queued.subject])
            .await
            .unwrap()
            .iter()
            .filter(|r| !r.get::<_, bool>(1))
            .map(|r| r.get(0))
            .collect();
        if early.is_empty() {
            Ok(())
        } else {
            Err(early)
        }
    })
    .await;
}

/// An endpoint deleted while a round holds some of its deliveries waits for that round, and the
/// round can still lock the endpoint to record its health: deleting the endpoint first made the
/// two wait for each other, and PostgreSQL ended one (the round's delivered messages sent again).
#[tokio::test]
async fn an_endpoint_is_deleted_beside_a_round_holding_its_deliveries() {
    let queued = QueuedWhileDown::start(vec![600]).await;
    let mut db = support::connect(&queued.app.database_url).await;
    let watcher = support::connect(&queued.app.database_url).await;
    let round = queued.hold(&mut db, 1).await;
    let admin = queued.app.admin("acme");
    let delete = queued.app.delete("/v1/admin/webhooks/erp", &admin);
    let round_records_health = async {
        wait::eventually("the delete waiting for the round's rows", || async {
            let sql = "SELECT count(*) FROM pg_stat_activity
                       WHERE datname = current_database() AND wait_event_type = 'Lock'
                         AND query LIKE '%DELETE FROM webhook_%'";
            match watcher.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) {
                0 => Err("not yet"),
                _ => Ok(()),
            }
        })
        .await;
        let sql = "SELECT FROM webhook_endpoints WHERE tenant_id = 'acme' AND id = 'erp' FOR UPDATE";
        round.query(sql, &[]).await.unwrap();
        round.commit().await.unwrap();
    };
    let (res, ()) = tokio::join!(delete, round_records_health);
    assert_eq!(res.status(), 204);
    let sql = "SELECT count(*) FROM webhook_deliveries WHERE subject_id = $1";
    assert_eq!(watcher.query_one(sql, &[&queued.subject]).await.unwrap().get::<_, i64>(0), 0);
}

#[tokio::test]
async fn a_dialback_killed_mid_delivery_loses_nothing_another_sends_it_again() {
    let receiver = Receiver::start().await;
    let sim = support::quick_sim().await;
    let database = support::fresh_database().await;
    let quick = [
        ("WEBHOOKS__REQUEST_TIMEOUT_MS", "20000"),
        ("WEBHOOKS__CONNECT_TIMEOUT_MS", "1000"),
        ("WEBHOOKS__RETRY_SCHEDULE_S", "[1,1,1,1,1]"),
    ];
    let first = DialbackProcess::start(&database, &quick).await;
    first.app.seed("acme", sim.addr().port()).await;
    let secret = subscribe(&first.app, "acme", "erp", &receiver.url("erp"), &["callback.status_changed"]).await;
    // The receiver holds the first message without answering while the process is killed.
    receiver.script("erp", &[secret.as_str()], json!([{"delay_s": 30}])).await;
    let id = tap(&first.app, "courier-1", json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1001"})).await;
    first.app.wait_terminal(&id, &first.app.courier("acme", "courier-1")).await;
    received_at_least(&receiver, "erp", 1).await;
    first.kill().await;

    // Another dialback on the same database takes the delivery over: the killed one's lock went
    // with its connection.
    let second = DialbackProcess::start(&database, &quick).await;
    let received = received_at_least(&receiver, "erp", 6).await;
    let first_id = format!("msg_{}_1", id.replace('-', ""));
    assert_eq!(received.iter().filter(|m| m["id"] == first_id.as_str()).count(), 2, "sent again, same id");
    let calls = by_callback(&received);
    let sequences: Vec<i64> = calls[&id].iter().map(|m| m["body"]["data"]["sequence"].as_i64().unwrap()).collect();
    assert_eq!(sequences, [1, 1, 2, 3, 4, 5]);
    let page: Value =
        second.app.get_as("/v1/admin/webhooks/erp/deliveries", &second.app.admin("acme")).await.json().await.unwrap();
    assert!(page["items"].as_array().unwrap().iter().all(|d| d["status"] == "delivered"), "{page}");
}

#[tokio::test]
async fn two_dialbacks_on_one_database_send_each_message_once() {
    let receiver = Receiver::start().await;
    let sim = support::quick_sim().await;
    let one = spawn_app().await;
    let two = support::app().existing_database(one.database_url.clone()).spawn().await;
    one.seed("acme", sim.addr().port()).await;
    let secret = subscribe(&one, "acme", "erp", &receiver.url("erp"), &["callback.status_changed"]).await;
    receiver.script("erp", &[secret.as_str()], json!([])).await;
    let courier = one.courier("acme", "courier-1");
    let mut ids = Vec::new();
    for n in 0..10 {
        // Placed through either process: both deliverers work on the same queue.
        let app = if n % 2 == 0 { &one } else { &two };
        ids.push(tap(app, "courier-1", json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1001"})).await);
    }
    for id in &ids {
        one.wait_terminal(id, &courier).await;
    }
    let received = received_at_least(&receiver, "erp", 50).await;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for message in &received {
        *seen.entry(message["id"].as_str().unwrap()).or_default() += 1;
    }
    assert_eq!(seen.len(), 50);
    assert!(seen.values().all(|n| *n == 1), "each message once: {seen:?}");
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_old_one_until_the_overlap_ends() {
    let receiver = Receiver::start().await;
    let (app, _sim) = company_with_sim().await;
    let admin = app.admin("acme");
    let old = subscribe(&app, "acme", "erp", &receiver.url("erp"), &["callback.status_changed"]).await;
    let res = app.post("/v1/admin/webhooks/erp/rotate-secret", &admin, json!({})).await;
    assert_eq!(res.status(), 200);
    let rotated: Value = res.json().await.unwrap();
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(rotated["previous_secret_until"].is_string());
    // A receiver still on the old secret, and one already on the new: both verify.
    receiver.script("erp", &[old.as_str()], json!([])).await;
    tap(&app, "courier-1", json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1001"})).await;
    let got = received_at_least(&receiver, "erp", 5).await;
    assert!(got.iter().all(|m| m["verified_by"] == 0 && m["signature"].as_str().unwrap().split(' ').count() == 2));
    receiver.script("erp", &[new.as_str()], json!([])).await;
    tap(&app, "courier-1", json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1001"})).await;
    let got = received_at_least(&receiver, "erp", 10).await;
    assert!(got[5..].iter().all(|m| m["verified_by"] == 0), "{got:?}");
    assert_problem(app.post("/v1/admin/webhooks/nope/rotate-secret", &admin, json!({})).await, 404, "not_found").await;
}

#[tokio::test]
async fn endpoints_are_listed_deleted_and_validated() {
    let app = spawn_app().await;
    let admin = app.admin("acme");
    for (body, field) in [
        (json!({"url": "ftp://erp.example.com/", "event_types": ["recording.bound"]}), "url"),
        (json!({"url": "https://erp.example.com/", "event_types": []}), "event_types"),
        (json!({"url": "https://erp.example.com/", "event_types": ["call.created"]}), "event_types"),
    ] {
        let res = app.put("/v1/admin/webhooks/erp", &admin, body).await;
        assert_eq!(assert_problem(res, 422, "invalid_field").await["field"], field);
    }
    subscribe(&app, "acme", "a", "http://127.0.0.1:9/a", &["recording.bound"]).await;
    subscribe(&app, "acme", "b", "http://127.0.0.1:9/b", &["callback.status_changed", "recording.bound"]).await;
    let list: Value = app.get_as("/v1/admin/webhooks", &admin).await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let other: Value = app.get_as("/v1/admin/webhooks", &app.admin("other")).await.json().await.unwrap();
    assert_eq!(other["items"], json!([]), "another company sees none");
    assert_eq!(app.send(reqwest::Method::DELETE, "/v1/admin/webhooks/a", &admin, None).await.status(), 204);
    assert_problem(app.get_as("/v1/admin/webhooks/a", &admin).await, 404, "not_found").await;
    assert_problem(app.send(reqwest::Method::DELETE, "/v1/admin/webhooks/a", &admin, None).await, 404, "not_found")
        .await;
    assert_problem(app.get_as("/v1/admin/webhooks/a/deliveries", &admin).await, 404, "not_found").await;
    let res = app.get_as("/v1/admin/webhooks/b/deliveries?status=lost", &admin).await;
    assert_eq!(assert_problem(res, 422, "invalid_field").await["field"], "status");
    let res = app.get_as("/v1/admin/webhooks/b/deliveries?cursor=nope", &admin).await;
    assert_eq!(assert_problem(res, 422, "invalid_field").await["field"], "cursor");
    let empty: Value = app.get_as("/v1/admin/webhooks/b/deliveries", &admin).await.json().await.unwrap();
    assert_eq!(empty, json!({"items": [], "next_cursor": null}));
    assert_problem(app.get_as("/v1/admin/webhooks", &app.courier("acme", "c")).await, 403, "forbidden").await;
}

#[tokio::test]
async fn private_and_plain_http_targets_are_refused_unless_the_server_allows_them() {
    let app =
        support::app().set("webhooks.allow_http", false).set("webhooks.allow_private_targets", false).spawn().await;
    let admin = app.admin("acme");
    for url in [
        "http://erp.example.com/hook",
        "https://127.0.0.1/hook",
        "https://10.0.0.8/hook",
        "https://[::1]/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://localhost/hook",
    ] {
        let res =
            app.put("/v1/admin/webhooks/erp", &admin, json!({"url": url, "event_types": ["recording.bound"]})).await;
        let problem = assert_problem(res, 422, "invalid_field").await;
        assert_eq!(problem["field"], "url", "{url}");
        assert!(!problem["detail"].as_str().unwrap().is_empty());
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let receiver = Receiver::start().await;
    let (app, _sim) = company_with_sim().await;
    let secret = subscribe(&app, "acme", "erp", &receiver.url("erp"), &["callback.status_changed"]).await;
    // Elsewhere on the same receiver: nothing may arrive there.
    receiver.script("erp", &[secret.as_str()], json!([{"status": 307, "location": receiver.url("elsewhere")}])).await;
    tap(&app, "courier-1", json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1001"})).await;
    let failed = wait::eventually("the redirect to be recorded", || async {
        let page: Value = app
            .get_as("/v1/admin/webhooks/erp/deliveries?status=failed", &app.admin("acme"))
            .await
            .json()
            .await
            .unwrap();
        page["items"].as_array().unwrap().first().cloned().ok_or(page)
    })
    .await;
    assert!(failed["last_error"].as_str().unwrap().contains("redirect"), "{failed}");
    assert!(receiver.received("elsewhere").await.is_empty());
}

#[tokio::test]
async fn a_bound_recording_is_announced_with_its_call_and_order() {
    let receiver = Receiver::start().await;
    let ftp = crate::support::ftp::FtpServer::start().await;
    let root = ftp.root.clone();
    let sim = support::sim_with(|c| c.recordings_dir = Some(root)).await;
    let app = spawn_app().await;
    app.seed("acme", sim.addr().port()).await;
    app.configure_pbx("acme", sim.addr().port(), json!({"recordings": ftp.source(json!({}))})).await;
    let secret = subscribe(&app, "acme", "erp", &receiver.url("erp"), &["recording.bound"]).await;
    receiver.script("erp", &[secret.as_str()], json!([])).await;
    let id = tap(&app, "courier-1", json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1001"})).await;
    app.wait_terminal(&id, &app.courier("acme", "courier-1")).await;
    wait::eventually("the recording to be bound", || async {
        let res = app.send(reqwest::Method::POST, "/v1/admin/recordings/sync", &app.admin("acme"), None).await;
        let report: Value = res.json().await.unwrap();
        if report["bound"].as_u64() >= Some(1) {
            Ok(())
        } else {
            Err(report)
        }
    })
    .await;
    // Only what the endpoint subscribed to: no callback statuses, one recording.
    let got = received_at_least(&receiver, "erp", 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["verified_by"], 0);
    let body: Value = serde_json::from_str(got[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["type"], "recording.bound");
    let data = &body["data"];
    support::spec::spec().assert_valid(
        "recording.bound's data",
        &json!({"$ref": "#/components/schemas/RecordingBoundEvent"}),
        support::spec::Direction::Response,
        data,
    );
    assert_eq!((data["callback_id"].as_str(), data["order_id"].as_str()), (Some(id.as_str()), Some("A-1001")));
    assert_eq!(data["matched_by"], "uniqueid");
    assert_eq!(got[0]["id"], format!("msg_{}_1", data["id"].as_str().unwrap().replace('-', "")));
}
