//! This process among the dialback processes sharing one database, and what its services share:
//! its id and heartbeat, how many processes are alive, the companies' AMI sessions, the event bus
//! and the rate limits.
//!
//! Each process registers in `dialback_processes` and beats every [`HEARTBEAT`]; the calls it
//! places name it as their owner. Heartbeats were chosen over session-level advisory locks: they
//! are visible (`SELECT * FROM dialback_processes` says who is alive and since when), they survive
//! a connection pooler in transaction mode, and a process whose database connection blips is not
//! declared dead by it. What happens to a dead or stopping process's calls is the takeovers'
//! (callbacks/takeover.rs, return_calls/takeover.rs), which run on the same beat.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::ami::pool::AmiPool;
use crate::events::Bus;
use crate::limits::Limiters;
use crate::store::processes::Orphans;
use crate::store::{self, StoreError};
use crate::telemetry::Chain;

/// How often a process says it is alive and looks for calls to take over.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A process silent for this long is dead: its calls are taken over.
pub const DEAD_AFTER: Duration = Duration::from_secs(5);
/// How much longer a process with no AMI session to the call's PBX leaves it to one that has.
pub const GRACE: Duration = Duration::from_secs(3);
/// How long a stopping process waits, at most, for the others to claim the calls it handed over;
/// it keeps listening to them meanwhile (src/callbacks/takeover.rs `leave`).
pub const HANDOVER_WAIT: Duration = Duration::from_secs(8);
/// And how much longer, for the claimer to open its own session to the PBX and ask it.
pub const HANDOVER_MARGIN: Duration = Duration::from_secs(1);
/// Calls claimed per beat at most (the rest on the next).
pub const CLAIM_BATCH: i64 = 1000;
/// How long a tap that found a PBX's cap full waits, at most, for the processes serving to be
/// counted again ([`Cluster::recount`]) before it is refused.
pub const RECOUNT_WAIT: Duration = Duration::from_millis(500);

/// What the services of this process share.
pub struct Cluster {
    /// This process's id in `dialback_processes`: the owner of the calls it places.
    pub process: Uuid,
    /// Every company's AMI session, shared by callbacks, return calls and the dialplan check.
    pub ami: Arc<AmiPool>,
    /// Where each change's events go once written (live streams, the webhook deliverer).
    pub bus: Bus,
    /// The rate limits, each process allowing its share of a company's.
    pub limiters: Arc<Limiters>,
    db: deadpool_postgres::Pool,
    /// How many processes were alive at the last heartbeat, this one included.
    alive: AtomicUsize,
    /// Whether the last heartbeat saw calls in flight waiting for a process to follow them.
    orphans_waiting: AtomicBool,
    /// The companies whose PBX this process stands by for, as the last heartbeat chose them.
    standby: std::sync::Mutex<Vec<String>>,
    /// Not accepting requests yet, then told to stop: it says so on every beat
    /// (store/processes.rs `Beat`), and the others count it in their shares only in between.
    starting: AtomicBool,
    stopping: AtomicBool,
    /// The processes serving, this one counted, as last shared among ([`Cluster::share`]).
    serving: AtomicUsize,
    /// The list of processes the shares come from, one beat or recount at a time.
    lists: tokio::sync::Mutex<Lists>,
}

/// When the list of processes was read.
#[derive(Default)]
struct Lists {
    /// The one shared among: a beat or a recount applies a list only if it was read later (a beat
    /// that read before a recount would undo it).
    shared: Option<std::time::Instant>,
    /// The last recount's, answered or not: a tap refused before it takes its answer.
    recounted: Option<std::time::Instant>,
}

impl Lists {
    fn older_than(at: Option<std::time::Instant>, than: std::time::Instant) -> bool {
        at.is_none_or(|at| at < than)
    }
}

impl Cluster {
    pub fn new(
        process: Uuid,
        db: deadpool_postgres::Pool,
        ami: Arc<AmiPool>,
        bus: Bus,
        limiters: Arc<Limiters>,
    ) -> Arc<Self> {
        // Nothing to claim until a beat says so: the first comes at once.
        let orphans_waiting = AtomicBool::new(false);
        let standby = std::sync::Mutex::default();
        Arc::new(Cluster {
            process,
            ami,
            bus,
            limiters,
            db,
            alive: AtomicUsize::new(1),
            orphans_waiting,
            standby,
            starting: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            serving: AtomicUsize::new(1),
            lists: tokio::sync::Mutex::default(),
        })
    }

    /// How many dialback processes were alive at the last heartbeat (at least this one). With
    /// others alive, a call's changes may be written by another process.
    pub fn processes_alive(&self) -> usize {
        self.alive.load(Ordering::Relaxed).max(1)
    }

    /// Whether the last heartbeat saw calls in flight that nobody alive follows (their process
    /// died or let them go): the takeovers look for them only then, so a beat costs nothing per
    /// call in flight while no process dies.
    pub fn orphans_waiting(&self) -> bool {
        self.orphans_waiting.load(Ordering::Relaxed)
    }

    /// What this process claims on a beat: the calls in flight of processes dead for
    /// [`DEAD_AFTER`] or stopped, at once for the companies in `tenants_up` (it has heard their
    /// events), after [`GRACE`] more for the others; [`CLAIM_BATCH`] at most. Counted as a search
    /// for orphaned `calls` (`dialback_orphan_searches_total`).
    pub fn orphans<'a>(&self, calls: &'static str, tenants_up: &'a [String]) -> Orphans<'a> {
        metrics::counter!("dialback_orphan_searches_total", "calls" => calls).increment(1);
        Orphans { me: self.process, dead_after: DEAD_AFTER, tenants_up, grace: GRACE, limit: CLAIM_BATCH }
    }

    /// Beats every [`HEARTBEAT`] until `stop`.
    pub fn spawn_heartbeat(self: &Arc<Self>, stop: CancellationToken) -> JoinHandle<()> {
        let cluster = self.clone();
        tokio::spawn(
            async move { on_every_beat(&stop, "the heartbeat", || cluster.beat()).await }
                .instrument(tracing::info_span!("heartbeat")),
        )
    }

    /// The companies whose PBX this process keeps a session to for calls another process
    /// follows (see [`standby_for`]).
    pub fn standby(&self) -> Vec<String> {
        self.standby.lock().expect("standby lock").clone()
    }

    /// Says this process is alive, learns whether calls wait to be claimed and which PBXs to
    /// stand by for, and shares the companies' limits (src/limits.rs) and their PBXs' cap on
    /// originates in flight among the processes serving ([`Cluster::share`]).
    async fn beat(&self) -> Result<(), StoreError> {
        let db = store::client(&self.db).await?;
        store::processes::beat(&db, &self.beat_row()).await?;
        let read_at = std::time::Instant::now();
        let survey = store::processes::survey(&db, DEAD_AFTER).await?;
        self.orphans_waiting.store(survey.orphans_waiting, Ordering::Relaxed);
        metrics::counter!("dialback_heartbeats_total").increment(1);
        let ids: Vec<Uuid> = survey.alive.iter().map(|p| p.id).collect();
        let standby = standby_for(self.process, &ids, &survey.tenants_in_flight);
        metrics::gauge!("dialback_standby_sessions").set(standby.len() as f64);
        *self.standby.lock().expect("standby lock") = standby;
        let alive = survey.alive.len().max(1);
        metrics::gauge!("dialback_processes_alive").set(alive as f64);
        self.alive.store(alive, Ordering::Relaxed);
        let mut lists = self.lists.lock().await;
        if Lists::older_than(lists.shared, read_at) {
            self.share(&survey.alive);
            lists.shared = Some(read_at);
        }
        Ok(())
    }

    fn beat_row(&self) -> store::processes::Beat<'static> {
        static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        store::processes::Beat {
            id: self.process,
            host: HOST.get_or_init(host),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION"),
            starting: self.starting.load(Ordering::Relaxed),
            stopping: self.stopping.load(Ordering::Relaxed),
        }
    }

    /// Shares the limits and each PBX's cap among this process and the others `alive` that
    /// serve: one still starting or already stopping accepts no requests, so its share is the
    /// others'. A stopping process keeps the share it had for the requests it is finishing.
    fn share(&self, alive: &[store::processes::Alive]) {
        if self.stopping.load(Ordering::Relaxed) {
            return;
        }
        let serving = 1 + alive.iter().filter(|p| p.id != self.process && p.serving).count();
        metrics::gauge!("dialback_processes_serving").set(serving as f64);
        self.serving.store(serving, Ordering::Relaxed);
        self.limiters.share_among(serving as u32);
        self.ami.share_among(serving);
    }

    /// Accepting requests now: the others count it in their shares from their next beat.
    pub async fn start_serving(&self) {
        self.starting.store(false, Ordering::Relaxed);
        self.say_so("serving").await;
    }

    /// Told to stop, before it stops accepting requests: says so in the list of processes, so
    /// the others count it out of their shares at once (they recount when a tap finds a cap full,
    /// [`Cluster::recount`]) instead of at their next beat, and the requests a balancer moves to
    /// them are not refused meanwhile. It stays listed, following its calls, until it hands them
    /// over and leaves.
    pub async fn stop_serving(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.say_so("stopping").await;
    }

    /// Writes this process's row now rather than at the next beat, [`HEARTBEAT`] at most; the
    /// next beat writes it if this could not.
    async fn say_so(&self, what: &str) {
        let said = async { store::processes::beat(&store::client(&self.db).await?, &self.beat_row()).await };
        match tokio::time::timeout(HEARTBEAT, said).await {
            Ok(Ok(())) => tracing::info!(what, "said to the other processes"),
            Ok(Err(e)) => {
                tracing::warn!(what, error = %Chain(&e), "could not say so to the other processes yet; the next heartbeat does")
            }
            Err(_) => tracing::warn!(
                what,
                "could not say so to the other processes within {HEARTBEAT:?}; the next heartbeat does"
            ),
        }
    }

    /// A tap found this process's share of a PBX's cap full at `refused_at`: asks the database
    /// which processes serve now and shares again (one that began stopping since the last beat
    /// gives its share at once), [`RECOUNT_WAIT`] at most. This process's share of each PBX's cap
    /// now, to compare with the one that was full. Nothing to ask while it serves alone (its
    /// share is the whole cap); one recount at a time, and a tap refused before a recount began
    /// takes its answer.
    pub async fn recount(&self, refused_at: std::time::Instant) -> usize {
        if self.serving.load(Ordering::Relaxed) <= 1 {
            return self.ami.originate_share();
        }
        let mut lists = self.lists.lock().await;
        if Lists::older_than(lists.recounted, refused_at) && Lists::older_than(lists.shared, refused_at) {
            let read_at = std::time::Instant::now();
            lists.recounted = Some(read_at);
            metrics::counter!("dialback_share_recounts_total").increment(1);
            let alive = async { store::processes::alive(&store::client(&self.db).await?, DEAD_AFTER).await };
            match tokio::time::timeout(RECOUNT_WAIT, alive).await {
                Ok(Ok(alive)) => {
                    self.share(&alive);
                    lists.shared = Some(read_at);
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %Chain(&e), "could not count the processes serving again; the shares stay")
                }
                Err(_) => tracing::warn!(
                    "could not count the processes serving again within {RECOUNT_WAIT:?}; the shares stay"
                ),
            }
        }
        self.ami.originate_share()
    }

    /// Stopping, once it released `released` calls (callbacks or return calls, `what` in the log)
    /// for the others to take at once: when others are alive, leaves the list of processes (so
    /// their shares of the limits are whole while it listens) and keeps listening to the calls
    /// until `unclaimed` counts none waiting for a new process, for [`HANDOVER_WAIT`] at most,
    /// then [`HANDOVER_MARGIN`] more for the claimer to ask the PBX. A call that ends in between
    /// is recorded here (this process still has its session to the PBX and writes what it hears),
    /// not missed by both. Its heartbeat ends with the stop; a beat that raced the leave is undone
    /// by the last leave, in startup.rs.
    pub async fn listen_until_claimed<F, Fut>(&self, what: &str, released: usize, unclaimed: F)
    where
        F: Fn(store::Client) -> Fut,
        Fut: std::future::Future<Output = Result<i64, StoreError>>,
    {
        if released == 0 {
            return;
        }
        // Asked now, not taken from the last beat: a process that started since then would be
        // missed, and this one would stop at once with nobody writing the calls it let go.
        let alive = async { store::processes::alive(&store::client(&self.db).await?, DEAD_AFTER).await }.await;
        let others =
            alive.map_or(self.processes_alive() - 1, |alive| alive.iter().filter(|p| p.id != self.process).count());
        if others == 0 {
            return;
        }
        self.leave().await;
        let deadline = tokio::time::Instant::now() + HANDOVER_WAIT;
        loop {
            let left = async { unclaimed(store::client(&self.db).await?).await }.await;
            match left {
                Ok(0) => break,
                Ok(_) if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                Ok(n) => {
                    return tracing::warn!(
                        what,
                        unclaimed = n,
                        "stopping: not all claimed yet; the others take them when they next look"
                    )
                }
                Err(e) => {
                    return tracing::warn!(what, error = %Chain(&e), "stopping: could not see whether they were claimed")
                }
            }
        }
        tokio::time::sleep(HANDOVER_MARGIN).await;
    }

    /// Stopping: leaves the list of processes (the others stop counting it at once). The
    /// hand-overs leave early; startup.rs leaves again once the heartbeat has ended.
    pub async fn leave(&self) {
        let left = async { store::processes::leave(&store::client(&self.db).await?, self.process).await };
        if let Err(e) = left.await {
            tracing::warn!(error = %Chain(&e), "stopping: could not leave the list of processes; its heartbeat ages out");
        }
    }
}

/// Runs `beat` every [`HEARTBEAT`] until `stop`; a failed one is counted and logged as `what`
/// failing, and the next is tried a beat later.
pub async fn on_every_beat<F, Fut>(stop: &CancellationToken, what: &'static str, mut beat: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    let mut every = tokio::time::interval(HEARTBEAT);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = beat().await {
            metrics::counter!("dialback_takeover_errors_total").increment(1);
            tracing::warn!(error = %Chain(&e), "{what} failed; trying again in a second");
        }
    }
}

fn host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .unwrap_or_default()
}

/// The companies `me` stands by for: of those with calls in flight, each whose first two
/// processes by rendezvous hashing over the processes `alive` include `me`. Every process computes
/// the same choice from the same list, so whenever two processes are alive each such company's
/// PBX has a session on two of them besides those of the processes following its calls (the
/// death of any one process leaves every call heard), and a process joining or leaving moves
/// only the companies it ranks in.
pub fn standby_for(me: Uuid, alive: &[Uuid], tenants_in_flight: &[String]) -> Vec<String> {
    if alive.len() < 2 {
        return Vec::new();
    }
    tenants_in_flight
        .iter()
        .filter(|tenant| {
            let mut ranked: Vec<Uuid> = alive.to_vec();
            ranked.sort_by_key(|p| std::cmp::Reverse(rendezvous(tenant, *p)));
            ranked[..2].contains(&me)
        })
        .cloned()
        .collect()
}

/// A process's weight for a company: FNV-1a over both, the same in every release and on every
/// host (std's hasher promises neither).
fn rendezvous(tenant: &str, process: Uuid) -> u64 {
    tenant
        .as_bytes()
        .iter()
        .chain(b"/")
        .chain(process.as_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_company_in_flight_gets_two_standbys_whenever_two_processes_are_alive() {
        let processes: Vec<Uuid> = (1..=4u128).map(Uuid::from_u128).collect();
        let tenants: Vec<String> = (0..20).map(|i| format!("company-{i}")).collect();
        let chosen: Vec<Vec<String>> = processes.iter().map(|p| standby_for(*p, &processes, &tenants)).collect();
        for tenant in &tenants {
            assert_eq!(chosen.iter().filter(|c| c.contains(tenant)).count(), 2, "{tenant}: {chosen:?}");
        }
        assert!(chosen.iter().all(|c| c.len() < tenants.len()), "spread over the processes: {chosen:?}");
        // One process gone: each process keeps what it stood by for.
        let left = standby_for(processes[1], &processes[1..], &tenants);
        assert!(chosen[1].iter().all(|t| left.contains(t)), "{left:?}");
        // Alone, nobody stands by.
        assert!(standby_for(processes[0], &processes[..1], &tenants).is_empty());
    }
}
