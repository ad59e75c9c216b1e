//! One originated callback, from the courier's phone ringing to the last `Cdr`.
//!
//! Leg 1 rings the courier (the `Channel` of the Originate; a `Local/<courier>@<context>` whose
//! context the loaded dialplan has runs it first, and its `Dial` rings the courier's phone, as
//! dialback's courier context does). When it answers, the Originate's
//! context runs: it sets the CDR userfield from `DIALBACK_CALL_ID`, starts a recording and dials
//! leg 2 (the `Exten`, the client). Both answering bridges them; after the talk time the courier
//! hangs up. Each phone's behaviour comes from its number's last digit ([`Outcome`]).
//!
//! The endings are tables of steps copied from the real Asterisk 22 transcripts
//! (`tests/fixtures/asterisk-22/ami/`), so the order of `DialEnd`, `OriginateResponse`, `Hangup` and `Cdr`
//! events is what a real PBX produced for that scenario: it differs between scenarios. A Local channel is a pair
//! (`;1` faces the originate or the dialler, `;2` runs the phone); other technologies have one
//! channel per leg, and steps about a missing `;2` half are skipped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{oneshot, watch};
use tracing::Instrument;

use super::astdb::AstDb;
use super::channel::{Channel, Party, State, UNKNOWN};
use super::dialplan::{self, expand, Dialplan};
use super::originate::{DialTarget, OriginateRequest, Tech};
use super::pbx::{HangupSignal, Pbx};
use super::phones::{self, Outcome};
use super::wav;
use super::wire::{class, Wire};
use dialback_logging::Chain;

/// Where the simulated phones "live": the context of leg 2's Local channels (as in the
/// reference dialplan, `Dial(Local/${EXTEN}@phones,30)`).
const PHONES_CONTEXT: &str = "phones";
/// The recording runs at priority 3 of the reference `[from-courier]` context, `Dial` at 4.
const MIXMONITOR_PRIORITY: u32 = 3;
const DIAL_PRIORITY: u32 = 4;
const NORMAL_CLEARING: u16 = 16;

/// Starts a call on the simulator's task set. For a synchronous Originate, `sync_reply` gets
/// whether the courier answered instead of an OriginateResponse event being sent.
pub(crate) fn start(pbx: Arc<Pbx>, request: OriginateRequest, sync_reply: Option<oneshot::Sender<bool>>) {
    let tasks = pbx.tasks.clone();
    pbx.calls_in_progress.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let in_progress = InProgress(pbx.clone());
    tasks.spawn(async move {
        let _in_progress = in_progress;
        let mut call = Call::new(pbx, request, sync_reply);
        let span = tracing::info_span!(
            "pbx_sim_call",
            action_id = call.request.action_id.as_deref().unwrap_or(""),
            uniqueid = tracing::field::Empty
        );
        call.play().instrument(span).await;
    });
}

/// Counts a call in `Simulator::calls_in_progress` until its task ends.
struct InProgress(Arc<Pbx>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.calls_in_progress.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    CourierOuter,
    CourierInner,
    ClientOuter,
    ClientInner,
    /// The courier's phone, when leg 1 runs through a context of the loaded dialplan: the `;2`
    /// half dials it (`Local/<courier>@<context>`, the context's `Dial`).
    CourierPhone,
}
use Role::*;

impl Role {
    fn outer(self) -> Role {
        match self {
            CourierInner => CourierOuter,
            ClientInner => ClientOuter,
            outer => outer,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leg {
    Courier,
    Client,
}

/// A leg's `;1` (or only) channel and its `;2` half.
fn roles(leg: Leg) -> (Role, Role) {
    match leg {
        Leg::Courier => (CourierOuter, CourierInner),
        Leg::Client => (ClientOuter, ClientInner),
    }
}

/// Which hangup cause a step uses.
#[derive(Clone, Copy, Debug)]
enum Cause {
    /// The current leg's phone outcome (17 busy, 19 no answer, 21 rejected, 34 congestion).
    Phone,
    /// What the `;1` half of a Local pair reported for that outcome (0 for busy/congestion).
    PhoneOuter,
    Normal,
    Unknown,
    /// The call's end: 16 after talking, 0 when the dialplan had nothing to run, or the cause of
    /// an AMI `Hangup`.
    End,
}

#[derive(Clone, Copy, Debug)]
enum Disposition {
    Phone,
    Answered,
    NoAnswer,
}

#[derive(Clone, Copy, Debug)]
enum DialStatus {
    Phone,
    Cancel,
}

#[derive(Clone, Copy, Debug)]
enum Step {
    /// Newstate to the phone's failure state, if it has one.
    FailedState(Role),
    DialEnd(DialStatus),
    OriginateResponse,
    Cdr(Role, Disposition),
    HangupRequest(Role, Cause),
    SoftHangupRequest(Role, Cause),
    Hangup(Role, Cause),
    /// The channel moves on to another application (what its next CDR reports).
    App(Role, &'static str),
    /// The answered courier moves to the Originate's Context/Exten (it may not exist).
    EnterDialplan,
    BridgeLeave(Role),
    BridgeDestroy,
}
use Step::*;

/// The courier is busy (c7_leg1_busy_channelid).
const COURIER_BUSY: &[Step] = &[
    FailedState(CourierInner),
    OriginateResponse,
    Cdr(CourierOuter, Disposition::Phone),
    DialEnd(DialStatus::Phone),
    HangupRequest(CourierInner, Cause::PhoneOuter),
    Hangup(CourierOuter, Cause::PhoneOuter),
    SoftHangupRequest(CourierInner, Cause::Normal),
    Hangup(CourierInner, Cause::Phone),
    Cdr(CourierInner, Disposition::Phone),
];

/// The courier's line is congested (c4_leg1_congestion).
const COURIER_CONGESTION: &[Step] = &[
    Cdr(CourierOuter, Disposition::Phone),
    OriginateResponse,
    Cdr(CourierInner, Disposition::Phone),
    FailedState(CourierInner),
    DialEnd(DialStatus::Phone),
    HangupRequest(CourierInner, Cause::PhoneOuter),
    Hangup(CourierOuter, Cause::PhoneOuter),
    SoftHangupRequest(CourierInner, Cause::Normal),
    Hangup(CourierInner, Cause::Phone),
];

/// The courier's phone rejects the call before answering (c12_leg1_rejected).
const COURIER_REJECTS: &[Step] = &[
    SoftHangupRequest(CourierInner, Cause::Normal),
    HangupRequest(CourierOuter, Cause::Phone),
    Hangup(CourierInner, Cause::Phone),
    Cdr(CourierInner, Disposition::Phone),
    DialEnd(DialStatus::Phone),
    OriginateResponse,
    Hangup(CourierOuter, Cause::PhoneOuter),
    Cdr(CourierOuter, Disposition::Phone),
];

/// The courier's phone rang for the whole Timeout (c2_leg1_noanswer; no DialEnd was sent).
const COURIER_NO_ANSWER: &[Step] = &[
    HangupRequest(CourierInner, Cause::Phone),
    SoftHangupRequest(CourierInner, Cause::Normal),
    Hangup(CourierInner, Cause::Phone),
    Hangup(CourierOuter, Cause::PhoneOuter),
    Cdr(CourierInner, Disposition::Phone),
    Cdr(CourierOuter, Disposition::Phone),
    OriginateResponse,
];

/// An AMI `Hangup` while the courier's phone rings (Reason 1).
const CANCELLED_WHILE_COURIER_RINGS: &[Step] = &[
    SoftHangupRequest(CourierOuter, Cause::End),
    HangupRequest(CourierInner, Cause::End),
    Hangup(CourierInner, Cause::End),
    DialEnd(DialStatus::Cancel),
    Hangup(CourierOuter, Cause::End),
    Cdr(CourierInner, Disposition::NoAnswer),
    Cdr(CourierOuter, Disposition::NoAnswer),
    OriginateResponse,
];

/// The courier answered but nothing more runs on that channel: the context or extension does
/// not exist (d2_bad_context_nopri, cause 0), or an `Application` originate finished (cause 16).
const COURIER_ONLY_ENDS: &[Step] = &[
    SoftHangupRequest(CourierOuter, Cause::Normal),
    OriginateResponse,
    EnterDialplan,
    HangupRequest(CourierInner, Cause::End),
    Hangup(CourierOuter, Cause::End),
    SoftHangupRequest(CourierInner, Cause::Normal),
    Hangup(CourierInner, Cause::End),
    Cdr(CourierOuter, Disposition::Answered),
    Cdr(CourierInner, Disposition::Answered),
];

/// The client's phone is busy, congested, rejects or never answers (f_injection's second
/// originate, leg-2 busy); the dialplan then hangs the courier up and the CDR forks.
const CLIENT_FAILED: &[Step] = &[
    FailedState(ClientInner),
    DialEnd(DialStatus::Phone),
    HangupRequest(ClientInner, Cause::PhoneOuter),
    SoftHangupRequest(ClientInner, Cause::Normal),
    Cdr(ClientInner, Disposition::Phone),
    Hangup(ClientOuter, Cause::PhoneOuter),
    Hangup(ClientInner, Cause::Phone),
    SoftHangupRequest(CourierOuter, Cause::Normal),
    HangupRequest(CourierInner, Cause::Normal),
    Hangup(CourierOuter, Cause::Normal),
    Cdr(CourierOuter, Disposition::Phone),
    App(CourierOuter, "Hangup"),
    SoftHangupRequest(CourierInner, Cause::Normal),
    Hangup(CourierInner, Cause::Normal),
    Cdr(CourierOuter, Disposition::Answered),
    Cdr(CourierInner, Disposition::Answered),
];

/// An AMI `Hangup` (or the courier hanging up) while the client's phone rings
/// (c5_leg2_noanswer: Dial reports CANCEL).
const CANCELLED_WHILE_CLIENT_RINGS: &[Step] = &[
    SoftHangupRequest(CourierInner, Cause::Normal),
    HangupRequest(CourierOuter, Cause::End),
    Hangup(CourierInner, Cause::End),
    DialEnd(DialStatus::Cancel),
    HangupRequest(ClientInner, Cause::Normal),
    Hangup(ClientOuter, Cause::End),
    SoftHangupRequest(CourierOuter, Cause::Normal),
    Cdr(CourierInner, Disposition::Answered),
    Cdr(CourierOuter, Disposition::NoAnswer),
    Cdr(ClientInner, Disposition::NoAnswer),
    Hangup(CourierOuter, Cause::End),
    SoftHangupRequest(ClientInner, Cause::Normal),
    Hangup(ClientInner, Cause::Normal),
];

/// The dialplan hangs the answered courier up (or runs out) before any leg 2: the answer was not
/// confirmed (j2_confirm_voicemail: `Hangup()` at the `unconfirmed` label).
const HUNG_UP_BY_THE_DIALPLAN: &[Step] = &[
    SoftHangupRequest(CourierOuter, Cause::End),
    HangupRequest(CourierInner, Cause::End),
    Hangup(CourierOuter, Cause::End),
    Cdr(CourierOuter, Disposition::Answered),
    SoftHangupRequest(CourierInner, Cause::End),
    Hangup(CourierInner, Cause::End),
    Cdr(CourierInner, Disposition::Answered),
];

/// The courier hangs up after talking (b_answered).
const TALK_ENDED: &[Step] = &[
    SoftHangupRequest(CourierInner, Cause::End),
    HangupRequest(CourierOuter, Cause::End),
    Hangup(CourierInner, Cause::End),
    Cdr(CourierInner, Disposition::Answered),
    BridgeLeave(CourierOuter),
    SoftHangupRequest(CourierOuter, Cause::End),
    Cdr(CourierOuter, Disposition::Answered),
    Hangup(CourierOuter, Cause::End),
    BridgeLeave(ClientOuter),
    BridgeDestroy,
    HangupRequest(ClientInner, Cause::End),
    Hangup(ClientOuter, Cause::End),
    SoftHangupRequest(ClientInner, Cause::End),
    Hangup(ClientInner, Cause::Unknown),
    Cdr(ClientInner, Disposition::Answered),
];

/// How a ringing phone ended.
enum Rang {
    Outcome(Outcome),
    HungUp(u16),
    Stopped,
}

enum Waited {
    Elapsed,
    HungUp(u16),
    Stopped,
}

struct Call {
    pbx: Arc<Pbx>,
    request: OriginateRequest,
    sync_reply: Option<oneshot::Sender<bool>>,
    /// Indexed by `Role`.
    channels: [Option<Channel>; 5],
    /// The leg whose table is running, and its phone's outcome.
    leg: Leg,
    phone: Outcome,
    /// `(success, reason)` for the OriginateResponse.
    originate_result: (bool, u8),
    response_sent: bool,
    end_cause: u16,
    bridge_id: String,
    bridged: usize,
    hangup_signal: Arc<HangupSignal>,
    hangup: watch::Receiver<Option<u16>>,
    claimed_uniqueids: Vec<String>,
    /// The channel variables the loaded dialplan reads and sets (with a `dialplan` only).
    vars: HashMap<String, String>,
    /// The recording's file name, when the dialplan's MixMonitor named it.
    recording_name: Option<String>,
    /// The hangup handlers (context, extension) the dialplan pushed on the courier's channel
    /// (`Set(CHANNEL(hangup_handler_push)=context,exten,1)`), run as it hangs up.
    hangup_handlers: Vec<(String, String)>,
    /// Those the courier's context pushed on the `;2` half, when leg 1 runs through one.
    leg1_handlers: Vec<(String, String)>,
    /// The bridge of the `;2` half and the courier's phone, once they answered.
    leg1_bridge_id: String,
    /// When the client and the courier were bridged (the CDR's billable seconds count from it).
    talk_started: Option<OffsetDateTime>,
}

impl Drop for Call {
    fn drop(&mut self) {
        let names: Vec<String> = self.channels.iter().flatten().map(|c| c.name.clone()).collect();
        let uniqueids: Vec<String> = self.channels.iter().flatten().map(|c| c.uniqueid.clone()).collect();
        self.pbx.release(&names, &uniqueids, &self.claimed_uniqueids);
    }
}

impl Call {
    fn new(pbx: Arc<Pbx>, request: OriginateRequest, sync_reply: Option<oneshot::Sender<bool>>) -> Call {
        let (signal, hangup) = watch::channel(None);
        Call {
            pbx,
            request,
            sync_reply,
            channels: Default::default(),
            leg: Leg::Courier,
            phone: Outcome::Answer,
            originate_result: (false, 0),
            response_sent: false,
            end_cause: NORMAL_CLEARING,
            bridge_id: uuid::Uuid::new_v4().to_string(),
            bridged: 0,
            hangup_signal: Arc::new(signal),
            hangup,
            claimed_uniqueids: Vec::new(),
            vars: HashMap::new(),
            recording_name: None,
            hangup_handlers: Vec::new(),
            leg1_handlers: Vec::new(),
            leg1_bridge_id: uuid::Uuid::new_v4().to_string(),
            talk_started: None,
        }
    }

    async fn play(&mut self) {
        let Some(courier) = self.request.target.clone() else {
            tracing::info!(channel = %self.request.channel, "channel cannot be created: technology or number unknown");
            return self.send_originate_response();
        };
        if !self.open_courier_leg(&courier) {
            tracing::info!("ChannelId already in use");
            return self.send_originate_response();
        }
        tracing::Span::current().record("uniqueid", self.channel(CourierOuter).uniqueid.as_str());
        self.run_courier_context(&courier);
        match self.ring(Leg::Courier, Outcome::for_number(&courier.number), self.request.timeout).await {
            Rang::Stopped => return,
            Rang::HungUp(cause) => {
                self.end_cause = cause;
                self.originate_result = (false, 1);
                return self.finish(CANCELLED_WHILE_COURIER_RINGS, "hung up while the courier rang");
            }
            Rang::Outcome(Outcome::Answer) => {}
            Rang::Outcome(failed) => {
                self.phone_ended(CourierInner, failed);
                self.courier_phone_failed(failed);
                self.originate_result = (false, failed.reason());
                let table = match failed {
                    Outcome::Busy => COURIER_BUSY,
                    Outcome::Congestion => COURIER_CONGESTION,
                    Outcome::Reject => COURIER_REJECTS,
                    _ => COURIER_NO_ANSWER,
                };
                return self.finish(table, "courier leg failed");
            }
        }
        self.courier_phone_answered();
        self.answer(Leg::Courier);
        self.bridge_courier_phone();
        self.originate_result = (true, Outcome::Answer.reason());
        if let Some((app, data)) = self.request.application.clone() {
            return self.run_application(&app, &data).await;
        }
        if !self.request.has_dialplan {
            self.end_cause = 0;
            return self.finish(COURIER_ONLY_ENDS, "nothing in the dialplan for the answered courier");
        }
        match self.pbx.config.dialplan.clone() {
            Some(dialplan) => self.run_dialplan(&dialplan, &courier).await,
            None => {
                self.enter_courier_context(&courier);
                let client = client_target(&courier, &self.request.exten);
                self.dial_client(client, self.pbx.config.dial_timeout).await;
            }
        }
    }

    /// Runs the loaded dialplan's extension for the Originate's Context/Exten on the answered
    /// courier's channel, application by application, as Asterisk's PBX thread would.
    async fn run_dialplan(&mut self, dialplan: &Dialplan, courier: &DialTarget) {
        let (context, exten) = (self.request.context.clone(), self.request.exten.clone());
        let Some(extension) = dialplan.find(&context, &exten).cloned() else {
            self.end_cause = 0;
            return self.finish(COURIER_ONLY_ENDS, "the extension went away");
        };
        self.enter_dialplan();
        let courier_channel = self.channel(CourierOuter);
        let channel_vars = [
            ("UNIQUEID", courier_channel.uniqueid.clone()),
            ("LINKEDID", courier_channel.linkedid.clone()),
            ("CHANNEL", courier_channel.name.clone()),
        ];
        self.vars = self.request.variables.iter().cloned().collect();
        self.vars.insert("EXTEN".into(), exten.clone());
        self.vars.insert("CONTEXT".into(), context.clone());
        for (name, value) in channel_vars {
            self.vars.insert(name.into(), value);
        }
        self.send_originate_response();
        let mut at = 0;
        while let Some(step) = extension.priorities.get(at) {
            at += 1;
            let data = expand(&step.data, &self.vars);
            let channel = self.channel_mut(CourierOuter);
            channel.priority = step.number;
            channel.set_app(step.app, &data);
            match step.app {
                "Set" => self.set(&data),
                "MixMonitor" => {
                    let file = data.split(',').next().unwrap_or_default();
                    self.recording_name = Some(wav::dialplan_file_name(file));
                    self.pbx.publish(self.channel(CourierOuter).event("MixMonitorStart").into_event());
                }
                // False: the courier hung up during the prompt, and nothing more runs.
                "Read" if !self.read_digit(&data, courier).await => return,
                "UserEvent" => self.publish_user_event(&data),
                "GotoIf" => {
                    let (condition, labels) = data.split_once('?').unwrap_or((data.as_str(), ""));
                    let (if_true, if_false) = labels.split_once(':').unwrap_or((labels, ""));
                    let jump = if dialplan::condition(condition) { if_true } else { if_false };
                    if !jump.is_empty() {
                        match extension.target(jump) {
                            Some(index) => at = index,
                            None => tracing::warn!(jump, "GotoIf to a priority that does not exist; going on"),
                        }
                    }
                }
                "Goto" => match extension.target(&data) {
                    Some(index) => at = index,
                    None => tracing::warn!(target = data, "Goto to a priority that does not exist; going on"),
                },
                "Dial" => {
                    let mut args = data.split(',');
                    let target = args.next().unwrap_or_default();
                    let timeout = args.next().and_then(|t| t.trim().parse::<u64>().ok());
                    let timeout = timeout.map_or(self.pbx.config.dial_timeout, Duration::from_secs);
                    // Several targets (`&`) ring together; the simulator rings the first.
                    let first = target.split('&').next().unwrap_or_default();
                    match DialTarget::parse(first) {
                        Some(client) => return self.dial_client(client, timeout).await,
                        None => {
                            tracing::info!(target, "Dial: the channel cannot be created");
                            break;
                        }
                    }
                }
                "Wait" => {
                    let seconds = data.trim().parse::<f64>().unwrap_or(0.0).clamp(0.0, 3600.0);
                    match self.wait(Duration::from_secs_f64(seconds)).await {
                        Waited::Elapsed => {}
                        Waited::Stopped => return,
                        Waited::HungUp(cause) => {
                            self.end_cause = cause;
                            break;
                        }
                    }
                }
                "Hangup" => {
                    self.end_cause = data.trim().parse().unwrap_or(NORMAL_CLEARING);
                    break;
                }
                // NoOp, Verbose, Answer, Progress, Ringing, Playback: nothing that shows on AMI here.
                _ => {}
            }
        }
        // The extension ran out (or hung up): Asterisk hangs the channel up.
        self.finish(HUNG_UP_BY_THE_DIALPLAN, "the dialplan hung up");
    }

    /// `Read(var,prompt,maxdigits,options,attempts,timeout)`: the courier's confirmation. A phone
    /// that answers like a person presses 1 a moment after answering; a voicemail (a number
    /// ending in 5) never presses; a prompt file that is not installed fails at once. Sets `var`
    /// and READSTATUS as Asterisk does; false when the courier hung up meanwhile.
    async fn read_digit(&mut self, data: &str, courier: &DialTarget) -> bool {
        let args: Vec<&str> = data.split(',').collect();
        let var = args.first().copied().unwrap_or("READ").trim().to_owned();
        let prompt = args.get(1).copied().unwrap_or_default().trim();
        let timeout = args.get(5).and_then(|t| t.trim().parse::<f64>().ok()).unwrap_or(10.0).clamp(0.0, 3600.0);
        // Read sets READSTATUS=ERROR first, whatever follows (app_read.c).
        self.publish_var_set(CourierOuter, "READSTATUS", "ERROR");
        let (digit, status) = if !prompt.is_empty() && !self.pbx.config.sounds.iter().any(|s| s == prompt) {
            (String::new(), "ERROR")
        } else {
            // A key exactly at the timeout is too late: Read has returned by then.
            let press_after = self.pbx.config.confirm_press;
            let presses = phones::presses_when_asked(&courier.number) && press_after.as_secs_f64() < timeout;
            let waits = if presses { press_after } else { Duration::from_secs_f64(timeout) };
            match self.wait(waits).await {
                Waited::Stopped => return false,
                Waited::HungUp(cause) => {
                    self.end_cause = cause;
                    self.finish(HUNG_UP_BY_THE_DIALPLAN, "hung up during the prompt");
                    return false;
                }
                Waited::Elapsed if presses => {
                    self.publish_dtmf("DTMFBegin", None);
                    self.publish_dtmf("DTMFEnd", Some(100));
                    ("1".to_owned(), "OK")
                }
                Waited::Elapsed => (String::new(), "TIMEOUT"),
            }
        };
        self.vars.insert(var.clone(), digit.clone());
        self.vars.insert("READSTATUS".into(), status.to_owned());
        self.publish_var_set(CourierOuter, &var, &digit);
        self.publish_var_set(CourierOuter, "READSTATUS", status);
        true
    }

    fn publish_dtmf(&self, event: &str, duration_ms: Option<u32>) {
        let mut wire = self.channel(CourierOuter).event_of_class(event, class::DTMF);
        wire.header("Digit", "1");
        if let Some(ms) = duration_ms {
            wire.header("DurationMs", &ms.to_string());
        }
        wire.header("Direction", "Received");
        self.pbx.publish(wire.into_event());
    }

    /// `UserEvent(name,Header: value,...)`: the channel's block, then `UserEvent: name` and the
    /// headers in the order written.
    fn publish_user_event(&self, data: &str) {
        let mut parts = data.split(',');
        let name = parts.next().unwrap_or_default().trim();
        let mut wire = self.channel(CourierOuter).event_of_class("UserEvent", class::USER);
        wire.header("UserEvent", name);
        for header in parts {
            if let Some((key, value)) = header.split_once(':') {
                wire.header(key.trim(), value.strip_prefix(' ').unwrap_or(value));
            }
        }
        self.pbx.publish(wire.into_event());
    }

    /// When the Originate's channel is `Local/<courier>@<context>` and the loaded dialplan has that
    /// context (dialback's courier context, `domain::dialplan`), its `;2` half runs it: the hangup
    /// handlers it pushes are kept for that half, and its `Dial` opens the courier's phone, which
    /// then rings as the courier's number says (tests/fixtures/asterisk-22/ami-k5). The ringing
    /// ends with the Originate's `Timeout`, as with dialback's context, whose `Dial` has none.
    fn run_courier_context(&mut self, courier: &DialTarget) {
        if courier.tech != Tech::Local {
            return;
        }
        let Some(dialplan) = self.pbx.config.dialplan.clone() else { return };
        let Some(extension) = dialplan.find(&courier.peer, &courier.number).cloned() else { return };
        let inner = self.channel(CourierInner);
        let mut vars: HashMap<String, String> = self.request.variables.iter().cloned().collect();
        vars.insert("EXTEN".into(), courier.number.clone());
        vars.insert("UNIQUEID".into(), inner.uniqueid.clone());
        for step in &extension.priorities {
            let data = expand(&step.data, &vars);
            self.channel_mut(CourierInner).priority = step.number;
            self.channel_mut(CourierInner).set_app(step.app, &data);
            match step.app {
                "Set" => match data.split_once('=') {
                    Some((name, value)) if name.eq_ignore_ascii_case("CHANNEL(hangup_handler_push)") => {
                        self.leg1_handlers.push(handler(value));
                    }
                    Some((name, value)) => {
                        vars.insert(name.to_owned(), value.to_owned());
                    }
                    None => {}
                },
                "Dial" => {
                    let target = data.split(',').next().unwrap_or_default();
                    let Some(phone) = DialTarget::parse(target.split('&').next().unwrap_or_default()) else {
                        tracing::info!(target, "leg 1's Dial: the channel cannot be created");
                        return;
                    };
                    let (name, linkedid) =
                        (self.pbx.new_channel_sequence(), self.channel(CourierOuter).linkedid.clone());
                    let name = match phone.tech {
                        Tech::Local => format!("Local/{}@{}-{name};1", phone.number, phone.peer),
                        tech => format!("{}/{}-{name}", tech.name(), phone.peer),
                    };
                    let mut channel =
                        Channel::new(name, self.pbx.new_uniqueid(), linkedid, State::Down, &phone.peer, &phone.number);
                    channel.caller =
                        Party { num: phone.number.clone(), name: self.channel(CourierInner).caller.name.clone() };
                    channel.connected = self.channel(CourierInner).caller.clone();
                    self.add_channel(CourierPhone, channel);
                    let mut wire = self.courier_phone_dial("DialBegin");
                    wire.header("DialString", &phone.dial_string);
                    self.pbx.publish(wire.into_event());
                    return;
                }
                _ => {}
            }
        }
    }

    /// A Dial event of the courier's context: the `;2` half dialling the courier's phone.
    fn courier_phone_dial(&self, event: &str) -> Wire {
        let mut wire = Wire::event(event, class::CALL);
        self.channel(CourierInner).write_block(&mut wire, "");
        self.channel(CourierPhone).write_block(&mut wire, "Dest");
        wire
    }

    /// The `;2` half's `Dial` of the courier's phone ended with `status`.
    fn publish_courier_phone_dial_end(&self, status: &str) {
        let mut wire = self.courier_phone_dial("DialEnd");
        wire.header("DialStatus", status);
        self.pbx.publish(wire.into_event());
    }

    /// The courier's phone (dialled by the courier's context) did not answer.
    fn courier_phone_failed(&mut self, failed: Outcome) {
        if self.channels[CourierPhone as usize].is_none() {
            return;
        }
        self.publish_courier_phone_dial_end(failed.dial_status());
        self.publish_hangup(CourierPhone, "Hangup", Cause::Phone);
    }

    /// The courier's phone (dialled by the courier's context) answered.
    fn courier_phone_answered(&mut self) {
        if self.channels[CourierPhone as usize].is_none() {
            return;
        }
        self.newstate(CourierPhone, State::Up);
        self.publish_courier_phone_dial_end("ANSWER");
    }

    /// The courier's context bridges the `;2` half with the answered phone (the courier's answer
    /// shows as this bridge, not leg 2's).
    fn bridge_courier_phone(&mut self) {
        if self.channels[CourierPhone as usize].is_none() {
            return;
        }
        self.publish_leg1_bridge("BridgeCreate", None, 0);
        self.publish_leg1_bridge("BridgeEnter", Some(CourierPhone), 1);
        self.publish_leg1_bridge("BridgeEnter", Some(CourierInner), 2);
    }

    fn publish_leg1_bridge(&self, event: &str, member: Option<Role>, members: usize) {
        let mut wire = Wire::event(event, class::CALL);
        bridge_block(&mut wire, &self.leg1_bridge_id, members);
        if let Some(role) = member {
            self.channel(role).write_block(&mut wire, "");
        }
        self.pbx.publish(wire.into_event());
    }

    /// Creates leg 1 (Newchannel, VarSet, LocalBridge, DialBegin); `false` if its uniqueid is taken.
    fn open_courier_leg(&mut self, target: &DialTarget) -> bool {
        let outer_id = self.request.channel_id.clone().unwrap_or_else(|| self.pbx.new_uniqueid());
        let inner_id = match (&self.request.other_channel_id, &self.request.channel_id) {
            (Some(other), _) => other.clone(),
            (None, Some(id)) => format!("{id};2"),
            (None, None) => self.pbx.new_uniqueid(),
        };
        let ids = match target.tech {
            Tech::Local => vec![outer_id.clone(), inner_id.clone()],
            _ => vec![outer_id.clone()],
        };
        if !self.pbx.claim_uniqueids(&ids) {
            return false;
        }
        self.claimed_uniqueids = ids;
        let linkedid = outer_id.clone();
        self.open_leg(Leg::Courier, target, [outer_id, inner_id], &linkedid);
        let caller = self.request.caller.clone().unwrap_or_else(Party::unknown);
        let user_field = self.request.variable("CDR(userfield)").unwrap_or_default().to_owned();
        for channel in self.channels.iter_mut().flatten() {
            channel.caller = caller.clone();
            channel.connected = caller.clone();
        }
        let courier = self.channel_mut(CourierOuter);
        courier.cdr.user_field = user_field;
        courier.set_app("AppDial2", "(Outgoing Line)");
        for role in [CourierOuter, CourierInner] {
            for (name, value) in &self.request.variables {
                self.publish_var_set(role, name, value);
            }
        }
        self.publish_local_bridge(Leg::Courier, target);
        self.dial_begin(Leg::Courier, target);
        true
    }

    /// Creates one leg's channels and announces them with Newchannel (caller ids still
    /// `<unknown>` at that point, as in Asterisk's).
    fn open_leg(&mut self, leg: Leg, target: &DialTarget, uniqueids: [String; 2], linkedid: &str) {
        let (outer, inner) = roles(leg);
        let sequence = self.pbx.new_channel_sequence();
        let [outer_id, inner_id] = uniqueids;
        if target.tech == Tech::Local {
            let base = format!("Local/{}@{}-{sequence}", target.number, target.peer);
            let (context, exten) = (target.peer.as_str(), target.number.as_str());
            self.add_channel(
                outer,
                Channel::new(format!("{base};1"), outer_id, linkedid.into(), State::Down, context, exten),
            );
            self.add_channel(
                inner,
                Channel::new(format!("{base};2"), inner_id, linkedid.into(), State::Ring, context, exten),
            );
        } else {
            let name = format!("{}/{}-{sequence}", target.tech.name(), target.peer);
            let (context, exten) = match leg {
                // An originated channel starts in its endpoint's context at `s`.
                Leg::Courier => ("default".to_owned(), "s".to_owned()),
                Leg::Client => (self.request.context.clone(), target.number.clone()),
            };
            self.add_channel(outer, Channel::new(name, outer_id, linkedid.into(), State::Down, &context, &exten));
        }
    }

    fn add_channel(&mut self, role: Role, channel: Channel) {
        self.pbx.publish(channel.event("Newchannel").into_event());
        self.pbx.register_channel(&channel, &self.hangup_signal);
        self.channels[role as usize] = Some(channel);
    }

    /// Rings `leg`'s phone for at most `limit`: `Outcome::Answer` once it answers, its failure
    /// otherwise (`NoAnswer` when it rings past the limit).
    async fn ring(&mut self, leg: Leg, phone: Outcome, limit: Duration) -> Rang {
        self.leg = leg;
        self.phone = phone;
        let rings_for = match phone {
            Outcome::Answer => self.pbx.config.ring,
            Outcome::NoAnswer => Duration::MAX,
            failed => return Rang::Outcome(failed),
        };
        if !rings_for.is_zero() {
            self.newstate(roles(leg).0, State::Ringing);
            self.publish_dial(leg, "DialState", "RINGING");
            match self.wait(rings_for.min(limit)).await {
                Waited::Elapsed => {}
                Waited::HungUp(cause) => return Rang::HungUp(cause),
                Waited::Stopped => return Rang::Stopped,
            }
        }
        let outcome = if rings_for <= limit { Outcome::Answer } else { Outcome::NoAnswer };
        self.phone = outcome;
        Rang::Outcome(outcome)
    }

    /// The phone answered: both halves go Up and the dialler sees ANSWER.
    fn answer(&mut self, leg: Leg) {
        let (outer, inner) = roles(leg);
        let now = OffsetDateTime::now_utc();
        self.newstate(inner, State::Up);
        self.newstate(outer, State::Up);
        self.publish_dial(leg, "DialEnd", "ANSWER");
        for role in [outer, inner] {
            if let Some(channel) = &mut self.channels[role as usize] {
                channel.cdr.answer = Some(now);
            }
        }
        if let Some(phone) = &mut self.channels[inner as usize] {
            phone.set_app("Answer", "");
        }
    }

    fn enter_dialplan(&mut self) {
        let (context, exten) = (self.request.context.clone(), self.request.exten.clone());
        self.channel_mut(CourierOuter).goto(&context, &exten, 1);
    }

    /// The answered courier enters `[from-courier]`: userfield, recording, then `Dial`.
    fn enter_courier_context(&mut self, courier: &DialTarget) {
        self.enter_dialplan();
        let call_id = self.request.variable("DIALBACK_CALL_ID").map(str::to_owned);
        let dial_data = format!(
            "{}/{},{}",
            courier.tech.name(),
            client_target(courier, &self.request.exten).dial_string,
            self.pbx.config.dial_timeout.as_secs()
        );
        if let Some(call_id) = call_id {
            self.channel_mut(CourierOuter).cdr.user_field = call_id;
        }
        self.send_originate_response();
        let channel = self.channel_mut(CourierOuter);
        channel.priority = MIXMONITOR_PRIORITY;
        let started = channel.event("MixMonitorStart").into_event();
        channel.priority = DIAL_PRIORITY;
        channel.set_app("Dial", &dial_data);
        self.pbx.publish(started);
    }

    /// Leg 2: dial the client, bridge on answer, talk, record, hang up.
    async fn dial_client(&mut self, client: DialTarget, timeout: Duration) {
        let courier_party = self.channel(CourierOuter).caller.clone();
        let linkedid = self.channel(CourierOuter).linkedid.clone();
        let ids = [self.pbx.new_uniqueid(), self.pbx.new_uniqueid()];
        self.open_leg(Leg::Client, &client, ids, &linkedid);
        let client_party = Party { num: client.number.clone(), name: courier_party.name.clone() };
        let dialled = self.channel_mut(ClientOuter);
        dialled.caller = client_party.clone();
        dialled.connected = courier_party.clone();
        if let Some(phone) = &mut self.channels[ClientInner as usize] {
            phone.caller = courier_party;
            phone.connected = client_party;
        }
        self.pbx.client_dials.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.publish_local_bridge(Leg::Client, &client);
        let client_name = self.channel(ClientOuter).name.clone();
        self.channel_mut(CourierOuter).cdr.destination_channel = client_name;
        self.dial_begin(Leg::Client, &client);
        match self.ring(Leg::Client, Outcome::for_number(&client.number), timeout).await {
            Rang::Stopped => return,
            Rang::HungUp(cause) => {
                self.end_cause = cause;
                self.vars.insert("DIALSTATUS".into(), "CANCEL".into());
                return self.finish(CANCELLED_WHILE_CLIENT_RINGS, "hung up while the client rang");
            }
            Rang::Outcome(Outcome::Answer) => {}
            Rang::Outcome(failed) => {
                self.phone_ended(ClientInner, failed);
                self.vars.insert("DIALSTATUS".into(), failed.dial_status().into());
                return self.finish(CLIENT_FAILED, "client leg failed");
            }
        }
        self.vars.insert("DIALSTATUS".into(), "ANSWER".into());
        self.answer(Leg::Client);
        self.channel_mut(ClientOuter).exten.clear();
        self.publish_bridge("BridgeCreate", None);
        for role in [ClientOuter, CourierOuter] {
            self.bridged += 1;
            self.publish_bridge("BridgeEnter", Some(role));
        }
        let talk_started = OffsetDateTime::now_utc();
        self.talk_started = Some(talk_started);
        match self.wait(self.pbx.config.talk).await {
            Waited::Stopped => return,
            Waited::HungUp(cause) => self.end_cause = cause,
            Waited::Elapsed => self.end_cause = NORMAL_CLEARING,
        }
        self.save_recording(talk_started).await;
        let talked = (OffsetDateTime::now_utc() - talk_started).whole_seconds().to_string();
        if let Some(courier_phone) = &mut self.channels[CourierInner as usize] {
            courier_phone.set_app("Hangup", "");
        }
        if let Some(client_phone) = &mut self.channels[ClientInner as usize] {
            client_phone.set_app("Wait", &talked);
        }
        self.finish(TALK_ENDED, "talked");
    }

    /// An `Application` originate: the answered courier runs it (`Wait` for its Data seconds,
    /// anything else for the talk time), then hangs up.
    async fn run_application(&mut self, app: &str, data: &str) {
        self.send_originate_response();
        self.channel_mut(CourierOuter).set_app(app, data);
        let runs_for = match data.trim().parse::<f64>() {
            Ok(seconds) if app.eq_ignore_ascii_case("Wait") && seconds >= 0.0 => {
                Duration::from_secs_f64(seconds.min(3600.0))
            }
            _ => self.pbx.config.talk,
        };
        self.end_cause = match self.wait(runs_for).await {
            Waited::Stopped => return,
            Waited::HungUp(cause) => cause,
            Waited::Elapsed => NORMAL_CLEARING,
        };
        self.finish(COURIER_ONLY_ENDS, "application finished");
    }

    async fn wait(&mut self, duration: Duration) -> Waited {
        let hangup_requested = tokio::select! {
            _ = self.pbx.stop.cancelled() => return Waited::Stopped,
            _ = tokio::time::sleep(duration) => return Waited::Elapsed,
            changed = self.hangup.changed() => changed.is_ok(),
        };
        match *self.hangup.borrow() {
            Some(cause) if hangup_requested => Waited::HungUp(cause),
            // The sender lives in `self`, so this cannot happen; treat it as the end.
            _ => Waited::Stopped,
        }
    }

    fn finish(&mut self, steps: &[Step], how: &'static str) {
        self.run_hangup_handlers();
        self.end_courier_context();
        for step in steps {
            self.step(*step);
        }
        let (success, reason) = self.originate_result;
        tracing::info!(how, success, reason, leg = ?self.leg, phone = ?self.phone, cause = self.end_cause, "call ended");
    }

    /// `Set(name=value)` (expanded): the CDR's userfield, a hangup handler pushed on the
    /// courier's channel, an AstDB entry (`DB(family/key)`), or a channel variable.
    fn set(&mut self, data: &str) {
        let (name, value) = data.split_once('=').unwrap_or((data, ""));
        if name.eq_ignore_ascii_case("CDR(userfield)") {
            self.channel_mut(CourierOuter).cdr.user_field = value.to_owned();
        } else if name.eq_ignore_ascii_case("CHANNEL(hangup_handler_push)") {
            self.hangup_handlers.push(handler(value));
        } else if let Some(argument) = name.strip_prefix("DB(").and_then(|n| n.strip_suffix(')')) {
            match AstDb::split(argument) {
                Some((family, key)) => self.pbx.astdb.put(family, key, value),
                None => tracing::warn!(argument, "DB requires an argument, DB(<family>/<key>)=value"),
            }
        } else {
            self.vars.insert(name.to_owned(), value.to_owned());
        }
    }

    /// The hangup handlers pushed on the courier's channel, run as it hangs up (before its
    /// Hangup event), each its extension until `Return`: what they read is what Asterisk knows
    /// then (the `Dial` status, the hangup cause, the CDR's answer and billable seconds).
    fn run_hangup_handlers(&mut self) {
        let billsec = self.talk_started.map_or(0, |t| (OffsetDateTime::now_utc() - t).whole_seconds());
        let answered = self.channels[CourierOuter as usize].as_ref().and_then(|c| c.cdr.answer);
        let mut vars = std::mem::take(&mut self.vars);
        set_hangup_vars(&mut vars, self.end_cause, answered, billsec);
        let handlers = std::mem::take(&mut self.hangup_handlers);
        self.run_handlers(&handlers, &vars);
        self.vars = vars;
    }

    /// The `;2` half of leg 1 ends: the courier's phone hangs up (leaving their bridge, if it
    /// answered), and the handlers the courier's context pushed run with leg 1's `Dial` status and
    /// cause (tests/fixtures/asterisk-22/ami-k5: `ANSWER|16`, `BUSY|17`, `CONGESTION|34`, and
    /// `CANCEL|19` when the Originate's Timeout ended the ringing).
    fn end_courier_context(&mut self) {
        let Some(phone) = &self.channels[CourierPhone as usize] else { return };
        let answered = phone.state == State::Up;
        let courier_failed = !answered && self.leg == Leg::Courier && self.originate_result.1 != 1;
        let (status, cause) = match (answered, self.originate_result.1) {
            (true, _) => ("ANSWER", self.end_cause),
            (false, 1) => ("CANCEL", self.end_cause),
            (false, _) if self.phone == Outcome::NoAnswer => ("CANCEL", self.phone.cause()),
            (false, _) => (self.phone.dial_status(), self.phone.cause()),
        };
        if answered {
            self.publish_leg1_bridge("BridgeLeave", Some(CourierPhone), 1);
            self.publish_hangup(CourierPhone, "Hangup", Cause::End);
            self.publish_leg1_bridge("BridgeLeave", Some(CourierInner), 0);
            self.publish_leg1_bridge("BridgeDestroy", None, 0);
        } else if !courier_failed {
            // Cancelled while it rang (a failure was published as it happened).
            self.publish_courier_phone_dial_end("CANCEL");
            self.publish_hangup(CourierPhone, "Hangup", Cause::End);
        }
        let answered_at = self.channel(CourierInner).cdr.answer;
        let billsec = answered_at.map_or(0, |t| (OffsetDateTime::now_utc() - t).whole_seconds());
        let mut vars: HashMap<String, String> = self.request.variables.iter().cloned().collect();
        vars.insert("DIALSTATUS".into(), status.into());
        set_hangup_vars(&mut vars, cause, answered_at, billsec);
        let handlers = std::mem::take(&mut self.leg1_handlers);
        self.run_handlers(&handlers, &vars);
    }

    /// Runs each handler's extension with `vars` until `Return`: only what writes AstDB matters.
    fn run_handlers(&mut self, handlers: &[(String, String)], vars: &HashMap<String, String>) {
        let Some(dialplan) = self.pbx.config.dialplan.clone() else { return };
        for (context, exten) in handlers {
            let Some(extension) = dialplan.find(context, exten) else {
                tracing::warn!(context, exten, "hangup handler: no such extension in the context");
                continue;
            };
            for step in &extension.priorities {
                let data = expand(&step.data, vars);
                match step.app {
                    "Set" => self.set(&data),
                    "Return" | "Hangup" => break,
                    _ => {}
                }
            }
        }
    }

    fn step(&mut self, step: Step) {
        match step {
            FailedState(role) => {
                if let Some(state) = self.phone.failed_state() {
                    self.newstate(role, state);
                }
            }
            DialEnd(status) => {
                let status = match status {
                    DialStatus::Phone => self.phone.dial_status(),
                    DialStatus::Cancel => "CANCEL",
                };
                self.publish_dial(self.leg, "DialEnd", status);
            }
            OriginateResponse => self.send_originate_response(),
            Cdr(role, disposition) => {
                let disposition = match disposition {
                    Disposition::Phone => self.phone.disposition(),
                    Disposition::Answered => Outcome::Answer.disposition(),
                    Disposition::NoAnswer => Outcome::NoAnswer.disposition(),
                };
                self.post_cdr(role, disposition);
            }
            HangupRequest(role, cause) => self.publish_hangup(role, "HangupRequest", cause),
            SoftHangupRequest(role, cause) => self.publish_hangup(role, "SoftHangupRequest", cause),
            Hangup(role, cause) => self.publish_hangup(role, "Hangup", cause),
            App(role, app) => {
                if let Some(channel) = &mut self.channels[role as usize] {
                    channel.set_app(app, "");
                }
            }
            BridgeLeave(role) => {
                self.bridged = self.bridged.saturating_sub(1);
                self.publish_bridge("BridgeLeave", Some(role));
            }
            BridgeDestroy => self.publish_bridge("BridgeDestroy", None),
            EnterDialplan => self.enter_dialplan(),
        }
    }

    /// Records where a failing phone's dialplan stopped (its CDR's LastApplication).
    fn phone_ended(&mut self, phone: Role, outcome: Outcome) {
        if let Some(channel) = &mut self.channels[phone as usize] {
            let (app, data) = outcome.application();
            channel.set_app(app, data);
        }
    }

    /// Whether `leg` is a Local channel's pair (each technology but Local has one channel a leg;
    /// leg 1 and leg 2 may differ).
    fn is_local_pair(&self, leg: Leg) -> bool {
        self.channels[roles(leg).1 as usize].is_some()
    }

    fn channel(&self, role: Role) -> &Channel {
        self.channels[role as usize].as_ref().expect("channel exists in this phase")
    }

    fn channel_mut(&mut self, role: Role) -> &mut Channel {
        self.channels[role as usize].as_mut().expect("channel exists in this phase")
    }

    fn cause(&self, cause: Cause) -> u16 {
        match cause {
            Cause::Phone => self.phone.cause(),
            Cause::PhoneOuter if self.is_local_pair(self.leg) => self.phone.local_outer_cause(),
            Cause::PhoneOuter => self.phone.cause(),
            Cause::Normal => NORMAL_CLEARING,
            Cause::Unknown => 0,
            Cause::End => self.end_cause,
        }
    }

    /// A state change; on a single-channel leg the `;2` half's state is the channel's own.
    fn newstate(&mut self, role: Role, state: State) {
        let role = if self.channels[role as usize].is_none() { role.outer() } else { role };
        let Some(channel) = &mut self.channels[role as usize] else { return };
        if channel.state != state {
            channel.state = state;
            self.pbx.publish(channel.event("Newstate").into_event());
        }
    }

    fn publish_hangup(&self, role: Role, event: &str, cause: Cause) {
        if let Some(channel) = &self.channels[role as usize] {
            self.pbx.publish(channel.hangup_event(event, self.cause(cause)).into_event());
        }
    }

    fn publish_var_set(&self, role: Role, name: &str, value: &str) {
        if let Some(channel) = &self.channels[role as usize] {
            let mut wire = channel.event_of_class("VarSet", class::DIALPLAN);
            wire.header("Variable", name).header("Value", value);
            self.pbx.publish(wire.into_event());
        }
    }

    /// Posts the channel's CDR, then starts a fresh record (Asterisk forks the CDR when a
    /// channel goes on after a failed `Dial`).
    fn post_cdr(&mut self, role: Role, disposition: &str) {
        let (source, caller_id) = match &self.request.caller {
            Some(party) => {
                let known = |s: &str| if s == UNKNOWN { String::new() } else { s.to_owned() };
                (known(&party.num), format!("\"{}\" <{}>", known(&party.name), known(&party.num)))
            }
            None => (String::new(), "\"\" <>".to_owned()),
        };
        let Some(channel) = &mut self.channels[role as usize] else { return };
        let event = channel.cdr_event(disposition, &source, &caller_id).into_event();
        let delay = self.pbx.config.cdr_delay;
        if delay.is_zero() {
            self.pbx.publish(event);
        } else {
            let pbx = self.pbx.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = pbx.stop.cancelled() => {}
                    _ = tokio::time::sleep(delay) => pbx.publish(event),
                }
            });
        }
        let now = OffsetDateTime::now_utc();
        channel.cdr.start = now;
        channel.cdr.answer = channel.cdr.answer.map(|_| now);
        channel.cdr.destination_channel.clear();
    }

    fn dial_begin(&self, leg: Leg, target: &DialTarget) {
        let mut wire = self.dial_event(leg, "DialBegin");
        wire.header("DialString", &target.dial_string);
        self.pbx.publish(wire.into_event());
    }

    fn publish_dial(&self, leg: Leg, event: &str, status: &str) {
        let mut wire = self.dial_event(leg, event);
        wire.header("DialStatus", status);
        self.pbx.publish(wire.into_event());
    }

    /// DialBegin/DialState/DialEnd: leg 1 has no calling channel (the originate dials it);
    /// leg 2 is dialled by the courier's channel.
    fn dial_event(&self, leg: Leg, event: &str) -> Wire {
        let mut wire = Wire::event(event, class::CALL);
        match leg {
            Leg::Courier => self.channel(CourierOuter).write_block(&mut wire, "Dest"),
            Leg::Client => {
                self.channel(CourierOuter).write_block(&mut wire, "");
                self.channel(ClientOuter).write_block(&mut wire, "Dest");
            }
        }
        wire
    }

    fn publish_local_bridge(&self, leg: Leg, target: &DialTarget) {
        if target.tech != Tech::Local {
            return;
        }
        let (outer, inner) = roles(leg);
        let mut wire = Wire::event("LocalBridge", class::CALL);
        self.channel(outer).write_block(&mut wire, "LocalOne");
        self.channel(inner).write_block(&mut wire, "LocalTwo");
        wire.header("Context", &target.peer).header("Exten", &target.number).header("LocalOptimization", "Yes");
        self.pbx.publish(wire.into_event());
    }

    fn publish_bridge(&self, event: &str, member: Option<Role>) {
        let mut wire = Wire::event(event, class::CALL);
        bridge_block(&mut wire, &self.bridge_id, self.bridged);
        if let Some(role) = member {
            self.channel(role).write_block(&mut wire, "");
        }
        self.pbx.publish(wire.into_event());
    }

    /// The outcome of leg 1: an OriginateResponse event (async), or the synchronous reply.
    fn send_originate_response(&mut self) {
        if std::mem::replace(&mut self.response_sent, true) {
            return;
        }
        let (success, reason) = self.originate_result;
        if let Some(reply) = self.sync_reply.take() {
            let _ = reply.send(success);
            return;
        }
        if !self.request.is_async {
            return;
        }
        let courier = self.channels[CourierOuter as usize].as_ref();
        let (channel, uniqueid) = match courier {
            Some(courier) if success => (courier.name.as_str(), courier.uniqueid.as_str()),
            _ => (self.request.channel.as_str(), self.request.channel_id.as_deref().unwrap_or(UNKNOWN)),
        };
        let caller = self.request.caller.clone().unwrap_or_else(Party::unknown);
        let mut wire = Wire::event("OriginateResponse", class::CALL);
        if let Some(id) = &self.request.action_id {
            wire.header("ActionID", id);
        }
        wire.header("Response", if success { "Success" } else { "Failure" }).header("Channel", channel);
        match &self.request.application {
            Some((app, data)) => wire.header("Application", app).header("Data", data),
            None => wire.header("Context", &self.request.context).header("Exten", &self.request.exten),
        };
        wire.header("Reason", &reason.to_string())
            .header("Uniqueid", uniqueid)
            .header("CallerIDNum", &caller.num)
            .header("CallerIDName", &caller.name);
        self.pbx.publish(wire.into_event());
    }

    /// Writes the call's recording, as MixMonitor would when the call ends.
    async fn save_recording(&self, talk_started: OffsetDateTime) {
        let Some(dir) = &self.pbx.config.recordings_dir else { return };
        let courier = self.channel(CourierOuter);
        let source = match &self.request.caller {
            Some(party) if party.num != UNKNOWN => party.num.clone(),
            _ => self.request.target.as_ref().map(|t| t.number.clone()).unwrap_or_default(),
        };
        let name = match &self.recording_name {
            Some(name) => name.clone(),
            None => wav::file_name(&self.request.exten, &source, talk_started, &courier.uniqueid),
        };
        let talked = (OffsetDateTime::now_utc() - talk_started).unsigned_abs();
        match wav::write_atomically(dir, &name, wav::tone(talked)).await {
            Ok(path) => tracing::info!(path = %path.display(), "recording written"),
            Err(e) => tracing::warn!(error = %Chain(&e), dir = %dir.display(), "cannot write the recording"),
        }
    }
}

/// What a hangup handler reads of its channel as it hangs up: the cause, the CDR's answer time
/// and billable seconds, and the time.
fn set_hangup_vars(vars: &mut HashMap<String, String>, cause: u16, answered: Option<OffsetDateTime>, billsec: i64) {
    vars.insert("HANGUPCAUSE".into(), cause.to_string());
    vars.insert("CDR(billsec)".into(), billsec.to_string());
    vars.insert("CDR(answer)".into(), answered.map(super::channel::cdr_time).unwrap_or_default());
    vars.insert("EPOCH".into(), OffsetDateTime::now_utc().unix_timestamp().to_string());
}

/// A bridge's block of headers.
fn bridge_block(wire: &mut Wire, id: &str, members: usize) {
    wire.header("BridgeUniqueid", id)
        .header("BridgeType", "basic")
        .header("BridgeTechnology", "simple_bridge")
        .header("BridgeCreator", UNKNOWN)
        .header("BridgeName", UNKNOWN)
        .header("BridgeNumChannels", &members.to_string())
        .header("BridgeVideoSourceMode", "none");
}

/// A pushed hangup handler's `context,exten,priority` as (context, exten).
fn handler(value: &str) -> (String, String) {
    let mut parts = value.split(',').map(str::trim);
    let context = parts.next().unwrap_or_default().to_owned();
    let exten = parts.next().filter(|e| !e.is_empty()).unwrap_or("s").to_owned();
    (context, exten)
}

/// Leg 2's target: `Local/<exten>@phones` when the courier was a Local channel (the reference
/// dialplan), else the client's number on the courier's trunk.
fn client_target(courier: &DialTarget, exten: &str) -> DialTarget {
    let (peer, dial_string) = match courier.tech {
        Tech::Local => (PHONES_CONTEXT.to_owned(), format!("{exten}@{PHONES_CONTEXT}")),
        Tech::Pjsip => (courier.peer.clone(), format!("{exten}@{}", courier.peer)),
        Tech::Iax2 | Tech::Dahdi => (courier.peer.clone(), format!("{}/{exten}", courier.peer)),
    };
    DialTarget { tech: courier.tech, number: exten.to_owned(), peer, dial_string }
}
