//! Several dialback processes on one database: who follows which call, and what happens to a
//! process's calls when it stops or dies.
//!
//! Each process beats (src/cluster.rs); the calls it places name it as their owner
//! (`callbacks.owner`).
//!
//! Asterisk sends every event to every AMI session, so every process with a session to a PBX
//! hears all of its calls; only the owner writes a call (the tracker keeps what it hears of the
//! others' calls in memory for a while, and applies it if it takes one over) and decides that an
//! end was missed. On a beat
//! that saw such calls waiting (`Cluster::orphans_waiting`: while no process dies, none looks) a
//! process claims the calls in flight whose owner is dead (silent for
//! [`DEAD_AFTER`](crate::cluster::DEAD_AFTER)) or that were released (their process stopped, or
//! lost its AMI link): at once for companies it has a session up with, after
//! [`GRACE`](crate::cluster::GRACE) more for the others, opening a session to their PBX. It then
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
use crate::cluster::on_every_beat;
use crate::domain::company::TenantId;
use crate::store;
use crate::store::callbacks::CallbackRow;
use crate::store::StoreError;
use crate::telemetry::Chain;

/// How recent a company's last callback is for a starting process to log in to its PBX first.
pub const WARM_UP_SINCE: time::Duration = time::Duration::minutes(10);

impl CallbackService {
    /// Takes over orphaned calls on every beat, and on `stop` hands this process's calls over.
    pub fn spawn_takeover(self: &Arc<Self>, stop: CancellationToken) -> JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(
            async move {
                on_every_beat(&stop, "claiming orphaned calls", || service.claim()).await;
                service.leave().await;
            }
            .instrument(tracing::info_span!("takeover")),
        )
    }

    async fn claim(self: &Arc<Self>) -> Result<(), StoreError> {
        self.stand_by().await;
        if !self.cluster.orphans_waiting() {
            return Ok(());
        }
        let tenants_up = self.cluster.ami.tenants_up();
        let orphans = self.cluster.orphans("callbacks", &tenants_up);
        let claimed = store::callbacks::claim_orphans(&store::client(&self.db).await?, &orphans).await?;
        let mut by_tenant: BTreeMap<TenantId, Vec<(CallbackRow, String)>> = BTreeMap::new();
        for (row, why) in claimed {
            by_tenant.entry(row.tenant_id.clone()).or_default().push((row, why));
        }
        for (tenant, rows) in by_tenant {
            metrics::counter!("dialback_calls_taken_over_total").increment(rows.len() as u64);
            let ids: Vec<String> = rows.iter().map(|(r, _)| r.id.to_string()).collect();
            tracing::info!(
                %tenant,
                calls = rows.len(),
                ids = ids.join(","),
                "took over calls nobody alive was following"
            );
            let service = self.clone();
            tokio::spawn(async move { service.follow_taken_over(&tenant, rows).await }.in_current_span());
        }
        Ok(())
    }

    /// Keeps a session to the PBX of each company this process stands by for (src/cluster.rs's
    /// `standby_for`: another process alone follows its calls), opening it when there is none:
    /// their calls are heard here too (kept in memory, not written), so if that process dies
    /// they are taken over at once with nothing missed.
    async fn stand_by(&self) {
        let tenants = self.cluster.standby();
        for tenant in &tenants {
            if let Err(why) = self.pbx_session(&TenantId::stored(tenant.as_str())).await {
                tracing::warn!(%tenant, why, "cannot stand by for the company's PBX");
            }
        }
        self.cluster.ami.stand_by(&tenants);
    }

    /// Before a starting process takes requests: logs in to the PBX of every company that placed
    /// a callback in the last [`WARM_UP_SINCE`] or has one in flight, waiting up to `within` for
    /// them all. Taps then find their session up instead of queueing behind its login and
    /// leaving at once when it is (a rolling upgrade's new process refused a burst of them with
    /// `pbx_busy`, over the cap on originates in flight). A PBX that is not up by then is logged
    /// in to in the background, as for any tap.
    pub async fn warm_up(&self, within: Duration) {
        let since = Instant::now();
        let tenants = async {
            let now = time::OffsetDateTime::now_utc();
            store::callbacks::active_tenants(&store::client(&self.db).await?, now - WARM_UP_SINCE).await
        }
        .await;
        let tenants = match tenants {
            Ok(tenants) if tenants.is_empty() => return,
            Ok(tenants) => tenants,
            Err(e) => return tracing::warn!(error = %Chain(&e), "warm-up: could not read which companies are active"),
        };
        let sessions = tenants.iter().map(|tenant| async move {
            let client = self.pbx_session(tenant).await.map_err(|why| (tenant, why))?;
            client.wait_up(within).await.map_err(|e| (tenant, Chain(&e).to_string()))
        });
        let results = futures_util::future::join_all(sessions).await;
        let not_up: Vec<String> =
            results.into_iter().filter_map(Result::err).map(|(tenant, why)| format!("{tenant}: {why}")).collect();
        tracing::info!(
            companies = tenants.len(),
            not_up = not_up.len(),
            ms = since.elapsed().as_millis() as u64,
            "warm-up: logged in to the PBXs of the companies with recent calls"
        );
        if !not_up.is_empty() {
            tracing::warn!(
                companies = not_up.join("; "),
                "warm-up: these PBXs were not up; taps log in to them as they come"
            );
        }
    }

    /// Follows calls just taken over, on the tenant's AMI session (opened when there is none),
    /// and asks the PBX which of them are still up.
    async fn follow_taken_over(&self, tenant: &TenantId, rows: Vec<(CallbackRow, String)>) {
        let since = Instant::now();
        let client = match self.pbx_session(tenant).await {
            Ok(client) => client,
            Err(why) => {
                self.tracker.adopt(tenant, rows, Vec::new(), since);
                tracing::warn!(
                    %tenant,
                    why,
                    "taken-over calls wait for the PBX; they are given up after ami.lost_after_s"
                );
                return;
            }
        };
        let holds = rows.iter().filter_map(|_| self.cluster.ami.hold(tenant)).collect();
        self.tracker.adopt(tenant, rows, holds, since);
        let asked_at = Instant::now();
        if let Some(channels) = self.channels_up(tenant, &client).await {
            self.tracker.reconcile(tenant, channels.into_iter().map(|c| c.linkedid).collect(), asked_at);
        }
    }

    /// The company's AMI session, opened when there is none; why not when it has no PBX settings
    /// or they cannot be read.
    pub async fn pbx_session(&self, tenant: &TenantId) -> Result<AmiClient, String> {
        match self.settings(tenant).await {
            Ok(Some((settings, secret))) => Ok(self.cluster.ami.client(tenant, &pbx_login(&settings, secret))),
            Ok(None) => Err("the company has no PBX settings".into()),
            Err(e) => Err(format!("its PBX settings could not be read: {}", Chain(&e))),
        }
    }

    /// The channels up on the company's PBX (`CoreShowChannels`) once `client` is logged in; None
    /// when it is not yet (its login asks the same question: the tracker's answer to
    /// `PbxSignal::Up`) or the PBX would not say.
    pub async fn channels_up(&self, tenant: &TenantId, client: &AmiClient) -> Option<Vec<LiveChannel>> {
        client.wait_up(self.connect_timeout).await.ok()?;
        match client.core_show_channels().await {
            Ok(channels) => Some(channels),
            Err(e) => {
                tracing::warn!(%tenant, error = %Chain(&e),
                    "could not ask the PBX which taken-over calls are up (CoreShowChannels needs write = reporting); \
                     they are followed if their events come");
                None
            }
        }
    }

    /// Stopping: hands the calls this process follows over to the others (they take them at
    /// once), and keeps listening to them until another process has claimed them
    /// (`Cluster::listen_until_claimed`).
    async fn leave(&self) {
        let me = self.cluster.process;
        let result = async {
            let because = "the dialback process following it was stopping";
            store::callbacks::release(&store::client(&self.db).await?, me, None, because).await
        }
        .await;
        match result {
            Ok(ids) => {
                tracing::info!(calls = ids.len(), "stopping: calls in flight handed over to the other processes");
                let ids = ids.as_slice();
                let unclaimed = |db: store::Client| async move { store::callbacks::unclaimed(&db, ids).await };
                self.cluster.listen_until_claimed("calls", ids.len(), unclaimed).await;
            }
            Err(e) => tracing::warn!(error = %Chain(&e),
                "stopping: could not hand calls over; the others take them once this process's heartbeat is old"),
        }
    }
}
