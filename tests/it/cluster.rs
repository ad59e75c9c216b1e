//! Several dialback processes (the real binary) on one database with the PBX simulator: any of
//! them answers any request, and the calls of one that dies, restarts or stops are followed to
//! their real end by another (src/callbacks/takeover.rs).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::callbacks::place;
use crate::support::process::DialbackProcess;
use crate::support::sse::SseStream;
use crate::support::wait::{eventually, until};
use crate::support::{self, AmiObserver, TestApp};

/// No limit stands between the tests and the calls they place.
const UNLIMITED: [(&str, &str); 2] = [("RATE__TENANT_PER_SECOND", "100000"), ("RATE__COURIER_PER_MINUTE", "100000")];

/// Adds courier `c<i>` (a phone that answers) with order `O-<i>` to a client that answers.
async fn add_courier(app: &TestApp, tenant: &str, i: usize) -> (String, Value) {
    let (courier, order, client) = (format!("c{i}"), format!("O-{i}"), format!("+7916444{i:03}7"));
    app.add_courier(tenant, &courier, &format!("+7900444{i:03}3")).await;
    app.add_order(tenant, &order, &courier, &[&client]).await;
    (app.courier(tenant, &courier), json!({"target": "client", "to": client, "order_id": order}))
}

/// Waits until each process has counted all of them alive (they beat every second).
async fn count_each_other(apps: &[&TestApp]) {
    let want = format!("dialback_processes_alive {}", apps.len());
    for app in apps {
        eventually("each process to count the others alive", || async {
            let metrics = app.get_as("/metrics", "").await.text().await.unwrap();
            match metrics.lines().any(|l| l == want) {
                true => Ok(()),
                false => Err(metrics.lines().filter(|l| l.contains("processes_alive")).collect::<Vec<_>>().join(";")),
            }
        })
        .await;
    }
}

async fn tap(app: &TestApp, token: &str, body: Value) -> String {
    let res = place(app, token, body).await;
    assert_eq!(res.status(), 202);
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

/// The statuses a call passed through, oldest first, and its events' numbers.
async fn trail(database: &str, id: &str) -> (Vec<String>, Vec<i32>) {
    let db = support::connect(database).await;
    let statuses = support::statuses(&db, id).await;
    let sequences = db
        .query("SELECT sequence FROM events WHERE subject_id = $1::text::uuid ORDER BY sequence", &[&id])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    (statuses, sequences)
}

/// A simulator whose calls talk until hung up, and two processes on a fresh database, the first
/// with company `acme`'s PBX settings saved.
async fn two_processes_and_calls_that_talk_on(
) -> (dialback_pbx_sim::Simulator, String, DialbackProcess, DialbackProcess) {
    let sim = support::sim_with(|c| c.talk = Duration::from_secs(3600)).await;
    let (database, one, two) = two_processes_with_acme_on(&sim).await;
    (sim, database, one, two)
}

/// One process on a fresh database with company `acme`'s PBX saved, whose calls talk until hung up.
async fn one_process_and_calls_that_talk_on() -> (dialback_pbx_sim::Simulator, String, DialbackProcess) {
    let sim = support::sim_with(|c| c.talk = Duration::from_secs(3600)).await;
    let database = support::fresh_database().await;
    let process = DialbackProcess::start(&database, &UNLIMITED).await;
    process.app.configure_pbx("acme", sim.addr().port(), json!({})).await;
    (sim, database, process)
}

/// Two processes on a fresh database, the first with company `acme`'s PBX (`sim`) saved.
async fn two_processes_with_acme_on(sim: &dialback_pbx_sim::Simulator) -> (String, DialbackProcess, DialbackProcess) {
    let database = support::fresh_database().await;
    let one = DialbackProcess::start(&database, &UNLIMITED).await;
    let two = DialbackProcess::start(&database, &UNLIMITED).await;
    one.app.configure_pbx("acme", sim.addr().port(), json!({})).await;
    (database, one, two)
}

/// Waits until a process other than `placed_by` follows call `id`.
async fn taken_from(database: &str, id: &str, placed_by: uuid::Uuid) {
    eventually("another process to take the call", || async {
        match owner(database, id).await {
            Some(now) if now != placed_by => Ok(()),
            other => Err(other),
        }
    })
    .await;
}

/// Whether `process` is in the list of processes.
async fn listed(database: &str, process: uuid::Uuid) -> bool {
    let db = support::connect(database).await;
    db.query_one("SELECT EXISTS (SELECT FROM dialback_processes WHERE id = $1)", &[&process]).await.unwrap().get(0)
}

/// Hangs the calls up on the PBX (at `sim_port`) and waits until `app` shows each `completed`.
async fn hang_up_and_see_completed(sim_port: u16, app: &TestApp, ids: &[&str]) {
    let observer = AmiObserver::start(sim_port).await;
    for id in ids {
        observer.hangup(id).await;
        let done = app.wait_terminal(id, &app.admin("acme")).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
}

/// The process that follows a call now (None: released, nobody yet).
async fn owner(database: &str, id: &str) -> Option<uuid::Uuid> {
    owner_in(database, "callbacks", id).await
}

/// The process that follows call `id` of `table` now.
async fn owner_in(database: &str, table: &str, id: &str) -> Option<uuid::Uuid> {
    let db = support::connect(database).await;
    let sql = format!("SELECT owner FROM {table} WHERE id = $1::text::uuid");
    db.query_one(&sql, &[&id]).await.unwrap().get(0)
}

/// Calls placed at a steady pace through three processes, one killed (SIGKILL) halfway while its
/// calls ring and talk (longer than it takes to find it dead, so they are taken over mid-call, the
/// two survivors competing for them): every accepted call ends with its real outcome, none
/// `unknown`, and no status is written twice.
#[tokio::test]
async fn a_killed_process_loses_no_call_at_a_steady_rate() {
    let sim = support::sim_with(|c| c.talk = Duration::from_secs(8)).await;
    let database = support::fresh_database().await;
    let mut processes = Vec::new();
    for _ in 0..3 {
        processes.push(DialbackProcess::start(&database, &UNLIMITED).await);
    }
    let admin_app = processes[2].app.clone();
    admin_app.configure_pbx("acme", sim.addr().port(), json!({})).await;
    let mut couriers = Vec::new();
    for i in 0..45 {
        couriers.push(add_courier(&admin_app, "acme", i).await);
    }
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    let mut accepted = Vec::new();
    for (i, (token, body)) in couriers.into_iter().enumerate() {
        pace.tick().await;
        if i == 21 {
            processes.remove(0).kill().await;
        }
        // In turn, as a load balancer does, over the processes alive.
        let app = processes[i % processes.len()].app.clone();
        accepted.push(tap(&app, &token, body).await);
    }
    let admin = admin_app.admin("acme");
    for id in &accepted {
        let done = admin_app.wait_terminal(id, &admin).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert!(done["talk_seconds"].as_i64().is_some(), "{done}");
        let (statuses, sequences) = trail(&database, id).await;
        assert_eq!(statuses, ["queued", "ringing_courier", "ringing_client", "connected", "completed"], "{id}");
        assert_eq!(sequences, [1, 2, 3, 4, 5], "{id}: each event once");
    }
}

/// Two calls of company `acme` (its PBX `sim`, settings saved) placed through `first`, the only
/// process, talking; `first` is killed, one call ends while no process runs, and a new process
/// starts on `database` (with no AMI session to the PBX until it opens one). Returns the new
/// process, the call still up and its courier's token, and the call that ended unseen.
async fn the_only_process_killed_while_a_call_ends(
    sim: &dialback_pbx_sim::Simulator,
    database: &str,
    first: DialbackProcess,
) -> (DialbackProcess, String, String, String) {
    let (mut ids, mut tokens) = (Vec::new(), Vec::new());
    for i in 0..2 {
        let (token, body) = add_courier(&first.app, "acme", i).await;
        let id = tap(&first.app, &token, body).await;
        first.app.wait_status(&id, &token, "connected").await;
        ids.push(id);
        tokens.push(token);
    }
    let observer = AmiObserver::start(sim.addr().port()).await;
    first.kill().await;
    observer.hangup(&ids[1]).await;
    until("the call to end on the PBX", || sim.calls_in_progress() == 1).await;
    let logins = sim.logins();
    let second = DialbackProcess::start(database, &UNLIMITED).await;
    until("the new process to log in to the company's PBX", || sim.logins() > logins).await;
    let ended_unseen = ids.pop().unwrap();
    (second, ids.pop().unwrap(), tokens.swap_remove(0), ended_unseen)
}

/// The new process follows the call still up, as it was taken over, to its real end.
async fn followed_to_its_end(sim: &dialback_pbx_sim::Simulator, database: &str, app: &TestApp, id: &str, token: &str) {
    let admin = app.admin("acme");
    eventually("the call still up to be taken over", || async {
        match owner(database, id).await {
            Some(_) if app.callback(id, &admin).await["status"] == "connected" => Ok(()),
            other => Err(other),
        }
    })
    .await;
    AmiObserver::start(sim.addr().port()).await.hangup(id).await;
    let done = app.wait_terminal(id, token).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done["talk_seconds"].as_i64().is_some() && done["detail"].is_null(), "{done}");
}

/// A company whose calls all went through one of two processes, killed (SIGKILL) at once while
/// they talk: half of them end before the other process could take them over, the rest after.
/// With the PBX running dialback's dialplan every call ends with its real outcome and talk time,
/// none `unknown`: heard by the other process if it was already standing by for the PBX, else
/// read from the record the PBX kept.
#[tokio::test]
async fn a_killed_process_that_alone_heard_a_company_loses_no_outcome() {
    let database = support::fresh_database().await;
    let one = DialbackProcess::start(&database, &UNLIMITED).await;
    let two = DialbackProcess::start(&database, &UNLIMITED).await;
    let (sim, _) = support::sim_running_the_downloaded_dialplan(&one.app, "acme", json!({}), |c| {
        c.talk = Duration::from_secs(3600)
    })
    .await;
    let mut calls = Vec::new();
    for i in 0..10 {
        let (token, body) = add_courier(&one.app, "acme", i).await;
        let id = tap(&one.app, &token, body).await;
        one.app.wait_status(&id, &token, "connected").await;
        calls.push(id);
    }
    let placed_by = owner(&database, &calls[0]).await.expect("owned by the process that placed it");
    let observer = AmiObserver::start(sim.addr().port()).await;
    one.kill().await;
    let (unheard, later) = calls.split_at(5);
    for id in unheard {
        observer.hangup(id).await;
    }
    for id in later {
        taken_from(&database, id, placed_by).await;
        observer.hangup(id).await;
    }
    let admin = two.app.admin("acme");
    for id in &calls {
        let done = two.app.wait_terminal(id, &admin).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert!(done["talk_seconds"].as_i64().is_some(), "{done}");
    }
}

/// The other process stands by for the PBX of a company whose calls one process alone follows: it
/// logs in without any request of that company reaching it, hears the calls, and when that
/// process is killed the calls that end before the takeover end with their real outcome, heard
/// (no record on the PBX needed).
#[tokio::test]
async fn a_standby_process_hears_the_calls_another_alone_follows() {
    let (sim, database, one, two) = two_processes_and_calls_that_talk_on().await;
    count_each_other(&[&one.app, &two.app]).await;
    let mut calls = Vec::new();
    for i in 0..3 {
        let (token, body) = add_courier(&one.app, "acme", i).await;
        let id = tap(&one.app, &token, body).await;
        one.app.wait_status(&id, &token, "connected").await;
        calls.push(id);
    }
    eventually("the other process to stand by for the PBX", || async {
        match counter(&two.app, "dialback_standby_sessions").await {
            1 => Ok(()),
            n => Err(n),
        }
    })
    .await;
    until("its session to log in", || sim.logins() >= 2).await;
    let placed_by = owner(&database, &calls[0]).await.expect("owned by the process that placed it");
    let observer = AmiObserver::start(sim.addr().port()).await;
    one.kill().await;
    for id in &calls {
        observer.hangup(id).await;
    }
    let admin = two.app.admin("acme");
    for id in &calls {
        let done = two.app.wait_terminal(id, &admin).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert!(done["talk_seconds"].as_i64().is_some() && done["detail"].is_null(), "{done}");
        assert_ne!(owner(&database, id).await, Some(placed_by));
    }
}

/// A company whose PBX runs dialback's dialplan, and whose calls all went through the only
/// process, killed: a call that ended before a new process started gets its real outcome from the
/// record the PBX kept (AstDB), talk time included; the call still up is followed to its end.
#[tokio::test]
async fn a_call_that_ended_while_no_process_ran_gets_its_outcome_from_the_pbx() {
    let database = support::fresh_database().await;
    let first = DialbackProcess::start(&database, &UNLIMITED).await;
    let (sim, _) = support::sim_running_the_downloaded_dialplan(&first.app, "acme", json!({}), |c| {
        c.talk = Duration::from_secs(3600)
    })
    .await;
    let (second, still_up, token, ended_unseen) =
        the_only_process_killed_while_a_call_ends(&sim, &database, first).await;
    let done = second.app.wait_terminal(&ended_unseen, &second.app.admin("acme")).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done["talk_seconds"].as_i64().is_some_and(|s| s >= 0), "{done}");
    assert!(done["detail"].as_str().unwrap().contains("the one the PBX recorded"), "{done}");
    followed_to_its_end(&sim, &database, &second.app, &still_up, &token).await;
}

/// The courier's phone rings, unanswered, while the only process is killed: leg 1 rang through the
/// courier's context of dialback's dialplan (the PBX runs it, as its check found), whose handler
/// kept how it ended; the process started next reads that record, and the call ends `failed` on
/// the courier's leg with `no_answer`, not `unknown`.
#[tokio::test]
async fn a_courier_leg_that_failed_while_no_process_ran_gets_its_outcome_from_the_pbx() {
    let database = support::fresh_database().await;
    let first = DialbackProcess::start(&database, &UNLIMITED).await;
    let (sim, _) =
        support::sim_running_the_downloaded_dialplan(&first.app, "acme", json!({"originate_timeout_s": 5}), |_| {})
            .await;
    let admin = first.app.admin("acme");
    eventually("the PBX's dialplan to be checked current", || async {
        let check =
            first.app.get_as("/v1/admin/pbx", &admin).await.json::<Value>().await.unwrap()["dialplan_check"].clone();
        if check["result"] == "current" {
            Ok(())
        } else {
            Err(check)
        }
    })
    .await;
    // A courier whose phone never answers (the simulator's numbers ending in 9).
    first.app.add_courier("acme", "c9", "+79004440009").await;
    first.app.add_order("acme", "O-9", "c9", &["+79164440007"]).await;
    let token = first.app.courier("acme", "c9");
    let id = tap(&first.app, &token, json!({"target": "client", "to": "+79164440007", "order_id": "O-9"})).await;
    first.app.wait_status(&id, &token, "ringing_courier").await;
    first.kill().await;
    until("the courier's phone to stop ringing on the PBX", || sim.calls_in_progress() == 0).await;
    let logins = sim.logins();
    let second = DialbackProcess::start(&database, &UNLIMITED).await;
    until("the new process to log in to the company's PBX", || sim.logins() > logins).await;
    let done = second.app.wait_terminal(&id, &second.app.admin("acme")).await;
    assert_eq!(
        (&done["status"], &done["failed_leg"], &done["reason"]),
        (&json!("failed"), &json!("courier"), &json!("no_answer")),
        "{done}"
    );
    assert!(done["detail"].as_str().unwrap().contains("the one the PBX recorded"), "{done}");
}

/// The same on a PBX that does not run dialback's dialplan (it keeps no record): the call that
/// ended unseen is `unknown`, saying why nobody heard it and why there is no record.
#[tokio::test]
async fn without_the_pbx_record_a_call_that_ended_unseen_is_unknown_and_says_why() {
    let (sim, database, first) = one_process_and_calls_that_talk_on().await;
    let (second, still_up, token, ended_unseen) =
        the_only_process_killed_while_a_call_ends(&sim, &database, first).await;
    let unseen = second.app.wait_terminal(&ended_unseen, &second.app.admin("acme")).await;
    assert_eq!(unseen["status"], "unknown", "{unseen}");
    let detail = unseen["detail"].as_str().unwrap();
    assert!(detail.contains("the dialback process following it") && detail.contains("was not answering"), "{detail}");
    assert!(detail.contains("its channels were gone when dialback asked the PBX"), "{detail}");
    assert!(detail.contains("the PBX kept no record of it"), "{detail}");
    followed_to_its_end(&sim, &database, &second.app, &still_up, &token).await;
}

/// A process that starts while a company is calling logs in to its PBX before it takes the first
/// request: a tap never waits behind the login (nor leaves with `pbx_busy` when a burst of them
/// does).
#[tokio::test]
async fn a_starting_process_logs_in_to_the_pbx_of_a_company_calling_before_it_listens() {
    let sim = support::quick_sim().await;
    let database = support::fresh_database().await;
    let first = DialbackProcess::start(&database, &UNLIMITED).await;
    first.app.configure_pbx("acme", sim.addr().port(), json!({})).await;
    let (token, body) = add_courier(&first.app, "acme", 0).await;
    let id = tap(&first.app, &token, body).await;
    first.app.wait_terminal(&id, &token).await;
    let logins = sim.logins();
    let second = DialbackProcess::start(&database, &UNLIMITED).await;
    assert!(sim.logins() > logins, "logged in before it listened");
    let (token, body) = add_courier(&second.app, "acme", 1).await;
    let id = tap(&second.app, &token, body).await;
    assert_eq!(second.app.wait_terminal(&id, &token).await["status"], "completed");
}

/// SIGTERM: the stopping process hands its calls to the other at once and leaves the list of
/// processes; the other follows them to their end.
#[tokio::test]
async fn a_stopping_process_hands_its_calls_over() {
    let (sim, database, one, two) = two_processes_and_calls_that_talk_on().await;
    let (token, body) = add_courier(&one.app, "acme", 0).await;
    // The other process has a session to the PBX too (it placed a call of its own).
    let (other_token, other_body) = add_courier(&one.app, "acme", 1).await;
    let other = tap(&two.app, &other_token, other_body).await;
    let id = tap(&one.app, &token, body).await;
    one.app.wait_status(&id, &token, "connected").await;
    let placed_by = owner(&database, &id).await.expect("owned by the process that placed it");
    assert!(one.terminate().await.success());
    assert!(!listed(&database, placed_by).await, "the stopped process left the list");
    taken_from(&database, &id, placed_by).await;
    hang_up_and_see_completed(sim.addr().port(), &two.app, &[&id, &other]).await;
}

/// No rate limit, and a cap of two originates in flight per PBX.
const CAP_OF_TWO: [(&str, &str); 3] = [UNLIMITED[0], UNLIMITED[1], ("AMI__MAX_INFLIGHT_ORIGINATES", "2")];

/// A simulator on which the courier's phone rings on (each originate stays in flight), and a fresh
/// database.
async fn calls_that_ring_on() -> (dialback_pbx_sim::Simulator, String) {
    (support::sim_with(|c| c.ring = Duration::from_secs(3600)).await, support::fresh_database().await)
}

/// Each process holds its share of a PBX's cap on originates in flight, on the session it has open
/// too, and a process told to stop gives its share to the others before it stops accepting: the
/// taps a balancer then moves to them are placed, not refused with `pbx_busy` until their next
/// heartbeat.
#[tokio::test]
async fn a_stopping_process_gives_its_share_of_the_pbx_cap_to_the_others_at_once() {
    let (sim, database) = calls_that_ring_on().await;
    let one = DialbackProcess::start(&database, &CAP_OF_TWO).await;
    let two = DialbackProcess::start(&database, &CAP_OF_TWO).await;
    one.app.configure_pbx("acme", sim.addr().port(), json!({"originate_timeout_s": 120})).await;
    count_each_other(&[&one.app, &two.app]).await;
    let (token, body) = add_courier(&two.app, "acme", 0).await;
    let first = tap(&two.app, &token, body).await;
    let (token, body) = add_courier(&two.app, "acme", 1).await;
    support::assert_problem(place(&two.app, &token, body).await, 503, "pbx_busy").await;

    let two_id = owner(&database, &first).await.expect("the process that placed it follows it");
    let stopping = tokio::spawn(one.terminate());
    eventually("the first process to say it is stopping, or to be gone", || async {
        let db = support::connect(&database).await;
        let sql = "SELECT count(*) FROM dialback_processes WHERE id <> $1 AND stopping_since IS NULL";
        match db.query_one(sql, &[&two_id]).await.unwrap().get::<_, i64>(0) {
            0 => Ok(()),
            serving => Err(serving),
        }
    })
    .await;
    let (token, body) = add_courier(&two.app, "acme", 2).await;
    tap(&two.app, &token, body).await;
    assert_eq!(sim.originates(), 2, "the refused tap never reached the PBX");
    assert!(stopping.await.unwrap().success());
}

/// Only the processes serving count in the shares of a PBX's cap: not one still starting (no
/// balancer sends it anything yet) nor one told to stop; one that starts serving does.
#[tokio::test]
async fn only_the_processes_serving_count_in_the_shares_of_the_pbx_cap() {
    let (sim, database) = calls_that_ring_on().await;
    let process = DialbackProcess::start(&database, &CAP_OF_TWO).await;
    process.app.configure_pbx("acme", sim.addr().port(), json!({"originate_timeout_s": 120})).await;
    // Two other processes, alive for as long as the test: one starting, one stopping.
    let db = support::connect(&database).await;
    let others = db
        .query(
            "INSERT INTO dialback_processes (id, host, pid, version, heartbeat_at, starting, stopping_since)
             VALUES (gen_random_uuid(), 'elsewhere', 1, 'test', now() + interval '1 hour', true, NULL),
                    (gen_random_uuid(), 'elsewhere', 2, 'test', now() + interval '1 hour', false, now())
             RETURNING id",
            &[],
        )
        .await
        .unwrap();
    let starting: uuid::Uuid = others[0].get(0);
    eventually("the process to see three alive, itself alone serving", || async {
        match (counter(&process.app, "dialback_processes_alive").await, serving(&process.app).await) {
            (3, 1) => Ok(()),
            seen => Err(seen),
        }
    })
    .await;
    for i in 0..2 {
        let (token, body) = add_courier(&process.app, "acme", i).await;
        tap(&process.app, &token, body).await;
    }

    db.execute("UPDATE dialback_processes SET starting = false WHERE id = $1", &[&starting]).await.unwrap();
    eventually("the process to count the one that started", || async {
        match serving(&process.app).await {
            2 => Ok(()),
            other => Err(other),
        }
    })
    .await;
    let (token, body) = add_courier(&process.app, "acme", 2).await;
    support::assert_problem(place(&process.app, &token, body).await, 503, "pbx_busy").await;
    assert_eq!(sim.originates(), 2);
}

async fn serving(app: &TestApp) -> u64 {
    counter(app, "dialback_processes_serving").await
}

/// Any process answers any request: duplicates of one tap sent to two processes at once ring
/// once, and a call placed through one is cancelled through the other.
#[tokio::test]
async fn duplicates_sent_to_two_processes_ring_once_and_either_cancels() {
    let sim = support::sim_with(|c| c.ring = Duration::from_secs(3600)).await;
    let database = support::fresh_database().await;
    let one = DialbackProcess::start(&database, &UNLIMITED).await;
    let two = DialbackProcess::start(&database, &UNLIMITED).await;
    one.app.configure_pbx("acme", sim.addr().port(), json!({"originate_timeout_s": 120})).await;
    let (token, body) = add_courier(&one.app, "acme", 0).await;
    let requests = (0..6).map(|i| {
        let app = if i % 2 == 0 { &one.app } else { &two.app };
        let request = app.http.post(app.url("/v1/callbacks")).bearer_auth(&token);
        app.exec(request.header("Idempotency-Key", "tap-1").json(&body))
    });
    let answers = futures_util::future::join_all(requests).await;
    let mut ids = BTreeSet::new();
    for res in answers {
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        match status.as_u16() {
            202 => {
                ids.insert(body["id"].as_str().unwrap().to_owned());
            }
            // A duplicate that came while the first was still being placed.
            409 => assert_eq!(body["code"], "idempotency_in_progress", "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(ids.len(), 1, "every duplicate answered got the same callback: {ids:?}");
    let id = ids.into_iter().next().unwrap();
    one.app.wait_status(&id, &token, "ringing_courier").await;
    assert_eq!(sim.originates(), 1);
    let res = two.app.send(reqwest::Method::DELETE, &format!("/v1/callbacks/{id}"), &token, None).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let done = one.app.wait_terminal(&id, &token).await;
    assert_eq!(done["status"], "canceled", "{done}");
    until("the ringing phone to be hung up", || sim.calls_in_progress() == 0).await;
}

/// A save through one process reaches the others at once, though they cache settings for an hour
/// here: PostgreSQL NOTIFY drops their copies.
#[tokio::test]
async fn a_settings_save_reaches_every_process_at_once() {
    let sim = support::quick_sim().await;
    let one = support::app().set("db.cache_ttl_s", 3600).spawn().await;
    let two = support::app().set("db.cache_ttl_s", 3600).existing_database(one.database_url.clone()).spawn().await;
    one.seed("acme", sim.addr().port()).await;
    let courier = two.courier("acme", "courier-1");
    let office = |app: &TestApp| {
        let (app, courier) = (app.clone(), courier.clone());
        async move { app.get_as("/v1/me", &courier).await.json::<Value>().await.unwrap()["office_phone"].clone() }
    };
    assert_eq!(office(&two).await, "+74951234567", "read, and now cached, by the other process");
    let admin = one.admin("acme");
    let mut settings: Value = one.get_as("/v1/admin/pbx", &admin).await.json().await.unwrap();
    for read_only in ["secret_set", "updated_at", "dialplan_check"] {
        settings.as_object_mut().unwrap().remove(read_only);
    }
    settings["recordings"] = Value::Null;
    settings["office_phone"] = json!("+74957654321");
    assert_eq!(one.put("/v1/admin/pbx", &admin, settings).await.status(), 200);
    eventually("the other process to see the new office number", || async {
        match office(&two).await {
            phone if phone == "+74957654321" => Ok(()),
            phone => Err(phone),
        }
    })
    .await;
}

/// A courier's limit is theirs, not each process's: with two processes alive, taps spread over
/// both are refused past the limit of 4 a minute, as with one process.
#[tokio::test]
async fn a_couriers_limit_holds_across_processes() {
    let sim = support::quick_sim().await;
    let database = support::fresh_database().await;
    let limit = [("RATE__COURIER_PER_MINUTE", "4")];
    let one = DialbackProcess::start(&database, &limit).await;
    let two = DialbackProcess::start(&database, &limit).await;
    one.app.configure_pbx("acme", sim.addr().port(), json!({})).await;
    let (token, body) = add_courier(&one.app, "acme", 0).await;
    count_each_other(&[&one.app, &two.app]).await;
    let mut answers = Vec::new();
    for i in 0..8 {
        let app = if i % 2 == 0 { &one.app } else { &two.app };
        answers.push(place(app, &token, body.clone()).await.status().as_u16());
    }
    assert_eq!(answers.iter().filter(|s| **s == 202).count(), 4, "{answers:?}");
    assert_eq!(answers.iter().filter(|s| **s == 429).count(), 4, "{answers:?}");
}

/// A call's live stream opened on a process that did not place the call (it hears the PBX only
/// as a standby, and writes nothing of the call) still gets every status, written by the other
/// process.
#[tokio::test]
async fn a_live_stream_on_another_process_gets_every_status() {
    let sim = support::quick_sim().await;
    let (_database, one, two) = two_processes_with_acme_on(&sim).await;
    let (token, body) = add_courier(&one.app, "acme", 0).await;
    count_each_other(&[&one.app, &two.app]).await;
    let id = tap(&one.app, &token, body).await;
    let path = format!("/v1/callbacks/{id}/events");
    let events = SseStream::open(&two.app, &path, &token, Some(0)).await.rest().await;
    let statuses: Vec<&str> = events.iter().map(|e| e.data["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["queued", "ringing_courier", "ringing_client", "connected", "completed"], "{events:?}");
    let ids: Vec<i32> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
}

/// Two processes on a fresh database, company `acme`'s PBX set up through the first, and a
/// return call routed by it whose courier talks until the caller (`client-call-1`) hangs up:
/// the simulator, an observer on it, the database, both processes and the return call's id.
async fn two_processes_and_a_return_call_that_talks_on(
) -> (dialback_pbx_sim::Simulator, AmiObserver, String, DialbackProcess, DialbackProcess, String) {
    use crate::return_calls::{company, journal, pbx_with, DID};
    let database = support::fresh_database().await;
    let one = DialbackProcess::start(&database, &UNLIMITED).await;
    let two = DialbackProcess::start(&database, &UNLIMITED).await;
    company(&one.app, json!({})).await;
    let (sim, observer, _) = pbx_with(&one.app, |t| t, |c| c.talk = Duration::from_secs(3600)).await;
    observer.call_in(DID, "89161234567", "client-call-1").await;
    let connected = eventually("the return call to connect", || async {
        match journal(&one.app, "limit=1").await.pop() {
            Some(call) if call["status"] == "connected" => Ok(call),
            other => Err(other),
        }
    })
    .await;
    let id = connected["id"].as_str().unwrap().to_owned();
    (sim, observer, database, one, two, id)
}

/// The process that follows return call `id` now (None: released, nobody yet).
async fn return_call_owner(database: &str, id: &str) -> Option<uuid::Uuid> {
    owner_in(database, "return_calls", id).await
}

/// Stops `process` (SIGTERM) and, once it has let call `id` (`owner_of` reads who follows it)
/// go and before another process could claim it, runs `meanwhile`; the stop must end cleanly.
async fn during_the_hand_over<F, O>(
    process: DialbackProcess,
    owner_of: F,
    meanwhile: impl std::future::Future<Output = ()>,
) where
    F: Fn() -> O,
    O: std::future::Future<Output = Option<uuid::Uuid>>,
{
    let stopping = tokio::spawn(process.terminate());
    eventually("the call to be handed over", || async {
        match owner_of().await {
            None => Ok(()),
            Some(still) => Err(still),
        }
    })
    .await;
    meanwhile.await;
    assert!(stopping.await.unwrap().success());
}

/// A return call outlives the process that routed it: that process killed while the client talks
/// to the courier, another (with no session to the PBX yet) takes it over, and the call's end is
/// recorded as it happened; a return call that ended before anyone took it over is recorded as
/// lost.
#[tokio::test]
async fn a_return_call_outlives_the_process_that_routed_it() {
    use crate::return_calls::{journal, CLIENT_OF_SILENT, DID};
    let (sim, observer, database, one, two, id) = two_processes_and_a_return_call_that_talks_on().await;
    // Another caller, whose courier never answers: still ringing when the process dies.
    observer.call_in(DID, CLIENT_OF_SILENT, "client-call-2").await;
    let ringing = eventually("the second return call to ring", || async {
        match journal(&one.app, "limit=1").await.pop() {
            Some(call) if call["status"] == "ringing_courier" => Ok(call),
            other => Err(other),
        }
    })
    .await;
    let owner = || return_call_owner(&database, &id);
    let routed_by = owner().await.expect("owned by the process that routed it");
    let logins = sim.logins();
    one.kill().await;
    // The second caller gives up while no process follows the call.
    observer.hangup("client-call-2").await;
    until("the second call to end on the PBX", || sim.calls_in_progress() == 1).await;
    eventually("the other process to take the return call over", || async {
        match owner().await {
            Some(now) if now != routed_by && sim.logins() > logins => Ok(()),
            other => Err(other),
        }
    })
    .await;
    observer.hangup("client-call-1").await;
    let admin = two.app.admin("acme");
    let done = eventually("the return call to end", || async {
        let call: Value = two.app.get_as(&format!("/v1/return-calls/{id}"), &admin).await.json().await.unwrap();
        match call["status"] != "connected" && !call["cdr"].is_null() {
            true => Ok(call),
            false => Err(call),
        }
    })
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done["talk_seconds"].as_i64().is_some(), "{done}");
    let lost: Value = two
        .app
        .get_as(&format!("/v1/return-calls/{}", ringing["id"].as_str().unwrap()), &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((lost["status"].as_str(), lost["reason"].as_str()), (Some("failed"), Some("lost")), "{lost}");
}

/// Only the process following a call writes it: another that hears the call on its own session to
/// the PBX (Asterisk sends every event to every session) keeps what it hears in memory, for a
/// takeover, and writes none of it.
#[tokio::test]
async fn only_the_process_following_a_call_writes_it() {
    let sim = support::quick_sim().await;
    let (_database, one, two) = two_processes_with_acme_on(&sim).await;
    let completed = "dialback_callback_transitions_total{to=\"completed\"}";
    // Each process places a call, so each has a session to the PBX.
    for (i, app) in [&two.app, &one.app].into_iter().enumerate() {
        let (token, body) = add_courier(&one.app, "acme", i).await;
        let id = tap(app, &token, body).await;
        assert_eq!(app.wait_terminal(&id, &token).await["status"], "completed");
    }
    let before = counter(&two.app, completed).await;
    let (token, body) = add_courier(&one.app, "acme", 2).await;
    let id = tap(&one.app, &token, body).await;
    assert_eq!(one.app.wait_terminal(&id, &token).await["status"], "completed");
    // A call of its own placed after it: once that one is written, `two` has read past the
    // other's events on its session.
    let (token, body) = add_courier(&one.app, "acme", 3).await;
    let after = tap(&two.app, &token, body).await;
    assert_eq!(two.app.wait_terminal(&after, &token).await["status"], "completed");
    eventually("the process to count its own call", || async {
        match counter(&two.app, completed).await {
            n if n == before + 1 => Ok(()),
            n => Err(n),
        }
    })
    .await;
}

/// A return call that ends while the process that routed it hands it over (SIGTERM), before the
/// other process claims it: the stopping process still hears it and records its real outcome.
#[tokio::test]
async fn a_return_call_ending_while_its_process_hands_it_over_gets_its_real_outcome() {
    let (_sim, observer, database, one, two, id) = two_processes_and_a_return_call_that_talks_on().await;
    count_each_other(&[&one.app, &two.app]).await;
    during_the_hand_over(one, || return_call_owner(&database, &id), observer.hangup("client-call-1")).await;
    let admin = two.app.admin("acme");
    let done = eventually("the return call to end", || async {
        let call: Value = two.app.get_as(&format!("/v1/return-calls/{id}"), &admin).await.json().await.unwrap();
        match call["status"] != "connected" {
            true => Ok(call),
            false => Err(call),
        }
    })
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done["talk_seconds"].as_i64().is_some(), "{done}");
}

/// A counter's value in a process's `/metrics` (0 before it first counts).
async fn counter(app: &TestApp, line_start: &str) -> u64 {
    let metrics = app.get_as("/metrics", "").await.text().await.unwrap();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line_start).and_then(|v| v.trim().parse::<f64>().ok()))
        .map_or(0, |v| v as u64)
}

/// While no process dies, none looks for orphaned calls, whatever the calls in flight: the beat
/// alone says nothing waits. One killed, the survivor looks, and takes its calls.
#[tokio::test]
async fn processes_look_for_orphaned_calls_only_once_one_is_gone() {
    const SEARCHES: &str = "dialback_orphan_searches_total{calls=\"callbacks\"}";
    const BEATS: &str = "dialback_heartbeats_total";
    let (sim, database, one, two) = two_processes_and_calls_that_talk_on().await;
    let mut calls = Vec::new();
    for i in 0..3 {
        let (token, body) = add_courier(&one.app, "acme", i).await;
        let id = tap(&one.app, &token, body).await;
        one.app.wait_status(&id, &token, "connected").await;
        calls.push(id);
    }
    count_each_other(&[&one.app, &two.app]).await;
    for app in [&one.app, &two.app] {
        let beats = counter(app, BEATS).await;
        eventually("three more heartbeats", || async {
            let now = counter(app, BEATS).await;
            if now >= beats + 3 {
                Ok(())
            } else {
                Err(now)
            }
        })
        .await;
        assert_eq!(counter(app, SEARCHES).await, 0, "nothing died: no process looked for orphans");
    }
    let placed_by = owner(&database, &calls[0]).await.expect("owned by the process that placed it");
    one.kill().await;
    for id in &calls {
        taken_from(&database, id, placed_by).await;
    }
    assert!(counter(&two.app, SEARCHES).await > 0, "the survivor looked once the other was gone");
    eventually("the dead process, following no call now, to be forgotten", || async {
        match listed(&database, placed_by).await {
            false => Ok(()),
            true => Err("still listed"),
        }
    })
    .await;
    let ids: Vec<&str> = calls.iter().map(String::as_str).collect();
    hang_up_and_see_completed(sim.addr().port(), &two.app, &ids).await;
}

/// SIGTERM while the only other process has no session to the company's PBX (it claims the calls
/// only after the grace): the stopping process keeps listening to the call it handed over until
/// it is claimed, so a call that ends in between gets its real outcome, not `unknown`.
#[tokio::test]
async fn a_call_ending_while_its_process_hands_it_over_gets_its_real_outcome() {
    let (sim, database, one, two) = two_processes_and_calls_that_talk_on().await;
    let (token, body) = add_courier(&one.app, "acme", 0).await;
    let id = tap(&one.app, &token, body).await;
    one.app.wait_status(&id, &token, "connected").await;
    count_each_other(&[&one.app, &two.app]).await;
    let observer = AmiObserver::start(sim.addr().port()).await;
    during_the_hand_over(one, || owner(&database, &id), observer.hangup(&id)).await;
    let done = two.app.wait_terminal(&id, &two.app.admin("acme")).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done["talk_seconds"].as_i64().is_some() && done["detail"].is_null(), "{done}");
}

/// SIGTERM right after another process joined, before this one's next heartbeat counted it (a
/// rolling upgrade replaces processes one right after the other): the stopping process asks the
/// database who is alive rather than trusting its last beat, so it listens until its calls are
/// claimed, and a call that ends meanwhile gets its real outcome instead of being left to nobody.
#[tokio::test]
async fn a_process_stopping_just_after_another_joined_still_listens_to_its_calls() {
    let (sim, database, one) = one_process_and_calls_that_talk_on().await;
    let (token, body) = add_courier(&one.app, "acme", 0).await;
    let id = tap(&one.app, &token, body).await;
    one.app.wait_status(&id, &token, "connected").await;
    // The newcomer, as its first beat registers it. It claims nothing, so the call stays with
    // `one`, which must still be listening when the call ends.
    let db = support::connect(&database).await;
    db.execute(
        "INSERT INTO dialback_processes (id, host, pid, version) VALUES (gen_random_uuid(), 'newcomer', 1, 'test')",
        &[],
    )
    .await
    .unwrap();
    let observer = AmiObserver::start(sim.addr().port()).await;
    during_the_hand_over(one, || owner(&database, &id), observer.hangup(&id)).await;
    let row =
        db.query_one("SELECT status, talk_seconds FROM callbacks WHERE id = $1::text::uuid", &[&id]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "completed");
    assert!(row.get::<_, Option<i32>>(1).is_some());
}
