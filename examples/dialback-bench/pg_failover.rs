//! `pg-failover`: callbacks at a fixed rate through one dialback whose database URL names a
//! primary and its streaming standby with `target_session_attrs=read-write`; halfway, `--switch`
//! stops the primary and promotes the standby (`scripts/pg-failover` sets both up). Figures
//! (`pg_failover_*`): what was accepted and refused, when and for how long requests were refused,
//! and how the accepted callbacks ended, read on the new primary: none may be lost or `unknown`.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::load::{self, unix_nanos, Api, ApiTapper};
use crate::stats::Figures;

pub struct PgFailover {
    pub rate: f64,
    pub connections: usize,
    pub duration: Duration,
    /// A command (`sh -c`) that stops the primary and promotes the standby.
    pub switch: String,
}

pub async fn run(api: &Api, tokens: &Arc<Vec<String>>, f: &PgFailover, figures: &mut Figures) -> anyhow::Result<()> {
    let key = "pg_failover_";
    eprintln!("pg-failover: {} callbacks/s for {} s, the database switched halfway", f.rate, f.duration.as_secs_f64());
    let tappers = ApiTapper::many(api.addr, tokens, f.connections).await;
    let load = load::open_loop(tappers, f.rate, f.duration);
    let switch = async {
        tokio::time::sleep(f.duration / 2).await;
        let started = unix_nanos();
        let status = tokio::process::Command::new("sh").args(["-c", &f.switch]).status().await?;
        anyhow::ensure!(status.success(), "the switch ({}) failed: {status}", f.switch);
        Ok((started, unix_nanos()))
    };
    let (mut run, switched) = tokio::join!(load, switch);
    let (switch_started, switch_ended) = switched?;
    let seconds = |nanos: u128| nanos as f64 / 1e9;
    figures.num(&format!("{key}rate_target_per_s"), f.rate);
    figures.num(&format!("{key}switch_s"), seconds(switch_ended - switch_started));
    // Refused requests, in time from the switch's start: when the first and the last came.
    let refused: Vec<f64> =
        run.error_unix_nanos.iter().map(|&at| seconds(at) - seconds(switch_started)).collect::<Vec<_>>();
    let first = refused.iter().copied().fold(f64::INFINITY, f64::min);
    let last = refused.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !refused.is_empty() {
        figures.num(&format!("{key}refused_from_s"), first);
        figures.num(&format!("{key}refused_until_s"), last);
    }
    for (status, n) in &run.errors {
        figures.count(&format!("{key}errors_{status}"), *n);
    }
    run.figures(figures, key);
    let ids: Vec<Uuid> = run.taps.iter().filter_map(|t| Uuid::parse_str(&t.id).ok()).collect();
    let end = load::wait_terminal(&api.config, &ids, Duration::from_secs(120)).await?;
    figures.count(&format!("{key}terminal_count"), end.terminal);
    figures.count(&format!("{key}completed_count"), end.completed);
    figures.count(&format!("{key}lost_count"), ids.len() as u64 - end.terminal);
    figures.count(&format!("{key}unknown_count"), end.by_status.get("unknown").copied().unwrap_or(0));
    if end.completed < ids.len() as u64 {
        eprintln!("  statuses: {:?}", end.by_status);
    }
    Ok(())
}
