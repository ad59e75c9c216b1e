//! Placing callbacks: the courier's tap becomes an attempt row, then one async Originate; the
//! [`tracker`] follows it to the end from AMI events.
//!
//! Toll-fraud rules live here: leg 1 only rings the courier's registered phone; leg 2 is the
//! office extension or a number that passes the tenant's destination policy; nothing from the
//! request reaches AMI without being parsed first.

pub mod caches;
pub mod diagnose;
pub mod dialplan_check;
pub mod facts;
pub mod idempotency;
pub mod takeover;
pub mod tracker;
pub mod view;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use uuid::Uuid;

use crate::ami::message::Originate;
use crate::ami::pool::PbxLogin;
use crate::ami::transport::Endpoint;
use crate::ami::AmiError;
use crate::ami::{AmiClient, ConnState};
use crate::cluster::Cluster;
use crate::crypto::SecretsKey;
use crate::domain::callback::{CallState, Confirming, Reason, Status, Target};
use crate::domain::company::TenantId;
use crate::domain::destination::{self, CallRequest, Decision, Refusal};
use crate::domain::dialplan;
use crate::domain::phone;
use crate::domain::registry::Order;
use crate::domain::settings::{self, render_channel, ConfirmAnswer, PbxSettings};
use crate::events::Bus;
use crate::limits::Limited;
use crate::store::callbacks::{CallbackRow, Inserted, Moved, Step, Transition};
use crate::store::idempotency::IdempotencyClaim;
use crate::store::{self, StoreError};
use crate::telemetry::Chain;
pub use caches::{RegistryCache, Saved, SettingsCache};
pub use tracker::Tracker;
use view::event_data;
use writer::{AttemptWriter, NewAttempt};

/// An attempt written (`queued`) and not yet sent: see [`CallbackService::prepare`].
pub struct Prepared {
    pub row: CallbackRow,
    client: AmiClient,
    originate: Originate,
    fallback: Option<Fallback>,
}

/// Which AMI connection a callback goes through.
pub enum Via {
    /// The tenant's saved settings and its pooled connection (couriers).
    Pool,
    /// Given (possibly unsaved) settings over a connection of its own (the admin's Test button),
    /// so a test never disturbs the connection couriers use; `runs_our_dialplan` as the Test found.
    Dedicated { settings: Box<PbxSettings>, client: AmiClient, runs_our_dialplan: bool },
}

/// [`CallbackService::pbx_availability`]'s answer.
#[derive(Debug)]
pub enum PbxAvailability {
    /// No PBX in the company's settings (or no settings).
    NotConfigured,
    /// The AMI link is down (being retried): taps fail fast until it is back.
    Unreachable(AmiError),
    /// Configured, and the link is up or being opened.
    Available,
}

/// What the app may do when the PBX cannot place the call.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Fallback {
    /// The number to dial over cellular.
    pub phone: String,
    pub note: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("this company has not configured its PBX yet")]
    NotConfigured,
    #[error("courier {0} is not registered or not active")]
    CourierNotRegistered(String),
    #[error("the office extension is not configured")]
    OfficeNotConfigured,
    /// "Call the office" at a company with no PBX connected to dialback, only the office's city
    /// number: the app dials `fallback` itself. Nothing was written.
    #[error("this company's telephony is not connected to dialback: dial the office's city number over cellular")]
    NoPbx { fallback: Fallback },
    #[error("{detail}")]
    InvalidNumber { detail: String, callback: Box<CallbackRow> },
    #[error("{detail}")]
    Forbidden { detail: String, callback: Box<CallbackRow> },
    #[error("the PBX could not place the call: {error}")]
    Pbx { error: AmiError, callback: Box<CallbackRow>, fallback: Option<Fallback> },
    /// The request's Idempotency-Key is taken (by an earlier or a concurrent request): nothing
    /// was written or sent.
    #[error("this Idempotency-Key is already in use")]
    KeyTaken,
    /// The courier or the order kept changing while the tap was checked against them.
    #[error("the courier or the order is being changed right now; try again")]
    RegistryChanging,
    /// Over the courier's or the company's limit: the attempt was logged as refused, not sent.
    #[error("{limited}")]
    RateLimited { limited: Limited, callback: Box<CallbackRow> },
    #[error("stored PBX secret cannot be decrypted (was DIALBACK_SECRETS_KEY changed?)")]
    SecretUndecryptable,
    #[error("the database failed")]
    Store(#[from] StoreError),
}

/// What a retry with the same Idempotency-Key must get after a request that was not placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRetry {
    /// Nothing was written and nothing claimed: a concurrent request may hold the key.
    NothingWritten,
    /// The same answer: the attempt was logged as refused or failed, and the PBX may have it.
    SameAnswer,
    /// Another try: nothing reached the PBX (a limit said no, or the PBX could not be used).
    TryAgain,
}

impl PlaceError {
    /// The attempt this error was logged on, if it was written.
    pub fn callback(&self) -> Option<&CallbackRow> {
        match self {
            PlaceError::InvalidNumber { callback, .. }
            | PlaceError::Forbidden { callback, .. }
            | PlaceError::Pbx { callback, .. }
            | PlaceError::RateLimited { callback, .. } => Some(callback),
            _ => None,
        }
    }

    pub fn on_retry(&self) -> OnRetry {
        match self {
            PlaceError::InvalidNumber { .. } | PlaceError::Forbidden { .. } => OnRetry::SameAnswer,
            // Asterisk may have queued the call before the link dropped or the reply came late.
            PlaceError::Pbx { error: AmiError::Timeout(_) | AmiError::Disconnected, .. } => OnRetry::SameAnswer,
            PlaceError::Pbx { .. } | PlaceError::RateLimited { .. } => OnRetry::TryAgain,
            _ => OnRetry::NothingWritten,
        }
    }
}

pub struct CallbackService {
    db: deadpool_postgres::Pool,
    /// This process among the others, its AMI sessions, the event bus, the limits.
    cluster: Arc<Cluster>,
    tracker: Tracker,
    secrets: SecretsKey,
    /// How long a PBX may take to log a session in before it is said to be unreachable.
    connect_timeout: Duration,
    /// Decrypted settings per tenant: read on every tap, changed rarely. A save through any
    /// process drops the entry at once (store/notify.rs).
    settings_cache: SettingsCache,
    registry: RegistryCache,
    writer: AttemptWriter,
}

/// The tenant's AMI login from its stored settings.
pub fn pbx_login(settings: &PbxSettings, secret: SecretString) -> PbxLogin {
    PbxLogin {
        endpoint: Endpoint {
            host: settings.host.clone(),
            port: settings.port,
            tls: settings.transport.encrypted(),
            ca_pem: settings.ca_pem.clone(),
            http_prefix: settings.transport.over_http().then(|| settings.http_prefix.clone()),
        },
        username: settings.username.clone(),
        secret,
    }
}

/// `DIALBACK_CALL_ID` always; `DIALBACK_ORDER_ID` when the order id is safe in a `Variable` header
/// (Asterisk splits values on commas, and only `[A-Za-z0-9_-]` passes the encoder); and with answer
/// confirmation on, what the generated dialplan reads to ask for it (`domain::dialplan`).
fn channel_variables(id: Uuid, order_id: Option<&str>, settings: &PbxSettings) -> Vec<(String, String)> {
    let mut vars = vec![("DIALBACK_CALL_ID".to_owned(), id.to_string())];
    if let Some(order) = order_id.filter(|o| o.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')) {
        vars.push(("DIALBACK_ORDER_ID".to_owned(), order.to_owned()));
    }
    if settings.confirm_courier_answer == ConfirmAnswer::Dtmf {
        vars.push((dialplan::CONFIRM_VARIABLE.to_owned(), "dtmf".to_owned()));
        vars.push((dialplan::CONFIRM_TIMEOUT_VARIABLE.to_owned(), settings.confirm_timeout_s.to_string()));
    }
    vars
}

impl CallbackService {
    pub fn new(
        db: deadpool_postgres::Pool,
        cluster: Arc<Cluster>,
        tracker: Tracker,
        secrets: SecretsKey,
        connect_timeout: Duration,
        cache_ttl: Duration,
    ) -> Arc<Self> {
        Arc::new(CallbackService {
            writer: AttemptWriter::start(db.clone()),
            db,
            cluster,
            tracker,
            secrets,
            connect_timeout,
            settings_cache: SettingsCache::new(cache_ttl),
            registry: RegistryCache::default(),
        })
    }

    /// The company saved new PBX settings (here or in another process): the next tap reads them.
    pub fn forget_settings(&self, tenant: &TenantId) {
        self.settings_cache.invalidate(tenant);
    }

    /// Saves may have been missed (the change listener reconnected): every company's settings
    /// are read again.
    pub fn forget_cached_settings(&self) {
        self.settings_cache.invalidate_all();
    }

    /// How long a PBX may take to log a session in.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The company's settings and its AMI secret (empty when it has no PBX).
    pub async fn settings(&self, tenant: &TenantId) -> Result<Option<(PbxSettings, SecretString)>, PlaceError> {
        Ok(self.saved(tenant).await?.map(|saved| (saved.settings, saved.secret)))
    }

    /// The company's settings as a tap reads them (cached).
    async fn saved(&self, tenant: &TenantId) -> Result<Option<Saved>, PlaceError> {
        if let Some(cached) = self.settings_cache.get(tenant) {
            return Ok(Some(cached));
        }
        let client = store::client(&self.db).await?;
        let Some(stored) = store::admin::get_settings(&client, tenant).await? else { return Ok(None) };
        let secret = match stored.settings.has_pbx() {
            true => self.secrets.decrypt(&stored.secret_enc, tenant).map_err(|_| PlaceError::SecretUndecryptable)?,
            false => String::new(),
        };
        let runs_our_dialplan = stored.dialplan_check.as_ref().is_some_and(|check| check["result"] == "current");
        let saved = Saved { settings: stored.settings, secret: SecretString::from(secret), runs_our_dialplan };
        self.settings_cache.put(tenant, &saved);
        Ok(Some(saved))
    }

    /// This process checked the company's dialplan (`dialplan_watch`); `current`: the PBX runs the
    /// one its saved settings generate.
    pub fn dialplan_checked(&self, tenant: &TenantId, current: bool) {
        self.settings_cache.dialplan_checked(tenant, current);
    }

    /// How the company's numbers are read when written nationally (its settings' default region,
    /// or the settings' default before any are saved).
    pub async fn default_region(&self, tenant: &TenantId) -> Result<String, PlaceError> {
        Ok(self.settings(tenant).await?.map_or_else(settings::default_region, |(s, _)| s.default_region))
    }

    /// Whether a tap would reach the company's PBX now, as far as dialback knows without asking it:
    /// configured, and its AMI link not down. Opens the link when there is none yet (the app asks
    /// at start-up, so the courier's first tap finds it up).
    pub async fn pbx_availability(&self, tenant: &TenantId) -> Result<PbxAvailability, PlaceError> {
        let Some((settings, secret)) = self.settings(tenant).await? else { return Ok(PbxAvailability::NotConfigured) };
        if !settings.has_pbx() {
            return Ok(PbxAvailability::NotConfigured);
        }
        Ok(match self.cluster.ami.client(tenant, &pbx_login(&settings, secret)).state() {
            ConnState::Down(error) => PbxAvailability::Unreachable(error),
            _ => PbxAvailability::Available,
        })
    }

    /// Records a change dialback itself made (failed to place, refused, canceled) as one step,
    /// with its event; the attempt as now stored, or None when the call's events moved it first.
    async fn record(
        &self,
        row: &CallbackRow,
        next: &CallState,
        cause: &str,
        detail: Option<&str>,
    ) -> Result<Option<CallbackRow>, PlaceError> {
        let conn = store::client(&self.db).await?;
        Ok(record_step(&conn, &self.cluster.bus, row, next, cause, detail).await?)
    }

    /// The first half of placing a callback for `courier_id` (or, for a test, for the admin):
    /// checks the tap against the courier registry and the destination policy and writes the
    /// attempt, claiming `claim` in the same statement; nothing is sent to the PBX yet. A refusal
    /// is written too, and comes back as the error that carries it (`InvalidNumber`,
    /// `Forbidden`); any other error comes before anything was written.
    pub async fn prepare(
        &self,
        tenant: &TenantId,
        courier_id: &str,
        request: CallRequest,
        via: Via,
        claim: Option<&IdempotencyClaim<'_>>,
    ) -> Result<Prepared, PlaceError> {
        let (settings, client, runs_our_dialplan) = match via {
            Via::Pool => {
                let Saved { settings, secret, runs_our_dialplan } =
                    self.saved(tenant).await?.ok_or(PlaceError::NotConfigured)?;
                let client = self.cluster.ami.client(tenant, &pbx_login(&settings, secret));
                (settings, client, runs_our_dialplan)
            }
            Via::Dedicated { settings, client, runs_our_dialplan } => (*settings, client, runs_our_dialplan),
        };
        let order_id = request.order_id();
        if let CallRequest::Test { .. } = &request {
            // A test's settings may be unsaved, so the tenant may be new.
            store::admin::ensure_tenant(&store::client(&self.db).await?, tenant).await?;
        }
        let id = Uuid::now_v7();
        // Decided on the registry cache when it has the courier and order, else on a fresh read;
        // the insert writes only if they are still what is stored (`DecidedOn`).
        let mut attempts = 0;
        let (row, courier_number, decision) = loop {
            attempts += 1;
            if attempts > 3 {
                return Err(PlaceError::RegistryChanging);
            }
            let (courier_phone, order) = match &request {
                CallRequest::Test { .. } => (None, None),
                _ => {
                    let (phone, order) = self.registry_facts(tenant, courier_id, order_id, attempts == 1).await?;
                    (Some(phone), order)
                }
            };
            let courier_number = match (&request, &courier_phone) {
                // The Test button's first number was parsed and allow-listed by the caller.
                (CallRequest::Test { from, .. }, _) => phone::parse(from, &settings.default_region)
                    .map_err(|e| PlaceError::CourierNotRegistered(format!("test number {from:?}: {e}")))?,
                (_, phone_number) => {
                    phone::parse(phone_number.as_deref().unwrap_or_default(), &settings.default_region)
                        .map_err(|_| PlaceError::CourierNotRegistered(courier_id.to_owned()))?
                }
            };
            let decision = destination::decide(courier_id, &settings, &request, order.as_ref())
                .map_err(|_| PlaceError::OfficeNotConfigured)?;
            let (status, refusal, to_number) = match &decision {
                Decision::Place(d) => (Status::Queued, None, Some(d.logged.as_str())),
                Decision::Refuse(r) => (Status::Refused, Some((r.reason, r.detail.as_str())), r.logged.as_deref()),
            };
            let now = store::now();
            let mut state = CallState::new(status);
            state.reason = refusal.map(|(reason, _)| reason);
            state.ended_at = refusal.map(|_| now);
            if status == Status::Queued && settings.confirm_courier_answer == ConfirmAnswer::Dtmf {
                state.confirmation = Some(Confirming::Asked);
            }
            let row = CallbackRow {
                id,
                tenant_id: tenant.to_owned(),
                courier_id: courier_id.to_owned(),
                target: request.target(),
                order_id: order_id.map(str::to_owned),
                to_number: to_number.map(str::to_owned),
                courier_number: Some(courier_number.e164.clone()),
                detail: refusal.map(|(_, detail)| detail.to_owned()),
                action_id: None,
                created_at: now,
                updated_at: now,
                sequence: 1,
                state,
            };
            let event = event_data(&row);
            // No pooled connection is held while the attempt waits to be written.
            let attempt = NewAttempt {
                row: row.clone(),
                event: event.clone(),
                claim: claim.map(|c| (c.key.to_owned(), c.request_hash.to_owned())),
                decided_on: courier_phone.map(|phone| (phone, order.clone())),
                owner: Some(self.cluster.process),
            };
            match self.writer.write(attempt).await? {
                Inserted::Written { deliveries } => {
                    self.cluster.bus.committed(id, [(row.sequence, event.as_str())], deliveries);
                    break (row, courier_number, decision);
                }
                Inserted::KeyTaken => return Err(PlaceError::KeyTaken),
                Inserted::Stale => {
                    tracing::debug!(call_id = %id, %tenant, courier_id, "registry changed since read; reading again")
                }
            }
        };
        let destination = match decision {
            Decision::Place(d) => d,
            Decision::Refuse(Refusal { reason, detail, .. }) => {
                tracing::warn!(call_id = %id, %tenant, courier_id, reason = reason.as_str(), %detail, "callback refused");
                metrics::counter!("dialback_callbacks_refused_total", "reason" => reason.as_str()).increment(1);
                let callback = Box::new(row);
                return Err(if reason == Reason::InvalidNumber {
                    PlaceError::InvalidNumber { detail, callback }
                } else {
                    PlaceError::Forbidden { detail, callback }
                });
            }
        };
        let courier_dialled = format!("{}{}", settings.courier_prefix, settings.dial_format.render(&courier_number));
        let originate = Originate {
            // Through the courier's context when the PBX runs it, so that the PBX keeps how leg 1
            // ended (`domain::dialplan`); `/n`: the Local pair stays up to the end, so the call's
            // channel lives as long as the call (tests/fixtures/asterisk-22/ami-k5/README.md).
            channel: match runs_our_dialplan {
                true => format!("Local/{courier_dialled}@{}/n", dialplan::leg1_context(&settings.context)),
                false => render_channel(&settings.channel_template, &courier_dialled),
            },
            context: settings.context.clone(),
            exten: destination.exten,
            timeout_ms: u64::from(settings.originate_timeout_s) * 1000,
            caller_id: settings.caller_id.clone(),
            channel_id: id.to_string(),
            variables: channel_variables(id, order_id, &settings),
        };
        // What the app may dial itself if the PBX cannot place the call.
        let fallback = match &request {
            CallRequest::Office => settings.office_phone_e164().map(|phone| Fallback {
                phone,
                note: "the PBX cannot be reached: dial the office over cellular".into(),
            }),
            CallRequest::Client { .. } if settings.allow_direct_dial => destination.parsed.map(|p| Fallback {
                phone: p.e164,
                note: "the PBX cannot be reached: this company allows dialling the client directly".into(),
            }),
            _ => None,
        };
        Ok(Prepared { row, client, originate, fallback })
    }

    /// Places a courier's tap: the attempt is written (claiming `claim` in the same statement),
    /// checked against the rate limits, then originated. Limits are checked once the attempt is
    /// written, so a retry or a duplicate of a request already taken ends in `KeyTaken` and never
    /// counts; a tap over a limit is logged as refused. Asterisk has queued the call when it
    /// returns.
    pub async fn tap(
        &self,
        tenant: &TenantId,
        courier_id: &str,
        request: CallRequest,
        claim: Option<&IdempotencyClaim<'_>>,
    ) -> Result<CallbackRow, PlaceError> {
        let (settings, _) = self.settings(tenant).await?.ok_or(PlaceError::NotConfigured)?;
        if !settings.has_pbx() {
            // Nothing to place: the app dials the office itself, as it does when the PBX is down
            // (a problem with the same `fallback`; nothing is logged, as nothing went through
            // dialback).
            return Err(match (&request, settings.office_phone_e164()) {
                (CallRequest::Office, Some(phone)) => PlaceError::NoPbx {
                    fallback: Fallback {
                        phone,
                        note: "this company's telephony is not connected to dialback: dial the office over cellular"
                            .into(),
                    },
                },
                (CallRequest::Office, None) => PlaceError::OfficeNotConfigured,
                _ => PlaceError::NotConfigured,
            });
        }
        let prepared = self.prepare(tenant, courier_id, request, Via::Pool, claim).await?;
        if let Err(limited) = self.cluster.limiters.callback(tenant, courier_id) {
            let row = self.refuse(prepared, Reason::RateLimited, &limited.to_string()).await?;
            return Err(PlaceError::RateLimited { limited, callback: Box::new(row) });
        }
        self.originate(prepared).await
    }

    /// The active courier's phone and the order (None: it does not exist) a tap is decided on:
    /// from the registry cache when `cached` is allowed and it has both, else read (and cached).
    async fn registry_facts(
        &self,
        tenant: &TenantId,
        courier_id: &str,
        order_id: Option<&str>,
        cached: bool,
    ) -> Result<(String, Option<Order>), PlaceError> {
        if let Some(hit) = cached.then(|| self.registry.get(tenant, courier_id, order_id)).flatten() {
            return Ok(hit);
        }
        let db = store::client(&self.db).await?;
        let (courier, order) = store::admin::courier_and_order(&db, tenant, courier_id, order_id).await?;
        let courier =
            courier.filter(|c| c.active).ok_or_else(|| PlaceError::CourierNotRegistered(courier_id.to_owned()))?;
        self.registry.put(tenant, courier_id, &courier.phone, order_id, order.as_ref());
        Ok((courier.phone, order))
    }

    /// Sends a prepared attempt's Originate and returns the attempt once Asterisk has queued it
    /// (`ringing_courier`; the row says so as soon as the tracker has written it, normally within
    /// milliseconds). A PBX error is recorded on the attempt and comes back with it.
    pub async fn originate(&self, prepared: Prepared) -> Result<CallbackRow, PlaceError> {
        let Prepared { row, client, originate, fallback } = prepared;
        let (id, tenant, courier_id, target) =
            (row.id, row.tenant_id.as_str(), row.courier_id.as_str(), row.target.as_str());
        let queued = async {
            client.wait_up(self.connect_timeout).await?;
            match client.originate(&originate).await {
                // This process's share of the cap may be stale: one that began stopping since the
                // last beat gives its share at once (cluster.rs `recount`).
                Err(AmiError::Saturated(full)) if self.cluster.recount(std::time::Instant::now()).await > full => {
                    client.originate(&originate).await
                }
                queued => queued,
            }
        }
        .await;
        match queued {
            Ok(handle) => {
                // The tracker records `ringing_courier`, with the call's first events.
                let hold = if row.target == Target::Test { None } else { self.cluster.ami.hold(tenant) };
                self.tracker.placed(row.clone(), handle.action_id.clone(), hold);
                let mut next = row.state.clone();
                next.status = Status::RingingCourier;
                tracing::info!(call_id = %id, tenant, courier_id, target, action_id = %handle.action_id, "callback queued");
                metrics::counter!("dialback_callbacks_placed_total", "target" => target.to_owned()).increment(1);
                if originate.variables.iter().any(|(name, _)| name == dialplan::CONFIRM_VARIABLE) {
                    metrics::counter!("dialback_confirmations_total", "tenant" => tenant.to_owned(), "outcome" => "asked")
                        .increment(1);
                }
                Ok(CallbackRow { state: next, action_id: Some(handle.action_id), ..row })
            }
            Err(error) => {
                let reason = if error.is_unreachable() { Reason::Unreachable } else { Reason::PbxError };
                let mut next = CallState::new(Status::Failed);
                next.reason = Some(reason);
                next.ended_at = Some(store::now());
                let detail = error.to_string();
                let recorded = self.record(&row, &next, "originate failed", Some(&detail)).await?;
                tracing::warn!(call_id = %id, tenant, courier_id, error = %Chain(&error), "callback could not be placed");
                metrics::counter!("dialback_callbacks_failed_to_place_total", "kind" => error.kind()).increment(1);
                let row = recorded.unwrap_or(CallbackRow { state: next, detail: Some(detail), ..row });
                Err(PlaceError::Pbx { error, callback: Box::new(row), fallback })
            }
        }
    }

    /// Refuses a prepared attempt instead of placing it (e.g. over a rate limit): it is logged
    /// as `refused` with `reason` and `detail`.
    pub async fn refuse(&self, prepared: Prepared, reason: Reason, detail: &str) -> Result<CallbackRow, PlaceError> {
        let row = prepared.row;
        let mut next = CallState::new(Status::Refused);
        next.reason = Some(reason);
        next.ended_at = Some(store::now());
        let recorded = self.record(&row, &next, "refused", Some(detail)).await?;
        tracing::warn!(call_id = %row.id, tenant = %row.tenant_id, courier_id = %row.courier_id, reason = reason.as_str(), %detail, "callback refused");
        metrics::counter!("dialback_callbacks_refused_total", "reason" => reason.as_str()).increment(1);
        Ok(recorded.unwrap_or(CallbackRow { state: next, detail: Some(detail.to_owned()), ..row }))
    }

    /// Cancels a callback that is still ringing: hangs up its courier channel.
    pub async fn cancel(&self, row: &CallbackRow) -> Result<CallbackRow, PlaceError> {
        let (settings, secret) = self.settings(&row.tenant_id).await?.ok_or(PlaceError::NotConfigured)?;
        let client = self.cluster.ami.client(&row.tenant_id, &pbx_login(&settings, secret));
        // Recorded as canceled first, hung up second: the hangup's own events then find the call
        // settled and leave it so (hung up first, they can win the race and call it failed).
        // The tracker may move the call meanwhile (it rang on, or was answered): cancel what it is
        // now while it still rings, else report it.
        let mut current = row.clone();
        for _ in 0..3 {
            let mut next = current.state.clone();
            next.status = Status::Canceled;
            next.reason = Some(Reason::Canceled);
            next.ended_at = Some(store::now());
            if let Some(canceled) = self.record(&current, &next, "canceled through the API", None).await? {
                self.tracker.settled(canceled.clone());
                let channel = current.state.courier_channel.clone().unwrap_or_else(|| row.id.to_string());
                if let Err(error) = client.hangup(&channel).await {
                    // "No such channel": it ended meanwhile; the tracker records how.
                    tracing::info!(call_id = %row.id, error = %Chain(&error), "hangup for cancel did not apply");
                }
                return Ok(canceled);
            }
            let conn = store::client(&self.db).await?;
            match store::callbacks::get(&conn, &row.tenant_id, row.id).await? {
                Some(moved) if moved.state.status.is_ringing() => current = moved,
                Some(moved) => return Ok(moved),
                None => break,
            }
        }
        Ok(current)
    }
}

/// Writes `row`'s move to `next` as one step (`cause` in the log, `detail` on the row) with its
/// event, and announces it; the attempt as now stored, or None when it had moved
/// meanwhile (nothing was written).
async fn record_step(
    db: &store::Client,
    bus: &Bus,
    row: &CallbackRow,
    next: &CallState,
    cause: &str,
    detail: Option<&str>,
) -> Result<Option<CallbackRow>, StoreError> {
    let after = CallbackRow {
        state: next.clone(),
        detail: detail.map(str::to_owned).or_else(|| row.detail.clone()),
        updated_at: store::now(),
        sequence: row.sequence + 1,
        ..row.clone()
    };
    let step = Step { from: row.state.status, to: next.status, cause: cause.to_owned(), event: event_data(&after) };
    let transition = Transition {
        id: row.id,
        sequence: row.sequence,
        from: &row.state,
        to: next,
        steps: std::slice::from_ref(&step),
        detail,
        action_id: None,
    };
    match store::callbacks::transition(db, &transition).await? {
        Moved::Yes { deliveries } => {
            tracing::info!(call_id = %row.id, tenant = %row.tenant_id, status = next.status.as_str(),
                path = format!("{} > {}", row.state.status.as_str(), next.status.as_str()), cause, "callback status");
            bus.committed(row.id, [(after.sequence, step.event.as_str())], deliveries);
            Ok(Some(after))
        }
        Moved::No => Ok(None),
    }
}

/// Calls dialback can no longer follow (it restarted; their PBX link was lost) become `unknown`,
/// with `detail` saying why; returns how many did (a call that moved meanwhile is left as it is).
pub async fn mark_lost(
    db: &deadpool_postgres::Pool,
    bus: &Bus,
    rows: &[CallbackRow],
    detail: &str,
) -> Result<usize, StoreError> {
    let conn = store::client(db).await?;
    let mut marked = 0;
    for row in rows {
        let mut next = row.state.clone();
        next.status = Status::Unknown;
        next.reason = Some(Reason::Lost);
        if record_step(&conn, bus, row, &next, detail, Some(detail)).await?.is_some() {
            marked += 1;
        }
    }
    Ok(marked)
}
