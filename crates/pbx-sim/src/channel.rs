//! A simulated channel: the snapshot Asterisk prints in every channel event (name, state, caller
//! ids, dialplan position, Uniqueid, Linkedid) and the CDR it will post when it ends.

use time::OffsetDateTime;

use super::phones::cause_text;
use super::wire::{class, Wire};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Down,
    Ring,
    Ringing,
    Up,
    Busy,
}

impl State {
    fn code(self) -> &'static str {
        match self {
            State::Down => "0",
            State::Ring => "4",
            State::Ringing => "5",
            State::Up => "6",
            State::Busy => "7",
        }
    }

    fn description(self) -> &'static str {
        match self {
            State::Down => "Down",
            State::Ring => "Ring",
            State::Ringing => "Ringing",
            State::Up => "Up",
            State::Busy => "Busy",
        }
    }
}

/// A caller id (number and name); Asterisk prints `<unknown>` for a missing part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Party {
    pub num: String,
    pub name: String,
}

pub(crate) const UNKNOWN: &str = "<unknown>";

impl Party {
    pub fn unknown() -> Party {
        Party { num: UNKNOWN.into(), name: UNKNOWN.into() }
    }
}

/// What the channel's next `Cdr` event will say. Asterisk posts one per channel that ran
/// dialplan, and starts a fresh one after a `Dial` that failed (the channel goes on to `Hangup`).
#[derive(Clone, Debug)]
pub(crate) struct CdrRecord {
    pub start: OffsetDateTime,
    pub answer: Option<OffsetDateTime>,
    pub destination: String,
    pub destination_context: String,
    pub destination_channel: String,
    pub last_app: String,
    pub last_data: String,
    pub user_field: String,
}

#[derive(Clone, Debug)]
pub(crate) struct Channel {
    pub name: String,
    pub uniqueid: String,
    pub linkedid: String,
    pub state: State,
    pub caller: Party,
    pub connected: Party,
    pub context: String,
    pub exten: String,
    pub priority: u32,
    pub cdr: CdrRecord,
}

impl Channel {
    pub fn new(name: String, uniqueid: String, linkedid: String, state: State, context: &str, exten: &str) -> Channel {
        Channel {
            name,
            uniqueid,
            linkedid,
            state,
            caller: Party::unknown(),
            connected: Party::unknown(),
            context: context.into(),
            exten: exten.into(),
            priority: 1,
            cdr: CdrRecord {
                start: OffsetDateTime::now_utc(),
                answer: None,
                destination: exten.into(),
                destination_context: context.into(),
                destination_channel: String::new(),
                last_app: String::new(),
                last_data: String::new(),
                user_field: String::new(),
            },
        }
    }

    /// Moves the channel to another place in the dialplan (the CDR follows it).
    pub fn goto(&mut self, context: &str, exten: &str, priority: u32) {
        self.context = context.into();
        self.exten = exten.into();
        self.priority = priority;
        self.cdr.destination = exten.into();
        self.cdr.destination_context = context.into();
    }

    pub fn set_app(&mut self, app: &str, data: &str) {
        self.cdr.last_app = app.into();
        self.cdr.last_data = data.into();
    }

    /// The standard channel block, optionally prefixed (`Dest`, `LocalOne`).
    pub fn write_block(&self, wire: &mut Wire, prefix: &str) {
        wire.prefixed(prefix, "Channel", &self.name)
            .prefixed(prefix, "ChannelState", self.state.code())
            .prefixed(prefix, "ChannelStateDesc", self.state.description())
            .prefixed(prefix, "CallerIDNum", &self.caller.num)
            .prefixed(prefix, "CallerIDName", &self.caller.name)
            .prefixed(prefix, "ConnectedLineNum", &self.connected.num)
            .prefixed(prefix, "ConnectedLineName", &self.connected.name)
            .prefixed(prefix, "Language", "en")
            .prefixed(prefix, "AccountCode", "")
            .prefixed(prefix, "Context", &self.context)
            .prefixed(prefix, "Exten", &self.exten)
            .prefixed(prefix, "Priority", &self.priority.to_string())
            .prefixed(prefix, "Uniqueid", &self.uniqueid)
            .prefixed(prefix, "Linkedid", &self.linkedid);
    }

    /// A call-class event about this channel.
    pub fn event(&self, name: &str) -> Wire {
        self.event_of_class(name, class::CALL)
    }

    pub fn event_of_class(&self, name: &str, event_class: u32) -> Wire {
        let mut wire = Wire::event(name, event_class);
        self.write_block(&mut wire, "");
        wire
    }

    pub fn hangup_event(&self, name: &str, cause: u16) -> Wire {
        let mut wire = self.event(name);
        wire.header("Cause", &cause.to_string());
        if name == "Hangup" {
            wire.header("Cause-txt", cause_text(cause));
        }
        wire
    }

    /// The `Cdr` event for the record so far, ending now.
    pub fn cdr_event(&self, disposition: &str, source: &str, caller_id: &str) -> Wire {
        let end = OffsetDateTime::now_utc();
        let cdr = &self.cdr;
        let whole_seconds = |from: OffsetDateTime| (end - from).whole_seconds().max(0).to_string();
        let mut wire = Wire::event("Cdr", class::CDR);
        wire.header("AccountCode", "")
            .header("Source", source)
            .header("Destination", &cdr.destination)
            .header("DestinationContext", &cdr.destination_context)
            .header("CallerID", caller_id)
            .header("Channel", &self.name)
            .header("DestinationChannel", &cdr.destination_channel)
            .header("LastApplication", &cdr.last_app)
            .header("LastData", &cdr.last_data)
            .header("StartTime", &cdr_time(cdr.start))
            .header("AnswerTime", &cdr.answer.map(cdr_time).unwrap_or_default())
            .header("EndTime", &cdr_time(end))
            .header("Duration", &whole_seconds(cdr.start))
            .header("BillableSeconds", &cdr.answer.map(whole_seconds).unwrap_or_else(|| "0".into()))
            .header("Disposition", disposition)
            .header("AMAFlags", "DOCUMENTATION")
            .header("UniqueID", &self.uniqueid)
            .header("UserField", &cdr.user_field);
        wire
    }
}

/// `2026-11-22 08:13:48`, the CDR's time format.
pub(crate) fn cdr_time(at: OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    at.format(&format).unwrap_or_default()
}
