//! TLS to PostgreSQL as its `sslmode` asks, against the suite's PostgreSQL, which scripts/test
//! starts with TLS on and a certificate for 127.0.0.1 signed by a CA of its own
//! (scripts/lib.sh `postgres_tls`).

use serde_json::json;

use crate::support::{self, wait::eventually};

/// The CA that signed the suite's PostgreSQL certificate, or the one that did not.
fn ca(signed: bool) -> String {
    let var = if signed { "DIALBACK_TEST_PG_CA" } else { "DIALBACK_TEST_PG_OTHER_CA" };
    std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is not set: scripts/test starts PostgreSQL with TLS and sets it"))
}

/// Whether dialback's connections to `database` are encrypted (as PostgreSQL sees them).
async fn encrypted(database: &str) -> Vec<bool> {
    let db = support::connect(database).await;
    let name = database.rsplit('/').next().unwrap();
    db.query(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.datname = $1 AND a.application_name LIKE 'dialback%'",
        &[&name],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn build(url: String, root_cert: Option<String>) -> anyhow::Result<dialback::startup::Application> {
    let mut figment = support::test_config(&url);
    if let Some(path) = root_cert {
        figment = figment.merge(figment::providers::Serialized::default("db.ssl_root_cert", path));
    }
    let config = dialback::config::Config::from_figment(figment)?;
    dialback::startup::Application::build(config).await
}

#[tokio::test]
async fn verify_full_with_the_ca_that_signed_the_server_connects_encrypted() {
    let database = support::fresh_database().await;
    let url = format!("{database}?sslmode=verify-full&sslrootcert={}", ca(true));
    let app = support::app().existing_database(url).spawn().await;
    // The app works: a company saved, a read back.
    app.add_courier("acme", "c-1", support::COURIER_PHONE).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    let seen = encrypted(&database).await;
    assert!(!seen.is_empty() && seen.iter().all(|ssl| *ssl), "{seen:?}");
}

#[tokio::test]
async fn a_server_certificate_not_signed_by_the_given_ca_is_refused_with_the_reason() {
    let database = support::fresh_database().await;
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = format!("{database}?sslmode={mode}&sslrootcert={}", ca(false));
        let error = build(url, None).await.err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(error.contains("UnknownIssuer") || error.contains("unknown issuer"), "{mode}: {error}");
    }
}

#[tokio::test]
async fn the_root_certificate_may_come_from_the_configuration() {
    let database = support::fresh_database().await;
    let trusted = build(format!("{database}?sslmode=verify-full"), Some(ca(true))).await;
    assert!(trusted.is_ok(), "{:#}", trusted.err().unwrap());
    let untrusted = build(format!("{database}?sslmode=verify-full"), Some(ca(false))).await;
    assert!(untrusted.is_err());
}

#[tokio::test]
async fn require_encrypts_without_checking_and_disable_does_not_encrypt() {
    for (mode, want) in [("require", true), ("prefer", true), ("disable", false)] {
        let database = support::fresh_database().await;
        let app = support::app().existing_database(format!("{database}?sslmode={mode}")).spawn().await;
        app.put("/v1/admin/couriers/c-1", &app.admin("acme"), json!({"phone": support::COURIER_PHONE})).await;
        let seen = eventually(format!("dialback's connections with sslmode={mode}"), || async {
            let seen = encrypted(&database).await;
            if seen.is_empty() {
                Err(seen)
            } else {
                Ok(seen)
            }
        })
        .await;
        assert!(seen.iter().all(|ssl| *ssl == want), "sslmode={mode}: {seen:?}");
    }
}
