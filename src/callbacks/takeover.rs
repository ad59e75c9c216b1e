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

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{pbx_login, CallbackService};
use crate::store;
use crate::store::callbacks::{CallbackRow, Orphans};
use crate::store::StoreError;
use crate::telemetry::Chain;

/// How often a process says it is alive and looks for calls to take over.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A process silent for this long is dead: its calls are taken over.
pub const DEAD_AFTER: Duration = Duration::from_secs(5);
/// How much longer a process with no AMI session to the call's PBX leaves it to one that has.
pub const GRACE: Duration = Duration::from_secs(3);
/// Calls claimed per beat at most (the rest on the next).
const CLAIM_BATCH: i64 = 1000;

impl CallbackService {
    /// Beats, takes over orphaned calls, and on `stop` hands this process's calls over.
    pub fn spawn_takeover(self: &Arc<Self>, stop: CancellationToken) -> JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(
            async move {
                let mut beat = tokio::time::interval(HEARTBEAT);
                beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = beat.tick() => {}
                        _ = stop.cancelled() => break,
                    }
                    if let Err(e) = service.beat().await {
                        metrics::counter!("dialback_takeover_errors_total").increment(1);
                        tracing::warn!(error = %Chain(&e), "heartbeat failed; trying again in a second");
                    }
                }
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
        let settings = match self.settings(tenant).await {
            Ok(Some(settings)) => settings,
            Ok(None) => {
                self.tracker.adopt(tenant, rows, Vec::new(), since);
                tracing::warn!(
                    tenant,
                    "taken-over calls have no PBX settings to follow them on; they are given up after ami.lost_after_s"
                );
                return;
            }
            Err(e) => {
                self.tracker.adopt(tenant, rows, Vec::new(), since);
                tracing::warn!(tenant, error = %Chain(&e), "could not read the PBX settings of taken-over calls; they wait for the PBX");
                return;
            }
        };
        let (settings, secret) = settings;
        let client = self.pool.client(tenant, &pbx_login(&settings, secret));
        let holds = rows.iter().filter_map(|_| self.pool.hold(tenant)).collect();
        self.tracker.adopt(tenant, rows, holds, since);
        // When the session is not up yet, its login asks the PBX the same question (the tracker's
        // answer to `PbxSignal::Up`).
        if client.wait_up(self.connect_timeout).await.is_err() {
            return;
        }
        let asked_at = Instant::now();
        match client.core_show_channels().await {
            Ok(channels) => {
                let alive: HashSet<String> = channels.into_iter().map(|c| c.linkedid).collect();
                self.tracker.reconcile(tenant, alive, asked_at);
            }
            Err(e) => tracing::warn!(tenant, error = %Chain(&e),
                "could not ask the PBX which taken-over calls are up (CoreShowChannels needs write = reporting); \
                 they are followed if their events come, else given up after ami.lost_after_s"),
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
