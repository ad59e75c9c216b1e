//! What an AMI event says about a callback, as a fact of the domain's state machine: the one place
//! that reads the AMI wire for call tracking (OriginateResponse reasons, DialEnd statuses, the two
//! halves of a Local channel). Correlation is by the callback's id, which dialback set as the
//! Originate's ChannelId: the courier channel's Uniqueid and every leg's Linkedid.

use crate::ami::message::reason as originate_reason;
use crate::ami::AmiEvent;
use crate::domain::callback::{CdrOf, CdrRecord, Confirmation, Fact, Reason};
use crate::domain::dialplan;

/// The fact `event` states about the call whose id is `key`, if any.
pub fn fact_of(event: &AmiEvent, key: &str) -> Option<Fact> {
    match event {
        AmiEvent::OriginateResponse(r) if r.uniqueid == key => Some(if r.success {
            Fact::CourierAnswered { channel: Some(r.channel.clone()) }
        } else {
            Fact::CourierFailed { reason: originate_failure(r.reason) }
        }),
        // The courier channel dialling the client: leg 2.
        AmiEvent::DialEnd(d) if d.uniqueid.as_deref() == Some(key) => match d.dial_status.as_deref() {
            Some("ANSWER") => Some(Fact::ClientAnswered),
            Some(status) => Some(Fact::ClientFailed { reason: Reason::from_dial_status(status) }),
            None => None,
        },
        // The courier channel beginning to dial leg 2 (only after the courier confirmed, when
        // the company asks them to: see `Fact::ClientDialled`).
        AmiEvent::DialBegin(d) if d.uniqueid.as_deref() == Some(key) => Some(Fact::ClientDialled),
        // The originate dialling the courier: leg 1.
        AmiEvent::DialEnd(d) if d.uniqueid.is_none() && d.dest_uniqueid == key => match d.dial_status.as_deref() {
            Some("ANSWER") => Some(Fact::CourierAnswered { channel: Some(d.dest_channel.clone()) }),
            Some(status) => Some(Fact::CourierFailed { reason: Reason::from_dial_status(status) }),
            None => None,
        },
        // The courier channel entering the bridge with leg 2. Not any channel of the call: when leg
        // 1 rings through the dialplan (or a Local channel template), the courier's phone and the
        // `;2` half are bridged as soon as the courier answers, while the client has not been dialled
        // (tests/fixtures/asterisk-22/ami-k5/k5_cancel_while_client_rings.raw.txt).
        AmiEvent::BridgeEnter(c) if c.uniqueid == key => Some(Fact::Bridged),
        // A Local courier channel comes as two halves: `;1` (Uniqueid = key) hangs up with cause 0
        // on busy or congestion, `;2` (`key;2`) carries the real cause.
        AmiEvent::Hangup(h) if h.channel.uniqueid == key || h.channel.uniqueid.strip_suffix(";2") == Some(key) => {
            Some(Fact::CourierHangup { cause: h.cause })
        }
        // The answer confirmation's result, sent by the dialplan dialback generates
        // (`domain::dialplan`): `ReadStatus` OK with `Digit: 1` confirms; TIMEOUT (or another
        // key) does not; ERROR means the PBX could not play the prompt.
        AmiEvent::UserEvent(u) if u.name == dialplan::CONFIRM_EVENT && u.get("CallId") == Some(key) => {
            Some(Fact::Confirmation(Confirmation::read(u.get("ReadStatus"), u.get("Digit"))))
        }
        AmiEvent::Cdr(c) if c.uniqueid == key || c.uniqueid.strip_suffix(";2") == Some(key) => {
            let of = if c.uniqueid == key { CdrOf::Courier } else { CdrOf::CourierPhone };
            Some(Fact::Cdr { of, record: Box::new(cdr_record(c)) })
        }
        _ => None,
    }
}

/// What Asterisk's CDR event says, as the domain keeps it (callbacks and return calls alike).
pub fn cdr_record(c: &crate::ami::message::Cdr) -> CdrRecord {
    CdrRecord {
        channel: c.channel.clone(),
        destination_channel: c.destination_channel.clone(),
        source: c.source.clone(),
        destination: c.destination.clone(),
        destination_context: c.destination_context.clone(),
        disposition: c.disposition.clone(),
        duration_seconds: c.duration_s,
        billable_seconds: c.billable_s,
        user_field: c.user_field.clone(),
        account_code: c.account_code.clone(),
        last_application: c.last_application.clone(),
        last_data: c.last_data.clone(),
        start_time: c.start_time.clone(),
        answer_time: c.answer_time.clone(),
        end_time: c.end_time.clone(),
    }
}

/// A failed OriginateResponse's `Reason` (coarse: 0 covers rejected and unreachable alike).
fn originate_failure(reason: u32) -> Reason {
    match reason {
        originate_reason::BUSY => Reason::Busy,
        originate_reason::NO_ANSWER => Reason::NoAnswer,
        originate_reason::CONGESTION => Reason::Congestion,
        _ => Reason::Unreachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ami::message::{ChannelRef, Hangup};

    #[test]
    fn the_second_half_of_a_local_courier_channel_speaks_for_the_call() {
        let half = |uniqueid: &str| {
            AmiEvent::Hangup(Hangup {
                channel: ChannelRef {
                    channel: "Local/79001112230@phones-00000001;2".into(),
                    uniqueid: uniqueid.into(),
                    linkedid: "abc".into(),
                },
                cause: 17,
                cause_txt: "User busy".into(),
            })
        };
        assert_eq!(fact_of(&half("abc;2"), "abc"), Some(Fact::CourierHangup { cause: 17 }));
        assert_eq!(fact_of(&half("abd;2"), "abc"), None, "another call's channel");
    }

    #[test]
    fn only_the_courier_channel_entering_a_bridge_connects_the_call() {
        let enter = |channel: &str, uniqueid: &str| {
            AmiEvent::BridgeEnter(ChannelRef {
                channel: channel.into(),
                uniqueid: uniqueid.into(),
                linkedid: "abc".into(),
            })
        };
        // Leg 1's bridge, on the courier's answer (k5_cancel_while_client_rings).
        assert_eq!(fact_of(&enter("Local/79001112233@phones-00000012;1", "1796530941.36"), "abc"), None);
        assert_eq!(fact_of(&enter("Local/79001112233@from-courier-leg1-00000011;2", "abc;2"), "abc"), None);
        // Leg 2's, once the client answered.
        let courier = enter("Local/79001112233@from-courier-leg1-00000011;1", "abc");
        assert_eq!(fact_of(&courier, "abc"), Some(Fact::Bridged));
    }
}
