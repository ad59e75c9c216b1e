//! `failover`: callbacks at a fixed rate split over two dialback processes on one database, one
//! killed (SIGKILL) halfway (`failover_*`): what was accepted and how fast, how long until the
//! survivor followed every call the dead process was following (takeover), and how the accepted
//! callbacks ended: none may be lost (never terminal) or `unknown`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::load::{self, db, Api, ApiTapper};
use crate::stats::Figures;

/// A call in flight, as `callbacks.owner` is claimed for (src/store/callbacks.rs).
const IN_FLIGHT: &str = "ended_at IS NULL AND status IN ('queued', 'ringing_courier', 'ringing_client', 'connected')";

pub struct Failover {
    /// The process killed halfway: where it listens, and its pid.
    pub victim: (SocketAddr, u32),
    pub rate: f64,
    pub connections: usize,
    pub duration: Duration,
}

pub async fn run(api: &Api, tokens: &Arc<Vec<String>>, f: &Failover, figures: &mut Figures) -> anyhow::Result<()> {
    let key = "failover_";
    eprintln!(
        "failover: {} callbacks/s for {} s over two processes, pid {} killed halfway",
        f.rate,
        f.duration.as_secs_f64(),
        f.victim.1
    );
    // Half the connections to each process: a balancer that alternates.
    let mut tappers = ApiTapper::many(f.victim.0, tokens, f.connections / 2).await;
    tappers.extend(ApiTapper::many(api.addr, tokens, f.connections / 2).await);
    let victim = victim_id(api, f.victim.1).await?;
    let load = load::open_loop(tappers, f.rate, f.duration);
    let kill = async {
        tokio::time::sleep(f.duration / 2).await;
        kill(api, victim, f.victim.1).await
    };
    let (mut run, killed) = tokio::join!(load, kill);
    let (in_flight, takeover) = killed?;
    figures.num(&format!("{key}rate_target_per_s"), f.rate);
    figures.num(&format!("{key}load_seconds"), f.duration.as_secs_f64());
    run.figures(figures, key);
    figures.count(&format!("{key}victim_in_flight_count"), in_flight);
    figures.num(&format!("{key}takeover_s"), takeover.as_secs_f64());
    load::outcome_figures(&api.config, &run, figures, key).await
}

/// The victim's id among the processes sharing the database.
async fn victim_id(api: &Api, pid: u32) -> anyhow::Result<Uuid> {
    let client = db(&api.config).await?;
    let row = client
        .query_opt(
            "SELECT id FROM dialback_processes WHERE pid = $1 ORDER BY started_at DESC LIMIT 1",
            &[&(pid as i32)],
        )
        .await?;
    row.map(|r| r.get(0)).ok_or_else(|| anyhow::anyhow!("process {pid} is not registered in dialback_processes"))
}

/// Kills the victim; returns how many calls it was following then, and how long until another
/// process followed every one of them that was still in flight.
async fn kill(api: &Api, victim: Uuid, pid: u32) -> anyhow::Result<(u64, Duration)> {
    let client = db(&api.config).await?;
    let count = format!("SELECT count(*) FROM callbacks WHERE owner = $1 AND {IN_FLIGHT}");
    let status = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status()?;
    anyhow::ensure!(status.success(), "kill -KILL {pid} failed");
    let killed = Instant::now();
    let in_flight = client.query_one(&count, &[&victim]).await?.get::<_, i64>(0) as u64;
    eprintln!("  killed pid {pid}: it was following {in_flight} calls");
    loop {
        let left: i64 = client.query_one(&count, &[&victim]).await?.get(0);
        if left == 0 {
            return Ok((in_flight, killed.elapsed()));
        }
        anyhow::ensure!(killed.elapsed() < Duration::from_secs(120), "{left} calls not taken over after 120 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
