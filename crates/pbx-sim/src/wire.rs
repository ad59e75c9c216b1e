//! The simulator's side of the wire: privilege classes, the `Events:` mask, and replies and events
//! written straight into bytes.
//!
//! Messages are built here rather than through [`dialback_ami::codec::Outgoing`] because Asterisk
//! sends things that encoder rightly refuses from a client: it echoes an ActionID holding a bare CR
//! exactly as received (f_injection), and `VarSet` events carry `Variable: NAME` without `=VALUE`.
//! An event is encoded once and shared by every session (`Bytes` is reference-counted).

use bytes::{Bytes, BytesMut};

/// Asterisk's event classes (`EVENT_FLAG_*`), the bits of a read permission or an `Events:` mask.
pub(crate) mod class {
    pub const SYSTEM: u32 = 1 << 0;
    pub const CALL: u32 = 1 << 1;
    pub const USER: u32 = 1 << 6;
    pub const DTMF: u32 = 1 << 8;
    pub const CDR: u32 = 1 << 10;
    pub const DIALPLAN: u32 = 1 << 11;
    pub const AGI: u32 = 1 << 13;
    pub const ALL: u32 = (1 << 19) - 1;

    /// Names as `manager.conf` and `Events:` spell them, with their bits.
    pub(super) const NAMES: [(&str, u32); 20] = [
        ("system", SYSTEM),
        ("call", CALL),
        ("log", 1 << 2),
        ("verbose", 1 << 3),
        ("command", 1 << 4),
        ("agent", 1 << 5),
        ("user", USER),
        ("config", 1 << 7),
        ("dtmf", DTMF),
        ("reporting", 1 << 9),
        ("cdr", CDR),
        ("dialplan", DIALPLAN),
        ("originate", 1 << 12),
        ("agi", AGI),
        ("cc", 1 << 14),
        ("aoc", 1 << 15),
        ("test", 1 << 16),
        ("security", 1 << 17),
        ("message", 1 << 18),
        ("all", ALL),
    ];
}

/// The `Privilege:` header of an event of one class.
fn privilege(event_class: u32) -> &'static str {
    match event_class {
        class::SYSTEM => "system,all",
        class::CALL => "call,all",
        class::CDR => "cdr,all",
        class::USER => "user,all",
        class::DTMF => "dtmf,all",
        class::DIALPLAN => "dialplan,all",
        _ => "all",
    }
}

/// Asterisk's `ast_true` / `ast_false`.
pub(crate) fn is_true(value: &str) -> bool {
    ["yes", "true", "y", "t", "1", "on"].iter().any(|t| value.trim().eq_ignore_ascii_case(t))
}

fn is_false(value: &str) -> bool {
    ["no", "false", "n", "f", "0", "off"].iter().any(|f| value.trim().eq_ignore_ascii_case(f))
}

/// An `Events:` (Login) or `EventMask:` (Events) value as Asterisk's `strings_to_mask` reads it:
/// empty means everything, digits are a raw bit mask, `on`/`off` (and the other true/false
/// spellings) mean all/none, anything else is a comma list of class names.
pub(crate) fn parse_event_mask(value: &str) -> u32 {
    let value = value.trim();
    if value.is_empty() {
        return class::ALL;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u32>().map_or(class::ALL, |mask| mask & class::ALL);
    }
    if is_false(value) {
        return 0;
    }
    if is_true(value) {
        return class::ALL;
    }
    value
        .split(',')
        .filter_map(|name| class::NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name.trim())))
        .fold(0, |mask, (_, bits)| mask | bits)
}

/// An event ready for every session: its class (for the mask) and its encoded bytes.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub class: u32,
    pub bytes: Bytes,
}

/// One message being written: `Key: Value` lines, CRLF, closed by an empty line.
pub(crate) struct Wire {
    buf: BytesMut,
    class: u32,
}

impl Wire {
    /// A reply: `Response`, then `ActionID` when the action had one (Asterisk's order).
    pub fn reply(status: &str, action_id: Option<&str>) -> Wire {
        let mut wire = Wire { buf: BytesMut::with_capacity(128), class: 0 };
        wire.header("Response", status);
        if let Some(id) = action_id {
            wire.header("ActionID", id);
        }
        wire
    }

    /// An event: `Event` and `Privilege`.
    pub fn event(name: &str, event_class: u32) -> Wire {
        let mut wire = Wire { buf: BytesMut::with_capacity(512), class: event_class };
        wire.header("Event", name).header("Privilege", privilege(event_class));
        wire
    }

    /// A message of this one header and what is added (e.g. `WaitEventComplete`, which carries no
    /// `Privilege`).
    pub fn bare(key: &str, value: &str) -> Wire {
        let mut wire = Wire { buf: BytesMut::with_capacity(64), class: 0 };
        wire.header(key, value);
        wire
    }

    pub fn header(&mut self, key: &str, value: &str) -> &mut Self {
        self.prefixed("", key, value)
    }

    /// A header whose name has a prefix (`DestChannel`, `LocalOneUniqueid`).
    pub fn prefixed(&mut self, prefix: &str, key: &str, value: &str) -> &mut Self {
        self.buf.extend_from_slice(prefix.as_bytes());
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b": ");
        // Values that came off the wire cannot hold LF (it ends a line); a configured one might,
        // and must not split the message.
        if memchr::memchr(b'\n', value.as_bytes()).is_some() {
            self.buf.extend_from_slice(value.replace('\n', " ").as_bytes());
        } else {
            self.buf.extend_from_slice(value.as_bytes());
        }
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    pub fn into_bytes(mut self) -> Bytes {
        self.buf.extend_from_slice(b"\r\n");
        self.buf.freeze()
    }

    pub fn into_event(self) -> Event {
        let class = self.class;
        Event { class, bytes: self.into_bytes() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_masks_read_like_asterisk() {
        assert_eq!(parse_event_mask("on"), class::ALL);
        assert_eq!(parse_event_mask(""), class::ALL);
        assert_eq!(parse_event_mask("off"), 0);
        assert_eq!(parse_event_mask("call"), class::CALL);
        assert_eq!(parse_event_mask("call, cdr,system"), class::CALL | class::CDR | class::SYSTEM);
        assert_eq!(parse_event_mask("1"), class::SYSTEM);
        assert_eq!(parse_event_mask("nonsense"), 0);
    }

    #[test]
    fn messages_end_with_an_empty_line_and_keep_a_bare_cr() {
        let mut reply = Wire::reply("Success", Some("a\rb"));
        reply.header("Ping", "Pong");
        assert_eq!(&reply.into_bytes()[..], b"Response: Success\r\nActionID: a\rb\r\nPing: Pong\r\n\r\n");
        let event = Wire::event("Cdr", class::CDR).into_event();
        assert_eq!(event.class, class::CDR);
        assert_eq!(&event.bytes[..], b"Event: Cdr\r\nPrivilege: cdr,all\r\n\r\n");
    }
}
