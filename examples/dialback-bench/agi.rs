//! Return-call routing over FastAGI at a fixed rate (issue 18): the load generator plays
//! Asterisk's side of each conversation (a new connection, the environment, `200 result=1` to each
//! `SET VARIABLE`, `HANGUP` when dialback closes) for the bench tenant's clients, each the client of
//! an active order, and measures a decision from connect to dialback's close: `agi_*` figures.
//! How long the first `SET VARIABLE` took after the environment was sent (the decision, as Asterisk
//! hears it, without the connection and the other four round trips) is `agi_first_variable_*`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dialback::auth::Role;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::http::{request, Conn};
use crate::load::{self, client_phone, Api, Tap, Tapper};
use crate::stats::Figures;

/// One worker's conversations: client `k` calls back (worker `w` of `stride` takes w, w + stride…).
struct AgiTapper {
    agi: SocketAddr,
    key: String,
    couriers: usize,
    worker: usize,
    stride: usize,
    /// Environment sent to first `SET VARIABLE` read, µs, of every worker's conversations.
    first_variable_us: Arc<Mutex<Vec<u64>>>,
}

impl Tapper for AgiTapper {
    async fn tap(&mut self, n: usize) -> Result<Tap, (u16, String)> {
        let k = (self.worker + n * self.stride) % self.couriers;
        let caller = client_phone(k).trim_start_matches('+').to_owned();
        let sent_unix_nanos = load::unix_nanos();
        let (route, first_variable) =
            converse(self.agi, &self.key, &caller, &format!("bench.{k}.{n}")).await.map_err(|e| (0, e.to_string()))?;
        if let Some(first_variable) = first_variable {
            self.first_variable_us.lock().unwrap().push(first_variable.as_micros() as u64);
        }
        if route.is_empty() {
            return Err((1, format!("no route for the client of order-{k}")));
        }
        Ok(Tap { id: route, sent_unix_nanos })
    }
}

/// One FastAGI conversation as Asterisk holds it; the `DIALBACK_ROUTE` it set, and how long after
/// the environment was sent the first `SET VARIABLE` came (None: none came).
async fn converse(
    agi: SocketAddr,
    key: &str,
    caller: &str,
    uniqueid: &str,
) -> std::io::Result<(String, Option<Duration>)> {
    let stream = TcpStream::connect(agi).await?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let environment = format!(
        "agi_network: yes\nagi_network_script: route?key={key}\nagi_request: agi://{agi}/route?key={key}\n\
         agi_channel: Local/74951234567@dialback-inbound-00000001;2\nagi_language: en\nagi_type: Local\n\
         agi_uniqueid: {uniqueid}\nagi_version: 22.10.1\nagi_callerid: {caller}\nagi_calleridname: Client\n\
         agi_context: dialback-inbound\nagi_extension: 74951234567\nagi_priority: 2\nagi_arg_1: 74951234567\n\n"
    );
    write.write_all(environment.as_bytes()).await?;
    let asked = Instant::now();
    let mut first_variable = None;
    let mut reader = BufReader::new(read);
    let mut route = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            let _ = write.write_all(b"HANGUP\n").await;
            return Ok((route, first_variable));
        }
        first_variable.get_or_insert_with(|| asked.elapsed());
        if let Some(value) = line.trim_end().strip_prefix("SET VARIABLE DIALBACK_ROUTE ") {
            route = value.trim_matches('"').to_owned();
        }
        write.write_all(b"200 result=1\n").await?;
    }
}

/// Turns return calls on for `tenant`, then routes `rate` calls per second for `duration` over
/// `connections` workers (each conversation on a new connection, as Asterisk makes them).
pub async fn routes(
    api: &Api,
    tenant: &str,
    agi: SocketAddr,
    couriers: usize,
    rate: f64,
    duration: Duration,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    let admin = api.token(tenant, Role::Admin, "bench-admin")?;
    let mut conn = Conn::new(api.addr);
    let res = conn
        .send(&request("PUT", api.addr, "/v1/admin/return-calls", Some(&admin), None, r#"{"enabled":true}"#))
        .await?;
    anyhow::ensure!(res.status == 200, "turning return calls on answered {}: {}", res.status, res.json());
    let key = res.json()["key"].as_str().unwrap_or_default().to_owned();
    let connections = 32;
    let first_variable_us = Arc::new(Mutex::new(Vec::new()));
    let tappers: Vec<AgiTapper> = (0..connections)
        .map(|worker| AgiTapper {
            agi,
            key: key.clone(),
            couriers,
            worker,
            stride: connections,
            first_variable_us: first_variable_us.clone(),
        })
        .collect();
    eprintln!("agi: {rate} route decisions/s for {} s against {agi}", duration.as_secs_f64());
    let mut run = load::open_loop(tappers, rate, duration).await;
    figures.num("agi_target_per_s", rate);
    figures.num("agi_decisions_per_s", run.taps.len() as f64 / run.elapsed.as_secs_f64().max(1e-3));
    figures.latencies("agi_route_", &mut run.latencies_us);
    figures.latencies("agi_first_variable_", &mut first_variable_us.lock().unwrap());
    figures.count("agi_errors", run.error_count());
    if let Some(e) = &run.first_error {
        eprintln!("  first error: {e}");
        figures.text("agi_first_error", e);
    }
    Ok(())
}
