//! Typed AMI actions (what dialback sends) and typed views of the events it consumes.
//!
//! Originate is always `Async: true` (a synchronous originate blocks the session and reports no
//! reason), always carries `Priority: 1` (without it an unknown context "succeeds" silently) and a
//! `ChannelId` (so every event of the call carries it as Uniqueid/Linkedid). `Application:` is
//! never sent: only the configured context runs.

use secrecy::{ExposeSecret, SecretString};

use super::codec::{Message, Outgoing};

/// Events dialback asks for at login; others are filtered locally. `user` carries the answer
/// confirmation's `UserEvent` (the AMI user's `read` must include it too).
pub const EVENT_MASK: &str = "call,cdr,system,user";

pub fn new_action_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub fn login(username: &str, secret: &SecretString, action_id: &str) -> Outgoing {
    Outgoing::action("Login")
        .with("ActionID", action_id)
        .with("Username", username)
        .with("Secret", secret.expose_secret())
        .with("Events", EVENT_MASK)
}

pub fn logoff(action_id: &str) -> Outgoing {
    Outgoing::action("Logoff").with("ActionID", action_id)
}

pub fn ping(action_id: &str) -> Outgoing {
    Outgoing::action("Ping").with("ActionID", action_id)
}

pub fn hangup(channel: &str, action_id: &str) -> Outgoing {
    Outgoing::action("Hangup").with("ActionID", action_id).with("Channel", channel).with("Cause", "16")
}

/// An asynchronous originate: ring `channel`, and when it answers run `context`/`exten`/1.
#[derive(Debug, Clone)]
pub struct Originate {
    pub channel: String,
    pub context: String,
    pub exten: String,
    pub timeout_ms: u64,
    pub caller_id: Option<String>,
    /// Becomes the courier leg's Uniqueid and every leg's Linkedid (≤ 149 characters).
    pub channel_id: String,
    /// `NAME=VALUE` pairs; the codec refuses anything outside `[A-Za-z0-9_-]`.
    pub variables: Vec<(String, String)>,
}

impl Originate {
    pub fn to_action(&self, action_id: &str) -> Outgoing {
        let mut out = Outgoing::action("Originate")
            .with("ActionID", action_id)
            .with("Channel", self.channel.clone())
            .with("Context", self.context.clone())
            .with("Exten", self.exten.clone())
            .with("Priority", "1")
            .with("Timeout", self.timeout_ms.to_string())
            .with("ChannelId", self.channel_id.clone())
            .with("Async", "true");
        if let Some(cid) = &self.caller_id {
            out.push("CallerID", cid.clone());
        }
        for (name, value) in &self.variables {
            out.push("Variable", format!("{name}={value}"));
        }
        out
    }
}

/// OriginateResponse `Reason` values (leg 1 = the channel that was originated).
pub mod reason {
    pub const FAILED: u32 = 0;
    pub const NO_ANSWER: u32 = 3;
    pub const ANSWERED: u32 = 4;
    pub const BUSY: u32 = 5;
    pub const CONGESTION: u32 = 8;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginateResponse {
    pub action_id: String,
    pub success: bool,
    pub reason: u32,
    pub channel: String,
    pub uniqueid: String,
}

/// DialBegin/DialEnd: `Channel`/`Uniqueid` is the calling side (absent when the originate itself
/// dials leg 1), `Dest*` the called side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    pub uniqueid: Option<String>,
    pub linkedid: Option<String>,
    pub dest_channel: String,
    pub dest_uniqueid: String,
    pub dest_linkedid: String,
    /// DialEnd only: ANSWER, BUSY, NOANSWER, CONGESTION, CHANUNAVAIL, CANCEL.
    pub dial_status: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRef {
    pub channel: String,
    pub uniqueid: String,
    pub linkedid: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hangup {
    pub channel: ChannelRef,
    pub cause: u32,
    pub cause_txt: String,
}

/// A CDR record as Asterisk posts it (the fields a PBX admin reads in Master.csv or the cdr table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cdr {
    /// `UniqueID`; for a Local channel's second half it is `<uniqueid>;2`.
    pub uniqueid: String,
    pub user_field: String,
    pub duration_s: u32,
    pub billable_s: u32,
    pub disposition: String,
    pub account_code: String,
    pub source: String,
    pub destination: String,
    pub destination_context: String,
    pub channel: String,
    pub destination_channel: String,
    pub last_application: String,
    pub last_data: String,
    /// `YYYY-MM-DD HH:MM:SS` in the PBX's local time; empty when the call was never answered.
    pub start_time: String,
    pub answer_time: String,
    pub end_time: String,
}

/// A `UserEvent` a dialplan sent: its name and its own headers (the channel's block left out but
/// for the ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEvent {
    pub name: String,
    pub uniqueid: String,
    pub linkedid: String,
    pub headers: Vec<(String, String)>,
}

impl UserEvent {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }
}

/// The events dialback consumes; the rest are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmiEvent {
    OriginateResponse(OriginateResponse),
    DialBegin(Dial),
    DialEnd(Dial),
    BridgeEnter(ChannelRef),
    /// Asterisk was asked to hang a channel up (e.g. its caller put the phone down): it comes
    /// before the channel's `Hangup`, which for a channel inside `AGI()` may be long after.
    HangupRequest(ChannelRef),
    Hangup(Hangup),
    Cdr(Cdr),
    UserEvent(UserEvent),
    FullyBooted,
    Shutdown {
        restart: bool,
    },
}

fn field(m: &Message, key: &str) -> String {
    m.get(key).unwrap_or_default().to_owned()
}

fn number(m: &Message, key: &str) -> u32 {
    m.get(key).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

fn channel_ref(m: &Message) -> Option<ChannelRef> {
    Some(ChannelRef {
        channel: m.get("Channel")?.to_owned(),
        uniqueid: m.get("Uniqueid")?.to_owned(),
        linkedid: m.get("Linkedid")?.to_owned(),
    })
}

fn dial(m: &Message) -> Option<Dial> {
    Some(Dial {
        uniqueid: m.get("Uniqueid").map(str::to_owned),
        linkedid: m.get("Linkedid").map(str::to_owned),
        dest_channel: m.get("DestChannel")?.to_owned(),
        dest_uniqueid: m.get("DestUniqueid")?.to_owned(),
        dest_linkedid: m.get("DestLinkedid")?.to_owned(),
        dial_status: m.get("DialStatus").map(str::to_owned),
    })
}

impl AmiEvent {
    /// The typed view of an event, or None for events dialback does not use.
    pub fn parse(m: &Message) -> Option<AmiEvent> {
        Some(match m.event()? {
            "OriginateResponse" => AmiEvent::OriginateResponse(OriginateResponse {
                action_id: field(m, "ActionID"),
                success: m.get("Response").is_some_and(|r| r.eq_ignore_ascii_case("Success")),
                reason: number(m, "Reason"),
                channel: field(m, "Channel"),
                uniqueid: field(m, "Uniqueid"),
            }),
            "DialBegin" => AmiEvent::DialBegin(dial(m)?),
            "DialEnd" => AmiEvent::DialEnd(dial(m)?),
            "BridgeEnter" => AmiEvent::BridgeEnter(channel_ref(m)?),
            "HangupRequest" => AmiEvent::HangupRequest(channel_ref(m)?),
            "Hangup" => AmiEvent::Hangup(Hangup {
                channel: channel_ref(m)?,
                cause: number(m, "Cause"),
                cause_txt: field(m, "Cause-txt"),
            }),
            "Cdr" => AmiEvent::Cdr(Cdr {
                uniqueid: field(m, "UniqueID"),
                user_field: field(m, "UserField"),
                duration_s: number(m, "Duration"),
                billable_s: number(m, "BillableSeconds"),
                disposition: field(m, "Disposition"),
                account_code: field(m, "AccountCode"),
                source: field(m, "Source"),
                destination: field(m, "Destination"),
                destination_context: field(m, "DestinationContext"),
                channel: field(m, "Channel"),
                destination_channel: field(m, "DestinationChannel"),
                last_application: field(m, "LastApplication"),
                last_data: field(m, "LastData"),
                start_time: field(m, "StartTime"),
                answer_time: field(m, "AnswerTime"),
                end_time: field(m, "EndTime"),
            }),
            "UserEvent" => AmiEvent::UserEvent(UserEvent {
                name: field(m, "UserEvent"),
                uniqueid: field(m, "Uniqueid"),
                linkedid: field(m, "Linkedid"),
                // What the dialplan wrote comes after the channel's block and the name.
                headers: m
                    .headers()
                    .skip_while(|(k, _)| !k.eq_ignore_ascii_case("UserEvent"))
                    .skip(1)
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            }),
            "FullyBooted" => AmiEvent::FullyBooted,
            "Shutdown" => {
                AmiEvent::Shutdown { restart: m.get("Restart").is_some_and(|r| r.eq_ignore_ascii_case("True")) }
            }
            _ => return None,
        })
    }

    /// The id that ties every event of one callback together (the ChannelId dialback set): the
    /// Linkedid, or for Cdr the UniqueID up to `;`, or for OriginateResponse its Uniqueid.
    pub fn call_key(&self) -> Option<&str> {
        match self {
            AmiEvent::OriginateResponse(r) => Some(r.uniqueid.as_str()),
            AmiEvent::DialBegin(d) | AmiEvent::DialEnd(d) => Some(d.linkedid.as_deref().unwrap_or(&d.dest_linkedid)),
            AmiEvent::BridgeEnter(c) | AmiEvent::HangupRequest(c) => Some(c.linkedid.as_str()),
            AmiEvent::Hangup(h) => Some(h.channel.linkedid.as_str()),
            AmiEvent::Cdr(c) => Some(c.uniqueid.split(';').next().unwrap_or_default()),
            AmiEvent::UserEvent(u) => Some(u.linkedid.as_str()),
            AmiEvent::FullyBooted | AmiEvent::Shutdown { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn originate_is_async_with_priority_channel_id_and_no_application() {
        let o = Originate {
            channel: "PJSIP/79001112233@trunk".into(),
            context: "from-courier".into(),
            exten: "79161234567".into(),
            timeout_ms: 30000,
            caller_id: Some("+74951234567".into()),
            channel_id: "cb-1".into(),
            variables: vec![("DIALBACK_CALL_ID".into(), "abc".into())],
        };
        let a = o.to_action("id1");
        assert_eq!(a.get("Async"), Some("true"));
        assert_eq!(a.get("Priority"), Some("1"));
        assert_eq!(a.get("ChannelId"), Some("cb-1"));
        assert_eq!(a.get("Application"), None);
        assert!(a.validate().is_ok());
    }

    #[test]
    fn an_originate_response_is_parsed_from_its_event_not_mistaken_for_a_reply() {
        let m = Message::from_pairs([
            ("Event", "OriginateResponse"),
            ("Privilege", "call,all"),
            ("ActionID", "a1"),
            ("Response", "Failure"),
            ("Channel", "Local/79001112230@phones"),
            ("Reason", "5"),
            ("Uniqueid", "cb-x"),
        ]);
        let AmiEvent::OriginateResponse(r) = AmiEvent::parse(&m).unwrap() else { panic!() };
        assert!(!r.success);
        assert_eq!(r.reason, reason::BUSY);
        assert_eq!(AmiEvent::parse(&m).unwrap().call_key(), Some("cb-x"));
    }

    #[test]
    fn a_local_channel_cdr_is_keyed_by_the_uniqueid_before_the_semicolon() {
        let m = Message::from_pairs([("Event", "Cdr"), ("UniqueID", "cb-xyz-leg1;2"), ("BillableSeconds", "3")]);
        assert_eq!(AmiEvent::parse(&m).unwrap().call_key(), Some("cb-xyz-leg1"));
    }
}
