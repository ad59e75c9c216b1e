//! A real webhook receiver for the tests: `tests/fixtures/webhook_receiver.py`, run by the venv's
//! Python on a free port, verifying every message with the Standard Webhooks reference library.
//! Each name (`/hooks/<name>`) has its secrets and a script of answers; what it received is read
//! back. Killed when dropped.
// The receiver is not dialback: there is no spec to check its answers against.
#![allow(clippy::disallowed_methods)]

use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct Receiver {
    pub port: u16,
    http: reqwest::Client,
    child: Option<Child>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        Self::start_on(0, json!({})).await
    }

    async fn start_on(port: u16, scripts: Value) -> Receiver {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/webhook_receiver.py");
        let mut child = Command::new(super::venv_python("standardwebhooks"))
            .arg(script)
            .args(["--port", &port.to_string(), "--scripts", &scripts.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the venv's python runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = super::wait::within_patience("the webhook receiver to listen", lines.next_line()).await;
        let port = first.ok().flatten().and_then(|l| l.strip_prefix("LISTENING ").and_then(|p| p.trim().parse().ok()));
        Receiver {
            port: port.expect("the webhook receiver prints its port"),
            http: crate::support::http_client(),
            child: Some(child),
        }
    }

    /// Where `name`'s messages go.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/hooks/{name}", self.port)
    }

    /// The secrets `name` verifies with (any of them), and its next answers in order (then 204):
    /// `{"status": 500}`, `{"delay_s": 30}` (no answer in time), `{"status": 429, "retry_after": 1}`.
    pub async fn script(&self, name: &str, secrets: &[&str], answers: Value) {
        let res = self
            .http
            .post(format!("http://127.0.0.1:{}/_control/{name}", self.port))
            .json(&json!({"secrets": secrets, "answers": answers}))
            .send()
            .await
            .expect("the receiver's control");
        assert!(res.status().is_success());
    }

    /// Every request `name` received, oldest first.
    pub async fn received(&self, name: &str) -> Vec<Value> {
        let res = self
            .http
            .get(format!("http://127.0.0.1:{}/_received/{name}", self.port))
            .send()
            .await
            .expect("the receiver");
        res.json::<Vec<Value>>().await.expect("JSON")
    }

    /// Kills it (the receiver is down).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
            let _ = child.wait().await;
        }
    }

    /// Starts it again on the same port, with nothing received, scripted from the start as
    /// `scripts` says (`{"<name>": {"secrets": [...], "answers": [...]}}`).
    pub async fn restart(&mut self, scripts: Value) {
        self.stop().await;
        let again = Self::start_on(self.port, scripts).await;
        self.child = again.child;
    }
}
