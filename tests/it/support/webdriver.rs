//! A minimal W3C WebDriver client for end-to-end tests of the admin page in real headless
//! Chromium (Debian's `chromium` and `chromium-driver`, installed by scripts/test).

// This talks to chromedriver, not to dialback: nothing to check against openapi.yaml.
#![allow(clippy::disallowed_methods)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
    profile: std::path::PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session whose person reads English.
    pub async fn start() -> Browser {
        Browser::start_reading("en-US,en").await
    }

    /// Starts chromedriver and a headless Chromium session that asks for `languages` (its
    /// Accept-Language, as a person sets it in the browser).
    pub async fn start_reading(languages: &str) -> Browser {
        let chromedriver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect(
                "chromedriver not found: run the suite with scripts/test, which installs chromium and chromium-driver",
            );
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = crate::support::http_client();
        super::wait::eventually("chromedriver to start", || http.get(format!("{base}/status")).send()).await;
        let profile = std::env::temp_dir().join(format!("dialback-chromium-{}", uuid::Uuid::new_v4().simple()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                         "--no-first-run", "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--window-size=1280,1000", format!("--user-data-dir={}", profile.display())],
                "prefs": {"intl": {"accept_languages": languages}}
            }
        }}});
        let res: Value = http.post(format!("{base}/session")).json(&caps).send().await.unwrap().json().await.unwrap();
        let session = res["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {res}")).to_owned();
        Browser { driver, base: format!("{base}/session/{session}"), http, profile }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res: Value = req.send().await.unwrap().json().await.unwrap();
        if let Some(err) = res["value"].get("error") {
            panic!("webdriver {path}: {err}: {}", res["value"]["message"]);
        }
        res["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    /// The element matching `css`, once it exists.
    pub async fn find(&self, css: &str) -> String {
        super::wait::eventually(format!("an element {css}"), || async {
            let res: Value = self
                .http
                .post(format!("{}/element", self.base))
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            res["value"][ELEMENT].as_str().map(str::to_owned).ok_or(res)
        })
        .await
    }

    pub async fn clear_and_type(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{el}/clear"), Some(json!({}))).await;
        self.call(reqwest::Method::POST, &format!("/element/{el}/value"), Some(json!({"text": text}))).await;
    }

    pub async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{el}/click"), Some(json!({}))).await;
    }

    pub async fn text(&self, css: &str) -> String {
        let el = self.find(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{el}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs a script in the page and returns its result.
    pub async fn eval(&self, script: &str) -> Value {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": []}))).await
    }

    /// Waits until `script` (returning a boolean) is true in the page.
    pub async fn wait_until(&self, script: &str) {
        super::wait::eventually(script, || async {
            match self.eval(script).await {
                Value::Bool(true) => Ok(()),
                other => Err(other),
            }
        })
        .await
    }

    /// Runs axe-core (fetched by scripts/test, `ensure_axe` in scripts/lib.sh) on the page as it is
    /// now; returns its violations: id, impact, help, and the first elements affected.
    pub async fn accessibility_violations(&self) -> Vec<Value> {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache"));
        let path = cache.join("dialback/axe/axe.min.js");
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "the accessibility check needs axe-core at {} ({e}): run scripts/test, or \
                 `source scripts/lib.sh && ensure_axe`",
                path.display()
            )
        });
        assert_eq!(self.eval(&format!("{source}\n;return typeof axe;")).await, "object", "axe-core loads");
        let script = "const done = arguments[arguments.length - 1]; \
            axe.run(document).then((r) => done({passed: r.passes.length, violations: r.violations.map((v) => \
              ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' '))}))}), \
              (e) => done({passed: 0, violations: [{id: 'axe-failed', impact: 'critical', help: String(e)}]}));";
        let res = self.call(reqwest::Method::POST, "/execute/async", Some(json!({"script": script, "args": []}))).await;
        // A check that ran no rule proves nothing.
        assert!(res["passed"].as_u64() > Some(10), "axe-core ran its rules: {res}");
        eprintln!(
            "axe-core: {} rules passed, {} violated",
            res["passed"],
            res["violations"].as_array().map_or(0, Vec::len)
        );
        res["violations"].as_array().cloned().unwrap_or_default()
    }

    /// Sets the window's size (a narrow screen: a phone's width).
    pub async fn resize(&self, width: u32, height: u32) {
        self.call(reqwest::Method::POST, "/window/rect", Some(json!({"width": width, "height": height}))).await;
    }

    /// Saves a PNG of the page (to look at when a test fails).
    pub async fn screenshot(&self, path: &std::path::Path) {
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = decode_base64(b64.as_str().unwrap_or_default());
        let _ = std::fs::write(path, bytes);
    }
}

fn decode_base64(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let sextets: Vec<u8> = s.bytes().filter_map(value).collect();
    sextets
        .chunks(4)
        .flat_map(|c| {
            let n = c.iter().enumerate().fold(0u32, |acc, (i, v)| acc | (u32::from(*v) << (18 - 6 * i)));
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            bytes.into_iter().take(c.len().saturating_sub(1))
        })
        .collect()
}

/// Ends the WebDriver session, so chromedriver closes Chromium (killing chromedriver alone leaves
/// the browser's processes running). Blocking, with std's TCP: `Drop` cannot await.
fn end_session(session_url: &str) {
    use std::io::{Read, Write};
    let Some((host, path)) = session_url.strip_prefix("http://").and_then(|rest| rest.split_once('/')) else {
        return;
    };
    let Ok(mut stream) = std::net::TcpStream::connect(host) else { return };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!("DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_ok() {
        // The answer comes once the browser is closed (chromedriver may keep the connection open).
        let _ = stream.read(&mut [0u8; 1024]);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        end_session(&self.base);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
