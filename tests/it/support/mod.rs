//! The test harness: a fresh database per test cloned from a migrated template, the app on port 0,
//! and a chaos proxy to cut links.

// Not every helper is used by every group of tests at every stage.
#![allow(dead_code)]

pub mod examples;
pub mod proxy;

use std::sync::Once;

use dialback::config::Config;
use dialback::startup::Application;
use figment::providers::Serialized;
use figment::Figment;
use secrecy::SecretString;

pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef";

fn admin_url() -> String {
    std::env::var("DIALBACK_TEST_DATABASE_URL").expect(
        "DIALBACK_TEST_DATABASE_URL is not set: run the suite with scripts/test, which starts a throwaway PostgreSQL",
    )
}

fn with_database(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("database URL has a path");
    format!("{base}/{db}")
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect to test PostgreSQL");
    tokio::spawn(conn);
    client
}

/// A new database with the current schema, cloned from a template migrated once per cluster.
pub async fn fresh_database() -> String {
    let admin_url = admin_url();
    let admin = connect(&admin_url).await;
    // Serialises template creation and cloning across test processes (nextest runs each test in
    // its own process); a template must have no open sessions while it is cloned.
    admin.execute("SELECT pg_advisory_lock(4242)", &[]).await.unwrap();
    let template = format!("dialback_template_v{}", dialback::store::migrations::latest_version());
    let exists = admin.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&template]).await.unwrap().is_some();
    if !exists {
        admin.batch_execute(&format!("CREATE DATABASE {template}")).await.unwrap();
        dialback::store::migrations::run_url(&SecretString::from(with_database(&admin_url, &template))).await.unwrap();
    }
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    admin.batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}")).await.unwrap();
    admin.execute("SELECT pg_advisory_unlock(4242)", &[]).await.unwrap();
    with_database(&admin_url, &name)
}

pub fn init_test_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            dialback::telemetry::init_logging("pretty");
        }
    });
}

/// A config for tests: port 0, one worker, the test JWT secret, the given database.
pub fn test_config(database_url: &str) -> Figment {
    Figment::new().merge(Serialized::defaults(serde_json::json!({
        "database_url": database_url,
        "listen": "127.0.0.1:0",
        "jwt_secret": JWT_SECRET,
        "secrets_key": "ab".repeat(32),
        "recordings_dir": std::env::temp_dir().join(format!("dialback-rec-{}", uuid::Uuid::new_v4().simple())),
        "http": { "workers": 1, "shutdown_timeout_s": 5 },
        "db": { "pool_size": 4, "timeout_ms": 1000 },
    })))
}

pub struct TestApp {
    pub address: String,
    pub database_url: String,
    pub config: Config,
    pub http: reqwest::Client,
}

pub struct TestAppBuilder {
    figment: Figment,
    database_url: Option<String>,
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

    pub async fn spawn(self) -> TestApp {
        init_test_logging();
        let real = fresh_database().await;
        let db_url =
            self.database_url.map(|via| with_database(&via, real.rsplit('/').next().unwrap())).unwrap_or(real.clone());
        let config = Config::from_figment(self.figment.merge(Serialized::default("database_url", &db_url)))
            .expect("test config");
        let app = Application::build(config.clone()).await.expect("app builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        TestApp { address, database_url: real, config, http: reqwest::Client::new() }
    }
}

pub fn app() -> TestAppBuilder {
    TestAppBuilder { figment: test_config("postgres://unused@127.0.0.1/unused"), database_url: None }
}

pub async fn spawn_app() -> TestApp {
    app().spawn().await
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("request sent")
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
