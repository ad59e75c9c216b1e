//! Events under load (issue 14): `webhooks` holds the target rate with a webhook endpoint on the
//! tenant and counts what a receiver of its own gets (every event, signatures, lag); `streams`
//! opens many live streams (`GET /v1/callbacks/{id}/events`) and measures what they cost dialback
//! and how fast one event reaches all of them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use dialback::auth::Role;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::http::{request, Conn};
use crate::load::{self, Api};
use crate::stats::{self, Figures, Watched};

/// Streams connecting at once while they are opened.
const OPENING_AT_ONCE: usize = 256;

/// A load held open loop: `rate` callbacks per second over `connections` for `duration`.
pub struct FixedRate {
    pub rate: f64,
    pub connections: usize,
    pub duration: Duration,
}

/// What the receiver got.
#[derive(Default)]
struct Received {
    /// (subject, sequence) of every message, duplicates included.
    messages: Vec<(Uuid, i32)>,
    /// From the event's `timestamp` to its arrival, in microseconds.
    lags_us: Vec<u64>,
    bad_signatures: u64,
    /// Unix milliseconds of the first and the last message.
    first_ms: Option<i64>,
    last_ms: Option<i64>,
}

struct Receiver {
    secret: Mutex<Option<String>>,
    received: Mutex<Received>,
}

/// One webhook message: checked as a receiver would (the signature, with dialback's own signing,
/// which the test suite checks against the specification's library), noted, answered 204.
async fn receive_one(req: HttpRequest, body: web::Bytes, receiver: web::Data<Receiver>) -> HttpResponse {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let (id, timestamp, signature) = (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
    let arrived = OffsetDateTime::now_utc();
    let valid = receiver.secret.lock().expect("secret lock").as_ref().is_some_and(|secret| {
        let expected = dialback::webhooks::signing::signature_header(
            &[secret.as_str()],
            &id,
            timestamp.parse().unwrap_or_default(),
            &body,
        );
        signature.split(' ').any(|s| s == expected)
    });
    let envelope: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let happened = envelope["timestamp"].as_str().and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
    let mut r = receiver.received.lock().expect("receiver lock");
    if let Some((subject, sequence)) = dialback::webhooks::parse_message_id(&id) {
        r.messages.push((subject, sequence));
    }
    if let Some(happened) = happened {
        r.lags_us.push((arrived - happened).whole_microseconds().max(0) as u64);
    }
    if !valid {
        r.bad_signatures += 1;
    }
    let now_ms = (arrived.unix_timestamp_nanos() / 1_000_000) as i64;
    r.first_ms.get_or_insert(now_ms);
    r.last_ms = Some(now_ms);
    HttpResponse::NoContent().finish()
}

/// The secret to check signatures with.
async fn set_secret(body: String, receiver: web::Data<Receiver>) -> HttpResponse {
    *receiver.secret.lock().expect("secret lock") = Some(body);
    HttpResponse::NoContent().finish()
}

/// What was received so far: counts, lag percentiles (µs), first and last arrival.
async fn stats_of(receiver: web::Data<Receiver>) -> HttpResponse {
    let mut r = receiver.received.lock().expect("receiver lock");
    let distinct = r.messages.iter().collect::<HashSet<_>>().len();
    r.lags_us.sort_unstable();
    let q = |q: f64| stats::percentile(&r.lags_us, q);
    HttpResponse::Ok().json(serde_json::json!({
        "received": r.messages.len(), "distinct": distinct, "bad_signatures": r.bad_signatures,
        "first_ms": r.first_ms, "last_ms": r.last_ms,
        "lag_p50_us": q(0.5), "lag_p90_us": q(0.9), "lag_p99_us": q(0.99), "lag_max_us": r.lags_us.last().copied().unwrap_or(0),
    }))
}

/// `dialback-bench receive`: the webhook receiver, a process of its own (the bench starts it with
/// a low priority: on a real deployment the receiver is on another machine, and its work is not
/// dialback's).
pub async fn serve_receiver(listen: SocketAddr) -> anyhow::Result<()> {
    let receiver = web::Data::new(Receiver { secret: Mutex::new(None), received: Mutex::default() });
    HttpServer::new(move || {
        App::new()
            .app_data(receiver.clone())
            .app_data(web::PayloadConfig::default().limit(1 << 20))
            .route("/hook", web::post().to(receive_one))
            .route("/secret", web::post().to(set_secret))
            .route("/stats", web::get().to(stats_of))
    })
    .workers(1)
    .bind(listen)?
    .run()
    .await?;
    Ok(())
}

/// The target rate with a webhook endpoint on `tenant` (`rate_*`, as the plain rate step), then
/// the wait until the receiver has every event of the accepted callbacks: `events_expected` (what
/// the database holds), `events_delivered` (distinct), `duplicates`, `bad_signatures`,
/// `deliveries_per_s`, `lag_*` percentiles, and `drained_after_s` (the last one after every
/// callback was terminal). `scripts/bench` gives them the prefix `webhooks_`. The receiver runs as
/// a process of its own under `nice -n 19`.
pub async fn webhooks(
    api: &Api,
    tenant: &str,
    couriers: usize,
    target: &FixedRate,
    watched: &[Watched],
    figures: &mut Figures,
) -> anyhow::Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let receiver_addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut receiver = tokio::process::Command::new("nice")
        .args(["-n", "19"])
        .arg(std::env::current_exe()?)
        .args(["receive", "--listen", &receiver_addr.to_string()])
        .kill_on_drop(true)
        .spawn()?;
    let mut to_receiver = Conn::new(receiver_addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    while to_receiver.connect().await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the webhook receiver did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let admin = api.token(tenant, Role::Admin, "bench-admin")?;
    let mut conn = Conn::new(api.addr);
    let endpoint = "/v1/admin/webhooks/bench-receiver";
    let body =
        serde_json::json!({"url": format!("http://{receiver_addr}/hook"), "event_types": ["callback.status_changed"]});
    let created = conn.send(&request("PUT", api.addr, endpoint, Some(&admin), None, &body.to_string())).await?;
    anyhow::ensure!(
        created.status == 201,
        "creating the webhook endpoint answered {}: {}",
        created.status,
        created.json()
    );
    let secret = created.json()["secret"].as_str().unwrap_or_default().to_owned();
    to_receiver.send(&request("POST", receiver_addr, "/secret", None, None, &secret)).await?;

    let tokens = api.courier_tokens(tenant, couriers)?;
    let ids =
        load::fixed_rate(api, &[], &tokens, target.rate, target.connections, target.duration, watched, figures).await?;
    // `fixed_rate` returns once every accepted callback is terminal.
    let load_ended_ms = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let db = load::db(&api.config).await?;
    let expected: i64 = db.query_one("SELECT count(*) FROM events WHERE subject_id = ANY($1)", &[&ids]).await?.get(0);
    let deadline = Instant::now() + Duration::from_secs(300);
    let stats = loop {
        let stats = to_receiver.send(&request("GET", receiver_addr, "/stats", None, None, "")).await?.json();
        if stats["distinct"].as_i64() >= Some(expected) || Instant::now() >= deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = conn.send(&request("DELETE", api.addr, endpoint, Some(&admin), None, "")).await?;
    let _ = receiver.kill().await;

    let num = |key: &str| stats[key].as_i64().unwrap_or(0);
    eprintln!("webhooks: {} of {expected} events delivered", num("distinct"));
    figures.count("events_expected", expected as u64);
    figures.count("events_delivered", num("distinct") as u64);
    figures.count("duplicates", (num("received") - num("distinct")).max(0) as u64);
    figures.count("bad_signatures", num("bad_signatures") as u64);
    if let (Some(first), Some(last)) = (stats["first_ms"].as_i64(), stats["last_ms"].as_i64()) {
        figures.num("deliveries_per_s", num("received") as f64 / ((last - first) as f64 / 1000.0).max(1e-3));
        // 0 when the deliveries kept up: the last came before the last callback was terminal.
        figures.num("drained_after_s", ((last - load_ended_ms) as f64 / 1000.0).max(0.0));
    }
    for name in ["p50", "p90", "p99", "max"] {
        figures.num(&format!("lag_{name}_ms"), num(&format!("lag_{name}_us")) as f64 / 1000.0);
    }
    figures.count("lag_samples", num("received") as u64);
    Ok(())
}

/// Opens `streams` live streams spread over `calls` calls that ring for minutes (a courier phone
/// that never answers), then measures: dialback's resident memory and open files per stream, and,
/// the calls all canceled at once, how long until every stream has its final event (`streams_*`).
pub async fn streams(
    api: &Api,
    tenant: &str,
    pbx_port: u16,
    pid: u32,
    calls: usize,
    streams: usize,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    // A company of its own whose courier's phone (ending in 9) rings until the call is canceled.
    let admin = api.token(tenant, Role::Admin, "bench-admin")?;
    let mut conn = Conn::new(api.addr);
    let mut settings: serde_json::Value = serde_json::from_str(&load::pbx_settings(pbx_port, "from-courier"))?;
    settings["originate_timeout_s"] = 120.into();
    let setup = [
        ("/v1/admin/pbx", settings.to_string()),
        ("/v1/admin/couriers/ringing", r#"{"phone":"+79001234569","name":"Rings on"}"#.to_owned()),
        (
            "/v1/admin/orders/ringing-order",
            r#"{"courier_id":"ringing","phones":["+79161234567"],"state":"active"}"#.to_owned(),
        ),
    ];
    for (path, body) in setup {
        let res = conn.send(&request("PUT", api.addr, path, Some(&admin), None, &body)).await?;
        anyhow::ensure!((200..300).contains(&res.status), "{path} answered {}: {}", res.status, res.json());
    }
    let courier = api.token(tenant, Role::Courier, "ringing")?;
    let tap = r#"{"target":"client","to":"+79161234567","order_id":"ringing-order"}"#;
    let mut ids = Vec::with_capacity(calls);
    for _ in 0..calls {
        let res = conn.send(&request("POST", api.addr, "/v1/callbacks", Some(&courier), None, tap)).await?;
        anyhow::ensure!(res.status == 202, "a tap answered {}: {}", res.status, res.json());
        ids.push(res.json()["id"].as_str().unwrap_or_default().to_owned());
    }
    let (rss_before, fds_before) = (stats::rss_kib(pid)?, stats::fds(pid)?);
    eprintln!("streams: opening {streams} live streams on {calls} ringing calls, {OPENING_AT_ONCE} at a time");
    let opened = Instant::now();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, bool)>();
    // Opened a few hundred at a time, as apps reconnecting after a network blip would; ten thousand
    // connects at once would overflow the listen queue and measure SYN retries instead.
    let opening = Arc::new(tokio::sync::Semaphore::new(OPENING_AT_ONCE));
    for n in 0..streams {
        let path = format!("/v1/callbacks/{}/events", ids[n % calls]);
        let (courier, addr, ready, done) = (courier.clone(), api.addr, ready_tx.clone(), done_tx.clone());
        let permit = opening.clone().acquire_owned().await?;
        tokio::spawn(async move {
            if let Err(e) = follow(addr, &path, &courier, permit, ready, done).await {
                eprintln!("  a stream failed: {e}");
            }
        });
    }
    drop((ready_tx, done_tx));
    let mut ready = 0;
    while ready < streams {
        match tokio::time::timeout(Duration::from_secs(60), ready_rx.recv()).await {
            Ok(Some(())) => ready += 1,
            _ => break,
        }
    }
    anyhow::ensure!(ready == streams, "only {ready} of {streams} streams got their first event");
    let open_s = opened.elapsed().as_secs_f64();
    // Let the allocator and the kernel settle before reading the memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_open, fds_open) = (stats::rss_kib(pid)?, stats::fds(pid)?);
    figures.count("streams_open", streams as u64);
    figures.count("streams_calls", calls as u64);
    figures.num("streams_open_s", open_s);
    figures.num("streams_rss_kib_per_stream", rss_open.saturating_sub(rss_before) as f64 / streams as f64);
    figures.num("streams_fds_per_stream", fds_open.saturating_sub(fds_before) as f64 / streams as f64);
    figures.count("streams_rss_kib", rss_open);

    // The calls end together (all canceled at once): every stream gets `canceled` and ends.
    let canceled = Instant::now();
    let cancels: Vec<_> = ids
        .iter()
        .map(|id| {
            let (addr, path, courier) = (api.addr, format!("/v1/callbacks/{id}"), courier.clone());
            tokio::spawn(async move {
                Conn::new(addr).send(&request("DELETE", addr, &path, Some(&courier), None, "")).await
            })
        })
        .collect();
    for cancel in cancels {
        let res = cancel.await??;
        anyhow::ensure!(res.status == 200, "cancel answered {}: {}", res.status, res.json());
    }
    let mut last = canceled;
    let mut ended = 0;
    let mut canceled_events = 0;
    while let Ok(Some((at, was_cancel))) = tokio::time::timeout(Duration::from_secs(60), done_rx.recv()).await {
        last = last.max(at);
        ended += 1;
        canceled_events += u64::from(was_cancel);
    }
    figures.count("streams_final_canceled", canceled_events);
    figures.count("streams_ended_with_final_event", ended);
    figures.num("streams_fan_out_ms", (last - canceled).as_secs_f64() * 1000.0);
    Ok(())
}

/// One live stream: tells `ready` when its first event came (and gives its opening permit
/// back), `done` when its final one did (and whether that was `canceled`).
async fn follow(
    addr: SocketAddr,
    path: &str,
    token: &str,
    permit: tokio::sync::OwnedSemaphorePermit,
    ready: tokio::sync::mpsc::UnboundedSender<()>,
    done: tokio::sync::mpsc::UnboundedSender<(Instant, bool)>,
) -> anyhow::Result<()> {
    let mut permit = Some(permit);
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes())
        .await?;
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            anyhow::bail!("the stream closed before its final event");
        }
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        if permit.is_some() && text.contains("data: ") {
            permit = None;
            let _ = ready.send(());
        }
        let terminal = ["canceled", "completed", "failed", "refused", "unknown"]
            .into_iter()
            .find(|status| text.contains(&format!("\"status\":\"{status}\"")));
        if let Some(status) = terminal {
            let _ = done.send((Instant::now(), status == "canceled"));
            return Ok(());
        }
        // Only the newest part is needed to find the next event.
        if seen.len() > 64 * 1024 {
            seen.drain(..seen.len() - 8 * 1024);
        }
    }
}
