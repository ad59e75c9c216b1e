//! Return calls outlive the process that routed them, as callbacks do (callbacks/takeover.rs; the
//! heartbeats that say who is alive are src/cluster.rs's): on each beat a process claims the return calls in flight
//! whose process died or stopped, follows them by their inbound channel's Uniqueid, and asks the
//! PBX which are still up; one the PBX no longer has ended while nobody followed it and is
//! recorded as lost.

use std::collections::{BTreeMap, HashSet};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::ReturnCalls;
use crate::cluster::on_every_beat;
use crate::domain::company::TenantId;
use crate::store::return_calls::ReturnCallRow;
use crate::store::{self, StoreError};
use crate::telemetry::Chain;

impl ReturnCalls {
    /// Claims orphaned return calls on every beat; on `stop` hands this process's over.
    pub fn spawn_takeover(&self, stop: CancellationToken) -> JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(
            async move {
                on_every_beat(&stop, "claiming orphaned return calls", || service.claim()).await;
                let me = service.cluster.process;
                let because = "the dialback process following it was stopping";
                let released =
                    async { store::return_calls::release(&store::client(&service.db).await?, me, because).await };
                match released.await {
                    Ok(ids) => {
                        let n = ids.len();
                        tracing::info!(return_calls = n, "stopping: return calls handed over to the other processes");
                        let ids = ids.as_slice();
                        let unclaimed =
                            |db: store::Client| async move { store::return_calls::unclaimed(&db, ids).await };
                        service.cluster.listen_until_claimed("return calls", n, unclaimed).await;
                    }
                    Err(e) => tracing::warn!(error = %Chain(&e), "stopping: could not hand return calls over"),
                }
            }
            .instrument(tracing::info_span!("return_call_takeover")),
        )
    }

    async fn claim(&self) -> Result<(), StoreError> {
        if !self.cluster.orphans_waiting() {
            return Ok(());
        }
        let tenants_up = self.cluster.ami.tenants_up();
        let orphans = self.cluster.orphans("return_calls", &tenants_up);
        let claimed = store::return_calls::claim_orphans(&store::client(&self.db).await?, &orphans).await?;
        let mut by_tenant: BTreeMap<TenantId, Vec<(ReturnCallRow, String)>> = BTreeMap::new();
        for (row, why) in claimed {
            by_tenant.entry(row.tenant_id.clone()).or_default().push((row, why));
        }
        for (tenant, rows) in by_tenant {
            metrics::counter!("dialback_return_calls_taken_over_total").increment(rows.len() as u64);
            tracing::info!(%tenant, return_calls = rows.len(), "took over return calls nobody alive was following");
            let service = self.clone();
            tokio::spawn(async move { service.follow_taken_over(&tenant, rows).await }.in_current_span());
        }
        Ok(())
    }

    /// Follows return calls just taken over and records as lost those the PBX no longer has.
    async fn follow_taken_over(&self, tenant: &TenantId, rows: Vec<(ReturnCallRow, String)>) {
        let client = self.callbacks.pbx_session(tenant).await;
        for (row, _) in &rows {
            self.tracker.follow(row.clone(), self.cluster.ami.hold(tenant));
        }
        let client = match client {
            Ok(client) => client,
            Err(why) => {
                return tracing::warn!(%tenant, why, "taken-over return calls are followed if their events come")
            }
        };
        let Some(channels) = self.callbacks.channels_up(tenant, &client).await else { return };
        let up: HashSet<String> = channels.into_iter().map(|c| c.uniqueid).collect();
        for (row, why) in rows {
            if !row.agi_uniqueid.as_ref().is_some_and(|u| up.contains(u)) {
                self.tracker.lost(
                    row.id,
                    format!("the call ended while {why}: its channel was gone when dialback asked the PBX"),
                );
            }
        }
    }
}
