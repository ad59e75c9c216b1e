//! The state every session and call shares: configuration, the event bus, the live channels (for
//! `Hangup` and `ChannelId` clashes), id counters, the stop signal, and the tasks to wait for.
//!
//! Events go through one broadcast ring that every event-reading session follows. Publishing never
//! waits for a session; a session that falls a whole ring behind is closed, as Asterisk drops a
//! client it cannot write to within `writetimeout`.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, watch, Notify};
use tokio_util::sync::CancellationToken;

use super::channel::Channel;
use super::originate_log::OriginateLog;
use super::wire::Event;
use super::SimConfig;

/// Events the bus holds for the slowest session. 200 originates in one burst produce about
/// 7,000 events; a session further behind than this is too slow and is dropped.
const EVENT_RING: usize = 16 * 1024;

/// A request to hang a call up, with its cause (the AMI `Hangup` action sends it).
pub(crate) type HangupSignal = watch::Sender<Option<u16>>;

pub(crate) struct Pbx {
    pub config: SimConfig,
    events: broadcast::Sender<Event>,
    pub stop: CancellationToken,
    /// Set by `shutdown()` (sessions send `Event: Shutdown`); a kill leaves it unset.
    pub graceful: AtomicBool,
    pub originates: AtomicU64,
    /// Leg-2 dials begun (a `Dial` from a courier's channel).
    pub client_dials: AtomicU64,
    /// Dials made by inbound calls' dialplans (the courier a return call was routed to, the office).
    pub inbound_dials: AtomicU64,
    /// Calls whose task is still running (their last event not yet published).
    pub calls_in_progress: AtomicUsize,
    pub sessions: AtomicUsize,
    /// Successful logins, on the AMI port and over HTTP.
    pub logins: AtomicU64,
    /// Sessions of AMI over HTTP (`ajam.rs`), by their cookie.
    pub(crate) http_sessions: super::ajam::Sessions,
    pub tasks: Tasks,
    /// `--originate-log`: when each Originate was read, by ChannelId.
    pub originate_log: Option<OriginateLog>,
    started: Instant,
    next_uniqueid: AtomicU64,
    next_channel: AtomicU64,
    live: Mutex<LiveChannels>,
    /// What the dialplan and the AMI `DB*` actions keep.
    pub astdb: super::astdb::AstDb,
}

#[derive(Default)]
struct LiveChannels {
    /// Lower-cased channel name → the call's hangup signal, and the channel as it was created
    /// with when (what `CoreShowChannels` lists).
    by_name: HashMap<String, (Arc<HangupSignal>, Channel, Instant)>,
    /// Uniqueid → the call's hangup signal: Asterisk finds the channel of a `Hangup` action by its
    /// name or its uniqueid (`ast_channel_get_by_name`).
    by_uniqueid: HashMap<String, Arc<HangupSignal>>,
    uniqueids: HashSet<String>,
}

impl Pbx {
    pub fn new(config: SimConfig, originate_log: Option<OriginateLog>) -> Pbx {
        Pbx {
            config,
            events: broadcast::channel(EVENT_RING).0,
            stop: CancellationToken::new(),
            graceful: AtomicBool::new(false),
            originates: AtomicU64::new(0),
            client_dials: AtomicU64::new(0),
            inbound_dials: AtomicU64::new(0),
            calls_in_progress: AtomicUsize::new(0),
            sessions: AtomicUsize::new(0),
            logins: AtomicU64::new(0),
            http_sessions: Default::default(),
            tasks: Tasks::default(),
            originate_log,
            started: Instant::now(),
            next_uniqueid: AtomicU64::new(0),
            next_channel: AtomicU64::new(0),
            live: Mutex::default(),
            astdb: Default::default(),
        }
    }

    /// Whether the dialplan runs `exten` in `context`: the loaded one's extensions, or else the
    /// reference dialplan's `_X.` in each configured context.
    pub fn extension_exists(&self, context: &str, exten: &str) -> bool {
        match &self.config.dialplan {
            Some(dialplan) => dialplan.find(context, exten).is_some(),
            None => {
                self.config.contexts.iter().any(|known| known == context) && super::originate::matches_any_number(exten)
            }
        }
    }

    pub fn publish(&self, event: Event) {
        // An error only means no session reads events right now.
        let _ = self.events.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// An Asterisk-style uniqueid: `<epoch seconds>.<sequence>`, e.g. `1795335228.6`.
    pub fn new_uniqueid(&self) -> String {
        format!("{}.{}", unix_now().as_secs(), self.next_uniqueid.fetch_add(1, Ordering::Relaxed))
    }

    /// The `-00000003` part of a channel name.
    pub fn new_channel_sequence(&self) -> String {
        format!("{:08x}", self.next_channel.fetch_add(1, Ordering::Relaxed))
    }

    /// Reserves uniqueids for a new channel; `false` when one is in use (Asterisk then refuses
    /// to create the channel).
    pub fn claim_uniqueids(&self, ids: &[String]) -> bool {
        let mut live = self.live.lock().expect("live channels lock");
        if ids.iter().any(|id| live.uniqueids.contains(id)) {
            return false;
        }
        live.uniqueids.extend(ids.iter().cloned());
        true
    }

    pub fn register_channel(&self, channel: &Channel, signal: &Arc<HangupSignal>) {
        let mut live = self.live.lock().expect("live channels lock");
        live.by_name.insert(channel.name.to_ascii_lowercase(), (signal.clone(), channel.clone(), Instant::now()));
        live.by_uniqueid.insert(channel.uniqueid.clone(), signal.clone());
    }

    /// The live channels as they were created, and how long ago (for `CoreShowChannels`: the
    /// simulator does not follow each channel's state and dialplan position there).
    pub fn channels(&self) -> Vec<(Channel, Duration)> {
        let live = self.live.lock().expect("live channels lock");
        live.by_name.values().map(|(_, channel, created)| (channel.clone(), created.elapsed())).collect()
    }

    /// Forgets a call's channels (`names` and their `uniqueids`) and the uniqueids it `claimed`.
    pub fn release(&self, names: &[String], uniqueids: &[String], claimed: &[String]) {
        let mut live = self.live.lock().expect("live channels lock");
        for name in names {
            live.by_name.remove(&name.to_ascii_lowercase());
        }
        for id in uniqueids {
            live.by_uniqueid.remove(id);
        }
        for id in claimed {
            live.uniqueids.remove(id);
        }
    }

    /// Asks the call owning `channel` (a name or a uniqueid) to hang up; `false` when no such
    /// channel is up.
    pub fn hang_up(&self, channel: &str, cause: u16) -> bool {
        let live = self.live.lock().expect("live channels lock");
        let by_name = live.by_name.get(&channel.to_ascii_lowercase()).map(|(signal, ..)| signal);
        match by_name.or_else(|| live.by_uniqueid.get(channel)) {
            Some(signal) => {
                signal.send_replace(Some(cause));
                true
            }
            None => false,
        }
    }

    /// Accepts connections on `listener` until the simulator stops, each served by `serve` as a
    /// task of its own; `what` names the listener in the log.
    pub(crate) async fn accept<F, Fut>(&self, listener: tokio::net::TcpListener, what: &'static str, serve: F)
    where
        F: Fn(tokio::net::TcpStream, std::net::SocketAddr) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        loop {
            let accepted = tokio::select! {
                _ = self.stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    self.tasks.spawn(serve(stream, peer));
                }
                // Out of file descriptors, usually: keep serving the connections there are.
                Err(e) => {
                    tracing::warn!(error = %dialback_logging::Chain(&e), what, "pbx-sim accept failed");
                    if !self.sleep(Duration::from_millis(50)).await {
                        return;
                    }
                }
            }
        }
    }

    /// Sleeps, unless the simulator stops first (`false`).
    pub async fn sleep(&self, duration: Duration) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(duration) => true,
        }
    }
}

pub(crate) fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Counts the simulator's tasks so `shutdown()` can wait until every one has ended.
#[derive(Clone, Default)]
pub(crate) struct Tasks {
    inner: Arc<(AtomicUsize, Notify)>,
}

struct TaskGuard(Tasks);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let (live, idle) = &*self.0.inner;
        if live.fetch_sub(1, Ordering::AcqRel) == 1 {
            idle.notify_waiters();
        }
    }
}

impl Tasks {
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.inner.0.fetch_add(1, Ordering::AcqRel);
        let guard = TaskGuard(self.clone());
        tokio::spawn(async move {
            let _guard = guard;
            task.await;
        });
    }

    pub async fn wait_idle(&self) {
        let (live, idle) = &*self.inner;
        loop {
            let notified = idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if live.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}
