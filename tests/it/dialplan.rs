//! The dialplan dialback writes for a company (`GET /v1/admin/pbx/dialplan`), loaded into the
//! simulator's model of `extensions.conf` and run: calls to the office and to a client go through
//! it with the CDR's userfield set and a recording the sync binds without any configuration.

use serde_json::json;

use crate::support::{self, ftp::FtpServer, spawn_app, CLIENT_PHONE, COURIER_PHONE};

#[tokio::test]
async fn the_downloaded_dialplan_is_a_ready_extensions_custom_conf_for_the_saved_settings() {
    let app = spawn_app().await;
    app.configure_pbx(
        "acme",
        5038,
        json!({"context": "dialback-out", "client_prefix": "9", "office_extension": "2001",
               "channel_template": "Dongle/dongle0/{NUMBER}"}),
    )
    .await;
    let res = app.get_as("/v1/admin/pbx/dialplan", &app.admin("acme")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    let disposition = res.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert_eq!(disposition, "attachment; filename=\"extensions_custom.conf\"");
    let text = res.text().await.unwrap();
    assert!(text.contains("[dialback-out]"), "{text}");
    assert!(text.contains("exten => 2001,1,NoOp(dialback dialplan "), "{text}");
    assert!(text.contains(" same => n,Set(CDR(userfield)=${DIALBACK_CALL_ID})"), "{text}");
    assert!(
        text.contains("Dial(Dongle/dongle0/${EXTEN},30)"),
        "the client goes out through the company's trunk: {text}"
    );
    assert!(text.contains("client prefix 9"), "{text}");
    assert!(text.contains("dialplan reload"), "the comments say how to install it: {text}");
    dialback_pbx_sim::dialplan::Dialplan::parse(&text).expect("loads by extensions.conf's rules");
    // Couriers cannot download it.
    support::assert_problem(
        app.get_as("/v1/admin/pbx/dialplan", &app.courier("acme", "courier-1")).await,
        403,
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn calls_to_the_office_and_to_a_client_run_through_the_downloaded_dialplan() {
    let ftp = FtpServer::start().await;
    let root = ftp.root.clone();
    let app = spawn_app().await;
    let settings = json!({"client_prefix": "9", "recordings": ftp.source(json!({}))});
    let (sim, _) =
        support::sim_running_the_downloaded_dialplan(&app, "acme", settings, |c| c.recordings_dir = Some(root)).await;
    app.add_courier("acme", "courier-1", COURIER_PHONE).await;
    app.add_order("acme", "A-1001", "courier-1", &[CLIENT_PHONE]).await;
    let (courier, admin) = (app.courier("acme", "courier-1"), app.admin("acme"));

    let mut ids = Vec::new();
    for body in [json!({"target": "office"}), json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1001"})] {
        let res = app.post("/v1/callbacks", &courier, body).await;
        assert_eq!(res.status(), 202);
        let id = res.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        let done = app.wait_terminal(&id, &courier).await;
        assert_eq!(done["status"], "completed", "{done}");
        ids.push(id);
    }
    assert_eq!((sim.originates(), sim.client_dials()), (2, 2));
    for (id, dialled) in [(&ids[0], "Local/101@from-internal,30"), (&ids[1], "PJSIP/979161234567@trunk,30")] {
        let cdr = app.callback_with_cdr("acme", id).await["cdr"]["courier"].clone();
        assert_eq!(cdr["user_field"], id.as_str(), "Set(CDR(userfield)=...) ran: {cdr}");
        assert_eq!((cdr["last_application"].as_str(), cdr["last_data"].as_str()), (Some("Dial"), Some(dialled)));
    }

    // MixMonitor(${UNIQUEID}.wav) names the files after the callbacks: the sync binds both as it is.
    support::wait::eventually("both recordings to be bound", || async {
        let res = app.send(reqwest::Method::POST, "/v1/admin/recordings/sync", &admin, None).await;
        let report: serde_json::Value = res.json().await.unwrap();
        let bound: Vec<bool> = futures_util::future::join_all(
            ids.iter().map(|id| async { !app.callback(id, &admin).await["recording"].is_null() }),
        )
        .await;
        if bound.iter().all(|b| *b) {
            Ok(())
        } else {
            Err(report)
        }
    })
    .await;
    for id in &ids {
        let res = app.get_as(&format!("/v1/recordings?callback_id={id}"), &admin).await;
        let listed: serde_json::Value = res.json().await.unwrap();
        assert_eq!(listed["items"][0]["matched_by"], "uniqueid", "{listed}");
        assert_eq!(listed["items"][0]["file_name"], format!("{id}.wav"), "{listed}");
    }
}
