//! Follows calls from AMI events and writes each change to the attempt's row.
//!
//! Events are correlated only by our own ChannelId (= the attempt's uuid), which Asterisk puts in
//! every leg's Linkedid: events reach every AMI session, so anything else could be someone else's
//! call. An event from tenant A's PBX never touches tenant B's attempt. Work is sharded by call id
//! so one call's events are applied in order while different calls proceed in parallel.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::view::event_data;
use crate::ami::client::{AmiClient, EventSink, PbxSignal};
use crate::ami::pool::{AmiPool, CallHold};
use crate::ami::AmiEvent;
use crate::domain::callback::{
    apply, Confirmation, Fact, Reason, Status, DIALLED_WITHOUT_ASKING, HUNG_UP_DURING_THE_PROMPT,
};
use crate::domain::company::TenantId;
use crate::domain::outcome_record::{self, OutcomeRecord};
use crate::events::Bus;
use crate::store;
use crate::store::callbacks::{CallbackRow, Moved, Step, Transition};
use crate::store::StoreError;
use crate::telemetry::Chain;

/// Calls are sharded so one call's events apply in order while others proceed in parallel. Each
/// shard takes a pooled connection for each write. Few shards make large batches, each one
/// transaction: 4 against 16 (with `COALESCE` 10 ms against 2 ms) cut PostgreSQL's transactions per
/// callback from 1.38 to 1.06 and its CPU per callback by a fifth at 64 concurrent taps
/// (BENCHMARKS.md, "The write path").
const SHARDS: usize = 4;
/// How long a settled call stays in memory: its Cdr usually follows the hangup within a second.
const SETTLED_GRACE: Duration = Duration::from_secs(60);
/// How long the events of a call another process follows are kept after the last one: longer
/// than it takes to find that process dead and claim its calls (src/cluster.rs, `DEAD_AFTER` and
/// a beat), so the claimer applies what it heard meanwhile.
const HEARD_FOR: Duration = Duration::from_secs(15);

/// Facts of calls this process does not follow (another process placed them), heard on its
/// sessions: kept in memory, not written (only a call's owner writes it), and applied if this
/// process takes the call over or learns it placed it.
#[derive(Default)]
struct Heard {
    by_call: HashMap<(Uuid, Arc<str>), (Vec<Timed>, Instant)>,
}

impl Heard {
    fn keep(&mut self, id: Uuid, tenant: Arc<str>, facts: Vec<Timed>) {
        let (kept, last) = self.by_call.entry((id, tenant)).or_insert_with(|| (Vec::new(), Instant::now()));
        kept.extend(facts);
        *last = Instant::now();
    }

    /// Moves what was heard of call `id` into `pending`, to be applied now that it is followed.
    fn replay(&mut self, id: Uuid, tenant: &Arc<str>, pending: &mut PendingFacts) {
        if let Some((facts, _)) = self.by_call.remove(&(id, tenant.clone())) {
            for (fact, at) in facts {
                pending.add(tenant.clone(), id, fact, at);
            }
        }
    }

    fn forget_old(&mut self) {
        self.by_call.retain(|_, (_, last)| last.elapsed() < HEARD_FOR);
    }
}

enum Work {
    Event {
        tenant: Arc<str>,
        id: Uuid,
        event: Arc<AmiEvent>,
        /// When it was read off the PBX's socket: the call's times are the events', not when a
        /// busy shard or a slow database got to them.
        at: OffsetDateTime,
    },
    /// Asterisk queued a call's Originate: record it (with the call's first events when they are
    /// queued too) and keep the connection held until the call ends.
    Placed {
        tenant: Arc<str>,
        /// The attempt as stored (`queued`).
        row: Box<CallbackRow>,
        action_id: String,
        hold: Option<CallHold>,
    },
    /// The PBX's AMI link dropped: its calls go unobserved until it is back.
    PbxDown { tenant: Arc<str>, detail: String },
    /// The PBX answered which calls it has up (`CoreShowChannels`, asked at `asked_at`, after its
    /// link came back): calls that went unobserved before then and are not among them ended
    /// while nobody watched.
    Reconcile { tenant: Arc<str>, alive: Arc<HashSet<String>>, asked_at: Instant },
    /// A call settled outside the tracker (canceled through the API), as now stored: its late
    /// events (the hangup's cause) apply to that.
    Settled { row: Box<CallbackRow> },
    /// Calls this process took over (see `super::takeover`): followed from now on, unobserved
    /// since `since` until their PBX says they are still up.
    Adopt { tenant: Arc<str>, row: Box<CallbackRow>, why: String, hold: Option<CallHold>, since: Instant },
}

struct Tracked {
    tenant: Arc<str>,
    /// The attempt as stored now.
    row: CallbackRow,
    /// Keeps the tenant's AMI connection open while the call is not settled.
    hold: Option<CallHold>,
    /// When the call settled; it is forgotten `SETTLED_GRACE` later.
    settled_at: Option<Instant>,
    /// Since when its events may have been missed (it was taken over, or its PBX's AMI link
    /// dropped and it could not be handed over), until the PBX says it is still up.
    unobserved_since: Option<(Instant, String)>,
    /// This process placed it or took it over (`callbacks.owner`): only the owner decides that a
    /// call's end was missed. (A call read back after a concurrent write, e.g. a cancel through
    /// another process, is followed too; every write applies only to the row as it was read.)
    owned: bool,
}

/// The handle the callback service uses to tell the tracker about calls it placed.
#[derive(Clone)]
pub struct Tracker {
    shards: Arc<Vec<mpsc::UnboundedSender<Work>>>,
    shared: Arc<Shared>,
}

/// What every shard shares.
struct Shared {
    db: deadpool_postgres::Pool,
    bus: Bus,
    /// The companies' AMI connections, to hang up a call the PBX must not go on with (set once
    /// the pool exists: the pool reports to the tracker, so it is made after it; weak, so the two
    /// do not keep each other alive).
    pool: OnceLock<Weak<AmiPool>>,
    /// See `AmiConfig::lost_after_s`.
    lost_after: Duration,
    /// This process, as `callbacks.owner` names it.
    process: Uuid,
}

impl Shared {
    /// Hangs up the courier channel of call `id` (by its Uniqueid, the call id) on `tenant`'s
    /// connection, at once and without waiting: the PBX began dialling the client though the
    /// courier never confirmed, so whatever answered leg 1 must not reach them.
    fn hang_up_unconfirmed(&self, tenant: &Arc<str>, id: Uuid) {
        metrics::counter!("dialback_confirmations_total", "tenant" => tenant.to_string(), "outcome" => "not_asked")
            .increment(1);
        let client = self.pool.get().and_then(Weak::upgrade).and_then(|pool| pool.open_client(tenant));
        let Some(client) = client else {
            // The admin's Test button follows its call on a connection of its own and hangs it up there.
            return tracing::warn!(call_id = %id, tenant = %tenant, "{DIALLED_WITHOUT_ASKING}");
        };
        tracing::warn!(call_id = %id, tenant = %tenant, "{DIALLED_WITHOUT_ASKING}; hanging up");
        let tenant = tenant.clone();
        tokio::spawn(async move {
            if let Err(e) = client.hangup(&id.to_string()).await {
                tracing::error!(call_id = %id, tenant = %tenant, error = %Chain(&e),
                    "could not hang up a call the PBX dialled without the courier's confirmation");
            }
        });
    }
}

fn shard_of(id: &Uuid) -> usize {
    (id.as_u128() % SHARDS as u128) as usize
}

impl Tracker {
    /// Starts the shard workers. Each batch of changes is written in one statement: where
    /// commits wait for the WAL to be flushed (`synchronous_commit` on, as on any durable server)
    /// it saves a flush per call, and where they do not, a transaction id and a commit record per
    /// call (BENCHMARKS.md, "The write path"). Each change's events go to `bus` once written.
    /// `process` is this process's id in `dialback_processes`: the owner of the calls it places.
    pub fn start(db: deadpool_postgres::Pool, bus: Bus, lost_after: Duration, process: Uuid) -> Self {
        let shared = Arc::new(Shared { db, bus, pool: OnceLock::new(), lost_after, process });
        let mut shards = Vec::with_capacity(SHARDS);
        for _ in 0..SHARDS {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_shard(shared.clone(), rx));
            shards.push(tx);
        }
        Self { shards: Arc::new(shards), shared }
    }

    /// The pool of the companies' AMI connections this tracker hears (see `Shared::pool`).
    pub fn hang_up_through(&self, pool: &Arc<AmiPool>) {
        let _ = self.shared.pool.set(Arc::downgrade(pool));
    }

    /// Follows calls this process took over, each with why nobody was following it (holding one
    /// of `holds` for each while there are).
    pub fn adopt(&self, tenant: &TenantId, rows: Vec<(CallbackRow, String)>, mut holds: Vec<CallHold>, since: Instant) {
        let tenant = tenant.shared();
        for (row, why) in rows {
            let shard = shard_of(&row.id);
            let work = Work::Adopt { tenant: tenant.clone(), row: Box::new(row), why, hold: holds.pop(), since };
            let _ = self.shards[shard].send(work);
        }
    }

    /// The PBX answered which calls it has up (asked after `asked_at`).
    pub fn reconcile(&self, tenant: &TenantId, alive: HashSet<String>, asked_at: Instant) {
        let (tenant, alive) = (tenant.shared(), Arc::new(alive));
        for shard in self.shards.iter() {
            let _ = shard.send(Work::Reconcile { tenant: tenant.clone(), alive: alive.clone(), asked_at });
        }
    }

    /// What the AMI connections report their signals to: each is routed, on the connection's
    /// reader task, to the shard that owns its call.
    pub fn sink(&self) -> EventSink {
        let tracker = self.clone();
        Arc::new(move |tenant, signal| tracker.route(tenant.clone(), signal))
    }

    fn route(&self, tenant: Arc<str>, signal: PbxSignal) {
        match signal {
            PbxSignal::Event(event) => {
                let Some(id) = event.call_key().and_then(|k| Uuid::parse_str(k).ok()) else { return };
                let at = store::now();
                let _ = self.shards[shard_of(&id)].send(Work::Event { tenant, id, event, at });
            }
            PbxSignal::Down(err) => {
                for shard in self.shards.iter() {
                    let _ = shard.send(Work::PbxDown { tenant: tenant.clone(), detail: err.to_string() });
                }
            }
            PbxSignal::Up(client) => {
                // Which calls are still up, asked on the session that just logged in; the events
                // it reads from now on are the calls' own.
                let (tracker, asked_at) = (self.clone(), Instant::now());
                tokio::spawn(async move {
                    match client.core_show_channels().await {
                        Ok(channels) => tracker.reconcile(
                            &TenantId::stored(tenant.clone()),
                            channels.into_iter().map(|c| c.linkedid).collect(),
                            asked_at,
                        ),
                        // Calls stay unobserved: the next login asks again, and `lost_after`
                        // bounds how long they wait.
                        Err(e) => {
                            tracing::warn!(tenant = %tenant, error = %Chain(&e),
                                "could not ask the PBX which calls are up (CoreShowChannels needs write = reporting \
                                 in manager.conf); calls in flight are given up after ami.lost_after_s")
                        }
                    }
                });
            }
        }
    }

    /// Asterisk queued the Originate of the attempt stored as `row`. The tracker writes
    /// `ringing_courier` itself, in the same statement as the call's first events when they come
    /// together (they usually do): one write less per call than the API writing it.
    pub fn placed(&self, row: CallbackRow, action_id: String, hold: Option<CallHold>) {
        let (shard, tenant) = (shard_of(&row.id), row.tenant_id.shared());
        let _ = self.shards[shard].send(Work::Placed { tenant, row: Box::new(row), action_id, hold });
    }

    /// An event seen on a connection outside the pool (the Test button's own), for a call of
    /// `tenant`. Its connection's ups and downs are not forwarded: they say nothing about the
    /// tenant's other calls.
    pub fn event(&self, tenant: &TenantId, event: Arc<AmiEvent>) {
        self.route(tenant.shared(), PbxSignal::Event(event));
    }

    /// Call `row.id` was settled outside the tracker (canceled through the API) and is stored as
    /// `row`.
    pub fn settled(&self, row: CallbackRow) {
        let _ = self.shards[shard_of(&row.id)].send(Work::Settled { row: Box::new(row) });
    }
}

/// Most work items one shard takes off its queue before writing.
const BATCH: usize = 512;
/// How long a shard waits after the first work item before writing what has arrived by then: the
/// rest of a call's burst of events, and other calls' (group commit). A status shows this much
/// later; no request waits for it (a tap's 202 follows its own commit and the Originate's reply).
const COALESCE: Duration = Duration::from_millis(10);
/// How soon facts that could not be written (the database was away) are tried again.
const RETRY: Duration = Duration::from_secs(1);

async fn run_shard(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Work>) {
    let mut calls: HashMap<Uuid, Tracked> = HashMap::new();
    // Often enough that an unobserved call is given up on soon after `lost_after`.
    let every = (shared.lost_after / 2).clamp(Duration::from_secs(1), Duration::from_secs(10));
    let mut sweep = tokio::time::interval(every);
    let mut batch = Vec::with_capacity(BATCH);
    // Facts not written yet: between `add` and `flush`, and while the database is away.
    let mut facts = PendingFacts::default();
    let mut heard = Heard::default();
    loop {
        let first = tokio::select! {
            work = rx.recv() => match work { Some(work) => work, None => break },
            _ = sweep.tick() => {
                calls.retain(|_, t| t.settled_at.is_none_or(|at| at.elapsed() < SETTLED_GRACE));
                heard.forget_old();
                give_up_unobserved(&shared, &mut calls).await;
                continue;
            }
            _ = tokio::time::sleep(RETRY), if !facts.order.is_empty() => {
                facts.flush(&shared, &mut calls, &mut heard).await;
                continue;
            }
        };
        // A call's events come in bursts (answer, dial, bridge; hangups and CDRs) that reach us
        // over a few milliseconds, in several reads, and the API's word that the call was placed
        // races its first events. Waiting a moment after the first lets the rest of the burst
        // arrive: what is queued then is applied together and written once per call.
        batch.push(first);
        tokio::time::sleep(COALESCE).await;
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(work) => batch.push(work),
                Err(_) => break,
            }
        }
        for work in batch.drain(..) {
            let work = match work {
                Work::Event { tenant, id, event, at } => {
                    if let Some(fact) = super::facts::fact_of(&event, &id.to_string()) {
                        if let Fact::Confirmation(outcome) = &fact {
                            let outcome = match outcome {
                                Confirmation::Confirmed => "confirmed",
                                Confirmation::NotConfirmed => "not_confirmed",
                                Confirmation::PromptFailed => "prompt_failed",
                            };
                            metrics::counter!("dialback_confirmations_total", "tenant" => tenant.to_string(), "outcome" => outcome)
                                .increment(1);
                        }
                        facts.add(tenant, id, fact, at);
                    }
                    continue;
                }
                Work::Placed { tenant, row, action_id, hold } => {
                    let id = row.id;
                    track(&mut calls, tenant.clone(), *row, hold);
                    facts.add(tenant.clone(), id, Fact::OriginateQueued { action_id }, store::now());
                    // Its first events may have come before the word that it was placed.
                    heard.replay(id, &tenant, &mut facts);
                    continue;
                }
                // Anything else about calls comes after the facts that preceded it.
                other => {
                    facts.flush(&shared, &mut calls, &mut heard).await;
                    other
                }
            };
            let adopted = match &work {
                Work::Adopt { tenant, row, .. } => Some((row.id, tenant.clone())),
                _ => None,
            };
            handle(&shared, &mut calls, work).await;
            if let Some((id, tenant)) = adopted {
                heard.replay(id, &tenant, &mut facts);
            }
        }
        facts.flush(&shared, &mut calls, &mut heard).await;
    }
}

/// A fact and when it arrived: times (answered, connected, ended) are the events', even when
/// they are written later.
type Timed = (Fact, OffsetDateTime);

/// Facts read from a batch of events, per call and the tenant whose PBX told them, in arrival
/// order. Two companies may share one Asterisk: each session then hears the other's calls too, so
/// one call id can be claimed by two tenants; only its own tenant's claim is applied ([`plan`]).
#[derive(Default)]
struct PendingFacts {
    order: Vec<(Uuid, Arc<str>)>,
    by_call: HashMap<(Uuid, Arc<str>), Vec<Timed>>,
}

impl PendingFacts {
    /// Puts back a call's facts that could not be written (they come before any added later).
    fn keep(&mut self, tenant: Arc<str>, id: Uuid, facts: Vec<Timed>) {
        self.order.push((id, tenant.clone()));
        self.by_call.insert((id, tenant), facts);
    }

    fn add(&mut self, tenant: Arc<str>, id: Uuid, fact: Fact, at: OffsetDateTime) {
        tracing::debug!(call_id = %id, tenant = %tenant, ?fact, "call event");
        match self.by_call.entry((id, tenant)) {
            Entry::Occupied(mut entry) => entry.get_mut().push((fact, at)),
            Entry::Vacant(entry) => {
                self.order.push(entry.key().clone());
                entry.insert(vec![(fact, at)]);
            }
        }
    }

    /// Applies every call's facts and writes the changes together (one round trip); a call that
    /// was moved meanwhile by someone else (a cancel) is reloaded and its facts applied again.
    /// While the database is away the facts are kept, in order, and tried again after `RETRY`:
    /// a call's outcome is never lost to a database restart.
    async fn flush(&mut self, shared: &Shared, calls: &mut HashMap<Uuid, Tracked>, heard: &mut Heard) {
        if self.order.is_empty() {
            return;
        }
        let mut pending: Vec<(Uuid, Arc<str>, Vec<Timed>)> = Vec::with_capacity(self.order.len());
        for key in self.order.drain(..) {
            let Some(facts) = self.by_call.remove(&key) else { continue };
            match calls.contains_key(&key.0) {
                true => pending.push((key.0, key.1, facts)),
                // Another process's call: it writes it (one writer per call, not one per session).
                false => heard.keep(key.0, key.1, facts),
            }
        }
        if pending.is_empty() {
            return;
        }
        let client = match store::client(&shared.db).await {
            Ok(client) => client,
            Err(e) => {
                tracing::warn!(calls = pending.len(), error = %Chain(&e), "database unavailable: call events kept, retrying");
                for (id, tenant, facts) in pending {
                    self.keep(tenant, id, facts);
                }
                return;
            }
        };
        let mut changes = Vec::new();
        let mut unwritten = HashSet::new();
        for (id, tenant, facts) in &pending {
            match plan(&client, calls, tenant, *id, facts).await {
                Ok(Some(change)) => {
                    if change.dialled_without_asking() {
                        shared.hang_up_unconfirmed(&change.tenant, change.id);
                    }
                    changes.push(change)
                }
                Ok(None) => {}
                Err(e) if e.is_unavailable() => {
                    unwritten.insert((*id, tenant.clone()));
                }
                Err(e) => tracing::error!(call_id = %id, error = %Chain(&e), ?facts, "could not record call events"),
            }
        }
        let written = write_changes(&client, &changes).await;
        let mut retry_alone = Vec::new();
        for (change, written) in changes.into_iter().zip(written) {
            match written {
                Ok(Moved::Yes { deliveries }) => settle(calls, change, &shared.bus, deliveries),
                // Lost to a concurrent writer: apply the facts to what is stored now.
                Ok(Moved::No) => retry_alone.push((change.id, change.tenant)),
                Err(e) if e.is_unavailable() => {
                    unwritten.insert((change.id, change.tenant));
                }
                Err(e) => tracing::error!(call_id = %change.id, error = %Chain(&e), "could not record call events"),
            }
        }
        for (id, tenant) in retry_alone {
            calls.remove(&id);
            let (_, _, facts) =
                pending.iter().find(|(p, t, _)| *p == id && *t == tenant).expect("planned from pending");
            match apply_facts(&client, &shared.bus, calls, &tenant, id, facts, None).await {
                Ok(()) => {}
                Err(e) if e.downcast_ref::<StoreError>().is_some_and(StoreError::is_unavailable) => {
                    unwritten.insert((id, tenant));
                }
                Err(e) => tracing::error!(call_id = %id, error = format!("{e:#}"), "could not record call events"),
            }
        }
        if !unwritten.is_empty() {
            tracing::warn!(calls = unwritten.len(), "database unavailable: call events kept, retrying");
        }
        for (id, tenant, facts) in pending {
            if unwritten.contains(&(id, tenant.clone())) {
                self.keep(tenant, id, facts);
            }
        }
    }
}

/// Writes a batch's changes in one statement (one plan, one commit). When that statement fails
/// they are written again one by one, each its own commit, so a change that cannot be written (or
/// the database going away) does not keep the others from being recorded or kept.
async fn write_changes(client: &deadpool_postgres::Client, changes: &[Change]) -> Vec<Result<Moved, StoreError>> {
    let transitions: Vec<Transition<'_>> = changes.iter().map(Change::transition).collect();
    if changes.len() > 1 {
        match store::callbacks::transitions(client, &transitions).await {
            Ok(moved) => return moved.into_iter().map(Ok).collect(),
            Err(e) => {
                tracing::debug!(calls = changes.len(), error = %Chain(&e), "batch not written in one statement; writing each alone")
            }
        }
    }
    futures_util::future::join_all(transitions.iter().map(|t| store::callbacks::transition(client, t))).await
}

/// A call's new state, planned from its facts, not yet written.
struct Change {
    id: Uuid,
    tenant: Arc<str>,
    /// The attempt as read, and as it is to be written.
    from: CallbackRow,
    next: CallbackRow,
    steps: Vec<Step>,
    /// Said about the new outcome, when its reason alone leaves it open.
    detail: Option<&'static str>,
    action_id: Option<String>,
}

impl Change {
    /// The PBX began dialling leg 2 of a call whose courier had not confirmed (see
    /// `Fact::ClientDialled`): this change records it.
    fn dialled_without_asking(&self) -> bool {
        self.next.state.reason == Some(Reason::DialplanNotRun) && self.from.state.reason != Some(Reason::DialplanNotRun)
    }

    fn transition(&self) -> Transition<'_> {
        Transition {
            id: self.id,
            sequence: self.from.sequence,
            from: &self.from.state,
            to: &self.next.state,
            steps: &self.steps,
            detail: self.detail,
            action_id: self.action_id.as_deref(),
        }
    }
}

/// Starts following a placed call (its first events may have been applied already: then only
/// the connection hold is added).
fn track(calls: &mut HashMap<Uuid, Tracked>, tenant: Arc<str>, row: CallbackRow, hold: Option<CallHold>) {
    match calls.entry(row.id) {
        Entry::Occupied(mut entry) if entry.get().settled_at.is_none() => {
            let tracked = entry.get_mut();
            tracked.hold = hold;
            tracked.owned = true;
        }
        Entry::Occupied(_) => {}
        Entry::Vacant(entry) => {
            entry.insert(Tracked { tenant, row, hold, settled_at: None, unobserved_since: None, owned: true });
        }
    }
}

/// Marks `unknown` the calls unobserved for longer than `lost_after` (their PBX stayed away).
async fn give_up_unobserved(shared: &Shared, calls: &mut HashMap<Uuid, Tracked>) {
    let mut lost: HashMap<String, Vec<CallbackRow>> = HashMap::new();
    for tracked in calls.values().filter(|t| t.settled_at.is_none()) {
        if let Some((since, why)) = &tracked.unobserved_since {
            if since.elapsed() >= shared.lost_after {
                lost.entry(why.clone()).or_default().push(tracked.row.clone());
            }
        }
    }
    for (why, rows) in lost {
        let detail = format!(
            "the PBX could not be reached for {} s to ask whether the call was still up ({why}); its outcome was \
             not observed",
            shared.lost_after.as_secs()
        );
        mark_unknown(shared, calls, rows, &detail).await;
    }
}

/// Records calls as `unknown` with `detail` and forgets them.
async fn mark_unknown(shared: &Shared, calls: &mut HashMap<Uuid, Tracked>, lost: Vec<CallbackRow>, detail: &str) {
    let tenant = lost[0].tenant_id.clone();
    match super::mark_lost(&shared.db, &shared.bus, &lost, detail).await {
        Ok(n) => tracing::warn!(tenant = %tenant, calls = n, detail, "in-flight calls marked unknown"),
        Err(e) => {
            tracing::error!(tenant = %tenant, error = %Chain(&e), "could not mark in-flight calls unknown; trying again later");
            return;
        }
    }
    for row in lost {
        calls.remove(&row.id);
    }
}

/// Cancels and lost PBX links (events and placements are batched through [`PendingFacts`]).
async fn handle(shared: &Shared, calls: &mut HashMap<Uuid, Tracked>, work: Work) {
    match work {
        Work::Event { .. } | Work::Placed { .. } => unreachable!("batched through PendingFacts"),
        Work::Settled { row } => {
            if let Some(tracked) = calls.get_mut(&row.id) {
                tracked.row = *row;
                tracked.settled_at.get_or_insert_with(Instant::now);
                tracked.hold = None;
            }
        }
        Work::PbxDown { tenant, detail } => {
            // Its calls are handed over: another process with a session to the PBX has heard
            // them all along and takes them at once; else this one takes them back when the link
            // is up again (`super::takeover`). The rest it followed as a listener it forgets.
            let of_tenant = |t: &Tracked| t.tenant == tenant && t.settled_at.is_none();
            let owned: Vec<Uuid> = calls.values().filter(|t| of_tenant(t) && t.owned).map(|t| t.row.id).collect();
            let why = format!("dialback's AMI link to the PBX was down ({detail})");
            let released = match owned.is_empty() {
                true => Ok(0),
                false => match store::client(&shared.db).await {
                    Ok(db) => {
                        store::callbacks::release(&db, shared.process, Some(&owned), &why).await.map(|ids| ids.len())
                    }
                    Err(e) => Err(e),
                },
            };
            match released {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(tenant = %tenant, calls = n, %detail, "AMI link lost: calls in flight handed over");
                    }
                    calls.retain(|_, t| !of_tenant(t));
                }
                // Kept and followed again when the link is back, as one process alone does.
                Err(e) => {
                    tracing::warn!(tenant = %tenant, error = %Chain(&e), "could not hand over calls; they wait for the PBX here");
                    let now = Instant::now();
                    calls.retain(|_, t| !of_tenant(t) || t.owned);
                    for tracked in calls.values_mut().filter(|t| of_tenant(t) && t.unobserved_since.is_none()) {
                        tracked.unobserved_since = Some((now, why.clone()));
                    }
                }
            }
        }
        Work::Adopt { tenant, row, why, hold, since } => match calls.entry(row.id) {
            // Heard already (this process has a session to its PBX): nothing was missed.
            Entry::Occupied(mut entry) => {
                let tracked = entry.get_mut();
                tracked.owned = true;
                tracked.hold = hold.or(tracked.hold.take());
            }
            Entry::Vacant(entry) => {
                let unobserved_since = Some((since, why));
                entry.insert(Tracked { tenant, row: *row, hold, settled_at: None, unobserved_since, owned: true });
            }
        },
        Work::Reconcile { tenant, alive, asked_at } => {
            let mut gone: Vec<(CallbackRow, String)> = Vec::new();
            for tracked in calls.values_mut().filter(|t| t.tenant == tenant && t.settled_at.is_none()) {
                let Some((since, why)) = &tracked.unobserved_since else { continue };
                if *since > asked_at {
                    continue; // dropped again after this answer was asked for
                }
                if alive.contains(&tracked.row.id.to_string()) {
                    tracing::info!(call_id = %tracked.row.id, tenant = %tenant, "call still up on the PBX; following it again");
                    tracked.unobserved_since = None;
                } else {
                    gone.push((tracked.row.clone(), why.clone()));
                }
            }
            recover_from_records(shared, calls, &tenant, gone).await;
        }
    }
}

/// What the journal says of an outcome read from the PBX's record.
const FROM_THE_PBX_RECORD: &str =
    "the call ended while no dialback process was listening; its outcome is the one the PBX recorded";

/// Calls that ended unheard (their channels are gone): each gets the outcome the PBX recorded
/// (`domain::outcome_record`, read with `DBGet` on the tenant's session), or else becomes
/// `unknown`, saying why it was not heard and why there is no record.
async fn recover_from_records(
    shared: &Shared,
    calls: &mut HashMap<Uuid, Tracked>,
    tenant: &Arc<str>,
    gone: Vec<(CallbackRow, String)>,
) {
    if gone.is_empty() {
        return;
    }
    let client = shared.pool.get().and_then(Weak::upgrade).and_then(|pool| pool.open_client(tenant));
    let records = futures_util::future::join_all(gone.iter().map(|(row, _)| outcome_record(client.as_ref(), row.id)));
    // One connection for all the records, taken when the first is to be written.
    let mut db: Option<deadpool_postgres::Client> = None;
    let mut lost: HashMap<String, Vec<CallbackRow>> = HashMap::new();
    for ((row, why), record) in gone.into_iter().zip(records.await) {
        let id = row.id;
        let no_record = match record {
            Err(no_record) => no_record,
            Ok(facts) => {
                let connected = match db.take() {
                    Some(conn) => Ok(conn),
                    None => store::client(&shared.db).await,
                };
                match connected {
                    Ok(conn) => {
                        let written =
                            apply_facts(&conn, &shared.bus, calls, tenant, id, &facts, Some(FROM_THE_PBX_RECORD)).await;
                        db = Some(conn);
                        match written {
                            Ok(()) => {
                                metrics::counter!("dialback_outcomes_read_from_pbx_total", "found" => "yes")
                                    .increment(1);
                                tracing::info!(call_id = %id, tenant = %tenant, why, "outcome of a call that ended unheard read from the PBX's record");
                                continue;
                            }
                            Err(e) => format!("its record could not be written ({e:#})"),
                        }
                    }
                    Err(e) => format!("its record could not be written ({})", Chain(&e)),
                }
            }
        };
        metrics::counter!("dialback_outcomes_read_from_pbx_total", "found" => "no").increment(1);
        let detail = format!(
            "the call ended while {why}: its channels were gone when dialback asked the PBX, and {no_record}; its \
             outcome was not observed"
        );
        lost.entry(detail).or_default().push(row);
    }
    for (detail, rows) in lost {
        mark_unknown(shared, calls, rows, &detail).await;
    }
}

/// The facts of call `id`'s records on the PBX behind `client`: the call's own (written once the
/// courier answered), else leg 1's (how the courier's phone failed); why there are none.
async fn outcome_record(client: Option<&AmiClient>, id: Uuid) -> Result<Vec<Timed>, String> {
    let client = client.ok_or("no AMI session to the PBX was open to read its record")?;
    let id = id.to_string();
    let call = read_record(client, outcome_record::FAMILY, &id).await?;
    if let Kept::Ours(record) = call {
        return record.facts();
    }
    match read_record(client, outcome_record::LEG1_FAMILY, &id).await? {
        Kept::Ours(record) => record.leg1_facts(),
        Kept::Another if matches!(call, Kept::Another) => {
            Err("the PBX's record of it was overwritten by a later call".into())
        }
        _ => Err("the PBX kept no record of it (it keeps one when it runs dialback's current dialplan)".into()),
    }
}

/// What a PBX holds under a call's key in one family.
enum Kept {
    Ours(OutcomeRecord),
    /// Another call's record (the key is the call id's last digits).
    Another,
    Nothing,
}

/// Call `id`'s record in AstDB `family`; an error when it cannot be read.
async fn read_record(client: &AmiClient, family: &str, id: &str) -> Result<Kept, String> {
    match client.db_get(family, outcome_record::key(id)).await {
        Ok(Some(value)) => {
            let record = OutcomeRecord::parse(&value)?;
            Ok(if record.call_id == id { Kept::Ours(record) } else { Kept::Another })
        }
        Ok(None) => Ok(Kept::Nothing),
        Err(e) => Err(format!("its record could not be read from the PBX ({})", Chain(&e))),
    }
}

/// Applies a call's facts (in order) to what is known of it (loading it when it is not in
/// memory); None when they change nothing or the call is not this tenant's.
async fn plan(
    db: &deadpool_postgres::Client,
    calls: &mut HashMap<Uuid, Tracked>,
    tenant: &Arc<str>,
    id: Uuid,
    facts: &[Timed],
) -> Result<Option<Change>, StoreError> {
    // Not in memory: read again after a concurrent write (a cancel), or settled a while ago. (The
    // calls other processes follow are not planned here: see `Heard`.)
    let tracked = match calls.entry(id) {
        Entry::Occupied(entry) => entry.into_mut(),
        Entry::Vacant(entry) => {
            let Some(row) = store::callbacks::get_any(db, id).await? else { return Ok(None) };
            // Companies sharing one Asterisk hear each other's calls: not this tenant's to follow.
            if *row.tenant_id != **tenant {
                tracing::debug!(call_id = %id, pbx_tenant = %tenant, "event of another company's call ignored");
                return Ok(None);
            }
            let owned = false;
            entry.insert(Tracked {
                tenant: tenant.clone(),
                row,
                hold: None,
                settled_at: None,
                unobserved_since: None,
                owned,
            })
        }
    };
    if tracked.tenant != *tenant {
        return Ok(None);
    }
    let mut next = tracked.row.clone();
    let mut steps = Vec::new();
    let mut action_id = None;
    let mut detail = None;
    // Each step is an event: the attempt as it stood right after it, numbered in turn.
    let step = |steps: &mut Vec<Step>, before: &CallbackRow, after: &mut CallbackRow, at, cause: String| {
        after.updated_at = at;
        after.sequence = before.sequence + 1;
        steps.push(Step { from: before.state.status, to: after.state.status, cause, event: event_data(after) });
    };
    for (fact, at) in facts {
        if let Fact::OriginateQueued { action_id: queued } = fact {
            action_id = Some(queued.clone());
        } else if next.state.status == Status::Queued {
            // An event of the call proves Asterisk queued it, though the API's word that it was
            // placed (with the ActionID) has not arrived yet: the trail still says it rang.
            if let Some(rung) = apply(&next.state, &Fact::OriginateQueued { action_id: String::new() }, *at) {
                let mut after = CallbackRow { state: rung, ..next.clone() };
                step(&mut steps, &next, &mut after, *at, "originate queued (seen in the call's events)".into());
                next = after;
            }
        }
        let Some(state) = apply(&next.state, fact, *at) else { continue };
        let mut after = CallbackRow { state, ..next.clone() };
        // Asterisk posts the courier channel's CDR (the billed seconds) as the call ends, often
        // after its final status was written: the company's systems get it in one more event, or
        // in the final one when both are written together.
        let billed = next.state.status.is_terminal()
            && next.state.cdr.courier.is_none()
            && after.state.cdr.courier.is_some()
            && after.state.status == next.state.status;
        if billed {
            match steps.last_mut() {
                Some(last) => last.event = event_data(&after),
                None => step(&mut steps, &next, &mut after, *at, "the PBX's CDR of the call (billed seconds)".into()),
            }
        } else if after.state.status != next.state.status || after.state.reason != next.state.reason {
            let cause = match fact {
                Fact::OriginateQueued { action_id } => format!("originate queued (ActionID {action_id})"),
                _ => format!("{fact:?}"),
            };
            if let Some(explained) = after.state.reason.and_then(|reason| explain(fact, reason)) {
                detail = Some(explained);
                after.detail = Some(explained.to_owned());
            }
            step(&mut steps, &next, &mut after, *at, cause);
        }
        next = after;
    }
    if let Some(queued) = &action_id {
        next.action_id.get_or_insert_with(|| queued.clone());
    }
    // The ActionID is written even when it changes nothing else (the call's events got there
    // first): a retry of the tap is answered once the attempt names it.
    Ok((next.state != tracked.row.state || action_id.is_some()).then(|| Change {
        id,
        tenant: tenant.clone(),
        from: tracked.row.clone(),
        next,
        steps,
        detail,
        action_id,
    }))
}

/// What the journal says about an outcome that its reason alone leaves open.
fn explain(fact: &Fact, reason: Reason) -> Option<&'static str> {
    match (fact, reason) {
        (Fact::Confirmation(confirmation), _) => Some(confirmation.explanation()),
        (Fact::Cdr { .. }, Reason::NotConfirmed) => Some(HUNG_UP_DURING_THE_PROMPT),
        (Fact::ClientDialled, Reason::DialplanNotRun) => Some(DIALLED_WITHOUT_ASKING),
        _ => None,
    }
}

/// A change was written: log it and keep the call's new state (and let its connection go once
/// it has settled).
fn settle(calls: &mut HashMap<Uuid, Tracked>, change: Change, bus: &Bus, deliveries: i64) {
    let first = change.from.sequence;
    bus.committed(change.id, change.steps.iter().zip(first + 1..).map(|(s, n)| (n, s.event.as_str())), deliveries);
    let Change { id, tenant, from, next, steps, .. } = change;
    let (from, next_row) = (from.state, next);
    let next = &next_row.state;
    // One line per write, naming every status passed through (a burst of events often moves a call
    // several steps at once): the call's story in two or three lines, not one per step.
    let moves = || steps.iter().filter(|step| step.from != step.to);
    for step in moves() {
        metrics::counter!("dialback_callback_transitions_total", "to" => step.to.as_str()).increment(1);
    }
    if next.status != from.status {
        let path =
            std::iter::once(from.status.as_str()).chain(moves().map(|step| step.to.as_str())).collect::<Vec<_>>();
        let path = path.join(" > ");
        tracing::info!(call_id = %id, tenant = %tenant, status = next.status.as_str(), path,
            reason = next.reason.map(|r| r.as_str()), failed_leg = next.failed_leg.map(|l| l.as_str()),
            talk_seconds = next.talk_seconds, "callback status");
    }
    // What moved it, as read from the PBX: the history's "why", for whoever debugs a call.
    tracing::debug!(call_id = %id, causes = ?steps.iter().map(|step| step.cause.as_str()).collect::<Vec<_>>(),
        "callback steps");
    if let (Some(talk), Some(billable)) = (next.talk_seconds, next.cdr_billable_seconds) {
        // BillableSeconds counts from the courier's answer, so it includes the client's ringing:
        // it may exceed our talk time, never fall short of it by more than clock jitter.
        if billable + 2 < talk {
            tracing::warn!(call_id = %id, talk, billable, "talk time exceeds the CDR's billable seconds");
        }
    }
    let Some(tracked) = calls.get_mut(&id) else { return };
    if next.status.is_terminal() && tracked.settled_at.is_none() {
        // Settled: the connection may close when idle; late events (the Cdr) still find it here.
        tracked.settled_at = Some(Instant::now());
        tracked.hold = None;
    }
    tracked.row = next_row;
}

/// Applies one call's facts and writes them on their own; when a concurrent writer wins (the API
/// recording a cancel), reloads the stored state and applies the facts to that. Nothing is dropped.
async fn apply_facts(
    db: &deadpool_postgres::Client,
    bus: &Bus,
    calls: &mut HashMap<Uuid, Tracked>,
    tenant: &Arc<str>,
    id: Uuid,
    facts: &[Timed],
    detail: Option<&'static str>,
) -> anyhow::Result<()> {
    for _ in 0..3 {
        let Some(mut change) = plan(db, calls, tenant, id, facts).await? else { return Ok(()) };
        if let Some(detail) = detail {
            change.detail = Some(detail);
            change.next.detail = Some(detail.to_owned());
        }
        if let Moved::Yes { deliveries } = store::callbacks::transition(db, &change.transition()).await? {
            settle(calls, change, bus, deliveries);
            return Ok(());
        }
        calls.remove(&id);
    }
    anyhow::bail!("the callback kept changing under the tracker; {facts:?} not applied")
}
