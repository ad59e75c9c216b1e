//! The callback API end to end: real PostgreSQL, the PBX simulator, the HTTP API.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::support::wait::{until, within_patience};
use crate::support::{self, assert_problem, proxy::ChaosProxy, spawn_app, TestApp, CLIENT_PHONE, COURIER_PHONE};

/// A simulator with quick phones: ring 50 ms, talk 1 s, leg-2 Dial timeout 2 s.
async fn sim() -> dialback_pbx_sim::Simulator {
    support::quick_sim().await
}

async fn app_with_pbx() -> (TestApp, dialback_pbx_sim::Simulator) {
    let sim = sim().await;
    let app = spawn_app().await;
    app.seed("acme", sim.addr().port()).await;
    (app, sim)
}

/// The statuses a callback went through, oldest first, read straight from PostgreSQL.
async fn audit_trail(app: &TestApp, id: &str) -> Vec<String> {
    support::statuses(&support::connect(&app.database_url).await, id).await
}

pub(crate) async fn place(app: &TestApp, token: &str, body: serde_json::Value) -> reqwest::Response {
    app.post("/v1/callbacks", token, body).await
}

pub(crate) fn client_call(to: &str) -> serde_json::Value {
    json!({"target": "client", "to": to, "order_id": "A-1001"})
}

/// A courier whose phone (ending in 9) rings until the call is hung up (the ring time is the
/// longest allowed, 120 s): a call that is still in flight whenever the test looks. Returns the
/// courier's token; the order is S-1.
pub(crate) async fn slow_courier(app: &TestApp, pbx_port: u16) -> String {
    app.configure_pbx("acme", pbx_port, json!({"originate_timeout_s": 120})).await;
    app.add_courier("acme", "slow", "+79001112239").await;
    app.add_order("acme", "S-1", "slow", &[CLIENT_PHONE]).await;
    app.courier("acme", "slow")
}

pub(crate) fn slow_call() -> serde_json::Value {
    json!({"target": "client", "to": CLIENT_PHONE, "order_id": "S-1"})
}

#[tokio::test]
async fn a_courier_calls_a_client_and_the_call_completes_with_talk_seconds() {
    let (app, sim) = app_with_pbx().await;
    let courier = app.courier("acme", "courier-1");
    let res = place(&app, &courier, client_call("8 (916) 123-45-67")).await;
    assert_eq!(res.status(), 202);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ringing_courier");
    assert_eq!(body["to"], "+7916***4567", "couriers see masked numbers");
    let id = body["id"].as_str().unwrap().to_owned();

    let done = app.wait_terminal(&id, &courier).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done["talk_seconds"].as_i64().unwrap() >= 1, "{done}");
    assert!(done["connected_at"].is_string() && done["ended_at"].is_string());
    assert_eq!(done["hangup_cause"], 16);
    assert_eq!(sim.originates(), 1);
    // The audit trail has every step, even when a burst of events was written at once.
    assert_eq!(audit_trail(&app, &id).await, ["queued", "ringing_courier", "ringing_client", "connected", "completed"]);

    let admin = app.admin("acme");
    let seen: serde_json::Value = app.get_as(&format!("/v1/callbacks/{id}"), &admin).await.json().await.unwrap();
    assert_eq!(seen["to"], CLIENT_PHONE, "admins see full numbers");
    assert_eq!(seen["courier_number"], COURIER_PHONE);
}

/// (courier phone, client phone, expected failed leg, expected reason)
const OUTCOMES: &[(&str, &str, &str, &str)] = &[
    ("+79001112230", CLIENT_PHONE, "courier", "busy"),
    ("+79001112239", CLIENT_PHONE, "courier", "no_answer"),
    ("+79001112238", CLIENT_PHONE, "courier", "congestion"),
    ("+79001112236", CLIENT_PHONE, "courier", "rejected"),
    (COURIER_PHONE, "+79161234560", "client", "busy"),
    (COURIER_PHONE, "+79161234569", "client", "no_answer"),
    (COURIER_PHONE, "+79161234568", "client", "congestion"),
];

#[tokio::test]
async fn every_phone_outcome_on_each_leg_ends_with_the_right_leg_and_reason() {
    let (app, _sim) = app_with_pbx().await;
    check_outcomes(&app).await;
}

#[tokio::test]
async fn every_phone_outcome_is_right_through_local_channels_too() {
    let (app, sim) = app_with_pbx().await;
    app.configure_pbx("acme", sim.addr().port(), json!({"channel_template": "Local/{NUMBER}@phones"})).await;
    check_outcomes(&app).await;
}

/// Places one call per row of OUTCOMES (all at once) and checks how each ends.
pub(crate) async fn check_outcomes(app: &TestApp) {
    let mut calls = Vec::new();
    for (i, (courier_phone, client_phone, _, _)) in OUTCOMES.iter().enumerate() {
        let courier = format!("c{i}");
        app.add_courier("acme", &courier, courier_phone).await;
        app.add_order("acme", &format!("O-{i}"), &courier, &[client_phone]).await;
        let token = app.courier("acme", &courier);
        let res =
            place(app, &token, json!({"target": "client", "to": client_phone, "order_id": format!("O-{i}")})).await;
        assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
        let id = res.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        calls.push((id, token));
    }
    for ((id, token), (courier_phone, client_phone, leg, reason)) in calls.iter().zip(OUTCOMES) {
        let done = app.wait_terminal(id, token).await;
        assert_eq!(
            (done["status"].as_str(), done["failed_leg"].as_str(), done["reason"].as_str()),
            (Some("failed"), Some(*leg), Some(*reason)),
            "courier {courier_phone} client {client_phone}: {done}"
        );
        if *leg == "courier" && *reason != "no_answer" {
            assert_ne!(done["hangup_cause"], 0, "the real cause, not the Local ;1 half's 0: {done}");
        }
    }
}

/// Two companies on one Asterisk (a hosted PBX): each AMI session hears the other's calls too, and
/// each call still follows only its own company's events, whichever session tells them first.
#[tokio::test]
async fn companies_sharing_one_pbx_each_follow_their_own_calls() {
    let sim = sim().await;
    let app = spawn_app().await;
    let tenants = ["acme", "beta"];
    for tenant in tenants {
        app.configure_pbx(tenant, sim.addr().port(), json!({})).await;
    }
    let mut calls = Vec::new();
    for i in 0..10 {
        for tenant in tenants {
            let (courier, order, client) = (format!("c{i}"), format!("O-{i}"), format!("+7916555{i:03}7"));
            app.add_courier(tenant, &courier, &format!("+7900555{i:03}3")).await;
            app.add_order(tenant, &order, &courier, &[&client]).await;
            let token = app.courier(tenant, &courier);
            let res = place(&app, &token, json!({"target": "client", "to": client, "order_id": order})).await;
            assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
            let id = res.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
            calls.push((id, token));
        }
    }
    for (id, token) in &calls {
        let done = app.wait_terminal(id, token).await;
        assert_eq!(done["status"], "completed", "{done}");
        let trail = audit_trail(&app, id).await;
        assert_eq!(trail, ["queued", "ringing_courier", "ringing_client", "connected", "completed"], "{id}");
    }
}

#[tokio::test]
async fn calling_the_office_rings_the_office_extension() {
    let (app, _sim) = app_with_pbx().await;
    let courier = app.courier("acme", "courier-1");
    let res = place(&app, &courier, json!({"target": "office"})).await;
    assert_eq!(res.status(), 202);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["target"], "office");
    assert_eq!(body["to"], "101");
    let done = app.wait_terminal(body["id"].as_str().unwrap(), &courier).await;
    assert_eq!(done["status"], "completed", "{done}");
}

#[tokio::test]
async fn when_the_pbx_is_down_office_calls_get_the_city_number_as_fallback() {
    let app = spawn_app().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    app.seed("acme", closed).await;
    let courier = app.courier("acme", "courier-1");
    let body = assert_problem(place(&app, &courier, json!({"target": "office"})).await, 503, "pbx_unreachable").await;
    assert_eq!(body["fallback"]["phone"], "+74951234567");
    let id = body["callback_id"].as_str().unwrap();
    let logged: serde_json::Value = app.get_as(&format!("/v1/callbacks/{id}"), &courier).await.json().await.unwrap();
    assert_eq!((logged["status"].as_str(), logged["reason"].as_str()), (Some("failed"), Some("unreachable")));

    let body = assert_problem(place(&app, &courier, client_call(CLIENT_PHONE)).await, 503, "pbx_unreachable").await;
    assert!(body["fallback"].is_null(), "no direct dialling unless the company allows it");
    app.configure_pbx("acme", closed, json!({"allow_direct_dial": true})).await;
    let body = assert_problem(place(&app, &courier, client_call(CLIENT_PHONE)).await, 503, "pbx_unreachable").await;
    assert_eq!(body["fallback"]["phone"], CLIENT_PHONE);
}

#[tokio::test]
async fn a_wrong_ami_secret_is_a_502_naming_the_login() {
    let (app, _sim) = app_with_pbx().await;
    app.configure_pbx("acme", _sim.addr().port(), json!({"secret": "wrong"})).await;
    let courier = app.courier("acme", "courier-1");
    let body = assert_problem(place(&app, &courier, client_call(CLIENT_PHONE)).await, 502, "pbx_login_failed").await;
    // The courier is told what happened, not the PBX's configuration; the admins get the full story.
    let detail = body["detail"].as_str().unwrap();
    assert!(!detail.contains("manager.conf") && !detail.contains("127.0.0.1"), "{detail}");
    let seen_by_admin = app.callback(body["callback_id"].as_str().unwrap(), &app.admin("acme")).await;
    assert!(seen_by_admin["detail"].as_str().unwrap().contains("manager.conf"), "{seen_by_admin}");
    let seen_by_courier = app.callback(body["callback_id"].as_str().unwrap(), &courier).await;
    assert!(!seen_by_courier["detail"].as_str().unwrap().contains("manager.conf"), "{seen_by_courier}");
}

#[tokio::test]
async fn a_retried_tap_with_the_same_idempotency_key_rings_once() {
    let (app, sim) = app_with_pbx().await;
    let courier = app.courier("acme", "courier-1");
    let send = || {
        app.exec(
            app.http
                .post(app.url("/v1/callbacks"))
                .bearer_auth(&courier)
                .header("Idempotency-Key", "tap-1")
                .json(&client_call(CLIENT_PHONE)),
        )
    };
    let first = send().await;
    assert_eq!(first.status(), 202);
    let first: serde_json::Value = first.json().await.unwrap();
    let again = send().await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(first["id"], again["id"]);
    assert_eq!(sim.originates(), 1);

    let other = app
        .exec(
            app.http
                .post(app.url("/v1/callbacks"))
                .bearer_auth(&courier)
                .header("Idempotency-Key", "tap-1")
                .json(&json!({"target": "office"})),
        )
        .await;
    assert_problem(other, 422, "idempotency_key_reused").await;
}

#[tokio::test]
async fn twenty_concurrent_duplicates_originate_once() {
    let (app, sim) = app_with_pbx().await;
    let courier = app.courier("acme", "courier-1");
    let requests = (0..20).map(|_| {
        app.exec(
            app.http
                .post(app.url("/v1/callbacks"))
                .bearer_auth(&courier)
                .header("Idempotency-Key", "burst")
                .json(&client_call(CLIENT_PHONE)),
        )
    });
    let answers = futures_util::future::join_all(requests).await;
    let mut ids = std::collections::BTreeSet::new();
    for res in answers {
        assert_eq!(res.status(), 202);
        ids.insert(res.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "every duplicate got the same callback");
    assert_eq!(sim.originates(), 1);
}

/// Taps are decided on couriers and orders read earlier; an edit that bypasses this process (made
/// through another replica, or straight in the database) must still take effect at the next tap.
#[tokio::test]
async fn edits_made_elsewhere_to_couriers_and_orders_apply_at_the_next_tap() {
    let (app, sim) = app_with_pbx().await;
    let courier = app.courier("acme", "courier-1");
    let db = support::connect(&app.database_url).await;
    assert_eq!(place(&app, &courier, client_call(CLIENT_PHONE)).await.status(), 202);

    // The order is handed to another courier.
    db.execute("UPDATE orders SET courier_id = 'courier-2' WHERE id = 'A-1001'", &[]).await.unwrap();
    assert_problem(place(&app, &courier, client_call(CLIENT_PHONE)).await, 403, "destination_forbidden").await;
    // Back to this courier, but the client's number on it changed.
    db.execute("UPDATE orders SET courier_id = 'courier-1', phones = '{+79160000001}' WHERE id = 'A-1001'", &[])
        .await
        .unwrap();
    assert_problem(place(&app, &courier, client_call(CLIENT_PHONE)).await, 403, "destination_forbidden").await;
    assert_eq!(place(&app, &courier, client_call("+79160000001")).await.status(), 202);
    // The courier is deactivated.
    db.execute("UPDATE couriers SET active = false WHERE id = 'courier-1'", &[]).await.unwrap();
    assert_problem(place(&app, &courier, client_call("+79160000001")).await, 403, "courier_not_registered").await;
    // Active again, with a new phone: leg 1 rings the new one.
    db.execute("UPDATE couriers SET active = true, phone = '+79035550001' WHERE id = 'courier-1'", &[]).await.unwrap();
    assert_eq!(place(&app, &courier, client_call("+79160000001")).await.status(), 202);
    assert_eq!(sim.originates(), 3, "nothing refused reached the PBX");
    let last: serde_json::Value = app.get_as("/v1/callbacks?limit=1", &app.admin("acme")).await.json().await.unwrap();
    assert_eq!(last["items"][0]["courier_number"], "+79035550001");
}

#[tokio::test]
async fn the_destination_policy_refuses_and_logs_what_it_refuses() {
    let (app, sim) = app_with_pbx().await;
    let courier = app.courier("acme", "courier-1");
    let admin = app.admin("acme");
    // Not a number of the courier's order.
    let body =
        assert_problem(place(&app, &courier, client_call("+79169999999")).await, 403, "destination_forbidden").await;
    let refused: serde_json::Value = app
        .get_as(&format!("/v1/callbacks/{}", body["callback_id"].as_str().unwrap()), &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (refused["status"].as_str(), refused["reason"].as_str()),
        (Some("refused"), Some("destination_forbidden"))
    );
    // An order assigned to someone else.
    app.add_order("acme", "B-1", "courier-2", &[CLIENT_PHONE]).await;
    let body = json!({"target": "client", "to": CLIENT_PHONE, "order_id": "B-1"});
    assert_problem(place(&app, &courier, body).await, 403, "destination_forbidden").await;
    // No order at all under policy orders.
    assert_problem(
        place(&app, &courier, json!({"target": "client", "to": CLIENT_PHONE})).await,
        403,
        "destination_forbidden",
    )
    .await;
    // Invalid numbers are 422 and logged too.
    let body = assert_problem(place(&app, &courier, client_call("12345")).await, 422, "invalid_number").await;
    assert!(body["callback_id"].is_string());

    // Under the allow-list policy: premium, toll-free and foreign numbers are still refused.
    app.configure_pbx("acme", sim.addr().port(), json!({"destination_policy": "allowlist"})).await;
    for (to, why) in [("8 800 555 35 35", "toll-free"), ("+7 809 123 45 67", "premium"), ("+49 30 1234567", "DE")] {
        let body = assert_problem(
            place(&app, &courier, json!({"target": "client", "to": to})).await,
            403,
            "destination_forbidden",
        )
        .await;
        assert!(body["detail"].as_str().unwrap().contains(why), "{to}: {body}");
    }
    let res = place(&app, &courier, json!({"target": "client", "to": "+7 916 765 43 21"})).await;
    assert_eq!(res.status(), 202, "an ordinary mobile passes the allow-list");
    assert_eq!(sim.originates(), 1, "nothing refused reached the PBX");
}

#[tokio::test]
async fn an_unregistered_or_inactive_courier_cannot_place_calls() {
    let (app, sim) = app_with_pbx().await;
    let stranger = app.courier("acme", "nobody");
    assert_problem(place(&app, &stranger, client_call(CLIENT_PHONE)).await, 403, "courier_not_registered").await;
    let res = app
        .put("/v1/admin/couriers/courier-1", &app.admin("acme"), json!({"phone": COURIER_PHONE, "active": false}))
        .await;
    assert_eq!(res.status(), 200);
    let courier = app.courier("acme", "courier-1");
    assert_problem(place(&app, &courier, client_call(CLIENT_PHONE)).await, 403, "courier_not_registered").await;
    assert_eq!(sim.originates(), 0);
}

#[tokio::test]
async fn the_main_system_reads_lists_and_removes_couriers_and_orders() {
    let (app, _sim) = app_with_pbx().await;
    let admin = app.admin("acme");
    app.add_courier("acme", "courier-2", "8 900 111-22-44").await;
    let listed: serde_json::Value = app.get_as("/v1/admin/couriers", &admin).await.json().await.unwrap();
    let ids: Vec<&str> = listed["items"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["courier-1", "courier-2"]);
    let one: serde_json::Value = app.get_as("/v1/admin/couriers/courier-2", &admin).await.json().await.unwrap();
    assert_eq!((one["phone"].as_str(), one["active"].as_bool()), (Some("+79001112244"), Some(true)), "{one}");
    let order: serde_json::Value = app.get_as("/v1/admin/orders/A-1001", &admin).await.json().await.unwrap();
    assert_eq!((order["courier_id"].as_str(), order["phones"][0].as_str()), (Some("courier-1"), Some(CLIENT_PHONE)));

    assert_eq!(app.send(Method::DELETE, "/v1/admin/couriers/courier-2", &admin, None).await.status(), 204);
    assert_problem(app.get_as("/v1/admin/couriers/courier-2", &admin).await, 404, "not_found").await;
    assert_eq!(app.send(Method::DELETE, "/v1/admin/orders/A-1001", &admin, None).await.status(), 204);
    assert_problem(app.get_as("/v1/admin/orders/A-1001", &admin).await, 404, "not_found").await;
    assert_problem(app.send(Method::DELETE, "/v1/admin/orders/A-1001", &admin, None).await, 404, "not_found").await;
    // A tap on the removed order is refused: its numbers are no longer the courier's to call.
    let courier = app.courier("acme", "courier-1");
    assert_problem(place(&app, &courier, client_call(CLIENT_PHONE)).await, 403, "destination_forbidden").await;
}

#[tokio::test]
async fn crlf_smuggled_into_any_field_never_reaches_the_wire() {
    let (app, sim) = app_with_pbx().await;
    let admin = app.admin("acme");
    let courier = app.courier("acme", "courier-1");
    let injected = "79161234567\r\nExten: 79161234560";
    assert_problem(place(&app, &courier, client_call(injected)).await, 422, "invalid_number").await;
    let body = json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1001\r\n\r\nAction: Originate"});
    assert_problem(place(&app, &courier, body).await, 422, "invalid_field").await;
    for (field, value) in [
        ("context", "from-courier\r\nApplication: System"),
        ("channel_template", "PJSIP/{NUMBER}@trunk\r\nData: id"),
        ("client_prefix", "9\n"),
        ("caller_id", "x\u{0}y"),
        ("username", "dialback\r\nSecret: x"),
        ("secret", "s\r\nAction: Logoff"),
        ("office_extension", "101\r\n"),
    ] {
        let mut settings = json!({"host": "127.0.0.1", "port": 5038, "username": "u", "secret": "s",
            "channel_template": "PJSIP/{NUMBER}@trunk", "context": "from-courier"});
        settings[field] = json!(value);
        let problem = assert_problem(app.put("/v1/admin/pbx", &admin, settings).await, 422, "invalid_field").await;
        assert_eq!(problem["field"], field, "{problem}");
    }
    let res = app.put("/v1/admin/couriers/c%0D%0Ax", &admin, json!({"phone": COURIER_PHONE})).await;
    assert_problem(res, 422, "invalid_field").await;
    let res = app.put("/v1/admin/couriers/c-2", &admin, json!({"phone": "+7900\r\n1112233"})).await;
    assert_problem(res, 422, "invalid_field").await;
    assert_eq!(sim.originates(), 0);
}

#[tokio::test]
async fn jwt_attacks_are_refused_with_401_and_www_authenticate() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let app = spawn_app().await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = |aud: &str, exp: u64, nbf: u64| json!({"sub": "courier-1", "tenant": "acme", "role": "courier", "aud": aud, "exp": exp, "nbf": nbf, "iat": now});
    let sign = |c: serde_json::Value, secret: &str| {
        encode(&Header::default(), &c, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    };
    let b64 = |v: serde_json::Value| {
        use std::fmt::Write;
        let bytes = serde_json::to_vec(&v).unwrap();
        // base64url without padding, written out to avoid another dependency.
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                let _ = out.write_char(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    };
    let good = claims("dialback", now + 600, now);
    let alg_none = format!("{}.{}.", b64(json!({"alg": "none", "typ": "JWT"})), b64(good.clone()));
    let mut no_tenant = good.clone();
    no_tenant.as_object_mut().unwrap().remove("tenant");
    let cases = [
        ("alg none", alg_none),
        ("wrong secret", sign(good.clone(), "not-the-secret-at-all-0123456789")),
        ("expired", sign(claims("dialback", now - 3600, now - 7200), support::JWT_SECRET)),
        ("not yet valid", sign(claims("dialback", now + 7200, now + 3600), support::JWT_SECRET)),
        ("wrong audience", sign(claims("someone-else", now + 600, now), support::JWT_SECRET)),
        ("no tenant", sign(no_tenant, support::JWT_SECRET)),
        ("garbage", "not.a.jwt".into()),
        ("RS256 header with an HMAC signature", {
            let t = sign(good.clone(), support::JWT_SECRET);
            let rest = t.split_once('.').unwrap().1.to_owned();
            format!("{}.{rest}", b64(json!({"alg": "RS256", "typ": "JWT"})))
        }),
    ];
    for (what, token) in cases {
        let res = place(&app, &token, client_call(CLIENT_PHONE)).await;
        assert!(res.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"), "{what}");
        assert_problem(res, 401, "unauthorized").await;
    }
    let res = app.exec(app.http.post(app.url("/v1/callbacks")).json(&client_call(CLIENT_PHONE))).await;
    assert_problem(res, 401, "unauthorized").await;
    // Right token, wrong role.
    assert_problem(place(&app, &app.admin("acme"), client_call(CLIENT_PHONE)).await, 403, "forbidden").await;
    assert_problem(app.get_as("/v1/admin/pbx", &app.courier("acme", "courier-1")).await, 403, "forbidden").await;
}

#[tokio::test]
async fn repeated_bad_tokens_from_one_address_are_rate_limited() {
    let app = support::app().set("rate.auth_failures_per_minute", 3).spawn().await;
    let mut last = 0;
    for _ in 0..5 {
        last = app.get_as("/v1/admin/pbx", "bad").await.status().as_u16();
    }
    assert_eq!(last, 429);
}

#[tokio::test]
async fn a_courier_over_the_rate_limit_gets_429_with_retry_after_and_retries_never_count() {
    let sim = sim().await;
    let app = support::app().set("rate.courier_per_minute", 2).spawn().await;
    app.seed("acme", sim.addr().port()).await;
    let courier = app.courier("acme", "courier-1");
    let tap = |key: &'static str| {
        app.exec(
            app.http
                .post(app.url("/v1/callbacks"))
                .bearer_auth(&courier)
                .header("Idempotency-Key", key)
                .json(&client_call(CLIENT_PHONE)),
        )
    };
    let first = tap("tap-1").await;
    assert_eq!(first.status(), 202);
    let first: serde_json::Value = first.json().await.unwrap();
    // A flaky network retries the first tap three times: replayed, and not counted.
    for _ in 0..3 {
        let again = tap("tap-1").await;
        assert_eq!((again.status().as_u16(), again.headers()["idempotent-replayed"].to_str().unwrap()), (202, "true"));
        assert_eq!(again.json::<serde_json::Value>().await.unwrap()["id"], first["id"]);
    }
    assert_eq!(tap("tap-2").await.status(), 202, "the second tap is within the limit of 2");

    let res = tap("tap-3").await;
    assert!(res.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    let body = assert_problem(res, 429, "rate_limited").await;
    // Logged as a refused attempt, never sent to the PBX.
    let refused: serde_json::Value = app
        .get_as(&format!("/v1/callbacks/{}", body["callback_id"].as_str().unwrap()), &app.admin("acme"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((refused["status"].as_str(), refused["reason"].as_str()), (Some("refused"), Some("rate_limited")));
    assert_eq!(sim.originates(), 2);
    // Over the limit, a retry of an answered tap is still answered; the refused one's key was
    // given back, so its retry is refused again (not replayed) until the limit allows it.
    assert_eq!(tap("tap-1").await.status(), 202);
    assert_problem(tap("tap-3").await, 429, "rate_limited").await;
}

#[tokio::test]
async fn another_tenants_callback_is_a_404() {
    let (app, _sim) = app_with_pbx().await;
    let courier = app.courier("acme", "courier-1");
    let res = place(&app, &courier, client_call(CLIENT_PHONE)).await;
    let id = res.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    for token in [app.admin("globex"), app.courier("globex", "courier-1"), app.courier("acme", "courier-2")] {
        assert_problem(app.get_as(&format!("/v1/callbacks/{id}"), &token).await, 404, "not_found").await;
        assert_problem(app.send(Method::DELETE, &format!("/v1/callbacks/{id}"), &token, None).await, 404, "not_found")
            .await;
    }
    assert_problem(app.get_as("/v1/admin/couriers/courier-1", &app.admin("globex")).await, 404, "not_found").await;
}

#[tokio::test]
async fn a_ringing_callback_can_be_canceled() {
    let (app, sim) = app_with_pbx().await;
    let courier = slow_courier(&app, sim.addr().port()).await;
    let res = place(&app, &courier, slow_call()).await;
    let id = res.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let res = app.send(Method::DELETE, &format!("/v1/callbacks/{id}"), &courier, None).await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!((body["status"].as_str(), body["reason"].as_str()), (Some("canceled"), Some("canceled")));
    // The PBX hangs the courier's phone up; its Hangup (cause and all) reaches the call's row, and
    // the call stays canceled.
    let after = crate::support::wait::eventually("the courier leg's hangup to be recorded", || async {
        let body = app.callback(&id, &courier).await;
        if body["hangup_cause"].is_number() {
            Ok(body)
        } else {
            Err(body)
        }
    })
    .await;
    assert_eq!(after["status"], "canceled", "late events do not move a canceled call: {after}");
    until("the simulator's call to end", || sim.calls_in_progress() == 0).await;
    assert_problem(
        app.send(Method::DELETE, &format!("/v1/callbacks/{id}"), &courier, None).await,
        409,
        "not_cancelable",
    )
    .await;
}

#[tokio::test]
async fn a_pbx_unreachable_for_longer_than_lost_after_leaves_the_call_unknown_with_an_explanation() {
    let sim = sim().await;
    let proxy = ChaosProxy::start(sim.addr().to_string()).await;
    // Connecting may take an hour here: a tap that waited for it would hang the test, so an answer
    // at all shows that taps fail at once while the PBX is known to be down.
    let app = support::app().set("ami.connect_timeout_ms", 3_600_000).set("ami.lost_after_s", 2).spawn().await;
    app.seed("acme", proxy.port).await;
    let courier = slow_courier(&app, proxy.port).await;
    let res = place(&app, &courier, slow_call()).await;
    assert_eq!(res.status(), 202);
    let id = res.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    proxy.cut();
    let done = app.wait_status(&id, &app.admin("acme"), "unknown").await;
    assert!(done["detail"].as_str().unwrap().contains("could not be reached for 2 s"), "{done}");
    let seen_by_courier = app.callback(&id, &courier).await;
    assert!(seen_by_courier["detail"].as_str().unwrap().contains("outcome was not observed"), "{seen_by_courier}");
    // While the PBX is away, new taps fail fast with the fallback instead of hanging.
    let res = within_patience(
        "a tap while the PBX is away",
        place(&app, &app.courier("acme", "courier-1"), json!({"target": "office"})),
    )
    .await;
    let body = assert_problem(res, 503, "pbx_unreachable").await;
    assert_eq!(body["fallback"]["phone"], "+74951234567", "{body}");
    // And once it is back, calls work again without a restart.
    proxy.restore();
    let courier1 = app.courier("acme", "courier-1");
    crate::support::wait::eventually("calls to work again", || async {
        match place(&app, &courier1, json!({"target": "office"})).await.status().as_u16() {
            202 => Ok(()),
            other => Err(other),
        }
    })
    .await;
}

/// A connected call whose AMI link drops while Asterisk keeps the call up; `end_while_down`:
/// the call is hung up on the PBX before the link is back. Returns the call as it ended.
async fn call_across_a_link_drop(end_while_down: bool) -> serde_json::Value {
    // The courier talks until the call is hung up on the PBX.
    let sim = support::sim_with(|c| c.talk = Duration::from_secs(3600)).await;
    let proxy = ChaosProxy::start(sim.addr().to_string()).await;
    let app = spawn_app().await;
    app.seed("acme", proxy.port).await;
    let observer = support::AmiObserver::start(sim.addr().port()).await;
    let courier = app.courier("acme", "courier-1");
    let res = place(&app, &courier, client_call(CLIENT_PHONE)).await;
    let id = res.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    app.wait_status(&id, &courier, "connected").await;
    let logins = sim.logins();
    proxy.cut();
    if end_while_down {
        observer.hangup(&id).await;
        until("the call to end on the PBX", || sim.calls_in_progress() == 0).await;
    }
    proxy.restore();
    until("dialback to log in again", || sim.logins() > logins).await;
    if !end_while_down {
        observer.hangup(&id).await;
    }
    app.wait_terminal(&id, &app.admin("acme")).await
}

#[tokio::test]
async fn a_call_still_up_when_the_ami_link_comes_back_is_followed_to_its_real_end() {
    let done = call_across_a_link_drop(false).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done["detail"].is_null(), "{done}");
}

#[tokio::test]
async fn a_call_that_ended_while_the_ami_link_was_down_is_unknown_with_the_reason() {
    let done = call_across_a_link_drop(true).await;
    assert_eq!(done["status"], "unknown", "{done}");
    assert!(done["detail"].as_str().unwrap().contains("while dialback's AMI link to the PBX was down"), "{done}");
}

#[tokio::test]
async fn admins_list_callbacks_newest_first_with_a_cursor() {
    let (app, _sim) = app_with_pbx().await;
    let courier = app.courier("acme", "courier-1");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let res = place(&app, &courier, client_call(CLIENT_PHONE)).await;
        ids.push(res.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    let admin = app.admin("acme");
    let page: serde_json::Value =
        app.get_as("/v1/callbacks?limit=2&order_id=A-1001", &admin).await.json().await.unwrap();
    let first: Vec<&str> = page["items"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(first, [ids[2].as_str(), ids[1].as_str()]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let page: serde_json::Value =
        app.get_as(&format!("/v1/callbacks?limit=2&cursor={cursor}"), &admin).await.json().await.unwrap();
    assert_eq!(page["items"][0]["id"], ids[0].as_str());
    assert!(page["next_cursor"].is_null());
    assert_problem(app.get_as("/v1/callbacks", &courier).await, 403, "forbidden").await;
    assert_problem(app.get_as("/v1/callbacks?status=nope", &admin).await, 422, "invalid_field").await;
}

#[tokio::test]
async fn settings_are_returned_without_the_secret_and_stored_encrypted() {
    let app = spawn_app().await;
    app.configure_pbx("acme", 5038, json!({"secret": "hunter2-secret"})).await;
    let res = app.get_as("/v1/admin/pbx", &app.admin("acme")).await;
    let text = res.text().await.unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["secret_set"], true);
    let db = support::connect(&app.database_url).await;
    let row = db.query_one("SELECT settings::text, secret_enc FROM pbx_settings", &[]).await.unwrap();
    let (settings, secret): (String, String) = (row.get(0), row.get(1));
    assert!(!settings.contains("hunter2") && !secret.contains("hunter2"));
    // Saving again without a secret keeps the stored one.
    let mut again = body.clone();
    for k in ["secret_set", "updated_at", "dialplan_check"] {
        again.as_object_mut().unwrap().remove(k);
    }
    assert_eq!(app.put("/v1/admin/pbx", &app.admin("acme"), again.clone()).await.status(), 200);
    // ...but not when it would now go to another server.
    again["host"] = json!("pbx.example.org");
    let res = app.put("/v1/admin/pbx", &app.admin("acme"), again).await;
    assert_eq!(assert_problem(res, 422, "invalid_field").await["field"], "secret");
}

#[tokio::test]
async fn bad_bodies_get_problem_json() {
    let app = spawn_app().await;
    let admin = app.admin("acme");
    let url = app.url("/v1/admin/couriers/c-1");
    let res =
        app.exec(app.http.put(&url).bearer_auth(&admin).header("content-type", "application/json").body("{nope")).await;
    assert_problem(res, 400, "malformed_json").await;
    let res = app.exec(app.http.put(&url).bearer_auth(&admin).header("content-type", "text/plain").body("{}")).await;
    assert_problem(res, 415, "unsupported_media_type").await;
    let res = app.put("/v1/admin/couriers/c-1", &admin, json!({"phone": COURIER_PHONE, "extra": 1})).await;
    assert_problem(res, 422, "invalid_body").await;
    // Every body is an object: an array is refused even where each field has a default, and
    // nothing is saved.
    for path in ["/v1/admin/orders/A-1", "/v1/admin/couriers/c-1", "/v1/admin/pbx", "/v1/admin/return-calls"] {
        let res = app.put(path, &admin, json!([])).await;
        let body = assert_problem(res, 422, "invalid_body").await;
        assert!(body["detail"].as_str().unwrap().contains("expected a JSON object"), "{path}: {body}");
    }
    assert_problem(app.get_as("/v1/admin/orders/A-1", &admin).await, 404, "not_found").await;
    let big = "x".repeat(70 * 1024);
    let res = app.put("/v1/admin/couriers/c-1", &admin, json!({"phone": COURIER_PHONE, "name": big})).await;
    assert_problem(res, 413, "payload_too_large").await;
    let res = app
        .put(
            "/v1/admin/pbx",
            &admin,
            json!({"host": "h", "username": "u", "secret": "s",
        "channel_template": "nothing", "context": "c"}),
        )
        .await;
    let body = assert_problem(res, 422, "invalid_field").await;
    assert_eq!(body["field"], "channel_template");
}

#[tokio::test]
async fn the_cap_on_in_flight_originates_per_pbx_answers_503_pbx_busy() {
    let sim = sim().await;
    let app = support::app().set("ami.max_inflight_originates", 1).spawn().await;
    app.seed("acme", sim.addr().port()).await;
    let slow = slow_courier(&app, sim.addr().port()).await;
    let res = place(&app, &slow, slow_call()).await;
    assert_eq!(res.status(), 202);
    let res = place(&app, &app.courier("acme", "courier-1"), client_call(CLIENT_PHONE)).await;
    assert!(res.headers().contains_key("retry-after"));
    assert_problem(res, 503, "pbx_busy").await;
    assert_eq!(sim.originates(), 1);
}

/// An app, a connection to its database, and `n` attempts of courier-1 written straight to the
/// store, `queued`.
async fn queued_attempts(n: usize) -> (TestApp, deadpool_postgres::Client, Vec<uuid::Uuid>) {
    use dialback::domain::callback::Status;
    let app = spawn_app().await;
    let pool = dialback::store::pool(&app.database_url.clone().into(), &Default::default()).unwrap();
    let db = pool.get().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = uuid::Uuid::now_v7();
        support::insert_attempt(&db, &support::attempt_row(id, Status::Queued)).await;
        ids.push(id);
    }
    (app, db, ids)
}

/// A step with an event that says only the status it moved to.
fn step(
    from: dialback::domain::callback::Status,
    to: dialback::domain::callback::Status,
    cause: &str,
) -> dialback::store::callbacks::Step {
    let event = serde_json::json!({ "status": to.as_str() }).to_string();
    dialback::store::callbacks::Step { from, to, cause: cause.into(), event }
}

/// The tracker writes a burst's changes for many calls together, in one statement; a call someone
/// else moved meanwhile (a cancel) is left alone, and only the calls that moved get events.
#[tokio::test]
async fn transitions_sent_together_move_only_the_calls_still_as_they_were_read() {
    use dialback::domain::callback::{CallState, Status};
    use dialback::store::callbacks::{self, Moved, Transition};
    let (app, db, ids) = queued_attempts(3).await;
    // Written, not yet sent: what the API shows of an attempt in that instant.
    let queued_call = app.callback(&ids[0].to_string(), &app.admin("acme")).await;
    assert_eq!(queued_call["status"], "queued", "{queued_call}");
    let queued = CallState::new(Status::Queued);
    let ringing = CallState::new(Status::RingingCourier);
    let mut connected = CallState::new(Status::Connected);
    connected.connected_at = Some(time::OffsetDateTime::now_utc());
    // The second call was canceled meanwhile: it is no longer `queued`.
    let canceled = CallState::new(Status::Canceled);
    let one = |from, to| vec![step(from, to, "test")];
    let moved = callbacks::transition(
        &db,
        &Transition {
            id: ids[1],
            sequence: 1,
            from: &queued,
            to: &canceled,
            steps: &one(Status::Queued, Status::Canceled),
            detail: None,
            action_id: None,
        },
    )
    .await
    .unwrap();
    assert!(matches!(moved, Moved::Yes { .. }));
    let first_steps =
        [step(Status::Queued, Status::RingingCourier, "a"), step(Status::RingingCourier, Status::Connected, "b")];
    let batch = [
        Transition {
            id: ids[0],
            sequence: 1,
            from: &queued,
            to: &connected,
            steps: &first_steps,
            detail: None,
            action_id: Some("A1"),
        },
        Transition {
            id: ids[1],
            sequence: 1,
            from: &queued,
            to: &ringing,
            steps: &one(Status::Queued, Status::RingingCourier),
            detail: None,
            action_id: Some("A2"),
        },
        Transition {
            id: ids[2],
            sequence: 1,
            from: &queued,
            to: &ringing,
            steps: &one(Status::Queued, Status::RingingCourier),
            detail: None,
            action_id: Some("A3"),
        },
    ];
    let moved = callbacks::transitions(&db, &batch).await.unwrap();
    let moved: Vec<bool> = moved.iter().map(|m| matches!(m, Moved::Yes { .. })).collect();
    assert_eq!(moved, [true, false, true]);
    let status = |i: usize| {
        let db = &db;
        let id = ids[i];
        async move { callbacks::get_any(db, id).await.unwrap().unwrap() }
    };
    let first = status(0).await;
    assert_eq!((first.state.status, first.action_id.as_deref()), (Status::Connected, Some("A1")));
    assert!(first.state.connected_at.is_some());
    assert_eq!(status(1).await.state.status, Status::Canceled, "the cancel stands");
    assert_eq!(status(2).await.state.status, Status::RingingCourier);
    let trail = |i: usize| {
        let db = &db;
        let id = ids[i];
        async move { support::statuses(db, &id.to_string()).await }
    };
    assert_eq!(trail(0).await, ["queued", "ringing_courier", "connected"]);
    assert_eq!(trail(1).await, ["queued", "canceled"]);
    assert_eq!(trail(2).await, ["queued", "ringing_courier"]);
}

/// A new attempt of courier-1 to call the client, as a tap writes it: decided on `courier_phone`
/// and the stored order A-1001 when given, claiming `key` when given.
fn new_attempt(
    key: Option<&str>,
    decided_on: Option<(&str, &dialback::domain::registry::Order)>,
) -> dialback::callbacks::writer::NewAttempt {
    use dialback::domain::callback::Status;
    let row = support::attempt_row(uuid::Uuid::now_v7(), Status::Queued);
    dialback::callbacks::writer::NewAttempt {
        event: json!({ "status": "queued" }).to_string(),
        claim: key.map(|k| (k.to_owned(), format!("hash of {k}"))),
        decided_on: decided_on.map(|(phone, order)| (phone.to_owned(), Some(order.clone()))),
        owner: None,
        row,
    }
}

/// Attempts written in one statement each get their own answer: one decided on stale facts is
/// not written, one whose key is held is not written, the others are; two claiming one key make
/// the statement fail with nothing written.
#[tokio::test]
async fn attempts_written_together_each_get_their_own_answer() {
    use dialback::domain::company::TenantId;
    use dialback::store::callbacks::{self, Inserted, NewCallback};
    use dialback::store::idempotency::IdempotencyClaim;
    let app = spawn_app().await;
    let pool = dialback::store::pool(&app.database_url.clone().into(), &Default::default()).unwrap();
    let db = pool.get().await.unwrap();
    app.add_courier("acme", "courier-1", COURIER_PHONE).await;
    app.add_order("acme", "A-1001", "courier-1", &[CLIENT_PHONE]).await;
    let order = dialback::store::admin::get_order(&db, &TenantId::stored("acme"), "A-1001").await.unwrap().unwrap();
    let earlier = new_attempt(Some("held"), None);
    let claim = IdempotencyClaim { key: "held", request_hash: "hash of held" };
    let new =
        NewCallback { row: &earlier.row, event: &earlier.event, claim: Some(&claim), decided_on: None, owner: None };
    assert!(matches!(callbacks::insert(&db, &new).await.unwrap(), Inserted::Written { .. }));

    let fresh = new_attempt(Some("fresh"), Some((COURIER_PHONE, &order)));
    let stale = new_attempt(Some("stale"), Some(("+79990000000", &order)));
    let held = new_attempt(Some("held"), None);
    let keyless = new_attempt(None, None);
    let attempts = [&fresh, &stale, &held, &keyless];
    let claims: Vec<Option<IdempotencyClaim<'_>>> = attempts
        .iter()
        .map(|a| a.claim.as_ref().map(|(key, request_hash)| IdempotencyClaim { key, request_hash }))
        .collect();
    let news: Vec<NewCallback<'_>> = attempts
        .iter()
        .zip(&claims)
        .map(|(a, claim)| NewCallback {
            row: &a.row,
            event: &a.event,
            claim: claim.as_ref(),
            decided_on: a
                .decided_on
                .as_ref()
                .map(|(courier_phone, order)| callbacks::DecidedOn { courier_phone, order: order.as_ref() }),
            owner: None,
        })
        .collect();
    let answers = callbacks::inserts(&db, &news).await.unwrap();
    assert_eq!(
        answers,
        [Inserted::Written { deliveries: 0 }, Inserted::Stale, Inserted::KeyTaken, Inserted::Written { deliveries: 0 }]
    );
    let stored = |a: &dialback::callbacks::writer::NewAttempt| {
        let (db, id) = (&db, a.row.id);
        async move { callbacks::get_any(db, id).await.unwrap().is_some() }
    };
    assert_eq!(
        [stored(&fresh).await, stored(&stale).await, stored(&held).await, stored(&keyless).await],
        [true, false, false, true]
    );
    assert_eq!(support::statuses(&db, &fresh.row.id.to_string()).await, ["queued"]);
    let key_names: Option<uuid::Uuid> =
        db.query_one("SELECT callback_id FROM idempotency_keys WHERE key = 'fresh'", &[]).await.unwrap().get(0);
    assert_eq!(key_names, Some(fresh.row.id));

    let (one, other) = (new_attempt(Some("twice"), None), new_attempt(Some("twice"), None));
    let claim = IdempotencyClaim { key: "twice", request_hash: "hash of twice" };
    let news = [&one, &other].map(|a| NewCallback {
        row: &a.row,
        event: &a.event,
        claim: Some(&claim),
        decided_on: None,
        owner: None,
    });
    assert!(callbacks::inserts(&db, &news).await.is_err(), "one statement cannot claim a key twice");
    assert_eq!([stored(&one).await, stored(&other).await], [false, false]);
}

/// Two statements claiming the same keys, each listing them in the opposite order, run at once: a
/// statement claims its keys in one order (`store::idempotency::ClaimSql::order`), so one waits for
/// the other and then finds every key taken, where claiming them as listed deadlocks (PostgreSQL
/// then fails one of the statements: its taps answered 503 for nothing).
#[tokio::test]
async fn statements_claiming_the_same_keys_in_opposite_orders_do_not_deadlock() {
    use dialback::callbacks::writer::NewAttempt;
    use dialback::store::callbacks::{self, Inserted, NewCallback};
    use dialback::store::idempotency::IdempotencyClaim;
    fn claims(attempts: &[NewAttempt]) -> Vec<IdempotencyClaim<'_>> {
        let claims = attempts.iter().filter_map(|a| a.claim.as_ref());
        claims.map(|(key, request_hash)| IdempotencyClaim { key, request_hash }).collect()
    }
    fn news<'a>(attempts: &'a [NewAttempt], claims: &'a [IdempotencyClaim<'a>]) -> Vec<NewCallback<'a>> {
        let new = |(a, claim): (&'a NewAttempt, &'a IdempotencyClaim<'a>)| NewCallback {
            row: &a.row,
            event: &a.event,
            claim: Some(claim),
            decided_on: None,
            owner: None,
        };
        attempts.iter().zip(claims).map(new).collect()
    }
    let app = spawn_app().await;
    app.add_courier("acme", "courier-1", COURIER_PHONE).await;
    let pool = dialback::store::pool(&app.database_url.clone().into(), &Default::default()).unwrap();
    let (one, other) = (pool.get().await.unwrap(), pool.get().await.unwrap());
    let mut locker = support::connect(&app.database_url).await;
    let watcher = support::connect(&app.database_url).await;
    for round in 0..5 {
        let keys: Vec<String> = (0..200).map(|k| format!("round-{round}-key-{k}")).collect();
        let forward: Vec<NewAttempt> = keys.iter().map(|k| new_attempt(Some(k), None)).collect();
        let backward: Vec<NewAttempt> = keys.iter().rev().map(|k| new_attempt(Some(k), None)).collect();
        let (forward_claims, backward_claims) = (claims(&forward), claims(&backward));
        let (forward_news, backward_news) = (news(&forward, &forward_claims), news(&backward, &backward_claims));

        // Both statements wait behind a lock on `callbacks`, then start together.
        let lock = locker.transaction().await.unwrap();
        lock.batch_execute("LOCK TABLE callbacks IN EXCLUSIVE MODE").await.unwrap();
        let mut both = std::pin::pin!(futures_util::future::join(
            callbacks::inserts(&one, &forward_news),
            callbacks::inserts(&other, &backward_news)
        ));
        loop {
            let waiting: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'
                       AND query LIKE 'WITH i AS (SELECT * FROM unnest%'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if waiting >= 2 {
                break;
            }
            tokio::select! {
                biased;
                _ = &mut both => panic!("a statement ran while the table was locked"),
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
        lock.rollback().await.unwrap();
        let (forward_answers, backward_answers) = both.await;
        let (forward_answers, backward_answers) = (forward_answers.unwrap(), backward_answers.unwrap());
        // Whichever claimed the first key claimed them all.
        let written = |answers: &[Inserted]| answers.iter().all(|a| matches!(a, Inserted::Written { .. }));
        let taken = |answers: &[Inserted]| answers.iter().all(|a| *a == Inserted::KeyTaken);
        assert!(
            (written(&forward_answers) && taken(&backward_answers))
                || (taken(&forward_answers) && written(&backward_answers)),
            "round {round}: {forward_answers:?} {backward_answers:?}"
        );
    }
}

/// Hands `attempts` to `writer` while `callbacks` is locked, so no statement can finish before
/// every one is queued; their ids and answers once the lock is gone.
async fn write_while_locked(
    writer: &dialback::callbacks::writer::AttemptWriter,
    database_url: &str,
    attempts: Vec<dialback::callbacks::writer::NewAttempt>,
) -> (Vec<uuid::Uuid>, Vec<dialback::store::callbacks::Inserted>) {
    let mut db = support::connect(database_url).await;
    let lock = db.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE callbacks IN EXCLUSIVE MODE").await.unwrap();
    let ids: Vec<uuid::Uuid> = attempts.iter().map(|a| a.row.id).collect();
    let mut all = std::pin::pin!(futures_util::future::join_all(attempts.into_iter().map(|a| writer.write(a))));
    // One poll hands every attempt to the writer.
    tokio::select! {
        biased;
        _ = &mut all => panic!("an attempt was written while the table was locked"),
        () = std::future::ready(()) => {}
    }
    lock.rollback().await.unwrap();
    (ids, all.await.into_iter().map(Result::unwrap).collect())
}

/// Taps that come while attempts are being written wait and are written together, in one
/// transaction; duplicates of one key among them still write one attempt.
#[tokio::test]
async fn taps_that_come_while_attempts_are_written_are_written_together() {
    use dialback::callbacks::writer::AttemptWriter;
    use dialback::store::callbacks::Inserted;
    let app = spawn_app().await;
    let pool = dialback::store::pool(&app.database_url.clone().into(), &Default::default()).unwrap();
    let writer = AttemptWriter::start(pool.clone());
    let (ids, answers) = write_while_locked(
        &writer,
        &app.database_url,
        (0..20).map(|n| new_attempt(Some(&format!("tap-{n}")), None)).collect(),
    )
    .await;
    assert!(answers.iter().all(|a| matches!(a, Inserted::Written { .. })), "{answers:?}");
    let db = support::connect(&app.database_url).await;
    let transactions: i64 = db
        .query_one("SELECT count(DISTINCT xmin::text) FROM callbacks WHERE id = ANY($1)", &[&ids])
        .await
        .unwrap()
        .get(0);
    assert!(transactions < 20, "20 attempts in {transactions} transactions");

    let mut attempts: Vec<_> = (0..5).map(|_| new_attempt(Some("burst"), None)).collect();
    attempts.extend((0..5).map(|n| new_attempt(Some(&format!("other-{n}")), None)));
    let (_, answers) = write_while_locked(&writer, &app.database_url, attempts).await;
    let written = |answers: &[Inserted]| answers.iter().filter(|a| matches!(a, Inserted::Written { .. })).count();
    assert_eq!(written(&answers[..5]), 1, "{answers:?}");
    assert!(answers[..5].iter().filter(|a| **a == Inserted::KeyTaken).count() == 4, "{answers:?}");
    assert_eq!(written(&answers[5..]), 5, "{answers:?}");
}

/// With the database away, every attempt waiting to be written is told so (a tap answers 503 and
/// may be retried), whether it went alone or with others.
#[tokio::test]
async fn attempts_written_while_the_database_is_away_are_each_told_it_is_unavailable() {
    use dialback::callbacks::writer::AttemptWriter;
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = secrecy::SecretString::from(format!("postgres://postgres@127.0.0.1:{nowhere}/dialback"));
    let writer = AttemptWriter::start(dialback::store::pool(&url, &Default::default()).unwrap());
    let writes = (0..10).map(|n| writer.write(new_attempt(Some(&format!("away-{n}")), None)));
    for answer in futures_util::future::join_all(writes).await {
        let error = answer.expect_err("nothing can be written");
        assert!(error.is_unavailable(), "{error}");
    }
}

/// A call's status changes while it is in flight touch no index: PostgreSQL writes them in place
/// on the row's page (HOT updates), so they cost one row version each, not one per index. The
/// change that ends the call sets `ended_at`, which the in-flight indexes read: that one is not.
#[tokio::test]
async fn status_changes_in_flight_are_written_in_place() {
    use dialback::domain::callback::{CallState, Status};
    use dialback::store::callbacks::{self, Moved, Transition};
    let (_app, db, ids) = queued_attempts(1).await;
    let mut states = vec![CallState::new(Status::Queued)];
    for status in [Status::RingingCourier, Status::RingingClient, Status::Connected, Status::Completed] {
        let mut next = CallState::new(status);
        next.ended_at = status.is_terminal().then(time::OffsetDateTime::now_utc);
        states.push(next);
    }
    for (sequence, pair) in states.windows(2).enumerate() {
        let steps = [step(pair[0].status, pair[1].status, "test")];
        let transition = Transition {
            id: ids[0],
            sequence: sequence as i32 + 1,
            from: &pair[0],
            to: &pair[1],
            steps: &steps,
            detail: None,
            action_id: None,
        };
        assert!(matches!(callbacks::transition(&db, &transition).await.unwrap(), Moved::Yes { .. }));
    }
    // The writing connection reports its counts when it next goes idle (this database is the
    // test's own, so they are this test's alone).
    db.batch_execute("SELECT pg_stat_force_next_flush()").await.unwrap();
    let counts = "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'callbacks'";
    let (updates, hot) = support::wait::eventually("the update counts of callbacks", || async {
        let row = db.query_one(counts, &[]).await.unwrap();
        let (updates, hot): (i64, i64) = (row.get(0), row.get(1));
        if updates == 4 {
            Ok((updates, hot))
        } else {
            Err((updates, hot))
        }
    })
    .await;
    assert_eq!((updates, hot), (4, 3), "the three moves in flight are HOT; the end is not");
}

/// A batch is one statement: when one change cannot be written none is, so the tracker can write
/// them one by one.
#[tokio::test]
async fn a_batch_of_transitions_is_written_whole_or_not_at_all() {
    use dialback::domain::callback::{CallState, Status};
    use dialback::store::callbacks::{self, Moved, Transition};
    let (_app, db, ids) = queued_attempts(40).await;
    let (queued, ringing) = (CallState::new(Status::Queued), CallState::new(Status::RingingCourier));
    let good = [step(Status::Queued, Status::RingingCourier, "originate queued")];
    // PostgreSQL refuses a NUL in text: the last statement of the batch fails.
    let bad = [dialback::store::callbacks::Step {
        event: "nul\0byte".into(),
        ..step(Status::Queued, Status::RingingCourier, "")
    }];
    let batch = |last_bad: bool| -> Vec<Transition<'_>> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| Transition {
                id: *id,
                sequence: 1,
                from: &queued,
                to: &ringing,
                steps: if last_bad && i == ids.len() - 1 { &bad } else { &good },
                detail: None,
                action_id: None,
            })
            .collect()
    };
    let status = |id| {
        let db = &db;
        async move { callbacks::get_any(db, id).await.unwrap().unwrap().state.status }
    };
    assert!(callbacks::transitions(&db, &batch(true)).await.is_err());
    for id in &ids {
        assert_eq!(status(*id).await, Status::Queued, "nothing of a failed batch is written");
    }
    let moved = callbacks::transitions(&db, &batch(false)).await.unwrap();
    assert!(moved.iter().all(|m| matches!(m, Moved::Yes { .. })), "{moved:?}");
    for id in &ids {
        assert_eq!(status(*id).await, Status::RingingCourier);
    }
}

/// On a durable database (every commit waits for its WAL) the tracker writes each batch of
/// changes in one commit. Calls ringing together while PostgreSQL is away have their events kept
/// and written together when it is back (24 calls on 16 shards: some batches hold several), and
/// each still ends with its own outcome and audit trail.
#[tokio::test]
async fn with_synchronous_commit_on_calls_written_together_each_end_with_their_own_outcome() {
    let sim = support::sim_with(|c| c.ring = Duration::from_millis(300)).await;
    let url = support::fresh_database().await;
    let db = support::connect(&url).await;
    let name = url.rsplit('/').next().unwrap();
    db.batch_execute(&format!("ALTER DATABASE {name} SET synchronous_commit = on")).await.unwrap();
    let admin_url = std::env::var("DIALBACK_TEST_DATABASE_URL").unwrap();
    let host = admin_url.split('@').nth(1).unwrap().split('/').next().unwrap().to_owned();
    let proxy = ChaosProxy::start(host.clone()).await;
    let via = admin_url.replace(&host, &format!("127.0.0.1:{}", proxy.port));
    let app = support::app().existing_database(url).database_via(via).spawn().await;
    app.configure_pbx("acme", sim.addr().port(), json!({})).await;
    let mut observed = support::AmiObserver::start(sim.addr().port()).await;
    const CALLS: usize = 24;
    // Every other client is busy (a phone number ending in 0).
    let client_phone = |i: usize| if i.is_multiple_of(2) { CLIENT_PHONE } else { "+79161234560" };
    for i in 0..CALLS {
        app.add_courier("acme", &format!("c{i}"), &format!("+7900{i:06}3")).await;
        app.add_order("acme", &format!("O-{i}"), &format!("c{i}"), &[client_phone(i)]).await;
    }
    let placed = futures_util::future::join_all((0..CALLS).map(|i| {
        let (app, token) = (&app, app.courier("acme", &format!("c{i}")));
        async move {
            let res =
                place(app, &token, json!({"target": "client", "to": client_phone(i), "order_id": format!("O-{i}")}))
                    .await;
            assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
            (res.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned(), token)
        }
    }))
    .await;
    proxy.cut();
    // Every call rings, talks (or fails) and ends while nothing can be written.
    let ids: Vec<&str> = placed.iter().map(|(id, _)| id.as_str()).collect();
    observed.wait_calls_ended(&ids).await;
    proxy.restore();
    for (i, (id, token)) in placed.iter().enumerate() {
        let done = app.wait_terminal(id, token).await;
        if i % 2 == 0 {
            assert_eq!(done["status"], "completed", "{done}");
            assert_eq!(
                audit_trail(&app, id).await,
                ["queued", "ringing_courier", "ringing_client", "connected", "completed"]
            );
        } else {
            assert_eq!((done["status"].as_str(), done["reason"].as_str()), (Some("failed"), Some("busy")), "{done}");
        }
    }
}

/// PostgreSQL goes away while a call rings, is answered and ends: nothing can be written, and
/// when it comes back the call is recorded as it happened (times from the events, not the retry).
#[tokio::test]
async fn a_call_that_ends_while_the_database_is_away_is_recorded_when_it_comes_back() {
    let sim = support::sim_with(|c| c.ring = Duration::from_millis(300)).await;
    let admin_url = std::env::var("DIALBACK_TEST_DATABASE_URL").unwrap();
    let host = admin_url.split('@').nth(1).unwrap().split('/').next().unwrap().to_owned();
    let proxy = ChaosProxy::start(host.clone()).await;
    let app = support::app().database_via(admin_url.replace(&host, &format!("127.0.0.1:{}", proxy.port))).spawn().await;
    app.seed("acme", sim.addr().port()).await;
    let mut observed = support::AmiObserver::start(sim.addr().port()).await;
    let courier = app.courier("acme", "courier-1");
    let res = place(&app, &courier, client_call(CLIENT_PHONE)).await;
    assert_eq!(res.status(), 202);
    let id = res.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    proxy.cut();
    // It rings, talks and ends while nothing can be written.
    observed.wait_calls_ended(&[id.as_str()]).await;
    let restored_at = time::OffsetDateTime::now_utc();
    proxy.restore();
    let done = app.wait_terminal(&id, &app.admin("acme")).await;
    assert_eq!(done["status"], "completed", "{done}");
    // The times are the events', not the moment they could be written: a call that talked for
    // a second (the simulator's talk time) is not recorded as ending after the database was back.
    let at = |key: &str| {
        time::OffsetDateTime::parse(done[key].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    assert!(done["talk_seconds"].as_i64().unwrap() >= 1, "{done}");
    assert!(at("connected_at") < at("ended_at") && at("ended_at") < restored_at, "{done}");
    assert_eq!(audit_trail(&app, &id).await, ["queued", "ringing_courier", "ringing_client", "connected", "completed"]);
}
