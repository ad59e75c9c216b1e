//! The courier app's live view of a callback: `GET /v1/callbacks/{id}/events` as Server-Sent
//! Events (issue 14), against the simulator and real PostgreSQL.

use serde_json::json;

use crate::support::sse::{SseEvent, SseStream};
use crate::support::{self, assert_problem, spawn_app, TestApp, CLIENT_PHONE};

async fn company() -> (TestApp, dialback_pbx_sim::Simulator) {
    let sim = support::quick_sim().await;
    let app = spawn_app().await;
    app.seed("acme", sim.addr().port()).await;
    (app, sim)
}

async fn tap(app: &TestApp, token: &str) -> String {
    let res =
        app.post("/v1/callbacks", token, json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1001"})).await;
    assert_eq!(res.status(), 202);
    res.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

fn statuses(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.data["status"].as_str().unwrap()).collect()
}

/// Every event's id is its data's `sequence`, one after the other.
fn assert_numbered_in_turn(events: &[SseEvent], first: i32) {
    for (n, event) in events.iter().enumerate() {
        assert_eq!(event.id, first + n as i32, "{events:?}");
        assert_eq!(event.data["sequence"], event.id, "{event:?}");
    }
}

#[tokio::test]
async fn a_courier_follows_their_call_live_and_resumes_without_gaps() {
    let (app, _sim) = company().await;
    let courier = app.courier("acme", "courier-1");
    let id = tap(&app, &courier).await;
    let path = format!("/v1/callbacks/{id}/events");

    // From now on: the call as it is, then each status as it comes, until it ends.
    let live = SseStream::open(&app, &path, &courier, None).await.rest().await;
    assert_eq!(statuses(&live).last(), Some(&"completed"), "{live:?}");
    assert_numbered_in_turn(&live, live[0].id);
    let done = &live.last().unwrap().data;
    assert!(done["talk_seconds"].as_i64() >= Some(1), "{done}");
    assert_eq!(done["to"], "+7916***4567", "a courier's stream masks the client's number");
    assert_eq!(done["cdr"], serde_json::Value::Null);

    // From the start: every status the call passed through, in order.
    let all = SseStream::open(&app, &path, &courier, Some(0)).await.rest().await;
    assert_eq!(statuses(&all), ["queued", "ringing_courier", "ringing_client", "connected", "completed"]);
    assert_numbered_in_turn(&all, 1);
    // Resumed after the second: the rest, nothing twice.
    let rest = SseStream::open(&app, &path, &courier, Some(2)).await.rest().await;
    assert_eq!(statuses(&rest), ["ringing_client", "connected", "completed"]);
    assert_numbered_in_turn(&rest, 3);
    // An admin's stream shows the numbers.
    let admin = SseStream::open(&app, &path, &app.admin("acme"), Some(4)).await.rest().await;
    assert_eq!(admin[0].data["to"], CLIENT_PHONE);
    // A finished call's stream is its final state, then the end.
    let finished = SseStream::open(&app, &path, &courier, None).await.rest().await;
    assert_eq!(statuses(&finished), ["completed"]);
    assert_eq!(finished[0].id, 5);
}

#[tokio::test]
async fn a_ringing_call_canceled_ends_its_stream_with_canceled() {
    let (app, sim) = company().await;
    // A phone that rings until hung up (ring time 120 s): the call is in flight while we look.
    app.configure_pbx("acme", sim.addr().port(), json!({"originate_timeout_s": 120})).await;
    app.add_courier("acme", "slow", "+79001112239").await;
    app.add_order("acme", "S-1", "slow", &[CLIENT_PHONE]).await;
    let courier = app.courier("acme", "slow");
    let res =
        app.post("/v1/callbacks", &courier, json!({"target": "client", "to": CLIENT_PHONE, "order_id": "S-1"})).await;
    let id = res.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let mut stream = SseStream::open(&app, &format!("/v1/callbacks/{id}/events"), &courier, Some(0)).await;
    assert_eq!(stream.next().await.unwrap().data["status"], "queued");
    assert_eq!(stream.next().await.unwrap().data["status"], "ringing_courier");
    let res = app.send(reqwest::Method::DELETE, &format!("/v1/callbacks/{id}"), &courier, None).await;
    assert_eq!(res.status(), 200);
    let rest = stream.rest().await;
    assert_eq!(statuses(&rest), ["canceled"]);
    assert_eq!(rest[0].id, 3);
}

#[tokio::test]
async fn streams_are_the_callers_own_and_a_bad_last_event_id_is_a_clear_400() {
    let (app, _sim) = company().await;
    let id = tap(&app, &app.courier("acme", "courier-1")).await;
    let path = format!("/v1/callbacks/{id}/events");
    assert_problem(app.get_as(&path, &app.courier("acme", "courier-2")).await, 404, "not_found").await;
    assert_problem(app.get_as(&path, &app.admin("other")).await, 404, "not_found").await;
    let res = app
        .exec(app.http.get(app.url(&path)).bearer_auth(app.courier("acme", "courier-1")).header("Last-Event-ID", "x"))
        .await;
    assert_problem(res, 400, "invalid_last_event_id").await;
    let res = app.exec(app.http.get(app.url(&path))).await;
    assert_eq!(res.status(), 401);
}
