//! Builds the application from a config: pool, migrations, HTTP server bound to its port.
//! Tests bind port 0 and read the real port back.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use tokio_util::sync::CancellationToken;

use crate::ami::client::EventSink;
use crate::ami::pool::AmiPool;
use crate::auth::Verifier;
use crate::callbacks::{CallbackService, Tracker};
use crate::cluster::Cluster;
use crate::companies::Companies;
use crate::config::Config;
use crate::dialplan_watch::DialplanWatch;
use crate::events::Bus;
use crate::http::state::AppState;
use crate::limits::Limiters;
use crate::recordings::Recordings;
use crate::return_calls::tracker::ReturnTracker;
use crate::return_calls::ReturnCalls;
use crate::telemetry::Chain;
use crate::webhooks::Webhooks;

pub struct Application {
    port: u16,
    agi_port: Option<u16>,
    server: Server,
    cluster: Arc<Cluster>,
    heartbeat: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
    recordings_scheduler: tokio::task::JoinHandle<()>,
    deliverer: tokio::task::JoinHandle<()>,
    agi_server: Option<tokio::task::JoinHandle<()>>,
    /// Its routed calls' journal writes are waited for at shutdown.
    return_calls: ReturnCalls,
    /// Callbacks' and return calls' (callbacks/takeover.rs, return_calls/takeover.rs).
    takeover: [tokio::task::JoinHandle<()>; 2],
}

impl Application {
    /// Migrates the database (under the advisory lock), builds the pool and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let applied = crate::store::migrations::run_url(&config.database_url, &config.db)
            .await
            .map_err(|e| anyhow::anyhow!("migrating {}: {e:#}", crate::config::redact_url(&config.database_url)))?;
        if !applied.is_empty() {
            tracing::info!(?applied, "database migrated");
        }
        let db = crate::store::pool(&config.database_url, &config.db)?;
        let bus = Bus::default();
        let verifier = Arc::new(Verifier::new(&config, Some(db.clone()))?);
        let stop = CancellationToken::new();
        // This process among those sharing the database (src/cluster.rs).
        let process = uuid::Uuid::now_v7();
        tracing::info!(%process, "dialback process id");
        let lost_after = Duration::from_secs(config.ami.lost_after_s);
        let tracker = Tracker::start(db.clone(), bus.clone(), lost_after, process);
        let return_tracker = ReturnTracker::start(db.clone(), bus.clone());
        // Every company's AMI connection reports to both trackers: callbacks by their ChannelId,
        // return calls by their inbound channel's Uniqueid.
        let sink: EventSink = {
            let (callbacks, returns) = (tracker.sink(), return_tracker.clone());
            Arc::new(move |tenant, signal| {
                returns.signal(tenant, &signal);
                callbacks(tenant, signal);
            })
        };
        let pool = AmiPool::new(config.ami.pool(), Some(sink));
        tracker.hang_up_through(&pool);
        pool.spawn_janitor(stop.clone());
        let limiters = Limiters::new(&config.rate);
        limiters.spawn_janitor(stop.clone());
        let cluster = Cluster::new(process, db.clone(), pool.clone(), bus.clone(), limiters.clone());
        let heartbeat = cluster.spawn_heartbeat(stop.clone());
        let cache_ttl = Duration::from_secs(config.db.cache_ttl_s);
        let callbacks = CallbackService::new(
            db.clone(),
            cluster.clone(),
            tracker,
            config.secrets_key(),
            Duration::from_millis(config.ami.connect_timeout_ms),
            cache_ttl,
        );
        let takeover = callbacks.spawn_takeover(stop.clone());
        let return_calls = ReturnCalls::new(
            db.clone(),
            config.secrets_key(),
            callbacks.clone(),
            cluster.clone(),
            return_tracker,
            cache_ttl,
        );
        spawn_change_listener(&config, callbacks.clone(), return_calls.clone(), verifier.clone(), stop.clone());
        let return_takeover = return_calls.spawn_takeover(stop.clone());
        let (agi_server, agi_address) = match config.agi.listen.as_str() {
            "" => (None, None),
            listen => {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .map_err(|e| anyhow::anyhow!("FastAGI cannot listen on {listen} (DIALBACK_AGI__LISTEN): {e}"))?;
                let bound = listener.local_addr()?;
                let public = match config.agi.public_address.as_str() {
                    "" => bound.to_string(),
                    given => given.to_owned(),
                };
                tracing::info!(listen = %bound, public, "FastAGI listening");
                let deadline = Duration::from_millis(config.agi.deadline_ms);
                let server =
                    crate::agi::spawn(listener, return_calls.clone(), cluster.limiters.clone(), deadline, stop.clone());
                (Some(server), Some((public, bound.port())))
            }
        };
        let agi_public = agi_address.as_ref().map(|(public, _)| public.clone());
        let dialplan_watch = DialplanWatch::new(
            db.clone(),
            cluster.clone(),
            callbacks.clone(),
            return_calls.clone(),
            agi_public.clone(),
        );
        dialplan_watch.spawn(Duration::from_secs(config.ami.dialplan_check_s), stop.clone());
        let recording_storage = crate::recordings::s3::open_storage(&config).await?;
        let companies = Arc::new(Companies::new(
            db.clone(),
            config.secrets_key(),
            verifier.clone(),
            config.issuers.global_keys,
            recording_storage.clone(),
        ));
        let recordings = Recordings::new(
            db.clone(),
            recording_storage,
            config.secrets_key(),
            config.recordings.clone(),
            bus.clone(),
        );
        recordings.sweep_partials().await;
        let recordings_scheduler = recordings.spawn_scheduler(stop.clone());
        let webhooks = Webhooks::new(db.clone(), config.secrets_key(), config.webhooks.clone(), bus.clone())?;
        let deliverer = webhooks.spawn_deliverer(stop.clone());
        // Logged in to the PBXs in use before the first request can come.
        callbacks.warm_up(Duration::from_millis(config.ami.connect_timeout_ms)).await;
        let listener = TcpListener::bind(config.listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {} (DIALBACK_LISTEN): {e}", config.listen))?;
        let port = listener.local_addr()?.port();
        let config = Arc::new(config);
        let state = web::Data::new(AppState {
            config: config.clone(),
            db,
            metrics: crate::telemetry::metrics(),
            verifier,
            companies,
            cluster: cluster.clone(),
            callbacks,
            recordings,
            webhooks,
            return_calls: return_calls.clone(),
            dialplan_watch,
            agi_address: agi_public,
        });
        let body_limit = config.http.body_limit_bytes;
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(crate::http::request_context))
                .configure(|cfg| crate::http::configure(cfg, body_limit))
        })
        .shutdown_timeout(config.http.shutdown_timeout_s)
        .shutdown_signal(told_to_stop(cluster.clone()))
        .client_request_timeout(Duration::from_secs(10));
        if config.http.workers > 0 {
            server = server.workers(config.http.workers);
        }
        let server = server.listen(listener)?.run();
        tracing::info!(listen = %config.listen, port, "dialback listening");
        // Counted in the others' shares of the limits only now that it accepts requests.
        cluster.start_serving().await;
        let agi_port = agi_address.map(|(_, port)| port);
        let takeover = [takeover, return_takeover];
        Ok(Self {
            port,
            agi_port,
            server,
            cluster,
            heartbeat,
            stop,
            recordings_scheduler,
            deliverer,
            agi_server,
            return_calls,
            takeover,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The FastAGI server's port, when it serves one.
    pub fn agi_port(&self) -> Option<u16> {
        self.agi_port
    }

    /// Serves until SIGINT/SIGTERM, then finishes in-flight requests (up to the shutdown timeout).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        self.stop.cancel();
        // Downloads in progress are dropped; their claims lapse and another run takes them over.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.recordings_scheduler).await;
        // Deliveries being sent finish or lapse; their leases let another process take them over.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.deliverer).await;
        if let Some(agi) = self.agi_server {
            let _ = agi.await;
        }
        // Calls routed already are in the journal (and followed) before they are handed over.
        self.return_calls.finish_journal_writes(Duration::from_secs(5)).await;
        // The calls this process follows go to the others before its AMI sessions log off, and
        // are listened to until the others have claimed them (cluster::HANDOVER_WAIT and MARGIN).
        let handover = crate::cluster::HANDOVER_WAIT + crate::cluster::HANDOVER_MARGIN + Duration::from_secs(5);
        let _ = tokio::time::timeout(handover, futures_util::future::join_all(self.takeover)).await;
        let _ = self.heartbeat.await;
        self.cluster.leave().await;
        self.cluster.ami.close_all().await;
        result
    }
}

/// Resolves on SIGTERM or SIGINT, once this process has said it is stopping (the others count it
/// out of their shares at once, cluster.rs `stop_serving`): only then does the server stop
/// accepting and finish the requests in flight, so a balancer's retries find the others' shares
/// whole. A second signal, a second or more after the first, ends the process at once, the way
/// SIGKILL would (its calls are taken over as a dead process's); one sooner is the same stop told
/// twice (Ctrl-C reaches a whole process group, and a script's trap may send SIGTERM too).
/// SIGQUIT keeps its default: the process ends at once.
async fn told_to_stop(cluster: Arc<Cluster>) {
    use tokio::signal::unix::{signal, Signal, SignalKind};
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %Chain(&e), "cannot listen for SIGTERM and SIGINT; stop this process with SIGKILL");
            return std::future::pending().await;
        }
    };
    // The signal's name and number (the exit status of a process it ends is 128 + the number).
    async fn next(term: &mut Signal, int: &mut Signal) -> (&'static str, i32) {
        tokio::select! { _ = term.recv() => ("SIGTERM", 15), _ = int.recv() => ("SIGINT", 2) }
    }
    let (told, _) = next(&mut term, &mut int).await;
    let told_at = tokio::time::Instant::now();
    tracing::info!(signal = told, "stopping: finishing the requests in flight, then handing the calls over");
    cluster.stop_serving().await;
    tokio::spawn(async move {
        let (again, number) = loop {
            let again = next(&mut term, &mut int).await;
            if told_at.elapsed() >= Duration::from_secs(1) {
                break again;
            }
            tracing::info!(signal = again.0, "told to stop again within a second: stopping as before");
        };
        tracing::warn!(signal = again, "told to stop again: stopping at once; the other processes take the calls over");
        std::process::exit(128 + number);
    });
}

/// Follows the changes other processes announce (store/notify.rs) and drops what they make stale;
/// while it cannot listen, caches lapse within `db.cache_ttl_s`, and everything is dropped each
/// time it listens again (it may have missed some).
fn spawn_change_listener(
    config: &Config,
    callbacks: Arc<CallbackService>,
    return_calls: ReturnCalls,
    verifier: Arc<Verifier>,
    stop: CancellationToken,
) {
    use crate::store::notify::{self, Change, Heard};
    let (url, db) = (config.database_url.clone(), config.db.clone());
    tokio::spawn(async move {
        let mut attempt = 0u32;
        while !stop.is_cancelled() {
            let heard = tokio::select! {
                heard = notify::listen(&url, &db) => heard,
                _ = stop.cancelled() => break,
            };
            let mut heard = match heard {
                Ok(heard) => heard,
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(
                        error = format!("{e:#}"),
                        attempt,
                        "cannot listen for settings changes; caches lapse meanwhile"
                    );
                    let pause = Duration::from_millis(250 * 2u64.pow(attempt.min(5)));
                    tokio::select! { _ = tokio::time::sleep(pause) => continue, _ = stop.cancelled() => break }
                }
            };
            loop {
                let next = tokio::select! { next = heard.recv() => next, _ = stop.cancelled() => return };
                match next {
                    Some(Heard::Listening) => {
                        attempt = 0;
                        callbacks.forget_cached_settings();
                        return_calls.forget_rules();
                        verifier.forget(None);
                        tracing::info!("listening for settings changes");
                    }
                    Some(Heard::Change(Change::PbxSettings { tenant })) => {
                        tracing::debug!(%tenant, "PBX settings changed");
                        callbacks.forget_settings(&tenant);
                    }
                    Some(Heard::Change(Change::ReturnCallRules { tenant })) => {
                        tracing::debug!(%tenant, "return-call rules changed");
                        return_calls.forget_rules();
                    }
                    Some(Heard::Change(Change::Company { tenant })) => {
                        tracing::debug!(%tenant, "company changed by the operator");
                        verifier.forget(Some(&tenant));
                    }
                    Some(Heard::Lost(why)) => {
                        tracing::warn!(error = why, "stopped listening for settings changes; listening again");
                        break;
                    }
                    None => break,
                }
            }
        }
    });
}
