//! Recordings in an S3-compatible store (issue 28), a real one (s3s-fs over HTTP): two dialbacks
//! with local directories of their own share one bucket, so a recording one fetched is served by
//! the other, with Range; a host's files are copied into the bucket by `dialback recordings
//! migrate`, verified and resumable.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::recordings::{awkward_bytes, list, recordings_only, sha256_hex, sync};
use crate::support::ftp::FtpServer;
use crate::support::s3::S3Server;
use crate::support::{self, TestApp};

async fn app_on_bucket(s3: &S3Server, url: &str, database: Option<String>) -> TestApp {
    let mut builder = support::app().set("recordings", s3.settings(url));
    if let Some(database) = database {
        builder = builder.existing_database(database);
    }
    builder.spawn().await
}

#[tokio::test]
async fn a_recording_fetched_by_one_host_is_served_by_another_from_the_shared_bucket() {
    let s3 = S3Server::start("calls").await;
    let ftp = FtpServer::start().await;
    let first = app_on_bucket(&s3, "s3://calls/dialback", None).await;
    let second = app_on_bucket(&s3, "s3://calls/dialback", Some(first.database_url.clone())).await;
    recordings_only(&first, "acme", &ftp, json!({})).await;
    // Larger than one 5 MiB part: the upload is a multipart one of two parts.
    let bytes = awkward_bytes(5 * 1024 * 1024 + 4321);
    ftp.put(&format!("{}.wav", Uuid::now_v7()), &bytes);
    let report = sync(&first, "acme").await;
    assert_eq!(report["fetched"], 1, "{report}");

    let objects = s3.objects("calls");
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert!(objects[0].starts_with(s3.root.join("calls/dialback")), "{objects:?}");
    assert_eq!(std::fs::read(&objects[0]).unwrap(), bytes, "the object holds the recording byte for byte");
    for app in [&first, &second] {
        let dir = app.config.recordings_dir.clone().unwrap();
        assert!(support::ftp::files_under(&dir).is_empty(), "nothing is kept on the host: {dir:?}");
    }

    // The other host serves it, whole and by ranges across the parts.
    let recording = list(&second, "acme", "").await[0].clone();
    assert_eq!(recording["sha256"], sha256_hex(&bytes), "{recording}");
    let url = second.url(recording["audio_url"].as_str().unwrap());
    let whole = second.exec(second.http.get(&url)).await;
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.bytes().await.unwrap().as_ref(), &bytes[..]);
    let boundary = 5 * 1024 * 1024;
    for (first_byte, last_byte) in [(0, 99), (boundary - 10, boundary + 10), (bytes.len() - 100, bytes.len() - 1)] {
        let res = second.exec(second.http.get(&url).header("range", format!("bytes={first_byte}-{last_byte}"))).await;
        assert_eq!(res.status(), 206);
        assert_eq!(res.bytes().await.unwrap().as_ref(), &bytes[first_byte..=last_byte], "{first_byte}-{last_byte}");
    }
}

#[tokio::test]
async fn a_hosts_recordings_are_copied_to_the_bucket_verified_and_the_copy_resumes() {
    let ftp = FtpServer::start().await;
    // A host keeping recordings on its disk, as before.
    let local = support::spawn_app().await;
    recordings_only(&local, "acme", &ftp, json!({})).await;
    let recordings: Vec<Vec<u8>> = (0..3).map(|n| awkward_bytes(1000 + n * 777)).collect();
    for bytes in &recordings {
        ftp.put(&format!("{}.wav", Uuid::now_v7()), bytes);
    }
    assert_eq!(sync(&local, "acme").await["fetched"], 3);
    let dir = local.config.recordings_dir.clone().unwrap();

    let s3 = S3Server::start("calls").await;
    let migrate = || {
        let s3 = s3.settings("s3://calls/moved");
        tokio::process::Command::new(env!("CARGO_BIN_EXE_dialback"))
            .args(["recordings", "migrate"])
            .env("DIALBACK_DATABASE_URL", &local.database_url)
            .env("DIALBACK_JWT_SECRET", support::JWT_SECRET)
            .env("DIALBACK_SECRETS_KEY", "ab".repeat(32))
            .env("DIALBACK_RECORDINGS_DIR", &dir)
            .env("DIALBACK_RECORDINGS__URL", s3["url"].as_str().unwrap())
            .env("AWS_ENDPOINT_URL", s3["s3"]["endpoint"].as_str().unwrap())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", support::s3::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", support::s3::SECRET_KEY)
            .env("AWS_ALLOW_HTTP", "true")
            .output()
    };
    // One object is in the bucket already but wrong (a copy cut short before): it is copied again.
    let first_key = {
        let db = support::connect(&local.database_url).await;
        let row = db.query_one("SELECT storage_key FROM recordings ORDER BY id LIMIT 1", &[]).await.unwrap();
        row.get::<_, String>(0)
    };
    let wrong = s3.root.join("calls/moved").join(&first_key);
    std::fs::create_dir_all(wrong.parent().unwrap()).unwrap();
    std::fs::write(&wrong, b"not the recording").unwrap();

    let out = migrate().await.unwrap();
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{progress}");
    assert!(progress.contains("[3/3]") && progress.contains("3 copied"), "{progress}");
    let again = migrate().await.unwrap();
    let progress = String::from_utf8_lossy(&again.stderr);
    assert!(
        again.status.success() && progress.contains("0 copied") && progress.contains("3 already there"),
        "{progress}"
    );

    // A host on the bucket now serves what the first host fetched.
    let moved = app_on_bucket(&s3, "s3://calls/moved", Some(local.database_url.clone())).await;
    let listed: Vec<Value> = list(&moved, "acme", "").await;
    assert_eq!(listed.len(), 3);
    for recording in listed {
        let res = moved.exec(moved.http.get(moved.url(recording["audio_url"].as_str().unwrap()))).await;
        let body = res.bytes().await.unwrap();
        assert_eq!(sha256_hex(&body), recording["sha256"].as_str().unwrap());
        assert!(recordings.iter().any(|r| r[..] == body[..]));
    }
}

#[tokio::test]
async fn a_bucket_that_refuses_the_keys_fails_the_download_with_why_and_keeps_nothing() {
    let s3 = S3Server::start("calls").await;
    let ftp = FtpServer::start().await;
    let mut settings = s3.settings("s3://calls/dialback");
    settings["s3"]["secret_access_key"] = json!("not-the-secret");
    let app = support::app().set("recordings", settings).spawn().await;
    recordings_only(&app, "acme", &ftp, json!({})).await;
    ftp.put(&format!("{}.wav", Uuid::now_v7()), &awkward_bytes(2000));
    let report = sync(&app, "acme").await;
    assert_eq!((report["fetched"].as_u64(), report["failed"].as_u64()), (Some(0), Some(1)), "{report}");
    let failed = list(&app, "acme", "").await[0].clone();
    let error = failed["last_error"].as_str().unwrap();
    assert!(error.contains("SignatureDoesNotMatch") || error.contains("403"), "the store's answer: {error}");
    assert!(s3.objects("calls").is_empty());
}

#[tokio::test]
async fn a_deleted_recording_leaves_the_bucket() {
    let s3 = S3Server::start("calls").await;
    let ftp = FtpServer::start().await;
    let app = app_on_bucket(&s3, "s3://calls/dialback", None).await;
    recordings_only(&app, "acme", &ftp, json!({})).await;
    ftp.put(&format!("{}.wav", Uuid::now_v7()), &awkward_bytes(3000));
    assert_eq!(sync(&app, "acme").await["fetched"], 1);
    assert_eq!(s3.objects("calls").len(), 1);
    let id = list(&app, "acme", "").await[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(app.delete(&format!("/v1/recordings/{id}"), &app.admin("acme")).await.status(), 204);
    assert!(s3.objects("calls").is_empty(), "{:?}", s3.objects("calls"));
}
