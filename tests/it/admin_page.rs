//! The admin page in real headless Chromium: sign in with a pasted token, save settings (with a
//! recordings source), press Test against the simulator and see the steps; a wrong secret turns
//! the login step red; the test call's recording plays from the journal, which is searched, exported
//! as CSV, and sits beside the dialplan download. In Russian and English: the guided first set-up
//! followed against the simulator, the dashboard with calls placed through the API, the language
//! switch, a phone's width, and axe-core's accessibility check in both languages.

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

/// A script: whether the page shows the set-up step `step` as done.
fn step_done(step: &str) -> String {
    format!("return document.querySelector('#setup-steps li[data-step={step}]')?.dataset.done === 'true'")
}

/// axe-core's serious and critical findings on the page as it is now.
async fn serious_violations(browser: &Browser) -> Vec<serde_json::Value> {
    let all = browser.accessibility_violations().await;
    all.into_iter().filter(|v| v["impact"] == "serious" || v["impact"] == "critical").collect()
}

#[tokio::test]
async fn the_office_reads_the_page_in_its_language_with_a_dashboard_and_a_guided_first_setup() {
    let app = spawn_app().await;
    let tenant = support::unique_tenant("office");
    let browser = Browser::start_reading("ru-RU,ru;q=0.9,en;q=0.8").await;
    let shots = std::env::temp_dir();

    // A Russian browser gets the Russian page; nothing set up yet, so the guide comes first.
    browser.goto(&app.url("/admin")).await;
    assert_eq!(browser.eval("return document.documentElement.lang").await, "ru");
    assert_eq!(browser.text("#signin-title").await, "Вход");
    browser.clear_and_type("#token", &app.admin(&tenant)).await;
    browser.click("#signin").await;
    browser.wait_until("return document.querySelectorAll('#setup-steps li').length === 6").await;
    assert!(browser.text("#setup-progress").await.contains("0 из 4"));
    assert!(browser.text("#settings-message").await.contains("Настройки ещё не сохранены"));
    let violations = serious_violations(&browser).await;
    assert!(violations.is_empty(), "accessibility (ru, first set-up): {violations:#?}");
    browser.screenshot(&shots.join("dialback-admin-setup-ru.png")).await;

    // The admin saves the PBX and installs the downloaded dialplan (the simulator runs that file):
    // the first two steps turn green from what dialback sees, not from clicks.
    let (_sim, _) = support::sim_running_the_downloaded_dialplan(&app, &tenant, serde_json::json!({}), |_| {}).await;
    browser.wait_until(&format!("document.getElementById('dash-refresh').click(); {}", step_done("dialplan"))).await;
    assert_eq!(browser.eval(&step_done("pbx")).await, true);
    assert_eq!(browser.eval(&step_done("test")).await, false);

    // The page again (the token stays in the tab): the form holds the saved settings. A Test whose
    // first phone is busy fails with its hint in Russian; one to the admin's own phone connects.
    browser.goto(&app.url("/admin")).await;
    browser.wait_until("return document.getElementById('f-host').value === '127.0.0.1'").await;
    browser.clear_and_type("#test-from", "+79001112230").await;
    browser.click("#test-run").await;
    browser.wait_until("return !!document.querySelector('#steps li[data-step=first_leg][data-ok=false]')").await;
    let hint = browser.text("#steps li[data-step=first_leg] .hint").await;
    assert!(hint.contains("Что изменить: первый номер был занят"), "{hint}");
    assert!(browser.text("#steps li[data-step=login] .step-name").await.contains("вход — в порядке"));
    browser.wait_until(&step_done("test")).await;
    assert_eq!(browser.eval(&step_done("first_call")).await, false);
    browser.clear_and_type("#test-from", support::COURIER_PHONE).await;
    browser.click("#test-run").await;
    browser
        .wait_until("return document.getElementById('test-message').textContent.includes('Оба плеча соединились')")
        .await;
    // Every required step done: the guide steps aside.
    browser.wait_until("return document.getElementById('setup-section').classList.contains('hidden')").await;
    assert_eq!(browser.eval(&step_done("first_call")).await, true);

    // Calls placed through the API show on the dashboard: one reaches the client, one finds the
    // client busy, one the courier's phone busy.
    app.three_finished_calls(&tenant).await;
    browser
        .wait_until(
            "document.getElementById('dash-refresh').click(); \
             return document.getElementById('dash-calls-24h').textContent === '3'",
        )
        .await;
    assert_eq!(browser.text("#dash-reached-24h").await, "дозвонились до клиента: 1 (33%)");
    let couriers = browser.text("#dash-couriers").await;
    assert!(couriers.contains("boris") && couriers.contains("курьер: занято × 1"), "{couriers}");
    assert!(couriers.contains("клиент: занято × 1"), "{couriers}");
    assert_eq!(browser.eval("return document.getElementById('chart-hours').dataset.total").await, "3");
    assert_eq!(browser.eval("return document.querySelectorAll('#chart-hours rect').length").await, 3);
    assert_eq!(browser.text("#dash-pbx-connection").await, "подключено");
    assert!(browser.text("#dash-pbx-test").await.starts_with("пройдена"));
    assert!(browser.text("#dash-pbx-dialplan").await.starts_with("АТС выполняет этот диалплан (версия"));
    browser.click("#refresh-calls").await;
    browser.wait_until("return document.querySelectorAll('#calls tr[data-id]').length === 5").await;
    assert!(browser.text("#calls").await.contains("состоялся"));
    let violations = serious_violations(&browser).await;
    assert!(violations.is_empty(), "accessibility (ru, dashboard): {violations:#?}");
    browser.eval("window.scrollTo(0, 0); return true;").await;
    browser.screenshot(&shots.join("dialback-admin-ru.png")).await;

    // The switch: English, remembered for the next visit over the browser's own Russian.
    browser.click("#lang-en").await;
    browser.wait_until("return document.documentElement.lang === 'en' && document.getElementById('dash-calls-24h').textContent === '3'").await;
    assert_eq!(browser.text("#dash-title").await, "Calls at a glance");
    assert_eq!(browser.text("#dash-reached-24h").await, "reached the client: 1 (33%)");
    browser.goto(&app.url("/admin")).await;
    browser.wait_until("return document.documentElement.lang === 'en' && document.getElementById('dash-calls-24h').textContent === '3'").await;
    let violations = serious_violations(&browser).await;
    assert!(violations.is_empty(), "accessibility (en, dashboard): {violations:#?}");
    browser.screenshot(&shots.join("dialback-admin-en.png")).await;

    // A phone's width: one column, nothing wider than the screen.
    browser.resize(390, 900).await;
    browser.wait_until("return window.innerWidth < 500").await;
    browser.screenshot(&shots.join("dialback-admin-narrow.png")).await;
    let wider = browser
        .eval(
            "return [...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > \
             document.documentElement.clientWidth + 1 && !e.closest('.table-scroll')).slice(0, 5) \
             .map((e) => e.tagName + '#' + e.id + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))",
        )
        .await;
    assert_eq!(wider, serde_json::json!([]), "wider than a phone's screen");
    assert_eq!(browser.eval("return window.missingMessages").await, serde_json::json!([]));
}
