//! Several dialback processes on one database: who follows which call, and what happens to a
//! process's calls when it stops or dies.
//!
//! Each process registers in `dialback_processes` and beats every [`HEARTBEAT`]; the calls it
//! places name it as their owner (`callbacks.owner`). Heartbeats were chosen over session-level
//! advisory locks: they are visible (`SELECT * FROM dialback_processes` says who is alive and
//! since when), they survive a connection pooler in transaction mode, and a process whose
//! database connection blips is not declared dead by it.
//!
//! Asterisk sends every event to every AMI session, so every process with a session to a PBX
//! follows all of its calls it hears; only the owner decides that an end was missed. On each beat
//! a process claims the calls in flight whose owner is dead (silent for [`DEAD_AFTER`]) or that
//! were released (their process stopped, or lost its AMI link): at once for companies it has a
//! session up with, after [`GRACE`] more for the others, opening a session to their PBX. It then
//! asks the PBX which of them are still up (`CoreShowChannels`): those are followed to their end,
//! the others ended while nobody was listening and become `unknown`, saying so.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{pbx_login, CallbackService};
use crate::ami::client::{AmiClient, LiveChannel};
use crate::store;
use crate::store::callbacks::CallbackRow;
use crate::store::processes::Orphans;
use crate::store::StoreError;
use crate::telemetry::Chain;

/// How often a process says it is alive and looks for calls to take over.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A process silent for this long is dead: its calls are taken over.
pub const DEAD_AFTER: Duration = Duration::from_secs(5);
/// How much longer a process with no AMI session to the call's PBX leaves it to one that has.
pub const GRACE: Duration = Duration::from_secs(3);
/// Calls claimed per beat at most (the rest on the next).
pub const CLAIM_BATCH: i64 = 1000;

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

impl CallbackService {
    /// Beats, takes over orphaned calls, and on `stop` hands this process's calls over.
    pub fn spawn_takeover(self: &Arc<Self>, stop: CancellationToken) -> JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(
            async move {
                on_every_beat(&stop, "the heartbeat", || service.beat()).await;
                service.leave().await;
            }
            .instrument(tracing::info_span!("takeover")),
        )
    }

    async fn beat(self: &Arc<Self>) -> Result<(), StoreError> {
        let me = self.tracker.process();
        let db = store::client(&self.db).await?;
        store::processes::beat(&db, me, &host(), std::process::id(), env!("CARGO_PKG_VERSION")).await?;
        let tenants_up = self.pool.tenants_up();
        let orphans = Orphans { me, dead_after: DEAD_AFTER, tenants_up: &tenants_up, grace: GRACE, limit: CLAIM_BATCH };
        let claimed = store::callbacks::claim_orphans(&db, &orphans).await?;
        let alive = store::processes::alive(&db, DEAD_AFTER).await?;
        metrics::gauge!("dialback_processes_alive").set(alive as f64);
        // Limits are the company's: each process allows its share (src/limits.rs).
        self.limiters.share_among(alive.max(1) as u32);
        self.pool.share_among(alive.max(1) as usize);
        self.tracker.set_processes_alive(alive.max(1) as usize);
        drop(db);
        let mut by_tenant: BTreeMap<String, Vec<(CallbackRow, String)>> = BTreeMap::new();
        for (row, why) in claimed {
            by_tenant.entry(row.tenant_id.clone()).or_default().push((row, why));
        }
        for (tenant, rows) in by_tenant {
            metrics::counter!("dialback_calls_taken_over_total").increment(rows.len() as u64);
            let ids: Vec<String> = rows.iter().map(|(r, _)| r.id.to_string()).collect();
            tracing::info!(
                tenant,
                calls = rows.len(),
                ids = ids.join(","),
                "took over calls nobody alive was following"
            );
            let service = self.clone();
            tokio::spawn(async move { service.follow_taken_over(&tenant, rows).await }.in_current_span());
        }
        Ok(())
    }

    /// Follows calls just taken over, on the tenant's AMI session (opened when there is none),
    /// and asks the PBX which of them are still up.
    async fn follow_taken_over(&self, tenant: &str, rows: Vec<(CallbackRow, String)>) {
        let since = Instant::now();
        let client = match self.pbx_session(tenant).await {
            Ok(client) => client,
            Err(why) => {
                self.tracker.adopt(tenant, rows, Vec::new(), since);
                tracing::warn!(
                    tenant,
                    why,
                    "taken-over calls wait for the PBX; they are given up after ami.lost_after_s"
                );
                return;
            }
        };
        let holds = rows.iter().filter_map(|_| self.pool.hold(tenant)).collect();
        self.tracker.adopt(tenant, rows, holds, since);
        let asked_at = Instant::now();
        if let Some(channels) = self.channels_up(tenant, &client).await {
            self.tracker.reconcile(tenant, channels.into_iter().map(|c| c.linkedid).collect(), asked_at);
        }
    }

    /// The company's AMI session, opened when there is none; why not when it has no PBX settings
    /// or they cannot be read.
    pub async fn pbx_session(&self, tenant: &str) -> Result<AmiClient, String> {
        match self.settings(tenant).await {
            Ok(Some((settings, secret))) => Ok(self.pool.client(tenant, &pbx_login(&settings, secret))),
            Ok(None) => Err("the company has no PBX settings".into()),
            Err(e) => Err(format!("its PBX settings could not be read: {}", Chain(&e))),
        }
    }

    /// The channels up on the company's PBX (`CoreShowChannels`) once `client` is logged in; None
    /// when it is not yet (its login asks the same question: the tracker's answer to
    /// `PbxSignal::Up`) or the PBX would not say.
    pub async fn channels_up(&self, tenant: &str, client: &AmiClient) -> Option<Vec<LiveChannel>> {
        client.wait_up(self.connect_timeout).await.ok()?;
        match client.core_show_channels().await {
            Ok(channels) => Some(channels),
            Err(e) => {
                tracing::warn!(tenant, error = %Chain(&e),
                    "could not ask the PBX which taken-over calls are up (CoreShowChannels needs write = reporting); \
                     they are followed if their events come");
                None
            }
        }
    }

    /// Stopping: hands the calls this process follows over to the others (they take them at
    /// once) and leaves the list of processes.
    async fn leave(&self) {
        let me = self.tracker.process();
        let result = async {
            let db = store::client(&self.db).await?;
            let because = "the dialback process following it was stopping";
            let released = store::callbacks::release(&db, me, None, because).await?;
            store::processes::leave(&db, me).await?;
            Ok::<_, StoreError>(released)
        }
        .await;
        match result {
            Ok(n) => tracing::info!(calls = n, "stopping: calls in flight handed over to the other processes"),
            Err(e) => tracing::warn!(error = %Chain(&e),
                "stopping: could not hand calls over; the others take them once this process's heartbeat is old"),
        }
    }
}

fn host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .unwrap_or_default()
}
