//! The dialplan a company's PBX needs for dialback, generated from its settings: a ready
//! `extensions_custom.conf` the PBX admin downloads instead of editing a template by hand, and
//! what dialback expects the PBX to run, to check it against what the PBX reports (`check`).
//!
//! It holds the courier's context (`<context>-leg1`), through which dialback's Originate rings the
//! courier when the PBX runs it, so that a failure of leg 1 is kept on the PBX too; and the
//! callback context (settings `context`) that Asterisk runs on the courier's answered channel:
//! the CDR's userfield and a recording named after the channel's `UNIQUEID` (dialback sets
//! the Originate's ChannelId to the callback id, so the recordings sync binds the file without any
//! configuration), an optional answer confirmation, then `Dial` of leg 2: the office extension
//! inside the PBX, or the client through the company's trunk. Each extension starts with a marker,
//! `NoOp(dialback dialplan VERSION)`, VERSION a digest of everything generated: the PBX's own
//! listing (`ShowDialPlan`) then says whose dialplan runs, and which download.

use aws_lc_rs::digest;
use time::OffsetDateTime;

use super::company::TenantId;
use super::outcome_record;
use super::settings::{render_channel, ConfirmAnswer, DialFormat, PbxSettings};

/// How long leg 2 (the client's or the office's phone) rings before the dialplan gives up.
pub const LEG2_RING_S: u32 = 30;

/// The variable dialback sets on each Originate to ask the context to confirm the courier's answer
/// (`dtmf`) or not (empty), and the one with the prompt's timeout in seconds.
pub const CONFIRM_VARIABLE: &str = "DIALBACK_CONFIRM";
pub const CONFIRM_TIMEOUT_VARIABLE: &str = "DIALBACK_CONFIRM_TIMEOUT";
/// The AMI `UserEvent` the context sends with the confirmation's result.
pub const CONFIRM_EVENT: &str = "DialbackConfirm";

/// The context return calls arrive in (the company's DID is sent there).
pub const INBOUND_CONTEXT: &str = "dialback-inbound";
/// How long the courier's phone rings for a return call before the office takes it.
pub const RETURN_RING_S: u32 = 20;

/// What every generated extension's first priority says (`NoOp` data), before the version.
pub const MARKER: &str = "dialback dialplan ";

/// One priority as generated: `Application(data)`, with an optional label and a comment above it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub label: Option<&'static str>,
    pub application: &'static str,
    pub data: String,
    pub comment: Option<String>,
}

fn step(application: &'static str, data: impl Into<String>) -> Step {
    Step { label: None, application, data: data.into(), comment: None }
}

/// One extension: its pattern and its priorities, numbered from 1 in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    pub pattern: String,
    pub comment: String,
    pub steps: Vec<Step>,
}

/// A context as generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub name: String,
    pub comment: String,
    pub extensions: Vec<Extension>,
    /// Whether something the company turned on needs the PBX to run this context as generated
    /// (answer confirmation, return calls): without it dialback cannot keep its promises.
    pub required_by: Option<&'static str>,
}

/// The whole dialplan dialback generates for a company.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub tenant: TenantId,
    pub contexts: Vec<Context>,
    /// A digest of every context, extension and priority: the marker's version.
    pub version: String,
}

/// The dialplan for `tenant`'s settings; `None` when the company has no PBX. With
/// `return_calls_agi` (the company's `agi://.../route?key=...`), it also holds the context return
/// calls arrive in.
pub fn generate(tenant: &TenantId, settings: &PbxSettings, return_calls_agi: Option<&str>) -> Option<Generated> {
    if !settings.has_pbx() {
        return None;
    }
    let mut callback = Context {
        name: settings.context.clone(),
        comment:
            "Callbacks: dialback's Originate rings the courier (leg 1) and, once they answer, runs this context on\n\
                  their channel with EXTEN = whom leg 2 rings and DIALBACK_CALL_ID = the callback's id (also the\n\
                  channel's UNIQUEID: the recording below is bound to the callback by its name)."
                .into(),
        extensions: Vec::new(),
        required_by: (settings.confirm_courier_answer == ConfirmAnswer::Dtmf).then_some("answer confirmation"),
    };
    let internal = &settings.internal_context;
    if let Some(extension) = &settings.office_extension {
        callback.extensions.push(Extension {
            pattern: extension.clone(),
            comment: format!(
                "\"Call the office\": the office extension {extension}, dialled inside the PBX (context {internal}, the \
                 setting internal_context)."
            ),
            steps: leg2(&format!("Local/${{EXTEN}}@{internal}"), settings),
        });
    }
    let prefix = if settings.client_prefix.is_empty() {
        String::new()
    } else {
        format!(" (after the client prefix {})", settings.client_prefix)
    };
    let client_dial = render_channel(&settings.channel_template, "${EXTEN}");
    callback.extensions.push(Extension {
        pattern: number_pattern(settings.dial_format, &settings.client_prefix).to_owned(),
        comment: format!("\"Call the client\": the client's number{prefix}, out through the company's trunk."),
        steps: leg2(&client_dial, settings),
    });
    let mut contexts = vec![callback, courier(settings), outcome(settings)];
    if let Some(agi) = return_calls_agi {
        contexts.push(inbound(agi, settings));
    }
    let version = version_of(&contexts);
    for context in &mut contexts {
        for extension in &mut context.extensions {
            extension.steps.insert(0, step("NoOp", format!("{MARKER}{version}")));
        }
    }
    Some(Generated { tenant: tenant.clone(), contexts, version })
}

/// The extension pattern of a number dialled in `format` after `prefix`: `+7916...` (E.164 without a
/// prefix) or digits.
fn number_pattern(format: DialFormat, prefix: &str) -> &'static str {
    match format {
        DialFormat::E164 if prefix.is_empty() => "_+X.",
        DialFormat::E164 | DialFormat::Digits | DialFormat::National => "_X.",
    }
}

/// The name of the courier's context for the callback context `context`: dialback's Originate
/// rings the courier through it (`Local/<courier>@<context>-leg1/n`) once the PBX runs it.
pub fn leg1_context(context: &str) -> String {
    format!("{context}-leg1")
}

/// The courier's context: leg 1 rings through the dialplan, so a hangup handler sees how it ended
/// (busy, no answer, ...) and keeps it on the PBX, which it cannot when Asterisk dials the courier
/// for the Originate itself (the handler is then only pushed once the courier answered).
///
/// `Dial` has no timeout: the Originate's own `Timeout` ends the ringing, and the Originate then
/// reports no answer (Reason 3), where a `Dial` timing out first would report Reason 0. No
/// `Hangup()` follows it: run out of priorities, Asterisk hangs the channel up with the cause of
/// the `Dial` status, and the Originate reports busy (5) and congestion (8) as such; a `Hangup()`
/// would turn both into Reason 0 (tests/fixtures/asterisk-22/ami-k5/README.md).
fn courier(settings: &PbxSettings) -> Context {
    let handler = format!("{},{LEG1_HANDLER_EXTEN},1", outcome_context(&settings.context));
    let dial = render_channel(&settings.channel_template, "${EXTEN}");
    let extension = Extension {
        pattern: number_pattern(settings.dial_format, &settings.courier_prefix).to_owned(),
        comment: String::new(),
        steps: vec![step("Set", format!("CHANNEL(hangup_handler_push)={handler}")), step("Dial", dial)],
    };
    Context {
        name: leg1_context(&settings.context),
        comment: format!(
            "The courier's leg: dialback's Originate rings the courier's phone through this context\n\
             (Local/<courier>@{}/n), so that the PBX keeps how this leg ended (busy, no answer)\n\
             as it keeps the rest of the call. Until the PBX runs it, dialback rings the courier directly,\n\
             and a courier leg that fails while no dialback process listens ends `unknown`.",
            leg1_context(&settings.context)
        ),
        extensions: vec![extension],
        required_by: None,
    }
}

/// The first 12 hex digits of the SHA-256 of every context's name, extensions and priorities.
fn version_of(contexts: &[Context]) -> String {
    let mut sha256 = digest::Context::new(&digest::SHA256);
    for context in contexts {
        sha256.update(format!("[{}]\n", context.name).as_bytes());
        for extension in &context.extensions {
            for s in &extension.steps {
                let line = format!("{},{},{}({})\n", extension.pattern, s.label.unwrap_or(""), s.application, s.data);
                sha256.update(line.as_bytes());
            }
        }
    }
    hex_prefix(sha256.finish().as_ref(), 6)
}

fn hex_prefix(bytes: &[u8], n: usize) -> String {
    bytes.iter().take(n).map(|b| format!("{b:02x}")).collect()
}

/// The return-call context: ask dialback (FastAGI) where the caller goes; dial the courier it
/// names, else (no route, dialback unreachable, or the courier did not take it) the office.
fn inbound(agi: &str, settings: &PbxSettings) -> Context {
    let office = match &settings.office_extension {
        Some(extension) => step("Dial", format!("Local/{extension}@{},{LEG2_RING_S}", settings.internal_context)),
        None => Step {
            comment: Some(
                "No office extension is set in dialback's settings: set office_extension there and download again"
                    .into(),
            ),
            ..step("Hangup", "")
        },
    };
    let steps = vec![
        step("Set", "CDR(userfield)=return-call"),
        step("AGI", format!("{agi},${{EXTEN}}")),
        step("Set", "CDR(userfield)=${DIALBACK_CALL_ID}"),
        step("GotoIf", "$[\"${DIALBACK_ROUTE}\" = \"\"]?office"),
        step("MixMonitor", "${DIALBACK_CALL_ID}.wav"),
        step("Dial", format!("${{DIALBACK_ROUTE}},{RETURN_RING_S}")),
        Step { label: Some("office"), ..office },
        step("Hangup", ""),
    ];
    Context {
        name: INBOUND_CONTEXT.into(),
        comment: format!(
            "Return calls: a client calling the company's number back reaches the courier of their order.\n\
             Send the company's number (DID) here: in FreePBX an inbound route whose destination is the custom\n\
             destination {INBOUND_CONTEXT},${{EXTEN}},1; on a plain Asterisk, Goto({INBOUND_CONTEXT},${{EXTEN}},1) in the\n\
             trunk's context, in place of any AGI line an earlier integration put there (without dialback's key\n\
             dialback sends every call to the office). dialback sets DIALBACK_ROUTE to the courier's phone, or\n\
             leaves it empty: the office. If dialback cannot be reached the call goes to the office (within 2 s,\n\
             Asterisk's connect timeout)."
        ),
        extensions: vec![Extension { pattern: "_X.".into(), comment: String::new(), steps }],
        required_by: Some("return calls"),
    }
}

/// The name of the hangup handler's context for the callback context `context`.
pub fn outcome_context(context: &str) -> String {
    format!("{context}-outcome")
}

/// The extension of the outcome context that keeps leg 1's record.
pub const LEG1_HANDLER_EXTEN: &str = "leg1";

/// The hangup handlers the callback context (`s`) and the courier's context ([`LEG1_HANDLER_EXTEN`])
/// push: each keeps its leg's outcome on the PBX (AstDB), for when no dialback process heard the
/// call end ([`outcome_record`]).
fn outcome(settings: &PbxSettings) -> Context {
    let record = |family: &str| {
        let entry = format!("DB({})={}", outcome_record::dialplan_entry(family), outcome_record::dialplan_value());
        vec![step("Set", entry), step("Return", "")]
    };
    Context {
        name: outcome_context(&settings.context),
        comment: format!(
            "The outcome of each callback, kept on the PBX: run as the courier's channels hang up, each handler\n\
             writes one AstDB entry (families {} and {}, the last {} digits of the call id; a later\n\
             call overwrites it), which dialback reads when a call ended while no dialback process was\n\
             listening. Without them such a call is `unknown`.",
            outcome_record::FAMILY,
            outcome_record::LEG1_FAMILY,
            outcome_record::KEY_DIGITS
        ),
        extensions: vec![
            Extension { pattern: "s".into(), comment: String::new(), steps: record(outcome_record::FAMILY) },
            Extension {
                pattern: LEG1_HANDLER_EXTEN.into(),
                comment: "Leg 1's outcome (the courier's context pushes it).".into(),
                steps: record(outcome_record::LEG1_FAMILY),
            },
        ],
        required_by: None,
    }
}

/// One extension of the callback context: the outcome's hangup handler, userfield, recording,
/// the confirmation when asked for, `Dial` of leg 2, hang up.
fn leg2(dial: &str, settings: &PbxSettings) -> Vec<Step> {
    let confirm = settings.confirm_courier_answer == ConfirmAnswer::Dtmf;
    let mut steps = vec![
        step("Set", format!("CHANNEL(hangup_handler_push)={},s,1", outcome_context(&settings.context))),
        step("Set", "CDR(userfield)=${DIALBACK_CALL_ID}"),
        step("MixMonitor", "${UNIQUEID}.wav"),
    ];
    if confirm {
        // The courier must press 1 (a beep, then up to the timeout) before leg 2 rings: a voicemail
        // or a carrier's recording answers like a person. The UserEvent tells dialback the result.
        steps.extend([
            step("GotoIf", format!("$[\"${{{CONFIRM_VARIABLE}}}\" != \"dtmf\"]?dial")),
            step(
                "Read",
                format!("{},beep,1,,1,${{{CONFIRM_TIMEOUT_VARIABLE}}}", outcome_record::CONFIRM_DIGIT_VARIABLE),
            ),
            step(
                "UserEvent",
                format!(
                    "{CONFIRM_EVENT},CallId: ${{DIALBACK_CALL_ID}},Digit: ${{CONFIRM}},ReadStatus: ${{READSTATUS}}"
                ),
            ),
            step("GotoIf", "$[\"${CONFIRM}\" != \"1\"]?unconfirmed"),
        ]);
    }
    steps.push(Step { label: confirm.then_some("dial"), ..step("Dial", format!("{dial},{LEG2_RING_S}")) });
    steps.push(step("Hangup", ""));
    if confirm {
        steps.push(Step { label: Some("unconfirmed"), ..step("Hangup", "") });
    }
    steps
}

/// `extensions_custom.conf` of a generated dialplan, stamped with `generated_at`.
pub fn render(generated: &Generated, generated_at: OffsetDateTime) -> String {
    let names: Vec<&str> = generated.contexts.iter().map(|c| c.name.as_str()).collect();
    let mut out = format!(
        "; extensions_custom.conf for dialback: generated for company \"{}\" on {} from its saved settings\n\
         ; (dialplan version {}).\n\
         ;\n\
         ; Where it goes: FreePBX reads /etc/asterisk/extensions_custom.conf by itself; on a plain Asterisk,\n\
         ; put the file there and add `#include extensions_custom.conf` at the end of\n\
         ; /etc/asterisk/extensions.conf. Then run: asterisk -rx \"dialplan reload\"\n\
         ;\n\
         ; It defines the context{} {}.\n\
         ; No other file may define {}: Asterisk keeps the first definition of a context priority by\n\
         ; priority and logs \"Unable to register extension ... already in use\" for the rest, so an older\n\
         ; context of the same name would silently run instead of this one.\n\
         ;\n\
         ; It follows dialback's settings (context, internal_context, office extension, channel template,\n\
         ; client prefix, answer confirmation, return calls): after changing them, download it again rather\n\
         ; than editing it. The Test button in dialback's admin page checks that the PBX runs this version,\n\
         ; then places a real call through it.\n",
        generated.tenant,
        generated_at.date(),
        generated.version,
        if names.len() > 1 { "s" } else { "" },
        as_list(&names.iter().map(|n| format!("[{n}]")).collect::<Vec<_>>()),
        if names.len() > 1 { "them" } else { "it" },
    );
    for context in &generated.contexts {
        out.push_str(&format!("\n[{}]\n", context.name));
        push_comment(&mut out, "", &context.comment);
        for extension in &context.extensions {
            if !extension.comment.is_empty() {
                out.push('\n');
                push_comment(&mut out, "", &extension.comment);
            }
            for (i, s) in extension.steps.iter().enumerate() {
                if let Some(comment) = &s.comment {
                    push_comment(&mut out, " ", comment);
                }
                let label = s.label.map(|l| format!("({l})")).unwrap_or_default();
                match i {
                    0 => out
                        .push_str(&format!("exten => {},1{label},{}({})\n", extension.pattern, s.application, s.data)),
                    _ => out.push_str(&format!(" same => n{label},{}({})\n", s.application, s.data)),
                }
            }
        }
    }
    out
}

/// `a`, `a and b`, `a, b and c`.
fn as_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn push_comment(out: &mut String, indent: &str, text: &str) {
    for line in text.lines() {
        out.push_str(&format!("{indent}; {line}\n"));
    }
}

/// One priority as the PBX runs it (what `ShowDialPlan` lists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveLine {
    pub extension: String,
    pub priority: u32,
    pub application: String,
    pub app_data: String,
}

/// How a context the PBX runs compares with what dialback generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Exactly what dialback generated, this version.
    Current,
    /// The PBX has no context of this name.
    Missing,
    /// The context lacks an extension dialback generates (e.g. the office's, added since).
    MissingExtension { extension: String },
    /// dialback's dialplan, an earlier download (another version).
    Outdated { installed: String },
    /// Another definition runs: priorities that are not dialback's. Either an older context of the
    /// same name loaded first and shadows dialback's (Asterisk keeps the first definition priority
    /// by priority), or the company dials through a context of its own.
    Differs {
        extension: String,
        /// The priorities whose application or data are not dialback's.
        priorities: Vec<u32>,
        /// What the first of them runs.
        first: String,
    },
}

/// Compares `context` as generated with what the PBX lists for it (`None`: no such context).
pub fn check(context: &Context, live: Option<&[LiveLine]>) -> Found {
    let Some(live) = live else { return Found::Missing };
    for extension in &context.extensions {
        let mut running: Vec<&LiveLine> = live.iter().filter(|l| l.extension == extension.pattern).collect();
        running.sort_by_key(|l| l.priority);
        let Some(first) = running.first() else {
            return Found::MissingExtension { extension: extension.pattern.clone() };
        };
        let ours = &extension.steps[0];
        if first.priority == 1 && first.application.eq_ignore_ascii_case("NoOp") && first.app_data != ours.data {
            if let Some(installed) = first.app_data.strip_prefix(MARKER) {
                return Found::Outdated { installed: installed.trim().to_owned() };
            }
        }
        let differing: Vec<u32> = (1..=extension.steps.len() as u32)
            .filter(|n| {
                let want = &extension.steps[*n as usize - 1];
                !running.iter().any(|l| {
                    l.priority == *n && l.application.eq_ignore_ascii_case(want.application) && l.app_data == want.data
                })
            })
            .collect();
        if let Some(n) = differing.first() {
            let first = running
                .iter()
                .find(|l| l.priority == *n)
                .map_or_else(|| "nothing".to_owned(), |l| format!("{}({})", l.application, l.app_data));
            return Found::Differs { extension: extension.pattern.clone(), priorities: differing, first };
        }
    }
    Found::Current
}

/// `1-6, 9` for priorities 1, 2, 3, 4, 5, 6 and 9.
pub fn ranges(numbers: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < numbers.len() {
        let start = numbers[i];
        let mut end = start;
        while i + 1 < numbers.len() && numbers[i + 1] == end + 1 {
            i += 1;
            end = numbers[i];
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        i += 1;
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::tests::sample;

    fn text(settings: &PbxSettings, agi: Option<&str>) -> String {
        render(&generate(&TenantId::stored("acme"), settings, agi).unwrap(), OffsetDateTime::UNIX_EPOCH)
    }

    /// What the PBX lists when it runs `context` as generated.
    fn listed(context: &Context) -> Vec<LiveLine> {
        context
            .extensions
            .iter()
            .flat_map(|e| {
                e.steps.iter().zip(1..).map(|(s, n)| LiveLine {
                    extension: e.pattern.clone(),
                    priority: n,
                    application: s.application.to_owned(),
                    app_data: s.data.clone(),
                })
            })
            .collect()
    }

    #[test]
    fn the_context_dials_the_office_inside_and_clients_through_the_trunk() {
        let text = text(&sample(), None);
        assert!(text.contains("[from-courier]"), "{text}");
        assert!(!text.contains(INBOUND_CONTEXT), "no return calls unless asked for: {text}");
        assert!(text.contains("exten => 101,1,NoOp(dialback dialplan "), "{text}");
        assert!(text.contains(" same => n,Set(CDR(userfield)=${DIALBACK_CALL_ID})"), "{text}");
        assert!(text.contains("Dial(Local/${EXTEN}@from-internal,30)"), "{text}");
        assert!(text.contains("exten => _X.,1,"), "{text}");
        assert!(text.contains("Dial(PJSIP/${EXTEN}@trunk,30)"), "{text}");
        assert!(!text.contains("Read("), "no confirmation unless asked for: {text}");
        assert!(!text.contains("CHANGE"), "nothing to edit by hand: {text}");
    }

    #[test]
    fn leg_1_rings_through_a_context_that_keeps_its_outcome() {
        let text = text(&sample(), None);
        assert!(text.contains("[from-courier-leg1]"), "{text}");
        assert!(text.contains(" same => n,Set(CHANNEL(hangup_handler_push)=from-courier-outcome,leg1,1)"), "{text}");
        // No timeout (the Originate's ends the ringing) and no Hangup() after it
        // (tests/fixtures/asterisk-22/ami-k5/README.md).
        assert!(text.contains(" same => n,Dial(PJSIP/${EXTEN}@trunk)\n\n"), "{text}");
        assert!(text.contains("exten => leg1,1,NoOp(dialback dialplan "), "{text}");
        assert!(
            text.contains(" same => n,Set(DB(dialback-leg1/${DIALBACK_CALL_ID:-4})=${DIALBACK_CALL_ID}|"),
            "{text}"
        );
        let mut e164 = sample();
        e164.dial_format = DialFormat::E164;
        let text =
            super::render(&generate(&TenantId::stored("acme"), &e164, None).unwrap(), OffsetDateTime::UNIX_EPOCH);
        assert!(text.contains("[from-courier-leg1]\n") && text.contains("exten => _+X.,1,"), "{text}");
    }

    #[test]
    fn the_internal_context_is_a_setting_not_a_hand_edit() {
        let mut s = sample();
        s.internal_context = "ext-local".into();
        let text = text(&s, Some("agi://10.0.0.5:4573/route?key=k"));
        assert!(text.contains("Dial(Local/${EXTEN}@ext-local,30)"), "{text}");
        assert!(text.contains("same => n(office),Dial(Local/101@ext-local,30)"), "{text}");
        assert!(!text.contains("from-internal"), "{text}");
    }

    #[test]
    fn without_a_pbx_there_is_no_dialplan() {
        let mut s = sample();
        s.host.clear();
        assert!(generate(&TenantId::stored("acme"), &s, None).is_none());
    }

    #[test]
    fn return_calls_ask_dialback_then_dial_the_courier_else_the_office() {
        let text = text(&sample(), Some("agi://10.0.0.5:4573/route?key=k"));
        assert!(text.contains("[dialback-inbound]"), "{text}");
        assert!(text.contains("same => n,AGI(agi://10.0.0.5:4573/route?key=k,${EXTEN})"), "{text}");
        assert!(text.contains("same => n,Dial(${DIALBACK_ROUTE},20)"), "{text}");
        assert!(text.contains("same => n(office),Dial(Local/101@from-internal,30)"), "{text}");
    }

    #[test]
    fn the_version_follows_every_setting_the_dialplan_reads() {
        let version = |s: &PbxSettings| generate(&TenantId::stored("acme"), s, None).unwrap().version;
        let base = version(&sample());
        assert_eq!(base.len(), 12);
        assert_eq!(version(&sample()), base, "the same settings, the same version");
        let mut s = sample();
        s.confirm_courier_answer = ConfirmAnswer::Dtmf;
        assert_ne!(version(&s), base);
        let mut s = sample();
        s.internal_context = "ext-local".into();
        assert_ne!(version(&s), base);
    }

    #[test]
    fn the_live_context_is_current_missing_outdated_or_another_definition() {
        let mut confirming = sample();
        confirming.confirm_courier_answer = ConfirmAnswer::Dtmf;
        let generated = generate(&TenantId::stored("acme"), &confirming, None).unwrap();
        let context = &generated.contexts[0];
        assert_eq!(context.required_by, Some("answer confirmation"));
        assert_eq!(check(context, Some(&listed(context))), Found::Current);
        assert_eq!(check(context, None), Found::Missing);

        // An earlier download, before confirmation was turned on.
        let old = generate(&TenantId::stored("acme"), &sample(), None).unwrap();
        assert_eq!(check(context, Some(&listed(&old.contexts[0]))), Found::Outdated { installed: old.version.clone() });

        // An older [from-courier] loaded first: its six priorities win, dialback's add the rest.
        let mut shadowed = listed(context);
        for (n, line) in shadowed.iter_mut().filter(|l| l.extension == "_X.").take(6).enumerate() {
            line.application = if n == 0 { "NoOp".into() } else { "Dial".into() };
            line.app_data = if n == 0 { "old courier context".into() } else { "SIP/trunk/${EXTEN}".into() };
        }
        match check(context, Some(&shadowed)) {
            Found::Differs { extension, priorities, first } => {
                assert_eq!((extension.as_str(), ranges(&priorities).as_str()), ("_X.", "1-6"));
                assert_eq!(first, "NoOp(old courier context)");
            }
            other => panic!("{other:?}"),
        }

        // The office extension added since the download.
        let without_office: Vec<LiveLine> = listed(context).into_iter().filter(|l| l.extension != "101").collect();
        assert_eq!(check(context, Some(&without_office)), Found::MissingExtension { extension: "101".into() });
    }

    #[test]
    fn ranges_read_as_a_person_writes_them() {
        assert_eq!(ranges(&[1, 2, 3, 4, 5, 6, 9]), "1-6, 9");
        assert_eq!(ranges(&[2]), "2");
        assert_eq!(ranges(&[]), "");
    }
}
