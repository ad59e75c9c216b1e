//! dialback as its own process: the real binary (`dialback serve`), configured through `DIALBACK_*`
//! variables like the tests' in-process apps, so a test can kill it (SIGKILL: no goodbye) or stop
//! it (SIGTERM) as an operator or a crash would.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{test_config, TestApp};

pub struct DialbackProcess {
    /// A client for it, as for an in-process app (same secrets, so tokens work on both).
    pub app: TestApp,
    child: Child,
}

impl DialbackProcess {
    /// Starts `dialback serve` on `database_url` (migrated already, or not) with the tests'
    /// configuration and `settings` (`DIALBACK_` names without the prefix, e.g.
    /// `("WEBHOOKS__REQUEST_TIMEOUT_MS", "3000")`), and waits until it listens.
    pub async fn start(database_url: &str, settings: &[(&str, &str)]) -> DialbackProcess {
        let config: dialback::config::Config =
            dialback::config::Config::from_figment(test_config(database_url)).expect("the tests' config");
        let recordings = super::recordings_dir();
        let mut command = Command::new(env!("CARGO_BIN_EXE_dialback"));
        command
            .arg("serve")
            .env("DIALBACK_DATABASE_URL", database_url)
            .env("DIALBACK_LISTEN", "127.0.0.1:0")
            .env("DIALBACK_JWT_SECRET", super::JWT_SECRET)
            .env("DIALBACK_SECRETS_KEY", "ab".repeat(32))
            .env("DIALBACK_RECORDINGS_DIR", &recordings)
            .env("DIALBACK_LOG_FORMAT", "json")
            .env("DIALBACK_LOG", "info")
            .env("DIALBACK_HTTP__WORKERS", "1")
            .env("DIALBACK_WEBHOOKS__ALLOW_HTTP", "true")
            .env("DIALBACK_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true")
            .env("DIALBACK_AGI__LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (name, value) in settings {
            command.env(format!("DIALBACK_{name}"), value);
        }
        let mut child = command.spawn().expect("the dialback binary starts");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let (port, agi_port) = super::wait::within_patience("dialback to listen", async {
            let mut agi_port = None;
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                if entry["message"] == "FastAGI listening" {
                    let listen = entry["listen"].as_str().expect("the FastAGI address is logged");
                    agi_port = listen.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
                }
                if entry["message"] == "dialback listening" {
                    return (entry["port"].as_u64().expect("the port is logged") as u16, agi_port);
                }
            }
            panic!("dialback exited before it listened");
        })
        .await;
        // Its log keeps being read (and dropped) so the pipe never fills up.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let app = TestApp {
            address: format!("http://127.0.0.1:{port}"),
            agi_port,
            database_url: database_url.to_owned(),
            config,
            http: crate::support::http_client(),
        };
        DialbackProcess { app, child }
    }

    /// Kills it with SIGKILL: no goodbye to anyone, leases and locks left to lapse.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL");
    }

    /// Stops it with SIGTERM, as an orchestrator does, and waits until it has exited.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("still running").to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill runs");
        assert!(sent.success(), "SIGTERM to {pid}");
        self.child.wait().await.expect("it exits")
    }
}
