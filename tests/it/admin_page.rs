//! The admin page in real headless Chromium: sign in with a pasted token, save settings (with a
//! recordings source), press Test against the simulator and see the steps; a wrong secret turns
//! the login step red; the test call's recording plays from the journal, which is searched, exported
//! as CSV, and sits beside the dialplan download.

use crate::support::{self, ftp::FtpServer, spawn_app, webdriver::Browser};

#[tokio::test]
async fn an_admin_signs_in_saves_settings_and_runs_the_test_in_a_real_browser() {
    let ftp = FtpServer::start().await;
    let root = ftp.root.clone();
    let sim = support::sim_with(|c| c.recordings_dir = Some(root)).await;
    let app = spawn_app().await;
    let browser = Browser::start().await;
    let shot = std::env::temp_dir().join("dialback-admin-page.png");

    browser.goto(&app.url("/admin")).await;
    browser.clear_and_type("#token", &app.admin("acme")).await;
    browser.click("#signin").await;
    browser.wait_until("return !document.getElementById('settings-section').classList.contains('hidden')").await;
    assert!(browser.text("#who").await.contains("acme"));
    assert!(browser.text("#settings-message").await.contains("No settings saved yet"));
    // A company the operator has given no issuer is told whose keys act for it, and what to ask for.
    browser
        .wait_until("return document.getElementById('tokens-state').textContent.includes(\"deployment's keys\")")
        .await;

    // Fill in the form as an admin would, leaving defaults where the form has them.
    for (field, value) in [
        ("host", "127.0.0.1".to_owned()),
        ("port", sim.addr().port().to_string()),
        ("username", "dialback".to_owned()),
        ("secret", "dialback".to_owned()),
        ("channel_template", "PJSIP/{NUMBER}@trunk".to_owned()),
        ("context", "from-courier".to_owned()),
        ("office_extension", "101".to_owned()),
        ("office_phone", "+74951234567".to_owned()),
        ("default_region", "RU".to_owned()),
        ("originate_timeout_s", "30".to_owned()),
        ("allowed_countries", "RU, KZ".to_owned()),
    ] {
        browser.clear_and_type(&format!("#f-{field}"), &value).await;
    }
    let source = ftp.source(serde_json::json!({}));
    browser.click("#r-enabled").await;
    for field in ["host", "port", "username", "password", "directory", "poll_interval_s"] {
        let value = source[field].as_str().map(str::to_owned).unwrap_or_else(|| source[field].to_string());
        browser.clear_and_type(&format!("#r-{field}"), &value).await;
    }
    browser.click("#save").await;
    browser.wait_until("return document.getElementById('settings-message').textContent.startsWith('Saved')").await;
    let saved: serde_json::Value = app.get_as("/v1/admin/pbx", &app.admin("acme")).await.json().await.unwrap();
    assert_eq!(saved["port"], sim.addr().port());
    assert_eq!(saved["secret_set"], true);
    assert_eq!(saved["recordings"]["password_set"], true, "{saved}");

    // A bad field is named and marked.
    browser.clear_and_type("#f-context", "from courier").await;
    browser.click("#save").await;
    browser.wait_until("return document.getElementById('f-context').getAttribute('aria-invalid') === 'true'").await;
    assert!(browser.text("#settings-message").await.contains("context"));
    browser.clear_and_type("#f-context", "from-courier").await;

    // Test with the numbers from the demo: every step green.
    browser.clear_and_type("#test-from", "+79001112233").await;
    browser.clear_and_type("#test-to", "+79161234567").await;
    browser.click("#test-run").await;
    browser.wait_until("return document.querySelectorAll('#steps li').length >= 6").await;
    browser.screenshot(&shot).await;
    let steps = browser
        .eval("return [...document.querySelectorAll('#steps li')].map(li => li.dataset.step + ':' + li.dataset.ok)")
        .await;
    assert_eq!(
        steps,
        serde_json::json!([
            "connect:true",
            "banner:true",
            "login:true",
            "dialplan:true",
            "originate:true",
            "first_leg:true",
            "second_leg:true"
        ])
    );
    assert!(browser.text("#test-message").await.contains("Both legs connected"));

    // A wrong secret in the form (unsaved): the login step turns red with its hint.
    browser.clear_and_type("#f-secret", "wrong-secret").await;
    browser.click("#test-run").await;
    browser.wait_until("return !!document.querySelector('#steps li[data-step=login][data-ok=false]')").await;
    let hint = browser.text("#steps li[data-step=login] .hint").await;
    assert!(hint.contains("manager.conf"), "{hint}");
    browser.screenshot(&std::env::temp_dir().join("dialback-admin-page-login-failed.png")).await;

    // Saving again from the page keeps the recordings source (its password stays write-only).
    browser.clear_and_type("#f-secret", "").await;
    browser.click("#save").await;
    browser.wait_until("return document.getElementById('settings-message').textContent.startsWith('Saved')").await;
    let saved: serde_json::Value = app.get_as("/v1/admin/pbx", &app.admin("acme")).await.json().await.unwrap();
    assert_eq!(saved["recordings"]["password_set"], true, "{saved}");

    // The test call's recording is fetched; the callbacks list plays it (a signed URL, with seeking).
    crate::support::wait::eventually("the test call's recording to be bound", || async {
        let res = app.send(reqwest::Method::POST, "/v1/admin/recordings/sync", &app.admin("acme"), None).await;
        let report: serde_json::Value = res.json().await.unwrap();
        if report["bound"].as_u64() >= Some(1) {
            Ok(())
        } else {
            Err(report)
        }
    })
    .await;
    browser.click("#refresh-calls").await;
    browser.wait_until("return document.querySelector('#calls').textContent.includes('test')").await;
    // Each leg's outcome has its own column.
    let legs = browser.eval("const r = document.querySelector('#calls tr'); return [r.children[6].textContent, r.children[7].textContent]").await;
    assert_eq!(legs, serde_json::json!(["answered", "answered"]));
    browser.wait_until("return !!document.querySelector('#calls audio')").await;
    let probe = browser
        .eval(
            "const a = document.querySelector('#calls audio'); const r = await fetch(a.src, {headers: {Range: 'bytes=0-3'}}); \
             return r.status + ' ' + r.headers.get('content-type') + ' ' + await r.text();",
        )
        .await;
    assert_eq!(probe, "206 audio/wav RIFF");
    browser.eval("document.getElementById('calls-section').scrollIntoView(); return true;").await;
    browser.screenshot(&std::env::temp_dir().join("dialback-admin-page-calls.png")).await;

    // The journal is searched the way the office works: the client's number as typed, a kind.
    browser.clear_and_type("#j-phone", "8 (916) 123-45-67").await;
    browser.click("#refresh-calls").await;
    browser.wait_until("return document.querySelectorAll('#calls tr[data-id]').length === 1").await;
    browser.eval("document.getElementById('j-kind').value = 'office'; return true;").await;
    browser.click("#refresh-calls").await;
    browser.wait_until("return document.querySelector('#calls').textContent.includes('No calls match')").await;
    browser.clear_and_type("#j-phone", "not a phone").await;
    browser.click("#refresh-calls").await;
    browser.wait_until("return document.getElementById('calls-message').textContent.includes('phone')").await;
    browser.clear_and_type("#j-phone", "").await;
    browser.eval("document.getElementById('j-kind').value = ''; return true;").await;
    // The CSV export and the dialplan download, fetched with the admin's token.
    browser.click("#export-csv").await;
    browser
        .wait_until("return document.getElementById('calls-message').textContent === 'Downloaded callbacks.csv.'")
        .await;
    browser.click("#download-dialplan").await;
    browser
        .wait_until(
            "return document.getElementById('dialplan-message').textContent === 'Downloaded extensions_custom.conf.'",
        )
        .await;
    // The answer confirmation is a setting like the others.
    browser.eval("document.getElementById('f-confirm_courier_answer').value = 'dtmf'; return true;").await;
    browser.clear_and_type("#f-confirm_timeout_s", "7").await;
    browser.click("#save").await;
    browser.wait_until("return document.getElementById('settings-message').textContent.startsWith('Saved')").await;
    let saved: serde_json::Value = app.get_as("/v1/admin/pbx", &app.admin("acme")).await.json().await.unwrap();
    assert_eq!(
        (saved["confirm_courier_answer"].as_str(), saved["confirm_timeout_s"].as_u64()),
        (Some("dtmf"), Some(7))
    );
}
