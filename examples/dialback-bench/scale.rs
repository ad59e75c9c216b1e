//! Scale: N tenants, each with an idle logged-in AMI connection from dialback, then dialback's
//! resident memory and open files, and the hot tenant's callback latency next to them.
//!
//! dialback opens a tenant's connection when the tenant's first callback is placed, so each idle
//! tenant places one "call the office" callback. Their PBX (a simulator of their own) has no such
//! context and refuses the Originate at once ("Extension does not exist.", a 502 `pbx_refused`),
//! so no call runs there and the session stays logged in and idle, as a company's connection
//! does between calls. (On a shared simulator every call's events would reach every session,
//! which no real PBX of another company would do.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dialback::auth::Role;

use crate::http::{request, Conn};
use crate::load::{closed_loop, courier_id, seed_requests, send_groups, terminal_figures, Api, ApiTapper};
use crate::stats::{fds, rss_kib, Figures};

/// The dialplan context idle tenants save: the idle simulator does not have it.
const IDLE_CONTEXT: &str = "bench-idle";
/// Concurrent requests while seeding and connecting idle tenants.
const WARM_CONCURRENCY: usize = 64;

fn idle_tenant(i: usize) -> String {
    format!("idle-{i:05}")
}

pub struct Scale {
    /// Tenant counts to reach, in increasing order (e.g. 1000, 10000).
    pub levels: Vec<usize>,
    /// dialback's process id.
    pub pid: u32,
    /// The idle tenants' simulator.
    pub idle_port: u16,
    pub hot_tokens: Arc<Vec<String>>,
    pub latency_concurrency: usize,
    pub latency_duration: Duration,
}

impl Scale {
    pub async fn run(&self, api: &Api, figures: &mut Figures) -> anyhow::Result<()> {
        let most = self.levels.iter().copied().max().unwrap_or(0);
        eprintln!("scale: seeding {most} idle tenants");
        let mut groups = Vec::with_capacity(most);
        for i in 0..most {
            groups.push(seed_requests(api, &idle_tenant(i), self.idle_port, IDLE_CONTEXT, "tcp", 1, false)?);
        }
        send_groups(api.addr, groups, WARM_CONCURRENCY).await?;

        self.hot_latency(api, figures, "scale_0_").await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_base = rss_kib(self.pid)?;
        figures.count("scale_0_rss_kib", rss_base);
        figures.count("scale_0_fds", fds(self.pid)?);
        figures.num("scale_0_ami_connections", ami_connections(api).await?);

        let mut connected = 0;
        for &n in &self.levels {
            eprintln!("scale: connecting idle tenants {connected}..{n}");
            let unexpected = warm(api, connected..n).await?;
            connected = n;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let rss = rss_kib(self.pid)?;
            let key = format!("scale_{n}_");
            figures.count(&format!("{key}warm_unexpected"), unexpected);
            figures.count(&format!("{key}rss_kib"), rss);
            figures.num(&format!("rss_per_idle_conn_kib_{n}"), rss.saturating_sub(rss_base) as f64 / n as f64);
            figures.count(&format!("fds_{n}"), fds(self.pid)?);
            figures.num(&format!("{key}ami_connections"), ami_connections(api).await?);
            self.hot_latency(api, figures, &key).await?;
        }
        Ok(())
    }

    /// The hot tenant's callbacks at a fixed concurrency: `<key>callbacks_per_s`, latencies.
    async fn hot_latency(&self, api: &Api, figures: &mut Figures, key: &str) -> anyhow::Result<()> {
        let tappers = ApiTapper::many(api.addr, &self.hot_tokens, self.latency_concurrency).await;
        let mut run = closed_loop(tappers, self.latency_duration).await;
        run.figures(figures, key);
        terminal_figures(&api.config, &run, figures, key).await
    }
}

/// Places one office callback for each idle tenant in `range` (opening its AMI connection);
/// returns how many did not answer the expected 502 `pbx_refused`.
async fn warm(api: &Api, range: std::ops::Range<usize>) -> anyhow::Result<u64> {
    let tokens: Vec<String> =
        range.map(|i| api.token(&idle_tenant(i), Role::Courier, &courier_id(0))).collect::<Result<_, _>>()?;
    let tokens = Arc::new(tokens);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..WARM_CONCURRENCY {
        let (tokens, next, addr) = (tokens.clone(), next.clone(), api.addr);
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            let mut unexpected = 0u64;
            while let Some(token) = tokens.get(next.fetch_add(1, Ordering::Relaxed)) {
                let req = request("POST", addr, "/v1/callbacks", Some(token), None, r#"{"target":"office"}"#);
                match conn.send(&req).await {
                    Ok(r) if r.status == 502 && r.json()["code"] == "pbx_refused" => {}
                    Ok(r) => {
                        if unexpected == 0 {
                            eprintln!("  unexpected answer while connecting a tenant: {} {}", r.status, r.json());
                        }
                        unexpected += 1;
                    }
                    Err(e) => {
                        eprintln!("  no answer while connecting a tenant: {e}");
                        unexpected += 1;
                    }
                }
            }
            unexpected
        }));
    }
    let mut unexpected = 0;
    for worker in workers {
        unexpected += worker.await?;
    }
    Ok(unexpected)
}

/// dialback's `dialback_ami_connections` gauge, from `/metrics`.
async fn ami_connections(api: &Api) -> anyhow::Result<f64> {
    let mut conn = Conn::new(api.addr);
    let answer = conn.send(&request("GET", api.addr, "/metrics", None, None, "")).await?;
    let text = String::from_utf8_lossy(&answer.body);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("dialback_ami_connections "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0))
}
