//! What a company moving off its current courier telephony expects (issue 16): the office's city
//! number without any PBX, the app's start-up call, the office extension dialled as written, any
//! channel technology, Asterisk's whole CDR on each call, and a journal searched the way an
//! office works and exported as CSV.

use reqwest::header;
use serde_json::json;

use crate::support::{self, assert_problem, quick_sim, spawn_app, TestApp, CLIENT_PHONE, COURIER_PHONE};

async fn place(app: &TestApp, token: &str, body: serde_json::Value) -> reqwest::Response {
    app.post("/v1/callbacks", token, body).await
}

#[tokio::test]
async fn a_company_without_a_pbx_saves_its_office_phone_and_couriers_dial_it_directly() {
    let app = spawn_app().await;
    let admin = app.admin("acme");
    // Nothing at all is not enough: without a PBX the office phone is the point.
    let res = app.put("/v1/admin/pbx", &admin, json!({})).await;
    assert_eq!(assert_problem(res, 422, "invalid_field").await["field"], "office_phone");
    // Half a PBX is refused, naming what is missing.
    let res =
        app.put("/v1/admin/pbx", &admin, json!({"host": "pbx.example.org", "office_phone": "+74951234567"})).await;
    assert_eq!(assert_problem(res, 422, "invalid_field").await["field"], "username");
    // Recordings come from the PBX: not without one.
    let res = app
        .put(
            "/v1/admin/pbx",
            &admin,
            json!({"office_phone": "+74951234567", "recordings": {"host": "ftp.example.org", "username": "u", "password": "secret-pass"}}),
        )
        .await;
    assert_eq!(assert_problem(res, 422, "invalid_field").await["field"], "recordings");

    let res = app.put("/v1/admin/pbx", &admin, json!({"office_phone": "8 (495) 123-45-67"})).await;
    assert_eq!(res.status(), 200);
    let saved: serde_json::Value = res.json().await.unwrap();
    assert_eq!(saved["office_phone"], "8 (495) 123-45-67");
    assert_eq!(saved["secret_set"], false);
    assert!(saved.get("host").is_none(), "{saved}");

    app.add_courier("acme", "courier-1", COURIER_PHONE).await;
    app.add_order("acme", "A-1001", "courier-1", &[CLIENT_PHONE]).await;
    let courier = app.courier("acme", "courier-1");
    // "Call the office" is answered as a PBX that is down is: a problem whose `fallback` is the
    // city number the app dials over cellular; its own code says this will not change by itself.
    let body =
        assert_problem(place(&app, &courier, json!({"target": "office"})).await, 409, "pbx_not_configured").await;
    assert_eq!(body["fallback"]["phone"], "+74951234567", "{body}");
    assert!(body.get("callback_id").is_none(), "nothing is logged: {body}");
    // The same with an Idempotency-Key, and again for its retry.
    for _ in 0..2 {
        let res = app
            .exec(
                app.http
                    .post(app.url("/v1/callbacks"))
                    .bearer_auth(&courier)
                    .header("Idempotency-Key", "office-tap-1")
                    .json(&json!({"target": "office"})),
            )
            .await;
        let body = assert_problem(res, 409, "pbx_not_configured").await;
        assert_eq!(body["fallback"]["phone"], "+74951234567", "{body}");
    }
    // Calling a client needs the PBX: a clear 409, not a fault, and nothing to dial instead.
    let body = assert_problem(
        place(&app, &courier, json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1001"})).await,
        409,
        "pbx_not_configured",
    )
    .await;
    assert!(body.get("fallback").is_none(), "{body}");
    // Nothing went through dialback, so nothing is in the journal.
    let journal: serde_json::Value = app.get_as("/v1/callbacks", &admin).await.json().await.unwrap();
    assert_eq!(journal["items"], json!([]));
    // ...and there is no dialplan to download.
    assert_problem(app.get_as("/v1/admin/pbx/dialplan", &admin).await, 409, "pbx_not_configured").await;

    let me: serde_json::Value = app.get_as("/v1/me", &courier).await.json().await.unwrap();
    assert_eq!(me["office_phone"], "+74951234567");
    assert_eq!(me["callbacks"], json!({"available": false, "why_not": "pbx_not_configured"}));
}

#[tokio::test]
async fn me_tells_the_app_who_the_courier_is_whether_callbacks_work_and_is_cacheable() {
    let sim = quick_sim().await;
    let app = spawn_app().await;
    let courier = app.courier("acme", "courier-1");
    // Before anything is set up: a profile-less answer that says why.
    let me: serde_json::Value = app.get_as("/v1/me", &courier).await.json().await.unwrap();
    assert_eq!(me["courier"], serde_json::Value::Null);
    assert_eq!(me["callbacks"]["why_not"], "courier_not_registered");
    assert_problem(app.get_as("/v1/me", &app.admin("acme")).await, 403, "forbidden").await;

    app.seed("acme", sim.addr().port()).await;
    let res = app.get_as("/v1/me", &courier).await;
    assert_eq!(res.status(), 200);
    let cache = res.headers()[header::CACHE_CONTROL].to_str().unwrap().to_owned();
    assert!(cache.starts_with("private, max-age="), "{cache}");
    let tag = res.headers()[header::ETAG].to_str().unwrap().to_owned();
    let me: serde_json::Value = res.json().await.unwrap();
    assert_eq!(me["courier"]["id"], "courier-1");
    assert_eq!(me["courier"]["phone"], COURIER_PHONE);
    assert_eq!(me["office_phone"], "+74951234567");
    assert_eq!(me["callbacks"], json!({"available": true, "why_not": null}));
    assert!(me["limits"]["callbacks_per_minute"].as_u64() > Some(0), "{me}");

    // The app's copy is still good: 304 with no body.
    let again =
        app.exec(app.http.get(app.url("/v1/me")).bearer_auth(&courier).header(header::IF_NONE_MATCH, &tag)).await;
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()[header::ETAG].to_str().unwrap(), tag);

    // Asking opened the company's PBX link, so the courier's first tap finds it up.
    support::wait::until("the start-up call to open the PBX link", || sim.sessions() == 1).await;

    // The PBX goes away: the app hears that callbacks will not work before the courier taps.
    sim.kill();
    support::wait::eventually("me to say the PBX is unreachable", || async {
        let me: serde_json::Value = app.get_as("/v1/me", &courier).await.json().await.unwrap();
        if me["callbacks"]["why_not"] == "pbx_unreachable" {
            Ok(())
        } else {
            Err(me)
        }
    })
    .await;
    let changed =
        app.exec(app.http.get(app.url("/v1/me")).bearer_auth(&courier).header(header::IF_NONE_MATCH, &tag)).await;
    assert_eq!(changed.status(), 200, "a changed answer is sent whole");
}

#[tokio::test]
async fn the_office_extension_is_dialled_as_written_and_the_client_prefix_only_before_clients() {
    let sim = quick_sim().await;
    let app = spawn_app().await;
    app.seed("acme", sim.addr().port()).await;
    app.configure_pbx("acme", sim.addr().port(), json!({"client_prefix": "9"})).await;
    let courier = app.courier("acme", "courier-1");

    let office: serde_json::Value = place(&app, &courier, json!({"target": "office"})).await.json().await.unwrap();
    let client: serde_json::Value =
        place(&app, &courier, json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1001"}))
            .await
            .json()
            .await
            .unwrap();
    for (call, exten) in [(&office, "101"), (&client, "979161234567")] {
        let id = call["id"].as_str().unwrap();
        app.wait_terminal(id, &courier).await;
        // Asterisk's own record says what was dialled (its Destination is the Originate's Exten).
        let cdr = app.callback_with_cdr("acme", id).await["cdr"]["courier"].clone();
        assert_eq!(cdr["destination"], exten, "{cdr}");
        assert_eq!(cdr["destination_context"], "from-courier");
        assert_eq!(cdr["disposition"], "ANSWERED");
        assert_eq!(cdr["user_field"], id, "the dialplan's CDR(userfield) is the callback id");
        assert!(cdr["billable_seconds"].as_u64() >= Some(1), "{cdr}");
        for time in ["start_time", "answer_time", "end_time"] {
            assert!(cdr[time].as_str().is_some_and(|t| t.len() == 19), "{time}: {cdr}");
        }
        // A courier sees their call, never Asterisk's record of it (it names channels and numbers).
        assert_eq!(app.callback(id, &courier).await["cdr"], serde_json::Value::Null);
    }
}

#[tokio::test]
async fn any_channel_technology_is_saved_and_the_test_button_says_when_the_pbx_lacks_it() {
    let sim = quick_sim().await;
    let app = spawn_app().await;
    let admin = app.admin("acme");
    // chan_dongle's GSM gateways are common: the shape is checked, not a list of names.
    app.configure_pbx("acme", sim.addr().port(), json!({"channel_template": "Dongle/dongle0/{NUMBER}"})).await;
    let saved: serde_json::Value = app.get_as("/v1/admin/pbx", &admin).await.json().await.unwrap();
    assert_eq!(saved["channel_template"], "Dongle/dongle0/{NUMBER}");
    for bad in ["{NUMBER}", "Dongle/{NUMBER}, x", "Dongle/", "9Dongle/{NUMBER}", "Don gle/{NUMBER}"] {
        let res = app
            .put(
                "/v1/admin/pbx",
                &admin,
                json!({"host": "127.0.0.1", "username": "dialback", "channel_template": bad, "context": "from-courier"}),
            )
            .await;
        assert_eq!(assert_problem(res, 422, "invalid_field").await["field"], "channel_template", "{bad}");
    }
    // This simulated PBX has no chan_dongle (as an Asterisk without the module): Originate is queued
    // and the channel cannot be created (Reason 0); the Test says what to check.
    let res = app.post("/v1/admin/pbx/test", &admin, json!({"from": COURIER_PHONE, "to": CLIENT_PHONE})).await;
    let diagnosis: serde_json::Value = res.json().await.unwrap();
    assert_eq!(diagnosis["ok"], false);
    let failed = diagnosis["steps"].as_array().unwrap().iter().find(|s| s["ok"] == false).unwrap().clone();
    assert_eq!(failed["step"], "first_leg", "{diagnosis}");
    assert!(failed["hint"].as_str().unwrap().contains("technology"), "{failed}");
}

/// The journal's rows, as the admin's JSON list answers them for `query`.
async fn journal(app: &TestApp, query: &str) -> Vec<serde_json::Value> {
    let res = app.get_as(&format!("/v1/callbacks?{query}"), &app.admin("acme")).await;
    assert_eq!(res.status(), 200, "{query}");
    let page: serde_json::Value = res.json().await.unwrap();
    page["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn the_journal_is_searched_by_phone_in_any_form_courier_order_kind_outcome_and_dates() {
    let sim = quick_sim().await;
    let app = spawn_app().await;
    app.seed("acme", sim.addr().port()).await;
    app.add_courier("acme", "courier-2", "+79001112234").await;
    // Numbers ending in 0 are busy in the simulator.
    app.add_order("acme", "B-2", "courier-2", &["+79161234560"]).await;
    let (one, two) = (app.courier("acme", "courier-1"), app.courier("acme", "courier-2"));
    let mut ids = Vec::new();
    for (token, body) in [
        (&one, json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1001"})),
        (&one, json!({"target": "office"})),
        (&two, json!({"target": "client", "to": "+79161234560", "order_id": "B-2"})),
    ] {
        let call: serde_json::Value = place(&app, token, body).await.json().await.unwrap();
        let id = call["id"].as_str().unwrap().to_owned();
        app.wait_terminal(&id, token).await;
        ids.push(id);
    }
    let found =
        |rows: Vec<serde_json::Value>| rows.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>();

    // The client's number as the office would type it, in any of its forms.
    for phone in ["8 (916) 123-45-67", "+7 916 123 45 67", "79161234567", "9161234567"] {
        let query = format!("phone={}", urlencode(phone));
        assert_eq!(found(journal(&app, &query).await), [ids[0].clone()], "{phone}");
    }
    assert_eq!(found(journal(&app, "phone=101").await), [ids[1].clone()], "an extension is looked up as written");
    assert_eq!(found(journal(&app, "courier_id=courier-2").await), [ids[2].clone()]);
    assert_eq!(found(journal(&app, "order_id=A-1001").await), [ids[0].clone()]);
    assert_eq!(found(journal(&app, "kind=office").await), [ids[1].clone()]);
    assert_eq!(found(journal(&app, "status=failed&failed_leg=client&reason=busy").await), [ids[2].clone()]);
    assert_eq!(found(journal(&app, "status=completed").await), [ids[1].clone(), ids[0].clone()]);
    assert_eq!(found(journal(&app, "kind=test").await), Vec::<String>::new());

    // Dates: from the first call's creation on, and until before it.
    let first = app.callback(&ids[0], &app.admin("acme")).await;
    let created = first["created_at"].as_str().unwrap();
    let since = journal(&app, &format!("since={}", urlencode(created))).await;
    assert_eq!(since.len(), 3);
    let until = journal(&app, &format!("until={}", urlencode(created))).await;
    assert!(until.iter().all(|r| r["id"] != ids[1].as_str() && r["id"] != ids[2].as_str()), "{until:?}");

    // Bad filters are named; nothing is searched.
    let admin = app.admin("acme");
    for (query, field) in [
        ("phone=not-a-phone", "phone"),
        ("kind=fax", "kind"),
        ("failed_leg=both", "failed_leg"),
        ("reason=aliens", "reason"),
        ("since=yesterday", "since"),
        ("courier_id=a%0Db", "courier_id"),
    ] {
        let res = app.get_as(&format!("/v1/callbacks?{query}"), &admin).await;
        assert_eq!(assert_problem(res, 422, "invalid_field").await["field"], field, "{query}");
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn the_journal_exports_as_csv_in_the_documented_column_order_streamed_page_by_page() {
    let app = spawn_app().await;
    app.configure_pbx("acme", 5038, json!({})).await;
    // More calls than one page of the stream (500), written straight into the table as months
    // of a company's calls would be.
    let db = support::connect(&app.database_url).await;
    let count = 1_234;
    let ids: Vec<uuid::Uuid> = (0..count).map(|_| uuid::Uuid::now_v7()).collect();
    db.execute(
        "INSERT INTO callbacks (id, tenant_id, courier_id, target, order_id, to_number, courier_number, status, \
         failed_leg, reason, detail) \
         SELECT id, 'acme', 'courier-' || (n % 7), 'client', 'A-' || n, '+7916123' || lpad(n::text, 4, '0'), \
                '+79001112233', CASE WHEN n % 3 = 0 THEN 'failed' ELSE 'completed' END, \
                CASE WHEN n % 3 = 0 THEN 'client' END, CASE WHEN n % 3 = 0 THEN 'busy' END, \
                CASE WHEN n = 7 THEN '=HYPERLINK(\"x\"), \"quoted\"' END \
         FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, n)",
        &[&ids],
    )
    .await
    .unwrap();

    let res = app.get_as("/v1/callbacks.csv", &app.admin("acme")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert!(res.headers()[header::CONTENT_DISPOSITION].to_str().unwrap().contains("callbacks.csv"));
    // Streamed: no Content-Length, the body comes in chunks as pages are read.
    assert!(res.headers().get(header::CONTENT_LENGTH).is_none());
    let text = res.text().await.unwrap();
    let mut lines = text.split_terminator("\r\n");
    assert_eq!(
        lines.next().unwrap(),
        "id,created_at,kind,status,failed_leg,reason,courier_id,courier_number,order_id,to,courier_answered_at,\
         connected_at,ended_at,talk_seconds,billable_seconds,hangup_cause,cdr_disposition,detail"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), count);
    // Newest first, every call once.
    let listed: Vec<String> = rows.iter().map(|r| r.split(',').next().unwrap().to_owned()).collect();
    let mut newest_first: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    newest_first.reverse();
    assert_eq!(listed, newest_first);
    // A free-text cell is quoted and cannot run as a spreadsheet formula.
    let seventh = rows.iter().find(|r| r.starts_with(&ids[6].to_string())).unwrap();
    assert!(seventh.ends_with(",\"'=HYPERLINK(\"\"x\"\"), \"\"quoted\"\"\""), "{seventh}");
    let busy = rows.iter().find(|r| r.starts_with(&ids[2].to_string())).unwrap();
    assert!(busy.contains(",client,failed,client,busy,courier-3,+79001112233,A-3,+79161230003,"), "{busy}");

    // The same filters as the JSON list, and no pages.
    let filtered = app.get_as("/v1/callbacks.csv?status=failed&courier_id=courier-3", &app.admin("acme")).await;
    let filtered = filtered.text().await.unwrap();
    let expected = (1..=count).filter(|n| n % 3 == 0 && n % 7 == 3).count();
    assert_eq!(filtered.split_terminator("\r\n").count(), expected + 1);
    let res = app.get_as("/v1/callbacks.csv?limit=10", &app.admin("acme")).await;
    assert_problem(res, 400, "invalid_query").await;
    // A courier cannot export the company's journal.
    let res = app.get_as("/v1/callbacks.csv", &app.courier("acme", "courier-1")).await;
    assert_problem(res, 403, "forbidden").await;

    // The journal's own path with `Accept: text/csv`, as callers from before /v1/callbacks.csv
    // ask (the admin page among them): the same file.
    let res = csv_by_accept(&app, "/v1/callbacks", &app.admin("acme")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), text);
    let res = csv_by_accept(&app, "/v1/callbacks?status=failed&courier_id=courier-3", &app.admin("acme")).await;
    assert_eq!(res.text().await.unwrap(), filtered);
    let res = csv_by_accept(&app, "/v1/callbacks", &app.courier("acme", "courier-1")).await;
    assert_problem(res, 403, "forbidden").await;
}

/// `GET <path>` with `Accept: text/csv` on the JSON journal's path: not in openapi.yaml's
/// listCallbacks (a generated client never asks for it, and its method returns one type), it
/// must answer exactly as exportCallbacks (`/v1/callbacks.csv`) does, and is checked as that.
#[allow(clippy::disallowed_methods)]
async fn csv_by_accept(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    let res =
        app.http.get(app.url(path)).bearer_auth(token).header(header::ACCEPT, "text/csv").send().await.expect("sent");
    let as_export = path.replacen("/v1/callbacks", "/v1/callbacks.csv", 1);
    support::spec::checked("GET", &as_export, res).await
}
