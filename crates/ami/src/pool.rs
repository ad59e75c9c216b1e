//! One AMI client per tenant: created on first use, replaced when the tenant's settings change,
//! closed after a while without use (but never while one of its calls is still being tracked).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

use super::client::{AmiClient, ClientConfig, ConnState, EventSink};
use super::transport::Endpoint;

/// What identifies a tenant's AMI session: where, and as whom.
#[derive(Clone)]
pub struct PbxLogin {
    pub endpoint: Endpoint,
    pub username: String,
    pub secret: SecretString,
}

impl PbxLogin {
    fn fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.endpoint.hash(&mut h);
        self.username.hash(&mut h);
        self.secret.expose_secret().hash(&mut h);
        h.finish()
    }
}

struct Entry {
    client: AmiClient,
    fingerprint: u64,
    last_used: Instant,
    /// Calls of this tenant still being tracked: the connection stays while any is.
    holds: Arc<AtomicUsize>,
    /// Kept open as another process's standby (`AmiPool::stand_by`).
    standby: bool,
}

/// Keeps a tenant's connection open while a call is tracked; drop it when the call ends.
pub struct CallHold(Arc<AtomicUsize>);

impl Drop for CallHold {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How the pool opens and keeps sessions (the application supplies it from its settings).
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Concurrent in-flight originates per PBX, shared among the processes serving.
    pub max_inflight_originates: usize,
    /// A session closes after this long without use (never while a call holds it).
    pub idle_close: Duration,
    /// Connect, banner and login.
    pub connect_timeout: Duration,
    /// One action's reply.
    pub action_timeout: Duration,
    /// Keepalive `Ping` interval.
    pub ping_interval: Duration,
}

pub struct AmiPool {
    entries: Mutex<HashMap<String, Entry>>,
    config: PoolConfig,
    sink: Option<EventSink>,
    /// The dialback processes serving: each holds its share of a PBX's cap on in-flight
    /// originates (`max_inflight_originates`, rounded up), on its open sessions and the next.
    processes: AtomicUsize,
    /// The runtime the pool was made on, which the sessions' tasks run on. A session is often
    /// opened while an HTTP request is served, on a server worker's own runtime; its tasks must not
    /// live there, or they end with that worker (a graceful stop ends the workers first, and the
    /// sessions would stop hearing the calls they still have to hand over).
    runtime: Option<tokio::runtime::Handle>,
}

impl AmiPool {
    pub fn new(config: PoolConfig, sink: Option<EventSink>) -> Arc<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok();
        Arc::new(Self { entries: Mutex::new(HashMap::new()), config, sink, processes: AtomicUsize::new(1), runtime })
    }

    pub fn client_config(&self, tenant: &str, login: &PbxLogin) -> ClientConfig {
        ClientConfig {
            label: Arc::from(tenant),
            endpoint: login.endpoint.clone(),
            username: login.username.clone(),
            secret: login.secret.clone(),
            connect_timeout: self.config.connect_timeout,
            action_timeout: self.config.action_timeout,
            ping_interval: self.config.ping_interval,
            max_inflight_originates: self.originate_share(),
            backoff_max: Duration::from_secs(30),
            connector: None,
        }
    }

    /// The tenant's client, started on first use or when `login` differs from the running one.
    pub fn client(&self, tenant: &str, login: &PbxLogin) -> AmiClient {
        let _on_the_pools_runtime = self.runtime.as_ref().map(tokio::runtime::Handle::enter);
        let fingerprint = login.fingerprint();
        let mut entries = self.entries.lock().expect("pool lock");
        if let Some(entry) = entries.get_mut(tenant) {
            if entry.fingerprint == fingerprint {
                entry.last_used = Instant::now();
                return entry.client.clone();
            }
            let old = entry.client.clone();
            tokio::spawn(async move { old.close().await });
        }
        let client = AmiClient::start(self.client_config(tenant, login), self.sink.clone());
        entries.insert(
            tenant.to_owned(),
            Entry {
                client: client.clone(),
                fingerprint,
                last_used: Instant::now(),
                holds: Arc::default(),
                standby: false,
            },
        );
        metrics::gauge!("dialback_ami_clients").set(entries.len() as f64);
        client
    }

    /// The tenant's client, when it has one open (none is started).
    pub fn open_client(&self, tenant: &str) -> Option<AmiClient> {
        self.entries.lock().expect("pool lock").get(tenant).map(|e| e.client.clone())
    }

    /// The state of the tenant's connection, when it has one open (it is opened on first use and
    /// closed when idle).
    pub fn state(&self, tenant: &str) -> Option<super::ConnState> {
        self.entries.lock().expect("pool lock").get(tenant).map(|e| e.client.state())
    }

    /// Marks a call as tracked on the tenant's connection, so idle-closing leaves it alone.
    pub fn hold(&self, tenant: &str) -> Option<CallHold> {
        let entries = self.entries.lock().expect("pool lock");
        let entry = entries.get(tenant)?;
        entry.holds.fetch_add(1, Ordering::AcqRel);
        Some(CallHold(entry.holds.clone()))
    }

    /// `processes` serve (this one counted): each process holds its share of the cap, on the
    /// sessions it has open too (a session's originates in flight over a lowered share end as
    /// they would; new ones are refused until fewer are in flight).
    pub fn share_among(&self, processes: usize) {
        let entries = self.entries.lock().expect("pool lock");
        // Under the lock: a session opened meanwhile reads the new share.
        self.processes.store(processes.max(1), Ordering::Relaxed);
        let share = self.originate_share();
        for entry in entries.values() {
            entry.client.set_max_inflight_originates(share);
        }
    }

    /// This process's share of each PBX's cap on originates in flight.
    pub fn originate_share(&self) -> usize {
        self.config.max_inflight_originates.div_ceil(self.processes.load(Ordering::Relaxed).max(1)).max(1)
    }

    /// The tenants whose AMI session is up now: they hear their calls' events.
    pub fn tenants_up(&self) -> Vec<String> {
        let entries = self.entries.lock().expect("pool lock");
        entries.iter().filter(|(_, e)| matches!(e.client.state(), ConnState::Up)).map(|(t, _)| t.clone()).collect()
    }

    /// Keeps the connections of `tenants` open (this process stands by for their calls, which
    /// another process follows) and lets the others close when idle, as usual.
    pub fn stand_by(&self, tenants: &[String]) {
        let mut entries = self.entries.lock().expect("pool lock");
        for (tenant, entry) in entries.iter_mut() {
            entry.standby = tenants.contains(tenant);
        }
    }

    /// Closes the tenant's connection (its settings changed); the next use reconnects.
    pub fn invalidate(&self, tenant: &str) {
        let removed = self.entries.lock().expect("pool lock").remove(tenant);
        if let Some(entry) = removed {
            tokio::spawn(async move { entry.client.close().await });
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("pool lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes connections unused for `idle_close_s` with no tracked call.
    pub fn close_idle(&self) -> usize {
        let idle = self.config.idle_close;
        let mut closed = Vec::new();
        {
            let mut entries = self.entries.lock().expect("pool lock");
            entries.retain(|_, e| {
                let keep = e.last_used.elapsed() < idle || e.holds.load(Ordering::Acquire) > 0 || e.standby;
                if !keep {
                    closed.push(e.client.clone());
                }
                keep
            });
            metrics::gauge!("dialback_ami_clients").set(entries.len() as f64);
        }
        let count = closed.len();
        for client in closed {
            tracing::info!(tenant = client.label(), "closing idle AMI connection");
            tokio::spawn(async move { client.close().await });
        }
        count
    }

    /// Runs `close_idle` periodically until `stop`.
    pub fn spawn_janitor(self: &Arc<Self>, stop: CancellationToken) {
        let pool = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(15));
            loop {
                tokio::select! {
                    _ = tick.tick() => { pool.close_idle(); }
                    _ = stop.cancelled() => break,
                }
            }
        });
    }

    /// Logs off every connection (service shutdown).
    pub async fn close_all(&self) {
        let clients: Vec<AmiClient> = self.entries.lock().expect("pool lock").drain().map(|(_, e)| e.client).collect();
        futures_util::future::join_all(clients.iter().map(|c| c.close())).await;
    }
}
