//! Return calls: answers the PBX's "where does this caller go?" (over FastAGI, `crate::agi`, or
//! HTTP) by the company's rules and its orders (`domain::return_call::decide`), writes each call
//! to the journal with its first event right after answering (the caller never waits for it), and
//! follows the calls sent to couriers ([`tracker`]).
//!
//! The company is known by its key, which the PBX sends with each request: a request without a
//! valid key (or from an address the company does not allow) gets no route, which the dialplan
//! takes as "the office".

pub mod takeover;
pub mod tracker;
pub mod view;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use base64::Engine;
use uuid::Uuid;

use crate::callbacks::{CallbackService, PlaceError};
use crate::cluster::Cluster;
use crate::crypto::SecretsKey;
use crate::domain::company::TenantId;
use crate::domain::phone;
use crate::domain::return_call::{decide, Caller, Decision, ReturnCallSettings, ReturnState, RouteKind};
use crate::domain::settings::default_region;
use crate::store::return_calls::{ReturnCallRow, StoredRules};
use crate::store::{self, StoreError};
use crate::telemetry::Chain;
use tracker::ReturnTracker;

/// How long a route to a courier waits for the company's AMI session to log in (only when it is
/// logging in; a session that failed answers at once), well within `agi.deadline_ms` (1000).
const SESSION_WAIT: Duration = Duration::from_millis(500);
/// A routed call's journal write is tried this many times, the first retry after this wait and
/// each next after twice the last (about 25 s in all): the caller has been routed already.
const JOURNAL_TRIES: u32 = 8;
const JOURNAL_FIRST_RETRY: Duration = Duration::from_millis(200);

/// The return-call service. Cheap to clone.
#[derive(Clone)]
pub struct ReturnCalls {
    db: deadpool_postgres::Pool,
    secrets: SecretsKey,
    /// The company's PBX session and settings, as callbacks read them.
    callbacks: Arc<CallbackService>,
    /// This process among the others, its AMI sessions, the event bus.
    cluster: Arc<Cluster>,
    pub tracker: ReturnTracker,
    /// By the key's hash: the company and its rules.
    rules: moka::sync::Cache<String, Arc<StoredRules>>,
    /// The journal writes of calls routed and answered already.
    journal_writes: tokio_util::task::TaskTracker,
    /// Where they run: the runtime this service was made on, which outlives the HTTP workers (a
    /// route asked over HTTP is answered on a worker's runtime, which stops with the server).
    runtime: tokio::runtime::Handle,
}

/// A request for a route, from the PBX.
#[derive(Debug, Clone, Default)]
pub struct RouteRequest {
    pub key: Option<String>,
    /// The caller's number, as the trunk sent it.
    pub caller: String,
    /// The number called (the company's DID).
    pub did: Option<String>,
    /// The Uniqueid of the inbound channel, to follow the call by.
    pub uniqueid: Option<String>,
    /// The PBX's address.
    pub peer: Option<IpAddr>,
}

/// The answer: what the dialplan's variables are set to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Route {
    /// The dial string (`DIALBACK_ROUTE`); empty: the office.
    pub route: String,
    pub kind: &'static str,
    pub call_id: Option<Uuid>,
    pub order_id: Option<String>,
    pub courier_id: Option<String>,
}

impl Route {
    /// No route: the office (when dialback cannot or may not decide).
    pub fn office() -> Route {
        Route { kind: RouteKind::Office.as_str(), ..Default::default() }
    }

    /// The channel variables the dialplan reads, in the order they are set.
    pub fn variables(&self) -> [(&'static str, String); 5] {
        [
            ("DIALBACK_ROUTE", self.route.clone()),
            ("DIALBACK_ROUTE_KIND", self.kind.to_owned()),
            ("DIALBACK_CALL_ID", self.call_id.map(|id| id.to_string()).unwrap_or_default()),
            ("DIALBACK_ORDER_ID", self.order_id.clone().unwrap_or_default()),
            ("DIALBACK_COURIER_ID", self.courier_id.clone().unwrap_or_default()),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// No company has this key (or none was given).
    #[error("no company has this key")]
    BadKey,
    /// The company does not allow requests from this address.
    #[error("the company does not allow requests from {0}")]
    AddressNotAllowed(IpAddr),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Settings(#[from] PlaceError),
}

impl RouteError {
    /// A refusal (no valid key, an address not allowed) counts against the PBX's address like a
    /// failed login, and is logged until that address is over the limit (then it would flood the
    /// log). Faults were logged where they happened.
    pub fn count_and_log(&self, limiters: &crate::limits::Limiters, request: &RouteRequest) {
        if !matches!(self, RouteError::BadKey | RouteError::AddressNotAllowed(_)) {
            return;
        }
        let Some(peer) = request.peer else { return };
        let keyless = request.key.as_deref().is_none_or(str::is_empty);
        match limiters.auth_failure(peer) {
            // A line written for another integration (`AGI(agi://host/...)` without `key=`) asks
            // dialback too: say what replaces it.
            Ok(()) if keyless && matches!(self, RouteError::BadKey) => tracing::warn!(peer = %peer,
                caller = %request.caller, did = request.did.as_deref(),
                "return-call request without dialback's key: the PBX's dialplan has an AGI line of its own (an earlier \
                 integration's?) that sends the call here; replace it with Goto(dialback-inbound,${{EXTEN}},1), the \
                 context of the dialplan dialback generates, which asks with the company's key. The call goes to \
                 the office"),
            Ok(()) => tracing::warn!(peer = %peer, caller = %request.caller, error = %self,
                "return-call request refused: the dialplan sends the call to the office"),
            Err(limited) => tracing::debug!(peer = %peer, error = %self, %limited, "return-call request refused"),
        }
    }
}

/// A new key: 24 random bytes, URL-safe base64 (it goes into a dialplan URL).
fn new_key() -> String {
    let mut bytes = [0u8; 24];
    SystemRandom::new().fill(&mut bytes).expect("system randomness");
    BASE64URL.encode(bytes)
}

/// The row is in the journal already (its id is the primary key).
fn is_duplicate(e: &StoreError) -> bool {
    matches!(e, StoreError::Query(q) if q.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION))
}

/// What a key is looked up by.
fn key_hash(key: &str) -> String {
    hex::encode(digest::digest(&digest::SHA256, key.as_bytes()))
}

fn key_context(tenant: &TenantId) -> String {
    format!("return-calls:{tenant}")
}

/// A company's rules and its key, as the admin sees them.
pub struct RulesView {
    pub rules: ReturnCallSettings,
    pub key: String,
    pub updated_at: time::OffsetDateTime,
}

impl ReturnCalls {
    /// `tracker` follows the calls it routes (started first: the AMI connections report to it).
    /// Made on the runtime that runs until dialback has stopped: the journal writes run there.
    pub fn new(
        db: deadpool_postgres::Pool,
        secrets: SecretsKey,
        callbacks: Arc<CallbackService>,
        cluster: Arc<Cluster>,
        tracker: ReturnTracker,
        cache_ttl: Duration,
    ) -> Self {
        let rules = moka::sync::Cache::builder().max_capacity(100_000).time_to_live(cache_ttl).build();
        let (journal_writes, runtime) = (Default::default(), tokio::runtime::Handle::current());
        ReturnCalls { db, secrets, callbacks, cluster, tracker, rules, journal_writes, runtime }
    }

    /// The company's rules and key; a company that has none yet gets the defaults (off) and a key.
    pub async fn rules(&self, tenant: &TenantId) -> Result<RulesView, RouteError> {
        let db = store::client(&self.db).await?;
        let stored = match store::return_calls::rules(&db, tenant).await? {
            Some(stored) => stored,
            None => self.save(&db, tenant, &ReturnCallSettings::default()).await?,
        };
        self.view(stored)
    }

    pub async fn put_rules(&self, tenant: &TenantId, rules: &ReturnCallSettings) -> Result<RulesView, RouteError> {
        let db = store::client(&self.db).await?;
        let stored = self.save(&db, tenant, rules).await?;
        self.rules.invalidate(&stored.key_hash);
        self.announce(&db, tenant).await;
        tracing::info!(%tenant, enabled = rules.enabled, window_hours = rules.window_hours, "return-call rules saved");
        self.view(stored)
    }

    /// A new key; the old one stops working at once, in every process.
    pub async fn rotate_key(&self, tenant: &TenantId) -> Result<RulesView, RouteError> {
        let db = store::client(&self.db).await?;
        if let Some(old) = store::return_calls::rules(&db, tenant).await? {
            self.rules.invalidate(&old.key_hash);
        }
        let key = new_key();
        let stored = match store::return_calls::rotate_key(
            &db,
            tenant,
            &key_hash(&key),
            &self.secrets.encrypt(&key, &key_context(tenant)),
        )
        .await?
        {
            Some(stored) => stored,
            None => self.save(&db, tenant, &ReturnCallSettings::default()).await?,
        };
        self.announce(&db, tenant).await;
        tracing::info!(%tenant, "return-call key rotated");
        self.view(stored)
    }

    /// Tells every process that `tenant`'s rules changed. The save stands when this fails: the
    /// others' caches then lapse within `db.cache_ttl_s`.
    async fn announce(&self, db: &store::Client, tenant: &TenantId) {
        let change = store::notify::Change::ReturnCallRules { tenant: tenant.clone() };
        if let Err(e) = store::notify::announce(db, &change).await {
            tracing::warn!(%tenant, error = %Chain(&e), "could not announce the return-call rules change");
        }
    }

    /// Every process announced a change to some company's rules (cached by key, so all go), or
    /// changes may have been missed.
    pub fn forget_rules(&self) {
        self.rules.invalidate_all();
    }

    async fn save(
        &self,
        db: &store::Client,
        tenant: &TenantId,
        rules: &ReturnCallSettings,
    ) -> Result<StoredRules, RouteError> {
        store::admin::ensure_tenant(db, tenant).await?;
        let key = new_key();
        let enc = self.secrets.encrypt(&key, &key_context(tenant));
        Ok(store::return_calls::put_rules(db, tenant, rules, &key_hash(&key), &enc).await?)
    }

    fn view(&self, stored: StoredRules) -> Result<RulesView, RouteError> {
        let key = self
            .secrets
            .decrypt(&stored.key_enc, &key_context(&stored.tenant_id))
            .map_err(|_| RouteError::Settings(PlaceError::SecretUndecryptable))?;
        Ok(RulesView { rules: stored.rules, key, updated_at: stored.updated_at })
    }

    /// Where a caller goes. Never fails toward the PBX: a bad key, an address not allowed or a
    /// fault is logged and answered with the office (`Err` says which, for the HTTP answer).
    pub async fn route(&self, request: &RouteRequest) -> Result<Route, RouteError> {
        let started = std::time::Instant::now();
        let result = self.decide_and_log(request).await;
        metrics::histogram!("dialback_return_call_route_seconds").record(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(route) => route.kind,
            Err(RouteError::BadKey | RouteError::AddressNotAllowed(_)) => "refused",
            Err(_) => "error",
        };
        metrics::counter!("dialback_return_call_routes_total", "outcome" => outcome).increment(1);
        if let Err(e @ (RouteError::Store(_) | RouteError::Settings(_))) = &result {
            tracing::error!(peer = ?request.peer, error = %Chain(e), "return-call decision failed; the office takes the call");
        }
        result
    }

    async fn decide_and_log(&self, request: &RouteRequest) -> Result<Route, RouteError> {
        let key = request.key.as_deref().filter(|k| !k.is_empty()).ok_or(RouteError::BadKey)?;
        let rules = self.rules_by_key(key).await?.ok_or(RouteError::BadKey)?;
        if let Some(peer) = request.peer.filter(|peer| !rules.allowed.admit(*peer)) {
            return Err(RouteError::AddressNotAllowed(peer));
        }
        let tenant = &rules.tenant_id;
        let saved = self.callbacks.settings(tenant).await?;
        let pbx = saved.as_ref().map(|(settings, _)| settings.clone());
        let region = pbx.as_ref().map_or_else(default_region, |p| p.default_region.clone());
        let number = phone::parse(&request.caller, &region).ok();
        let now = store::now();
        let mut caller = Caller { number, ..Default::default() };
        if let (true, Some(number)) = (rules.rules.enabled, &caller.number) {
            let db = store::client(&self.db).await?;
            let (orders, courier) =
                store::return_calls::caller_facts(&db, tenant, &number.e164, rules.rules.window_hours).await?;
            caller.orders = orders;
            caller.courier_id = courier;
        }
        let decision = decide(&rules.rules, pbx.as_ref(), &caller, now);
        let row = self.journal_row(tenant, request, &caller, &decision, now);
        tracing::info!(return_call_id = %row.id, %tenant, caller = row.caller.as_deref().unwrap_or("withheld"),
            route_kind = decision.kind.as_str(), route_reason = decision.reason.as_str(),
            order_id = decision.order_id.as_deref(), courier_id = decision.courier_id.as_deref(), "return call routed");
        if decision.kind == RouteKind::Courier {
            // Its outcome comes on the company's AMI connection: open it if it is not, and give a
            // session still logging in a moment, so it hears the courier answer (which the PBX
            // can report within milliseconds of this answer). Up already: no wait.
            if let Some((pbx, secret)) = saved {
                let client = self.cluster.ami.client(tenant, &crate::callbacks::pbx_login(&pbx, secret));
                if let Err(e) = client.wait_up(SESSION_WAIT).await {
                    tracing::warn!(return_call_id = %row.id, %tenant, error = %Chain(&e),
                        "return call routed while the company's AMI session is not up: its outcome may not be heard");
                }
            }
        }
        // The caller is not held for the journal: the route is answered now and the call written
        // right after (the tracker keeps what the PBX says of the call meanwhile, tracker.rs).
        let this = self.clone();
        let journaled = row.clone();
        self.journal_writes.spawn_on(async move { this.journal(journaled).await }, &self.runtime);
        Ok(Route {
            route: decision.route,
            kind: decision.kind.as_str(),
            call_id: Some(row.id),
            order_id: decision.order_id,
            courier_id: decision.courier_id,
        })
    }

    /// Writes a routed call to the journal with its first event, trying again while the database
    /// is away (the route was answered already; another error is logged at once), then follows it
    /// when it went to a courier.
    async fn journal(&self, row: ReturnCallRow) {
        let event = view::event_data(&row);
        let mut wait = JOURNAL_FIRST_RETRY;
        let mut tries = 1;
        let deliveries = loop {
            let written = async {
                let db = store::client(&self.db).await?;
                store::return_calls::insert(&db, &row, &event, self.cluster.process).await
            }
            .await;
            match written {
                Ok(deliveries) => break deliveries,
                // A try whose commit went through but whose answer was lost: the row is there (its
                // deliveries, if any, are found by the deliverer's next poll).
                Err(e) if tries > 1 && is_duplicate(&e) => break 0,
                Err(e) if e.is_unavailable() && tries < JOURNAL_TRIES => {
                    tracing::warn!(return_call_id = %row.id, tenant = %row.tenant_id, tries, error = %Chain(&e),
                        "a routed return call could not be written to the journal yet; trying again");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    tries += 1;
                }
                Err(e) => {
                    metrics::counter!("dialback_return_call_journal_failures_total").increment(1);
                    tracing::error!(return_call_id = %row.id, tenant = %row.tenant_id, tries,
                        caller = row.caller.as_deref().unwrap_or("withheld"), did = row.did.as_deref(),
                        route_kind = row.kind.as_str(), route_reason = row.reason.as_str(),
                        order_id = row.order_id.as_deref(), courier_id = row.courier_id.as_deref(),
                        agi_uniqueid = row.agi_uniqueid.as_deref(), error = %Chain(&e),
                        "a routed return call could not be written to the journal: the caller was routed, the \
                         journal does not have the call (this line is its record)");
                    return;
                }
            }
        };
        if deliveries > 0 {
            self.cluster.bus.deliveries_queued();
        }
        if row.kind == RouteKind::Courier {
            let tenant = row.tenant_id.clone();
            self.tracker.follow(row, self.cluster.ami.hold(&tenant));
        }
    }

    /// Waits (up to `limit`) for the journal writes of calls already routed: at shutdown, before
    /// the calls this process follows are handed over.
    pub async fn finish_journal_writes(&self, limit: Duration) {
        self.journal_writes.close();
        if tokio::time::timeout(limit, self.journal_writes.wait()).await.is_err() {
            tracing::warn!(
                pending = self.journal_writes.len(),
                "stopping with routed return calls not yet in the journal"
            );
        }
    }

    fn journal_row(
        &self,
        tenant: &TenantId,
        request: &RouteRequest,
        caller: &Caller,
        decision: &Decision,
        now: time::OffsetDateTime,
    ) -> ReturnCallRow {
        ReturnCallRow {
            id: Uuid::now_v7(),
            tenant_id: tenant.to_owned(),
            caller: caller.number.as_ref().map(|n| n.e164.clone()).or_else(|| {
                Some(request.caller.chars().filter(|c| !c.is_control()).take(64).collect::<String>())
                    .filter(|c| !c.is_empty())
            }),
            did: request.did.clone(),
            kind: decision.kind,
            reason: decision.reason,
            route: decision.route.clone(),
            order_id: decision.order_id.clone(),
            courier_id: decision.courier_id.clone(),
            agi_uniqueid: request.uniqueid.clone(),
            created_at: now,
            updated_at: now,
            sequence: 1,
            state: ReturnState::decided(decision.kind, now),
        }
    }

    async fn rules_by_key(&self, key: &str) -> Result<Option<Arc<StoredRules>>, StoreError> {
        let hash = key_hash(key);
        if let Some(hit) = self.rules.get(&hash) {
            return Ok(Some(hit));
        }
        let db = store::client(&self.db).await?;
        let Some(stored) = store::return_calls::rules_by_key(&db, &hash).await? else { return Ok(None) };
        let stored = Arc::new(stored);
        self.rules.insert(hash, stored.clone());
        Ok(Some(stored))
    }

    /// One return call, as stored.
    pub async fn get(&self, tenant: &TenantId, id: Uuid) -> Result<Option<ReturnCallRow>, StoreError> {
        let db = store::client(&self.db).await?;
        store::return_calls::get(&db, tenant, id).await
    }

    pub async fn list(
        &self,
        tenant: &TenantId,
        filter: &store::return_calls::ListFilter,
    ) -> Result<Vec<ReturnCallRow>, StoreError> {
        let db = store::client(&self.db).await?;
        store::return_calls::list(&db, tenant, filter).await
    }
}
