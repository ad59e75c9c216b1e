//! Call recordings end to end: a real FTP server (pyftpdlib), the PBX simulator writing
//! FreePBX-named WAVs into the FTP root, real PostgreSQL, the HTTP API.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use aws_lc_rs::digest;
use reqwest::Method;
use serde_json::{json, Value};
use time::macros::format_description;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::support::ftp::{files_under, FtpOptions, FtpServer};
use crate::support::wait::{eventually, until, within_patience};
use crate::support::{self, assert_problem, spawn_app, TestApp, CLIENT_PHONE};

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// Audio-like bytes full of what an ASCII-mode transfer would rewrite: CRLF, bare LF, bare CR
/// and NUL, and every other byte value.
pub(crate) fn awkward_bytes(len: usize) -> Vec<u8> {
    let mut bytes = b"RIFF\r\n\0\0WAVE\n\r\n\r\0".to_vec();
    let mut i = 0usize;
    while bytes.len() < len {
        bytes.extend_from_slice(&[(i % 256) as u8, b'\r', b'\n', b'\n', 0, b'\r', (i * 7 % 256) as u8]);
        i += 1;
    }
    bytes.truncate(len);
    bytes
}

/// `YYYYMMDD-HHMMSS` of now, as a PBX on UTC writes it into a recording's name: the sync only
/// looks at files from the last `keep_looking_h` hours, so a name must never carry a fixed date.
fn name_stamp_now() -> String {
    OffsetDateTime::now_utc().format(format_description!("[year][month][day]-[hour][minute][second]")).unwrap()
}

/// The demo company, its PBX the simulator (which writes its recordings into the FTP root) and
/// its recordings source `ftp` (with `source` overrides).
pub(crate) async fn company(tenant: &str, ftp: &FtpServer, source: Value) -> (TestApp, dialback_pbx_sim::Simulator) {
    let root = ftp.root.clone();
    let sim = support::sim_with(|c| c.recordings_dir = Some(root)).await;
    let app = spawn_app().await;
    app.seed(tenant, sim.addr().port()).await;
    app.configure_pbx(tenant, sim.addr().port(), json!({"recordings": ftp.source(source)})).await;
    (app, sim)
}

/// A company whose PBX is never called: only its recordings matter.
pub(crate) async fn recordings_only(app: &TestApp, tenant: &str, ftp: &FtpServer, source: Value) {
    app.configure_pbx(tenant, 1, json!({"recordings": ftp.source(source)})).await;
}

async fn sync_as(app: &TestApp, tenant: &str) -> reqwest::Response {
    app.send(Method::POST, "/v1/admin/recordings/sync", &app.admin(tenant), None).await
}

pub(crate) async fn sync(app: &TestApp, tenant: &str) -> Value {
    let res = sync_as(app, tenant).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    res.json().await.unwrap()
}

/// courier-1 calls the client of A-1001; returns the callback id once the call completed and the
/// simulator's recording of it is on the FTP server.
pub(crate) async fn completed_call(app: &TestApp, tenant: &str, ftp: &FtpServer) -> String {
    let courier = app.courier(tenant, "courier-1");
    let res = app
        .post("/v1/callbacks", &courier, json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1001"}))
        .await;
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let done = app.wait_terminal(&id, &courier).await;
    assert_eq!(done["status"], "completed", "{done}");
    until("the simulator's recording", || recording_on_server(ftp, &id).is_some()).await;
    id
}

fn recording_on_server(ftp: &FtpServer, callback_id: &str) -> Option<PathBuf> {
    files_under(&ftp.root).into_iter().find(|p| p.file_name().unwrap().to_string_lossy().contains(callback_id))
}

pub(crate) async fn list(app: &TestApp, tenant: &str, query: &str) -> Vec<Value> {
    let res = app.get_as(&format!("/v1/recordings{query}"), &app.admin(tenant)).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    res.json::<Value>().await.unwrap()["items"].as_array().unwrap().clone()
}

async fn audio(app: &TestApp, url: &str, token: &str) -> Vec<u8> {
    let res = app.get_as(url, token).await;
    assert_eq!(res.status(), 200, "{url}");
    res.bytes().await.unwrap().to_vec()
}

/// How often the FTP server sent `name`, once it has logged at least one download (pyftpdlib logs a
/// transfer just after it answers 226, so the log may lag the client by a moment).
async fn downloads_of(ftp: &FtpServer, name: &str) -> usize {
    eventually(format!("the FTP server to log the download of {name}"), || async {
        match ftp.downloads_of(name) {
            0 => Err(0),
            n => Ok(n),
        }
    })
    .await
}

#[tokio::test]
async fn a_completed_callback_gets_its_recording_bound_and_the_courier_can_play_it() {
    // Named for this test alone: it reads the company's metrics.
    let acme = support::unique_tenant("acme");
    let ftp = FtpServer::start().await;
    let (app, _sim) = company(&acme, &ftp, json!({})).await;
    let id = completed_call(&app, &acme, &ftp).await;
    let on_server = std::fs::read(recording_on_server(&ftp, &id).unwrap()).unwrap();

    let report = sync(&app, &acme).await;
    assert_eq!((report["seen"].as_u64(), report["fetched"].as_u64()), (Some(1), Some(1)), "{report}");
    assert_eq!((report["bound"].as_u64(), report["unmatched"].as_u64()), (Some(1), Some(0)), "{report}");
    assert_eq!(report["bytes"].as_u64(), Some(on_server.len() as u64));

    let courier = app.courier(&acme, "courier-1");
    let callback: Value = app.get_as(&format!("/v1/callbacks/{id}"), &courier).await.json().await.unwrap();
    let recording = &callback["recording"];
    assert_eq!(recording["size_bytes"].as_u64(), Some(on_server.len() as u64), "{callback}");
    assert_eq!(recording["sha256"], sha256_hex(&on_server));
    let url = recording["audio_url"].as_str().unwrap();
    let prefix = format!("/v1/recordings/{}/audio?tenant={acme}&expires=", recording["id"].as_str().unwrap());
    assert!(url.starts_with(&prefix), "{url}");
    // A signed URL plays without a token: what a browser's <audio src> needs.
    let res = app.exec(app.http.get(app.url(url))).await;
    assert_eq!(res.headers()["content-type"], "audio/wav");
    assert_eq!(res.headers()["accept-ranges"], "bytes");
    assert_eq!(res.bytes().await.unwrap().to_vec(), on_server, "the courier plays exactly the PBX's file");

    let by_order = list(&app, &acme, "?order_id=A-1001").await;
    assert_eq!(by_order.len(), 1);
    assert_eq!(
        (by_order[0]["callback_id"].as_str(), by_order[0]["matched_by"].as_str()),
        (Some(&*id), Some("uniqueid"))
    );
    assert_eq!(list(&app, &acme, &format!("?callback_id={id}")).await.len(), 1);
    assert!(list(&app, &acme, "?unmatched=true").await.is_empty());
    let listed: Value = app.get_as("/v1/callbacks?order_id=A-1001", &app.admin(&acme)).await.json().await.unwrap();
    assert_eq!(listed["items"][0]["recording"]["id"], recording["id"], "the admin's callback list shows it too");

    let again = sync(&app, &acme).await;
    assert_eq!((again["seen"].as_u64(), again["new"].as_u64(), again["fetched"].as_u64()), (Some(1), Some(0), Some(0)));
    assert_eq!(
        downloads_of(&ftp, &recording_on_server(&ftp, &id).unwrap().file_name().unwrap().to_string_lossy()).await,
        1
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let of_acme = |name: &str, labels: &[(&str, &str)]| {
        support::metric(&metrics, name, &[&[("tenant", acme.as_str())], labels].concat())
    };
    assert_eq!(of_acme("dialback_recordings_fetched_total", &[]), Some(1.0), "{metrics}");
    assert_eq!(of_acme("dialback_recordings_bytes_total", &[]), Some(on_server.len() as f64));
    assert_eq!(of_acme("dialback_recordings_bound_total", &[("matched_by", "uniqueid")]), Some(1.0));
    assert_eq!(of_acme("dialback_recordings_sync_runs_total", &[("outcome", "ok")]), Some(2.0));
}

#[tokio::test]
async fn recordings_come_back_byte_identical_whatever_bytes_they_hold() {
    let ftp = FtpServer::start().await;
    let app = spawn_app().await;
    recordings_only(&app, "acme", &ftp, json!({})).await;
    let bytes = awkward_bytes(300_000);
    ftp.put(&format!("{}.wav", Uuid::now_v7()), &bytes);

    let report = sync(&app, "acme").await;
    assert_eq!((report["fetched"].as_u64(), report["unmatched"].as_u64()), (Some(1), Some(1)), "{report}");
    let items = list(&app, "acme", "?unmatched=true").await;
    assert_eq!(items.len(), 1, "an unmatched recording is kept and listed");
    assert_eq!(items[0]["sha256"], sha256_hex(&bytes));
    assert_eq!(items[0]["size_bytes"].as_u64(), Some(bytes.len() as u64));
    let fetched = audio(&app, items[0]["audio_url"].as_str().unwrap(), &app.admin("acme")).await;
    assert!(fetched == bytes, "binary mode: CR, LF and NUL bytes survive the transfer");
}

#[tokio::test]
async fn a_file_that_appears_before_its_call_is_kept_and_bound_when_the_call_appears() {
    let ftp = FtpServer::start().await;
    let app = spawn_app().await;
    app.seed("acme", 1).await;
    recordings_only(&app, "acme", &ftp, json!({})).await;
    let call_id = Uuid::now_v7();
    ftp.put(&format!("out-79161234567-74951234567-{}-{call_id}.wav", name_stamp_now()), &awkward_bytes(5000));

    let first = sync(&app, "acme").await;
    assert_eq!(
        (first["fetched"].as_u64(), first["unmatched"].as_u64(), first["bound"].as_u64()),
        (Some(1), Some(1), Some(0))
    );
    let unmatched = list(&app, "acme", "?unmatched=true").await;
    assert_eq!(unmatched.len(), 1);

    // The call row appears (e.g. written by a replica whose transaction committed late).
    let pool = dialback::store::pool(&app.database_url.clone().into(), &Default::default()).unwrap();
    let db = pool.get().await.unwrap();
    crate::support::insert_attempt(
        &db,
        &crate::support::attempt_row(call_id, dialback::domain::callback::Status::Completed),
    )
    .await;
    let second = sync(&app, "acme").await;
    assert_eq!((second["fetched"].as_u64(), second["bound"].as_u64()), (Some(0), Some(1)), "{second}");
    let callback: Value =
        app.get_as(&format!("/v1/callbacks/{call_id}"), &app.admin("acme")).await.json().await.unwrap();
    assert_eq!(callback["recording"]["id"], unmatched[0]["id"], "{callback}");
    assert!(list(&app, "acme", "?unmatched=true").await.is_empty());
    assert_eq!(list(&app, "acme", "?order_id=A-1001").await.len(), 1);
}

#[tokio::test]
async fn a_file_named_by_numbers_and_time_in_date_subdirectories_is_bound_to_the_call_it_records() {
    let ftp = FtpServer::start().await;
    let sim = support::quick_sim().await;
    let app = spawn_app().await;
    app.seed("acme", sim.addr().port()).await;
    let moscow = json!({"date_subdirs": "YYYY/MM/DD", "utc_offset_min": 180});
    app.configure_pbx("acme", sim.addr().port(), json!({"recordings": ftp.source(moscow)})).await;
    let courier = app.courier("acme", "courier-1");
    let res = app
        .post("/v1/callbacks", &courier, json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1001"}))
        .await;
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let done = app.wait_terminal(&id, &courier).await;
    let connected = time::OffsetDateTime::parse(
        done["connected_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .to_offset(time::macros::offset!(+3));
    // As FreePBX writes it: the PBX's local time, an Asterisk uniqueid (not the callback id).
    let day = connected.format(time::macros::format_description!("[year]/[month]/[day]")).unwrap();
    let stamp =
        connected.format(time::macros::format_description!("[year][month][day]-[hour][minute][second]")).unwrap();
    ftp.put(&format!("{day}/out-79161234567-74951234567-{stamp}-1795335228.6.wav"), &awkward_bytes(2000));
    ftp.put(&format!("{day}/out-79990000000-74951234567-{stamp}-1795335228.9.wav"), &awkward_bytes(2000));

    let report = sync(&app, "acme").await;
    assert_eq!(
        (report["fetched"].as_u64(), report["bound"].as_u64(), report["unmatched"].as_u64()),
        (Some(2), Some(1), Some(1))
    );
    let bound = list(&app, "acme", &format!("?callback_id={id}")).await;
    assert_eq!(bound.len(), 1);
    assert_eq!(bound[0]["matched_by"], "numbers_time");
    assert!(bound[0]["file_name"].as_str().unwrap().contains("79161234567"));
    assert!(list(&app, "acme", "?unmatched=true").await[0]["file_name"].as_str().unwrap().contains("79990000000"));
}

#[tokio::test]
async fn a_crash_during_a_download_leaves_no_half_file_and_the_next_run_fetches_it() {
    // 4 MiB at 256 KiB/s: the download takes 16 s, so dialback is killed while it runs (the test
    // waits for the partial file to grow, whatever the machine's speed).
    let mut ftp = FtpServer::start_with(FtpOptions { throttle: 256 * 1024, ..FtpOptions::default() }).await;
    let bytes = awkward_bytes(4 * 1024 * 1024);
    let name = format!("{}.wav", Uuid::now_v7());
    ftp.put(&name, &bytes);
    let database_url = support::fresh_database().await;
    let store = support::recordings_dir();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = std::fs::File::create(store.with_extension("log")).unwrap();
    // A real `dialback serve` process, so the crash is a real SIGKILL: no destructor runs.
    let mut process = tokio::process::Command::new(env!("CARGO_BIN_EXE_dialback"))
        .arg("serve")
        .env("DIALBACK_CONFIG", "/nonexistent/dialback.toml")
        .env("DIALBACK_DATABASE_URL", &database_url)
        .env("DIALBACK_LISTEN", format!("127.0.0.1:{port}"))
        .env("DIALBACK_JWT_SECRET", support::JWT_SECRET)
        .env("DIALBACK_SECRETS_KEY", "ab".repeat(32))
        .env("DIALBACK_RECORDINGS_DIR", &store)
        .env("DIALBACK_LOG_FORMAT", "json")
        .env("DIALBACK_AGI__LISTEN", "127.0.0.1:0")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let config = dialback::config::Config::from_figment(support::test_config(&database_url)).unwrap();
    let doomed = TestApp {
        address: format!("http://127.0.0.1:{port}"),
        agi_port: None,
        database_url: database_url.clone(),
        config,
        http: crate::support::http_client(),
    };
    let log_of = |store: &std::path::Path| std::fs::read_to_string(store.with_extension("log")).unwrap_or_default();
    eventually("dialback serve to be ready", || {
        let exited = process.try_wait().unwrap();
        let (doomed, log) = (&doomed, log_of(&store));
        async move {
            if let Some(status) = exited {
                panic!("dialback serve exited ({status}) before it was ready:\n{log}");
            }
            match doomed.try_exec(doomed.http.get(doomed.url("/readyz"))).await {
                Ok(r) if r.status() == 200 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    recordings_only(&doomed, "acme", &ftp, json!({})).await;
    let syncing = {
        let doomed = doomed.clone();
        tokio::spawn(async move {
            doomed
                .try_exec(doomed.http.post(doomed.url("/v1/admin/recordings/sync")).bearer_auth(doomed.admin("acme")))
                .await
        })
    };
    let partial = store.join(".partial");
    until("the download to be under way", || {
        files_under(&partial).iter().any(|f| f.metadata().map(|m| m.len() > 256 * 1024).unwrap_or(false))
    })
    .await;
    process.kill().await.unwrap();
    assert!(syncing.await.unwrap().is_err(), "the sync request died with the process");

    let files = files_under(&store);
    assert!(!files.is_empty() && files.iter().all(|f| f.starts_with(&partial)), "only the partial file: {files:?}");
    let db = support::connect(&database_url).await;
    let state: String = db.query_one("SELECT state FROM recordings", &[]).await.unwrap().get(0);
    assert_eq!(state, "fetching", "claimed, never recorded as fetched");
    // The dead process's claim lapses one lease after its last heartbeat; instead of waiting for
    // that, move it into the past (the lease rule itself is what `claimed_until < now()` says).
    db.execute("UPDATE recordings SET claimed_until = now() - interval '1 second'", &[]).await.unwrap();

    // dialback comes back on the same database and store; the server no longer throttles.
    ftp.restart(0).await;
    let app = support::app().existing_database(database_url).set("recordings_dir", &store).spawn().await;
    let report = sync(&app, "acme").await;
    assert_eq!((report["fetched"].as_u64(), report["failed"].as_u64()), (Some(1), Some(0)), "{report}");
    let items = list(&app, "acme", "").await;
    assert_eq!((items[0]["state"].as_str(), items[0]["attempts"].as_u64()), (Some("stored"), Some(2)));
    assert!(audio(&app, items[0]["audio_url"].as_str().unwrap(), &app.admin("acme")).await == bytes);
    // The crash's partial file is swept once it is clearly abandoned (long untouched): age it.
    for file in files_under(&partial) {
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options().write(true).open(&file).unwrap().set_modified(an_hour_ago).unwrap();
    }
    sync(&app, "acme").await;
    assert!(files_under(&partial).is_empty(), "{:?}", files_under(&partial));
    let _ = std::fs::remove_dir_all(&store);
    let _ = std::fs::remove_file(store.with_extension("log"));
}

#[tokio::test]
async fn an_ftp_server_dying_mid_transfer_leaves_no_half_file_and_the_next_run_fetches_it() {
    let mut ftp = FtpServer::start_with(FtpOptions { throttle: 256 * 1024, ..FtpOptions::default() }).await;
    let bytes = awkward_bytes(2 * 1024 * 1024);
    let name = format!("{}.wav", Uuid::now_v7());
    ftp.put(&name, &bytes);
    let app = support::app().set("recordings.ftp_timeout_ms", 3000).spawn().await;
    recordings_only(&app, "acme", &ftp, json!({})).await;
    let syncing = {
        let app = app.clone();
        tokio::spawn(async move {
            app.exec(app.http.post(app.url("/v1/admin/recordings/sync")).bearer_auth(app.admin("acme"))).await
        })
    };
    let store = app.config.recordings_dir.clone().unwrap();
    until("the download to be under way", || {
        files_under(&store.join(".partial")).iter().any(|f| f.metadata().map(|m| m.len() > 128 * 1024).unwrap_or(false))
    })
    .await;
    ftp.stop().await;

    let report: Value = within_patience("the sync to end", syncing).await.unwrap().json().await.unwrap();
    assert_eq!((report["fetched"].as_u64(), report["failed"].as_u64()), (Some(0), Some(1)), "{report}");
    assert_eq!(report["failures"][0]["file"], format!("/{name}"));
    assert!(files_under(&store).is_empty(), "no half file anywhere: {:?}", files_under(&store));
    let items = list(&app, "acme", "").await;
    assert_eq!(items[0]["state"], "failed");
    assert!(items[0]["audio_url"].is_null() && items[0]["last_error"].is_string(), "{}", items[0]);

    ftp.restart(0).await;
    let report = sync(&app, "acme").await;
    assert_eq!(report["fetched"], 1, "{report}");
    let items = list(&app, "acme", "").await;
    assert!(audio(&app, items[0]["audio_url"].as_str().unwrap(), &app.admin("acme")).await == bytes);
    let _ = std::fs::remove_dir_all(&store);
}

#[tokio::test]
async fn concurrent_runs_on_two_replicas_fetch_each_file_once() {
    let ftp = FtpServer::start().await;
    let names: Vec<String> = (0..6).map(|_| format!("{}.wav", Uuid::now_v7())).collect();
    let mut total = 0;
    for (i, name) in names.iter().enumerate() {
        total += ftp.put(name, &awkward_bytes(100_000 + i)).metadata().unwrap().len();
    }
    let first = spawn_app().await;
    recordings_only(&first, "acme", &ftp, json!({})).await;
    let second = support::app()
        .existing_database(first.database_url.clone())
        .set("recordings_dir", &first.config.recordings_dir)
        .spawn()
        .await;

    let reports = futures_util::future::join_all([
        sync(&first, "acme"),
        sync(&first, "acme"),
        sync(&second, "acme"),
        sync(&second, "acme"),
    ])
    .await;
    let sum = |key: &str| reports.iter().map(|r| r[key].as_u64().unwrap()).sum::<u64>();
    assert_eq!((sum("fetched"), sum("bytes"), sum("failed")), (6, total, 0), "{reports:?}");
    for name in &names {
        assert_eq!(downloads_of(&ftp, name).await, 1, "{name} downloaded once");
    }
    let items = list(&first, "acme", "").await;
    assert_eq!(items.len(), 6);
    assert!(items.iter().all(|i| i["state"] == "stored" && i["attempts"] == 1), "{items:?}");
    let _ = std::fs::remove_dir_all(first.config.recordings_dir.as_ref().unwrap());
}

#[tokio::test]
async fn an_ftp_outage_is_reported_and_the_next_run_after_it_fetches() {
    // Named for this test alone: it reads the company's metrics.
    let acme = support::unique_tenant("acme");
    let mut ftp = FtpServer::start().await;
    let app = spawn_app().await;
    recordings_only(&app, &acme, &ftp, json!({})).await;
    ftp.put(&format!("{}.wav", Uuid::now_v7()), &awkward_bytes(10_000));
    ftp.stop().await;

    let res = sync_as(&app, &acme).await;
    assert!(res.headers().contains_key("retry-after"));
    let problem = assert_problem(res, 503, "ftp_unreachable").await;
    assert!(problem["detail"].as_str().unwrap().contains(&format!("127.0.0.1:{}", ftp.port)), "{problem}");
    assert_eq!(app.get("/readyz").await.status(), 200, "an FTP outage is not the service's outage");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let runs = |outcome| {
        support::metric(&metrics, "dialback_recordings_sync_runs_total", &[("tenant", &acme), ("outcome", outcome)])
    };
    assert_eq!((runs("unreachable"), runs("ok")), (Some(1.0), None), "{metrics}");

    ftp.restart(0).await;
    assert_eq!(sync(&app, &acme).await["fetched"], 1);
}

/// How often the scheduler runs is its unit tests' business (paused time, `recordings::scheduler`);
/// this shows that it runs by itself against a real company and binds each new call's recording.
#[tokio::test]
async fn the_background_sync_binds_each_new_recording_by_itself() {
    // Named for this test alone: it reads the company's metrics.
    let acme = support::unique_tenant("acme");
    let ftp = FtpServer::start().await;
    let (app, _sim) = company(&acme, &ftp, json!({"poll_interval_s": 5})).await;
    let courier = app.courier(&acme, "courier-1");
    for _ in 0..2 {
        let id = completed_call(&app, &acme, &ftp).await;
        eventually(format!("the background sync to bind the recording of {id}"), || async {
            let body = app.callback(&id, &courier).await;
            if body["recording"].is_object() {
                Ok(())
            } else {
                Err(body)
            }
        })
        .await;
    }
    // No sync was asked for: the scheduler ran them.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let runs =
        support::metric(&metrics, "dialback_recordings_sync_runs_total", &[("tenant", &acme), ("outcome", "ok")]);
    assert!(runs.is_some_and(|n| n >= 1.0), "{metrics}");
}

#[tokio::test]
async fn wrong_credentials_and_a_wrong_directory_are_reported_clearly() {
    let ftp = FtpServer::start().await;
    let app = spawn_app().await;
    recordings_only(&app, "acme", &ftp, json!({"password": "s3cret-wrong-pw"})).await;
    let problem = assert_problem(sync_as(&app, "acme").await, 502, "ftp_login_failed").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("\"recordings\"") && detail.contains("530"), "{detail}");
    assert!(!detail.contains("s3cret-wrong-pw"), "{detail}");

    recordings_only(&app, "acme", &ftp, json!({"directory": "/var/spool/asterisk/monitor"})).await;
    let problem = assert_problem(sync_as(&app, "acme").await, 502, "ftp_error").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("/var/spool/asterisk/monitor") && detail.contains("550"), "{detail}");
}

#[tokio::test]
async fn range_requests_serve_the_parts_a_player_asks_for() {
    let ftp = FtpServer::start().await;
    let app = spawn_app().await;
    recordings_only(&app, "acme", &ftp, json!({})).await;
    let bytes = awkward_bytes(1000);
    ftp.put(&format!("{}.wav", Uuid::now_v7()), &bytes);
    sync(&app, "acme").await;
    let url = app.url(list(&app, "acme", "").await[0]["audio_url"].as_str().unwrap());
    let admin = app.admin("acme");
    let ranged = |range: &'static str| app.exec(app.http.get(&url).bearer_auth(&admin).header("range", range));

    for (range, first, last) in [("bytes=0-99", 0, 99), ("bytes=100-", 100, 999), ("bytes=-100", 900, 999)] {
        let res = ranged(range).await;
        assert_eq!(res.status(), 206, "{range}");
        assert_eq!(res.headers()["content-range"], format!("bytes {first}-{last}/1000"), "{range}");
        assert_eq!(res.headers()["content-length"], (last - first + 1).to_string());
        assert_eq!(res.bytes().await.unwrap().as_ref(), &bytes[first..=last], "{range}");
    }
    let res = ranged("bytes=1000-").await;
    assert_eq!(res.headers()["content-range"], "bytes */1000");
    assert_problem(res, 416, "range_not_satisfiable").await;

    let whole = app.exec(app.http.get(&url).bearer_auth(&admin)).await;
    assert_eq!((whole.status().as_u16(), whole.headers()["accept-ranges"].to_str().unwrap()), (200, "bytes"));
    let etag = whole.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", sha256_hex(&bytes)));
    let stale = app.http.get(&url).bearer_auth(&admin).header("range", "bytes=0-9").header("if-range", "\"other\"");
    assert_eq!(app.exec(stale).await.status(), 200, "a changed file is sent whole");
    let fresh = app.http.get(&url).bearer_auth(&admin).header("range", "bytes=0-9").header("if-range", etag);
    assert_eq!(app.exec(fresh).await.status(), 206);
}

#[tokio::test]
async fn another_companys_recording_is_a_404_and_another_couriers_too() {
    let ftp = FtpServer::start().await;
    let (app, _sim) = company("acme", &ftp, json!({})).await;
    let id = completed_call(&app, "acme", &ftp).await;
    sync(&app, "acme").await;
    let signed = list(&app, "acme", "").await[0]["audio_url"].as_str().unwrap().to_owned();
    let url = signed.split('?').next().unwrap().to_owned();

    // With a bearer token: the company's admins and the call's courier only.
    assert_eq!(app.get_as(&url, &app.courier("acme", "courier-1")).await.status(), 200);
    assert_problem(app.get_as(&url, &app.admin("other")).await, 404, "not_found").await;
    assert_problem(app.get_as(&url, &app.courier("other", "courier-1")).await, 404, "not_found").await;
    app.add_courier("acme", "courier-2", "+79001112244").await;
    assert_problem(app.get_as(&url, &app.courier("acme", "courier-2")).await, 404, "not_found").await;
    assert_problem(app.exec(app.http.get(app.url(&url))).await, 401, "unauthorized").await;
    // A signed URL is a capability for that one recording: tampering with it is a 404.
    assert_eq!(app.exec(app.http.get(app.url(&signed))).await.status(), 200);
    let other_tenant = signed.replace("tenant=acme", "tenant=other");
    assert_problem(app.exec(app.http.get(app.url(&other_tenant))).await, 404, "not_found").await;
    let later = {
        let expires: i64 = signed.split("expires=").nth(1).unwrap().split('&').next().unwrap().parse().unwrap();
        signed.replace(&format!("expires={expires}"), &format!("expires={}", expires + 3600))
    };
    assert_problem(app.exec(app.http.get(app.url(&later))).await, 404, "not_found").await;
    let bad_sig = format!("{}{}", &signed[..signed.len() - 4], "0000");
    assert_problem(app.exec(app.http.get(app.url(&bad_sig))).await, 404, "not_found").await;
    assert!(list(&app, "other", "").await.is_empty());
    assert!(list(&app, "other", &format!("?callback_id={id}")).await.is_empty());
    assert_problem(app.get_as("/v1/recordings", &app.courier("acme", "courier-1")).await, 403, "forbidden").await;
    assert_problem(app.get_as("/v1/recordings/not-a-uuid/audio", &app.admin("acme")).await, 404, "not_found").await;
    assert_problem(sync_as(&app, "other").await, 409, "recordings_not_configured").await;
}

#[tokio::test]
async fn the_recordings_source_is_validated_by_field_and_its_password_is_write_only() {
    let ftp = FtpServer::start().await;
    let app = spawn_app().await;
    let admin = app.admin("acme");
    let put = |source: Value| {
        let mut settings = json!({
            "host": "127.0.0.1", "port": 5038, "username": "dialback", "secret": "dialback",
            "channel_template": "PJSIP/{NUMBER}@trunk", "context": "from-courier",
        });
        settings["recordings"] = source;
        app.put("/v1/admin/pbx", &admin, settings)
    };
    let mut no_password = ftp.source(json!({}));
    no_password.as_object_mut().unwrap().remove("password");
    let body = assert_problem(put(no_password.clone()).await, 422, "invalid_field").await;
    assert_eq!(body["field"], "recordings.password", "required the first time");
    for (change, field) in [
        (json!({"directory": "recordings"}), "recordings.directory"),
        (json!({"filename_pattern": "(?P<who>.+)\\.wav"}), "recordings.filename_pattern"),
        (json!({"date_subdirs": "DD/MM"}), "recordings.date_subdirs"),
        (json!({"password": "a\r\nUSER root"}), "recordings.password"),
    ] {
        let body = assert_problem(put(ftp.source(change)).await, 422, "invalid_field").await;
        assert_eq!(body["field"], field, "{body}");
    }

    let res = put(ftp.source(json!({}))).await;
    assert_eq!(res.status(), 200);
    let saved: Value = res.json().await.unwrap();
    assert_eq!(saved["recordings"]["password_set"], true);
    assert!(saved["recordings"].get("password").is_none(), "{saved}");
    let shown: Value = app.get_as("/v1/admin/pbx", &admin).await.json().await.unwrap();
    assert_eq!(
        (shown["recordings"]["password_set"].as_bool(), shown["recordings"]["port"].as_u64()),
        (Some(true), Some(ftp.port as u64))
    );
    assert!(!shown.to_string().contains(support::ftp::PASSWORD));
    let db = support::connect(&app.database_url).await;
    let stored: String = db.query_one("SELECT recordings_password_enc FROM pbx_settings", &[]).await.unwrap().get(0);
    assert!(stored.starts_with("v1:") && !stored.contains(support::ftp::PASSWORD), "encrypted at rest");

    // Saved again without the password: the stored one is kept (and works), but never sent to
    // another server.
    let mut elsewhere = no_password.clone();
    elsewhere["host"] = json!("ftp.attacker.example");
    let body = assert_problem(put(elsewhere).await, 422, "invalid_field").await;
    assert_eq!(body["field"], "recordings.password");
    assert_eq!(put(no_password).await.status(), 200);
    ftp.put(&format!("{}.wav", Uuid::now_v7()), b"RIFF");
    assert_eq!(sync(&app, "acme").await["fetched"], 1);
    // Without recordings, they stop being fetched and the password is forgotten.
    let res = put(Value::Null).await;
    assert_eq!(res.json::<Value>().await.unwrap()["recordings"], Value::Null);
    let cleared: Option<String> =
        db.query_one("SELECT recordings_password_enc FROM pbx_settings", &[]).await.unwrap().get(0);
    assert_eq!(cleared, None);
    assert_problem(sync_as(&app, "acme").await, 409, "recordings_not_configured").await;
}

#[tokio::test]
async fn recordings_are_fetched_over_explicit_ftps_verified_with_the_company_ca() {
    let (ftp, ca_pem) = FtpServer::start_ftps().await;
    let app = spawn_app().await;
    recordings_only(&app, "acme", &ftp, json!({"ftps": true, "ca_pem": ca_pem})).await;
    let bytes = awkward_bytes(200_000);
    ftp.put(&format!("{}.wav", Uuid::now_v7()), &bytes);
    assert_eq!(sync(&app, "acme").await["fetched"], 1);
    let items = list(&app, "acme", "").await;
    assert!(audio(&app, items[0]["audio_url"].as_str().unwrap(), &app.admin("acme")).await == bytes);

    recordings_only(&app, "acme", &ftp, json!({"ftps": true})).await;
    let problem = assert_problem(sync_as(&app, "acme").await, 502, "ftp_tls_failed").await;
    assert!(problem["detail"].as_str().unwrap().contains("certificate"), "{problem}");
}
