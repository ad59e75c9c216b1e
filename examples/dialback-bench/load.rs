//! Driving dialback's API: seeding a tenant through the admin routes, closed-loop load at a fixed
//! concurrency, open-loop taps at a fixed rate, and waiting until every accepted callback has
//! reached a terminal status in the database.
//!
//! Every courier `k` of a bench tenant has phone `+7900kkkkkk3`, one active order `order-k` whose
//! client is `+7916kkkkkk7` (both end in digits the simulator answers), and the tenant's policy is
//! `orders`, the default: each callback is checked against its order, as in production.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dialback::auth::Role;
use dialback::config::Config;
use dialback::domain::callback::Status;
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::http::{request, Conn};
use crate::stats::{context_switches, Figures};

/// The AMI login every bench tenant saves (the simulator is started with `--user bench:bench`).
pub const AMI_USER: &str = "bench";
/// Token lifetime: longer than any run.
const TOKEN_TTL_S: u64 = 6 * 3600;

pub fn courier_id(k: usize) -> String {
    format!("courier-{k}")
}

pub fn courier_phone(k: usize) -> String {
    format!("+7900{k:06}3")
}

pub fn client_phone(k: usize) -> String {
    format!("+7916{k:06}7")
}

pub fn order_id(k: usize) -> String {
    format!("order-{k}")
}

pub fn unix_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()
}

/// The API under test and the settings it runs with (the same `DIALBACK_*` variables), which give
/// the JWT secret for tokens and the database to count terminal callbacks in.
pub struct Api {
    pub addr: SocketAddr,
    pub config: Config,
}

impl Api {
    pub fn token(&self, tenant: &str, role: Role, sub: &str) -> anyhow::Result<String> {
        dialback::auth::mint(&self.config, tenant, role, sub, TOKEN_TTL_S)
    }

    /// One courier token per courier `0..couriers` of `tenant`.
    pub fn courier_tokens(&self, tenant: &str, couriers: usize) -> anyhow::Result<Arc<Vec<String>>> {
        (0..couriers).map(|k| self.token(tenant, Role::Courier, &courier_id(k))).collect::<Result<_, _>>().map(Arc::new)
    }
}

/// A bench tenant's PBX settings: the simulator (or a proxy in front of it) at `port`.
pub fn pbx_settings(port: u16, context: &str) -> String {
    pbx_settings_over(port, context, "tcp")
}

/// The same over `transport` (`tcp`, or `http`: AMI over the simulator's HTTP server at `port`).
pub fn pbx_settings_over(port: u16, context: &str, transport: &str) -> String {
    serde_json::json!({
        "host": "127.0.0.1", "port": port, "transport": transport, "username": AMI_USER, "secret": AMI_USER,
        "channel_template": "PJSIP/{NUMBER}@trunk", "context": context,
        "office_extension": "101", "office_phone": "+74951234567", "caller_id": "+74951234567",
        "default_region": "RU", "dial_format": "digits", "originate_timeout_s": 30,
        "destination_policy": "orders", "allowed_countries": ["RU", "KZ"]
    })
    .to_string()
}

/// The admin requests that create tenant `tenant` with `couriers` couriers, each with one order
/// when `orders` is set.
pub fn seed_requests(
    api: &Api,
    tenant: &str,
    pbx_port: u16,
    context: &str,
    transport: &str,
    couriers: usize,
    orders: bool,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let admin = api.token(tenant, Role::Admin, "bench-admin")?;
    let settings = pbx_settings_over(pbx_port, context, transport);
    let mut out = vec![request("PUT", api.addr, "/v1/admin/pbx", Some(&admin), None, &settings)];
    for k in 0..couriers {
        let courier = serde_json::json!({"phone": courier_phone(k), "name": format!("Courier {k}")}).to_string();
        out.push(request(
            "PUT",
            api.addr,
            &format!("/v1/admin/couriers/{}", courier_id(k)),
            Some(&admin),
            None,
            &courier,
        ));
        if orders {
            let order =
                serde_json::json!({"courier_id": courier_id(k), "phones": [client_phone(k)], "state": "active"});
            out.push(request(
                "PUT",
                api.addr,
                &format!("/v1/admin/orders/{}", order_id(k)),
                Some(&admin),
                None,
                &order.to_string(),
            ));
        }
    }
    Ok(out)
}

/// Sends groups of requests over `concurrency` connections; the requests of a group go in order
/// on one connection (a courier before its order). Every answer must be 2xx.
pub async fn send_groups(addr: SocketAddr, groups: Vec<Vec<Vec<u8>>>, concurrency: usize) -> anyhow::Result<()> {
    let groups = Arc::new(groups);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (groups, next) = (groups.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(group) = groups.get(i) else { return Ok(()) };
                for req in group {
                    let response = conn.send(req).await?;
                    if !(200..300).contains(&response.status) {
                        anyhow::bail!("seeding answered {}: {}", response.status, response.json());
                    }
                }
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    Ok(())
}

/// Seeds a tenant: its PBX settings, then each courier with its order.
pub async fn seed(
    api: &Api,
    tenant: &str,
    pbx_port: u16,
    context: &str,
    transport: &str,
    couriers: usize,
) -> anyhow::Result<()> {
    let mut requests = seed_requests(api, tenant, pbx_port, context, transport, couriers, true)?;
    let settings = requests.remove(0);
    send_groups(api.addr, vec![vec![settings]], 1).await?;
    let pairs: Vec<Vec<Vec<u8>>> = requests.chunks(2).map(<[Vec<u8>]>::to_vec).collect();
    send_groups(api.addr, pairs, 16).await
}

/// The body of a courier's tap on "call the client" of their order.
pub fn callback_body(k: usize) -> String {
    format!(r#"{{"target":"client","to":"{}","order_id":"{}"}}"#, client_phone(k), order_id(k))
}

/// What a closed-loop run saw.
#[derive(Default)]
pub struct Run {
    pub taps: Vec<Tap>,
    pub latencies_us: Vec<u64>,
    /// Answer status (0: no answer: an I/O error) → count, for everything but 202.
    pub errors: BTreeMap<u16, u64>,
    /// When each error came (`unix_nanos`).
    pub error_unix_nanos: Vec<u128>,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

impl Run {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn absorb(&mut self, other: Run) {
        self.taps.extend(other.taps);
        self.latencies_us.extend(other.latencies_us);
        for (status, n) in other.errors {
            *self.errors.entry(status).or_default() += n;
        }
        self.error_unix_nanos.extend(other.error_unix_nanos);
        self.first_error = self.first_error.take().or(other.first_error);
    }

    /// `callbacks_per_s`, latencies, `errors`, `accepted_count` under `key_prefix`.
    pub fn figures(&mut self, figures: &mut Figures, key_prefix: &str) {
        let secs = self.elapsed.as_secs_f64().max(1e-3);
        figures.num(&format!("{key_prefix}callbacks_per_s"), self.taps.len() as f64 / secs);
        figures.latencies(key_prefix, &mut self.latencies_us);
        figures.count(&format!("{key_prefix}errors"), self.error_count());
        figures.count(&format!("{key_prefix}accepted_count"), self.taps.len() as u64);
        if let Some(e) = &self.first_error {
            eprintln!("  first error: {e}");
            figures.text(&format!("{key_prefix}first_error"), e);
        }
    }
}

/// A tap, as a load loop sees it: the callback (or call) id and when its first byte was sent.
pub struct Tap {
    pub id: String,
    pub sent_unix_nanos: u128,
}

/// One worker's way of placing a callback; the `n`th tap of worker `worker`.
pub trait Tapper: Send + 'static {
    /// `Err((status, detail))`: status 0 when there was no answer at all.
    fn tap(&mut self, n: usize) -> impl std::future::Future<Output = Result<Tap, (u16, String)>> + Send;
}

/// Through the API: courier `k` calls the client of their order, with a fresh Idempotency-Key
/// as the app sends, on this worker's keep-alive connection.
pub struct ApiTapper {
    conn: Conn,
    tokens: Arc<Vec<String>>,
    /// Worker `w` of `stride` takes couriers w, w + stride, ...: concurrent taps never share one.
    worker: usize,
    stride: usize,
    nonce: String,
}

impl ApiTapper {
    pub async fn new(addr: SocketAddr, tokens: Arc<Vec<String>>, worker: usize, stride: usize, nonce: &str) -> Self {
        let mut conn = Conn::new(addr);
        let _ = conn.connect().await;
        ApiTapper { conn, tokens, worker, stride, nonce: nonce.to_owned() }
    }

    /// One tapper per worker.
    pub async fn many(addr: SocketAddr, tokens: &Arc<Vec<String>>, count: usize) -> Vec<ApiTapper> {
        ApiTapper::spread(&[addr], tokens, count).await
    }

    /// One tapper per worker, worker `w` sending to `apis[w % apis.len()]`: processes behind a
    /// balancer that alternates.
    pub async fn spread(apis: &[SocketAddr], tokens: &Arc<Vec<String>>, count: usize) -> Vec<ApiTapper> {
        let nonce = Uuid::new_v4().simple().to_string();
        let mut out = Vec::with_capacity(count);
        for worker in 0..count {
            out.push(ApiTapper::new(apis[worker % apis.len()], tokens.clone(), worker, count, &nonce).await);
        }
        out
    }
}

impl Tapper for ApiTapper {
    async fn tap(&mut self, n: usize) -> Result<Tap, (u16, String)> {
        let k = (self.worker + n * self.stride) % self.tokens.len();
        let key = format!("bench-{}-{}-{n}", self.nonce, self.worker);
        let addr = self.conn.addr();
        let req = request("POST", addr, "/v1/callbacks", Some(&self.tokens[k]), Some(&key), &callback_body(k));
        let sent_unix_nanos = unix_nanos();
        let answer = self.conn.send(&req).await.map_err(|e| (0, e.to_string()))?;
        if answer.status != 202 {
            return Err((answer.status, answer.json().to_string()));
        }
        match answer.json()["id"].as_str() {
            Some(id) => Ok(Tap { id: id.to_owned(), sent_unix_nanos }),
            None => Err((202, "202 without an id".into())),
        }
    }
}

/// Each tapper taps back to back for `duration` (closed loop: concurrency = tappers).
pub async fn closed_loop<T: Tapper>(tappers: Vec<T>, duration: Duration) -> Run {
    let started = Instant::now();
    let deadline = started + duration;
    let mut total = in_parallel(tappers, move |_, mut tapper| async move {
        let mut run = Run::default();
        let mut n = 0;
        while Instant::now() < deadline {
            run.tap(&mut tapper, n).await;
            n += 1;
        }
        run
    })
    .await;
    total.elapsed = started.elapsed();
    total
}

/// Taps at a fixed `rate` for `duration`, spread over the tappers in turn (open loop: a slow
/// answer does not delay the next tap as long as a tapper is free).
pub async fn open_loop<T: Tapper>(tappers: Vec<T>, rate: f64, duration: Duration) -> Run {
    let total = (rate * duration.as_secs_f64()) as usize;
    let count = tappers.len();
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut all = in_parallel(tappers, move |worker, mut tapper| async move {
        let mut run = Run::default();
        for (n, slot) in (worker..total).step_by(count).enumerate() {
            tokio::time::sleep_until(start + Duration::from_secs_f64(slot as f64 / rate)).await;
            run.tap(&mut tapper, n).await;
        }
        run
    })
    .await;
    all.elapsed = duration;
    all
}

/// Runs `worker(i, tapper)` for every tapper at once and merges what they saw.
async fn in_parallel<T, F, Fut>(tappers: Vec<T>, worker: F) -> Run
where
    T: Tapper,
    F: Fn(usize, T) -> Fut,
    Fut: std::future::Future<Output = Run> + Send + 'static,
{
    let workers: Vec<_> = tappers.into_iter().enumerate().map(|(i, tapper)| tokio::spawn(worker(i, tapper))).collect();
    let mut all = Run::default();
    for handle in workers {
        if let Ok(run) = handle.await {
            all.absorb(run);
        }
    }
    all
}

impl Run {
    /// Taps once and records the latency, or the error.
    async fn tap<T: Tapper>(&mut self, tapper: &mut T, n: usize) {
        let sent = Instant::now();
        match tapper.tap(n).await {
            Ok(tap) => {
                self.latencies_us.push(sent.elapsed().as_micros() as u64);
                self.taps.push(tap);
            }
            Err((status, detail)) => self.note_error(status, detail),
        }
    }
}

impl Run {
    pub fn note_error(&mut self, status: u16, detail: String) {
        *self.errors.entry(status).or_default() += 1;
        self.error_unix_nanos.push(unix_nanos());
        self.first_error.get_or_insert_with(|| format!("{status}: {detail}"));
    }
}

/// How the accepted callbacks ended.
pub struct Terminal {
    /// How long after the run ended the last one became terminal (a call talks 1 s; more is
    /// the event tracker catching up).
    pub settled_after: Duration,
    pub terminal: u64,
    pub completed: u64,
    pub by_status: BTreeMap<String, u64>,
}

/// Polls the database until every callback in `ids` has a terminal status, or `timeout`.
pub async fn wait_terminal(config: &Config, ids: &[Uuid], timeout: Duration) -> anyhow::Result<Terminal> {
    let client = db(config).await?;
    let started = Instant::now();
    let deadline = started + timeout;
    let result = loop {
        let rows =
            client.query("SELECT status, count(*) FROM callbacks WHERE id = ANY($1) GROUP BY status", &[&ids]).await?;
        let by_status: BTreeMap<String, u64> =
            rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64)).collect();
        let terminal =
            by_status.iter().filter(|(s, _)| Status::parse(s).is_some_and(Status::is_terminal)).map(|(_, n)| n).sum();
        let completed = by_status.get("completed").copied().unwrap_or(0);
        if terminal >= ids.len() as u64 || Instant::now() >= deadline {
            break Terminal { settled_after: started.elapsed(), terminal, completed, by_status };
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    Ok(result)
}

/// A connection to dialback's database (it closes when the client is dropped).
pub async fn db(config: &Config) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) =
        tokio_postgres::connect(config.database_url.expose_secret(), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Runs `levels` one after another (each followed by the wait for terminal statuses) and writes
/// `c<N>_*` figures for each, with the CPU each watched process used during the level.
pub async fn levels(
    api: &Api,
    tokens: &Arc<Vec<String>>,
    levels: &[usize],
    duration: Duration,
    watched: &[crate::stats::Watched],
    figures: &mut Figures,
) -> anyhow::Result<()> {
    for &concurrency in levels {
        eprintln!("load: concurrency {concurrency} for {} s", duration.as_secs_f64());
        let tappers = ApiTapper::many(api.addr, tokens, concurrency).await;
        measure(api, watched, figures, &format!("c{concurrency}_"), closed_loop(tappers, duration)).await?;
    }
    Ok(())
}

/// Callbacks at a fixed `rate` (open loop, over `connections` connections spread over `api` and
/// `others`) for `duration`, then the wait for terminal statuses: `rate_*` figures, as for a level.
/// Returns the accepted callbacks' ids.
#[allow(clippy::too_many_arguments)]
pub async fn fixed_rate(
    api: &Api,
    others: &[SocketAddr],
    tokens: &Arc<Vec<String>>,
    rate: f64,
    connections: usize,
    duration: Duration,
    watched: &[crate::stats::Watched],
    figures: &mut Figures,
) -> anyhow::Result<Vec<Uuid>> {
    let apis: Vec<SocketAddr> = std::iter::once(api.addr).chain(others.iter().copied()).collect();
    eprintln!(
        "load: {rate} callbacks/s for {} s over {connections} connections to {} process(es)",
        duration.as_secs_f64(),
        apis.len()
    );
    let tappers = ApiTapper::spread(&apis, tokens, connections).await;
    figures.num("rate_target_per_s", rate);
    figures.num("rate_connections", connections as f64);
    figures.num("rate_seconds", duration.as_secs_f64());
    measure(api, watched, figures, "rate_", open_loop(tappers, rate, duration)).await
}

/// Runs `load` and writes its figures under `key`: rate, latencies and errors, the CPU each
/// watched process used meanwhile, then (once every accepted callback is terminal) the
/// transactions PostgreSQL committed and dialback's context switches per callback. Returns the
/// accepted callbacks' ids.
async fn measure(
    api: &Api,
    watched: &[crate::stats::Watched],
    figures: &mut Figures,
    key: &str,
    load: impl std::future::Future<Output = Run>,
) -> anyhow::Result<Vec<Uuid>> {
    let dialback = watched.iter().find(|w| w.name == "dialback").map(|w| w.pid);
    let switches = dialback.map(context_switches);
    let xacts = pg_transactions(&api.config).await?;
    let before = crate::stats::cpu_sample(watched);
    let mut run = load.await;
    crate::stats::cpu_sample(watched).since(&before, figures, key);
    run.figures(figures, key);
    terminal_figures(&api.config, &run, figures, key).await?;
    // Per accepted callback, counted until every one was terminal (the tracker's writes too).
    crate::stats::cpu_sample(watched).per_callback_since(&before, run.taps.len(), figures, key);
    let per_callback = |n: u64| n as f64 / run.taps.len().max(1) as f64;
    let xacts = pg_transactions(&api.config).await? - xacts;
    figures.num(&format!("{key}pg_transactions_per_callback"), per_callback(xacts));
    if let (Some(pid), Some(switches)) = (dialback, switches) {
        let switches = context_switches(pid).saturating_sub(switches);
        figures.num(&format!("{key}dialback_context_switches_per_callback"), per_callback(switches));
    }
    Ok(run.taps.iter().filter_map(|t| Uuid::parse_str(&t.id).ok()).collect())
}

/// Transaction ids PostgreSQL has handed out so far: one per transaction that writes (each
/// statement outside an explicit transaction is one), counted exactly and at once. (The
/// statistics views' commit counts lag: a backend reports its counts up to seconds later, so a
/// step would be charged part of the step before it.)
async fn pg_transactions(config: &Config) -> anyhow::Result<u64> {
    let row = db(config).await?.query_one("SELECT pg_snapshot_xmax(pg_current_snapshot())::text", &[]).await?;
    Ok(row.get::<_, String>(0).parse()?)
}

/// Waits until the run's accepted callbacks are terminal; `terminal_count`, `completed_count`.
pub async fn terminal_figures(config: &Config, run: &Run, figures: &mut Figures, key: &str) -> anyhow::Result<()> {
    let ids: Vec<Uuid> = run.taps.iter().filter_map(|t| Uuid::parse_str(&t.id).ok()).collect();
    let end = wait_terminal(config, &ids, Duration::from_secs(60)).await?;
    figures.count(&format!("{key}terminal_count"), end.terminal);
    figures.count(&format!("{key}completed_count"), end.completed);
    figures.num(&format!("{key}settled_after_s"), end.settled_after.as_secs_f64());
    if end.terminal < run.taps.len() as u64 || end.completed < end.terminal {
        eprintln!("  statuses: {:?}", end.by_status);
    }
    Ok(())
}

/// After a fault under load: waits (2 minutes at most) until the run's accepted callbacks are
/// terminal; `terminal_count`, `completed_count`, `lost_count` (never terminal) and `unknown_count`.
pub async fn outcome_figures(config: &Config, run: &Run, figures: &mut Figures, key: &str) -> anyhow::Result<()> {
    let ids: Vec<Uuid> = run.taps.iter().filter_map(|t| Uuid::parse_str(&t.id).ok()).collect();
    let end = wait_terminal(config, &ids, Duration::from_secs(120)).await?;
    figures.count(&format!("{key}terminal_count"), end.terminal);
    figures.count(&format!("{key}completed_count"), end.completed);
    figures.count(&format!("{key}lost_count"), ids.len() as u64 - end.terminal);
    figures.count(&format!("{key}unknown_count"), end.by_status.get("unknown").copied().unwrap_or(0));
    if end.completed < ids.len() as u64 {
        eprintln!("  statuses: {:?}", end.by_status);
    }
    Ok(())
}

/// Joins a run's taps with the simulator's originate log and writes `<key>tap_to_originate_*`:
/// the time from a tap's request being sent to its Originate being read by the simulator.
pub async fn tap_figures(run: &Run, log: &Path, figures: &mut Figures, key: &str) -> anyhow::Result<()> {
    // The simulator flushes its log every 100 ms; wait until every tap is there (or give up).
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut latencies, missing) = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let read_at: HashMap<&str, u128> =
            text.lines().filter_map(|l| l.split_once(' ')).filter_map(|(id, t)| Some((id, t.parse().ok()?))).collect();
        let mut latencies = Vec::with_capacity(run.taps.len());
        let mut missing = 0;
        for tap in &run.taps {
            match read_at.get(tap.id.as_str()) {
                Some(&read) => latencies.push((read.saturating_sub(tap.sent_unix_nanos) / 1000) as u64),
                None => missing += 1,
            }
        }
        if missing == 0 || Instant::now() >= deadline {
            break (latencies, missing);
        }
    };
    figures.latencies(&format!("{key}tap_to_originate_"), &mut latencies);
    figures.num(&format!("{key}tap_rate_per_s"), run.taps.len() as f64 / run.elapsed.as_secs_f64().max(1e-3));
    figures.count(&format!("{key}tap_errors"), run.error_count());
    figures.count(&format!("{key}tap_missing_in_log"), missing);
    Ok(())
}
