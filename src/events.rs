//! What happens once a change's events are committed (store::events wrote them with the change):
//! the callback's live subscribers (`GET /v1/callbacks/{id}/events`) hear them at once, and the
//! webhook deliverer learns that deliveries are waiting instead of finding out at its next poll.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, Notify};
use uuid::Uuid;

/// Events one subscriber may fall behind before it misses some (it then reads them back from the
/// database: see [`Subscription`]).
const LIVE_BACKLOG: usize = 16;

/// One committed event of a callback, as its live stream sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveEvent {
    pub sequence: i32,
    /// The admins' view of the callback at that event, as JSON text.
    pub data: Arc<str>,
}

/// The process's event bus. Cheap to clone.
#[derive(Clone, Default)]
pub struct Bus {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    live: Mutex<HashMap<Uuid, broadcast::Sender<LiveEvent>>>,
    deliveries: Notify,
}

impl Bus {
    /// A callback's events were committed (`events` are `(sequence, data)`), and with them
    /// `deliveries` webhook deliveries.
    pub fn committed<'a>(&self, id: Uuid, events: impl IntoIterator<Item = (i32, &'a str)>, deliveries: i64) {
        if deliveries > 0 {
            self.inner.deliveries.notify_one();
        }
        let live = self.inner.live.lock().expect("live subscribers lock");
        if let Some(sender) = live.get(&id) {
            for (sequence, data) in events {
                // No receiver left means the last subscriber is going away: nothing to do.
                let _ = sender.send(LiveEvent { sequence, data: Arc::from(data) });
            }
        }
    }

    /// Webhook deliveries were queued by another means (a retry asked for through the API).
    pub fn deliveries_queued(&self) {
        self.inner.deliveries.notify_one();
    }

    /// Resolves once deliveries have been queued since the last call (the deliverer's wake-up).
    pub async fn deliveries_waiting(&self) {
        self.inner.deliveries.notified().await;
    }

    /// Follows a callback's events from now on. Subscribe before reading what is stored, so that
    /// nothing falls between the two.
    pub fn subscribe(&self, id: Uuid) -> Subscription {
        let mut live = self.inner.live.lock().expect("live subscribers lock");
        let receiver = live.entry(id).or_insert_with(|| broadcast::channel(LIVE_BACKLOG).0).subscribe();
        Subscription { bus: self.clone(), id, receiver: Some(receiver) }
    }

    /// Callbacks followed live now.
    pub fn followed(&self) -> usize {
        self.inner.live.lock().expect("live subscribers lock").len()
    }
}

/// A live subscription to one callback's events; the last one dropped removes its channel.
pub struct Subscription {
    bus: Bus,
    id: Uuid,
    receiver: Option<broadcast::Receiver<LiveEvent>>,
}

impl Subscription {
    /// The next event, or `Err(n)` when `n` were missed (the subscriber fell behind: read them
    /// back from the database), or `Ok(None)` when the bus is gone.
    pub async fn next(&mut self) -> Result<Option<LiveEvent>, u64> {
        let receiver = self.receiver.as_mut().expect("a live subscription has its receiver");
        match receiver.recv().await {
            Ok(event) => Ok(Some(event)),
            Err(broadcast::error::RecvError::Lagged(missed)) => Err(missed),
            Err(broadcast::error::RecvError::Closed) => Ok(None),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.receiver.take());
        let mut live = self.bus.inner.live.lock().expect("live subscribers lock");
        if live.get(&self.id).is_some_and(|sender| sender.receiver_count() == 0) {
            live.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_hear_committed_events_and_the_last_one_out_removes_the_channel() {
        let bus = Bus::default();
        let id = Uuid::now_v7();
        bus.committed(id, [(1, "{}")], 0); // nobody listens yet: nothing kept
        let mut first = bus.subscribe(id);
        let second = bus.subscribe(id);
        bus.committed(id, [(2, "{\"status\":\"ringing_courier\"}"), (3, "{}")], 0);
        assert_eq!(first.next().await.unwrap().unwrap().sequence, 2);
        assert_eq!(first.next().await.unwrap().unwrap().sequence, 3);
        drop(second);
        assert_eq!(bus.followed(), 1);
        drop(first);
        assert_eq!(bus.followed(), 0);
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_how_many_it_missed() {
        let bus = Bus::default();
        let id = Uuid::now_v7();
        let mut slow = bus.subscribe(id);
        let many: Vec<(i32, String)> = (1..=(LIVE_BACKLOG as i32 + 3)).map(|n| (n, "{}".to_owned())).collect();
        bus.committed(id, many.iter().map(|(n, d)| (*n, d.as_str())), 0);
        assert_eq!(slow.next().await, Err(3));
    }

    #[tokio::test(start_paused = true)]
    async fn queued_deliveries_wake_the_deliverer() {
        let bus = Bus::default();
        bus.committed(Uuid::now_v7(), [], 1);
        tokio::time::timeout(std::time::Duration::from_secs(1), bus.deliveries_waiting())
            .await
            .expect("woken by the committed deliveries");
    }
}
