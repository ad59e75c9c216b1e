//! A callback's lifecycle as a pure state machine: facts learnt from AMI events move it forward,
//! in whatever order they arrive, and never move a finished call backwards.

use serde::{Deserialize, Serialize};
use strum::{EnumString, IntoStaticStr, VariantArray};
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, IntoStaticStr, EnumString, VariantArray)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Written, originate not yet queued by Asterisk.
    Queued,
    RingingCourier,
    RingingClient,
    Connected,
    Completed,
    Failed,
    Canceled,
    /// Refused by dialback before reaching the PBX (number or destination policy).
    Refused,
    /// The outcome was not observed (AMI connection lost, dialback restarted); a later event may
    /// still settle it.
    Unknown,
}

impl Status {
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Canceled | Status::Refused | Status::Unknown)
    }

    /// Still ringing (cancellable).
    pub fn is_ringing(self) -> bool {
        matches!(self, Status::Queued | Status::RingingCourier | Status::RingingClient)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, IntoStaticStr, EnumString, VariantArray)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Leg {
    Courier,
    Client,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, IntoStaticStr, EnumString, VariantArray)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Busy,
    NoAnswer,
    Congestion,
    Rejected,
    Unreachable,
    PbxError,
    Canceled,
    InvalidNumber,
    DestinationForbidden,
    /// Over the courier's or the company's rate limit (the attempt was not sent).
    RateLimited,
    Lost,
    /// The courier's phone answered but nobody pressed 1 when asked: a voicemail or a carrier's
    /// recording, most likely; the client was never dialled.
    NotConfirmed,
    /// The company asks couriers to confirm their answer, yet the PBX began dialling leg 2 without
    /// asking: it does not run dialback's dialplan (not installed, or shadowed by another
    /// definition of the context). dialback hung the call up at once.
    DialplanNotRun,
}

impl Reason {
    /// From a Q.850 hangup cause.
    pub fn from_cause(cause: u32) -> Reason {
        match cause {
            17 => Reason::Busy,
            16 | 18 | 19 => Reason::NoAnswer,
            34 | 38 | 41 | 42 | 44 => Reason::Congestion,
            21 => Reason::Rejected,
            0..=3 | 20 | 22 | 27 | 28 | 29 | 31 => Reason::Unreachable,
            _ => Reason::PbxError,
        }
    }

    /// From `Dial`'s `DIALSTATUS` (a DialEnd's `DialStatus`, or the PBX's outcome record) other
    /// than ANSWER.
    pub fn from_dial_status(status: &str) -> Reason {
        match status {
            "BUSY" => Reason::Busy,
            "NOANSWER" => Reason::NoAnswer,
            "CONGESTION" => Reason::Congestion,
            "CHANUNAVAIL" => Reason::Unreachable,
            "CANCEL" => Reason::Canceled,
            _ => Reason::PbxError,
        }
    }
}

/// Whom leg 2 rings: the client of an order, the office extension, or (the admin's Test button)
/// a number given with the test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, IntoStaticStr, EnumString, VariantArray)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Client,
    Office,
    Test,
}

/// What Asterisk's CDR says about one channel of a call, as posted (the fields a PBX admin knows
/// from Master.csv or the `cdr` table).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdrRecord {
    pub channel: String,
    pub destination_channel: String,
    pub source: String,
    pub destination: String,
    pub destination_context: String,
    /// ANSWERED, NO ANSWER, BUSY, FAILED, CONGESTION.
    pub disposition: String,
    pub duration_seconds: u32,
    pub billable_seconds: u32,
    pub user_field: String,
    pub account_code: String,
    pub last_application: String,
    pub last_data: String,
    /// `YYYY-MM-DD HH:MM:SS` in the PBX's local time, as Asterisk writes it; empty when unset.
    pub start_time: String,
    pub answer_time: String,
    pub end_time: String,
}

/// Which of a callback's channels a CDR record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CdrOf {
    /// The channel dialback originated (its Uniqueid is the callback id): leg 1 from its start to
    /// the courier's answer, and the dialplan's `Dial` of leg 2 (destination, disposition, billed
    /// seconds).
    Courier,
    /// The second half of a Local courier channel: the courier's phone side.
    CourierPhone,
}

/// The CDR records of a callback's channels, the first Asterisk posted for each (a channel whose
/// `Dial` failed posts a second one, after the first that describes the Dial).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCdr {
    // Boxed: a call's state is copied on every event, and most of the time these are empty.
    pub courier: Option<Box<CdrRecord>>,
    pub courier_phone: Option<Box<CdrRecord>>,
}

impl CallCdr {
    pub fn is_empty(&self) -> bool {
        self.courier.is_none() && self.courier_phone.is_none()
    }
}

/// What the courier's answer confirmation came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// They pressed 1: the client is dialled.
    Confirmed,
    /// No key (or another) within the timeout: voicemail, a carrier message, a pocket answer.
    NotConfirmed,
    /// The PBX could not ask (the prompt file is missing): a configuration fault.
    PromptFailed,
}

impl Confirmation {
    /// What the dialplan's `Read` of the courier's key came to (`READSTATUS`, and the digit):
    /// OK with 1 confirms; ERROR means the prompt could not be played; anything else does not.
    pub fn read(read_status: Option<&str>, digit: Option<&str>) -> Confirmation {
        match (read_status, digit) {
            (Some("OK"), Some("1")) => Confirmation::Confirmed,
            (Some("ERROR"), _) => Confirmation::PromptFailed,
            _ => Confirmation::NotConfirmed,
        }
    }
}

/// What dialback knows about one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallState {
    pub status: Status,
    pub failed_leg: Option<Leg>,
    pub reason: Option<Reason>,
    pub hangup_cause: Option<i32>,
    pub courier_channel: Option<String>,
    pub courier_answered_at: Option<OffsetDateTime>,
    pub connected_at: Option<OffsetDateTime>,
    pub ended_at: Option<OffsetDateTime>,
    pub talk_seconds: Option<i32>,
    pub cdr_billable_seconds: Option<i32>,
    pub cdr: CallCdr,
    /// The answer confirmation, when the company asks for one.
    pub confirmation: Option<Confirming>,
    /// Set when the reason was only inferred from a hangup cause; a later DialEnd or
    /// OriginateResponse may name it more precisely.
    pub reason_provisional: bool,
}

impl CallState {
    pub fn new(status: Status) -> Self {
        Self {
            status,
            failed_leg: None,
            reason: None,
            hangup_cause: None,
            courier_channel: None,
            courier_answered_at: None,
            connected_at: None,
            ended_at: None,
            talk_seconds: None,
            cdr_billable_seconds: None,
            cdr: CallCdr::default(),
            confirmation: None,
            reason_provisional: false,
        }
    }
}

impl Confirmation {
    /// The journal's words for it (the app and the office read them in `detail`).
    pub fn explanation(self) -> &'static str {
        match self {
            Confirmation::Confirmed => "the courier pressed 1: the client was dialled",
            Confirmation::NotConfirmed => {
                "the courier's phone answered but nobody pressed 1: a voicemail or the carrier's message? \
                 The client was not dialled"
            }
            Confirmation::PromptFailed => {
                "the PBX could not play the confirmation prompt (Read failed at once: its sound file is not \
                 installed); the client was not dialled"
            }
        }
    }
}

/// Where a call's answer confirmation stands (stored with the call, so whichever process follows
/// it knows whether leg 2 may be dialled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirming {
    /// The Originate asked the dialplan to confirm the courier's answer; no result yet.
    Asked,
    /// The dialplan's result.
    Answered(Confirmation),
}

impl Confirming {
    pub fn as_str(self) -> &'static str {
        match self {
            Confirming::Asked => "asked",
            Confirming::Answered(Confirmation::Confirmed) => "confirmed",
            Confirming::Answered(Confirmation::NotConfirmed) => "not_confirmed",
            Confirming::Answered(Confirmation::PromptFailed) => "prompt_failed",
        }
    }

    pub fn parse(s: &str) -> Option<Confirming> {
        [
            Confirming::Asked,
            Confirming::Answered(Confirmation::Confirmed),
            Confirming::Answered(Confirmation::NotConfirmed),
            Confirming::Answered(Confirmation::PromptFailed),
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// The journal's words for a call hung up because the PBX dialled leg 2 without asking the courier
/// to confirm.
pub const DIALLED_WITHOUT_ASKING: &str = "the PBX began dialling the client without asking the courier to press 1: \
    it does not run dialback's dialplan for this context (not installed, or shadowed by an older definition of the \
    same context); dialback hung the call up so no voicemail talks to the client. The Test button's dialplan step \
    says what to change";

/// The journal's words for a courier who hung up while the PBX waited for their key.
pub const HUNG_UP_DURING_THE_PROMPT: &str =
    "the courier's phone hung up during the confirmation prompt, before 1 was pressed: the client was not dialled";

/// What one AMI event says about the call whose ChannelId is `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// Asterisk queued our Originate (its Response said Success): leg 1 is being dialled. Not
    /// read from an event: the callback service reports it with the action's id.
    OriginateQueued {
        action_id: String,
    },
    CourierAnswered {
        channel: Option<String>,
    },
    CourierFailed {
        reason: Reason,
    },
    ClientAnswered,
    ClientFailed {
        reason: Reason,
    },
    Bridged,
    CourierHangup {
        cause: u32,
    },
    /// The answer confirmation's result (the dialplan's `UserEvent`).
    Confirmation(Confirmation),
    /// The courier's channel began dialling leg 2 (its `DialBegin`).
    ClientDialled,
    /// A CDR record of one of the call's channels.
    Cdr {
        of: CdrOf,
        record: Box<CdrRecord>,
    },
}

/// Whole seconds from `connected` to `ended`, rounded (events reach us some milliseconds apart
/// from when they happened: a 1 s talk may be seen as 0.999 s).
fn talk_seconds(connected: OffsetDateTime, ended: OffsetDateTime) -> i32 {
    (((ended - connected).whole_milliseconds().max(0) + 500) / 1000) as i32
}

fn fail(s: &mut CallState, leg: Leg, reason: Reason, provisional: bool, now: OffsetDateTime) {
    s.status = Status::Failed;
    s.failed_leg = Some(leg);
    s.reason = Some(reason);
    s.reason_provisional = provisional;
    s.ended_at.get_or_insert(now);
}

/// Applies a fact; returns the new state, or None when the fact changes nothing (a finished call
/// is never moved backwards).
pub fn apply(state: &CallState, fact: &Fact, now: OffsetDateTime) -> Option<CallState> {
    use Status::*;
    let mut s = state.clone();
    let settled = matches!(s.status, Completed | Failed | Canceled | Refused);
    match fact {
        Fact::OriginateQueued { .. } => {
            if s.status == Queued {
                s.status = RingingCourier;
            }
        }
        Fact::CourierAnswered { channel } => {
            if s.courier_channel.is_none() {
                s.courier_channel.clone_from(channel);
            }
            if matches!(s.status, Queued | RingingCourier | Unknown) {
                s.status = RingingClient;
            }
            s.courier_answered_at.get_or_insert(now);
        }
        Fact::CourierFailed { reason } => match s.status {
            Queued | RingingCourier | Unknown => fail(&mut s, Leg::Courier, *reason, false, now),
            // A hangup cause got there first; the originate's reason is the better word, except
            // that cause 21 (rejected) is more specific than anything AMI reports for it (Reason 0,
            // or DialStatus NOANSWER through a Local channel).
            Failed if s.failed_leg == Some(Leg::Courier) && s.reason_provisional => {
                if s.reason != Some(Reason::Rejected) {
                    s.reason = Some(*reason);
                }
                s.reason_provisional = false;
            }
            _ => {}
        },
        Fact::Confirmation(Confirmation::Confirmed) => {
            if s.confirmation == Some(Confirming::Asked) {
                s.confirmation = Some(Confirming::Answered(Confirmation::Confirmed));
            }
        }
        // Leg 2 may ring only after the courier confirmed, when the company asks them to: a PBX
        // that dials without asking does not run dialback's dialplan, and whatever answered leg 1
        // (a voicemail) would talk to the client. The tracker hangs such a call up.
        Fact::ClientDialled => {
            if s.confirmation == Some(Confirming::Asked)
                && matches!(s.status, Queued | RingingCourier | RingingClient | Unknown)
            {
                s.status = Failed;
                s.failed_leg = None;
                s.reason = Some(Reason::DialplanNotRun);
                s.reason_provisional = false;
                s.courier_answered_at.get_or_insert(now);
                s.ended_at.get_or_insert(now);
            }
        }
        Fact::Confirmation(outcome) => {
            if s.confirmation == Some(Confirming::Asked) {
                s.confirmation = Some(Confirming::Answered(*outcome));
            }
            let reason = if *outcome == Confirmation::NotConfirmed { Reason::NotConfirmed } else { Reason::PbxError };
            match s.status {
                Queued | RingingCourier | RingingClient | Unknown => fail(&mut s, Leg::Courier, reason, false, now),
                // The courier channel's hangup got here first and was taken for leg 2's.
                Failed if s.reason_provisional => {
                    s.failed_leg = Some(Leg::Courier);
                    s.reason = Some(reason);
                    s.reason_provisional = false;
                }
                _ => {}
            }
        }
        Fact::ClientAnswered | Fact::Bridged => {
            if !settled && s.status != Connected {
                s.status = Connected;
                s.courier_answered_at.get_or_insert(now);
                s.connected_at = Some(now);
                s.failed_leg = None;
                s.reason = None;
            }
        }
        Fact::ClientFailed { reason } => match s.status {
            Queued | RingingCourier | RingingClient | Unknown => {
                s.courier_answered_at.get_or_insert(now);
                if *reason == Reason::Canceled {
                    fail(&mut s, Leg::Courier, Reason::Canceled, false, now)
                } else {
                    fail(&mut s, Leg::Client, *reason, false, now)
                }
            }
            Failed if s.failed_leg == Some(Leg::Client) && s.reason_provisional => {
                s.reason = Some(*reason);
                s.reason_provisional = false;
            }
            _ => {}
        },
        Fact::CourierHangup { cause } => {
            if s.hangup_cause.is_none_or(|c| c == 0) {
                s.hangup_cause = Some(*cause as i32);
            }
            match s.status {
                Connected => {
                    s.status = Completed;
                    s.ended_at = Some(now);
                    s.talk_seconds = s.connected_at.map(|c| talk_seconds(c, now));
                }
                Unknown if s.connected_at.is_some() => {
                    s.status = Completed;
                    s.ended_at = Some(now);
                    s.talk_seconds = s.connected_at.map(|c| talk_seconds(c, now));
                }
                Queued | RingingCourier => fail(&mut s, Leg::Courier, Reason::from_cause(*cause), true, now),
                RingingClient | Unknown => fail(&mut s, Leg::Client, Reason::from_cause(*cause), true, now),
                // A more specific cause refines a provisional reason; 21 (rejected) refines any.
                Failed if s.failed_leg == Some(Leg::Courier) && *cause != 0 => {
                    let from_cause = Reason::from_cause(*cause);
                    if s.reason_provisional || from_cause == Reason::Rejected {
                        s.reason = Some(from_cause);
                    }
                }
                _ => {}
            }
        }
        Fact::Cdr { of, record } => {
            let slot = match of {
                CdrOf::Courier => &mut s.cdr.courier,
                CdrOf::CourierPhone => &mut s.cdr.courier_phone,
            };
            slot.get_or_insert_with(|| record.clone());
            // The billed seconds of the courier's channel (the Dial of leg 2); a Local channel's
            // phone half speaks for it only until that one comes.
            if *of == CdrOf::Courier || s.cdr.courier.is_none() {
                s.cdr_billable_seconds = Some(record.billable_seconds as i32);
            }
            // The courier's channel ended inside the confirmation's Read: they (or their carrier's
            // voicemail) hung up before pressing a key, so the client was never dialled, whatever
            // the hangup first suggested. No UserEvent comes then: the dialplan stops with the
            // channel.
            if *of == CdrOf::Courier && record.last_application.eq_ignore_ascii_case("Read") {
                match s.status {
                    Queued | RingingCourier | RingingClient | Unknown => {
                        fail(&mut s, Leg::Courier, Reason::NotConfirmed, false, now);
                    }
                    Failed if s.reason_provisional => {
                        s.failed_leg = Some(Leg::Courier);
                        s.reason = Some(Reason::NotConfirmed);
                        s.reason_provisional = false;
                    }
                    _ => {}
                }
            }
        }
    }
    (s != *state).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn run(facts: &[Fact]) -> CallState {
        let mut s = CallState::new(Status::RingingCourier);
        let mut now = OffsetDateTime::UNIX_EPOCH;
        for f in facts {
            now += Duration::seconds(1);
            if let Some(next) = apply(&s, f, now) {
                s = next;
            }
        }
        s
    }

    #[test]
    fn a_queued_originate_rings_the_courier_but_never_moves_a_call_back() {
        let queued = Fact::OriginateQueued { action_id: "a1".into() };
        let now = OffsetDateTime::UNIX_EPOCH;
        let rung = apply(&CallState::new(Status::Queued), &queued, now).expect("queued moves on");
        assert_eq!(rung.status, Status::RingingCourier);
        // The call's events were applied first: the late report changes nothing.
        let answered = apply(&rung, &Fact::CourierAnswered { channel: None }, now).unwrap();
        assert_eq!(apply(&answered, &queued, now), None);
        assert_eq!(apply(&CallState::new(Status::Canceled), &queued, now), None);
    }

    #[test]
    fn a_normal_call_completes_with_talk_seconds() {
        let s = run(&[
            Fact::CourierAnswered { channel: Some("PJSIP/x".into()) },
            Fact::ClientAnswered,
            Fact::Bridged,
            Fact::Cdr { of: CdrOf::Courier, record: Box::new(CdrRecord { billable_seconds: 3, ..Default::default() }) },
            Fact::CourierHangup { cause: 16 },
        ]);
        assert_eq!(s.status, Status::Completed);
        assert_eq!(s.talk_seconds, Some(3));
        assert_eq!(s.cdr_billable_seconds, Some(3));
    }

    #[test]
    fn courier_busy_fails_on_the_courier_leg_whatever_the_order() {
        let a = run(&[Fact::CourierFailed { reason: Reason::Busy }, Fact::CourierHangup { cause: 17 }]);
        let b = run(&[Fact::CourierHangup { cause: 17 }, Fact::CourierFailed { reason: Reason::Busy }]);
        for s in [a, b] {
            assert_eq!((s.status, s.failed_leg, s.reason), (Status::Failed, Some(Leg::Courier), Some(Reason::Busy)));
        }
    }

    #[test]
    fn a_rejected_courier_is_told_apart_from_unreachable_by_the_hangup_cause() {
        let a = run(&[Fact::CourierHangup { cause: 21 }, Fact::CourierFailed { reason: Reason::Unreachable }]);
        let b = run(&[Fact::CourierFailed { reason: Reason::Unreachable }, Fact::CourierHangup { cause: 21 }]);
        assert_eq!(a.reason, Some(Reason::Rejected));
        assert_eq!(b.reason, Some(Reason::Rejected));
    }

    #[test]
    fn a_local_courier_channel_takes_the_real_cause_from_its_second_half() {
        let s = run(&[
            Fact::CourierHangup { cause: 0 },
            Fact::CourierHangup { cause: 17 },
            Fact::CourierFailed { reason: Reason::Busy },
        ]);
        assert_eq!((s.failed_leg, s.reason, s.hangup_cause), (Some(Leg::Courier), Some(Reason::Busy), Some(17)));
    }

    #[test]
    fn client_busy_fails_on_the_client_leg_even_if_the_hangup_comes_first() {
        let s = run(&[
            Fact::CourierAnswered { channel: None },
            Fact::CourierHangup { cause: 16 },
            Fact::ClientFailed { reason: Reason::Busy },
        ]);
        assert_eq!((s.status, s.failed_leg, s.reason), (Status::Failed, Some(Leg::Client), Some(Reason::Busy)));
    }

    #[test]
    fn a_courier_who_hangs_up_during_the_prompt_did_not_confirm_whichever_event_comes_first() {
        let in_read = Fact::Cdr {
            of: CdrOf::Courier,
            record: Box::new(CdrRecord { last_application: "Read".into(), ..Default::default() }),
        };
        let answered = Fact::CourierAnswered { channel: None };
        let hangup = Fact::CourierHangup { cause: 16 };
        for facts in [[answered.clone(), hangup.clone(), in_read.clone()], [answered, in_read, hangup]] {
            let s = run(&facts);
            assert_eq!(
                (s.status, s.failed_leg, s.reason),
                (Status::Failed, Some(Leg::Courier), Some(Reason::NotConfirmed)),
                "{facts:?}"
            );
        }
    }

    #[test]
    fn a_finished_call_never_moves_backwards() {
        let done =
            run(&[Fact::CourierAnswered { channel: None }, Fact::ClientAnswered, Fact::CourierHangup { cause: 16 }]);
        let now = OffsetDateTime::UNIX_EPOCH + Duration::hours(1);
        for fact in [
            Fact::CourierAnswered { channel: None },
            Fact::ClientAnswered,
            Fact::Bridged,
            Fact::CourierFailed { reason: Reason::Busy },
            Fact::ClientFailed { reason: Reason::Busy },
        ] {
            let next = apply(&done, &fact, now);
            assert!(next.is_none() || next.unwrap().status == Status::Completed, "{fact:?}");
        }
    }

    #[test]
    fn an_unknown_call_is_settled_by_a_late_event() {
        let mut s = CallState::new(Status::Unknown);
        s = apply(&s, &Fact::CourierFailed { reason: Reason::NoAnswer }, OffsetDateTime::UNIX_EPOCH).unwrap();
        assert_eq!(s.status, Status::Failed);
    }
}
