//! Recordings fetched over SFTP (issue 28) from a real OpenSSH sshd (support/sshd.rs): the host key
//! pinned in the settings, a private key (ed25519, RSA) or a password to log in, the same claiming,
//! naming and binding as FTP; a changed host key or a wrong password is diagnosed as FTP's are.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::recordings::{awkward_bytes, list, sha256_hex, sync};
use crate::support::sshd::{self, SshServer};
use crate::support::{self, assert_problem, spawn_app, TestApp};

/// The user the tests log in as with a key: whoever runs them (root in scripts/test).
fn current_user() -> String {
    let out = std::process::Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn source(server: &SshServer, extra: Value) -> Value {
    let mut source = json!({
        "protocol": "sftp", "host": "127.0.0.1", "port": server.port, "host_key": server.fingerprint,
        "username": current_user(), "directory": server.root.to_str().unwrap(), "poll_interval_s": 3600,
    });
    for (k, v) in extra.as_object().unwrap() {
        source[k] = v.clone();
    }
    source
}

async fn save(app: &TestApp, tenant: &str, source: Value) -> reqwest::Response {
    let mut settings = support::pbx_settings_json(1);
    settings["recordings"] = source;
    app.put("/v1/admin/pbx", &app.admin(tenant), settings).await
}

fn keys(dir: &std::path::Path) -> (String, String, Vec<String>) {
    let ed = sshd::keygen(&dir.join("client_ed25519"), "ed25519");
    let rsa = sshd::keygen(&dir.join("client_rsa"), "rsa");
    let public = ["client_ed25519.pub", "client_rsa.pub"]
        .iter()
        .map(|f| std::fs::read_to_string(dir.join(f)).unwrap().trim().to_owned())
        .collect();
    (ed, rsa, public)
}

fn key_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dialback-keys-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn recordings_are_fetched_over_sftp_with_the_host_key_pinned_and_a_private_key() {
    let dir = key_dir();
    let (ed25519, rsa, public) = keys(&dir);
    let server = SshServer::start(&public).await;
    let app = spawn_app().await;
    let res = save(&app, "acme", source(&server, json!({"private_key": ed25519}))).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let view: Value = app.get_as("/v1/admin/pbx", &app.admin("acme")).await.json().await.unwrap();
    let shown = &view["recordings"];
    assert_eq!((shown["protocol"].as_str(), shown["password_set"].as_bool()), (Some("sftp"), Some(true)), "{view}");
    assert!(shown.get("private_key").is_none() && !view.to_string().contains("PRIVATE KEY"), "write-only: {view}");

    let (small, large) = (awkward_bytes(999), awkward_bytes(300 * 1024 + 7));
    server.put(&format!("{}.wav", Uuid::now_v7()), &small);
    server.put(&format!("{}.wav", Uuid::now_v7()), &large);
    let report = sync(&app, "acme").await;
    assert_eq!((report["seen"].as_u64(), report["fetched"].as_u64()), (Some(2), Some(2)), "{report}");
    let listed = list(&app, "acme", "").await;
    for recording in &listed {
        let url = app.url(recording["audio_url"].as_str().unwrap());
        let body = app.exec(app.http.get(&url)).await.bytes().await.unwrap();
        assert_eq!(sha256_hex(&body), recording["sha256"].as_str().unwrap());
        assert!(body[..] == small[..] || body[..] == large[..]);
    }
    // Fetched once: the next run finds nothing new.
    assert_eq!(sync(&app, "acme").await["fetched"], 0);

    // An RSA key logs in too (signed with SHA-2: OpenSSH refuses SHA-1 RSA signatures).
    let res = save(&app, "acme", source(&server, json!({"private_key": rsa}))).await;
    assert_eq!(res.status(), 200);
    server.put(&format!("{}.wav", Uuid::now_v7()), &awkward_bytes(2024));
    assert_eq!(sync(&app, "acme").await["fetched"], 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_host_key_other_than_the_pinned_one_is_refused_and_named() {
    let dir = key_dir();
    let (ed25519, _, public) = keys(&dir);
    let server = SshServer::start(&public).await;
    let app = spawn_app().await;
    let pinned = "SHA256:SQiFaty8BNfyGqcwidXdpzph1pVRLs7llTt/GxlKwpI";
    let res = save(&app, "acme", source(&server, json!({"private_key": ed25519, "host_key": pinned}))).await;
    assert_eq!(res.status(), 200);
    server.put(&format!("{}.wav", Uuid::now_v7()), &awkward_bytes(100));
    let res = app.send(reqwest::Method::POST, "/v1/admin/recordings/sync", &app.admin("acme"), None).await;
    let problem = assert_problem(res, 502, "sftp_host_key_mismatch").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains(&server.fingerprint) && detail.contains(pinned), "names both keys: {detail}");
    assert!(list(&app, "acme", "").await.is_empty(), "nothing was fetched from it");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_password_logs_in_and_a_wrong_one_is_named() {
    if !sshd::is_root() {
        // sshd checks passwords only as root; scripts/test runs the suite as root.
        eprintln!("a_password_logs_in_and_a_wrong_one_is_named: skipped, sshd needs root to check a password");
        return;
    }
    let password = SshServer::password_user();
    let server = SshServer::start(&[]).await;
    let app = spawn_app().await;
    let login = json!({"username": sshd::PASSWORD_USER, "password": password});
    assert_eq!(save(&app, "acme", source(&server, login)).await.status(), 200);
    let bytes = awkward_bytes(4096);
    server.put(&format!("{}.wav", Uuid::now_v7()), &bytes);
    assert_eq!(sync(&app, "acme").await["fetched"], 1);

    let wrong = json!({"username": sshd::PASSWORD_USER, "password": "not-the-password"});
    assert_eq!(save(&app, "acme", source(&server, wrong)).await.status(), 200);
    let res = app.send(reqwest::Method::POST, "/v1/admin/recordings/sync", &app.admin("acme"), None).await;
    let problem = assert_problem(res, 502, "ftp_login_failed").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains(sshd::PASSWORD_USER) && detail.contains("recordings.password"), "{detail}");
}

#[tokio::test]
async fn sftp_settings_are_checked_field_by_field() {
    let app = spawn_app().await;
    let base = json!({"protocol": "sftp", "host": "pbx.example.com", "username": "rec", "password": "pw"});
    let cases = [
        (json!({}), "recordings.host_key"),
        (json!({"host_key": "MD5:ab:cd"}), "recordings.host_key"),
        (json!({"host_key": "SHA256:SQiFaty8BNfyGqcwidXdpzph1pVRLs7llTt/GxlKwpI", "ftps": true}), "recordings.ftps"),
        (
            json!({"host_key": "SHA256:SQiFaty8BNfyGqcwidXdpzph1pVRLs7llTt/GxlKwpI", "private_key": "not a key"}),
            "recordings.private_key",
        ),
        (
            json!({"protocol": "ftp", "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----"}),
            "recordings.private_key",
        ),
        (
            json!({"protocol": "ftp", "host_key": "SHA256:SQiFaty8BNfyGqcwidXdpzph1pVRLs7llTt/GxlKwpI"}),
            "recordings.host_key",
        ),
    ];
    for (extra, field) in cases {
        let mut source = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            source[k] = v.clone();
        }
        let problem = assert_problem(save(&app, "acme", source.clone()).await, 422, "invalid_field").await;
        assert_eq!(problem["field"], field, "{source}: {problem}");
    }
    // The port defaults to SSH's.
    let ok = json!({"protocol": "sftp", "host": "pbx.example.com", "username": "rec", "password": "pw",
                    "host_key": "SHA256:SQiFaty8BNfyGqcwidXdpzph1pVRLs7llTt/GxlKwpI"});
    let res = save(&app, "acme", ok).await;
    assert_eq!(res.status(), 200);
    let saved: Value = res.json().await.unwrap();
    assert_eq!(saved["recordings"]["port"], 22, "{saved}");
}
