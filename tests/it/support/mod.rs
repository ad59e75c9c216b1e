//! The test harness: a fresh database per test cloned from a migrated template, the app on port 0,
//! and a chaos proxy to cut links.

// Not every helper is used by every group of tests at every stage.
#![allow(dead_code)]

pub mod examples;
pub mod ftp;
pub mod jwks;
pub mod process;
pub mod proxy;
pub mod receiver;
pub mod s3;
pub mod spec;
pub mod sse;
pub mod sshd;
pub mod transcript;
pub mod wait;
pub mod webdriver;

use dialback::domain::company::TenantId;
use std::sync::Once;

use dialback::config::Config;
use dialback::startup::Application;
use figment::providers::Serialized;
use figment::Figment;
use secrecy::SecretString;

pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef";

/// A company name no other test uses: `cargo test` runs every test as a thread of one process, so
/// what is process-wide (the metrics `/metrics` shows, labelled by tenant) is shared by every app
/// the tests start. A test that reads a company's metrics names its company with this.
pub fn unique_tenant(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// The value of the series `name{labels}` in Prometheus text (`labels` as `k="v"` pairs, all of
/// which the series must carry), if it is there.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let rest = series.strip_prefix(name)?.strip_prefix('{')?;
        labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))).then(|| value.parse().ok())?
    })
}

/// An HTTP client for the tests. dialback's reqwest has rustls without a default crypto provider
/// (it brings its own, crates/ami/src/tls.rs), so the process's default is installed here first.
pub fn http_client() -> reqwest::Client {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
    // dialback (actix-web) closes a keep-alive connection idle for 5 s. A pooled connection reused
    // just as the server closes it fails the request (IncompleteMessage), which a test waiting
    // longer between two requests on a loaded machine ran into: the client lets go first.
    reqwest::Client::builder()
        .pool_idle_timeout(std::time::Duration::from_secs(2))
        .build()
        .expect("the tests' HTTP client")
}

/// The Python of the venv `scripts/test` (and `scripts/demo`) create with `ensure_venv` in
/// scripts/lib.sh, which has the tools the test servers need (`what`, for the message).
pub fn venv_python(what: &str) -> std::path::PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache"));
    let python = cache.join("dialback/venv/bin/python");
    assert!(
        python.exists(),
        "these tests need {what} from the project venv, and {} does not exist: run scripts/test (it creates \
         the venv), or `source scripts/lib.sh && ensure_venv`",
        python.display()
    );
    python
}

fn admin_url() -> String {
    std::env::var("DIALBACK_TEST_DATABASE_URL").expect(
        "DIALBACK_TEST_DATABASE_URL is not set: run the suite with scripts/test, which starts a throwaway PostgreSQL",
    )
}

fn with_database(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("database URL has a path");
    format!("{base}/{db}")
}

/// A plain connection to a test database (to look at or change rows behind the app's back).
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect to test PostgreSQL");
    tokio::spawn(conn);
    client
}

/// The statuses a callback passed through, oldest first: one per event (its history), read
/// straight from PostgreSQL.
pub async fn statuses(db: &tokio_postgres::Client, id: &str) -> Vec<String> {
    db.query("SELECT data::json->>'status' FROM events WHERE subject_id = $1::text::uuid ORDER BY sequence", &[&id])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A new database with the current schema, cloned from a template migrated once per cluster.
pub async fn fresh_database() -> String {
    let admin_url = admin_url();
    let admin = connect(&admin_url).await;
    // Serialises template creation and cloning across test processes (nextest runs each test in
    // its own process); a template must have no open sessions while it is cloned.
    admin.execute("SELECT pg_advisory_lock(4242)", &[]).await.unwrap();
    // Named after the migrations' checksums: an edited or added migration gets a template of its own.
    let checksums = dialback::store::migrations::runner()
        .get_migrations()
        .iter()
        .fold(0u64, |acc, m| acc.rotate_left(7) ^ m.checksum());
    let template = format!("dialback_template_{checksums:016x}");
    let exists = admin.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&template]).await.unwrap().is_some();
    if !exists {
        admin.batch_execute(&format!("CREATE DATABASE {template}")).await.unwrap();
        dialback::store::migrations::run_url(
            &SecretString::from(with_database(&admin_url, &template)),
            &Default::default(),
        )
        .await
        .unwrap();
    }
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    admin.batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}")).await.unwrap();
    admin.execute("SELECT pg_advisory_unlock(4242)", &[]).await.unwrap();
    with_database(&admin_url, &name)
}

/// A directory of its own for a test's recordings, under Cargo's scratch directory for tests
/// (`target/tmp`): an app keeps running until the test process ends, so nothing would remove it
/// from the system's temporary directory.
pub fn recordings_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dialback-rec-{}", uuid::Uuid::new_v4().simple()))
}

pub fn init_test_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            dialback::telemetry::init_logging("pretty");
        }
    });
}

/// A config for tests: port 0, one worker, the test JWT secret, the given database. Waits for the
/// database are generous: a loaded machine must not turn into a spurious 503 (the outage tests cut
/// links, which fails at once whatever the timeout).
pub fn test_config(database_url: &str) -> Figment {
    Figment::new().merge(Serialized::defaults(serde_json::json!({
        "database_url": database_url,
        "listen": "127.0.0.1:0",
        "jwt_secret": JWT_SECRET,
        "secrets_key": "ab".repeat(32),
        "recordings_dir": recordings_dir(),
        "http": { "workers": 1, "shutdown_timeout_s": 5 },
        "db": { "pool_size": 4, "timeout_ms": 30000 },
        // The tests' webhook receivers listen on 127.0.0.1 over plain HTTP.
        "webhooks": { "allow_http": true, "allow_private_targets": true },
        // Each app its own FastAGI port.
        "agi": { "listen": "127.0.0.1:0" },
    })))
}

#[derive(Clone)]
pub struct TestApp {
    pub address: String,
    /// Where its FastAGI server listens.
    pub agi_port: Option<u16>,
    pub database_url: String,
    pub config: Config,
    pub http: reqwest::Client,
}

pub struct TestAppBuilder {
    figment: Figment,
    database_url: Option<String>,
    existing_database: Option<String>,
}

impl TestAppBuilder {
    /// Overrides one setting, e.g. `.set("http.body_limit_bytes", 1024)`.
    pub fn set(mut self, key: &str, value: impl serde::Serialize) -> Self {
        self.figment = self.figment.merge(Serialized::default(key, value));
        self
    }

    /// Points the app at another database URL (e.g. through a chaos proxy) after migrating `real`.
    pub fn database_via(mut self, url: String) -> Self {
        self.database_url = Some(url);
        self
    }

    /// Uses a database that already exists (a second replica, or the app after a restart).
    pub fn existing_database(mut self, url: String) -> Self {
        self.existing_database = Some(url);
        self
    }

    pub async fn spawn(self) -> TestApp {
        init_test_logging();
        let real = match self.existing_database {
            Some(url) => url,
            None => fresh_database().await,
        };
        let db_url =
            self.database_url.map(|via| with_database(&via, real.rsplit('/').next().unwrap())).unwrap_or(real.clone());
        let config = Config::from_figment(self.figment.merge(Serialized::default("database_url", &db_url)))
            .expect("test config");
        let app = Application::build(config.clone()).await.expect("app builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let agi_port = app.agi_port();
        tokio::spawn(app.run_until_stopped());
        TestApp { address, agi_port, database_url: real, config, http: crate::support::http_client() }
    }
}

pub fn app() -> TestAppBuilder {
    TestAppBuilder {
        figment: test_config("postgres://unused@127.0.0.1/unused"),
        database_url: None,
        existing_database: None,
    }
}

pub async fn spawn_app() -> TestApp {
    app().spawn().await
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.exec(self.http.get(self.url(path))).await
    }

    /// Sends a request and checks the answer against openapi.yaml (every request of the tests goes
    /// through here; clippy.toml forbids `send()` elsewhere).
    #[allow(clippy::disallowed_methods)]
    pub async fn try_exec(&self, request: reqwest::RequestBuilder) -> reqwest::Result<reqwest::Response> {
        let request = request.build()?;
        let (method, path) = (request.method().as_str().to_owned(), request.url().path().to_owned());
        let response = self.http.execute(request).await?;
        Ok(spec::checked(&method, &path, response).await)
    }

    pub async fn exec(&self, request: reqwest::RequestBuilder) -> reqwest::Response {
        self.try_exec(request).await.expect("request sent")
    }
}

/// Asserts a problem+json response with the given status and code; returns the body.
pub async fn assert_problem(res: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(res.status().as_u16(), status, "unexpected status");
    let ct = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    assert_eq!(ct, "application/problem+json");
    let body: serde_json::Value = res.json().await.expect("problem body is JSON");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string() && body["detail"].is_string() && body["type"].is_string(), "{body}");
    body
}

/// PBX settings pointing at a simulator on `port` (the tests' usual company).
pub fn pbx_settings_json(port: u16) -> serde_json::Value {
    serde_json::json!({
        "host": "127.0.0.1", "port": port, "tls": false, "username": "dialback", "secret": "dialback",
        "channel_template": "PJSIP/{NUMBER}@trunk", "context": "from-courier",
        "office_extension": "101", "office_phone": "+74951234567", "caller_id": "+74951234567",
        "default_region": "RU", "dial_format": "digits", "originate_timeout_s": 5,
        "destination_policy": "orders", "allowed_countries": ["RU", "KZ"]
    })
}

/// The demo-like company every callback test uses: courier-1 (+79001112233) with order A-1001
/// (+79161234567); the PBX is whatever `pbx` points at.
pub const COURIER_PHONE: &str = "+79001112233";
pub const CLIENT_PHONE: &str = "+79161234567";

impl TestApp {
    pub fn token(&self, tenant: &str, role: dialback::auth::Role, sub: &str) -> String {
        dialback::auth::mint(&self.config, tenant, role, sub, 600).unwrap()
    }

    pub fn admin(&self, tenant: &str) -> String {
        self.token(tenant, dialback::auth::Role::Admin, "admin-1")
    }

    /// The deployment's operator (the deployment's own HS256 secret, no company).
    pub fn operator(&self) -> String {
        self.token("", dialback::auth::Role::Operator, "ops-1")
    }

    pub fn courier(&self, tenant: &str, courier: &str) -> String {
        self.token(tenant, dialback::auth::Role::Courier, courier)
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> reqwest::Response {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.exec(req).await
    }

    pub async fn put(&self, path: &str, token: &str, body: serde_json::Value) -> reqwest::Response {
        self.send(reqwest::Method::PUT, path, token, Some(body)).await
    }

    pub async fn post(&self, path: &str, token: &str, body: serde_json::Value) -> reqwest::Response {
        self.send(reqwest::Method::POST, path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> reqwest::Response {
        self.send(reqwest::Method::DELETE, path, token, None).await
    }

    pub async fn get_as(&self, path: &str, token: &str) -> reqwest::Response {
        self.send(reqwest::Method::GET, path, token, None).await
    }

    /// PBX settings pointing at `host:port`, merged with `overrides`.
    pub async fn configure_pbx(&self, tenant: &str, port: u16, overrides: serde_json::Value) {
        let mut settings = pbx_settings_json(port);
        for (k, v) in overrides.as_object().unwrap() {
            settings[k] = v.clone();
        }
        let res = self.put("/v1/admin/pbx", &self.admin(tenant), settings).await;
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }

    pub async fn add_courier(&self, tenant: &str, id: &str, phone: &str) {
        let res = self
            .put(
                &format!("/v1/admin/couriers/{id}"),
                &self.admin(tenant),
                serde_json::json!({"phone": phone, "name": id}),
            )
            .await;
        assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    }

    pub async fn add_order(&self, tenant: &str, id: &str, courier: &str, phones: &[&str]) {
        let res = self
            .put(
                &format!("/v1/admin/orders/{id}"),
                &self.admin(tenant),
                serde_json::json!({"courier_id": courier, "phones": phones, "state": "active"}),
            )
            .await;
        assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    }

    /// The demo company: PBX at `port`, courier-1 and order A-1001.
    pub async fn seed(&self, tenant: &str, port: u16) {
        self.configure_pbx(tenant, port, serde_json::json!({})).await;
        self.add_courier(tenant, "courier-1", COURIER_PHONE).await;
        self.add_order(tenant, "A-1001", "courier-1", &[CLIENT_PHONE]).await;
    }

    /// Couriers anna (answers) and boris (his phone is busy), an order each, and three client
    /// callbacks placed through the API and followed to their end: one completes, one finds the
    /// client busy (anna's second number), one the courier's phone busy (boris).
    pub async fn three_finished_calls(&self, tenant: &str) {
        self.add_courier(tenant, "anna", COURIER_PHONE).await;
        self.add_courier(tenant, "boris", "+79001112230").await;
        self.add_order(tenant, "A-1", "anna", &[CLIENT_PHONE, "+79161234560"]).await;
        self.add_order(tenant, "B-1", "boris", &[CLIENT_PHONE]).await;
        for (courier, order, to) in
            [("anna", "A-1", CLIENT_PHONE), ("anna", "A-1", "+79161234560"), ("boris", "B-1", CLIENT_PHONE)]
        {
            let token = self.courier(tenant, courier);
            let body = serde_json::json!({"target": "client", "to": to, "order_id": order});
            let res = self.post("/v1/callbacks", &token, body).await;
            assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
            let id = res.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
            self.wait_terminal(&id, &token).await;
        }
    }

    /// The callback as `token` sees it.
    pub async fn callback(&self, id: &str, token: &str) -> serde_json::Value {
        self.get_as(&format!("/v1/callbacks/{id}"), token).await.json().await.unwrap()
    }

    /// Polls a callback until it reaches a terminal status.
    pub async fn wait_terminal(&self, id: &str, token: &str) -> serde_json::Value {
        wait::eventually(format!("callback {id} to end"), || async {
            let body = self.callback(id, token).await;
            let status = body["status"].as_str().unwrap_or_default();
            if ["completed", "failed", "canceled", "refused", "unknown"].contains(&status) {
                Ok(body)
            } else {
                Err(body)
            }
        })
        .await
    }

    /// The callback as an admin sees it once Asterisk's CDR of its courier channel has come (the
    /// last word on a call).
    pub async fn callback_with_cdr(&self, tenant: &str, id: &str) -> serde_json::Value {
        wait::eventually(format!("the CDR of {id}"), || async {
            let call = self.callback(id, &self.admin(tenant)).await;
            if call["cdr"]["courier"].is_object() {
                Ok(call)
            } else {
                Err(call)
            }
        })
        .await
    }

    /// Polls until the callback has `status`.
    pub async fn wait_status(&self, id: &str, token: &str, want: &str) -> serde_json::Value {
        wait::eventually(format!("callback {id} to be {want}"), || async {
            let body = self.callback(id, token).await;
            if body["status"] == want {
                Ok(body)
            } else {
                Err(body)
            }
        })
        .await
    }
}

/// An attempt of courier-1 (of company acme) to call the client, as the store writes it: for
/// tests that write rows behind the API's back.
pub fn attempt_row(
    id: uuid::Uuid,
    status: dialback::domain::callback::Status,
) -> dialback::store::callbacks::CallbackRow {
    let now = dialback::store::now();
    dialback::store::callbacks::CallbackRow {
        id,
        tenant_id: TenantId::stored("acme"),
        courier_id: "courier-1".into(),
        target: dialback::domain::callback::Target::Client,
        order_id: Some("A-1001".into()),
        to_number: Some(CLIENT_PHONE.into()),
        courier_number: Some(COURIER_PHONE.into()),
        detail: None,
        action_id: None,
        created_at: now,
        updated_at: now,
        sequence: 1,
        state: dialback::domain::callback::CallState::new(status),
    }
}

/// Writes `row` (see [`attempt_row`]) straight to the store, with a placeholder first event.
pub async fn insert_attempt(db: &deadpool_postgres::Client, row: &dialback::store::callbacks::CallbackRow) {
    use dialback::store::callbacks::{insert, Inserted, NewCallback};
    let event = serde_json::json!({ "status": row.state.status.as_str() }).to_string();
    let new = NewCallback { row, event: &event, claim: None, decided_on: None, owner: None };
    assert!(matches!(insert(db, &new).await.unwrap(), Inserted::Written { .. }));
}

/// A PBX simulator on a free port with quick phones (ring 50 ms, talk 1 s, leg-2 Dial timeout
/// 2 s), changed by `tweak`.
pub async fn sim_with(tweak: impl FnOnce(&mut dialback_pbx_sim::SimConfig)) -> dialback_pbx_sim::Simulator {
    init_test_logging();
    let mut config = dialback_pbx_sim::SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        talk: std::time::Duration::from_secs(1),
        ring: std::time::Duration::from_millis(50),
        dial_timeout: std::time::Duration::from_secs(2),
        ..Default::default()
    };
    tweak(&mut config);
    dialback_pbx_sim::Simulator::start(config).await.expect("simulator starts")
}

/// The company's PBX as its admin would set it up: dialback's settings saved with `overrides`,
/// the dialplan they download (`GET /v1/admin/pbx/dialplan`) loaded into a quick simulator
/// (changed by `tweak`), and the settings pointed at it. Returns the simulator and the file.
pub async fn sim_running_the_downloaded_dialplan(
    app: &TestApp,
    tenant: &str,
    overrides: serde_json::Value,
    tweak: impl FnOnce(&mut dialback_pbx_sim::SimConfig),
) -> (dialback_pbx_sim::Simulator, String) {
    // The dialplan does not depend on where the PBX is: a port nobody listens on will do first.
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    app.configure_pbx(tenant, nowhere, overrides.clone()).await;
    let res = app.get_as("/v1/admin/pbx/dialplan", &app.admin(tenant)).await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    let dialplan = dialback_pbx_sim::dialplan::Dialplan::parse(&text)
        .unwrap_or_else(|e| panic!("the generated dialplan loads as extensions.conf: {e}\n{text}"));
    let sim = sim_with(|c| {
        c.dialplan = Some(std::sync::Arc::new(dialplan));
        tweak(c);
    })
    .await;
    app.configure_pbx(tenant, sim.addr().port(), overrides).await;
    (sim, text)
}

pub async fn quick_sim() -> dialback_pbx_sim::Simulator {
    sim_with(|_| {}).await
}

/// Another AMI session on a simulator, logged in before the calls it watches are placed: Asterisk
/// sends every event to every session, so it sees what dialback's own session sees. It notes the
/// end of each call as the events are read (never falling behind a burst).
pub struct AmiObserver {
    client: dialback::ami::AmiClient,
    /// (call ids whose courier channel hung up, call ids whose CDR was posted)
    seen: std::sync::Arc<std::sync::Mutex<(std::collections::HashSet<String>, std::collections::HashSet<String>)>>,
}

impl AmiObserver {
    pub async fn start(port: u16) -> AmiObserver {
        use dialback::ami::client::PbxSignal;
        use dialback::ami::AmiEvent;
        let config = dialback::ami::ClientConfig {
            label: std::sync::Arc::from("observer"),
            endpoint: dialback::ami::transport::Endpoint {
                host: "127.0.0.1".into(),
                port,
                tls: false,
                ca_pem: None,
                http_prefix: None,
            },
            username: "dialback".into(),
            secret: SecretString::from("dialback"),
            connect_timeout: wait::patience(),
            action_timeout: wait::patience(),
            ping_interval: std::time::Duration::from_secs(20),
            max_inflight_originates: 1,
            backoff_max: std::time::Duration::from_millis(500),
            connector: None,
        };
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Default::default()));
        let sink: dialback::ami::client::EventSink = {
            let seen = seen.clone();
            std::sync::Arc::new(move |_, signal| {
                let PbxSignal::Event(event) = signal else { return };
                let mut seen = seen.lock().unwrap();
                let (hung_up, cdrs): &mut (std::collections::HashSet<String>, std::collections::HashSet<String>) =
                    &mut seen;
                match &*event {
                    AmiEvent::Hangup(h) => {
                        hung_up.insert(h.channel.uniqueid.clone());
                    }
                    AmiEvent::Cdr(c) => {
                        cdrs.insert(c.uniqueid.clone());
                    }
                    _ => {}
                }
            })
        };
        let client = dialback::ami::AmiClient::start(config, Some(sink));
        client.wait_up(wait::patience()).await.expect("the observer logs in");
        AmiObserver { client, seen }
    }

    /// A client calling the company's number `did` from `caller`, as the Asterisk transcripts place
    /// one: an Originate of `Local/<did>@dialback-inbound` whose `;1` half (the caller, Uniqueid
    /// `caller_id`) waits while its `;2` half runs the company's inbound context.
    pub async fn call_in(&self, did: &str, caller: &str, caller_id: &str) {
        let originate = dialback::ami::codec::Outgoing::action("Originate")
            .with("ActionID", dialback::ami::message::new_action_id())
            .with("Channel", format!("Local/{did}@dialback-inbound"))
            .with("Application", "Wait")
            .with("Data", "60")
            .with("Async", "true")
            .with("CallerID", format!("\"Client\" <{caller}>"))
            .with("ChannelId", caller_id);
        let reply = self.client.call(&originate).await.expect("the PBX takes the Originate");
        assert_eq!(reply.get("Response"), Some("Success"), "{reply:?}");
    }

    /// Hangs up a channel (by name or Uniqueid), as the PBX admin's `channel request hangup` or a
    /// phone putting the receiver down would.
    pub async fn hangup(&self, channel: &str) {
        self.client.hangup(channel).await.expect("the PBX hangs the channel up");
    }

    /// Waits until each call (by its id, the ChannelId) is over on the PBX: its courier channel
    /// hung up and its CDR posted (the last events of a call).
    pub async fn wait_calls_ended(&mut self, ids: &[&str]) {
        wait::until("the calls to end on the PBX", || {
            let seen = self.seen.lock().unwrap();
            ids.iter().all(|id| seen.0.contains(*id) && seen.1.contains(*id))
        })
        .await
    }
}

impl Drop for AmiObserver {
    fn drop(&mut self) {
        let client = self.client.clone();
        tokio::spawn(async move { client.close().await });
    }
}
