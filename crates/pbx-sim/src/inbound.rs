//! An inbound call: a client dialling the company's number (DID), placed as the Asterisk 22
//! transcripts place one (`tests/fixtures/asterisk-22/agi/`): an Originate of
//! `Local/<DID>@<inbound context>` with an `Application` (the caller's side, `;1`, runs it), while
//! the `;2` half runs the loaded dialplan's inbound context. Its `AGI()` is a real FastAGI client
//! (a new connection per request, the environment in Asterisk's order, one command answered at a
//! time, `HANGUP` when the server closes, or at once when the caller hangs up, no timeout of its
//! own), and its `Dial()` rings the phone the route names by the usual last-digit rules.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::channel::{Channel, Party, State, UNKNOWN};
use super::dialplan::{condition, expand, Dialplan, Extension};
use super::originate::{DialTarget, OriginateRequest, Tech};
use super::pbx::{HangupSignal, Pbx};
use super::phones::Outcome;
use super::wav;
use super::wire::{class, Wire};
use dialback_logging::Chain;

/// Asterisk's `MAX_AGI_CONNECT`: a FastAGI server that does not accept within it is given up.
const AGI_CONNECT: Duration = Duration::from_millis(2000);
/// Asterisk reads command lines up to this long.
const AGI_LINE: usize = 8191;
const NORMAL_CLEARING: u16 = 16;

/// Whether an Originate places an inbound call: a Local channel into a context of the loaded
/// dialplan (not the phones'), with an application for the caller's side.
pub(crate) fn is_inbound(pbx: &Pbx, request: &OriginateRequest) -> bool {
    let (Some(target), Some(dialplan)) = (&request.target, &pbx.config.dialplan) else { return false };
    target.tech == Tech::Local && request.application.is_some() && dialplan.has_context(&target.peer)
}

/// Plays an inbound call on the simulator's task set.
pub(crate) fn start(pbx: Arc<Pbx>, request: OriginateRequest) {
    let tasks = pbx.tasks.clone();
    pbx.calls_in_progress.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    tasks.spawn(async move {
        let mut call = Inbound::new(pbx.clone(), request);
        call.play().await;
        call.release();
        pbx.calls_in_progress.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    });
}

struct Inbound {
    pbx: Arc<Pbx>,
    request: OriginateRequest,
    /// `;1`: the caller.
    caller: Channel,
    /// `;2`: runs the inbound context (and the AGI request).
    dialplan: Channel,
    vars: HashMap<String, String>,
    hangup: watch::Receiver<Option<u16>>,
    signal: Arc<HangupSignal>,
    names: Vec<String>,
    uniqueids: Vec<String>,
    /// Someone answered (the courier or the office).
    answered: bool,
    recording: Option<String>,
}

enum Waited {
    Elapsed,
    HungUp,
    Stopped,
}

impl Inbound {
    fn new(pbx: Arc<Pbx>, request: OriginateRequest) -> Inbound {
        let target = request.target.clone().expect("is_inbound checked the target");
        let (context, did) = (target.peer.clone(), target.number.clone());
        let base = format!("Local/{did}@{context}-{}", pbx.new_channel_sequence());
        let caller_id = request.channel_id.clone().unwrap_or_else(|| pbx.new_uniqueid());
        let dialplan_id = request.other_channel_id.clone().unwrap_or_else(|| pbx.new_uniqueid());
        let mut caller =
            Channel::new(format!("{base};1"), caller_id.clone(), caller_id.clone(), State::Down, &context, &did);
        let mut dialplan =
            Channel::new(format!("{base};2"), dialplan_id.clone(), caller_id.clone(), State::Ring, &context, &did);
        let party = request.caller.clone().unwrap_or_else(Party::unknown);
        caller.caller = party.clone();
        dialplan.caller = party;
        let (signal, hangup) = watch::channel(None);
        let signal = Arc::new(signal);
        for channel in [&caller, &dialplan] {
            pbx.register_channel(channel, &signal);
        }
        let names = vec![caller.name.clone(), dialplan.name.clone()];
        let uniqueids = vec![caller_id, dialplan_id];
        Inbound {
            pbx,
            request,
            caller,
            dialplan,
            vars: HashMap::new(),
            hangup,
            signal,
            names,
            uniqueids,
            answered: false,
            recording: None,
        }
    }

    fn release(&self) {
        self.pbx.release(&self.names, &self.uniqueids, &[]);
    }

    fn publish(&self, wire: Wire) {
        self.pbx.publish(wire.into_event());
    }

    fn var_set(&self, name: &str, value: &str) {
        let mut wire = self.dialplan.event_of_class("VarSet", class::DIALPLAN);
        wire.header("Variable", name).header("Value", value);
        self.publish(wire);
    }

    async fn wait(&mut self, duration: Duration) -> Waited {
        if self.hangup.borrow().is_some() {
            return Waited::HungUp;
        }
        tokio::select! {
            _ = self.pbx.stop.cancelled() => Waited::Stopped,
            _ = tokio::time::sleep(duration) => Waited::Elapsed,
            _ = self.hangup.changed() => Waited::HungUp,
        }
    }

    fn caller_hung_up(&self) -> bool {
        self.hangup.borrow().is_some()
    }

    /// The caller left: Asterisk asks the dialplan channel to hang up.
    fn hangup_requested(&self) {
        let mut wire = self.dialplan.event("HangupRequest");
        wire.header("Cause", &NORMAL_CLEARING.to_string());
        self.publish(wire);
    }

    async fn play(&mut self) {
        self.publish(self.caller.event("Newchannel"));
        self.publish(self.dialplan.event("Newchannel"));
        let Some(dialplan) = self.pbx.config.dialplan.clone() else { return };
        let (context, did) = (self.dialplan.context.clone(), self.dialplan.exten.clone());
        let Some(extension) = dialplan.find(&context, &did).cloned() else {
            tracing::info!(context, did, "inbound call: no such extension");
            return self.end("no extension");
        };
        self.vars.insert("EXTEN".into(), did);
        self.vars.insert("CONTEXT".into(), context);
        self.vars.insert("UNIQUEID".into(), self.dialplan.uniqueid.clone());
        self.vars.insert("CHANNEL".into(), self.dialplan.name.clone());
        self.vars.insert("CALLERID(num)".into(), self.dialplan.caller.num.clone());
        // The channel functions a FastAGI server reads (i1, i9).
        self.vars.insert("CHANNEL(linkedid)".into(), self.dialplan.linkedid.clone());
        self.vars.insert("CHANNEL(uniqueid)".into(), self.dialplan.uniqueid.clone());
        self.run(&dialplan, &extension).await;
    }

    async fn run(&mut self, _dialplan: &Dialplan, extension: &Extension) {
        let mut at = 0;
        while let Some(step) = extension.priorities.get(at) {
            at += 1;
            if self.caller_hung_up() {
                return self.end("caller hung up");
            }
            let data = expand(&step.data, &self.vars);
            self.dialplan.priority = step.number;
            self.dialplan.set_app(step.app, &data);
            let mut newexten = self.dialplan.event_of_class("Newexten", class::DIALPLAN);
            newexten
                .header("Extension", &self.dialplan.exten.clone())
                .header("Application", step.app)
                .header("AppData", &data);
            self.publish(newexten);
            match step.app {
                "Set" => {
                    let (name, value) = data.split_once('=').unwrap_or((data.as_str(), ""));
                    if name.eq_ignore_ascii_case("CDR(userfield)") {
                        self.dialplan.cdr.user_field = value.to_owned();
                    } else {
                        self.vars.insert(name.to_owned(), value.to_owned());
                        self.var_set(name, value);
                    }
                }
                "AGI" => {
                    let status = self.agi(&data).await;
                    self.vars.insert("AGISTATUS".into(), status.into());
                    self.var_set("AGISTATUS", status);
                    if status == "HANGUP" {
                        return self.end("caller hung up during the AGI request");
                    }
                }
                "GotoIf" => {
                    let (test, labels) = data.split_once('?').unwrap_or((data.as_str(), ""));
                    let (if_true, if_false) = labels.split_once(':').unwrap_or((labels, ""));
                    let jump = if condition(test) { if_true } else { if_false };
                    if let Some(index) = (!jump.is_empty()).then(|| extension.target(jump)).flatten() {
                        at = index;
                    }
                }
                "Goto" => {
                    if let Some(index) = extension.target(&data) {
                        at = index;
                    }
                }
                "MixMonitor" => {
                    self.recording = Some(wav::dialplan_file_name(data.split(',').next().unwrap_or_default()))
                }
                "Dial" => {
                    let mut args = data.split(',');
                    let target = args.next().unwrap_or_default().to_owned();
                    let timeout = args
                        .next()
                        .and_then(|t| t.trim().parse::<u64>().ok())
                        .map_or(Duration::from_secs(30), Duration::from_secs);
                    if self.dial(&target, timeout).await {
                        return; // answered and talked: Dial hangs the caller up with it
                    }
                }
                "Hangup" => break,
                _ => {}
            }
        }
        self.end("the dialplan ended");
    }

    /// `AGI(agi://host:port/script?query,args...)` as a FastAGI client; AGISTATUS.
    async fn agi(&mut self, data: &str) -> &'static str {
        let mut parts = data.split(',');
        let url = parts.next().unwrap_or_default().trim().to_owned();
        let args: Vec<String> = parts.map(str::to_owned).collect();
        let Some(rest) = url.strip_prefix("agi://") else {
            tracing::info!(url, "AGI: only agi:// (FastAGI) is simulated");
            return "FAILURE";
        };
        let (authority, script) = rest.split_once('/').unwrap_or((rest, ""));
        let address = if authority.contains(':') { authority.to_owned() } else { format!("{authority}:4573") };
        let stream = match tokio::time::timeout(AGI_CONNECT, TcpStream::connect(&address)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::info!(address, error = %Chain(&e), "AGI: connecting failed; FastAGI failed");
                return "FAILURE";
            }
            Err(_) => {
                tracing::info!(address, "AGI: connection timed out after MAX_AGI_CONNECT (2000) milliseconds");
                return "FAILURE";
            }
        };
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let env = self.environment(&url, script, &args);
        if write.write_all(env.as_bytes()).await.is_err() {
            return "SUCCESS"; // the server closed at once (i6): Asterisk goes on
        }
        let mut hung_up = false;
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = tokio::select! {
                read = reader.read_until(b'\n', &mut line) => read,
                _ = self.hangup.changed(), if !hung_up => {
                    // The caller left (i8): HANGUP at once; the socket stays open until the server closes.
                    hung_up = true;
                    self.hangup_requested();
                    let _ = write.write_all(b"HANGUP\n").await;
                    continue;
                }
                _ = self.pbx.stop.cancelled() => return "HANGUP",
            };
            match read {
                Ok(0) | Err(_) => {
                    let _ = write.write_all(b"HANGUP\n").await;
                    return if hung_up { "HANGUP" } else { "SUCCESS" };
                }
                Ok(_) => {}
            }
            // A line longer than Asterisk reads is cut, the rest taken as the next command (i9).
            for chunk in line.split(|b| *b == b'\n').filter(|c| !c.is_empty()).flat_map(|c| c.chunks(AGI_LINE)) {
                let command = String::from_utf8_lossy(chunk).into_owned();
                let reply = self.agi_command(&command);
                if write.write_all(reply.as_bytes()).await.is_err() {
                    return if hung_up { "HANGUP" } else { "SUCCESS" };
                }
            }
            if line == b"\n" {
                let _ = write.write_all(b"510 Invalid or unknown command\n").await;
            }
        }
    }

    /// The environment block, in Asterisk 22's order (i1).
    fn environment(&self, url: &str, script: &str, args: &[String]) -> String {
        let c = &self.dialplan;
        let mut env = vec![
            ("agi_network", "yes".to_owned()),
            ("agi_network_script", script.to_owned()),
            ("agi_request", url.to_owned()),
            ("agi_channel", c.name.clone()),
            ("agi_language", "en".to_owned()),
            ("agi_type", "Local".to_owned()),
            ("agi_uniqueid", c.uniqueid.clone()),
            ("agi_version", "22.10.1".to_owned()),
            ("agi_callerid", if c.caller.num == UNKNOWN { "unknown".to_owned() } else { c.caller.num.clone() }),
            ("agi_calleridname", if c.caller.name == UNKNOWN { "unknown".to_owned() } else { c.caller.name.clone() }),
            ("agi_callingpres", "0".to_owned()),
            ("agi_callingani2", "0".to_owned()),
            ("agi_callington", "0".to_owned()),
            ("agi_callingtns", "0".to_owned()),
            ("agi_dnid", "unknown".to_owned()),
            ("agi_rdnis", "unknown".to_owned()),
            ("agi_context", c.context.clone()),
            ("agi_extension", c.exten.clone()),
            ("agi_priority", c.priority.to_string()),
            ("agi_enhanced", "0.0".to_owned()),
            ("agi_accountcode", String::new()),
            ("agi_threadid", "140192681187008".to_owned()),
        ];
        let numbered: Vec<(String, String)> =
            args.iter().enumerate().map(|(i, a)| (format!("agi_arg_{}", i + 1), a.clone())).collect();
        let mut out = String::new();
        for (name, value) in env.drain(..).map(|(n, v)| (n.to_owned(), v)).chain(numbered) {
            out.push_str(&format!("{name}: {value}\n"));
        }
        out.push('\n');
        out
    }

    /// Runs one command line; its reply (with LF), and AGIExecStart/End (and VarSet) on AMI.
    fn agi_command(&mut self, command: &str) -> String {
        let id = self.pbx.new_channel_sequence();
        let mut start = self.dialplan.event_of_class("AGIExecStart", class::AGI);
        start.header("CommandId", &id).header("Command", command);
        self.publish(start);
        let words: Vec<&str> = command.split_whitespace().collect();
        let upper: Vec<String> = words.iter().take(2).map(|w| w.to_ascii_uppercase()).collect();
        let (code, result, reply) = match upper.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["SET", "VARIABLE"] => match parse_set(command) {
                Some((name, value)) => {
                    if name.eq_ignore_ascii_case("CDR(userfield)") {
                        self.dialplan.cdr.user_field = value.clone();
                    } else {
                        self.var_set(&name, &value);
                        self.vars.insert(name, value);
                    }
                    (200, "Success", "200 result=1\n".to_owned())
                }
                None => (
                    520,
                    "Usage",
                    "520-Invalid command syntax.  Proper usage follows:\nSets a variable to the current channel.\n520 End of proper usage.\n"
                        .to_owned(),
                ),
            },
            ["GET", "VARIABLE"] => match words.get(2).and_then(|name| self.vars.get(*name)) {
                Some(value) => (200, "Success", format!("200 result=1 ({value})\n")),
                None => (200, "Success", "200 result=0\n".to_owned()),
            },
            ["GET", "FULL"] if words.get(2).is_some_and(|w| w.eq_ignore_ascii_case("VARIABLE")) => {
                match agi_args(command.trim_end_matches('\n')).get(3) {
                    Some(expression) => (200, "Success", format!("200 result=1 ({})\n", expand(expression, &self.vars))),
                    None => (
                        520,
                        "Usage",
                        "520-Invalid command syntax.  Proper usage follows:\nEvaluates a channel expression\n520 End of proper usage.\n"
                            .to_owned(),
                    ),
                }
            }
            // Only NoOp is run (its result is 0); an application the simulator lacks is -2, as an
            // application Asterisk does not have.
            ["EXEC", ..] => match words.get(1) {
                Some(app) if app.eq_ignore_ascii_case("NoOp") => (200, "Success", "200 result=0\n".to_owned()),
                _ => (200, "Success", "200 result=-2\n".to_owned()),
            },
            ["NOOP", ..] => (200, "Success", "200 result=0\n".to_owned()),
            ["VERBOSE", ..] => (200, "Success", "200 result=1\n".to_owned()),
            _ => (510, "Invalid or unknown command", "510 Invalid or unknown command\n".to_owned()),
        };
        let mut end = self.dialplan.event_of_class("AGIExecEnd", class::AGI);
        end.header("CommandId", &id)
            .header("Command", command)
            .header("ResultCode", &code.to_string())
            .header("Result", result);
        self.publish(end);
        reply
    }

    /// `Dial(target,timeout)` from the inbound channel; true when it was answered (the call is
    /// then over), false when the dialplan goes on.
    async fn dial(&mut self, target: &str, timeout: Duration) -> bool {
        let Some(target) = DialTarget::parse(target).filter(|t| !t.number.contains('$')) else {
            // No channel could be made (i12): no Dial events, only DIALSTATUS.
            self.var_set("DIALSTATUS", "CHANUNAVAIL");
            self.vars.insert("DIALSTATUS".into(), "CHANUNAVAIL".into());
            self.post_cdr("NO ANSWER");
            return false;
        };
        self.pbx.inbound_dials.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sequence = self.pbx.new_channel_sequence();
        let name = match target.tech {
            Tech::Local => format!("Local/{}@{}-{sequence};1", target.number, target.peer),
            tech => format!("{}/{}-{sequence}", tech.name(), target.peer),
        };
        let linkedid = self.dialplan.linkedid.clone();
        let mut callee =
            Channel::new(name, self.pbx.new_uniqueid(), linkedid, State::Down, &target.peer, &target.number);
        callee.caller = self.dialplan.caller.clone();
        self.publish(callee.event("Newchannel"));
        self.dialplan.cdr.destination_channel = callee.name.clone();
        self.publish(self.dial_event("DialBegin", &callee, ("DialString", &target.dial_string)));
        let phone = Outcome::for_number(&target.number);
        let ring = if phone == Outcome::Answer { self.pbx.config.ring.min(timeout) } else { timeout };
        let outcome = match phone {
            Outcome::Answer | Outcome::NoAnswer => {
                callee.state = State::Ringing;
                self.publish(callee.event("Newstate"));
                match self.wait(ring).await {
                    Waited::Stopped => return true,
                    Waited::HungUp => None,
                    Waited::Elapsed => Some(phone),
                }
            }
            failed => Some(failed),
        };
        match outcome {
            None => {
                // The caller hung up while the phone rang.
                self.hangup_requested();
                self.publish(self.dial_event("DialEnd", &callee, ("DialStatus", "CANCEL")));
                self.publish(callee.hangup_event("Hangup", NORMAL_CLEARING));
                self.end("caller hung up while the phone rang");
                true
            }
            Some(Outcome::Answer) => {
                self.answered = true;
                self.send_originate_response(true);
                callee.state = State::Up;
                self.publish(callee.event("Newstate"));
                self.dialplan.cdr.answer = Some(OffsetDateTime::now_utc());
                self.publish(self.dial_event("DialEnd", &callee, ("DialStatus", "ANSWER")));
                let talk_started = OffsetDateTime::now_utc();
                let caller_left = matches!(self.wait(self.pbx.config.talk).await, Waited::HungUp);
                if caller_left {
                    self.hangup_requested();
                }
                self.save_recording(talk_started).await;
                self.publish(callee.hangup_event("Hangup", NORMAL_CLEARING));
                self.end("talked");
                true
            }
            Some(failed) => {
                let status = failed.dial_status();
                self.publish(self.dial_event("DialEnd", &callee, ("DialStatus", status)));
                self.publish(callee.hangup_event("Hangup", failed.cause()));
                self.var_set("DIALSTATUS", status);
                self.vars.insert("DIALSTATUS".into(), status.into());
                let disposition = if failed == Outcome::Busy { "BUSY" } else { "NO ANSWER" };
                self.post_cdr(disposition);
                false
            }
        }
    }

    fn dial_event(&self, name: &str, callee: &Channel, extra: (&str, &str)) -> Wire {
        let mut wire = Wire::event(name, class::CALL);
        self.dialplan.write_block(&mut wire, "");
        callee.write_block(&mut wire, "Dest");
        wire.header(extra.0, extra.1);
        wire
    }

    /// The dialplan channel's CDR so far (one per Dial that did not connect, and the last).
    fn post_cdr(&mut self, disposition: &str) {
        let source = self.dialplan.caller.num.clone();
        let caller_id = format!("\"{}\" <{}>", self.dialplan.caller.name, source);
        self.publish(self.dialplan.cdr_event(disposition, &source, &caller_id));
        // Asterisk starts a fresh record for what the channel does next.
        self.dialplan.cdr.start = OffsetDateTime::now_utc();
        self.dialplan.cdr.answer = None;
        self.dialplan.cdr.destination_channel.clear();
    }

    fn send_originate_response(&self, success: bool) {
        let mut wire = Wire::event("OriginateResponse", class::CALL);
        if let Some(id) = &self.request.action_id {
            wire.header("ActionID", id);
        }
        wire.header("Response", if success { "Success" } else { "Failure" })
            .header("Channel", &self.caller.name)
            .header("Reason", if success { "4" } else { "0" })
            .header("Uniqueid", &self.caller.uniqueid);
        self.publish(wire);
    }

    /// The call's end: the dialplan channel's CDR, then both halves hang up.
    fn end(&mut self, how: &'static str) {
        if !self.answered {
            self.send_originate_response(false);
        }
        let disposition = if self.answered { "ANSWERED" } else { "NO ANSWER" };
        let source = self.dialplan.caller.num.clone();
        let caller_id = format!("\"{}\" <{}>", self.dialplan.caller.name, source);
        self.publish(self.dialplan.cdr_event(disposition, &source, &caller_id));
        self.publish(self.dialplan.hangup_event("Hangup", NORMAL_CLEARING));
        self.publish(self.caller.hangup_event("Hangup", NORMAL_CLEARING));
        let _ = &self.signal;
        tracing::info!(how, uniqueid = %self.dialplan.uniqueid, "inbound call ended");
    }

    async fn save_recording(&self, started: OffsetDateTime) {
        let (Some(dir), Some(name)) = (&self.pbx.config.recordings_dir, &self.recording) else { return };
        let talked = (OffsetDateTime::now_utc() - started).unsigned_abs();
        if let Err(e) = wav::write_atomically(dir, name, wav::tone(talked)).await {
            tracing::warn!(error = %Chain(&e), "cannot write the inbound call's recording");
        }
    }
}

/// `SET VARIABLE NAME VALUE` as Asterisk reads it: a quoted value unquoted and unescaped, an
/// unquoted one a single word; None for the usage error (no value, or several words).
fn parse_set(command: &str) -> Option<(String, String)> {
    match <[String; 4]>::try_from(agi_args(command.trim_end_matches('\n'))) {
        Ok([_, _, name, value]) => Some((name, value)),
        Err(_) => None,
    }
}

/// A command line's words as Asterisk's `parse_args` (res_agi.c) splits them: spaces and tabs
/// separate words outside quotes; a `"` anywhere opens or closes quoting (`ab"c d"e` is one word,
/// `abc de`, and an unterminated quote runs to the end); a backslash takes the next character
/// literally (`a\b` is `ab`). i9 shows each rule.
fn agi_args(line: &str) -> Vec<String> {
    let (mut words, mut quoted, mut escaped, mut between) = (Vec::<String>::new(), false, false, true);
    for c in line.chars() {
        match c {
            '"' if !escaped => {
                quoted = !quoted;
                if quoted && between {
                    words.push(String::new());
                    between = false;
                }
            }
            ' ' | '\t' if !quoted && !escaped => between = true,
            '\\' if !escaped => {
                escaped = true;
                continue;
            }
            c => {
                if between {
                    words.push(String::new());
                    between = false;
                }
                words.last_mut().expect("a word was started").push(c);
            }
        }
        escaped = false;
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_variable_reads_values_as_asterisk_does() {
        let set = |line: &str| parse_set(line).map(|(_, v)| v);
        assert_eq!(set("SET VARIABLE V plain"), Some("plain".into()));
        assert_eq!(set("SET VARIABLE V \"a b  c\""), Some("a b  c".into()));
        assert_eq!(set("SET VARIABLE V a b c"), None);
        assert_eq!(set("SET VARIABLE V \"say \\\"hi\\\" now\""), Some("say \"hi\" now".into()));
        assert_eq!(set("SET VARIABLE V \"\""), Some(String::new()));
        assert_eq!(set("SET VARIABLE"), None);
        assert_eq!(set("SET VARIABLE V ab\"c d\"e"), Some("abc de".into()));
        assert_eq!(set("SET VARIABLE V \"abc def"), Some("abc def".into()));
        assert_eq!(set("SET VARIABLE V \"a\\b\""), Some("ab".into()));
        assert_eq!(set("SET VARIABLE V \"C:\\\\dir\""), Some("C:\\dir".into()));
        assert_eq!(set("SET VARIABLE V \"a\tb\""), Some("a\tb".into()));
    }
}
