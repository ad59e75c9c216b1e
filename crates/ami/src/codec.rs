//! AMI framing.
//!
//! On connect the server sends one banner line (`Asterisk Call Manager/11.0.0`). After that every
//! message is `Key: Value` lines closed by an empty line. Lines end with CRLF; Asterisk also takes a
//! bare LF (a bare CR is not a line end). Keys may repeat and their order is kept.
//!
//! Decoding scans for line ends once (the scan position survives partial reads) and keeps a
//! message as one string plus header spans: two allocations per message, none per header.
//! Encoding refuses CR, LF and NUL anywhere, because on a real Asterisk one smuggled CRLF adds a
//! header that wins over the real one and a blank line runs a second, injected action.

use std::borrow::Cow;

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Limits on what the decoder accepts. Asterisk itself refuses lines over 1024 bytes and messages
/// over 128 lines from clients; what it sends can be larger (long variables), so the client side
/// is more generous.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_line: usize,
    pub max_headers: usize,
    pub max_frame: usize,
}

impl Limits {
    /// What dialback accepts from a PBX.
    pub const CLIENT: Limits = Limits { max_line: 16 * 1024, max_headers: 1024, max_frame: 256 * 1024 };
    /// What Asterisk accepts from a client (the simulator enforces it).
    pub const ASTERISK: Limits = Limits { max_line: 1024, max_headers: 128, max_frame: 128 * 1024 };
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("AMI line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("AMI message with more than {0} header lines")]
    TooManyHeaders(usize),
    #[error("AMI message larger than {0} bytes")]
    FrameTooLarge(usize),
    #[error("refusing to send {what} containing CR, LF or NUL: {key}")]
    ForbiddenByte { what: &'static str, key: String },
    #[error("refusing to send an empty header name or one containing ':'")]
    BadKey,
    #[error("refusing to send Variable {0:?}: only NAME=VALUE with [A-Za-z0-9_-] is allowed (commas split variables in Asterisk)")]
    BadVariable(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// One decoded AMI message: ordered headers, duplicates kept.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    text: String,
    /// (key_start, key_end, value_start, value_end) into `text`.
    spans: Vec<(u32, u32, u32, u32)>,
}

impl Message {
    /// The headers in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.spans
            .iter()
            .map(|&(ks, ke, vs, ve)| (&self.text[ks as usize..ke as usize], &self.text[vs as usize..ve as usize]))
    }

    /// The first value of `key` (case-insensitive, like Asterisk).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.headers().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
    }

    /// Every value of `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers().filter(move |(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// `Event:` value. An event may also carry `Response:` (OriginateResponse does), so ask this
    /// first: a message with `Event:` is an event, never a reply.
    pub fn event(&self) -> Option<&str> {
        self.get("Event")
    }

    /// `Response:` value of a reply (None for events, even those carrying a `Response` header).
    pub fn response(&self) -> Option<&str> {
        if self.event().is_some() {
            None
        } else {
            self.get("Response")
        }
    }

    pub fn action(&self) -> Option<&str> {
        self.get("Action")
    }

    pub fn action_id(&self) -> Option<&str> {
        self.get("ActionID")
    }

    /// Builds a message from pairs (tests and the simulator).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut text = String::new();
        let mut spans = Vec::new();
        for (k, v) in pairs {
            let ks = text.len() as u32;
            text.push_str(k);
            let ke = text.len() as u32;
            text.push_str(v);
            spans.push((ks, ke, ke, text.len() as u32));
        }
        Self { text, spans }
    }

    /// Turns a received message into one to send (the simulator echoes and relays).
    pub fn to_outgoing(&self) -> Outgoing {
        Outgoing { headers: self.headers().map(|(k, v)| (Cow::Owned(k.to_owned()), v.to_owned())).collect() }
    }
}

impl std::fmt::Debug for Message {
    /// Secrets never reach logs: `Secret` values are redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = f.debug_list();
        for (k, v) in self.headers() {
            if k.eq_ignore_ascii_case("secret") {
                map.entry(&format_args!("{k}: [REDACTED]"));
            } else {
                map.entry(&format_args!("{k}: {v}"));
            }
        }
        map.finish()
    }
}

/// What the decoder yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The server's first line, e.g. `Asterisk Call Manager/11.0.0`.
    Banner(String),
    Message(Message),
}

/// Which end of the connection the codec serves: a client expects the banner first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

#[derive(Debug)]
pub struct AmiCodec {
    limits: Limits,
    awaiting_banner: bool,
    /// Bytes of the buffer already scanned for line ends.
    scanned: usize,
    /// Start of the current line.
    line_start: usize,
    /// Header lines seen in the current message.
    lines: usize,
}

impl AmiCodec {
    pub fn new(side: Side, limits: Limits) -> Self {
        Self { limits, awaiting_banner: side == Side::Client, scanned: 0, line_start: 0, lines: 0 }
    }

    pub fn client() -> Self {
        Self::new(Side::Client, Limits::CLIENT)
    }

    pub fn server() -> Self {
        Self::new(Side::Server, Limits::ASTERISK)
    }

    fn reset(&mut self) {
        self.scanned = 0;
        self.line_start = 0;
        self.lines = 0;
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl Decoder for AmiCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        loop {
            let Some(offset) = memchr::memchr(b'\n', &buf[self.scanned..]) else {
                self.scanned = buf.len();
                if buf.len() - self.line_start > self.limits.max_line {
                    return Err(CodecError::LineTooLong(self.limits.max_line));
                }
                if buf.len() > self.limits.max_frame {
                    return Err(CodecError::FrameTooLarge(self.limits.max_frame));
                }
                return Ok(None);
            };
            let nl = self.scanned + offset;
            self.scanned = nl + 1;
            let line = strip_cr(&buf[self.line_start..nl]);
            if line.len() > self.limits.max_line {
                return Err(CodecError::LineTooLong(self.limits.max_line));
            }
            if self.awaiting_banner {
                self.awaiting_banner = false;
                let banner = String::from_utf8_lossy(line).into_owned();
                buf.advance(nl + 1);
                self.reset();
                return Ok(Some(Frame::Banner(banner)));
            }
            if !line.is_empty() {
                self.lines += 1;
                if self.lines > self.limits.max_headers {
                    return Err(CodecError::TooManyHeaders(self.limits.max_headers));
                }
                self.line_start = nl + 1;
                continue;
            }
            if self.lines == 0 {
                // A stray empty line between messages: skip it.
                buf.advance(nl + 1);
                self.reset();
                continue;
            }
            let raw = buf.split_to(nl + 1);
            self.reset();
            return Ok(Some(Frame::Message(parse_message(&raw))));
        }
    }
}

/// Parses the lines of one complete message (its closing empty line included).
fn parse_message(raw: &[u8]) -> Message {
    let text = match String::from_utf8_lossy(raw) {
        Cow::Borrowed(s) => s.to_owned(),
        Cow::Owned(s) => s,
    };
    let mut spans = Vec::with_capacity(16);
    let bytes = text.as_bytes();
    let mut start = 0usize;
    for nl in memchr::memchr_iter(b'\n', bytes) {
        let line = strip_cr(&bytes[start..nl]);
        if !line.is_empty() {
            let end = start + line.len();
            let (ke, vs) = match memchr::memchr(b':', line) {
                Some(colon) => {
                    let mut vs = start + colon + 1;
                    while vs < end && (bytes[vs] == b' ' || bytes[vs] == b'\t') {
                        vs += 1;
                    }
                    (start + colon, vs)
                }
                // A line without a colon (command output): the whole line is the key.
                None => (end, end),
            };
            spans.push((start as u32, ke as u32, vs as u32, end as u32));
        }
        start = nl + 1;
    }
    Message { text, spans }
}

/// A message to send: an action (client), or a reply or event (the simulator).
#[derive(Clone, PartialEq, Eq)]
pub struct Outgoing {
    headers: Vec<(Cow<'static, str>, String)>,
}

impl Outgoing {
    pub fn new(first_key: &'static str, first_value: impl Into<String>) -> Self {
        Self { headers: vec![(Cow::Borrowed(first_key), first_value.into())] }
    }

    pub fn action(name: &str) -> Self {
        Self::new("Action", name)
    }

    pub fn response(status: &str) -> Self {
        Self::new("Response", status)
    }

    pub fn event(name: &str) -> Self {
        Self::new("Event", name)
    }

    /// Appends a header (keys may repeat).
    pub fn with(mut self, key: impl Into<Cow<'static, str>>, value: impl Into<String>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }

    pub fn push(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<String>) {
        self.headers.push((key.into(), value.into()));
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }

    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.headers.iter().map(|(k, v)| (k.as_ref(), v.as_str()))
    }

    /// Checks every key and value; nothing is written when this fails.
    pub fn validate(&self) -> Result<(), CodecError> {
        for (key, value) in &self.headers {
            if key.is_empty() || key.contains(':') {
                return Err(CodecError::BadKey);
            }
            if key.bytes().any(forbidden) {
                return Err(CodecError::ForbiddenByte { what: "a header name", key: key.escape_debug().to_string() });
            }
            if value.bytes().any(forbidden) {
                return Err(CodecError::ForbiddenByte { what: "a value", key: key.to_string() });
            }
            if key.eq_ignore_ascii_case("Variable") && !valid_variable(value) {
                return Err(CodecError::BadVariable(value.clone()));
            }
        }
        Ok(())
    }

    /// Validates, then appends the wire form to `dst`.
    pub fn encode_into(&self, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.validate()?;
        let len: usize = self.headers.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>() + 2;
        dst.reserve(len);
        for (key, value) in &self.headers {
            dst.extend_from_slice(key.as_bytes());
            dst.extend_from_slice(b": ");
            dst.extend_from_slice(value.as_bytes());
            dst.extend_from_slice(b"\r\n");
        }
        dst.extend_from_slice(b"\r\n");
        Ok(())
    }
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        for (k, v) in &self.headers {
            if k.eq_ignore_ascii_case("secret") {
                list.entry(&format_args!("{k}: [REDACTED]"));
            } else {
                list.entry(&format_args!("{k}: {v}"));
            }
        }
        list.finish()
    }
}

fn forbidden(b: u8) -> bool {
    b == b'\r' || b == b'\n' || b == 0
}

/// `NAME=VALUE`, both non-empty, from `[A-Za-z0-9_-]` (Asterisk splits `Variable` on commas, and a
/// `$`, `(` or `,` could reach functions or other variables).
fn valid_variable(value: &str) -> bool {
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    matches!(value.split_once('='), Some((name, val)) if ok(name) && ok(val))
}

impl Encoder<&Outgoing> for AmiCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &Outgoing, dst: &mut BytesMut) -> Result<(), CodecError> {
        item.encode_into(dst)
    }
}

/// The banner line a server sends on connect.
pub fn encode_banner(version: &str, dst: &mut BytesMut) {
    dst.extend_from_slice(b"Asterisk Call Manager/");
    dst.extend_from_slice(version.as_bytes());
    dst.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(codec: &mut AmiCodec, chunks: &[&[u8]]) -> Result<Vec<Frame>, CodecError> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(frame) = codec.decode(&mut buf)? {
                out.push(frame);
            }
        }
        Ok(out)
    }

    #[test]
    fn the_banner_comes_first_then_messages() {
        let mut codec = AmiCodec::client();
        let frames = decode_all(
            &mut codec,
            &[b"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\nActionID: login-1\r\nMessage: Authentication accepted\r\n\r\n"],
        )
        .unwrap();
        assert_eq!(frames[0], Frame::Banner("Asterisk Call Manager/11.0.0".into()));
        let Frame::Message(m) = &frames[1] else { panic!() };
        assert_eq!(m.response(), Some("Success"));
        assert_eq!(m.action_id(), Some("login-1"));
        assert_eq!(m.get("message"), Some("Authentication accepted"));
    }

    #[test]
    fn bare_lf_ends_lines_but_bare_cr_does_not() {
        let mut codec = AmiCodec::server();
        let frames = decode_all(&mut codec, &[b"Action: Ping\nActionID: a\rb\n\n"]).unwrap();
        let Frame::Message(m) = &frames[0] else { panic!() };
        assert_eq!(m.action(), Some("Ping"));
        assert_eq!(m.action_id(), Some("a\rb"));
    }

    #[test]
    fn repeated_keys_keep_their_order_and_empty_values_survive() {
        let mut codec = AmiCodec::server();
        let frames =
            decode_all(&mut codec, &[b"Action: Originate\r\nVariable: A=1\r\nVariable: B=2\r\nAccountCode: \r\n\r\n"])
                .unwrap();
        let Frame::Message(m) = &frames[0] else { panic!() };
        assert_eq!(m.get_all("variable").collect::<Vec<_>>(), ["A=1", "B=2"]);
        assert_eq!(m.get("AccountCode"), Some(""));
    }

    #[test]
    fn an_event_with_a_response_header_is_an_event_not_a_reply() {
        let m = Message::from_pairs([("Event", "OriginateResponse"), ("ActionID", "x"), ("Response", "Failure")]);
        assert_eq!(m.event(), Some("OriginateResponse"));
        assert_eq!(m.response(), None);
        assert_eq!(m.get("Response"), Some("Failure"));
    }

    #[test]
    fn non_utf8_is_decoded_lossily() {
        let mut codec = AmiCodec::server();
        let frames = decode_all(&mut codec, &[b"Event: X\r\nCallerIDName: \xff\xfeIvan\r\n\r\n"]).unwrap();
        let Frame::Message(m) = &frames[0] else { panic!() };
        assert!(m.get("CallerIDName").unwrap().ends_with("Ivan"));
    }

    #[test]
    fn limits_give_clear_errors() {
        let long = format!("Action: {}\r\n\r\n", "x".repeat(2000));
        assert!(matches!(decode_all(&mut AmiCodec::server(), &[long.as_bytes()]), Err(CodecError::LineTooLong(1024))));
        let no_newline = "x".repeat(2000);
        assert!(matches!(
            decode_all(&mut AmiCodec::server(), &[no_newline.as_bytes()]),
            Err(CodecError::LineTooLong(_))
        ));
        let many: String = (0..200).map(|i| format!("K{i}: v\r\n")).collect();
        assert!(matches!(
            decode_all(&mut AmiCodec::server(), &[many.as_bytes()]),
            Err(CodecError::TooManyHeaders(128))
        ));
    }

    #[test]
    fn the_encoder_refuses_cr_lf_and_nul_anywhere_before_writing() {
        for (k, v) in [
            ("Exten", "123\r\nExten: 456"),
            ("Exten", "1\n\nAction: Ping"),
            ("Exten", "1\0"),
            ("Ex\rten", "1"),
            ("Ex:ten", "1"),
        ] {
            let out = Outgoing::action("Originate").with(k.to_owned(), v);
            let mut dst = BytesMut::new();
            assert!(out.encode_into(&mut dst).is_err(), "{k:?}: {v:?}");
            assert!(dst.is_empty());
        }
    }

    #[test]
    fn variables_must_be_plain_name_value_pairs() {
        for bad in ["A=1,B=2", "A", "=1", "A=", "A=${SHELL}", "CDR(userfield)=x", "A=b c"] {
            assert!(
                matches!(
                    Outgoing::action("Originate").with("Variable", bad).validate(),
                    Err(CodecError::BadVariable(_))
                ),
                "{bad}"
            );
        }
        assert!(Outgoing::action("Originate").with("Variable", "DIALBACK_CALL_ID=0192-ab_c").validate().is_ok());
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let out = Outgoing::action("Login").with("Username", "u").with("Secret", "hunter2");
        assert!(!format!("{out:?}").contains("hunter2"));
        let m = Message::from_pairs([("Action", "Login"), ("Secret", "hunter2")]);
        assert!(!format!("{m:?}").contains("hunter2"));
    }

    fn arb_value() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[ -~]{0,40}").unwrap().prop_map(|s| s.trim_start().replace(':', ";"))
    }

    fn arb_message() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,15}", arb_value()), 1..12)
    }

    proptest! {
        #[test]
        fn any_split_of_a_stream_decodes_to_the_same_frames(
            msgs in proptest::collection::vec(arb_message(), 1..6),
            cuts in proptest::collection::vec(0usize..2000, 0..12),
            bare_lf in any::<bool>(),
        ) {
            let mut wire = BytesMut::new();
            encode_banner("11.0.0", &mut wire);
            for m in &msgs {
                let mut out = Outgoing::new("Event", "Test");
                for (k, v) in m { out.push(k.clone(), v.clone()); }
                out.encode_into(&mut wire).unwrap();
            }
            let mut bytes = wire.to_vec();
            if bare_lf {
                bytes = String::from_utf8(bytes).unwrap().replace("\r\n", "\n").into_bytes();
            }
            let whole = decode_all(&mut AmiCodec::client(), &[&bytes]).unwrap();
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            points.sort();
            let mut chunks = Vec::new();
            let mut prev = 0;
            for p in points { chunks.push(&bytes[prev..p]); prev = p; }
            chunks.push(&bytes[prev..]);
            let split = decode_all(&mut AmiCodec::client(), &chunks).unwrap();
            prop_assert_eq!(&whole, &split);
            prop_assert_eq!(whole.len(), msgs.len() + 1);
        }

        #[test]
        fn encode_then_decode_round_trips(msg in arb_message()) {
            let mut out = Outgoing::action("Test");
            for (k, v) in &msg { out.push(k.clone(), v.clone()); }
            let mut wire = BytesMut::new();
            out.encode_into(&mut wire).unwrap();
            let frames = decode_all(&mut AmiCodec::server(), &[&wire]).unwrap();
            let Frame::Message(m) = &frames[0] else { panic!() };
            let got: Vec<(&str, &str)> = m.headers().collect();
            let want: Vec<(&str, &str)> = out.headers().collect();
            prop_assert_eq!(got, want);
        }
    }
}
