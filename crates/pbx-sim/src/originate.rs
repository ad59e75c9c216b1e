//! Reading an `Originate` the way Asterisk does: the checks that answer at once with an error,
//! what the `Channel` dials (technology and number), and the caller id, variables and ids to use.
//!
//! Headers are read with `Message::get`, which takes the first of repeated keys, as Asterisk's
//! `astman_get_header` does: an injected `Exten` placed before the real one wins (f_injection).

use std::time::Duration;

use dialback_ami::codec::Message;

use super::channel::{Party, UNKNOWN};
use super::wire::is_true;

/// Asterisk's `AST_MAX_PUBLIC_UNIQUEID`: the longest `ChannelId` it accepts.
const MAX_CHANNEL_ID: usize = 149;

/// The channel technologies an Asterisk 22 has. chan_sip was removed in Asterisk 21: `SIP/...` is
/// accepted by Originate and then fails like an unknown technology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tech {
    Local,
    Pjsip,
    Iax2,
    Dahdi,
}

impl Tech {
    fn parse(name: &str) -> Option<Tech> {
        [("Local", Tech::Local), ("PJSIP", Tech::Pjsip), ("IAX2", Tech::Iax2), ("DAHDI", Tech::Dahdi)]
            .into_iter()
            .find(|(spelling, _)| spelling.eq_ignore_ascii_case(name))
            .map(|(_, tech)| tech)
    }

    pub fn name(self) -> &'static str {
        match self {
            Tech::Local => "Local",
            Tech::Pjsip => "PJSIP",
            Tech::Iax2 => "IAX2",
            Tech::Dahdi => "DAHDI",
        }
    }
}

/// What a `Channel` value dials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DialTarget {
    pub tech: Tech,
    /// The phone's number (its last digit picks the simulated outcome).
    pub number: String,
    /// The Local channel's context, or the trunk/endpoint of the other technologies.
    pub peer: String,
    /// Everything after `Tech/`, as a DialBegin's `DialString` shows it.
    pub dial_string: String,
}

impl DialTarget {
    /// Parses `Tech/resource`; `None` when the technology does not exist (or is chan_sip) or no
    /// number can be found, which Asterisk reports as a failed originate with Reason 0.
    pub fn parse(channel: &str) -> Option<DialTarget> {
        let (tech, resource) = channel.split_once('/')?;
        let tech = Tech::parse(tech)?;
        let (number, peer) = match tech {
            // Local/NUMBER@context[/options]
            Tech::Local => {
                let main = resource.split_once('/').map_or(resource, |(main, _options)| main);
                main.split_once('@').unwrap_or((main, "default"))
            }
            // PJSIP/trunk/NUMBER (also sip:NUMBER@host), PJSIP/NUMBER@trunk, PJSIP/endpoint
            _ => match resource.split_once('/') {
                Some((peer, rest)) => {
                    let rest = rest.strip_prefix("sip:").unwrap_or(rest);
                    (rest.split_once('@').map_or(rest, |(number, _host)| number), peer)
                }
                None => resource.split_once('@').unwrap_or((resource, resource)),
            },
        };
        if number.is_empty() {
            return None;
        }
        Some(DialTarget { tech, number: number.into(), peer: peer.into(), dial_string: resource.into() })
    }
}

/// An accepted Originate.
#[derive(Clone, Debug)]
pub(crate) struct OriginateRequest {
    pub action_id: Option<String>,
    /// The `Channel` value as given (a failed OriginateResponse names it).
    pub channel: String,
    /// `None`: the channel cannot be created (unknown technology, chan_sip, no number).
    pub target: Option<DialTarget>,
    pub context: String,
    pub exten: String,
    /// `Application` and `Data` (instead of Context/Exten).
    pub application: Option<(String, String)>,
    /// How long the courier's phone may ring (`Timeout`, default 30 s).
    pub timeout: Duration,
    pub caller: Option<Party>,
    pub channel_id: Option<String>,
    pub other_channel_id: Option<String>,
    pub variables: Vec<(String, String)>,
    pub is_async: bool,
    /// Whether `Context`/`Exten` exist in the dialplan (otherwise the answered channel hangs up).
    pub has_dialplan: bool,
}

impl OriginateRequest {
    /// The checks Asterisk makes before queueing, in its order; `Err` is the reply's `Message`.
    /// `exists(context, exten)` says whether the dialplan has that extension.
    pub fn parse(message: &Message, exists: impl Fn(&str, &str) -> bool) -> Result<OriginateRequest, String> {
        let header = |key: &str| message.get(key).filter(|value| !value.is_empty());
        let channel = header("Channel").ok_or("Channel not specified")?;
        let channel_id = header("ChannelId");
        let other_channel_id = header("OtherChannelId");
        if [channel_id, other_channel_id].iter().flatten().any(|id| id.len() > MAX_CHANNEL_ID) {
            return Err(format!("Uniqueid length exceeds maximum of {MAX_CHANNEL_ID}"));
        }
        let priority = match header("Priority") {
            Some(value) => Some(value.trim().parse::<i64>().map_err(|_| "Invalid priority")?),
            None => None,
        };
        let timeout_ms = match header("Timeout") {
            Some(value) => value.trim().parse::<i64>().map_err(|_| "Invalid timeout")?,
            None => 30_000,
        };
        if !channel.contains('/') {
            return Err("Invalid channel".into());
        }
        let context = message.get("Context").unwrap_or_default();
        let exten = message.get("Exten").unwrap_or_default();
        let has_dialplan = exists(context, exten);
        // With a Priority, Asterisk looks the extension up before queueing (d1, d6); without one
        // it queues and the answered channel finds nothing to run (d2).
        if priority.is_some_and(|p| p > 0) && !has_dialplan {
            return Err("Extension does not exist.".into());
        }
        Ok(OriginateRequest {
            action_id: message.action_id().map(str::to_owned),
            channel: channel.into(),
            target: DialTarget::parse(channel),
            context: context.into(),
            exten: exten.into(),
            application: header("Application").map(|app| (app.into(), message.get("Data").unwrap_or_default().into())),
            timeout: Duration::from_millis(timeout_ms.max(0) as u64),
            caller: header("CallerID").map(parse_caller_id),
            channel_id: channel_id.map(str::to_owned),
            other_channel_id: other_channel_id.map(str::to_owned),
            variables: message.get_all("Variable").flat_map(split_variables).collect(),
            is_async: message.get("Async").is_some_and(is_true),
            has_dialplan,
        })
    }

    pub fn variable(&self, name: &str) -> Option<&str> {
        self.variables.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// The example dialplan's `_X.` pattern: a digit, then at least one more character.
pub(crate) fn matches_any_number(exten: &str) -> bool {
    exten.len() >= 2 && exten.as_bytes()[0].is_ascii_digit()
}

/// Asterisk splits each `Variable` value on commas into `NAME=VALUE` pairs.
fn split_variables(value: &str) -> Vec<(String, String)> {
    value
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.trim().to_owned(), value.to_owned()))
        .collect()
}

/// `"Name" <number>`, `Name <number>`, `<number>`, a bare number, or a bare name.
fn parse_caller_id(value: &str) -> Party {
    let value = value.trim();
    let (name, num) = match (value.find('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => (value[..open].trim(), value[open + 1..close].trim()),
        _ if value.bytes().all(|b| b.is_ascii_digit() || b"+*#-() ".contains(&b)) => ("", value),
        _ => (value, ""),
    };
    let name = name.strip_prefix('"').and_then(|n| n.strip_suffix('"')).unwrap_or(name);
    let or_unknown = |s: &str| if s.is_empty() { UNKNOWN.to_owned() } else { s.to_owned() };
    Party { num: or_unknown(num), name: or_unknown(name) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(channel: &str) -> Option<(Tech, String, String)> {
        DialTarget::parse(channel).map(|t| (t.tech, t.number, t.peer))
    }

    #[test]
    fn numbers_are_found_in_every_channel_form() {
        let some = |tech, number: &str, peer: &str| Some((tech, number.to_owned(), peer.to_owned()));
        assert_eq!(target("Local/79001112233@phones"), some(Tech::Local, "79001112233", "phones"));
        assert_eq!(target("Local/79001112233@from-internal/n"), some(Tech::Local, "79001112233", "from-internal"));
        assert_eq!(target("PJSIP/79001112233@trunk"), some(Tech::Pjsip, "79001112233", "trunk"));
        assert_eq!(target("PJSIP/trunk/79001112233"), some(Tech::Pjsip, "79001112233", "trunk"));
        assert_eq!(target("pjsip/trunk/sip:79001112233@10.0.0.1"), some(Tech::Pjsip, "79001112233", "trunk"));
        assert_eq!(target("IAX2/trunk/79001112233"), some(Tech::Iax2, "79001112233", "trunk"));
        // chan_sip is gone in Asterisk 21+; unknown technologies cannot be dialled either.
        assert_eq!(target("SIP/trunk/79001112233"), None);
        assert_eq!(target("SIP/79001112233@trunk"), None);
        assert_eq!(target("Foo/123"), None);
        assert_eq!(target("PJSIP/"), None);
    }

    #[test]
    fn caller_ids_are_split_like_asterisk() {
        let party = |num: &str, name: &str| Party { num: num.into(), name: name.into() };
        assert_eq!(parse_caller_id("\"Dialback\" <74950000000>"), party("74950000000", "Dialback"));
        assert_eq!(parse_caller_id("Office <+74950000000>"), party("+74950000000", "Office"));
        assert_eq!(parse_caller_id("<74950000000>"), party("74950000000", UNKNOWN));
        assert_eq!(parse_caller_id("74950000000"), party("74950000000", UNKNOWN));
        assert_eq!(parse_caller_id("Dialback"), party(UNKNOWN, "Dialback"));
    }

    #[test]
    fn variables_split_on_commas() {
        assert_eq!(
            split_variables("A=1,B=x=y"),
            vec![("A".to_owned(), "1".to_owned()), ("B".to_owned(), "x=y".to_owned())]
        );
    }
}
