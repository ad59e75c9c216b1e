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
use crate::ami::AmiEvent;
use crate::domain::callback::Reason;
use crate::domain::return_call::{apply, ReturnFact, ReturnLeg, ReturnStatus};
use crate::events::Bus;
use crate::store::return_calls::ReturnCallRow;
use crate::store::{self, StoreError};
use crate::telemetry::Chain;

/// A settled call is kept this long for its CDR, which follows the hangup.
const SETTLED_GRACE: Duration = Duration::from_secs(60);

/// The calls followed, by (tenant, Uniqueid of their inbound channel).
type Followed = Arc<Mutex<HashMap<(Arc<str>, String), Uuid>>>;

enum Work {
    Follow(Box<ReturnCallRow>),
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
    /// (tenant, agi_uniqueid) of every call followed: checked on the AMI reader task, so only
    /// their events reach the tracker.
    followed: Followed,
}

impl ReturnTracker {
    pub fn start(db: deadpool_postgres::Pool, bus: Bus) -> ReturnTracker {
        let (tx, rx) = mpsc::unbounded_channel();
        let followed = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(run(db, bus, rx, followed.clone()));
        ReturnTracker { tx, followed }
    }

    /// Starts following a call routed to a courier.
    pub fn follow(&self, row: ReturnCallRow) {
        let Some(uniqueid) = row.agi_uniqueid.clone() else { return };
        let key = (Arc::from(row.tenant_id.as_str()), uniqueid);
        self.followed.lock().expect("followed lock").insert(key, row.id);
        let _ = self.tx.send(Work::Follow(Box::new(row)));
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
                if self.followed.lock().expect("followed lock").contains_key(&key) {
                    let at = store::now();
                    let _ =
                        self.tx.send(Work::Event { tenant: tenant.clone(), uniqueid: key.1, event: event.clone(), at });
                }
            }
            PbxSignal::Down(_) => {
                let any = self.followed.lock().expect("followed lock").keys().any(|(t, _)| t == tenant);
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
}

async fn run(db: deadpool_postgres::Pool, bus: Bus, mut rx: mpsc::UnboundedReceiver<Work>, followed: Followed) {
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
                let mut keys = followed.lock().expect("followed lock");
                for id in gone {
                    calls.remove(&id);
                    keys.retain(|_, followed| *followed != id);
                }
                continue;
            }
        };
        match work {
            Work::Follow(row) => {
                calls.insert(row.id, Call { row: *row, settled_at: None });
            }
            Work::Event { tenant, uniqueid, event, at } => {
                let id = followed.lock().expect("followed lock").get(&(tenant, uniqueid)).copied();
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
