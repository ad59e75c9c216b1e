//! The admin's **Test** button: a real test callback over a connection of its own, reported as
//! ordered steps (connect, TLS, banner or http, login, originate, first leg, second leg), each
//! with how long it took, what happened and, when it failed, what to change.
//!
//! Steps follow the wire: with TLS the handshake comes before Asterisk's banner; over Asterisk's
//! HTTP server (`ami::ajam`) an `http` step proves AMI answers there before the login. The test call is
//! an ordinary attempt (`target: test`) prepared and originated like a courier's tap, so it obeys
//! the same number policy and is logged and tracked like any other; only its AMI connection
//! differs, so unsaved settings can be tried without touching the connection couriers use.

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::{broadcast, watch};
use tokio_util::codec::FramedRead;
use uuid::Uuid;

use super::dialplan_check::{self, Verdict};
use super::{pbx_login, CallbackService, PlaceError, Via};
use crate::ami::ajam;
use crate::ami::client::{self as ami_client, AmiClient};
use crate::ami::codec::AmiCodec;
use crate::ami::transport::{self, BoxStream};
use crate::ami::{AmiError, AmiEvent};
use crate::domain::callback::{apply, CallState, Confirmation, Fact, Leg, Reason, Status};
use crate::domain::company::TenantId;
use crate::domain::destination::CallRequest;
use crate::domain::dialplan::Generated;
use crate::domain::settings::{ConfirmAnswer, PbxSettings};
use crate::i18n::Text;
use crate::telemetry::Chain;

/// How long the second leg may take after the first answered (the dialplan's Dial timeout is
/// usually 30 s).
const SECOND_LEG_MARGIN: Duration = Duration::from_secs(40);
/// How long the confirmation's result may take beyond its own timeout.
const CONFIRM_MARGIN: Duration = Duration::from_secs(10);
/// How long the test's connection waits for the call's CDR after its end (Asterisk posts it as
/// the last channel hangs up).
const CDR_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub step: &'static str,
    pub ok: bool,
    pub ms: u64,
    pub detail: String,
    /// What to change, rendered in the language the admin reads (`crate::i18n`).
    pub hint: Option<Text>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    /// True only when both legs connected.
    pub ok: bool,
    /// The test attempt, when one was placed: poll `GET /v1/callbacks/{id}` if it is still going.
    pub callback_id: Option<Uuid>,
    pub status: Option<&'static str>,
    pub steps: Vec<Step>,
}

struct Steps {
    steps: Vec<Step>,
    started: Instant,
}

impl Steps {
    fn new() -> Self {
        Self { steps: Vec::new(), started: Instant::now() }
    }

    fn pass(&mut self, step: &'static str, detail: impl Into<String>) {
        self.push(step, true, detail.into(), None);
    }

    fn fail(&mut self, step: &'static str, detail: impl Into<String>, hint: Text) {
        self.push(step, false, detail.into(), Some(hint));
    }

    fn push(&mut self, step: &'static str, ok: bool, detail: String, hint: Option<Text>) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.started = Instant::now();
        self.steps.push(Step { step, ok, ms, detail, hint });
    }

    fn done(self, callback_id: Option<Uuid>, status: Option<Status>) -> Diagnosis {
        let ok = self.steps.iter().all(|s| s.ok) && self.steps.iter().any(|s| s.step == "second_leg");
        Diagnosis { ok, callback_id, status: status.map(Status::as_str), steps: self.steps }
    }
}

fn address_hint(settings: &PbxSettings) -> Text {
    let id = if settings.transport.over_http() { "hint-address-http" } else { "hint-address-ami" };
    Text::new(id).arg("host", &settings.host).arg("port", settings.port)
}

fn http_hint(settings: &PbxSettings, error: &AmiError) -> Text {
    if matches!(error, AmiError::NotAjam(text) if text.contains("redirected")) {
        return Text::new("hint-http-redirect");
    }
    let id = if settings.http_prefix.is_empty() { "hint-http-not-ami" } else { "hint-http-not-ami-prefix" };
    Text::new(id).arg("rawman", settings_rawman(settings)).arg("prefix", format!("{:?}", settings.http_prefix))
}

fn settings_rawman(settings: &PbxSettings) -> String {
    let prefix = settings.http_prefix.trim_matches('/');
    if prefix.is_empty() {
        "/rawman".into()
    } else {
        format!("/{prefix}/rawman")
    }
}

/// What to change for each way a connection or login can fail.
fn connection_hint(error: &AmiError, settings: &PbxSettings) -> Text {
    match error {
        AmiError::Resolve { .. } => Text::new("hint-resolve").arg("host", format!("{:?}", settings.host)),
        AmiError::Refused { .. } | AmiError::ConnectTimeout { .. } | AmiError::Io(_) => address_hint(settings),
        AmiError::Tls(_) if settings.transport.over_http() => Text::new("hint-tls-https"),
        AmiError::Tls(_) => Text::new("hint-tls-ami"),
        AmiError::NotAjam(_) | AmiError::SessionLost(_) => http_hint(settings, error),
        AmiError::NotAmi(_) if settings.transport.encrypted() => Text::new("hint-not-ami-tls"),
        AmiError::NotAmi(_) => Text::new("hint-not-ami"),
        AmiError::AuthFailed => {
            let id = if settings.transport.over_http() { "hint-auth-failed-http" } else { "hint-auth-failed" };
            Text::new(id).arg("user", &settings.username)
        }
        AmiError::PermissionDenied => Text::new("hint-permission").arg("user", format!("{:?}", settings.username)),
        _ => address_hint(settings),
    }
}

/// Connects, handshakes and logs in once, step by step, then logs off.
async fn probe(settings: &PbxSettings, secret: &SecretString, timeout: Duration, steps: &mut Steps) -> bool {
    let login = pbx_login(settings, secret.clone());
    let endpoint = &login.endpoint;
    let addrs = match transport::resolve(endpoint).await {
        Ok(addrs) => addrs,
        Err(e) => {
            steps.fail("connect", e.to_string(), connection_hint(&e, settings));
            return false;
        }
    };
    let tcp = match transport::connect_tcp(&addrs, timeout).await {
        Ok(tcp) => tcp,
        Err(e) => {
            steps.fail("connect", e.to_string(), connection_hint(&e, settings));
            return false;
        }
    };
    let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    steps.pass("connect", format!("TCP connection to {peer} open"));
    let stream: BoxStream = if settings.transport.encrypted() {
        match transport::tls_handshake(endpoint, tcp, timeout).await {
            Ok(tls) => {
                steps.pass("tls", "TLS handshake done; the certificate is trusted and names this host");
                Box::new(tls)
            }
            Err(e) => {
                steps.fail("tls", e.to_string(), connection_hint(&e, settings));
                return false;
            }
        }
    } else {
        Box::new(tcp)
    };
    if settings.transport.over_http() {
        return probe_http(settings, secret, endpoint, stream, timeout, steps).await;
    }
    let (rd, mut wr) = tokio::io::split(stream);
    let mut reader = FramedRead::new(rd, AmiCodec::client());
    match ami_client::read_banner(&mut reader, timeout).await {
        Ok(banner) => steps.pass("banner", format!("the server greeted with {banner:?}")),
        Err(e) => {
            steps.fail("banner", e.to_string(), connection_hint(&e, settings));
            return false;
        }
    }
    match ami_client::login(&mut reader, &mut wr, &settings.username, secret, timeout).await {
        Ok(()) => steps.pass("login", format!("logged in as {:?}", settings.username)),
        Err(e) => {
            steps.fail("login", e.to_string(), connection_hint(&e, settings));
            return false;
        }
    }
    let mut wire = bytes::BytesMut::new();
    if crate::ami::message::logoff(&crate::ami::message::new_action_id()).encode_into(&mut wire).is_ok() {
        use tokio::io::AsyncWriteExt;
        let _ = wr.write_all(&wire).await;
    }
    true
}

/// The `http` and `login` steps over Asterisk's HTTP server, on the connection opened already.
async fn probe_http(
    settings: &PbxSettings,
    secret: &SecretString,
    endpoint: &crate::ami::transport::Endpoint,
    stream: BoxStream,
    timeout: Duration,
    steps: &mut Steps,
) -> bool {
    let connections = ajam::Connections::new(endpoint, timeout);
    let probed = match connections.adopt(stream).await {
        Ok(mut sender) => connections.probe(&mut sender, timeout).await.map(|detail| (sender, detail)),
        Err(e) => Err(e),
    };
    let mut sender = match probed {
        Ok((sender, detail)) => {
            steps.pass("http", detail);
            sender
        }
        Err(e) => {
            let hint = match &e {
                AmiError::NotAjam(_) => http_hint(settings, &e),
                other => connection_hint(other, settings),
            };
            steps.fail("http", e.to_string(), hint);
            return false;
        }
    };
    match connections.login(&mut sender, &settings.username, secret, timeout).await {
        Ok(session) => {
            steps.pass("login", format!("logged in as {:?} over HTTP", settings.username));
            connections.logoff(&mut sender, &session, timeout).await;
            true
        }
        Err(e) => {
            steps.fail("login", e.to_string(), connection_hint(&e, settings));
            false
        }
    }
}

fn first_leg_hint(reason: Option<Reason>, settings: &PbxSettings) -> Text {
    let sip = settings.channel_template.to_ascii_uppercase().starts_with("SIP/");
    match reason {
        Some(Reason::Busy) => Text::new("hint-first-busy"),
        Some(Reason::NoAnswer) => Text::new("hint-first-no-answer").arg("seconds", settings.originate_timeout_s),
        Some(Reason::Congestion) => Text::new("hint-first-congestion"),
        Some(Reason::Rejected) => Text::new("hint-first-rejected"),
        _ if sip => Text::new("hint-first-chan-sip").arg("channel", format!("{:?}", settings.channel_template)),
        _ => Text::new("hint-first-channel")
            .arg("channel", format!("{:?}", settings.channel_template))
            .arg("prefix", format!("{:?}", settings.courier_prefix)),
    }
}

/// The `confirm` step, from what the call showed once the courier answered; false when it failed
/// (nothing more is to be seen then).
fn confirm_step(
    steps: &mut Steps,
    seen: &Followed,
    answered_at: Option<OffsetDateTime>,
    settings: &PbxSettings,
) -> bool {
    let after = |at: OffsetDateTime| {
        answered_at
            .map(|answered| format!(" {:.1} s after answering", (at - answered).as_seconds_f64()))
            .unwrap_or_default()
    };
    let timeout = settings.confirm_timeout_s;
    match seen.confirmation {
        Some((Confirmation::Confirmed, at)) => {
            steps.pass("confirm", format!("the first phone was asked to confirm and pressed 1{}", after(at)));
            true
        }
        Some((Confirmation::NotConfirmed, at)) => {
            steps.fail(
                "confirm",
                format!("the first phone answered but pressed no 1 within {timeout} s (result{})", after(at)),
                Text::new("hint-confirm-not-confirmed"),
            );
            false
        }
        Some((Confirmation::PromptFailed, _)) => {
            steps.fail(
                "confirm",
                "the PBX could not play the confirmation prompt (Read ended with ReadStatus ERROR at once)",
                Text::new("hint-confirm-no-prompt"),
            );
            false
        }
        None if seen.leg2_dialled => {
            steps.fail(
                "confirm",
                "the PBX began dialling the second number without asking the first phone to press 1; dialback hung \
                 the call up",
                Text::new("hint-confirm-dialplan-not-run").arg("context", format!("{:?}", settings.context)),
            );
            false
        }
        None => {
            steps.fail(
                "confirm",
                format!(
                    "no confirmation result within {} s of the answer",
                    u64::from(timeout) + CONFIRM_MARGIN.as_secs()
                ),
                Text::new("hint-confirm-unheard"),
            );
            false
        }
    }
}

fn second_leg_hint(reason: Option<Reason>, settings: &PbxSettings) -> Text {
    let context = format!("{:?}", settings.context);
    match reason {
        Some(Reason::Busy) => Text::new("hint-second-busy"),
        Some(Reason::NoAnswer) => Text::new("hint-second-no-answer"),
        Some(Reason::Congestion) | Some(Reason::Unreachable) => Text::new("hint-second-unreachable")
            .arg("context", context)
            .arg("prefix", format!("{:?}", settings.client_prefix)),
        _ => Text::new("hint-second-dial").arg("context", context),
    }
}

/// The `dialplan` step (`super::dialplan_check`): fails, and the Test stops, when something the
/// settings turn on needs a context the PBX does not run as generated; otherwise what differs is a
/// warning (a passed step with a hint): a company may dial through a context of its own.
async fn dialplan_step(client: &AmiClient, expected: &Generated, steps: &mut Steps) -> Verdict {
    let inspection = dialplan_check::inspect(client, expected).await;
    let verdict = inspection.verdict;
    steps.push("dialplan", verdict != Verdict::Failing, inspection.detail, inspection.hint);
    verdict
}

/// What the Test button has seen of its call so far.
#[derive(Clone)]
struct Followed {
    state: CallState,
    /// The answer confirmation's result, and when it came.
    confirmation: Option<(Confirmation, OffsetDateTime)>,
    /// The courier's channel began dialling leg 2.
    leg2_dialled: bool,
}

/// Follows the test call on its dedicated connection: forwards its events to the tracker (which
/// records them like any call's) and publishes what it sees as the call moves; closes the
/// connection when the call is over.
fn follow(
    service: &CallbackService,
    client: AmiClient,
    mut events: broadcast::Receiver<Arc<AmiEvent>>,
    tenant: &TenantId,
    id: Uuid,
    initial: CallState,
) -> watch::Receiver<Followed> {
    let (tx, rx) = watch::channel(Followed { state: initial.clone(), confirmation: None, leg2_dialled: false });
    let tracker = service.tracker.clone();
    let tenant = tenant.to_owned();
    let key = id.to_string();
    tokio::spawn(async move {
        let mut state = initial;
        // A test call is over within hours at most; don't keep a connection forever.
        let mut deadline = tokio::time::Instant::now() + Duration::from_secs(4 * 3600);
        let mut ended = false;
        loop {
            let event: Arc<AmiEvent> = match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Ok(event)) => event,
                Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                    tracing::warn!(call_id = %id, missed = n, "test call events lagged");
                    continue;
                }
                _ => break,
            };
            if matches!(&*event, AmiEvent::DialBegin(d) if d.uniqueid.as_deref() == Some(key.as_str())) {
                tx.send_modify(|f| f.leg2_dialled = true);
            }
            let Some(fact) = super::facts::fact_of(&event, &key) else { continue };
            tracker.event(&tenant, event);
            if let Fact::Confirmation(outcome) = &fact {
                tx.send_modify(|f| f.confirmation = Some((*outcome, OffsetDateTime::now_utc())));
            }
            if let Some(next) = apply(&state, &fact, OffsetDateTime::now_utc()) {
                if next.reason == Some(Reason::DialplanNotRun) && state.reason != Some(Reason::DialplanNotRun) {
                    // Leg 2 began without the confirmation these settings ask for: whatever
                    // answered the first phone must not reach the second (the tracker counts it).
                    if let Err(e) = client.hangup(&key).await {
                        tracing::warn!(call_id = %id, error = %Chain(&e), "could not hang up the test call");
                    }
                }
                state = next;
                tx.send_modify(|f| f.state = state.clone());
            }
            // This connection may be the only one to the PBX (a company's first Test): it stays
            // until the courier channel's CDR (a Local courier channel's phone half posts its own
            // first, tests/fixtures/asterisk-22/ami/b_answered.raw.txt), or a while after the end
            // when the PBX posts none (no `cdr` in the AMI user's read= line).
            if state.cdr.courier.is_some() && state.status.is_terminal() {
                break;
            }
            if state.status.is_terminal() && !ended {
                ended = true;
                deadline = deadline.min(tokio::time::Instant::now() + CDR_GRACE);
            }
        }
        client.close().await;
    });
    rx
}

/// Waits until `done` holds or the deadline; returns what was seen by then.
async fn wait_for(rx: &mut watch::Receiver<Followed>, limit: Duration, done: impl Fn(&Followed) -> bool) -> Followed {
    let _ = tokio::time::timeout(limit, rx.wait_for(|f| done(f))).await;
    rx.borrow().clone()
}

impl CallbackService {
    /// Runs the Test button: probe, then a real test callback from `from` to `to`.
    /// `expected` is the dialplan dialback generates for these settings (`domain::dialplan`),
    /// compared with what the PBX runs before any call is placed.
    #[allow(clippy::too_many_arguments)]
    pub async fn diagnose(
        &self,
        tenant: &TenantId,
        admin: &str,
        settings: PbxSettings,
        secret: SecretString,
        expected: Option<&Generated>,
        from: String,
        to: String,
    ) -> Result<Diagnosis, PlaceError> {
        let mut steps = Steps::new();
        let timeout = self.connect_timeout;
        if !probe(&settings, &secret, timeout, &mut steps).await {
            return Ok(steps.done(None, None));
        }
        // The call itself goes over a connection of its own (see the module docs).
        let mut config = self.cluster.ami.client_config(tenant, &pbx_login(&settings, secret));
        config.max_inflight_originates = 1;
        let client = AmiClient::start(config, None);
        if let Err(e) = client.wait_up(timeout).await {
            steps.fail("originate", e.to_string(), connection_hint(&e, &settings));
            client.close().await;
            return Ok(steps.done(None, None));
        }
        let verdict = match expected {
            Some(expected) => Some(dialplan_step(&client, expected, &mut steps).await),
            None => None,
        };
        if verdict == Some(Verdict::Failing) {
            client.close().await;
            return Ok(steps.done(None, None));
        }
        // Subscribed before the originate: a phone that is busy answers before `place` returns.
        let events = client.subscribe();
        // The test call rings the first number as couriers' calls will: through the courier's
        // context when the PBX runs this dialplan.
        let runs_our_dialplan = verdict == Some(Verdict::Current);
        let via = Via::Dedicated { settings: Box::new(settings.clone()), client: client.clone(), runs_our_dialplan };
        let placed = match self.prepare(tenant, admin, CallRequest::Test { from, to }, via, None).await {
            Ok(prepared) => self.originate(prepared).await,
            Err(e) => Err(e),
        };
        let row = match placed {
            Ok(row) => row,
            Err(PlaceError::Pbx { error, callback, .. }) => {
                let hint = match &error {
                    AmiError::Rejected(m) if m.contains("Extension does not exist") => Text::new("hint-no-extension")
                        .arg("context", format!("{:?}", settings.context))
                        .arg("prefix", format!("{:?}", settings.client_prefix)),
                    other => connection_hint(other, &settings),
                };
                steps.fail("originate", error.to_string(), hint);
                client.close().await;
                return Ok(steps.done(Some(callback.id), Some(callback.state.status)));
            }
            Err(other) => {
                client.close().await;
                return Err(other);
            }
        };
        steps.pass(
            "originate",
            format!("Asterisk queued the call (ActionID {})", row.action_id.as_deref().unwrap_or("?")),
        );
        let id = row.id;
        let mut state = follow(self, client, events, tenant, id, row.state.clone());

        let ring = Duration::from_secs(u64::from(settings.originate_timeout_s) + 5);
        let after_first =
            wait_for(&mut state, ring, |f| !matches!(f.state.status, Status::Queued | Status::RingingCourier)).await;
        let answered_at = after_first.state.courier_answered_at;
        let after_first = after_first.state;
        let first_failed = after_first.status == Status::Failed && after_first.failed_leg == Some(Leg::Courier);
        match after_first.status {
            Status::Queued | Status::RingingCourier => {
                steps.fail(
                    "first_leg",
                    format!("no outcome for the first leg within {} s", ring.as_secs()),
                    Text::new("hint-first-unreported"),
                );
                return Ok(steps.done(Some(id), Some(after_first.status)));
            }
            _ if first_failed || after_first.status == Status::Canceled || after_first.status == Status::Unknown => {
                let reason = after_first.reason.map(Reason::as_str).unwrap_or("failed");
                let cause = after_first.hangup_cause.map(|c| format!(", hangup cause {c}")).unwrap_or_default();
                steps.fail(
                    "first_leg",
                    format!("the first number did not answer: {reason}{cause}"),
                    first_leg_hint(after_first.reason, &settings),
                );
                return Ok(steps.done(Some(id), Some(after_first.status)));
            }
            _ => steps.pass("first_leg", "the first number answered"),
        }
        if settings.confirm_courier_answer == ConfirmAnswer::Dtmf {
            let limit = Duration::from_secs(u64::from(settings.confirm_timeout_s)) + CONFIRM_MARGIN;
            let seen = wait_for(&mut state, limit, |f| {
                f.confirmation.is_some() || f.leg2_dialled || f.state.status.is_terminal()
            })
            .await;
            if !confirm_step(&mut steps, &seen, answered_at, &settings) {
                return Ok(steps.done(Some(id), Some(seen.state.status)));
            }
        }

        let after_second = wait_for(&mut state, SECOND_LEG_MARGIN, |f| f.state.status != Status::RingingClient).await;
        let after_second = after_second.state;
        match after_second.status {
            Status::Connected | Status::Completed => {
                steps.pass("second_leg", "the second number answered: both legs are connected")
            }
            Status::RingingClient => steps.fail(
                "second_leg",
                format!("the second number was still ringing after {} s", SECOND_LEG_MARGIN.as_secs()),
                Text::new("hint-second-still-ringing").arg("id", id),
            ),
            _ => {
                let reason = after_second.reason.map(Reason::as_str).unwrap_or("failed");
                steps.fail(
                    "second_leg",
                    format!("the second number did not answer: {reason}"),
                    second_leg_hint(after_second.reason, &settings),
                );
            }
        }
        Ok(steps.done(Some(id), Some(after_second.status)))
    }
}
