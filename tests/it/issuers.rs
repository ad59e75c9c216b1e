//! Each company's tokens are verified with that company's keys (issue 29): an operator creates
//! companies and their issuers; a company's identity provider serves its JWKS over HTTPS with a
//! CA of its own (support/jwks.rs); a key of company A never acts for company B, whatever the
//! token's `kid`, `iss` or `alg` say; the provider going down is survived; suspension and removal.

use serde_json::{json, Value};

use crate::support::jwks::{public_pem, sign, JwksServer};
use crate::support::{self, assert_problem, spawn_app, TestApp, CLIENT_PHONE};

/// An app that may fetch JWKS from 127.0.0.1, and fetches again on every unknown `kid`.
async fn app() -> TestApp {
    support::app()
        .set("issuers.allow_private_targets", true)
        .set("issuers.jwks_refresh_min_interval_s", 0)
        .spawn()
        .await
}

fn iss(tenant: &str) -> String {
    format!("https://id.example.test/realms/{tenant}")
}

/// Gives `tenant` an issuer whose keys are the JWKS `jwks` serves; the answer.
async fn give_jwks_issuer(app: &TestApp, tenant: &str, jwks: &JwksServer) -> Value {
    let issuer = json!({"iss": iss(tenant), "jwks_url": jwks.url(), "ca_pem": jwks.ca_pem});
    let res = app
        .put(&format!("/v1/operator/companies/{tenant}"), &app.operator(), json!({"name": tenant, "issuer": issuer}))
        .await;
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    res.json().await.unwrap()
}

/// A token of `tenant`'s provider: `role`, `sub`, its `iss`, signed with fixture key `key`.
fn provider_token(key: &str, tenant: &str, role: &str, sub: &str) -> String {
    sign(key, None, json!({"iss": iss(tenant), "tenant": tenant, "role": role, "sub": sub}))
}

async fn status_of(app: &TestApp, path: &str, token: &str) -> u16 {
    app.get_as(path, token).await.status().as_u16()
}

#[tokio::test]
async fn a_company_given_an_issuer_accepts_only_its_providers_tokens_and_its_courier_calls() {
    let app = app().await;
    let sim = support::quick_sim().await;
    let acme = support::unique_tenant("acme");
    // A company as it came to be before issuers: its first admin write, on the deployment's keys.
    app.seed(&acme, sim.addr().port()).await;
    let listed: Value = app.get_as("/v1/operator/companies", &app.operator()).await.json().await.unwrap();
    let before = listed["items"].as_array().unwrap().iter().find(|c| c["id"] == acme.as_str()).unwrap().clone();
    assert_eq!((before["verified_with"].as_str(), before["name"].is_null()), (Some("global_keys"), true), "{before}");

    let jwks = JwksServer::start(&["rsa-a1", "ec-a"]).await;
    let saved = give_jwks_issuer(&app, &acme, &jwks).await;
    assert_eq!(saved["verified_with"], "issuer", "{saved}");
    assert!(saved.get("hs256_secret").is_none(), "{saved}");

    // The deployment's keys no longer act for it: the operator moved it to its own issuer.
    assert_eq!(status_of(&app, "/v1/admin/pbx", &app.admin(&acme)).await, 401);
    // Its provider's tokens do, RS256 and ES256, in each role.
    let admin = provider_token("rsa-a1", &acme, "admin", "it-admin");
    assert_eq!(status_of(&app, "/v1/admin/pbx", &admin).await, 200);
    // Its admin page shows whose keys act for it.
    let own: Value = app.get_as("/v1/admin/company", &admin).await.json().await.unwrap();
    assert_eq!(
        (own["verified_with"].as_str(), own["issuer"]["jwks_url"].as_str()),
        (Some("issuer"), Some(jwks.url().as_str()))
    );
    let admin_ec = provider_token("ec-a", &acme, "admin", "it-admin");
    assert_eq!(status_of(&app, "/v1/admin/couriers", &admin_ec).await, 200);
    let courier = provider_token("rsa-a1", &acme, "courier", "courier-1");
    let res = app
        .post("/v1/callbacks", &courier, json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1001"}))
        .await;
    assert_eq!(res.status(), 202);
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let done = app.wait_terminal(&id, &courier).await;
    assert_eq!(done["status"], "completed", "{done}");

    // A key the provider rotates in is fetched when a token first names it.
    let rotated = provider_token("rsa-a2", &acme, "admin", "it-admin");
    assert_eq!(status_of(&app, "/v1/admin/pbx", &rotated).await, 401, "not published yet");
    jwks.publish(&["rsa-a2"]);
    assert_eq!(status_of(&app, "/v1/admin/pbx", &rotated).await, 200);
    assert_eq!(status_of(&app, "/v1/admin/pbx", &admin).await, 401, "a1 was rotated out");
}

#[tokio::test]
async fn a_companys_keys_never_act_for_another_whatever_the_token_says() {
    let app = app().await;
    let (a, b) = (support::unique_tenant("a"), support::unique_tenant("b"));
    let jwks = JwksServer::start(&["rsa-a1"]).await;
    give_jwks_issuer(&app, &a, &jwks).await;
    let b_issuer = json!({"iss": iss(&b), "public_keys": [public_pem("rsa-b")]});
    let res = app
        .put(&format!("/v1/operator/companies/{b}"), &app.operator(), json!({"name": "B", "issuer": b_issuer}))
        .await;
    assert_eq!(res.status(), 201);
    let b_admin = provider_token("rsa-b", &b, "admin", "b-admin");
    assert_eq!(status_of(&app, "/v1/admin/couriers", &b_admin).await, 200, "B's own token");

    let hs256_with = |secret: &[u8], claims: Value| {
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(secret)).unwrap()
    };
    let exp = json!(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600);
    for role in ["admin", "courier"] {
        let path = if role == "admin" { "/v1/admin/couriers" } else { "/v1/me" };
        let refused = [
            ("A's key naming B", provider_token("rsa-a1", &b, role, "x")),
            ("A's key, B's iss", sign("rsa-a1", None, json!({"iss": iss(&b), "tenant": b, "role": role, "sub": "x"}))),
            (
                "A's key, kid of B's key",
                sign("rsa-a1", Some("rsa-b"), json!({"iss": iss(&b), "tenant": b, "role": role, "sub": "x"})),
            ),
            ("B's key naming A", provider_token("rsa-b", &a, role, "x")),
            (
                "B's key with A's kid naming A",
                sign("rsa-b", Some("rsa-a1"), json!({"iss": iss(&a), "tenant": a, "role": role, "sub": "x"})),
            ),
            (
                "the deployment's key naming B",
                app.token(
                    &b,
                    if role == "admin" { dialback::auth::Role::Admin } else { dialback::auth::Role::Courier },
                    "x",
                ),
            ),
            (
                "HS256 signed with A's public key (algorithm confusion)",
                hs256_with(
                    public_pem("rsa-a1").as_bytes(),
                    json!({"iss": iss(&a), "tenant": a, "role": role, "sub": "x", "aud": "dialback", "exp": exp}),
                ),
            ),
            (
                "HS256 signed with B's public key",
                hs256_with(
                    public_pem("rsa-b").as_bytes(),
                    json!({"iss": iss(&b), "tenant": b, "role": role, "sub": "x", "aud": "dialback", "exp": exp}),
                ),
            ),
        ];
        for (what, token) in refused {
            let res = app.get_as(path, &token).await;
            assert_eq!(res.status(), 401, "{what} as {role}");
        }
    }
    // alg none never parses; a company's key cannot make an operator.
    let none = format!(
        "{}.{}.",
        data_encoding_b64(br#"{"alg":"none","typ":"JWT"}"#),
        data_encoding_b64(
            json!({"tenant": b, "role": "admin", "sub": "x", "aud": "dialback", "exp": exp}).to_string().as_bytes()
        )
    );
    assert_eq!(status_of(&app, "/v1/admin/couriers", &none).await, 401);
    let operator_by_a = sign("rsa-a1", None, json!({"iss": iss(&a), "role": "operator", "sub": "x"}));
    assert_eq!(status_of(&app, "/v1/operator/companies", &operator_by_a).await, 401);
    // Company tokens are not the operator's, and the operator's are no company's.
    assert_eq!(status_of(&app, "/v1/operator/companies", &b_admin).await, 403);
    let res = app.get_as("/v1/admin/couriers", &app.operator()).await;
    assert_problem(res, 403, "forbidden").await;
}

fn data_encoding_b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn the_providers_keys_are_served_from_cache_while_it_is_down_and_its_absence_from_the_start_is_a_503() {
    // Every request would fetch the JWKS again (it is always stale): the cache must carry it.
    let app = support::app()
        .set("issuers.allow_private_targets", true)
        .set("issuers.jwks_refresh_min_interval_s", 0)
        .set("issuers.jwks_max_age_s", 0)
        .spawn()
        .await;
    let acme = support::unique_tenant("acme");
    let jwks = JwksServer::start(&["rsa-a1"]).await;
    give_jwks_issuer(&app, &acme, &jwks).await;
    let admin = provider_token("rsa-a1", &acme, "admin", "it-admin");
    assert_eq!(status_of(&app, "/v1/admin/couriers", &admin).await, 200);
    jwks.set_up(false);
    let fetched = jwks.fetches();
    assert_eq!(status_of(&app, "/v1/admin/couriers", &admin).await, 200, "served from the keys fetched before");
    assert!(jwks.fetches() > fetched, "it did try the provider");

    // Another process, started while the provider is down, has no keys to check with: 503, retry.
    let replica = support::app()
        .existing_database(app.database_url.clone())
        .set("issuers.allow_private_targets", true)
        .set("issuers.jwks_refresh_min_interval_s", 0)
        .spawn()
        .await;
    let res = replica.get_as("/v1/admin/couriers", &admin).await;
    assert!(res.headers().contains_key("retry-after"));
    assert_problem(res, 503, "issuer_unavailable").await;
    jwks.set_up(true);
    assert_eq!(status_of(&replica, "/v1/admin/couriers", &admin).await, 200, "back with the provider");
}

#[tokio::test]
async fn unknown_keys_fetch_the_jwks_again_at_most_every_refresh_interval() {
    let app = support::app()
        .set("issuers.allow_private_targets", true)
        .set("issuers.jwks_refresh_min_interval_s", 3600)
        .spawn()
        .await;
    let acme = support::unique_tenant("acme");
    let jwks = JwksServer::start(&["rsa-a1"]).await;
    give_jwks_issuer(&app, &acme, &jwks).await;
    assert_eq!(status_of(&app, "/v1/admin/couriers", &provider_token("rsa-a1", &acme, "admin", "x")).await, 200);
    let fetched = jwks.fetches();
    for n in 0..5 {
        let unknown = sign(
            "rsa-a2",
            Some(&format!("made-up-{n}")),
            json!({"iss": iss(&acme), "tenant": acme, "role": "admin", "sub": "x"}),
        );
        assert_eq!(status_of(&app, "/v1/admin/couriers", &unknown).await, 401);
    }
    assert_eq!(jwks.fetches(), fetched, "tokens naming unknown keys cannot make dialback hammer the provider");
}

#[tokio::test]
async fn the_operator_creates_an_hs256_company_suspends_it_mid_call_and_removes_it() {
    let app = app().await;
    let sim = support::quick_sim().await;
    let tenant = support::unique_tenant("hs");
    let operator = app.operator();
    let path = format!("/v1/operator/companies/{tenant}");
    let body = json!({"name": "HS Couriers", "issuer": {"iss": "hs-backend", "hs256": true}});
    let res = app.put(&path, &operator, body.clone()).await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    let secret = created["hs256_secret"].as_str().expect("the secret, shown once").to_owned();
    let again: Value = app.put(&path, &operator, body).await.json().await.unwrap();
    assert!(again.get("hs256_secret").is_none(), "shown once: {again}");
    let read: Value = app.get_as(&path, &operator).await.json().await.unwrap();
    assert!(read.get("hs256_secret").is_none() && read["issuer"]["hs256"] == true, "{read}");

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let hs = |role: &str, sub: &str| {
        let claims = json!({"iss": "hs-backend", "tenant": tenant, "role": role, "sub": sub, "aud": "dialback", "exp": now + 600});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let admin = hs("admin", "boss");
    let res = app.put("/v1/admin/pbx", &admin, support::pbx_settings_json(sim.addr().port())).await;
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    app.put("/v1/admin/couriers/courier-1", &admin, json!({"phone": support::COURIER_PHONE})).await;
    app.put(
        "/v1/admin/orders/A-1",
        &admin,
        json!({"courier_id": "courier-1", "phones": [CLIENT_PHONE], "state": "active"}),
    )
    .await;
    let courier = hs("courier", "courier-1");
    let res =
        app.post("/v1/callbacks", &courier, json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1"})).await;
    assert_eq!(res.status(), 202);
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    // Suspended while the call rings: its people are refused at once, the call goes on.
    let res = app
        .put(
            &path,
            &operator,
            json!({"name": "HS Couriers", "state": "suspended", "issuer": {"iss": "hs-backend", "hs256": true}}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_problem(app.get_as("/v1/me", &courier).await, 403, "company_suspended").await;
    assert_problem(app.get_as("/v1/admin/couriers", &admin).await, 403, "company_suspended").await;
    let res = app.delete(&path, &operator).await;
    assert_problem(res, 409, "company_in_use").await;
    support::wait::eventually("the call to end while the company is suspended", || async {
        let db = support::connect(&app.database_url).await;
        let row = db.query_one("SELECT status FROM callbacks WHERE id = $1::text::uuid", &[&id]).await.unwrap();
        let status: String = row.get(0);
        if status == "completed" {
            Ok(())
        } else {
            Err(status)
        }
    })
    .await;
    // Now it can go, with everything of it.
    assert_eq!(app.delete(&path, &operator).await.status(), 204);
    assert_problem(app.get_as(&path, &operator).await, 404, "not_found").await;
    let db = support::connect(&app.database_url).await;
    for table in dialback::store::companies::TABLES {
        let n: i64 = db
            .query_one(&format!("SELECT count(*) FROM {table} WHERE tenant_id = $1"), &[&tenant])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table}");
    }
    assert_eq!(status_of(&app, "/v1/me", &courier).await, 401, "a removed company's tokens act for nothing");
}

#[tokio::test]
async fn removal_knows_every_table_that_holds_a_companys_rows() {
    let app = spawn_app().await;
    let db = support::connect(&app.database_url).await;
    let rows = db
        .query(
            "SELECT table_name::text FROM information_schema.columns
             WHERE column_name = 'tenant_id' AND table_schema = current_schema() ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let mut found: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let mut known: Vec<String> = dialback::store::companies::TABLES.iter().map(|t| t.to_string()).collect();
    found.sort();
    known.sort();
    assert_eq!(found, known, "a table with tenant_id is missing from store::companies::TABLES");
}

#[tokio::test]
async fn with_global_keys_for_the_operator_only_a_company_without_an_issuer_cannot_sign_in() {
    let app = support::app().set("issuers.global_keys", "operator").spawn().await;
    let tenant = support::unique_tenant("legacy");
    let res = app.put("/v1/admin/couriers/c-1", &app.admin(&tenant), json!({"phone": support::COURIER_PHONE})).await;
    assert_problem(res, 401, "unauthorized").await;
    let res = app.put(&format!("/v1/operator/companies/{tenant}"), &app.operator(), json!({"name": "Legacy"})).await;
    let company: Value = res.json().await.unwrap();
    assert_eq!(company["verified_with"], "none", "{company}");
}

#[tokio::test]
async fn an_issuer_is_checked_when_saved() {
    let app = app().await;
    let jwks = JwksServer::start(&["rsa-a1"]).await;
    let path = format!("/v1/operator/companies/{}", support::unique_tenant("bad"));
    let operator = app.operator();
    let cases = [
        (
            json!({"iss": "x", "public_keys": ["-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"]}),
            "issuer.public_keys",
        ),
        (json!({"iss": "x", "jwks_url": jwks.url()}), "issuer.jwks_url"), // its certificate is not trusted
        (
            json!({"iss": "x", "jwks_url": format!("https://127.0.0.1:{}/nothing-here", jwks.port), "ca_pem": jwks.ca_pem}),
            "issuer.jwks_url",
        ),
        (json!({"iss": "x"}), "issuer"),
    ];
    for (issuer, field) in cases {
        let res = app.put(&path, &operator, json!({"name": "Bad", "issuer": issuer})).await;
        let problem = assert_problem(res, 422, "invalid_field").await;
        assert_eq!(problem["field"], field, "{problem}");
    }
    // Without allow_private_targets a provider inside dialback's own network is refused.
    let strict = spawn_app().await;
    let issuer = json!({"iss": "x", "jwks_url": jwks.url(), "ca_pem": jwks.ca_pem});
    let res = strict.put(&path, &strict.operator(), json!({"name": "Bad", "issuer": issuer})).await;
    let problem = assert_problem(res, 422, "invalid_field").await;
    assert!(problem["detail"].as_str().unwrap().contains("private or local address"), "{problem}");
}

/// `dialback company ...` on `database_url`, as an operator runs it on a server; its stdout.
async fn company_cli(database_url: &str, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dialback"))
        .arg("company")
        .args(args)
        .env("DIALBACK_DATABASE_URL", database_url)
        .env("DIALBACK_JWT_SECRET", support::JWT_SECRET)
        .env("DIALBACK_SECRETS_KEY", "ab".repeat(32))
        .env("DIALBACK_RECORDINGS_DIR", std::env::temp_dir())
        .env("DIALBACK_LOG_FORMAT", "json")
        .output()
        .await
        .expect("the dialback binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_first_company_is_made_on_the_command_line_and_the_api_sees_it_at_once() {
    let app = app().await;
    let tenant = support::unique_tenant("cli");
    let key = format!("{}/tests/fixtures/jwt/rsa-b.pub.pem", env!("CARGO_MANIFEST_DIR"));
    let (ok, out, err) = company_cli(
        &app.database_url,
        &["put", &tenant, "--name", "CLI Couriers", "--iss", "cli-backend", "--public-key", &key],
    )
    .await;
    assert!(ok, "{err}");
    let printed: Value = serde_json::from_str(&out).expect("the company as JSON");
    assert_eq!((printed["id"].as_str(), printed["verified_with"].as_str()), (Some(tenant.as_str()), Some("issuer")));
    let admin = sign("rsa-b", None, json!({"iss": "cli-backend", "tenant": tenant, "role": "admin", "sub": "boss"}));
    assert_eq!(status_of(&app, "/v1/admin/couriers", &admin).await, 200);

    // The running server hears of it through the database's NOTIFY, a moment later.
    let answers = |want: u16| {
        let (app, admin) = (&app, &admin);
        async move {
            support::wait::eventually(format!("{want} for the company's admin"), || async {
                match status_of(app, "/v1/admin/couriers", admin).await {
                    got if got == want => Ok(()),
                    got => Err(got),
                }
            })
            .await
        }
    };
    let (ok, _, err) = company_cli(&app.database_url, &["suspend", &tenant]).await;
    assert!(ok, "{err}");
    answers(403).await;
    assert_problem(app.get_as("/v1/admin/couriers", &admin).await, 403, "company_suspended").await;
    let (ok, _, err) = company_cli(&app.database_url, &["resume", &tenant]).await;
    assert!(ok, "{err}");
    answers(200).await;
    let (ok, out, _) = company_cli(&app.database_url, &["list"]).await;
    assert!(ok && out.contains(&tenant), "{out}");

    // Refused with what to change, and nothing saved.
    let (ok, _, err) = company_cli(&app.database_url, &["put", "bad id", "--name", "X"]).await;
    assert!(!ok && err.contains("company id must be 1-64 characters"), "{err}");
    let (ok, _, err) = company_cli(&app.database_url, &["put", &tenant, "--name", "X", "--hs256"]).await;
    assert!(!ok && err.contains("give its --iss too"), "{err}");
    let (ok, _, err) = company_cli(&app.database_url, &["remove", &tenant]).await;
    assert!(!ok && err.contains("suspend it first"), "{err}");
}

#[tokio::test]
async fn rows_a_later_release_wrote_with_more_fields_are_read_not_panicked_on() {
    // A rolling deploy: a newer process saved settings and an issuer with a field this release
    // does not know; this one must go on serving the company.
    let app = app().await;
    let sim = support::quick_sim().await;
    let tenant = support::unique_tenant("rolling");
    app.seed(&tenant, sim.addr().port()).await;
    let issuer = json!({"iss": "rolling-backend", "public_keys": [public_pem("rsa-b")]});
    let res = app
        .put(&format!("/v1/operator/companies/{tenant}"), &app.operator(), json!({"name": "R", "issuer": issuer}))
        .await;
    assert_eq!(res.status(), 200, "the company existed: its first admin write made it");
    let db = support::connect(&app.database_url).await;
    db.execute(
        "UPDATE pbx_settings SET settings = settings || '{\"a_later_field\": 1}' WHERE tenant_id = $1",
        &[&tenant],
    )
    .await
    .unwrap();
    db.execute("UPDATE tenants SET issuer = issuer || '{\"audiences\": [\"x\"]}' WHERE id = $1", &[&tenant])
        .await
        .unwrap();
    let replica = support::app().existing_database(app.database_url.clone()).spawn().await; // nothing cached
    let admin =
        sign("rsa-b", None, json!({"iss": "rolling-backend", "tenant": tenant, "role": "admin", "sub": "boss"}));
    let res = replica.get_as("/v1/admin/pbx", &admin).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let courier =
        sign("rsa-b", None, json!({"iss": "rolling-backend", "tenant": tenant, "role": "courier", "sub": "courier-1"}));
    let res = replica
        .post("/v1/callbacks", &courier, json!({"target": "client", "to": CLIENT_PHONE, "order_id": "A-1001"}))
        .await;
    assert_eq!(res.status(), 202);
}
