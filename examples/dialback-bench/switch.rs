//! `switch`: callbacks at a fixed rate while a command changes what serves them, e.g. a database
//! failover (scripts/pg-failover: the primary stopped, its standby promoted) or a rolling upgrade
//! (scripts/rolling-upgrade: each process replaced by the new release in turn). The requests go to
//! the APIs in turn, as a balancer sends them; one a process refuses to connect (it is stopping or
//! starting) goes to the next API with the same Idempotency-Key, as a balancer retries a failed
//! connection elsewhere. Figures (`<name>_*`): what was accepted and refused, when requests were
//! refused in time from the switch's start, and how the accepted callbacks ended: none may be
//! lost or `unknown`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::load::{self, unix_nanos, Api, ApiTapper, Tap, Tapper};
use crate::stats::Figures;

pub struct Switch {
    /// The figures' prefix, e.g. `pg_failover_`.
    pub name: String,
    /// Every API the requests go to, in turn.
    pub apis: Vec<SocketAddr>,
    pub rate: f64,
    pub connections: usize,
    pub duration: Duration,
    /// When the command runs, as a fraction of the duration.
    pub at: f64,
    /// The command (`sh -c`).
    pub command: String,
}

/// A worker's tappers, one per API: it starts with its own and moves on when one cannot be reached.
struct Balanced {
    tappers: Vec<ApiTapper>,
    next: usize,
}

impl Tapper for Balanced {
    async fn tap(&mut self, n: usize) -> Result<Tap, (u16, String)> {
        let mut last = (0, String::new());
        for _ in 0..self.tappers.len() {
            match self.tappers[self.next].tap(n).await {
                Err((0, why)) => {
                    last = (0, why);
                    self.next = (self.next + 1) % self.tappers.len();
                }
                answered => return answered,
            }
        }
        Err(last)
    }
}

pub async fn run(api: &Api, tokens: &Arc<Vec<String>>, s: &Switch, figures: &mut Figures) -> anyhow::Result<()> {
    let key = &s.name;
    eprintln!(
        "switch: {} callbacks/s for {} s over {:?}, `{}` at {}",
        s.rate,
        s.duration.as_secs_f64(),
        s.apis,
        s.command,
        s.at
    );
    // One nonce for every API's tappers: worker w's nth tap carries one key whichever API takes it.
    let nonce = Uuid::new_v4().simple().to_string();
    let mut workers = Vec::with_capacity(s.connections);
    for w in 0..s.connections {
        let mut tappers = Vec::with_capacity(s.apis.len());
        for addr in &s.apis {
            tappers.push(ApiTapper::new(*addr, tokens.clone(), w, s.connections, &nonce).await);
        }
        workers.push(Balanced { tappers, next: w % s.apis.len() });
    }
    let load = load::open_loop(workers, s.rate, s.duration);
    let switch = async {
        tokio::time::sleep(s.duration.mul_f64(s.at)).await;
        let started = unix_nanos();
        let status = tokio::process::Command::new("sh").args(["-c", &s.command]).status().await?;
        anyhow::ensure!(status.success(), "the switch ({}) failed: {status}", s.command);
        Ok((started, unix_nanos()))
    };
    let (mut run, switched) = tokio::join!(load, switch);
    let (switch_started, switch_ended) = switched?;
    let seconds = |nanos: u128| nanos as f64 / 1e9;
    figures.num(&format!("{key}rate_target_per_s"), s.rate);
    figures.num(&format!("{key}switch_s"), seconds(switch_ended - switch_started));
    let refused: Vec<f64> = run.error_unix_nanos.iter().map(|&at| seconds(at) - seconds(switch_started)).collect();
    if !refused.is_empty() {
        figures.num(&format!("{key}refused_from_s"), refused.iter().copied().fold(f64::INFINITY, f64::min));
        figures.num(&format!("{key}refused_until_s"), refused.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    }
    for (status, n) in &run.errors {
        figures.count(&format!("{key}errors_{status}"), *n);
    }
    run.figures(figures, key);
    load::outcome_figures(&api.config, &run, figures, key).await
}
