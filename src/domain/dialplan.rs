//! The dialplan a company's PBX needs for dialback, generated from its settings: a ready
//! `extensions_custom.conf` the PBX admin downloads instead of editing a template by hand.
//!
//! It holds the callback context (settings `context`) that Asterisk runs on the courier's answered
//! channel: the CDR's userfield and a recording named after the channel's `UNIQUEID` (dialback sets
//! the Originate's ChannelId to the callback id, so the recordings sync binds the file without any
//! configuration), an optional answer confirmation, then `Dial` of leg 2: the office extension
//! inside the PBX, or the client through the company's trunk.

use time::OffsetDateTime;

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

/// `extensions_custom.conf` for `tenant`'s settings; `None` when the company has no PBX. With
/// `return_calls_agi` (the company's `agi://.../route?key=...`), it also holds the context return
/// calls arrive in.
pub fn render(
    tenant: &str,
    settings: &PbxSettings,
    return_calls_agi: Option<&str>,
    generated_at: OffsetDateTime,
) -> Option<String> {
    if !settings.has_pbx() {
        return None;
    }
    let date = generated_at.date();
    let context = &settings.context;
    let client_dial = render_channel(&settings.channel_template, "${EXTEN}");
    let mut out = format!(
        "; extensions_custom.conf for dialback: generated for company \"{tenant}\" on {date} from its saved settings.\n\
         ;\n\
         ; Where it goes: FreePBX reads /etc/asterisk/extensions_custom.conf by itself; on a plain Asterisk,\n\
         ; put the file there and add `#include extensions_custom.conf` at the end of\n\
         ; /etc/asterisk/extensions.conf. Then run: asterisk -rx \"dialplan reload\"\n\
         ;\n\
         ; It follows dialback's settings (context, office extension, channel template, client prefix, answer\n\
         ; confirmation): after changing them, download it again rather than editing it. Lines marked CHANGE\n\
         ; are the ones a PBX may need adapted.\n\
         ;\n\
         ; Check it with the Test button in dialback's admin page: a real call through this context.\n\
         \n\
         [{context}]\n\
         ; Callbacks: dialback's Originate rings the courier (leg 1) and, once they answer, runs this context on\n\
         ; their channel with EXTEN = whom leg 2 rings and DIALBACK_CALL_ID = the callback's id (also the\n\
         ; channel's UNIQUEID: the recording below is bound to the callback by its name).\n"
    );
    if let Some(extension) = &settings.office_extension {
        out.push_str(&format!(
            "\n; \"Call the office\": the office extension {extension}, dialled inside the PBX as written.\n"
        ));
        push_leg2(&mut out, extension, "Local/${EXTEN}@from-internal", settings, true);
    }
    let client_patterns: &[&str] = match settings.dial_format {
        // `+7916...`, and the same with the client prefix before it.
        DialFormat::E164 if settings.client_prefix.is_empty() => &["_+X."],
        DialFormat::E164 => &["_X."],
        DialFormat::Digits | DialFormat::National => &["_X."],
    };
    let prefix = if settings.client_prefix.is_empty() {
        String::new()
    } else {
        format!(" (after the client prefix {})", settings.client_prefix)
    };
    for pattern in client_patterns {
        out.push_str(&format!(
            "\n; \"Call the client\": the client's number{prefix}, out through the company's trunk.\n"
        ));
        push_leg2(&mut out, pattern, &client_dial, settings, false);
    }
    if let Some(agi) = return_calls_agi {
        push_inbound(&mut out, agi, settings);
    }
    Some(out)
}

/// The return-call context: ask dialback (FastAGI) where the caller goes; dial the courier it
/// names, else (no route, dialback unreachable, or the courier did not take it) the office.
fn push_inbound(out: &mut String, agi: &str, settings: &PbxSettings) {
    let office = match &settings.office_extension {
        Some(extension) => format!("Dial(Local/{extension}@from-internal,30)"),
        None => "Hangup() ; CHANGE: dial the office here (no office extension is set in dialback)".into(),
    };
    out.push_str(&format!(
        "\n[{INBOUND_CONTEXT}]\n\
         ; Return calls: a client calling the company's number back reaches the courier of their order.\n\
         ; Send the company's number (DID) here: in FreePBX an inbound route whose destination is the custom\n\
         ; destination {INBOUND_CONTEXT},${{EXTEN}},1; on a plain Asterisk, Goto({INBOUND_CONTEXT},${{EXTEN}},1) in the\n\
         ; trunk's context. dialback sets DIALBACK_ROUTE to the courier's phone, or leaves it empty: the office.\n\
         ; If dialback cannot be reached the call goes to the office (within 2 s, Asterisk's connect timeout).\n\
         exten => _X.,1,Set(CDR(userfield)=return-call)\n \
         same => n,AGI({agi},${{EXTEN}})\n \
         same => n,Set(CDR(userfield)=${{DIALBACK_CALL_ID}})\n \
         same => n,GotoIf($[\"${{DIALBACK_ROUTE}}\" = \"\"]?office)\n \
         same => n,MixMonitor(${{DIALBACK_CALL_ID}}.wav)\n \
         same => n,Dial(${{DIALBACK_ROUTE}},{RETURN_RING_S})\n \
         ; CHANGE from-internal to the context your extensions are in, if it is another\n \
         same => n(office),{office}\n \
         same => n,Hangup()\n"
    ));
}

/// One extension of the callback context: userfield, recording, the confirmation when asked for,
/// `Dial` of leg 2, hang up.
fn push_leg2(out: &mut String, extension: &str, dial: &str, settings: &PbxSettings, office: bool) {
    out.push_str(&format!("exten => {extension},1,Set(CDR(userfield)=${{DIALBACK_CALL_ID}})\n"));
    out.push_str(" same => n,MixMonitor(${UNIQUEID}.wav)\n");
    if settings.confirm_courier_answer == ConfirmAnswer::Dtmf {
        // The courier must press 1 (a beep, then up to the timeout) before leg 2 rings: a voicemail
        // or a carrier's recording answers like a person. The UserEvent tells dialback the result.
        out.push_str(&format!(
            " same => n,GotoIf($[\"${{{CONFIRM_VARIABLE}}}\" != \"dtmf\"]?dial)\n \
             same => n,Read(CONFIRM,beep,1,,1,${{{CONFIRM_TIMEOUT_VARIABLE}}})\n \
             same => n,UserEvent({CONFIRM_EVENT},CallId: ${{DIALBACK_CALL_ID}},Digit: ${{CONFIRM}},ReadStatus: ${{READSTATUS}})\n \
             same => n,GotoIf($[\"${{CONFIRM}}\" != \"1\"]?unconfirmed)\n"
        ));
    }
    if office {
        out.push_str(" ; CHANGE from-internal to the context your extensions are in, if it is another\n");
    }
    let label = if settings.confirm_courier_answer == ConfirmAnswer::Dtmf { "(dial)" } else { "" };
    out.push_str(&format!(" same => n{label},Dial({dial},{LEG2_RING_S})\n same => n,Hangup()\n"));
    if settings.confirm_courier_answer == ConfirmAnswer::Dtmf {
        out.push_str(" same => n(unconfirmed),Hangup()\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::settings::tests::sample;

    #[test]
    fn the_context_dials_the_office_inside_and_clients_through_the_trunk() {
        let text = render("acme", &sample(), None, OffsetDateTime::UNIX_EPOCH).unwrap();
        assert!(text.contains("[from-courier]"), "{text}");
        assert!(!text.contains(INBOUND_CONTEXT), "no return calls unless asked for: {text}");
        assert!(text.contains("exten => 101,1,Set(CDR(userfield)=${DIALBACK_CALL_ID})"), "{text}");
        assert!(text.contains("Dial(Local/${EXTEN}@from-internal,30)"), "{text}");
        assert!(text.contains("exten => _X.,1,"), "{text}");
        assert!(text.contains("Dial(PJSIP/${EXTEN}@trunk,30)"), "{text}");
        assert!(!text.contains("Read("), "no confirmation unless asked for: {text}");
    }

    #[test]
    fn without_a_pbx_there_is_no_dialplan() {
        let mut s = sample();
        s.host.clear();
        assert!(render("acme", &s, None, OffsetDateTime::UNIX_EPOCH).is_none());
    }

    #[test]
    fn return_calls_ask_dialback_then_dial_the_courier_else_the_office() {
        let text =
            render("acme", &sample(), Some("agi://10.0.0.5:4573/route?key=k"), OffsetDateTime::UNIX_EPOCH).unwrap();
        assert!(text.contains("[dialback-inbound]"), "{text}");
        assert!(text.contains("same => n,AGI(agi://10.0.0.5:4573/route?key=k,${EXTEN})"), "{text}");
        assert!(text.contains("same => n,Dial(${DIALBACK_ROUTE},20)"), "{text}");
        assert!(text.contains("same => n(office),Dial(Local/101@from-internal,30)"), "{text}");
    }
}
