//! Follows calls from AMI events and writes each change to the attempt's row.
//!
//! Events are correlated only by our own ChannelId (= the attempt's uuid), which Asterisk puts in
//! every leg's Linkedid: events reach every AMI session, so anything else could be someone else's
//! call. An event from tenant A's PBX never touches tenant B's attempt. Work is sharded by call id
//! so one call's events are applied in order while different calls proceed in parallel.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::ami::client::PbxSignal;
use crate::ami::pool::CallHold;
use crate::ami::AmiEvent;
use crate::domain::callback::{apply, CallState, Fact};
use crate::store;

/// Calls are sharded so one call's events apply in order while others proceed in parallel; one
/// shard per pooled database connection keeps the pool busy without queueing behind it.
const SHARDS: usize = 16;
/// How long a settled call stays in memory: its Cdr usually follows the hangup within a second.
const SETTLED_GRACE: Duration = Duration::from_secs(60);

enum Work {
    Event {
        tenant: Arc<str>,
        id: Uuid,
        event: Arc<AmiEvent>,
    },
    /// A call was just placed: keep its connection held until it ends.
    Placed {
        id: Uuid,
        tenant: Arc<str>,
        state: CallState,
        hold: Option<CallHold>,
    },
    PbxDown {
        tenant: Arc<str>,
        detail: String,
    },
    /// Forget a call settled elsewhere (e.g. canceled through the API).
    Forget {
        id: Uuid,
    },
}

struct Tracked {
    tenant: Arc<str>,
    state: CallState,
    /// Keeps the tenant's AMI connection open while the call is not settled.
    hold: Option<CallHold>,
    /// When the call settled; it is forgotten `SETTLED_GRACE` later.
    settled_at: Option<Instant>,
}

/// The handle the callback service uses to tell the tracker about calls it placed.
#[derive(Clone)]
pub struct Tracker {
    shards: Arc<Vec<mpsc::UnboundedSender<Work>>>,
}

fn shard_of(id: &Uuid) -> usize {
    (id.as_u128() % SHARDS as u128) as usize
}

impl Tracker {
    /// Starts the shard workers and the router reading PBX signals from `signals`.
    pub fn start(db: deadpool_postgres::Pool, mut signals: mpsc::UnboundedReceiver<(Arc<str>, PbxSignal)>) -> Self {
        let mut shards = Vec::with_capacity(SHARDS);
        for _ in 0..SHARDS {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_shard(db.clone(), rx));
            shards.push(tx);
        }
        let tracker = Self { shards: Arc::new(shards) };
        let router = tracker.clone();
        tokio::spawn(async move {
            while let Some((tenant, signal)) = signals.recv().await {
                router.route(tenant, signal);
            }
        });
        tracker
    }

    fn route(&self, tenant: Arc<str>, signal: PbxSignal) {
        match signal {
            PbxSignal::Event(event) => {
                let Some(id) = event.call_key().and_then(|k| Uuid::parse_str(k).ok()) else { return };
                let _ = self.shards[shard_of(&id)].send(Work::Event { tenant, id, event });
            }
            PbxSignal::Down(err) => {
                for shard in self.shards.iter() {
                    let _ = shard.send(Work::PbxDown { tenant: tenant.clone(), detail: err.to_string() });
                }
            }
            PbxSignal::Up => {}
        }
    }

    pub fn placed(&self, id: Uuid, tenant: &str, state: CallState, hold: Option<CallHold>) {
        let _ = self.shards[shard_of(&id)].send(Work::Placed { id, tenant: Arc::from(tenant), state, hold });
    }

    /// An event seen on a connection outside the pool (the Test button's own), for a call of
    /// `tenant`. Its connection's ups and downs are not forwarded: they say nothing about the
    /// tenant's other calls.
    pub fn event(&self, tenant: &str, event: Arc<AmiEvent>) {
        self.route(Arc::from(tenant), PbxSignal::Event(event));
    }

    pub fn forget(&self, id: Uuid) {
        let _ = self.shards[shard_of(&id)].send(Work::Forget { id });
    }
}

async fn run_shard(db: deadpool_postgres::Pool, mut rx: mpsc::UnboundedReceiver<Work>) {
    let mut calls: HashMap<Uuid, Tracked> = HashMap::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(10));
    loop {
        let work = tokio::select! {
            work = rx.recv() => match work { Some(work) => work, None => break },
            _ = sweep.tick() => {
                calls.retain(|_, t| t.settled_at.is_none_or(|at| at.elapsed() < SETTLED_GRACE));
                continue;
            }
        };
        match work {
            Work::Placed { id, tenant, state, hold } => match calls.entry(id) {
                Entry::Occupied(mut entry) if entry.get().settled_at.is_none() => entry.get_mut().hold = hold,
                Entry::Occupied(_) => {}
                Entry::Vacant(entry) => {
                    entry.insert(Tracked { tenant, state, hold, settled_at: None });
                }
            },
            Work::Forget { id } => {
                calls.remove(&id);
            }
            Work::Event { tenant, id, event } => {
                if let Err(e) = on_event(&db, &mut calls, tenant, id, &event).await {
                    tracing::error!(call_id = %id, error = format!("{e:#}"), "could not record a call event");
                }
            }
            Work::PbxDown { tenant, detail } => {
                let lost: Vec<Uuid> = calls
                    .iter()
                    .filter(|(_, t)| t.tenant == tenant && t.settled_at.is_none())
                    .map(|(id, _)| *id)
                    .collect();
                if lost.is_empty() {
                    continue;
                }
                let detail = format!("the AMI connection was lost ({detail}); the outcome was not observed");
                match store::client(&db).await {
                    Ok(client) => {
                        match store::callbacks::mark_in_flight_unknown(
                            &client,
                            Some(&tenant),
                            OffsetDateTime::now_utc(),
                            &detail,
                        )
                        .await
                        {
                            Ok(n) => tracing::warn!(tenant = %tenant, calls = n, "in-flight calls marked unknown"),
                            Err(e) => tracing::error!(tenant = %tenant, error = %e, "could not mark in-flight calls"),
                        }
                    }
                    Err(e) => tracing::error!(tenant = %tenant, error = %e, "could not mark in-flight calls"),
                }
                for id in lost {
                    calls.remove(&id);
                }
            }
        }
    }
}

async fn on_event(
    db: &deadpool_postgres::Pool,
    calls: &mut HashMap<Uuid, Tracked>,
    tenant: Arc<str>,
    id: Uuid,
    event: &AmiEvent,
) -> anyhow::Result<()> {
    let key = id.to_string();
    let Some(fact) = Fact::from_event(event, &key) else { return Ok(()) };
    tracing::debug!(call_id = %id, tenant = %tenant, ?fact, "call event");
    let client = store::client(db).await?;
    // A conditional update can lose to a concurrent writer (the API recording "ringing_courier",
    // a cancel): then reload the stored state and apply the fact to that. Nothing is dropped.
    for _ in 0..3 {
        // Not in memory: placed before a restart, already settled (late Cdr), or just reloaded.
        let tracked = match calls.entry(id) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let Some(row) = store::callbacks::get_any(&client, id).await? else { return Ok(()) };
                if *row.tenant_id != *tenant {
                    tracing::warn!(call_id = %id, pbx_tenant = %tenant, "event from another tenant's PBX ignored");
                    return Ok(());
                }
                entry.insert(Tracked { tenant: tenant.clone(), state: row.state, hold: None, settled_at: None })
            }
        };
        if *tracked.tenant != *tenant {
            return Ok(());
        }
        let Some(next) = apply(&tracked.state, &fact, OffsetDateTime::now_utc()) else { return Ok(()) };
        let cause = format!("{fact:?}");
        if !store::callbacks::transition(&client, id, &tracked.state, &next, &cause, None, None).await? {
            calls.remove(&id);
            continue;
        }
        if next.status != tracked.state.status {
            tracing::info!(call_id = %id, tenant = %tenant, from = tracked.state.status.as_str(), to = next.status.as_str(),
                reason = next.reason.map(|r| r.as_str()), "callback status");
            metrics::counter!("dialback_callback_transitions_total", "to" => next.status.as_str()).increment(1);
        }
        if let (Some(talk), Some(billable)) = (next.talk_seconds, next.cdr_billable_seconds) {
            // BillableSeconds counts from the courier's answer, so it includes the client's ringing:
            // it may exceed our talk time, never fall short of it by more than clock jitter.
            if billable + 2 < talk {
                tracing::warn!(call_id = %id, talk, billable, "talk time exceeds the CDR's billable seconds");
            }
        }
        if next.status.is_terminal() && tracked.settled_at.is_none() {
            // Settled: the connection may close when idle; late events (the Cdr) still find it here.
            tracked.settled_at = Some(Instant::now());
            tracked.hold = None;
        }
        tracked.state = next;
        return Ok(());
    }
    anyhow::bail!("the callback kept changing under the tracker; {fact:?} not applied")
}
