//! The service basics: health, readiness across a database outage, metrics, the spec, the docs
//! page, and problem+json for unknown routes and wrong methods.

use std::collections::BTreeSet;

use crate::support::{self, assert_problem, proxy::ChaosProxy, spawn_app};

#[tokio::test]
async fn healthz_answers_ok_with_a_request_id() {
    let app = spawn_app().await;
    let res = app.get("/healthz").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-request-id").is_some());
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn a_sane_client_request_id_is_echoed_back() {
    let app = spawn_app().await;
    let res = app.exec(app.http.get(app.url("/healthz")).header("x-request-id", "abc-123")).await;
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    let res = app.exec(app.http.get(app.url("/healthz")).header("x-request-id", "bad id with spaces")).await;
    assert_ne!(res.headers()["x-request-id"], "bad id with spaces");
}

#[tokio::test]
async fn readyz_reports_the_database_going_away_and_recovers_without_a_restart() {
    let admin = std::env::var("DIALBACK_TEST_DATABASE_URL").unwrap();
    let target = admin.split('@').nth(1).unwrap().split('/').next().unwrap().to_owned();
    let proxy = ChaosProxy::start(target).await;
    let via = admin
        .replace(admin.split('@').nth(1).unwrap().split('/').next().unwrap(), &format!("127.0.0.1:{}", proxy.port));
    let app = support::app().database_via(via).spawn().await;

    assert_eq!(app.get("/readyz").await.status(), 200);
    proxy.cut();
    let body = assert_problem(app.get("/readyz").await, 503, "database_unavailable").await;
    assert!(body["detail"].as_str().unwrap().contains("database"));
    proxy.restore();
    crate::support::wait::eventually("readiness to come back with the database", || async {
        match app.get("/readyz").await.status().as_u16() {
            200 => Ok(()),
            other => Err(other),
        }
    })
    .await;
}

#[tokio::test]
async fn a_database_outage_answers_503_with_retry_after() {
    let admin = std::env::var("DIALBACK_TEST_DATABASE_URL").unwrap();
    let host = admin.split('@').nth(1).unwrap().split('/').next().unwrap().to_owned();
    let proxy = ChaosProxy::start(host.clone()).await;
    let app = support::app().database_via(admin.replace(&host, &format!("127.0.0.1:{}", proxy.port))).spawn().await;
    proxy.cut();
    let res = app.get("/readyz").await;
    assert_eq!(res.headers()["retry-after"], "2");
    assert_problem(res, 503, "database_unavailable").await;
}

#[tokio::test]
async fn metrics_expose_request_counters_in_prometheus_text() {
    let app = spawn_app().await;
    app.get("/healthz").await;
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = res.text().await.unwrap();
    assert!(text.contains("dialback_http_requests_total"), "{text}");
}

#[tokio::test]
async fn metrics_show_the_database_pool() {
    let app = spawn_app().await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    let text = app.get("/metrics").await.text().await.unwrap();
    let value = |name: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    // The readiness probe took a connection: its wait was measured.
    assert!(value("dialback_db_pool_wait_seconds_count") >= 1.0);
    // The gauges are the pool as the scrape found it. The recorder is shared by this process's
    // apps, whose scrapes may interleave, so each gauge is bounded alone (busy and idle may come
    // from two apps' pools, of the same size).
    let most = value("dialback_db_pool_max_connections");
    assert!(most >= 1.0);
    for gauge in ["dialback_db_pool_connections{state=\"busy\"}", "dialback_db_pool_connections{state=\"idle\"}"] {
        assert!((0.0..=most).contains(&value(gauge)), "{gauge} in {text}");
    }
    assert!(value("dialback_db_pool_waiting") >= 0.0);
}

#[tokio::test]
async fn the_committed_spec_is_served_as_is() {
    let app = spawn_app().await;
    let served = app.get("/openapi.yaml").await.text().await.unwrap();
    assert_eq!(served, std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap());
}

#[tokio::test]
async fn the_docs_page_lists_every_operation_and_needs_nothing_from_the_network() {
    let app = spawn_app().await;
    let res = app.get("/docs").await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    for (path, _) in spec_routes() {
        assert!(html.contains(&format!("<code>{path}</code>")), "docs miss {path}");
    }
    assert!(!html.contains("http://") || html.matches("http://").count() == html.matches("http://127.0.0.1").count());
    assert!(!html.contains("<script src"), "no external scripts");
}

#[tokio::test]
async fn an_unknown_route_is_a_problem_json_404() {
    let app = spawn_app().await;
    let body = assert_problem(app.get("/no/such/route").await, 404, "route_not_found").await;
    assert!(body["detail"].as_str().unwrap().contains("/no/such/route"));
}

#[tokio::test]
async fn a_wrong_method_is_a_problem_json_405_with_allow() {
    let app = spawn_app().await;
    let res = app.exec(app.http.delete(app.url("/healthz"))).await;
    assert_eq!(res.headers()["allow"], "GET");
    assert_problem(res, 405, "method_not_allowed").await;
}

/// (path, methods) of every operation in openapi.yaml.
fn spec_routes() -> BTreeSet<(String, String)> {
    let spec: yaml_serde::Value = yaml_serde::from_str(dialback::http::docs::OPENAPI_YAML).unwrap();
    let mut routes = BTreeSet::new();
    for (path, item) in spec["paths"].as_mapping().unwrap() {
        for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
            if item.get(method).is_some() {
                routes.insert((path.as_str().unwrap().to_owned(), method.to_uppercase()));
            }
        }
    }
    routes
}

#[test]
fn every_served_route_is_in_the_spec_and_every_spec_route_is_served() {
    let served: BTreeSet<(String, String)> = dialback::http::endpoints()
        .iter()
        .flat_map(|e| e.methods.iter().map(move |m| (e.path.to_owned(), m.to_string())))
        .collect();
    let spec = spec_routes();
    let missing_from_spec: Vec<_> = served.difference(&spec).collect();
    let not_served: Vec<_> = spec.difference(&served).collect();
    assert!(missing_from_spec.is_empty(), "served but not in openapi.yaml: {missing_from_spec:?}");
    assert!(not_served.is_empty(), "in openapi.yaml but not served: {not_served:?}");
}

#[tokio::test]
async fn every_spec_route_answers_on_the_live_server_without_route_not_found() {
    let app = spawn_app().await;
    for (path, method) in spec_routes() {
        let concrete = path.replace('{', "x").replace('}', "");
        let res = app
            .exec(app.http.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), app.url(&concrete)))
            .await;
        let status = res.status().as_u16();
        let body = res.text().await.unwrap();
        assert!(
            !(status == 404 && body.contains("route_not_found")) && status != 405,
            "{method} {path}: {status} {body}"
        );
    }
}

#[test]
fn every_api_example_matches_its_schema_in_the_spec() {
    let checked = crate::support::examples::check_all();
    assert!(checked >= 3, "expected examples under api/, checked {checked}");
}

/// The checker every answer goes through refuses the spec mistakes that strict OpenAPI 3.0.3 tools
/// trip on, so such a mistake fails the suite rather than a company's generated client.
#[test]
fn the_spec_checker_refuses_the_openapi_3_0_traps() {
    use crate::support::spec::Spec;
    let with = |schema: &str| {
        format!(
            "openapi: 3.0.3\ninfo: {{title: t, version: '1'}}\npaths: {{}}\ncomponents:\n  schemas:\n    X: {schema}\n"
        )
    };
    for (schema, why) in [
        ("{type: string, description: What to change, when it failed}", "has no value"),
        ("{type: string, nullable: true, enum: [a, b]}", "does not list null"),
        ("{nullable: true, allOf: [{type: string}]}", "without a type of its own"),
        ("{type: string, enum: [a, null]}", "not nullable"),
    ] {
        let error = Spec::load(&with(schema)).err().unwrap_or_else(|| panic!("{schema} was accepted"));
        assert!(error.contains(why), "{schema}: {error}");
    }
    assert!(Spec::load(&with("{type: string, nullable: true, enum: [a, b, null]}")).is_ok());
}

/// `PbxDiagnosis.status` spells the callback statuses out (plus null) instead of referring to them:
/// the two lists stay the same.
#[test]
fn the_diagnosis_status_lists_the_callback_statuses() {
    let doc = crate::support::spec::spec().doc();
    let schemas = &doc["components"]["schemas"];
    let mut diagnosis: Vec<serde_json::Value> =
        schemas["PbxDiagnosis"]["properties"]["status"]["enum"].as_array().unwrap().clone();
    assert_eq!(diagnosis.pop(), Some(serde_json::Value::Null));
    assert_eq!(&diagnosis, schemas["CallbackStatus"]["enum"].as_array().unwrap());
    let served: Vec<&str> =
        <dialback::domain::callback::Status as strum::VariantArray>::VARIANTS.iter().map(|s| s.as_str()).collect();
    assert_eq!(diagnosis, served, "the spec lists the statuses the server has");
}

/// A migration file edited after a database applied it would leave that database different from
/// every other: dialback refuses to start on it, naming the migration.
#[tokio::test]
async fn a_migration_edited_after_it_was_applied_stops_start_up() {
    let url = support::fresh_database().await;
    let db = support::connect(&url).await;
    db.execute("UPDATE refinery_schema_history SET checksum = '1' WHERE version = 1", &[]).await.unwrap();
    let error =
        dialback::store::migrations::run_url(&url.clone().into(), &Default::default()).await.unwrap_err().to_string();
    assert!(error.contains("V1"), "{error}");
}

/// A database a later release migrated further (a rollback, or an upgrade in progress) is one this
/// release still starts on: migrations only add, and this one reads what it knows.
#[tokio::test]
async fn a_database_migrated_by_a_later_release_is_one_this_release_starts_on() {
    let url = support::fresh_database().await;
    let db = support::connect(&url).await;
    db.execute(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
         VALUES (9999, 'from_a_later_release', '2026-12-06T00:00:00Z', '42')",
        &[],
    )
    .await
    .unwrap();
    let applied = dialback::store::migrations::run_url(&url.clone().into(), &Default::default()).await.unwrap();
    assert!(applied.is_empty(), "{applied:?}");
}

/// A database migrated before dialback kept checksums (history in `schema_migrations`) is taken
/// over as it is: nothing is applied twice.
#[tokio::test]
async fn a_database_migrated_by_the_earlier_runner_is_adopted() {
    let url = support::fresh_database().await;
    let db = support::connect(&url).await;
    // What the earlier runner left: the same schema, its own history table.
    db.batch_execute(
        "ALTER TABLE refinery_schema_history RENAME TO old_history;
         CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO schema_migrations (version, name) SELECT version, name FROM old_history;
         DROP TABLE old_history;",
    )
    .await
    .unwrap();
    let applied = dialback::store::migrations::run_url(&url.clone().into(), &Default::default()).await.unwrap();
    assert!(applied.is_empty(), "nothing is applied again: {applied:?}");
    let versions: Vec<i32> = db
        .query("SELECT version FROM refinery_schema_history ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions.last().copied(), Some(dialback::store::migrations::latest_version()));
    assert!(db
        .query_opt("SELECT 1 FROM pg_tables WHERE tablename = 'schema_migrations'", &[])
        .await
        .unwrap()
        .is_none());
    // And the database is usable as it was.
    let again = dialback::store::migrations::run_url(&url.into(), &Default::default()).await.unwrap();
    assert!(again.is_empty());
}

/// A database connection opened on another runtime (an HTTP server worker's, which a graceful stop
/// ends first) keeps working once that runtime is gone: the pool opens its connections on the
/// runtime it was made on.
#[tokio::test]
async fn a_connection_opened_on_a_worker_outlives_the_worker() {
    let database = support::fresh_database().await;
    let pool = dialback::store::pool(&database.into(), &Default::default()).unwrap();
    let on_worker = pool.clone();
    // Its own thread, as a server worker has; the test's runtime goes on meanwhile.
    let client = tokio::task::spawn_blocking(move || {
        let worker = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = worker.block_on(dialback::store::client(&on_worker)).unwrap();
        drop(worker);
        client
    })
    .await
    .unwrap();
    let row = client.query_one("SELECT 1", &[]).await.expect("the connection is still driven");
    assert_eq!(row.get::<_, i32>(0), 1);
}
