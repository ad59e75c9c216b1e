//! `GET /v1/admin/dashboard`: calls counted by how they went (placed through the API against the
//! simulator, and older ones written to the journal directly), couriers failing most, the PBX's
//! state, the guided set-up from the company's real state; roll-ups that count each call once.

use serde_json::{json, Value};
use time::{Duration, OffsetDateTime};

use crate::support::{self, assert_problem, quick_sim, spawn_app, TestApp};

async fn dashboard(app: &TestApp, tenant: &str) -> Value {
    let res = app.get_as("/v1/admin/dashboard?tz=Europe/Moscow", &app.admin(tenant)).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    res.json().await.unwrap()
}

fn outcome(tally: &Value, name: &str) -> u64 {
    tally["outcomes"][name].as_u64().unwrap_or_else(|| panic!("no {name} in {tally}"))
}

fn step_done(d: &Value, step: &str) -> bool {
    d["setup"].as_array().unwrap().iter().find(|s| s["step"] == step).unwrap()["done"].as_bool().unwrap()
}

/// A finished call written straight to the journal, created `ago` before now.
async fn journal_row(
    db: &tokio_postgres::Client,
    tenant: &str,
    courier: &str,
    ago: Duration,
    status: &str,
    leg: Option<&str>,
) {
    let at = OffsetDateTime::now_utc() - ago;
    let id =
        uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, at.unix_timestamp() as u64, at.nanosecond()));
    let reached = (status == "completed").then_some(at);
    let ended = (!["ringing_courier", "connected"].contains(&status)).then_some(at + Duration::minutes(1));
    db.execute(
        "INSERT INTO callbacks (id, tenant_id, courier_id, target, to_number, status, failed_leg, reason, created_at, \
         updated_at, connected_at, ended_at) VALUES ($1, $2, $3, 'client', '+79161234567', $4, $5, $6, $7, $7, $8, $9)",
        &[&id, &tenant, &courier, &status, &leg, &leg.map(|_| "no_answer"), &at, &reached, &ended],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn the_dashboard_counts_calls_by_outcome_and_the_setup_follows_the_real_state() {
    let app = spawn_app().await;
    let tenant = support::unique_tenant("dash");
    let admin = app.admin(&tenant);

    // Nothing set up: every step to do, nothing counted, 24 hours and 30 days all the same.
    let empty = dashboard(&app, &tenant).await;
    assert!(empty["setup"].as_array().unwrap().iter().all(|s| s["done"] == false), "{empty}");
    assert_eq!(empty["hours"].as_array().unwrap().len(), 24);
    assert_eq!(empty["days"].as_array().unwrap().len(), 30);
    assert_eq!(empty["last_30_days"]["calls"], 0);
    assert_eq!(empty["pbx"]["connection"], "not_configured");
    assert_eq!(empty["pbx"]["last_test"], Value::Null);
    // Each day starts at Moscow's midnight.
    let today = empty["days"][29]["start"].as_str().unwrap();
    assert!(today.ends_with("T21:00:00Z"), "{today}");

    // Three calls through the API: one completes, the courier's phone is busy, the client's is.
    let sim = quick_sim().await;
    app.configure_pbx(&tenant, sim.addr().port(), json!({})).await;
    assert!(step_done(&dashboard(&app, &tenant).await, "pbx"));
    app.three_finished_calls(&tenant).await;
    let d = dashboard(&app, &tenant).await;
    let day = &d["last_24_hours"];
    assert_eq!((day["calls"].as_u64(), day["reached"].as_u64()), (Some(3), Some(1)), "{d}");
    assert_eq!([outcome(day, "completed"), outcome(day, "client_failed"), outcome(day, "courier_failed")], [1, 1, 1]);
    assert_eq!(d["hours"][23]["calls"], 3, "the current hour is last: {d}");
    assert_eq!(d["days"][29]["calls"], 3);
    let failing = d["failing_couriers"].as_array().unwrap();
    assert_eq!(failing.len(), 2, "{d}");
    assert_eq!(failing[0]["courier_id"], "boris", "boris failed once in one call, anna once in two: {d}");
    assert_eq!(failing[1]["courier_id"], "anna");
    assert_eq!(failing[0]["reasons"], json!([{"failed_leg": "courier", "reason": "busy", "calls": 1}]));
    assert_eq!(d["pbx"]["connection"], "up");

    // A Test: the set-up's test and first-call steps follow its outcome.
    let res = app.post("/v1/admin/pbx/test", &admin, json!({"from": "+79001112233", "to": "+79161234567"})).await;
    assert_eq!(res.status(), 200);
    let d = dashboard(&app, &tenant).await;
    assert_eq!(d["pbx"]["last_test"]["ok"], true, "{d}");
    assert!(step_done(&d, "test") && step_done(&d, "first_call"), "{d}");
    assert!(!step_done(&d, "webhooks") && !step_done(&d, "return_calls"));
    assert_eq!(d["last_30_days"]["calls"], 3, "Test calls are not counted: {d}");
    // A failing Test keeps the first call done, and says which step failed.
    let res = app
        .post(
            "/v1/admin/pbx/test",
            &admin,
            json!({"from": "+79001112233", "to": "+79161234567",
            "settings": {"host": "127.0.0.1", "port": sim.addr().port(), "username": "dialback", "secret": "wrong",
                         "channel_template": "PJSIP/{NUMBER}@trunk", "context": "from-courier"}}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let d = dashboard(&app, &tenant).await;
    assert_eq!(d["pbx"]["last_test"]["failed_step"], "login", "{d}");
    assert!(!step_done(&d, "test") && step_done(&d, "first_call"), "{d}");
}

#[tokio::test]
async fn calls_are_rolled_up_once_and_a_call_still_going_holds_its_hour_back() {
    let app = spawn_app().await;
    let tenant = support::unique_tenant("dash");
    let db = support::connect(&app.database_url).await;
    journal_row(&db, &tenant, "anna", Duration::minutes(5), "completed", None).await;
    journal_row(&db, &tenant, "anna", Duration::days(3), "completed", None).await;
    journal_row(&db, &tenant, "anna", Duration::days(3) + Duration::hours(1), "failed", Some("client")).await;
    journal_row(&db, &tenant, "boris", Duration::hours(10), "failed", Some("courier")).await;
    journal_row(&db, &tenant, "boris", Duration::days(40), "completed", None).await;
    // A call still going since 5 hours ago holds the roll-up back until it ends.
    journal_row(&db, &tenant, "boris", Duration::hours(5), "connected", None).await;
    let first = dashboard(&app, &tenant).await;
    let month = &first["last_30_days"];
    assert_eq!(month["calls"], 5, "the 40-day-old call is outside: {first}");
    assert_eq!(outcome(month, "in_progress"), 1);
    assert_eq!(first["last_24_hours"]["calls"], 3);
    let held: OffsetDateTime = db
        .query_one("SELECT hours_until FROM dashboard_rollups WHERE tenant_id = $1", &[&tenant])
        .await
        .unwrap()
        .get(0);
    assert!(held <= OffsetDateTime::now_utc() - Duration::hours(5), "rolled up to {held}");
    db.execute(
        "UPDATE callbacks SET status = 'completed', connected_at = created_at, ended_at = now() \
         WHERE tenant_id = $1 AND status = 'connected'",
        &[&tenant],
    )
    .await
    .unwrap();
    let again = dashboard(&app, &tenant).await;
    let again_again = dashboard(&app, &tenant).await;
    for d in [&again, &again_again] {
        assert_eq!(d["last_30_days"]["calls"], 5, "{d}");
        assert_eq!(outcome(&d["last_30_days"], "in_progress"), 0, "{d}");
        assert_eq!(outcome(&d["last_30_days"], "completed"), 3, "{d}");
        assert_eq!(d["last_24_hours"]["reached"], 2, "{d}");
        assert_eq!(d["hours"], again["hours"]);
        assert_eq!(d["days"], again["days"]);
    }
    let rolled: OffsetDateTime = db
        .query_one("SELECT hours_until FROM dashboard_rollups WHERE tenant_id = $1", &[&tenant])
        .await
        .unwrap()
        .get(0);
    assert!(rolled > OffsetDateTime::now_utc() - Duration::hours(3), "rolled up to {rolled}");
    let boris = again["failing_couriers"].as_array().unwrap().iter().find(|c| c["courier_id"] == "boris").unwrap();
    assert_eq!((boris["failed"].as_u64(), boris["calls"].as_u64()), (Some(1), Some(2)), "{again}");
}

#[tokio::test]
async fn an_unknown_time_zone_is_refused() {
    let app = spawn_app().await;
    let res = app.get_as("/v1/admin/dashboard?tz=Mars/Olympus", &app.admin("acme")).await;
    assert_eq!(assert_problem(res, 400, "invalid_query").await["field"], "tz");
    let res = app.get_as("/v1/admin/dashboard?tz=Europe/Moscow", &app.courier("acme", "courier-1")).await;
    assert_problem(res, 403, "forbidden").await;
}
