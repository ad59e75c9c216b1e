//! Deleting recordings (issue 28): on the company's schedule (`retention_days`) and by an admin,
//! with the journal keeping that there was a recording and why it is gone; a deletion a crash cut
//! short is finished by the next run; a deleted file is never fetched again.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::recordings::{awkward_bytes, company, completed_call, list, recordings_only, sync};
use crate::support::ftp::{files_under, FtpServer};
use crate::support::{self, assert_problem, spawn_app};

#[tokio::test]
async fn recordings_older_than_the_companys_retention_are_deleted_and_the_journal_says_so() {
    let ftp = FtpServer::start().await;
    // Named for this test alone: it reads the company's metrics.
    let acme = support::unique_tenant("acme");
    let (app, sim) = company(&acme, &ftp, json!({})).await;
    let id = completed_call(&app, &acme, &ftp).await;
    assert_eq!(sync(&app, &acme).await["bound"], 1);
    let dir = app.config.recordings_dir.clone().unwrap();
    assert_eq!(files_under(&dir).len(), 1);
    let admin = app.admin(&acme);
    let audio_url = app.callback(&id, &admin).await["recording"]["audio_url"].as_str().unwrap().to_owned();

    // The company keeps recordings 30 days; this one is made 31 days old.
    app.configure_pbx(&acme, sim.addr().port(), json!({"recordings": ftp.source(json!({"retention_days": 30}))})).await;
    let db = support::connect(&app.database_url).await;
    db.execute(
        "UPDATE recordings SET recorded_at = now() - interval '31 days', first_seen_at = now() - interval '31 days'",
        &[],
    )
    .await
    .unwrap();
    let report = sync(&app, &acme).await;
    assert_eq!((report["deleted"].as_u64(), report["fetched"].as_u64()), (Some(1), Some(0)), "{report}");
    assert!(files_under(&dir).is_empty(), "the audio is gone from storage");

    let recording = list(&app, &acme, "").await[0].clone();
    assert_eq!(
        (recording["state"].as_str(), recording["deleted_because"].as_str()),
        (Some("deleted"), Some("retention"))
    );
    assert!(recording["audio_url"].is_null() && recording["deleted_at"].is_string(), "{recording}");
    let call = app.callback(&id, &admin).await;
    assert_eq!(call["recording"]["deleted_because"], "retention", "the journal keeps that it existed: {call}");
    assert!(call["recording"]["audio_url"].is_null(), "{call}");
    assert_problem(app.get_as(&audio_url, &admin).await, 410, "recording_deleted").await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let counted = support::metric(
        &metrics,
        "dialback_recordings_deleted_total",
        &[("tenant", acme.as_str()), ("because", "retention")],
    );
    assert_eq!(counted, Some(1.0), "{metrics}");

    // The file is still on the PBX: it is not fetched again.
    let again = sync(&app, &acme).await;
    assert_eq!((again["fetched"].as_u64(), again["new"].as_u64()), (Some(0), Some(0)), "{again}");
    assert!(files_under(&dir).is_empty());
}

#[tokio::test]
async fn an_admin_deletes_a_recording_at_once_and_a_deletion_cut_short_is_finished_by_the_next_run() {
    let ftp = FtpServer::start().await;
    let app = spawn_app().await;
    recordings_only(&app, "acme", &ftp, json!({})).await;
    for n in 0..2 {
        ftp.put(&format!("{}.wav", Uuid::now_v7()), &awkward_bytes(1500 + n));
    }
    assert_eq!(sync(&app, "acme").await["fetched"], 2);
    let dir = app.config.recordings_dir.clone().unwrap();
    let recordings: Vec<Value> = list(&app, "acme", "").await;
    let (first, second) = (recordings[0]["id"].as_str().unwrap(), recordings[1]["id"].as_str().unwrap());
    let admin = app.admin("acme");

    let res = app.delete(&format!("/v1/recordings/{first}"), &admin).await;
    assert_eq!(res.status(), 204);
    assert_eq!(files_under(&dir).len(), 1);
    let deleted = list(&app, "acme", "").await.into_iter().find(|r| r["id"] == first).unwrap();
    assert_eq!((deleted["state"].as_str(), deleted["deleted_because"].as_str()), (Some("deleted"), Some("admin")));
    assert_eq!(
        app.delete(&format!("/v1/recordings/{first}"), &admin).await.status(),
        204,
        "deleting again changes nothing"
    );
    assert_problem(app.delete(&format!("/v1/recordings/{}", Uuid::now_v7()), &admin).await, 404, "not_found").await;
    assert_problem(app.delete(&format!("/v1/recordings/{second}"), &app.admin("other")).await, 404, "not_found").await;

    // A deletion that died after marking the row, before removing its file (no retention set).
    let db = support::connect(&app.database_url).await;
    db.execute(
        "UPDATE recordings SET state = 'deleting', deleted_because = 'admin' WHERE id = $1::text::uuid",
        &[&second],
    )
    .await
    .unwrap();
    assert_eq!(files_under(&dir).len(), 1, "its file is still there");
    let report = sync(&app, "acme").await;
    assert_eq!(report["deleted"], 1, "{report}");
    assert!(files_under(&dir).is_empty());
    let finished = list(&app, "acme", "").await.into_iter().find(|r| r["id"] == second).unwrap();
    assert_eq!(finished["state"], "deleted", "{finished}");
}
