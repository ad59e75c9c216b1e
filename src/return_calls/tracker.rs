//! Follows routed return calls on the company's AMI connection. The inbound channel that ran the
//! AGI request is known by its Uniqueid (`agi_uniqueid`): its Dial to the courier ends (answered,
//! busy, no answer), Asterisk is asked to hang it up (the caller left), it hangs up, and its CDR
//! is posted. Each change is written with its event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::view::event_data;
use crate::ami::client::PbxSignal;
use crate::ami::pool::CallHold;
use crate::ami::AmiEvent;
use crate::domain::callback::Reason;
use crate::domain::return_call::{apply, ReturnFact, ReturnLeg, ReturnStatus};
use crate::events::Bus;
use crate::store::return_calls::ReturnCallRow;
use crate::store::{self, StoreError};
use crate::telemetry::Chain;

/// A settled call is kept this long for its CDR, which follows the hangup.
const SETTLED_GRACE: Duration = Duration::from_secs(60);
/// How long the events of an inbound channel nobody follows are kept for a decision that may
/// still come (between one and two of these).
const EARLY_KEEP: Duration = Duration::from_secs(5);
/// At most this many channels' early events in each generation; more are not kept.
const EARLY_MAX: usize = 50_000;

/// A channel: (tenant, its Uniqueid).
type ChannelKey = (Arc<str>, String);
/// An event as heard, and when.
type Heard = (Arc<AmiEvent>, OffsetDateTime);

/// What the AMI reader tasks check each event against, under one lock so an event is either
/// taken for a followed call or kept as early, never lost between the two.
#[derive(Default)]
struct Watch {
    /// The calls followed, by their inbound channel.
    followed: HashMap<ChannelKey, Uuid>,
    /// Events of inbound channels no call follows yet. The PBX can act on a route (and the courier
    /// answer) before the decision that named it reaches the tracker; `follow` replays what came
    /// first. Two generations, swapped every [`EARLY_KEEP`], bound the memory.
    early: [HashMap<ChannelKey, Vec<Heard>>; 2],
    early_since: Option<Instant>,
}

impl Watch {
    fn keep_early(&mut self, key: ChannelKey, event: Arc<AmiEvent>, at: OffsetDateTime) {
        let now = Instant::now();
        if self.early_since.is_none_or(|since| now.duration_since(since) >= EARLY_KEEP) {
            self.early.swap(0, 1);
            self.early[0].clear();
            self.early_since = Some(now);
        }
        let current = &mut self.early[0];
        if current.len() < EARLY_MAX || current.contains_key(&key) {
            current.entry(key).or_default().push((event, at));
        }
    }

    fn take_early(&mut self, key: &ChannelKey) -> Vec<Heard> {
        let mut older = self.early[1].remove(key).unwrap_or_default();
        older.extend(self.early[0].remove(key).unwrap_or_default());
        older
    }
}

type Watched = Arc<Mutex<Watch>>;

enum Work {
    Follow(Box<ReturnCallRow>, Option<CallHold>),
    Event {
        tenant: Arc<str>,
        uniqueid: String,
        event: Arc<AmiEvent>,
        at: OffsetDateTime,
    },
    PbxDown {
        tenant: Arc<str>,
    },
    /// A call taken over from a process that stopped, which the PBX no longer has: it ended
    /// while nobody followed it.
    Lost {
        id: Uuid,
        why: String,
    },
}

/// The handle: what the decision and the AMI connections talk to.
#[derive(Clone)]
pub struct ReturnTracker {
    tx: mpsc::UnboundedSender<Work>,
    /// Checked on the AMI reader task, so only followed calls' events reach the tracker.
    watch: Watched,
}

impl ReturnTracker {
    pub fn start(db: deadpool_postgres::Pool, bus: Bus) -> ReturnTracker {
        let (tx, rx) = mpsc::unbounded_channel();
        let watch = Watched::default();
        tokio::spawn(run(db, bus, rx, watch.clone()));
        ReturnTracker { tx, watch }
    }

    /// Starts following a call routed to a courier, with whatever its channel said already.
    /// `hold` keeps the company's AMI connection open while the call is followed.
    pub fn follow(&self, row: ReturnCallRow, hold: Option<CallHold>) {
        let Some(uniqueid) = row.agi_uniqueid.clone() else { return };
        let key = (Arc::from(row.tenant_id.as_str()), uniqueid);
        let mut watch = self.watch.lock().expect("watch lock");
        watch.followed.insert(key.clone(), row.id);
        let early = watch.take_early(&key);
        // Sent under the lock: the reader cannot queue a newer event of this channel before them.
        let _ = self.tx.send(Work::Follow(Box::new(row), hold));
        for (event, at) in early {
            let _ = self.tx.send(Work::Event { tenant: key.0.clone(), uniqueid: key.1.clone(), event, at });
        }
    }

    /// A followed call ended unseen (`why`): recorded as lost.
    pub fn lost(&self, id: Uuid, why: String) {
        let _ = self.tx.send(Work::Lost { id, why });
    }

    /// A signal from a company's AMI connection.
    pub fn signal(&self, tenant: &Arc<str>, signal: &PbxSignal) {
        match signal {
            PbxSignal::Event(event) => {
                let Some(uniqueid) = inbound_uniqueid(event) else { return };
                let key = (tenant.clone(), uniqueid.to_owned());
                let at = store::now();
                let mut watch = self.watch.lock().expect("watch lock");
                if watch.followed.contains_key(&key) {
                    let _ =
                        self.tx.send(Work::Event { tenant: tenant.clone(), uniqueid: key.1, event: event.clone(), at });
                } else if assigned_by_asterisk(&key.1) {
                    watch.keep_early(key, event.clone(), at);
                }
            }
            PbxSignal::Down(_) => {
                let any = self.watch.lock().expect("watch lock").followed.keys().any(|(t, _)| t == tenant);
                if any {
                    let _ = self.tx.send(Work::PbxDown { tenant: tenant.clone() });
                }
            }
            PbxSignal::Up(_) => {}
        }
    }
}

/// The Uniqueid of the channel an event is about, for the events a return call is followed by.
fn inbound_uniqueid(event: &AmiEvent) -> Option<&str> {
    match event {
        AmiEvent::DialEnd(d) => d.uniqueid.as_deref(),
        AmiEvent::Hangup(h) => Some(&h.channel.uniqueid),
        AmiEvent::HangupRequest(c) => Some(&c.uniqueid),
        AmiEvent::Cdr(c) => Some(&c.uniqueid),
        _ => None,
    }
}

/// An inbound channel's Uniqueid (`1795930683.181`), as opposed to the ids dialback gives the
/// channels it originates (a callback's id): only those can be a return call's.
fn assigned_by_asterisk(uniqueid: &str) -> bool {
    !uniqueid.is_empty() && uniqueid.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// What an event of the inbound channel says.
fn fact_of(event: &AmiEvent) -> Option<ReturnFact> {
    Some(match event {
        AmiEvent::DialEnd(d) => ReturnFact::CourierDialEnded(match d.dial_status.as_deref()? {
            "ANSWER" => None,
            "BUSY" => Some(Reason::Busy),
            "NOANSWER" => Some(Reason::NoAnswer),
            "CONGESTION" => Some(Reason::Congestion),
            "CHANUNAVAIL" => Some(Reason::Unreachable),
            "CANCEL" => return None, // another target of the same Dial answered
            _ => Some(Reason::PbxError),
        }),
        AmiEvent::HangupRequest(_) => ReturnFact::CallerHungUp,
        AmiEvent::Hangup(_) => ReturnFact::Hangup,
        AmiEvent::Cdr(c) => ReturnFact::Cdr(Box::new(crate::callbacks::facts::cdr_record(c))),
        _ => return None,
    })
}

struct Call {
    row: ReturnCallRow,
    settled_at: Option<Instant>,
    /// Keeps the company's AMI connection open until the call is forgotten.
    _hold: Option<CallHold>,
}

async fn run(db: deadpool_postgres::Pool, bus: Bus, mut rx: mpsc::UnboundedReceiver<Work>, watch: Watched) {
    let mut calls: HashMap<Uuid, Call> = HashMap::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(10));
    loop {
        let work = tokio::select! {
            work = rx.recv() => match work { Some(work) => work, None => return },
            _ = sweep.tick() => {
                let gone: Vec<Uuid> = calls
                    .iter()
                    .filter(|(_, c)| c.settled_at.is_some_and(|at| at.elapsed() >= SETTLED_GRACE))
                    .map(|(id, _)| *id)
                    .collect();
                let mut watch = watch.lock().expect("watch lock");
                for id in gone {
                    calls.remove(&id);
                    watch.followed.retain(|_, followed| *followed != id);
                }
                continue;
            }
        };
        match work {
            Work::Follow(row, hold) => {
                calls.insert(row.id, Call { row: *row, settled_at: None, _hold: hold });
            }
            Work::Event { tenant, uniqueid, event, at } => {
                let id = watch.lock().expect("watch lock").followed.get(&(tenant, uniqueid)).copied();
                let (Some(id), Some(fact)) = (id, fact_of(&event)) else { continue };
                let Some(call) = calls.get_mut(&id) else { continue };
                if let Err(e) = record(&db, &bus, call, &fact, at).await {
                    tracing::error!(return_call_id = %id, error = %Chain(&e), ?fact, "could not record a return call's event");
                }
            }
            Work::PbxDown { tenant } => {
                for call in calls.values_mut().filter(|c| *c.row.tenant_id == *tenant && c.settled_at.is_none()) {
                    mark_lost(&db, &bus, call, "the AMI link to the PBX was lost").await;
                }
            }
            Work::Lost { id, why } => {
                if let Some(call) = calls.get_mut(&id).filter(|c| c.settled_at.is_none()) {
                    mark_lost(&db, &bus, call, &why).await;
                }
            }
        }
    }
}

/// Records a call whose end nobody saw as failed, lost (`why` in the log).
async fn mark_lost(db: &deadpool_postgres::Pool, bus: &Bus, call: &mut Call, why: &str) {
    let mut lost = call.row.state.clone();
    lost.status = ReturnStatus::Failed;
    lost.failed_leg = None;
    lost.reason = Some(Reason::Lost);
    lost.ended_at = Some(store::now());
    tracing::warn!(return_call_id = %call.row.id, why, "return call lost: its end was not observed");
    if let Err(e) = write(db, bus, call, lost).await {
        tracing::error!(return_call_id = %call.row.id, error = %Chain(&e), "could not mark a return call lost");
    }
}

async fn record(
    db: &deadpool_postgres::Pool,
    bus: &Bus,
    call: &mut Call,
    fact: &ReturnFact,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    let Some(next) = apply(&call.row.state, fact, at) else { return Ok(()) };
    write(db, bus, call, next).await
}

/// Writes the call's new state (with an event when its status or reason changed).
async fn write(
    db: &deadpool_postgres::Pool,
    bus: &Bus,
    call: &mut Call,
    next: crate::domain::return_call::ReturnState,
) -> Result<(), StoreError> {
    let moved = next.status != call.row.state.status || next.reason != call.row.state.reason;
    let after = ReturnCallRow {
        state: next,
        sequence: call.row.sequence + i32::from(moved),
        updated_at: store::now(),
        ..call.row.clone()
    };
    let event = moved.then(|| event_data(&after));
    let conn = store::client(db).await?;
    let written = store::return_calls::transition(
        &conn,
        call.row.id,
        call.row.sequence,
        &call.row.state,
        &after.state,
        event.as_deref(),
    )
    .await?;
    let Some(deliveries) = written else {
        tracing::warn!(return_call_id = %call.row.id, "a return call changed elsewhere; its event was not applied");
        return Ok(());
    };
    if deliveries > 0 {
        bus.deliveries_queued();
    }
    if moved {
        let s = &after.state;
        tracing::info!(return_call_id = %after.id, tenant = %after.tenant_id, status = s.status.as_str(),
            failed_leg = s.failed_leg.map(ReturnLeg::as_str), reason = s.reason.map(|r| r.as_str()),
            talk_seconds = s.talk_seconds, "return call status");
        metrics::counter!("dialback_return_call_transitions_total", "to" => s.status.as_str()).increment(1);
    }
    if after.state.status.is_terminal() && call.settled_at.is_none() {
        call.settled_at = Some(Instant::now());
    }
    call.row = after;
    Ok(())
}
