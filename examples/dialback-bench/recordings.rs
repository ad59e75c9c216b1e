//! `recordings`: one company's recordings sync over a real FTP server, timed by the sync itself:
//! files and bytes fetched and stored per second, into whatever the dialback under test keeps
//! recordings in (its directory, or an object store). The files must be on the FTP server already,
//! under `--ftp-root`. A first sync notes them, and while it waits to see whether they are still
//! growing each grows by a byte (as a recording being written would), so it leaves them; the
//! measured sync then finds them settled and fetches them all, with no wait of its own.

use std::time::Duration;

use dialback::auth::Role;

use crate::load::Api;
use crate::stats::Figures;

/// How long the sync waits before fetching files whose name names no ended call (sync.rs SETTLE).
const SETTLE: Duration = Duration::from_millis(2500);

async fn call(
    api: &Api,
    tenant: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let token = api.token(tenant, Role::Admin, "bench-admin")?;
    let http = reqwest::Client::new();
    let mut request = http.request(method, format!("http://{}{path}", api.addr)).bearer_auth(token);
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(serde_json::to_vec(&body)?);
    }
    let response = http.execute(request.build()?).await?;
    let status = response.status();
    let text = response.text().await?;
    anyhow::ensure!(status.is_success(), "{path} answered {status}: {text}");
    Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

/// Appends a byte to every file under `root`.
fn grow(root: &std::path::Path) -> anyhow::Result<u64> {
    use std::io::Write;
    let mut grown = 0;
    for entry in std::fs::read_dir(root)? {
        let path = entry?.path();
        std::fs::OpenOptions::new().append(true).open(&path)?.write_all(b"\0")?;
        grown += 1;
    }
    Ok(grown)
}

pub async fn run(
    api: &Api,
    tenant: &str,
    ftp_port: u16,
    ftp_root: &std::path::Path,
    files: u64,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    // Recordings come from a PBX: one that is never called (nothing listens on port 1).
    let settings = serde_json::json!({
        "host": "127.0.0.1", "port": 1, "username": "bench", "secret": "bench",
        "channel_template": "PJSIP/{NUMBER}@trunk", "office_phone": "+74951234567",
        "recordings": {"host": "127.0.0.1", "port": ftp_port, "username": "recordings", "password": "recordings",
                        "directory": "/", "poll_interval_s": 86400},
    });
    call(api, tenant, reqwest::Method::PUT, "/v1/admin/pbx", Some(settings)).await?;
    let first = {
        let (api, tenant) = (Api { addr: api.addr, config: api.config.clone() }, tenant.to_owned());
        tokio::spawn(async move { call(&api, &tenant, reqwest::Method::POST, "/v1/admin/recordings/sync", None).await })
    };
    // The first sync lists at once, then waits SETTLE before checking sizes: grow them meanwhile.
    tokio::time::sleep(SETTLE / 4).await;
    grow(ftp_root)?;
    let noted = first.await??;
    anyhow::ensure!(
        noted["new"].as_u64() == Some(files) && noted["waiting"].as_u64() == Some(files),
        "the first sync should have noted {files} new files, all still growing: {noted}"
    );
    tokio::time::sleep(SETTLE).await;
    let report = call(api, tenant, reqwest::Method::POST, "/v1/admin/recordings/sync", None).await?;
    let fetched = report["fetched"].as_u64().unwrap_or(0);
    anyhow::ensure!(fetched == files && report["failed"] == 0, "the measured sync: {report}");
    let seconds = report["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0;
    let bytes = report["bytes"].as_f64().unwrap_or(0.0);
    figures.count("files", fetched);
    figures.count("bytes", bytes as u64);
    figures.num("seconds", seconds);
    figures.num("files_per_s", fetched as f64 / seconds);
    figures.num("mb_per_s", bytes / 1e6 / seconds);
    eprintln!("recordings: {fetched} files, {bytes} bytes in {seconds:.2} s");
    Ok(())
}
